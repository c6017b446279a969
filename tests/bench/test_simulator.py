"""Exact numbers of the simulator's rules on small hand-made traces (ticks of 200 s, od 3 $/h)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.backtest import ONDEMAND, Action, Rules, simulate
from bench.backtest.guard import FutureAccessError
from bench.backtest.policies import CheapestPolicy, OnDemandPolicy, StaticPolicy
from tests.bench.helpers import Script, make_trace, stay

RULES = Rules.for_ondemand_price(3.0)  # penalty 72 $/h, boot 300 s, promote 15 s, warning 120 s
H = 3600.0


def two_pools(a_down=(), b_down=(), ticks=20, price_a=1.0, price_b=2.0):
    """Pools a (us-east-1a) and b (us-east-1b), available except at the given ticks."""
    avail = np.ones((ticks, 2), dtype=np.int8)
    avail[list(a_down), 0] = 0
    avail[list(b_down), 1] = 0
    return make_trace(avail, [price_a, price_b])


A, B = "us-east-1a", "us-east-1b"


def test_fresh_launch_at_the_warning_leaves_boot_minus_warning_of_downtime():
    trace = two_pools(a_down=range(10, 20))
    r = simulate(trace, CheapestPolicy(), RULES, 0, 20, timeline=True)
    assert r.downtime_s == pytest.approx(RULES.boot_s - RULES.warning_s)  # 180 s
    assert (r.interruptions, r.switches) == (1, 1)
    # a serves [0, 2120) at 1 $/h; b runs [2000, 4000) at 2 $/h
    assert r.cost_usd == pytest.approx((2120 * 1.0 + 2000 * 2.0) / H)
    assert r.score == pytest.approx(r.cost_usd + 72.0 * 180 / H)
    assert [(round(a), round(b), p) for a, b, p in r.serving_timeline] == [
        (round(trace.times[0].timestamp()), round(trace.times[0].timestamp()) + 2120, A),
        (round(trace.times[0].timestamp()) + 2300, round(trace.times[0].timestamp()) + 4000, B)]


def test_ready_standby_promoted_at_the_warning_gives_no_downtime():
    trace = two_pools(a_down=range(10, 20))
    policy = Script(lambda obs: Action(A, standby=B) if obs.available[0] else Action(B), first=A)
    r = simulate(trace, policy, RULES, 0, 20)
    assert r.downtime_s == 0
    assert (r.interruptions, r.switches) == (1, 1)
    # a until the standby takes over (2000 + 15), the standby b from its launch at 0 to the end
    assert r.cost_usd == pytest.approx((2015 * 1.0 + 4000 * 2.0) / H)


def test_standby_is_promoted_automatically_when_the_policy_ignores_the_warning():
    trace = two_pools(a_down=range(10, 20))
    r = simulate(trace, Script(lambda obs: Action(A, standby=B), first=A), RULES, 0, 20)
    assert r.downtime_s == 0 and r.switches == 1
    assert r.cost_usd == pytest.approx((2015 * 1.0 + 4000 * 2.0) / H)
    # at the warning, naming the pool it is in launches nothing; on the 9 later ticks a launch there fails
    assert r.failed_launches == 9


def test_overlap_is_billed_at_price_times_seconds():
    trace = two_pools()
    policy = Script(lambda obs: ONDEMAND if obs.tick < 5 else A, first=ONDEMAND)
    r = simulate(trace, policy, RULES, 0, 20)
    # on-demand serves until the spot launch at 1000 s is ready (1300 s): 300 s of overlap
    assert r.cost_usd == pytest.approx((1300 * 3.0 + 3000 * 1.0) / H)
    assert r.cost_usd - (1000 * 3.0 + 3000 * 1.0) / H == pytest.approx(300 * 3.0 / H)
    assert (r.downtime_s, r.switches, r.interruptions) == (0, 1, 0)


def test_failed_launch_costs_nothing_and_shows_next_tick():
    trace = two_pools(a_down=range(3, 6))
    seen = {}

    def decide(obs):
        seen[obs.tick] = obs.pending
        return A if obs.tick == 3 else B

    r = simulate(trace, Script(decide, first=B), RULES, 0, 20)
    assert r.cost_usd == pytest.approx(4000 * 2.0 / H)
    assert (r.failed_launches, r.launches, r.switches, r.downtime_s) == (1, 0, 0, 0)
    assert seen[4] is None


def test_ondemand_costs_the_window_at_the_ondemand_price_with_no_downtime():
    trace = two_pools(a_down=range(2, 9), b_down=range(5, 15))
    r = simulate(trace, OnDemandPolicy(), RULES, 3, 20)
    assert r.cost_usd == pytest.approx(3.0 * 17 * 200 / H) == pytest.approx(r.ondemand_cost_usd)
    assert (r.downtime_s, r.interruptions, r.switches) == (0, 0, 0)
    assert r.cost_pct_of_ondemand == pytest.approx(100.0)


def test_static_goes_on_demand_and_relaunches_in_its_pool_when_it_returns():
    trace = two_pools(a_down=range(5, 9))
    r = simulate(trace, StaticPolicy(), RULES, 0, 20, timeline=True)
    assert [p for _, _, p in r.serving_timeline] == [A, ONDEMAND, A]
    assert (r.interruptions, r.switches) == (1, 2)
    assert r.downtime_s == pytest.approx(180)
    # a [0, 1120), on-demand [1000, 2100) (launched at the warning, until a is back and ready), a [1800, 4000)
    assert r.cost_usd == pytest.approx((1120 * 1.0 + 1100 * 3.0 + 2200 * 1.0) / H)


def test_warning_on_a_booting_replacement_counts_and_a_cancelled_launch_bills_its_seconds():
    trace = two_pools(a_down=[3])
    policy = Script(lambda obs: ONDEMAND if obs.tick < 2 or obs.tick == 3 else A, first=ONDEMAND)
    r = simulate(trace, policy, RULES, 0, 6)
    # a launched at 400 is warned at 600 and cancelled then; a new one at 800 replaces on-demand at 1100
    assert r.interruptions == 1 and r.switches == 1 and r.downtime_s == 0
    assert r.cost_usd == pytest.approx((1100 * 3.0 + 200 * 1.0 + 400 * 1.0) / H)


def test_unknown_price_makes_a_pool_unavailable():
    avail = np.ones((10, 2), dtype=np.int8)
    prices = np.array([[np.nan, 2.0]] * 5 + [[1.0, 2.0]] * 5)
    trace = make_trace(avail, prices)
    seen = []
    policy = CheapestPolicy()
    act = policy.act
    policy.act = lambda obs: (seen.append(int(obs.available[0])), act(obs))[1]
    r = simulate(trace, policy, RULES, 0, 10, timeline=True)
    assert seen[:6] == [0, 0, 0, 0, 0, 0] and seen[6] == 1  # first-choice call + ticks 0..4, then tick 5
    assert [p for _, _, p in r.serving_timeline] == [B, A]


def test_naming_the_warned_pool_rides_it_out():
    trace = two_pools(a_down=[5])
    r = simulate(trace, stay(A), RULES, 0, 10, timeline=True)
    # a is warned at 1000 and stops at 1120; at tick 6 (1200) there is no primary, so asking for a
    # launches a new one, serving from 1500
    assert r.downtime_s == pytest.approx(80 + 300)
    assert (r.interruptions, r.switches, r.launches, r.failed_launches) == (1, 1, 1, 0)
    assert r.cost_usd == pytest.approx((1120 + 800) * 1.0 / H)


def test_standby_in_the_primary_pool_is_rejected():
    with pytest.raises(ValueError):
        Action(A, standby=A)
    with pytest.raises(ValueError):
        simulate(two_pools(), Script(lambda obs: "nowhere", first=A), RULES, 0, 5)


def test_first_choice_must_be_obtainable():
    with pytest.raises(ValueError, match="not obtainable"):
        simulate(two_pools(a_down=[0]), stay(A), RULES, 0, 5)


def test_policies_cannot_read_rows_after_the_current_tick():
    trace = two_pools(a_down=[7])

    class Nosy(Script):
        def reset(self, trace, rules, eval_start):
            super().reset(trace, rules, eval_start)
            assert trace.available[:eval_start].shape == (eval_start, 2)  # the training part is open
            with pytest.raises(FutureAccessError):
                trace.available[eval_start]
            with pytest.raises(FutureAccessError):
                np.asarray(trace.prices)

    def peek(obs, ahead):
        assert obs.history_available.shape[0] == obs.tick + 1
        assert not obs.history_prices.flags.writeable and not obs.history_available.flags.writeable
        trace_view = policy.trace
        trace_view.prices[obs.tick]
        trace_view.available[-1 if obs.tick == trace_view.ticks - 1 else obs.tick]
        if ahead:
            trace_view.available[obs.tick + 1]
        return A

    policy = Nosy(lambda obs: peek(obs, False), first=A)
    simulate(trace, policy, RULES, 4, 6)
    policy = Nosy(lambda obs: peek(obs, obs.tick == 5), first=A)
    with pytest.raises(FutureAccessError):
        simulate(trace, policy, RULES, 4, 10)


def test_window_is_scored_only_after_the_start():
    trace = two_pools(a_down=range(0, 3))
    r = simulate(trace, stay(A), RULES, 5, 20)
    assert r.ondemand_cost_usd == pytest.approx(3.0 * 15 * 200 / H)
    assert r.cost_usd == pytest.approx(15 * 200 * 1.0 / H) and r.interruptions == 0
