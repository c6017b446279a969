"""Security walk 8: what a tenant's agent signals, time fields and odd-but-valid input can do to other tenants and
to the service's shared data. Each test is one attack; its docstring says what happened before the fix (when it
found something) and what holds now."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations
from chalicelib.tables.interruptions import InterruptionTable
from chalicelib.tables.switches import SwitchTable
from tests.api._support import iso, now_utc, switch_body
from tests.conftest import new_instance_id
from tests.e2e.failover_support import register_agent, wait_for


def _wait_for_failovers(client_id: str) -> None:
    """Let every workflow this tenant started finish before the next test snapshots the tables."""
    for row in InterruptionTable.query(client_id, consistent_read=True):
        if row.execution_arn:
            wait_for(row.execution_arn)


# --- an agent's signal is its own client's evidence only ----------------------------------------------------------


@pytest.mark.usefixtures("failover_machine")
def test_an_agents_termination_notice_puts_no_pool_in_back_off_for_other_tenants(make_tenant):
    """ATTACK (shared capacity data): a client's agent posts ``termination-imminent`` for its own spot instance (an
    unverifiable claim: nothing but the client's word says AWS sent a notice). BEFORE: the sentinel recorded it as
    an interruption warning the product saw itself: the pool went into capacity back-off for every tenant's
    decisions, failovers and standbys (10 minutes, growing with each repeat) and into the fleet's risk evidence.
    NOW: an agent's (or a client's) signal is a report, counted for its own client's placements and risk only, as
    its capacity reports are (tests/api/test_capacity_reports_scoped.py); EventBridge's copy of the same notice
    still counts for everyone."""
    attacker_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    victim_id, _ = make_tenant()
    pool = f"{itype}.us-east-1a"
    status, reply = caller.post(f"/api/agents/{agent_id}/termination-imminent", {"instance_id": primary})
    assert status == 202 and reply["action"] == "failover_started", reply
    _wait_for_failovers(attacker_id)
    now = now_utc()
    assert pool not in observations.backoff([pool], now, viewer=victim_id)
    assert observations.for_pools([pool], now - timedelta(hours=1), viewer=observations.FLEET)[pool] == []
    assert pool in observations.backoff([pool], now, viewer=attacker_id)  # its own placements honour it


def test_an_agents_rebalance_recommendation_stays_out_of_the_fleets_risk_evidence(make_tenant):
    """ATTACK (shared risk data): the same with ``rebalance-recommendation``, which starts no failover and costs
    the client nothing: repeated every signal window it fed the fleet-wide risk scorer a stream of rebalance
    recommendations for the pool. NOW: its client's evidence only."""
    attacker_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    pool = f"{itype}.us-east-1a"
    status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation", {"instance_id": primary})
    assert status == 200 and reply["interruption_id"], reply
    since = now_utc() - timedelta(hours=1)
    assert observations.for_pools([pool], since, viewer=observations.FLEET)[pool] == []
    assert [o.kind.value for o in observations.for_pools([pool], since, viewer=attacker_id)[pool]] \
        == ["rebalance_recommendation"]


# --- times a client gives: never far from the server's clock ----------------------------------------------------


def _event(client_id: str, interruption_id: str) -> InterruptionTable:
    return InterruptionTable.get(client_id, interruption_id, consistent_read=True)


@pytest.mark.usefixtures("failover_machine")
@pytest.mark.parametrize("detected_at, termination_time", [("2000-01-01T00:00:00Z", "2099-12-31T00:00:00Z"),
                                                           ("2099-12-31T00:00:00Z", "2000-01-02T00:00:00Z")])
