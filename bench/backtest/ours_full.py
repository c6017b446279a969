"""``ours_full``: the product's decision logic with full information — a CEILING, not a deployable policy.

``ours`` sees capacity only where its own instances and launches looked (issue #11). This variant runs
the same :class:`~bench.backtest.ours.OursPolicy` code but is declared with full observability, like
the baselines: it reads every pool's availability at every tick. Its evidence is what a probe
(:class:`ml.features.PoolProbe`) holding an instance in *every* pool would have recorded — from the
last week of the training part on — and a pool unobtainable right now is not a target (the truth in
place of the capacity back-off). No deployment watches every pool all the time: it is the information
ceiling of this logic — what the same code does when it sees everything — not a bound on its score
(docs/benchmarks.md: dense evidence makes the evidence estimate more cautious, and on some traces
``ours_full`` scores worse than ``ours``).

Registered as optional (``--policies ours_full``); the report labels it "(ceiling, not deployable)".
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.backtest.model import Action, Observation, Rules
from bench.backtest.ours import OursPolicy
from bench.backtest.policies import register_policy
from components.risk_model import EVIDENCE_WINDOW_S
from ml.features import PoolProbe

CEILING = "reads every pool's availability at every tick (a probe in every pool), which production cannot"
PRUNE_EVERY_S = 3600.0  # the log keeps the evidence window (a week) only: older items weigh nothing


class OursFullPolicy(OursPolicy):
    """OursPolicy fed by a probe in every pool, choosing only among pools obtainable now."""

    name = "ours_full"
    observability = "full"
    ceiling = CEILING

    def reset(self, trace, rules: Rules, eval_start: int) -> None:
        super().reset(trace, rules, eval_start)
        first = int(np.searchsorted(self.times, self.times[eval_start] - EVIDENCE_WINDOW_S))
        self.probes = [PoolProbe(p, float(self.times[first])) for p in self.pools]
        past = np.asarray(trace.available[first:eval_start])  # the training part: readable by every policy
        for i in range(len(past)):
            for probe, up in zip(self.probes, past[i]):
                made = probe.step(float(self.times[first + i]), bool(up))
                if made is not None:
                    self.log[probe.pool].append(made)
        self.row = np.ones(len(self.pools), dtype=bool)
        self.pruned_at = -np.inf

    def _watch(self, obs: Observation) -> Observation:
        """The probes' records of this tick replace the agent's own (a probe in its pool sees the same)."""
        self.row = np.asarray(obs.available) == 1
        made = tuple(o for o in (probe.step(obs.now, bool(up)) for probe, up in zip(self.probes, self.row))
                     if o is not None)
        if obs.now - self.pruned_at >= PRUNE_EVERY_S:
            for pool, items in self.log.items():
                self.log[pool] = [o for o in items if obs.now - o.at < EVIDENCE_WINDOW_S]
            self.pruned_at = obs.now
        return replace(obs, observations=made)

    def _backoff(self, now: float) -> set[str]:
        return {p for p, up in zip(self.pools, self.row) if not up}

    def first_choice(self, obs: Observation) -> list[str]:
        return super().first_choice(self._watch(obs))

    def act(self, obs: Observation) -> Action:
        return super().act(self._watch(obs))


register_policy("ours_full", OursFullPolicy)
