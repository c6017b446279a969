"""Risk scorer → decision cycle → commands, and the decision routes, against moto."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import bootstrap
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories.switches import switch_key
from chalicelib.tables import AgentTable, DecisionTable, PoolTable
from tests.conftest import invoke_schedule

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")

POOLS = {"a": 0.040, "b": 0.020, "c": 0.045}


def _report(caller, agent_id, instance_type, region, prices, od=0.096):
    body = {"instance": {"instance_type": instance_type, "region": region},
            "pricing": {"on_demand_price": od,
                        "spot_pools": [{"pool_id": f"{instance_type}.{region}{z}", "price": p}
                                       for z, p in prices.items()]}}
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200, reply


@pytest.fixture
def settled_agent(make_tenant):
    """An auto-switch agent on a unique instance type in eu-west-1a, registered 3 h ago, prices known."""
    from tests.conftest import registration

    client_id, caller = make_tenant()
    itype = f"m5.{datetime.now().strftime('%H%M%S%f')}xl"
    reg = registration(instance_type=itype, az="eu-west-1a", region="eu-west-1")
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    AgentTable(client_id, agent_id).update(actions=[
        AgentTable.registered_at.set(datetime.now(timezone.utc) - timedelta(hours=3))])
    _report(caller, agent_id, itype, "eu-west-1", POOLS)
    return client_id, caller, agent_id, itype


def _set_risk(itype, risks):
    now = datetime.now(timezone.utc)
    pool_repo.save_risk([(f"{itype}.eu-west-1{z}", r, "model", "test") for z, r in risks.items()], 3600, now)


def test_cycle_switches_to_the_cheaper_safe_pool_once_and_records_why(api, settled_agent):
    client_id, caller, agent_id, itype = settled_agent
    # GIVEN risk scores (the evidence estimate, as no model is active) WHEN the scorer and the cycle run
    result = invoke_schedule(api, "risk-scorer")
    assert result["scored"].get("evidence", 0) >= 3
    assert PoolTable.get(f"{itype}.eu-west-1b").risk_source == "evidence"
    invoke_schedule(api, "decision-cycle")
    # THEN a switch to the cheaper pool is queued at ML priority with the decision's reason stored
    active = bootstrap.command_store().active_for_agent(agent_id, 5)
    assert [(c.target_pool_id, c.priority, c.trigger) for c in active] == [
        (f"{itype}.eu-west-1b", 25, "ml_recommendation")]
    status, body = caller.get(f"/api/client/agents/{agent_id}/decisions")
    assert status == 200
    latest = body["decisions"][0]
    assert latest["action"] == "switch_pool" and "saved" in latest["reason"]
    assert latest["command_id"] == active[0].command_id
    # WHEN the cycle runs again THEN no second command is queued (one active at a time)
    invoke_schedule(api, "decision-cycle")
    assert len(bootstrap.command_store().active_for_agent(agent_id, 5)) == 1


def test_every_pool_too_risky_queues_an_urgent_move_to_ondemand(api, settled_agent):
    client_id, caller, agent_id, itype = settled_agent
    _set_risk(itype, {"a": 0.9, "b": 0.8, "c": 0.95})
    invoke_schedule(api, "decision-cycle")
    [command] = bootstrap.command_store().active_for_agent(agent_id, 5)
    assert (command.command_type.value, command.priority, command.target_mode) == (
        "switch_to_ondemand", 50, "ondemand")
    stored = list(DecisionTable.query(agent_id))[-1]
    assert stored.action == "to_ondemand" and "more than on-demand" in stored.reason
    assert {p["pool_id"] for p in stored.inputs["pools"]} == {f"{itype}.eu-west-1{z}" for z in "abc"}


def test_decide_and_recommendation_routes_use_the_same_policy(api, settled_agent):
    client_id, caller, agent_id, itype = settled_agent
    _set_risk(itype, {"a": 0.01, "b": 0.01, "c": 0.01})
    status, body = caller.post(f"/api/agents/{agent_id}/decide", {})
    assert status == 200, body
    assert body["recommended_pool_id"] == f"{itype}.eu-west-1b" and body["recommended_mode"] == "spot"
    assert body["allowed"] is True and body["expected_savings_per_hour"] > 0
    status, body = caller.get(f"/api/agents/{agent_id}/switch-recommendation")
    assert status == 200 and body["decision_type"] == "switch_to_spot" and body["will_auto_execute"] is True
    assert [p["pool_id"] for p in body["alternative_pools"]][0] == f"{itype}.eu-west-1b"
    status, body = caller.post(f"/api/agents/{agent_id}/issue-switch-command", {})
    assert status == 201 and body["command"]["target_pool_id"] == f"{itype}.eu-west-1b"


def test_issue_switch_command_is_forbidden_without_auto_switch(api, settled_agent):
    client_id, caller, agent_id, itype = settled_agent
    row = AgentTable.get(client_id, agent_id)
    row.update(actions=[AgentTable.config.auto_switch_enabled.set(False)])
    status, body = caller.post(f"/api/agents/{agent_id}/issue-switch-command", {"target_mode": "ondemand"})
    assert status == 403 and body["error"] == "auto_switch_disabled"
    assert bootstrap.command_store().active_for_agent(agent_id, 5) == []


def test_decide_without_any_price_is_a_conflict_not_a_crash(make_tenant):
    from tests.conftest import registration

    _, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(instance_type="x9.never", az="eu-west-1a"))
    status, body = caller.post(f"/api/agents/{reply['agent_id']}/decide", {})
    assert status == 409 and body["error"] == "no_market_data"


def test_pool_risk_route_lists_prices_and_scores(api, settled_agent):
    client_id, caller, agent_id, itype = settled_agent
    _set_risk(itype, {"a": 0.1, "b": 0.2, "c": 0.3})
    status, body = caller.get(f"/api/client/pools?region=eu-west-1&instance_type={itype}")
    assert status == 200
    assert [(p["az"], p["risk"], p["price"]) for p in body["pools"]] == [
        ("eu-west-1a", 0.1, 0.04), ("eu-west-1b", 0.2, 0.02), ("eu-west-1c", 0.3, 0.045)]


def _observe(itype, zone, kind, at, event_id):
    from components.capacity import CapacityObservation
    from chalicelib.repositories import observations

    observations.record(CapacityObservation(f"{itype}.eu-west-1{zone}", kind, at.timestamp(),
                                            code="InsufficientInstanceCapacity"), event_id=event_id)


def test_a_refused_pool_is_not_chosen_again_inside_its_back_off(api, settled_agent):
    from components.capacity import DEFAULT_BACKOFF, ObservationKind

    client_id, caller, agent_id, itype = settled_agent
    _set_risk(itype, {"a": 0.01, "b": 0.01, "c": 0.01})
    now = datetime.now(timezone.utc)
    # GIVEN the cheapest pool b refused a launch a minute ago
    _observe(itype, "b", ObservationKind.LAUNCH_REFUSED, now - timedelta(minutes=1), "t-refused-1")
    status, body = caller.post(f"/api/agents/{agent_id}/decide", {})
    # THEN the decision skips it for the next pool (a at 0.040 < c at 0.045)
    assert status == 200 and body["recommended_pool_id"] == f"{itype}.eu-west-1a", body
    stored = list(DecisionTable.query(agent_id))[-1]
    assert [p["available"] for p in stored.inputs["pools"] if p["pool_id"].endswith("1b")] == [False]
    # WHEN its back-off window has passed (the refusal is older than the first window) THEN b is back
    old = now - timedelta(seconds=DEFAULT_BACKOFF.window(1) + 60)
    from chalicelib.tables.observations import ObservationTable
    for row in ObservationTable.query(f"{itype}.eu-west-1b"):
        row.delete()
    _observe(itype, "b", ObservationKind.LAUNCH_REFUSED, old, "t-refused-old")
    status, body = caller.post(f"/api/agents/{agent_id}/decide", {})
    assert status == 200 and body["recommended_pool_id"] == f"{itype}.eu-west-1b", body


@pytest.mark.parametrize("second_run", ["the next cycle", "a retry of the same cycle"])
def test_an_agent_on_ondemand_returns_to_spot_at_the_first_cycle_a_pool_passes(api, settled_agent, second_run):
    """A retry of the same scheduled run (EventBridge's, or two runs within one second of the event's clock) whose
    decision changed records the decision that queued the command, under the cycle's one key."""
    client_id, caller, agent_id, itype = settled_agent
    first = datetime.now(timezone.utc).replace(microsecond=0)
    second = first + timedelta(seconds=300 if second_run == "the next cycle" else 0)
    AgentTable(client_id, agent_id).update(actions=[AgentTable.current_mode.set("ondemand"),
                                                    AgentTable.current_pool_id.remove()])
    # GIVEN every pool costs more than on-demand in expectation: the cycle keeps it on on-demand
    _set_risk(itype, {"a": 0.95, "b": 0.95, "c": 0.95})
    invoke_schedule(api, "decision-cycle", now=first)
    assert bootstrap.command_store().active_for_agent(agent_id, 5) == []
    assert list(DecisionTable.query(agent_id))[-1].action == "stay"
    # WHEN one pool passes the policy THEN the very next cycle moves it back to spot, whatever the rails
    AgentTable(client_id, agent_id).update(actions=[AgentTable.last_switch_at.set(first)])
    _set_risk(itype, {"a": 0.95, "b": 0.02, "c": 0.95})
    invoke_schedule(api, "decision-cycle", now=second)
    [command] = bootstrap.command_store().active_for_agent(agent_id, 5)
    assert (command.target_mode, command.target_pool_id) == ("spot", f"{itype}.eu-west-1b")
    [stored] = [d for d in DecisionTable.query(agent_id) if d.command_id == command.command_id]
    assert stored.action == "to_spot" and "back to spot" in stored.reason
    assert len(list(DecisionTable.query(agent_id))) == (2 if second_run == "the next cycle" else 1)


