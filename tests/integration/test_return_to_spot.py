"""On-demand is a bridge (issue #11): a manual-replica agent on on-demand with a ready spot standby is handed
over to it by the replica coordinator through the real failover workflow (moto executes the ASL; the tasks run
in-process), only when the decision engine says the standby's pool repays leaving on-demand; a standby EC2
keeps taking away is placed elsewhere; every move is a decision with its reason.

The moto is shared by the whole session: assertions are about this test's agent, never global counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.jobs.replica_coordinator import reconcile_agent
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.sentinel import handle
from chalicelib.tables import AgentTable, DecisionTable, InterruptionTable
from components.capacity import CapacityObservation, ObservationKind
from components.replica_coordinator import ReplicaStatus
from components.sentinel import Signal, SignalKind, SignalSource
from tests.e2e.failover_support import REGION, ZONES, aws_reclaims, ec2, register_agent, state_of, wait_for

pytestmark = pytest.mark.usefixtures("failover_machine", "fleet_jobs_see_this_test_only")

MANUAL = {"manual_replica_enabled": True, "auto_switch_enabled": False, "auto_terminate_enabled": True,
          "terminate_wait_seconds": 0}
SAFE = 0.02  # P(interrupted within 1 h) of every pool unless a test says otherwise


def now() -> datetime:
    return datetime.now(UTC)


def agent_row(client_id, agent_id) -> AgentTable:
    return AgentTable.get(client_id, agent_id, consistent_read=True)


def set_risk(itype: str, risks: dict[str, float]) -> None:
    pool_repo.save_risk([(f"{itype}.{z}", r, "model", "test") for z, r in risks.items()], 3600, now())


def reconcile(client_id, agent_id):
    return reconcile_agent(agent_repo.get(client_id, agent_id), now())


def events_of(client_id: str) -> list[InterruptionTable]:
    return list(InterruptionTable.query(client_id, consistent_read=True))


def decisions_of(agent_id: str, action: str) -> list[DecisionTable]:
    return [d for d in DecisionTable.query(agent_id, consistent_read=True) if d.action == action]


def on_demand_agent_with_ready_standby(make_tenant, **config):
    """(client_id, caller, agent_id, on-demand primary, itype, ready standby) — the measured situation: a
    manual-replica agent that fell back to on-demand, its spot standby beside it. The first coordinator run
    launches the standby; the risk is set high until it is ready so that run cannot already return."""
    client_id, caller, agent_id, primary, itype = register_agent(make_tenant, **{**MANUAL, **config})
    AgentTable(client_id, agent_id).update(actions=[AgentTable.current_mode.set("ondemand"),
                                                    AgentTable.current_pool_id.remove()])
    set_risk(itype, {z: 0.95 for z in ZONES})
    reconcile(client_id, agent_id)  # launches the standby
    done = reconcile(client_id, agent_id)  # sees it running: ready; every pool too risky: stays
    assert done["ondemand_stays"] == 1, done
    standby = replica_repo.get(agent_id, agent_row(client_id, agent_id).current_replica_id)
    assert standby.status is ReplicaStatus.READY and state_of(standby.instance_id) == "running"
    set_risk(itype, {z: SAFE for z in ZONES})
    return client_id, caller, agent_id, primary, itype, standby


def the_return(client_id) -> InterruptionTable:
    [event] = [e for e in events_of(client_id) if e.signal_type == SignalKind.PLANNED.value]
    return event


def test_an_on_demand_primary_is_handed_over_to_its_ready_standby_and_the_on_demand_retired_after(
        api, make_tenant):
    client_id, caller, agent_id, primary, itype, standby = on_demand_agent_with_ready_standby(make_tenant)
    interruptions_before = agent_row(client_id, agent_id).interruption_count or 0
    # WHEN the coordinator runs and the standby's pool repays leaving on-demand
    done = reconcile(client_id, agent_id)
    assert done["returns_started"] == 1, done
    event = the_return(client_id)
    assert wait_for(event.execution_arn)["status"] == "SUCCEEDED"
    # THEN the standby is the primary, on spot in its pool, and the on-demand instance is terminated
    agent = agent_row(client_id, agent_id)
    assert (agent.instance_id, agent.current_mode, agent.current_pool_id) == (standby.instance_id, "spot",
                                                                                standby.pool_id)
    assert replica_repo.get(agent_id, standby.replica_id).status is ReplicaStatus.PROMOTED
    assert state_of(primary) == "terminated" and state_of(standby.instance_id) == "running"
    # AND make-before-break: the old instance went only after the standby was running and took the traffic
    event = the_return(client_id)
    assert event.status == "resolved" and event.response_action == "returned-to-spot"
    assert event.replacement_ready_at <= event.traffic_moved_at <= event.old_terminated_at
    # AND no emergency launch was made, it is not counted as an interruption, and a new standby is launching
    assert not [r for r in replica_repo.for_agent(agent_id) if r.replica_id.startswith("emg-")]
    assert (agent.interruption_count or 0) == interruptions_before
    nxt = replica_repo.get(agent_id, agent.current_replica_id)
    assert nxt.replica_id != standby.replica_id and nxt.instance_id and nxt.pool_id != standby.pool_id
    # AND the client sees both moves with their reasons
    status, body = caller.get(f"/api/client/agents/{agent_id}/decisions")
    assert status == 200, body
    [returned] = [d for d in body["decisions"] if d["action"] == "to_spot"]
    assert returned["source"] == "replica-coordinator" and returned["current"] == "ondemand"
    assert returned["target"] == standby.pool_id
    assert returned["reason"].startswith(f"returned to spot by promoting standby {standby.replica_id} in "
                                         f"{standby.pool_id}: expected ")
    placed = [d for d in body["decisions"] if d["action"] == "place_standby" and d["standby"] == nxt.pool_id]
    assert placed and placed[0]["reason"].startswith(f"standby placed in {nxt.pool_id}")


def test_running_the_coordinator_again_starts_no_second_hand_over(api, make_tenant, monkeypatch):
    from chalicelib.aws import stepfunctions

    client_id, _, agent_id, primary, _, standby = on_demand_agent_with_ready_standby(make_tenant)
    started = []
    real_start = stepfunctions.start
    monkeypatch.setattr(stepfunctions, "start", lambda name, payload, *a: started.append(name) or real_start(
        name, payload, *a))
    # WHEN the schedule delivers the run twice (at-least-once) before the hand-over finished
    first = reconcile(client_id, agent_id)
    second = reconcile(client_id, agent_id)
    # AND a third run finds the claim (the open event hidden from it: the claim alone decides)
    from chalicelib.jobs import replica_coordinator
    monkeypatch.setattr(replica_coordinator, "_busy", lambda agent: None)
    third = reconcile(client_id, agent_id)
    event = the_return(client_id)
    assert wait_for(event.execution_arn)["status"] == "SUCCEEDED"
    # THEN exactly one execution, one event, one promotion and one decision
    assert first["returns_started"] == 1 and not second.get("returns_started") and not third.get("returns_started")
    assert started == [event.interruption_id]
    assert len(decisions_of(agent_id, "to_spot")) == 1
    promoted = [r for r in replica_repo.for_agent(agent_id) if r.status is ReplicaStatus.PROMOTED]
    assert [r.replica_id for r in promoted] == [standby.replica_id]
    assert agent_row(client_id, agent_id).instance_id == standby.instance_id and state_of(primary) == "terminated"


def test_a_standby_pool_in_capacity_back_off_keeps_the_agent_on_on_demand(api, make_tenant):
    client_id, _, agent_id, primary, itype, standby = on_demand_agent_with_ready_standby(make_tenant)
    # GIVEN the standby's pool just gave an interruption warning (to another instance)
    observations.record(CapacityObservation(standby.pool_id, ObservationKind.INTERRUPTION_WARNING,
                                            now().timestamp(), source="test"), event_id=f"t-warn-{agent_id}")
    # WHEN the coordinator runs THEN it stays on on-demand, starts nothing and records no move
    done = reconcile(client_id, agent_id)
    assert done.get("ondemand_stays") == 1 and not done.get("returns_started")
    assert events_of(client_id) == [] and decisions_of(agent_id, "to_spot") == []
    assert agent_row(client_id, agent_id).instance_id == primary
    # AND it waits the back-off out with the same standby (it is not re-placed)
    assert not done.get("standbys_replaced")
    assert agent_row(client_id, agent_id).current_replica_id == standby.replica_id


def test_a_standby_in_a_pool_that_cannot_take_the_primary_back_is_re_placed_where_the_engine_would_go(
        api, make_tenant):
    client_id, caller, agent_id, primary, itype, standby = on_demand_agent_with_ready_standby(make_tenant)
    # GIVEN the standby's pool is so likely to be interrupted that it costs more than on-demand in expectation
    set_risk(itype, {**{z: SAFE for z in ZONES}, standby.pool_id.rsplit(".", 1)[1]: 0.99})
    # WHEN the coordinator runs THEN it does not hand over to that standby ...
    done = reconcile(client_id, agent_id)
    assert done.get("ondemand_stays") == 1 and not done.get("returns_started")
    assert events_of(client_id) == [] and agent_row(client_id, agent_id).instance_id == primary
    # ... but replaces it with one in the pool the engine would return to, and says why
    assert done.get("standbys_replaced") == 1
    assert replica_repo.get(agent_id, standby.replica_id).status is ReplicaStatus.TERMINATED
    assert state_of(standby.instance_id) == "terminated"
    moved = replica_repo.get(agent_id, agent_row(client_id, agent_id).current_replica_id)
    assert moved.pool_id not in (standby.pool_id, None) and moved.instance_id
    [placed] = [d for d in decisions_of(agent_id, "place_standby") if d.standby == moved.pool_id]
    assert "the engine would return to spot there" in placed.reason and standby.pool_id in placed.reason
    # AND once that standby is ready the agent returns to spot through it
    done = reconcile(client_id, agent_id)
    assert done.get("returns_started") == 1, done
    assert wait_for(the_return(client_id).execution_arn)["status"] == "SUCCEEDED"
    agent = agent_row(client_id, agent_id)
    assert (agent.instance_id, agent.current_pool_id) == (moved.instance_id, moved.pool_id)


def test_an_on_demand_primary_s_own_zone_takes_its_standby_and_the_return(api, make_tenant):
    """An on-demand primary shares no spot capacity: the engine's best pool may be its own zone's, and the
    standby is re-placed there and promoted (it used to be refused as "the primary's pool", every run)."""
    prices = {z: 0.03 + 0.005 * i for i, z in enumerate(ZONES)}
    client_id, caller, agent_id, primary, itype = register_agent(
        make_tenant, prices={**prices, ZONES[0]: 0.06}, **MANUAL)
    own = f"{itype}.{ZONES[0]}"
    # GIVEN the primary fell back to on-demand in its zone (its registration names that zone's pool) ...
    AgentTable(client_id, agent_id).update(actions=[AgentTable.current_mode.set("ondemand")])
    assert agent_row(client_id, agent_id).current_pool_id == own
    # ... and its standby went to another pool while the own zone's pool was the dearest
    set_risk(itype, {z: 0.95 for z in ZONES})
    reconcile(client_id, agent_id)
    assert reconcile(client_id, agent_id)["ondemand_stays"] == 1
    standby = replica_repo.get(agent_id, agent_row(client_id, agent_id).current_replica_id)
    assert standby.status is ReplicaStatus.READY and standby.pool_id != own
    # WHEN the own zone's pool becomes the cheapest safe one and the standby's pool turns risky
    report = {"instance": {"instance_type": itype, "region": REGION},
              "pricing": {"on_demand_price": 0.192, "spot_pools": [{"pool_id": f"{itype}.{z}", "price": p}
                                                                   for z, p in prices.items()]}}
    assert caller.post(f"/api/agents/{agent_id}/pricing-report", report)[0] == 200
    set_risk(itype, {**{z: SAFE for z in ZONES}, standby.pool_id.rsplit(".", 1)[1]: 0.99})
    done = reconcile(client_id, agent_id)
    # THEN the standby is re-placed in the own zone's pool (no error) ...
    assert not done.get("return_errors") and done.get("standbys_replaced") == 1, done
    moved = replica_repo.get(agent_id, agent_row(client_id, agent_id).current_replica_id)
    assert moved.pool_id == own and moved.instance_id
    # ... and once it is ready the agent returns to spot there through it
    done = reconcile(client_id, agent_id)
    assert done.get("returns_started") == 1, done
    assert wait_for(the_return(client_id).execution_arn)["status"] == "SUCCEEDED"
    agent = agent_row(client_id, agent_id)
    assert (agent.instance_id, agent.current_mode, agent.current_pool_id) == (moved.instance_id, "spot", own)
    assert state_of(primary) == "terminated"
    # AND its next standby is in another pool than the spot primary's
    nxt = replica_repo.get(agent_id, agent.current_replica_id)
    assert nxt.pool_id not in (own, None)


def test_a_planned_return_whose_standby_is_gone_is_abandoned_and_never_launches_anything(api, make_tenant):
    client_id, _, agent_id, primary, _, standby = on_demand_agent_with_ready_standby(make_tenant)
    # GIVEN the standby is lost between the coordinator's decision and the workflow's plan
    ec2().terminate_instances(InstanceIds=[standby.instance_id])
    result = handle(Signal(SignalKind.PLANNED, primary, now(), SignalSource.COORDINATOR, region=REGION), now(),
                    replica_id=standby.replica_id)
    assert result["action"] == "failover_started", result
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    # THEN the on-demand primary keeps serving, nothing was launched, and the event says why
    assert agent_row(client_id, agent_id).instance_id == primary and state_of(primary) == "running"
    assert not [r for r in replica_repo.for_agent(agent_id) if r.replica_id.startswith("emg-")]
    event = the_return(client_id)
    assert event.response_action == "no-action" and "planned return abandoned" in event.error


def test_a_planned_return_whose_hand_over_fails_is_abandoned_not_sent_on_demand(api, make_tenant, monkeypatch):
    from chalicelib import failover

    client_id, _, agent_id, primary, _, standby = on_demand_agent_with_ready_standby(make_tenant)

    def broken(state):
        raise RuntimeError("target group unreachable")

    monkeypatch.setattr(failover, "handover", broken)
    done = reconcile(client_id, agent_id)
    assert done["returns_started"] == 1
    event = the_return(client_id)
    described = wait_for(event.execution_arn)
    # THEN the execution ends (Abandoned), the primary is untouched, no on-demand launch was made
    assert described["status"] == "SUCCEEDED", described
    assert agent_row(client_id, agent_id).instance_id == primary and state_of(primary) == "running"
    assert not [r for r in replica_repo.for_agent(agent_id) if r.replica_id.startswith("emg-")]
    event = the_return(client_id)
    assert event.status == "resolved" and event.success is False
    assert "target group unreachable" in event.error


# --- a standby that keeps being lost in one pool is placed elsewhere --------------------------------------------


def test_a_standby_ec2_took_away_unnoticed_is_observed_and_its_replacement_placed_elsewhere(api, make_tenant):
    client_id, caller, agent_id, _, itype = register_agent(make_tenant, **MANUAL)
    set_risk(itype, {z: SAFE for z in ZONES})
    reconcile(client_id, agent_id)
    reconcile(client_id, agent_id)
    lost = replica_repo.get(agent_id, agent_row(client_id, agent_id).current_replica_id)
    # GIVEN EC2 takes the standby and no EventBridge event reaches the sentinel
    aws_reclaims(lost.instance_id)
    # WHEN the coordinator runs
    reconcile(client_id, agent_id)
    # THEN the loss is an aws_stopped observation of its pool, which puts the pool in back-off
    failed = replica_repo.get(agent_id, lost.replica_id)
    assert failed.status is ReplicaStatus.FAILED
    seen = observations.for_pools([lost.pool_id], now() - timedelta(hours=1))[lost.pool_id]
    assert [(o.kind, o.source) for o in seen if o.kind is ObservationKind.AWS_STOPPED] == [
        (ObservationKind.AWS_STOPPED, "replica-coordinator")]
    until = observations.backoff([lost.pool_id], now())[lost.pool_id]
    # AND the replacement is in another pool, with the decision saying why
    replacement = replica_repo.get(agent_id, agent_row(client_id, agent_id).current_replica_id)
    assert replacement.pool_id not in (lost.pool_id, f"{itype}.{ZONES[0]}")
    status, body = caller.get(f"/api/client/agents/{agent_id}/decisions")
    [placed] = [d for d in body["decisions"] if d["action"] == "place_standby" and d["standby"] == replacement.pool_id]
    assert f"{lost.pool_id} in back-off until {until.strftime('%Y-%m-%dT%H:%M:%SZ')}" in placed["reason"]
    # AND a retried run writes no second observation
    reconcile(client_id, agent_id)
    again = observations.for_pools([lost.pool_id], now() - timedelta(hours=1))[lost.pool_id]
    assert len([o for o in again if o.kind is ObservationKind.AWS_STOPPED]) == 1


def test_repeated_losses_grow_the_back_off_despite_the_relaunches_in_between(aws_tables):
    pool = f"m5.t{datetime.now().strftime('%H%M%S%f')}xl.us-east-1b"
    t0 = now() - timedelta(hours=5)
    story = [(ObservationKind.LAUNCH_SUCCEEDED, 0), (ObservationKind.INTERRUPTION_WARNING, 2),
             (ObservationKind.LAUNCH_SUCCEEDED, 2.5), (ObservationKind.AWS_STOPPED, 4.5)]
    for n, (kind, hours) in enumerate(story):
        observations.record(CapacityObservation(pool, kind, (t0 + timedelta(hours=hours)).timestamp(), source="t"),
                            event_id=f"t-{n}")
    second_loss = t0 + timedelta(hours=4.5)
    at = second_loss + timedelta(minutes=11)
    # THEN the relaunch between them did not wipe the first loss: the second is the day's 2nd (20 min, not 10)
    assert observations.backoff([pool], at) == {pool: second_loss + timedelta(minutes=20)}
