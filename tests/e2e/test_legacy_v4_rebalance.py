"""The legacy v4.0.0 agent's rebalance path, replayed against the real handlers on a simulated clock.

v4 checks IMDS ``events/recommendations/rebalance`` every 30 s (spot only). A signal it has not reported yet
is reported twice: ``create-emergency-replica`` (``signal_type: rebalance-recommendation``; v4 expects 201
with ``success, replica_id, instance_id, pool{id,name,az}, hourly_cost, urgency``, or 403 when auto-switch
is off), then ``rebalance-recommendation`` (``success, action, risk_score, reason``; it logs only
``switch``). Its "reported" flag resets when the signal clears, so a signal that comes back is reported
again. The termination path, the replica polling and the jobs run as in tests/e2e/test_legacy_v4_replay.py.

What the product intends for one recommendation, whoever reports it (v4's two calls, EventBridge's copy):
one interruption event, and a standby pre-warmed only when the pool's risk calls for it (it expires unless a
termination follows, and then it is the standby the failover promotes).
"""

from __future__ import annotations


import boto3
import pytest

from chalicelib.repositories import interruptions
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.schemas.responses import EmergencyReplicaReply, SignalReply
from chalicelib.settings import get_settings
from chalicelib.tables import AgentTable
from tests.e2e.failover_support import deliver, rebalance, state_of, wait_for, warning
from tests.e2e.legacy_v4 import BOOT_S, US, Call, schedule, v4_on_us_spot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

RISKY, SAFE = 0.8, 0.05  # the pre-warm threshold is 0.30




def brief(calls) -> list[tuple]:
    return [(c.at, c.method, c.path.rsplit("/", 1)[-1], c.status, c.answer) for c in calls]


def v4_on_spot(api, make_tenant, sim, *, risk: float):
    """A v4 agent (auto-switch on, the default) on a real spot instance in us-east-1a whose pool the server
    scores ``risk``, after its first pricing report; the health monitor and the replica coordinator run.
    Returns (client_id, caller, fleet, v4 agent, primary instance id)."""
    client_id, caller, fleet, v4, primary, itype = v4_on_us_spot(api, make_tenant, sim)
    pool_repo.save_risk([(f"{itype}.us-east-1a", risk, "model", "test")], 3600, sim.now)
    return client_id, caller, fleet, v4, primary


def events(agent_id: str) -> list:
    return interruptions.page_for_agent(agent_id, 50, None).items


def live_instances(agent_id: str) -> list[str]:
    """EC2 instances the product launched for the agent that are not going away."""
    reply = boto3.client("ec2", region_name=US).describe_instances(
        Filters=[{"Name": "tag:AgentId", "Values": [agent_id]}])
    return [i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] not in ("shutting-down", "terminated")]


def assert_v4_reads_emergency(call: Call) -> None:
    """Every field v4 reads from create-emergency-replica is there (a 2xx answer; ``pool`` an object)."""
    assert call.ok, (call.status, call.answer)
    answer = call.answer
    assert {"success", "replica_id", "instance_id", "pool", "hourly_cost", "urgency"} <= set(answer), answer
    assert isinstance(answer["pool"], dict) and {"id", "name", "az"} <= set(answer["pool"]), answer
    EmergencyReplicaReply.model_validate(answer)  # and as the API document says


def assert_v4_reads_recommendation(call: Call) -> None:
    """Every field v4 reads from rebalance-recommendation is there."""
    assert call.ok, (call.status, call.answer)
    assert {"success", "action", "risk_score", "reason"} <= set(call.answer), call.answer
    assert isinstance(call.answer["risk_score"], (int, float)), call.answer
    SignalReply.model_validate(call.answer)


