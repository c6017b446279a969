"""Capacity back-off: a pool that refused a launch is not tried again for a while.

Window: ``base_s × factor^(n − 1)`` after the ``n``-th refusal in a row (refusals since the pool's last
launch success), capped at ``max_s``. Why these numbers (docs/ARCHITECTURE.md, "Capacity back-off"):
in the real probe traces half of the spot outages are over within 30 minutes and a quarter last more
than 1.7 hours. Karpenter's 3 minutes is shorter than our 5-minute decision cycle, so it would
never skip a cycle; 10 minutes skips the next cycle or two, and doubling reaches the long outages
(10, 20, 40, 80 min, … 6 h) after a handful of refusals without ever retrying a dead pool every cycle.
An interruption warning or AWS stop starts the same window as a refusal: the pool just lost capacity.
(``losses_start=False`` leaves losses to the risk estimate alone; a variant of the backtest,
docs/benchmarks.md, not shipped: it wins most of the 9-AZ rows and slices but loses where pools flap.)

A launch success clears the refusals (capacity came back), but losses (warnings, AWS stops) of the last
``loss_memory_s`` (a day) keep counting: a pool that takes back every instance a few hours after granting it
backs off longer each time (10, 20, 40, 80 min) instead of restarting at 10 minutes. ``DEFAULT_BACKOFF`` is
the one policy of every placement: the decision cycle, the failover, the replica coordinator's standbys and
the backtest's ``ours``. (The standbys had the day's memory first; on the backtest's rows it scored lower for
the primary too, on both evaluation windows, averaged over start ticks: docs/benchmarks.md, "Variants".)
The risk model's training probe (``ml.features.PROBE_BACKOFF``) keeps the same windows without the loss
memory: the committed model's rows were simulated that way, and giving the probe the memory means retraining.

Examples
--------
>>> from components.capacity.model import CapacityObservation, ObservationKind as K
>>> obs = [CapacityObservation("p", K.LAUNCH_REFUSED, 0.0), CapacityObservation("p", K.LAUNCH_REFUSED, 700.0)]
>>> BackoffPolicy().until(obs, now=800.0)   # 2nd refusal in a row: 20 minutes from 700 s
1900.0
>>> BackoffPolicy().until(obs + [CapacityObservation("p", K.LAUNCH_SUCCEEDED, 1000.0)], now=1100.0) is None
True
>>> lost = [CapacityObservation("p", K.INTERRUPTION_WARNING, 0.0), CapacityObservation("p", K.LAUNCH_SUCCEEDED, 900.0),
...         CapacityObservation("p", K.INTERRUPTION_WARNING, 7200.0)]
>>> BackoffPolicy().until(lost, now=7200.0) - 7200  # 2nd loss of the day: 20 min, the success notwithstanding
1200.0
>>> BackoffPolicy(loss_memory_s=0).until(lost, now=7200.0) - 7200  # without memory the success wiped the first
600.0
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from components.capacity.model import NEGATIVE_KINDS, CapacityObservation, ObservationKind

__all__ = ["DEFAULT_BACKOFF", "BackoffPolicy"]

_STARTS = NEGATIVE_KINDS  # a refusal, a warning or an AWS stop starts (or extends) a back-off
_CLEARS = frozenset({ObservationKind.LAUNCH_SUCCEEDED})
_LOSSES = frozenset({ObservationKind.INTERRUPTION_WARNING, ObservationKind.AWS_STOPPED})


@dataclass(frozen=True)
class BackoffPolicy:
    """Growing skip window after capacity refusals (seconds)."""

    base_s: float = 600.0
    factor: float = 2.0
    max_s: float = 6 * 3600.0
    loss_memory_s: float = 24 * 3600.0  # a launch success does not clear losses younger than this (0: it does)
    losses_start: bool = True  # False: only refusals start a window (a loss then weighs only in the risk)

    def window(self, refusals_in_a_row: int) -> float:
        """How long to skip the pool after the n-th refusal in a row (0 for none)."""
        if refusals_in_a_row <= 0:
            return 0.0
        return min(self.max_s, self.base_s * self.factor ** (refusals_in_a_row - 1))

    def until(self, observations: Iterable[CapacityObservation], now: float) -> float | None:
        """Epoch seconds until which the pool is skipped, or None when it may be tried now.

        ``observations`` are one pool's, any order; those after ``now`` are ignored.
        """
        streak, last = 0, None
        for o in sorted((o for o in observations if o.at <= now), key=lambda o: o.at):
            if o.kind in _CLEARS:
                streak, last = self._remembered_losses(observations, o.at, now), None
            elif o.kind in _STARTS and (self.losses_start or o.kind not in _LOSSES):
                streak, last = streak + 1, o.at
        if last is None:
            return None
        end = last + self.window(streak)
        return end if end > now else None

    def _remembered_losses(self, observations: Iterable[CapacityObservation], success_at: float,
                           now: float) -> int:
        """Losses before a success that still count after it (none without ``loss_memory_s``)."""
        if self.loss_memory_s <= 0:
            return 0
        return sum(1 for o in observations
                   if o.kind in _LOSSES and now - self.loss_memory_s <= o.at < success_at)

    def blocked(self, by_pool: dict[str, list[CapacityObservation]], now: float) -> dict[str, float]:
        """Pools in back-off now, with the time each one opens again."""
        out = {}
        for pool_id, observations in by_pool.items():
            end = self.until(observations, now)
            if end is not None:
                out[pool_id] = end
        return out


DEFAULT_BACKOFF = BackoffPolicy()  # a day of loss memory: the decision engine's hold cap
