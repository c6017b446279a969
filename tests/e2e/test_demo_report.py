"""The demo's own accounting, on hand-made rows: the back-off check, on-demand stretches, downtime of a
warning on an instance the agent had left, and the cost comparison with the backtest (real trace)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from localmode.demo import compare, report

T0 = datetime(2023, 2, 23, 0, 0, tzinfo=timezone.utc)
POOL = "p3.2xlarge.us-east-1c"


def _iso(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def _raw(**rows) -> dict:
    base = {"start": _iso(0), "end": _iso(600), "agents": [{"agent_id": "ag-1", "logical_agent_id": "train-1",
                                                            "status": "online", "mode": "auto-switch"}],
            "instances": [], "interruptions": [], "switches": [], "decisions": [], "observations": [],
            "price_points": {POOL: [(_iso(0), 1.0)], "p3.2xlarge.us-east-1d": [(_iso(0), 1.1)]},
            "ondemand": {POOL: 3.06}}
    return {**base, **rows}


def _refused(minutes: float, kind: str = "launch_refused") -> dict:
    return {"pool_id": POOL, "kind": kind, "at": (T0 + timedelta(minutes=minutes)).timestamp(),
            "code": "InsufficientInstanceCapacity", "source": "agent"}


def _decision(minutes: float, action: str = "switch_pool", target: str = POOL) -> dict:
    return {"agent_id": "ag-1", "decided_at": _iso(minutes), "action": action, "target": target, "reason": "r"}


def test_a_pool_chosen_inside_its_back_off_window_is_a_violation_and_after_it_is_not():
    # GIVEN a refusal at 0 (window 10 min), then a second one at 30 (window 20 min, streak of two)
    observations = [_refused(0), _refused(30)]
    decisions = [_decision(5), _decision(15), _decision(40), _decision(51), _decision(45, "stay"),
                 _decision(46, "switch_pool", "p3.2xlarge.us-east-1d")]
    failover = {"agent_id": "ag-1", "decided_at": _iso(35), "new_pool_id": POOL, "new_lifecycle": "spot",
                "response_action": "emergency-spot-replacement"}
    checked, violations = report.backoff_violations(
        _raw(observations=observations, decisions=decisions, interruptions=[failover]))
    # THEN the choices at 5 (first window), 40 (second window) and the failover at 35 are violations;
    # 15 and 51 are outside the windows, a 'stay' and a choice of another pool are not choices of it
    assert checked == 6
    assert sorted((v["at"], v["by"]) for v in violations) == [
        (_iso(5), "decision switch_pool"), (_iso(35), "failover emergency-spot-replacement"),
        (_iso(40), "decision switch_pool")]
    assert violations[0]["pool_id"] == POOL


def test_an_observation_counts_from_when_it_was_written_not_from_its_event_time():
    # a warning dated at the step's time (20) but written after a failover of the same step chose the pool
    late = {**_refused(20, "interruption_warning"), "recorded_at": (T0 + timedelta(minutes=20, seconds=3)).timestamp()}
    choice = {**_decision(20), "decided_at": (T0 + timedelta(minutes=20, seconds=1)).isoformat()}
    checked, violations = report.backoff_violations(_raw(observations=[late], decisions=[choice, _decision(25)]))
    # THEN the choice made before it was written is no violation; the one five minutes later is
    assert checked == 2 and [v["at"] for v in violations] == [_iso(25)]
    # AND the refusal of the choice's own launch (dated at the choice, written by a clock a little behind)
    # is no reason against that choice
    own = {**_refused(30), "recorded_at": (T0 + timedelta(minutes=30, seconds=-0.3)).timestamp()}
    assert report.backoff_violations(_raw(observations=[own], decisions=[_decision(30)]))[1] == []


def test_an_interruption_warning_starts_a_back_off_and_a_launch_success_clears_it():
    observations = [_refused(0, "interruption_warning"), _refused(2, "launch_succeeded")]
    _, violations = report.backoff_violations(_raw(observations=observations, decisions=[_decision(1), _decision(3)]))
    assert [v["at"] for v in violations] == [_iso(1)]


def _instance(iid: str, mode: str, begin: float, stop: float | None, role: str = "primary") -> dict:
    return {"instance_id": iid, "agent_id": "ag-1", "role": role, "mode": mode,
            "pool_id": POOL if mode == "spot" else None, "installed_at": _iso(begin),
            "terminated_at": None if stop is None else _iso(stop), "updated_at": _iso(stop or begin),
            "is_active": stop is None}


def test_on_demand_hours_merge_overlapping_primaries_and_report_the_longest_stretch():
    instances = [_instance("i-1", "spot", 0, 60), _instance("i-2", "ondemand", 60, 180),
                 _instance("i-3", "ondemand", 170, 240),  # overlaps i-2 during a hand-over: one stretch
                 _instance("i-4", "spot", 240, 300), _instance("i-5", "ondemand", 300, 360),
                 _instance("i-6", "ondemand", 400, None, role="standby")]  # a standby is no primary
    stretches = report.ondemand_stretches(_raw(instances=instances), T0 + timedelta(minutes=600))
    assert stretches == {"train-1": {"mode": "auto-switch", "hours": 4.0, "longest_h": 3.0}}


def test_a_warning_on_an_instance_the_agent_had_already_left_is_no_downtime():
    # i-1 was switched away from at 60 but its old agent had not terminated it when the pool lost capacity
    instances = [_instance("i-1", "spot", 0, 125), _instance("i-2", "spot", 60, None)]
    warning = {"agent_id": "ag-1", "instance_id": "i-1", "pool_id": POOL, "signal_type": "termination-warning",
               "source": "eventbridge", "status": "resolved", "response_action": "no-action",
               "new_instance_id": None, "new_pool_id": None, "new_lifecycle": None, "detected_at": _iso(120),
               "termination_time": _iso(122), "decided_at": _iso(120), "replacement_ready_at": None,
               "traffic_moved_at": None, "failover_time_ms": None, "error": "already moved"}
    summary = report.summarize(_raw(instances=instances, interruptions=[warning]))
    assert summary["downtime_s"] == 0.0 and summary["warnings_past_deadline"] == 0
    # but with no other primary serving, the gap until the next one is downtime
    alone = [_instance("i-1", "spot", 0, 125), _instance("i-2", "spot", 130, None)]
    summary = report.summarize(_raw(instances=alone, interruptions=[warning]))
    assert summary["downtime_s"] == pytest.approx(8 * 60) and summary["warnings_past_deadline"] == 1


def test_the_backtest_runs_on_the_demo_window_and_the_agents_region_pools():
    from ml import traces

    trace = traces.p3_9az()
    start = trace.times[0] + timedelta(days=7)
    end = start + timedelta(hours=12)
    agents = [{"logical": "train-1", "mode": "auto-switch", "az": "us-east-1c"},
              {"logical": "serve-1", "mode": "manual-replica", "az": "us-east-2a"}]
    runs = compare.agent_runs(trace, start, end, agents)
    # the evaluated part is the demo window, to one trace tick (the day before is history only)
    tick = timedelta(seconds=200)
    assert start <= datetime.fromisoformat(runs["eval_start"]) < start + tick
    assert end - tick < datetime.fromisoformat(runs["eval_end"]) <= end + tick
    # each agent only in its own region's pools, every policy run
    assert runs["pools"] == {"train-1": ["us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f"],
                             "serve-1": ["us-east-2a", "us-east-2b"]}
    assert all(set(c) == set(compare.POLICIES) for c in runs["agents"].values())
    hours = (end - start).total_seconds() / 3600
    for costs in runs["agents"].values():
        assert costs["ondemand"] == pytest.approx(trace.ondemand_price * hours, rel=0.01)
        assert costs["oracle"] <= min(costs.values()) + 1e-6  # boot 0: no downtime, so the limit costs least
    table = compare.table(runs, {"train-1": 1.1 * runs["agents"]["train-1"]["ours"], "serve-1": 40.0},
                          {"train-1": "auto-switch", "serve-1": "manual-replica"}, hours)
    product = table["rows"][-1]
    assert [r["name"] for r in table["rows"]] == [*compare.POLICIES, "product (measured)"]
    assert table["ratio_to_ours"] == pytest.approx(1.1, abs=0.002) and table["passed"]
    assert product["all_usd"] == pytest.approx(product["auto_usd"] + 40.0, abs=0.01)
    assert product["auto_per_agent_h"] == pytest.approx(product["auto_usd"] / hours, abs=1e-3)
    failing = compare.table(runs, {"train-1": 1.3 * runs["agents"]["train-1"]["ours"]},
                            {"train-1": "auto-switch"}, hours)
    assert not failing["passed"]


def test_standby_placements_are_checked_against_the_standby_back_off_and_promotions_are_no_launch():
    from components.capacity import DEFAULT_BACKOFF

    # GIVEN a warning at 0 about the pool
    observations = [_refused(0, "interruption_warning")]
    placed = {**_decision(DEFAULT_BACKOFF.window(1) / 60 - 1, "place_standby", "p3.2xlarge.us-east-1d"),
              "standby": POOL}  # target is the primary's pool; the choice is the standby's
    promoted = {"agent_id": "ag-1", "decided_at": _iso(1), "new_pool_id": POOL, "new_lifecycle": "spot",
                "response_action": "promoted-existing-replica"}
    checked, violations = report.backoff_violations(_raw(observations=observations, decisions=[placed],
                                                         interruptions=[promoted]))
    # THEN the placement inside the standby window is a violation; promoting a running standby is not checked
    assert checked == 1 and [(v["by"], v["pool_id"]) for v in violations] == [("decision place_standby", POOL)]


def test_the_decision_examples_are_one_of_each_kind_in_time_order_and_never_repeat():
    """GIVEN decisions of two agents (read agent by agent), a kind of move repeated and stays WHEN summarised THEN the
    examples are the first of each kind of move in time order, then the first stay: none twice (the demo printed
    the first switch twice, as "a move" and as "the first decision")."""
    decisions = [_decision(30, "switch_pool", "p3.2xlarge.us-east-1d"), _decision(60, "stay"),
                 _decision(90, "to_ondemand", "on-demand"), _decision(0, "switch_pool"), _decision(10, "stay"),
                 _decision(120, "to_spot"), _decision(150, "place_standby"), _decision(5, "switch_pool")]
    examples = report.summarize(_raw(decisions=decisions))["decision_examples"]
    assert [(e["at"], e["action"]) for e in examples] == [
        (_iso(0), "switch_pool"), (_iso(90), "to_ondemand"), (_iso(120), "to_spot"), (_iso(10), "stay")]