@pytest.mark.parametrize("risk", [RISKY, SAFE], ids=["risky pool", "safe pool"])
def test_a_v4_rebalance_prewarms_one_standby_on_a_risky_pool_and_none_on_a_safe_one(api, make_tenant, sim, risk):
    """GIVEN a v4 agent on a pool the server scores risky (0.8) or safe (0.05)
    WHEN IMDS shows a rebalance recommendation and v4's 30 s check reports it (create-emergency-replica, then
    rebalance-recommendation), and ten minutes pass
    THEN one interruption event; on the risky pool one pre-warmed standby in another pool (201 with its pool,
    linked to the event, expiring, ready once running), on the safe pool none (200, ``success`` false with
    the reason: before, v4's call launched a standby for every recommendation, whatever the pool's risk);
    both answers carry every field v4 reads, and nothing v4 sent is refused.
    """
    client_id, caller, fleet, v4, primary = v4_on_spot(api, make_tenant, sim, risk=risk)
    v4.rebalance_notice = sim.now
    sim.run_until(10 * 60)

    [(emergency, recommendation)] = v4.rebalance_reports
    assert emergency.at == recommendation.at == 30
    assert_v4_reads_emergency(emergency)
    assert_v4_reads_recommendation(recommendation)
    assert recommendation.answer["risk_score"] == pytest.approx(risk, abs=1e-4)
    [event] = events(v4.agent_id)
    assert (event.signal_type, event.source, event.status) == ("rebalance-recommendation", "agent", "resolved")
    assert recommendation.answer["interruption_id"] == event.interruption_id
    standbys = replica_repo.for_agent(v4.agent_id)
    if risk == RISKY:
        assert emergency.status == 201 and emergency.answer["success"] is True, emergency.answer
        [standby] = standbys
        assert emergency.answer["replica_id"] == standby.replica_id == event.replica_id
        assert emergency.answer["pool"] == {"id": standby.pool_id, "name": standby.pool_id, "az": standby.az}
        assert standby.pool_id != event.pool_id and standby.az != "us-east-1a"
        assert isinstance(emergency.answer["hourly_cost"], float)
        assert event.response_action == "prewarmed-standby" and standby.interruption_id == event.interruption_id
        assert (standby.replica_type, standby.status.value) == ("automatic-rebalance", "ready")
        assert standby.expires_at is not None
        assert live_instances(v4.agent_id) == [standby.instance_id]
    else:
        assert emergency.status == 200 and emergency.answer["success"] is False, emergency.answer
        assert emergency.answer["replica_id"] is None and "below" in emergency.answer["error"], emergency.answer
        assert event.response_action == "no-action"
        assert standbys == [] and live_instances(v4.agent_id) == []
        assert AgentTable.get(client_id, v4.agent_id, consistent_read=True).current_replica_id is None
    assert v4.running and v4.replicas_launched == [] and fleet.ec2.launched == []
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to


def test_b_a_recommendation_that_clears_and_comes_back_is_reported_again_but_prewarms_one_standby(
        api, make_tenant, sim):
    """GIVEN a v4 agent on a risky pool
    WHEN the recommendation appears (t=20 s), clears (3 min), comes back inside the de-duplication window
    (6 min), clears again and comes back after the window (20 min); the standby's hour then runs out
    THEN v4 reports it three times; the first report pre-warms the one standby, the reports inside the window
    join the first event, the one after the window is a new event that finds the standby already there (no
    second standby, no second instance); an hour after it was pre-warmed the cleanup job expires the standby
    and terminates its instance: nothing is left running for a recommendation no termination followed.
    """
    client_id, caller, fleet, v4, primary = v4_on_spot(api, make_tenant, sim, risk=RISKY)
    schedule(sim, api, "cleanup", first=25, period=600)
    window = get_settings().signal_window_s
    assert window < 20 * 60 < get_settings().prewarm_ttl_s
    for on, off in ((20, 3 * 60), (6 * 60, 9 * 60), (20 * 60, 23 * 60)):
        sim.run_until(on)
        v4.rebalance_notice = sim.now
        sim.run_until(off)
        v4.rebalance_notice = None

    reports = v4.rebalance_reports
    assert [e.at for e, _ in reports] == [30, 6 * 60 + 30, 20 * 60 + 30], brief(c for pair in reports for c in pair)
    for emergency, recommendation in reports:
        assert_v4_reads_emergency(emergency)
        assert_v4_reads_recommendation(recommendation)
    [standby] = replica_repo.for_agent(v4.agent_id)
    assert [e.status for e, _ in reports] == [201, 200, 200]
    assert {e.answer["replica_id"] for e, _ in reports} == {standby.replica_id}
    first, later = sorted(events(v4.agent_id), key=lambda e: e.detected_at)
    assert first.response_action == "prewarmed-standby" and first.replica_id == standby.replica_id
    assert [r.answer["interruption_id"] for _, r in reports] == [first.interruption_id] * 2 + [later.interruption_id]
    assert later.response_action == "no-action"
    assert live_instances(v4.agent_id) == [standby.instance_id]

    # the hour runs out: the cleanup job expires the standby and terminates its instance
    sim.run_until((standby.expires_at - sim.start).total_seconds() + 10 * 60)
    expired = replica_repo.get(v4.agent_id, standby.replica_id)
    assert expired.status.value == "expired" and state_of(standby.instance_id) in ("shutting-down", "terminated")
    assert live_instances(v4.agent_id) == []
    assert AgentTable.get(client_id, v4.agent_id, consistent_read=True).current_replica_id is None
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to


