"""The oracle is the limit: scored by the same simulator, never beaten, and fast enough."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.backtest import POLICIES, Rules, simulate
from bench.backtest.market import Market
from bench.backtest.oracle import OraclePolicy, solve
from tests.bench.helpers import make_trace

RULES = Rules.for_ondemand_price(3.0)
H = 3600.0
BASELINES = ["ondemand", "static", "cheapest", "price_capacity"]


def test_oracle_prelaunches_ahead_of_a_known_interruption():
    avail = np.ones((20, 2), dtype=np.int8)
    avail[10:, 0] = 0
    trace = make_trace(avail, [1.0, 2.0])
    r = simulate(trace, OraclePolicy(), RULES, 0, 20, timeline=True)
    assert r.downtime_s == 0 and r.switches == 1
    # launch b at 1800 (ready 2100 ≤ 2000 + 120): a is warned at 2000 and stopped at 2100 by the
    # replacement, so a bills [0, 2100) and b [1800, 4000)
    assert r.cost_usd == pytest.approx((2100 * 1.0 + 2200 * 2.0) / H)
    assert r.interruptions == 1


def test_oracle_rides_out_a_last_warning_when_nothing_else_would_pay():
    avail = np.ones((10, 1), dtype=np.int8)
    avail[9, 0] = 0  # warned at 1800, stops at 1920, the window ends at 2000: 80 s of downtime
    trace = make_trace(avail, [1.0])
    rules = Rules(downtime_penalty_per_hour=1.0)
    r = simulate(trace, OraclePolicy(), rules, 0, 10)
    assert r.downtime_s == pytest.approx(80)
    assert r.score == pytest.approx((1920 * 1.0 + 80 * 1.0) / H)


@st.composite
def random_traces(draw):
    pools = draw(st.integers(1, 3))
    ticks = draw(st.integers(6, 30))
    tick_s = draw(st.sampled_from([30, 60, 100, 150, 195, 200, 300, 450]))
    p_down = draw(st.sampled_from([0.1, 0.3, 0.5]))
    sticky = draw(st.booleans())
    bits = np.array(draw(st.lists(st.booleans(), min_size=ticks * pools, max_size=ticks * pools)))
    avail = (bits.reshape(ticks, pools) | (np.arange(ticks * pools).reshape(ticks, pools) % 3 != 0)
             if sticky else bits.reshape(ticks, pools))
    if p_down < 0.3:
        avail = avail | (np.arange(ticks)[:, None] % 2 == 0)
    prices = np.array(draw(st.lists(st.floats(0.2, 2.9), min_size=ticks * pools, max_size=ticks * pools)))
    prices = prices.reshape(ticks, pools)
    if draw(st.booleans()):
        prices = np.repeat(prices[:1], ticks, axis=0)  # flat prices: only availability matters
    start = draw(st.integers(0, ticks // 2))
    # Every pool available for longer than a boot plus the warning at the end: the window never ends
    # inside an outage, where the oracle's move set is knowingly incomplete (END_CORNER below).
    tail = -(-(RULES.boot_s + RULES.warning_s) // tick_s) + 1
    avail = np.vstack([avail, np.ones((int(tail), pools), dtype=bool)])
    prices = np.vstack([prices, np.repeat(prices[-1:], int(tail), axis=0)])
    return make_trace(avail.astype(np.int8), prices, tick_s=tick_s), start


# Found by hypothesis (CI, 2026-12-03): 60 s ticks, the window ends 2 minutes after the last warning.
# ``cheapest`` pays for launches that are lost before they serve, which leaves it an instance to name
# when every pool is available again just before the end; the oracle must launch one there (a policy
# always names a target) and pays 0.0042 $ more. bench/backtest/oracle.py, "Left out", says why.
END_CORNER_AVAIL = [[0, 0, 0]] * 5 + [[0, 0, 1]] * 5 + [[1, 0, 0], [0, 0, 1], [1, 1, 1], [0, 0, 1]]
END_CORNER_PRICES = [[1.0, 1.0, 1.0]] * 10 + [[0.5, 1, 1], [1, 1, 1], [0.25, 1, 1], [2.0, 1, 1]]


def test_the_known_end_of_window_corner_is_bounded_and_gone_with_a_tail():
    rules = Rules(downtime_penalty_per_hour=6.0)
    trace = make_trace(np.array(END_CORNER_AVAIL, dtype=np.int8), np.array(END_CORNER_PRICES), tick_s=60)
    market = Market(trace)
    oracle = simulate(trace, OraclePolicy(), rules, 5, trace.ticks, market=market)
    cheapest = simulate(trace, POLICIES["cheapest"](), rules, 5, trace.ticks, market=market)
    assert 0 < oracle.score - cheapest.score < rules.boot_s * 2.0 / H  # less than one boot at the top price
    tail = 8
    avail = np.vstack([END_CORNER_AVAIL, np.ones((tail, 3), dtype=np.int8)]).astype(np.int8)
    prices = np.vstack([END_CORNER_PRICES, np.repeat([END_CORNER_PRICES[-1]], tail, axis=0)])
    longer = make_trace(avail, prices, tick_s=60)
    market = Market(longer)
    oracle = simulate(longer, OraclePolicy(), rules, 5, longer.ticks, market=market)
    for name in BASELINES:
        assert oracle.score <= simulate(longer, POLICIES[name](), rules, 5, longer.ticks, market=market).score + 1e-9


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_traces(), st.sampled_from([72.0, 10.0, 6.0]))
def test_oracle_score_is_never_beaten(case, penalty):
    """Penalties from 2x the on-demand price (3 $/h) up: the range where the oracle is a strict bound."""
    trace, start = case
    rules = Rules(downtime_penalty_per_hour=penalty)
    market = Market(trace)
    oracle = simulate(trace, OraclePolicy(), rules, start, trace.ticks, market=market)
    plan = solve(market, rules, start, trace.ticks)
    assert oracle.score == pytest.approx(plan.score, rel=1e-9, abs=1e-9)  # the simulator agrees with the DP
    window = market.end_time(trace.ticks) - market.stamps[start]
    for name in BASELINES:
        r = simulate(trace, POLICIES[name](), rules, start, trace.ticks, market=market)
        assert oracle.score <= r.score + 1e-9, name
        assert 0 <= r.downtime_s <= window + 1e-6
        assert r.ondemand_cost_usd == pytest.approx(3.0 * window / H)


def test_dp_solves_a_full_size_trace():
    """The 9-AZ trace's size (its CPU time: ``python -m bench.hot_paths``, docs/benchmarks.md): the plan's score is
    never above staying on on-demand, nor below what the cheapest pool at every tick would cost."""
    rng = np.random.default_rng(1)
    ticks, pools = 20_000, 9
    avail = (rng.random((ticks, pools)) < 0.97).astype(np.int8)
    prices = np.abs(rng.normal(1.0, 0.2, (ticks, pools)))
    trace = make_trace(avail, prices, tick_s=195)
    market = Market(trace)
    plan = solve(market, RULES, 0, ticks)
    ondemand = simulate(trace, POLICIES["ondemand"](), RULES, 0, ticks, market=market)
    assert 0 < plan.score <= ondemand.score + 1e-9
    assert plan.score >= 0.99 * float(np.sum(prices.min(axis=1)[:-1] * 195 / H))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_traces(), st.sampled_from([0.0, 1.0, 3.0]))
def test_oracle_replay_matches_its_plan_even_with_cheap_downtime(case, penalty):
    trace, start = case
    rules = Rules(downtime_penalty_per_hour=penalty)
    market = Market(trace)
    oracle = simulate(trace, OraclePolicy(), rules, start, trace.ticks, market=market)
    assert oracle.score == pytest.approx(solve(market, rules, start, trace.ticks).score, rel=1e-9, abs=1e-9)