def test_an_agent_on_ondemand_returns_to_spot_at_the_first_cycle_even_with_its_switch_limits_spent(
        api, settled_agent):
    """Issue #11: no agent stays on on-demand longer than one decision cycle while a spot pool passes the
    policy. The agent spent its daily and weekly switch budget, switched a minute ago (cooldown) and
    has been on on-demand for a minute only (minimum time in a pool): the first cycle still sends it
    back to spot, because the limits bound pool-to-pool switches, not the way back from on-demand."""
    from chalicelib.tables import SwitchTable

    client_id, caller, agent_id, itype = settled_agent
    now = datetime.now(timezone.utc)
    AgentTable(client_id, agent_id).update(actions=[
        AgentTable.current_mode.set("ondemand"), AgentTable.current_pool_id.remove(),
        AgentTable.last_switch_at.set(now - timedelta(minutes=1)),
        AgentTable.config.max_switches_per_day.set(1), AgentTable.config.max_switches_per_week.set(1),
        AgentTable.config.min_pool_duration_hours.set(6)])
    for n, ago in enumerate((timedelta(hours=5), timedelta(minutes=1))):
        at = now - ago
        SwitchTable(client_id, switch_key(at, f"sw-{n}"), switch_id=f"sw-{n}",
                    agent_id=agent_id, new_instance_id=f"i-{n}", new_mode="ondemand", initiated_at=at,
                    recorded_at=at).save()
    _set_risk(itype, {"a": 0.95, "b": 0.02, "c": 0.95})
    invoke_schedule(api, "decision-cycle")
    [command] = bootstrap.command_store().active_for_agent(agent_id, 5)
    assert (command.target_mode, command.target_pool_id) == ("spot", f"{itype}.eu-west-1b")
    [stored] = [d for d in DecisionTable.query(agent_id) if d.command_id == command.command_id]
    assert stored.action == "to_spot" and stored.inputs["recent_switches"] == 2