@pytest.mark.usefixtures("failover_machine")
def test_c_a_termination_after_a_rebalance_promotes_the_prewarmed_standby_once(api, make_tenant, sim):
    """GIVEN a v4 agent on a risky pool whose rebalance recommendation pre-warmed a standby (t=30 s)
    WHEN five minutes later IMDS shows the two-minute termination notice: v4 calls create-emergency-replica
    (termination-notice), then termination-imminent, and stops itself; EventBridge's copy of the warning
    arrives after v4's calls; the replacement's v4 agent boots; the cleanup job runs past the standby's expiry
    THEN the pre-warmed standby is the one promoted: one failover (the other reports join or find it done),
    no emergency instance besides the standby, the old instance terminated, the replacement's agent
    registered as the same agent; and the promoted standby, now the primary, is never expired by cleanup.
    """
    client_id, caller, fleet, v4, primary = v4_on_spot(api, make_tenant, sim, risk=RISKY)
    schedule(sim, api, "cleanup", first=25, period=600)
    v4.rebalance_notice = sim.now
    sim.run_until(5 * 60)
    [standby] = replica_repo.for_agent(v4.agent_id)
    assert standby.status.value == "ready", standby

    v4.termination_notice = sim.at(5 * 60 + 120)
    sim.run_until(5 * 60 + 6)
    emergency, imminent = [c for c in fleet.calls if c.path.endswith(("/create-emergency-replica",
                                                                       "/termination-imminent"))][-2:]
    assert_v4_reads_emergency(emergency)
    assert emergency.status == 200 and emergency.answer["replica_id"] == standby.replica_id, emergency.answer
    workflow = emergency.answer["workflow"]
    assert workflow["action"] == "failover_started", workflow
    assert imminent.ok and imminent.answer["success"] is True, imminent.answer
    assert imminent.answer["interruption_id"] == workflow["interruption_id"]
    assert not v4.running
    assert wait_for(workflow["interruption_id"])["status"] == "SUCCEEDED"
    late = warning(primary)
    late["time"] = sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert deliver(api, "sentinel-interruption", late)["action"] in ("duplicate", "ignored")

    agent = AgentTable.get(client_id, v4.agent_id, consistent_read=True)
    assert agent.instance_id == standby.instance_id
    new = fleet.start_agent(fleet.ec2.host(standby.instance_id), v4.logical_agent_id, at=sim.elapsed + BOOT_S)
    sim.run_until((standby.expires_at - sim.start).total_seconds() + 10 * 60)

    failovers = [e for e in events(v4.agent_id) if e.signal_type != "rebalance-recommendation"]
    assert [(e.interruption_id, e.status, e.response_action, e.replica_id) for e in failovers] == [
        (workflow["interruption_id"], "resolved", "promoted-existing-replica", standby.replica_id)]
    assert [r.replica_id for r in replica_repo.for_agent(v4.agent_id)] == [standby.replica_id]
    assert replica_repo.get(v4.agent_id, standby.replica_id).status.value == "promoted"
    assert state_of(primary) == "terminated" and state_of(standby.instance_id) == "running"
    assert live_instances(v4.agent_id) == [standby.instance_id]
    agent = AgentTable.get(client_id, v4.agent_id, consistent_read=True)
    assert (agent.instance_id, agent.status) == (standby.instance_id, "online")
    assert new.registration.status == 200 and new.agent_id == v4.agent_id and new.running
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to


