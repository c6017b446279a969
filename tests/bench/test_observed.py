"""The honest view: a policy with ``observability = "observed"`` sees capacity only where its fleet looked.

It gets the observations production would record (launch refused/succeeded, warnings, instances held),
ranked fallbacks are tried within one tick, and agents of a fleet share what they saw.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.backtest import ONDEMAND, Action, Rules, simulate
from bench.backtest.guard import UnobservedReadError
from bench.backtest.ours import OursPolicy
from components.capacity import HELD_INTERVAL_S, ObservationKind
from ml import traces
from tests.bench.helpers import Script, make_trace

RULES = Rules.for_ondemand_price(3.0)
A, B, C = "us-east-1a", "us-east-1b", "us-east-1c"


class Observed(Script):
    observability = "observed"


def three_pools(down=None, ticks=20):
    avail = np.ones((ticks, 3), dtype=np.int8)
    for col, rows in (down or {}).items():
        avail[list(rows), col] = 0
    return make_trace(avail, [1.0, 2.0, 2.5])


def test_availability_is_readable_only_where_the_fleet_looked():
    reads = []

    def decide(obs):
        reads.append(obs.available[0])  # the pool it holds: observed
        with pytest.raises(UnobservedReadError):
            obs.available[1]  # never held nor tried
        with pytest.raises(UnobservedReadError):
            np.asarray(obs.available)
        with pytest.raises(UnobservedReadError):
            obs.history_available[obs.tick, 2]
        if obs.tick > 0:
            assert obs.history_available[obs.tick - 1, 0] == 1
        return A

    simulate(three_pools(), Observed(decide, first=A), RULES, 0, 5)
    assert reads == [1] * 5


def test_the_training_part_stays_readable_but_not_the_evaluated_part():
    class Nosy(Observed):
        def reset(self, trace, rules, eval_start):
            super().reset(trace, rules, eval_start)
            assert trace.available[:eval_start].shape == (eval_start, 3)
            with pytest.raises(UnobservedReadError):
                trace.available[eval_start: eval_start + 2]

    simulate(three_pools(), Nosy(lambda obs: A, first=A), RULES, 4, 8)


def test_observations_report_warnings_refusals_and_held_time():
    seen = []

    def decide(obs):
        seen.extend(obs.observations)
        return A if obs.tick < 8 else B

    trace = three_pools(down={0: range(8, 20), 1: range(8, 10)})
    simulate(trace, Observed(decide, first=A), RULES, 0, 12)
    kinds = [(o.pool_id, o.kind) for o in seen]
    assert (A, ObservationKind.INTERRUPTION_WARNING) in kinds
    assert kinds.count((B, ObservationKind.LAUNCH_REFUSED)) == 2  # ticks 8 and 9
    assert (B, ObservationKind.LAUNCH_SUCCEEDED) in kinds
    held = [o for o in seen if o.kind is ObservationKind.HELD and o.pool_id == A]
    assert held and all(b.at - a.at >= HELD_INTERVAL_S for a, b in zip(held, held[1:]))
    refusal = next(o for o in seen if o.kind is ObservationKind.LAUNCH_REFUSED)
    assert refusal.code == "InsufficientInstanceCapacity"


def test_ranked_fallbacks_are_tried_in_the_same_tick():
    trace = three_pools(down={0: range(10, 20), 1: range(10, 20)})

    def decide(obs):
        if obs.tick < 10:
            return Action(A)
        if C in {getattr(obs.pending, "pool", None), getattr(obs.primary, "pool", None)}:
            return Action(C)  # the replacement the fallback started
        return Action(B, fallbacks=(C, ONDEMAND))

    r = simulate(trace, Observed(decide, first=A), RULES, 0, 20)
    # a warned at tick 10, b refused, c launched at once: only boot − warning of downtime
    assert r.downtime_s == pytest.approx(RULES.boot_s - RULES.warning_s)
    assert (r.failed_launches, r.interruptions) == (1, 1)


def test_a_fleet_shares_what_its_agents_saw():
    per_agent = {0: [], 1: []}

    class Member(Observed):
        def join_fleet(self, member, fleet):
            self.member = member

        def act(self, obs):
            per_agent[self.member].extend(obs.observations)
            return Action(A if self.member == 0 else C)

    trace = three_pools(down={0: range(3, 20)})
    simulate(trace, Member(None, first=A), RULES, 0, 6, fleet=2, factory=lambda: Member(None, first=C))
    # agent 1 (on c) learns that a went away from agent 0's warning and refusals
    assert any(o.pool_id == A and o.negative for o in per_agent[1])


def test_ours_runs_under_the_observation_guard_on_a_real_trace():
    trace = traces.p3_9az().subset(pools=["us-east-1a", "us-east-2a", "us-west-2a"])
    trace = trace.subset(start=trace.times[0], end=trace.times[3000])
    rules = Rules.for_ondemand_price(trace.ondemand_price)
    start = trace.split_index(0.6)
    result = simulate(trace, OursPolicy(), rules, start, trace.ticks)
    assert 0 < result.cost_usd < result.ondemand_cost_usd
    fleet = simulate(trace, OursPolicy(), rules, start, trace.ticks, fleet=3, factory=OursPolicy)
    assert 0 < fleet.cost_usd < fleet.ondemand_cost_usd


class WarmedUp(Observed):
    """A scripted observed policy that ran ``warmup_s`` before the window (a product already deployed)."""

    def __init__(self, decide, warmup_s, first=None):
        super().__init__(decide, first=first)
        self.warmup_s = warmup_s


def test_a_warm_up_run_hands_its_observations_to_the_window_and_is_not_scored():
    trace = three_pools(down={0: range(2, 4)})  # A is lost during the warm-up, up again in the window
    t0 = trace.times[10].timestamp()

    def run(warmup_s):
        seen = []
        result = simulate(trace, WarmedUp(lambda obs: seen.extend(obs.observations) or A, warmup_s, first=A),
                          RULES, 10, 15)
        return result, seen

    cold, cold_seen = run(0.0)
    warm, warm_seen = run(10 * 200.0)
    assert not [o for o in cold_seen if o.at < t0]
    before = [(o.pool_id, o.kind) for o in warm_seen if o.at < t0]
    assert (A, ObservationKind.INTERRUPTION_WARNING) in before
    # the warm-up's loss of A (its downtime, its on-demand bridge) is not in the score: the window's is the same
    assert (warm.cost_usd, warm.downtime_s, warm.interruptions) == (cold.cost_usd, cold.downtime_s, cold.interruptions)
    assert warm.downtime_s == 0


def test_ours_with_a_warm_up_starts_the_window_knowing_its_own_past():
    trace = three_pools(down={0: range(0, 12)}, ticks=30)  # the cheapest pool is refused through the warm-up
    policy = OursPolicy(warmup_s=12 * 200.0)
    simulate(trace, policy, RULES, 12, 20)
    t0 = trace.times[12].timestamp()
    assert any(o.at < t0 and o.kind is ObservationKind.LAUNCH_REFUSED for o in policy.log[A])
    assert not OursPolicy().warmup_s  # the shipped default: no warm-up (docs/benchmarks.md says why)
