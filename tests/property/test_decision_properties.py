"""Properties of the decision policy (issue #3): limits, no flapping, priced pools, risk ceiling."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from components.decision_engine import (
    ONDEMAND,
    DecisionAction,
    DecisionConfig,
    PoolOption,
    Situation,
    decide,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
POOL_IDS = [f"m5.large.eu-west-1{z}" for z in "abc"] + [f"m5a.large.eu-west-1{z}" for z in "abc"]

prices = st.one_of(st.none(), st.floats(min_value=0.005, max_value=0.2))
risks = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0))


@st.composite
def option_sets(draw, price=prices, risk=risks):
    n = draw(st.integers(min_value=1, max_value=len(POOL_IDS)))
    return [PoolOption(pid, draw(price), draw(risk), draw(st.booleans() | st.just(True)))
            for pid in POOL_IDS[:n]]


configs = st.builds(
    DecisionConfig,
    min_savings_percent=st.floats(0, 40),
    risk_ceiling=st.just(0.3),
    risk_recover=st.floats(0.0, 0.3),
    min_pool_duration_hours=st.floats(0, 3),
    max_switches_per_day=st.integers(0, 4),
    max_switches_per_week=st.integers(0, 12),
    cooldown_s=st.floats(0, 7200),
    downtime_penalty_per_hour=st.floats(0, 5),
)


def _apply(situation: Situation, decision, now: datetime) -> Situation:
    if decision.target == situation.current:
        return Situation(situation.current, situation.since, situation.recent_switches)
    switches = situation.recent_switches + ((now,) if decision.voluntary_switch else ())
    return Situation(decision.target, now, switches)


@settings(max_examples=150, deadline=None)
@given(config=configs, steps=st.lists(st.tuples(option_sets(), st.integers(60, 6 * 3600)),
                                      min_size=1, max_size=40))
def test_switch_limits_and_cooldown_are_never_exceeded(config, steps):
    situation, now = Situation(ONDEMAND, T0), T0
    for options, advance in steps:
        now += timedelta(seconds=advance)
        situation = _apply(situation, decide(situation, options, 0.096, now, config), now)
    switches = sorted(situation.recent_switches)
    for s in switches:
        assert sum(1 for x in switches if s - timedelta(days=1) < x <= s) <= config.max_switches_per_day
        assert sum(1 for x in switches if s - timedelta(days=7) < x <= s) <= config.max_switches_per_week
    for a, b in zip(switches, switches[1:]):
        assert (b - a).total_seconds() >= config.cooldown_s


@settings(max_examples=150, deadline=None)
@given(config=configs, options=option_sets(), start=st.sampled_from([ONDEMAND] + POOL_IDS))
def test_constant_inputs_never_flap(config, options, start):
    situation, now, visited = Situation(start, T0), T0, [start]
    for _ in range(30):
        now += timedelta(hours=1)
        situation = _apply(situation, decide(situation, options, 0.096, now, config), now)
        if situation.current != visited[-1]:
            visited.append(situation.current)
    # It may settle in one or two moves (e.g. risky pool → on-demand → safe pool), never go back.
    assert len(visited) == len(set(visited)) and len(visited) <= 3, visited


@settings(max_examples=200, deadline=None)
@given(config=configs, options=option_sets(), current=st.sampled_from([ONDEMAND] + POOL_IDS),
       warned=st.booleans(), standby=st.sampled_from([None] + POOL_IDS))
def test_a_pool_without_a_price_or_capacity_is_never_chosen(config, options, current, warned, standby):
    decision = decide(Situation(current, T0, warned=warned, standby=standby, standby_ready=False),
                      options, 0.096, T0 + timedelta(days=1), config)
    by_id = {o.pool_id: o for o in options}
    for chosen in (decision.target, decision.standby):
        if chosen not in (None, ONDEMAND) and not (warned and chosen == standby):
            assert chosen in by_id and by_id[chosen].price is not None and by_id[chosen].available
    assert decision.standby != decision.target
    assert decision.reason


@settings(max_examples=200, deadline=None)
@given(config=configs, current=st.sampled_from([ONDEMAND] + POOL_IDS), warned=st.booleans(),
       options=option_sets(price=st.floats(0.005, 0.2), risk=st.floats(0.3001, 1.0)))  # ceiling 0.3 in configs
def test_every_pool_above_the_risk_ceiling_means_ondemand(config, current, warned, options):
    decision = decide(Situation(current, T0, warned=warned), options, 0.096, T0 + timedelta(days=1), config)
    assert decision.target == ONDEMAND
    assert decision.action in (DecisionAction.STAY, DecisionAction.TO_ONDEMAND, DecisionAction.REPLACE)