def test_a_termination_notice_cannot_backdate_or_future_date_its_failover(make_tenant, detected_at, termination_time):
    """ATTACK (time fields): ``termination-imminent`` with ``detected_at`` in 2000 (or 2099) and ``termination_time``
    in 2099 (or 2000), any time the schema's 2000-2099 range admits. BEFORE: the interruption event, its id, its
    audit event and the failover's timing were keyed on the client's time: the critical ``interruption`` audit
    event landed in the 2000-01-01 partition with a TTL already past (gone from the admin's audit log, which reads
    recent days) or in 2099's (never read, never expiring); the service-wide ``FailoverTime`` metric got ~8e11 ms
    (or a negative time); a deadline in 2099 made the workflow wait (``WaitForDeadline``) until 2099 before
    retiring the old instance under auto-terminate. NOW: a signal time more than ``MAX_SIGNAL_AGE`` old or in the
    future is the receive time, and a deadline past the notice's two minutes (plus skew) is the notice's."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    before = now_utc()
    status, reply = caller.post(f"/api/agents/{agent_id}/termination-imminent",
                                {"instance_id": primary, "detected_at": detected_at,
                                 "termination_time": termination_time})
    assert status == 202 and reply["action"] == "failover_started", reply
    _wait_for_failovers(client_id)
    after = now_utc()
    event = _event(client_id, reply["interruption_id"])
    assert before - timedelta(seconds=1) <= event.detected_at <= after, event.detected_at
    assert event.termination_time <= after + timedelta(minutes=10), event.termination_time
    assert reply["interruption_id"].startswith(f"int-{before:%Y%m%d}")
    assert event.failover_time_ms is None or 0 <= event.failover_time_ms < 600_000, event.failover_time_ms


@pytest.mark.parametrize("detected_at", ["2000-01-01T00:00:00Z", "2099-12-31T00:00:00Z"])
def test_a_rebalance_recommendation_cannot_date_its_event(make_tenant, detected_at):
    """The same for ``rebalance-recommendation``'s ``detected_at`` (its event, id, audit day and observation time)."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    before = now_utc()
    status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation",
                                {"instance_id": primary, "detected_at": detected_at})
    assert status == 200 and reply["interruption_id"], reply
    event = _event(client_id, reply["interruption_id"])
    assert before - timedelta(seconds=1) <= event.detected_at <= now_utc(), event.detected_at


def _timing(**future) -> dict:
    now = now_utc()
    timing = {"switch_initiated_at": iso(now - timedelta(minutes=3)),
              "new_instance_launched_at": iso(now - timedelta(minutes=2)),
              "new_instance_ready_at": iso(now - timedelta(minutes=1)),
              "traffic_switched_at": iso(now - timedelta(seconds=50)),
              "old_instance_terminated_at": iso(now - timedelta(seconds=30))}
    return {**timing, **future}


@pytest.mark.parametrize("field", ["old_instance_terminated_at", "switch_initiated_at", "traffic_switched_at"])
def test_a_switch_report_cannot_date_its_times_in_the_future(tenant_with_agent, field):
    """ATTACK (savings inflation): a switch report (under auto-terminate) whose old instance was terminated "in
    2099". BEFORE: the old instance's row was closed with ``terminated_at`` 2099, and the savings roll-up counts an
    instance until its termination: every hourly run billed the gone instance's on-demand baseline against its spot
    cost, inflating the client's savings (and the fleet's total in the admin's growth figures) for as long as the
    client liked. A switch "initiated" in 2099 likewise sorted first in the switch history for good and kept the
    new instance out of the roll-up. NOW: a time in the future (beyond the clock skew the pricing report allows)
    is the receive time, named in ``warnings``; the report is still recorded."""
    client_id, caller, agent_id, reg = tenant_with_agent
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": True})[0] == 200
    new_id = new_instance_id()
    body = switch_body(reg["instance_id"], new_id, timing=_timing(**{field: "2099-01-01T00:00:00Z"}))
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", body)
    assert status == 200 and reply["duplicate"] is False, reply
    assert any(w.startswith(f"timing.{field}") for w in reply["warnings"]), reply
    later = now_utc()
    old = agent_repo.instance_row(reg["instance_id"])
    assert old.is_active is False and old.terminated_at <= later, old.terminated_at
    assert agent_repo.instance_row(new_id).installed_at <= later
    row = next(iter(SwitchTable.query(client_id, filter_condition=SwitchTable.switch_id == reply["switch_id"])))
    for name in ("initiated_at", "traffic_switched_at", "old_terminated_at"):
        assert getattr(row, name) <= later, (name, getattr(row, name))


def test_a_replica_attach_cannot_date_its_launch_in_the_future(make_tenant):
    """A future ``launched_at`` would keep a vanished standby "just launched" (the coordinator waits for a young
    launch): the launch is past by the time it is reported, so a later time is the receive time."""
    from tests.api.test_replicas import agent_recorded_standby, put

    caller, _, instance_id, path = agent_recorded_standby(make_tenant)
    before = now_utc()
    status, reply = put(caller, path,
                        {"instance_id": instance_id, "launched_at": "2099-12-31T00:00:00Z"})
    assert status == 200, reply
    launched = reply["replica"]["launched_at"]
    assert launched < "2099" and iso(before - timedelta(seconds=1)) <= launched <= iso(now_utc() + timedelta(seconds=1))
