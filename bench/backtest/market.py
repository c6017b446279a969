"""The trace as the simulator and the oracle bill it: effective availability and price integrals.

A price that is NaN (no price published yet) makes the pool unavailable at that tick. Costs are exact
integrals of a step function — each second is priced at its own tick's price — computed from a
cumulative table so that billing an instance is O(log ticks), not a walk over its ticks. Column ``-1``
of the rate table is on-demand, so a pool index of -1 means on-demand everywhere in the package.
"""

from __future__ import annotations

import bisect

import numpy as np


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class Market:
    """Precomputed, read-only views of one trace shared by every policy's run."""

    def __init__(self, trace):
        self.trace = trace
        self.pools = list(trace.pools)
        self.ticks = len(trace.times)
        self.ondemand_price = float(trace.ondemand_price)
        self.stamps = np.array([t.timestamp() for t in trace.times], dtype=float)
        self.tick_s = np.asarray(trace.tick_seconds(), dtype=float)
        prices = np.array(trace.prices, dtype=float)
        finite = np.isfinite(prices)
        self.available = _readonly(((np.asarray(trace.available) == 1) & finite).astype(np.int8))
        self.prices = _readonly(prices)
        filled = prices.copy()
        for j in range(filled.shape[1]):  # forward-fill, then 0 before the first price (never billed)
            col = filled[:, j]
            idx = np.where(np.isfinite(col), np.arange(len(col)), -1)
            np.maximum.accumulate(idx, out=idx)
            filled[:, j] = np.where(idx >= 0, col[np.clip(idx, 0, None)], 0.0)
        self.rate = _readonly(np.column_stack([filled, np.full(self.ticks, self.ondemand_price)]))
        steps = self.rate * self.tick_s[:, None] / 3600.0
        self.cum = _readonly(np.vstack([np.zeros((1, steps.shape[1])), np.cumsum(steps, axis=0)]))
        self._stamp_list = self.stamps.tolist()

    def end_time(self, end: int) -> float:
        """Epoch seconds where the window ``[.., end)`` ends: the start of tick ``end`` or the trace end."""
        if end < self.ticks:
            return float(self.stamps[end])
        return float(self.stamps[-1] + self.tick_s[-1])

    def integral(self, col: int, at: float) -> float:
        """$ spent by one instance in column ``col`` from the trace start to ``at``."""
        k = bisect.bisect_right(self._stamp_list, at) - 1
        k = 0 if k < 0 else (self.ticks - 1 if k >= self.ticks else k)
        return float(self.cum[k, col] + self.rate[k, col] * (at - self._stamp_list[k]) / 3600.0)

    def cost(self, col: int, begin: float, end: float) -> float:
        """$ for one instance in column ``col`` running over ``[begin, end)``."""
        if end <= begin:
            return 0.0
        return self.integral(col, end) - self.integral(col, begin)

    def integral_vec(self, at: np.ndarray) -> np.ndarray:
        """:meth:`integral` for every column at once, column ``c`` evaluated at ``at[c]``."""
        k = np.clip(np.searchsorted(self.stamps, at, side="right") - 1, 0, self.ticks - 1)
        cols = np.arange(self.rate.shape[1])
        return self.cum[k, cols] + self.rate[k, cols] * (at - self.stamps[k]) / 3600.0
