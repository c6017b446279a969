"""``ours`` in the backtest: what it measures of its own launches and how it treats a booting replacement."""

from __future__ import annotations

import numpy as np
import pytest

from bench.backtest import ONDEMAND, Action, Rules, simulate
from bench.backtest.model import InstanceView, Observation
from bench.backtest.ours import OursPolicy
from components.decision_engine import DEFAULT_BOOT_S
from tests.bench.helpers import make_trace

A, B, C = "us-east-1a", "us-east-1b", "us-east-1c"


def trace_with(down: dict[int, range], ticks: int = 16):
    """200-second ticks; pool prices a 1.0, b 2.0, c 2.5 $/h; on-demand 3.0 $/h."""
    avail = np.ones((ticks, 3), dtype=np.int8)
    for col, rows in down.items():
        avail[list(rows), col] = 0
    return make_trace(avail, [1.0, 2.0, 2.5])


class Recording(OursPolicy):
    """OursPolicy that keeps every action it returned, with the tick."""

    def reset(self, trace, rules, eval_start):
        super().reset(trace, rules, eval_start)
        self.actions: list[tuple[int, Action]] = []

    def act(self, obs):
        action = super().act(obs)
        self.actions.append((obs.tick, action))
        return action


def test_a_boot_shorter_than_a_tick_is_measured():
    # GIVEN a 120 s boot on 200 s ticks: the replacement serves before the next tick, so ours never
    # sees it booting, only serving
    rules = Rules.for_ondemand_price(3.0, boot_s=120.0)
    policy = OursPolicy()
    # WHEN pool a is lost at tick 3 and ours replaces it
    simulate(trace_with({0: range(3, 16)}), policy, rules, 0, 16)
    # THEN its cost model uses the boot it measured on that launch, not the 300 s default
    assert DEFAULT_BOOT_S == 300.0
    assert policy.boot_s() == pytest.approx(120.0)


def test_a_promoted_standby_does_not_count_as_a_boot():
    # the first sight of each launch is its boot; a standby promoted later gets a new ready time
    policy = OursPolicy()
    policy.reset(trace_with({}), Rules.for_ondemand_price(3.0), 0)

    def seen(standby=None, pending=None):
        return Observation(tick=0, time=None, now=0.0, tick_s=200.0, prices=None, available=None,
                           history_available=None, history_prices=None, primary=None, standby=standby,
                           pending=pending, ondemand_price=3.0, pools=[A, B, C], observations=())

    policy._learn(seen(standby=InstanceView(B, 1000.0, 1300.0, False, None)))
    policy._learn(seen(pending=InstanceView(B, 1000.0, 5015.0, False, None)))  # promoted much later
    assert policy.boots == [300.0]


def test_the_only_replacement_is_left_to_boot():
    # GIVEN a long boot (900 s), a cheap downtime penalty (spot stays worth it after a refusal), pool a
    # lost at tick 2 while b and c refuse then: ours replaces with on-demand, which boots until tick 6.5
    rules = Rules(downtime_penalty_per_hour=3.0, boot_s=900.0)
    trace = trace_with({0: range(2, 16), 1: range(2, 3), 2: range(2, 16)})
    policy = Recording()
    result = simulate(trace, policy, rules, 0, 16)
    # WHEN b leaves its back-off (tick 5) while the on-demand replacement still boots and nothing serves
    # THEN ours keeps that replacement rather than restarting a 900 s boot in b
    booting = [a for t, a in policy.actions if 2 < t < 7]
    assert booting and all(a.primary == ONDEMAND for a in booting)
    assert result.downtime_s == pytest.approx(rules.boot_s - rules.warning_s)
    assert result.interruptions == 1


class ScoreTimes(Recording):
    """Recording that also keeps the simulated time of every risk rescore."""

    def reset(self, trace, rules, eval_start):
        super().reset(trace, rules, eval_start)
        self.scored_at: list[float] = []

    def _rescore(self, obs):
        super()._rescore(obs)
        self.scored_at.append(obs.now)


def test_risk_is_rescored_on_the_scorers_schedule_only_like_production():
    # GIVEN 200-second ticks and the risk scorer's 15 minutes: production rescores at 0, 900, 1800 s …
    rules = Rules.for_ondemand_price(3.0, boot_s=120.0)
    policy = ScoreTimes()
    # WHEN pool a is lost at tick 2 (400 s), between two scheduled runs
    simulate(trace_with({0: range(2, 16)}), policy, rules, 0, 16)
    # THEN no rescore happened at the loss: every gap between scores is a full 15 minutes or more …
    gaps = np.diff(policy.scored_at)
    assert len(policy.scored_at) >= 3 and (gaps >= 900.0).all()
    # … but the back-off did act at once: ours left pool a on the tick of the loss and stayed out of it
    # for the first back-off window (10 minutes: ticks 2-4), with risk scored before the loss
    chosen = dict(policy.actions)
    assert chosen[2].primary == B and chosen[3].primary != A and chosen[4].primary != A


def test_the_at_once_rescore_is_only_a_variant():
    rules = Rules.for_ondemand_price(3.0, boot_s=120.0)
    policy = ScoreTimes(rescore_on_setback=True)
    simulate(trace_with({0: range(2, 16)}), policy, rules, 0, 16)
    assert (np.diff(policy.scored_at) < 900.0).any()