def test_an_agent_keeps_its_measured_boot_time_after_a_quiet_week(settled_agent):
    """The cost model prices an interruption with the agent's own boot time (its switch reports carry
    launch and ready times). An agent that has not switched for a week keeps it: it is the newest
    switches' median however old they are, while the switch limits count only the week."""
    from chalicelib import decisions
    from chalicelib.repositories import agents as agent_repo
    from chalicelib.tables import SwitchTable

    client_id, _caller, agent_id, _itype = settled_agent
    now = datetime.now(timezone.utc)
    agent = agent_repo.get(client_id, agent_id)
    # GIVEN no switch at all: the product's default
    assert decisions.situation(agent, now)[1] == 300.0
    # AND three switches 9-10 days ago that booted in 95, 100 and 140 s, one 2 days ago without timings
    for n, (ago, boot) in enumerate(((timedelta(days=10), 95), (timedelta(days=9, hours=12), 140),
                                     (timedelta(days=9), 100), (timedelta(days=2), None))):
        at = now - ago
        SwitchTable(client_id, switch_key(at, f"sw-{n}"), switch_id=f"sw-{n}",
                    agent_id=agent_id, new_instance_id=f"i-{n}", new_mode="spot", initiated_at=at,
                    launched_at=at if boot else None, ready_at=at + timedelta(seconds=boot) if boot else None,
                    recorded_at=at).save()
    # WHEN the decision cycle builds the agent's situation
    where, boot_s = decisions.situation(agent, now)
    # THEN the boot is the old switches' median, and only the switch of the week counts against the limits
    assert boot_s == 100.0
    assert where.recent_switches == (now - timedelta(days=2),)
    # AND the cost model uses it: a 100 s boot is covered by the 2-minute notice, no downtime to price
    assert decisions.decision_config(agent, 0.096, boot_s).interruption_gap_s == 0.0
