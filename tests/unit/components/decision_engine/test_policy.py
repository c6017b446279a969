"""Unit tests of the decision policy: the expected-cost arithmetic and each rail, with reasons in words."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from components.decision_engine import (
    ONDEMAND,
    DecisionAction,
    DecisionConfig,
    InvalidDecisionInputError,
    PoolOption,
    Situation,
    decide,
    expected_hourly_cost,
    hazard_per_hour,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
A, B, C = "m5.large.eu-west-1a", "m5.large.eu-west-1b", "m5.large.eu-west-1c"
OD = 0.096
NO_STANDBY = DecisionConfig(standby_enabled=False, min_pool_duration_hours=1, risk_ceiling=0.30,
                            risk_recover=0.20)


def opts(**prices_risks):
    names = {"a": A, "b": B, "c": C}
    return [PoolOption(names[k], p, r) for k, (p, r) in prices_risks.items()]


def long_ago(pool):
    return Situation(pool, NOW - timedelta(days=1))


def test_hazard_inverts_the_horizon_probability():
    # P(at least one event in 1 h) = 1 - exp(-rate) → rate = -ln(1 - p)
    assert hazard_per_hour(0.5, 3600) == pytest.approx(0.693147, rel=1e-5)
    assert hazard_per_hour(0.5, 7200) == pytest.approx(0.346574, rel=1e-5)


def test_expected_cost_adds_the_price_of_risk():
    config = DecisionConfig(downtime_penalty_per_hour=2.4, interruption_gap_s=180, switch_overhead_s=300)
    safe = expected_hourly_cost(PoolOption(A, 0.03, 0.0), config)
    risky = expected_hourly_cost(PoolOption(A, 0.03, 0.5), config)
    assert safe == pytest.approx(0.03)
    # rate 0.693/h × (2.4 × 180/3600 + 0.03 × 300/3600) $ per interruption
    assert risky == pytest.approx(0.03 + 0.693147 * (0.12 + 0.0025), rel=1e-5)


def test_switches_to_a_clearly_cheaper_pool_and_says_why():
    d = decide(long_ago(A), opts(a=(0.040, 0.05), b=(0.030, 0.05)), OD, NOW, NO_STANDBY)
    assert (d.action, d.target) == (DecisionAction.SWITCH_POOL, B)
    assert "25.0% saved" in d.reason


def test_stays_when_the_saving_is_below_a_user_set_min_savings():
    config = DecisionConfig(standby_enabled=False, min_savings_percent=15)
    d = decide(long_ago(A), opts(a=(0.040, 0.05), b=(0.036, 0.05)), OD, NOW, config)
    assert (d.action, d.target) == (DecisionAction.STAY, A)
    assert "only 10.0% cheaper" in d.reason
    # without the rail, the arithmetic alone decides: a 10 % saving for hours repays a 5-minute overlap
    d = decide(long_ago(A), opts(a=(0.040, 0.05), b=(0.036, 0.05)), OD, NOW, DecisionConfig(standby_enabled=False))
    assert (d.action, d.target) == (DecisionAction.SWITCH_POOL, B)


def test_stays_when_the_switch_would_not_repay_itself_while_the_new_pool_lasts():
    # b saves ~0.0033 $/h in expectation but is expected to last ~4.5 h (risk 0.2 within the hour):
    # 0.015 $ < the 0.03 $ overlap of a one-hour boot
    config = DecisionConfig(standby_enabled=False, switch_overhead_s=3600)
    d = decide(long_ago(A), opts(a=(0.040, 0.0), b=(0.030, 0.2)), 0.5, NOW, config)
    assert d.action is DecisionAction.STAY and "less than the" in d.reason and "switch" in d.reason
    # the same saving in a pool expected to last the whole hold cap repays it
    d = decide(long_ago(A), opts(a=(0.040, 0.0), b=(0.030, 0.0)), 0.5, NOW, config)
    assert (d.action, d.target) == (DecisionAction.SWITCH_POOL, B)


def test_measured_boot_time_sets_the_price_of_an_interruption():
    fast = DecisionConfig.for_service(120, 24 * OD)
    slow = DecisionConfig.for_service(600, 24 * OD)
    assert fast.interruption_gap_s == 0 and slow.interruption_gap_s == 480 and slow.switch_overhead_s == 600
    risky = PoolOption(A, 0.03, 0.3)
    assert expected_hourly_cost(risky, fast) < expected_hourly_cost(risky, slow)
    # with a 120 s boot an interruption costs no downtime: a risky cheap pool beats a safe dear one
    d = decide(long_ago(ONDEMAND), opts(a=(0.03, 0.3), b=(0.05, 0.0)), OD, NOW, replace(fast, standby_enabled=False))
    assert d.target == A
    d = decide(long_ago(ONDEMAND), opts(a=(0.03, 0.3), b=(0.05, 0.0)), OD, NOW, replace(slow, standby_enabled=False))
    assert d.target == B


def test_minimum_pool_duration_blocks_an_early_switch():
    recent = Situation(A, NOW - timedelta(minutes=20))
    d = decide(recent, opts(a=(0.040, 0.05), b=(0.030, 0.05)), OD, NOW, NO_STANDBY)
    assert d.action is DecisionAction.STAY and "less than 1 h" in d.reason


def test_daily_limit_and_cooldown_block_voluntary_switches():
    config = DecisionConfig(standby_enabled=False, max_switches_per_day=2, min_pool_duration_hours=1)
    busy = Situation(A, NOW - timedelta(hours=3), (NOW - timedelta(hours=5), NOW - timedelta(hours=3)))
    d = decide(busy, opts(a=(0.040, 0.05), b=(0.030, 0.05)), OD, NOW, config)
    assert d.action is DecisionAction.STAY and "daily switch limit" in d.reason
    cooling = Situation(A, NOW - timedelta(hours=2), (NOW - timedelta(minutes=5),))
    d = decide(cooling, opts(a=(0.040, 0.05), b=(0.030, 0.05)), OD, NOW, config)
    assert d.action is DecisionAction.STAY and "cooling down" in d.reason


def test_pools_dearer_than_ondemand_in_expectation_mean_ondemand_and_the_return_is_immediate():
    config = DecisionConfig.for_service(300, 24 * OD, standby_enabled=False)
    d = decide(long_ago(A), opts(a=(0.03, 0.6), b=(0.03, 0.5)), OD, NOW, config)
    assert (d.action, d.target) == (DecisionAction.TO_ONDEMAND, ONDEMAND)
    assert "more than on-demand" in d.reason and "no pool is cheaper" in d.reason
    d = decide(long_ago(ONDEMAND), opts(a=(0.03, 0.6)), OD, NOW, config)
    assert (d.action, d.target) == (DecisionAction.STAY, ONDEMAND)
    # one pool passes: back to spot at once, even just after a switch and with the daily limit used up
    busy = Situation(ONDEMAND, NOW - timedelta(minutes=1), tuple(NOW - timedelta(minutes=m) for m in (1, 2, 3)))
    d = decide(busy, opts(a=(0.03, 0.6), b=(0.03, 0.05)), OD, NOW, config)
    assert (d.action, d.target) == (DecisionAction.TO_SPOT, B) and "back to spot" in d.reason


def test_user_risk_ceiling_is_a_rail():
    d = decide(long_ago(A), opts(a=(0.03, 0.6), b=(0.03, 0.5)), OD, NOW, NO_STANDBY)
    assert (d.action, d.target) == (DecisionAction.TO_ONDEMAND, ONDEMAND) and "above the ceiling" in d.reason
    # risk 0.25: below the ceiling (0.30) but above the recovery level (0.20) → stay on on-demand
    d = decide(long_ago(ONDEMAND), opts(a=(0.03, 0.25)), OD, NOW, NO_STANDBY)
    assert (d.action, d.target) == (DecisionAction.STAY, ONDEMAND)
    d = decide(long_ago(ONDEMAND), opts(a=(0.03, 0.15)), OD, NOW, NO_STANDBY)
    assert (d.action, d.target) == (DecisionAction.TO_SPOT, A)


def test_pools_marked_unavailable_are_never_targets_but_are_ranked_fallbacks_otherwise():
    pools = [PoolOption(A, 0.02, 0.05, available=False), PoolOption(B, 0.03, 0.05), PoolOption(C, 0.04, 0.05)]
    d = decide(Situation(A, NOW - timedelta(hours=3), warned=True), pools, OD, NOW, NO_STANDBY)
    assert (d.target, d.fallbacks) == (B, (C, ONDEMAND))
    d = decide(long_ago(ONDEMAND), pools, OD, NOW, NO_STANDBY)
    assert A not in (d.target, *d.fallbacks)


def test_leaving_a_risky_pool_is_not_blocked_by_the_minimum_duration():
    d = decide(Situation(A, NOW - timedelta(minutes=1)), opts(a=(0.03, 0.5), b=(0.035, 0.05)), OD, NOW,
               NO_STANDBY)
    assert (d.action, d.target) == (DecisionAction.SWITCH_POOL, B) and "above the ceiling" in d.reason


def test_warning_promotes_a_ready_standby_else_replaces_in_the_best_other_pool():
    warned = Situation(A, NOW - timedelta(hours=3), warned=True, standby=C, standby_ready=True)
    d = decide(warned, opts(a=(0.03, 0.05), b=(0.02, 0.05), c=(0.04, 0.05)), OD, NOW, NO_STANDBY)
    assert (d.action, d.target) == (DecisionAction.REPLACE, C) and "promoting the ready standby" in d.reason
    warned = Situation(A, NOW - timedelta(hours=3), warned=True)
    d = decide(warned, opts(a=(0.01, 0.05), b=(0.02, 0.05), c=(0.04, 0.05)), OD, NOW, NO_STANDBY)
    assert (d.action, d.target) == (DecisionAction.REPLACE, B)


def test_standby_when_the_downtime_it_avoids_is_worth_more_than_it_costs():
    config = DecisionConfig(downtime_penalty_per_hour=24 * OD, interruption_gap_s=180)
    calm = decide(long_ago(A), opts(a=(0.03, 0.02), b=(0.03, 0.02)), OD, NOW, config)
    assert calm.standby is None and "no standby" in calm.reason
    stormy = decide(long_ago(A), opts(a=(0.03, 0.29), b=(0.02, 0.05), c=(0.035, 0.01)), 1.0, NOW,
                    DecisionConfig(downtime_penalty_per_hour=240 * OD, interruption_gap_s=180,
                                   min_savings_percent=90))
    # the standby goes where it is cheapest in expectation: c (0.035 $/h, risk 0.01) before b (0.02 $/h, risk 0.05)
    assert stormy.target == A and stormy.standby == C and "standby in" in stormy.reason


def test_duplicate_pools_are_rejected():
    with pytest.raises(InvalidDecisionInputError):
        decide(long_ago(A), opts(a=(0.03, 0.1)) * 2, OD, NOW, NO_STANDBY)


def test_config_rejects_inverted_hysteresis():
    with pytest.raises(ValueError):
        DecisionConfig(risk_ceiling=0.2, risk_recover=0.3)