@pytest.mark.parametrize("risk", [RISKY, SAFE], ids=["risky pool", "safe pool"])
@pytest.mark.parametrize("eventbridge", ["before", "after"])
def test_d_eventbridges_copy_of_the_recommendation_and_v4s_reports_are_one_signal(
        api, make_tenant, sim, eventbridge, risk):
    """GIVEN a v4 agent on a risky or a safe pool
    WHEN EventBridge delivers the rebalance recommendation to the sentinel before v4's check reports it (t=25
    s), or after (t=45 s)
    THEN one interruption event (its source whichever came first) and one standby on the risky pool, none on
    the safe one: before, v4's create-emergency-replica launched a standby after the sentinel had decided
    against one; the later reports answer with what the first decided.
    """
    client_id, caller, fleet, v4, primary = v4_on_spot(api, make_tenant, sim, risk=risk)
    event = rebalance(primary)

    def from_eventbridge():
        event["time"] = sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return deliver(api, "sentinel-rebalance", event)

    sim.run_until(25 if eventbridge == "before" else 20)
    v4.rebalance_notice = sim.now
    delivered = from_eventbridge() if eventbridge == "before" else None
    sim.run_until(45)
    if eventbridge == "after":
        delivered = from_eventbridge()
    sim.run_until(5 * 60)

    [(emergency, recommendation)] = v4.rebalance_reports
    assert_v4_reads_emergency(emergency)
    assert_v4_reads_recommendation(recommendation)
    [row] = events(v4.agent_id)
    assert row.source == ("eventbridge" if eventbridge == "before" else "agent"), row.source
    first = delivered if eventbridge == "before" else recommendation.answer
    assert first["interruption_id"] == row.interruption_id
    standbys = replica_repo.for_agent(v4.agent_id)
    if risk == RISKY:
        [standby] = standbys
        assert row.replica_id == standby.replica_id and emergency.answer["replica_id"] == standby.replica_id
        assert live_instances(v4.agent_id) == [standby.instance_id]
    else:
        assert standbys == [] and live_instances(v4.agent_id) == [], (emergency.answer, delivered)
        assert emergency.answer["success"] is False and row.response_action == "no-action"
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to


def test_e_auto_switch_off_v4_gets_its_403_and_the_recommendation_is_still_handled(api, make_tenant, sim):
    """GIVEN a v4 agent on a risky pool whose client turned auto-switch off
    WHEN v4 reports a rebalance recommendation
    THEN create-emergency-replica answers 403 ``auto_switch_disabled`` (what v4 expects; it only logs it)
    and writes nothing; rebalance-recommendation is still handled like EventBridge's copy of the signal (the
    sentinel pre-warms on a risky pool whatever the agent's auto-switch): one event, one standby."""
    client_id, caller, fleet, v4, primary = v4_on_spot(api, make_tenant, sim, risk=RISKY)
    status, reply = caller.post(f"/api/client/agents/{v4.agent_id}/config", {"auto_switch_enabled": False})
    assert status == 200, reply
    v4.rebalance_notice = sim.now
    sim.run_until(5 * 60)

    [(emergency, recommendation)] = v4.rebalance_reports
    assert (emergency.status, emergency.answer["error"]) == (403, "auto_switch_disabled"), emergency.answer
    assert_v4_reads_recommendation(recommendation)
    [row] = events(v4.agent_id)
    [standby] = replica_repo.for_agent(v4.agent_id)
    assert recommendation.answer["action"] == "prewarm" and recommendation.answer["replica_id"] == standby.replica_id
    assert row.source == "agent" and row.replica_id == standby.replica_id
    assert [c for c in fleet.failed_calls() if c is not emergency] == [], brief(fleet.failed_calls())


def test_e_when_the_admin_turns_legacy_mode_off_v4s_reports_are_refused_and_eventbridge_still_counts(
        api, make_tenant, admin, sim):
    """GIVEN a v4 agent registered while its client was in legacy agent mode, on a risky pool
    WHEN the admin turns legacy mode off and v4 then reports a rebalance recommendation, which EventBridge
    also delivers
    THEN both v4 calls are refused (403 ``agent_credential_required``: the client token no longer speaks for
    agents) and write nothing; EventBridge's copy is handled: one event, one standby."""
    client_id, caller, fleet, v4, primary = v4_on_spot(api, make_tenant, sim, risk=RISKY)
    status, view = admin.post(f"/api/admin/clients/{client_id}/legacy-agents", {"enabled": False})
    assert status == 200 and view["legacy_agents"] is False, view
    v4.rebalance_notice = sim.now
    sim.run_until(45)

    [(emergency, recommendation)] = v4.rebalance_reports
    for call in (emergency, recommendation):
        assert (call.status, call.answer["error"]) == (403, "agent_credential_required"), call.answer
    assert events(v4.agent_id) == [] and replica_repo.for_agent(v4.agent_id) == []
    event = rebalance(primary)
    event["time"] = sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert deliver(api, "sentinel-rebalance", event)["action"] == "prewarm"
    [row] = events(v4.agent_id)
    [standby] = replica_repo.for_agent(v4.agent_id)
    assert row.source == "eventbridge" and row.replica_id == standby.replica_id
