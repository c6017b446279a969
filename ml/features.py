"""numpy glue between a :class:`ml.traces.Trace` and the risk-model features and labels.

Every feature value comes from :func:`components.risk_model.feature_rows` (one definition, shared
with the risk scorer); this module only lays traces out as per-pool histories, stacks the rows into
arrays and derives the labels.

Label of row (tick t, pool p), for a pool obtainable at t: 1 if p is unobtainable at any tick in
(t, t + horizon], else 0. The traces probe whether a spot instance *can be obtained*; a pool whose
capacity disappears is the proxy for "a running instance there is at risk of interruption".
A row is kept only when its whole label window lies inside the ticks the caller allows
(``label_end``): training rows never look past the split, held-out rows never past the trace's end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.risk_model import (
    DEFAULT_ADVISOR_BAND,
    FEATURE_NAMES,
    PoolHistory,
    advisor_prior,
    feature_rows,
)
from ml.traces import Trace

__all__ = ["Dataset", "TRAILING_24H", "epoch_seconds", "feature_tensor", "label_matrix", "pool_histories",
           "region_fraction", "trace_features"]

TRAILING_24H = FEATURE_NAMES.index("pool_availability_24h")


@dataclass
class Dataset:
    """Rows (tick, pool) of one trace: features ``X``, labels ``y``, and where each row came from."""

    name: str
    X: np.ndarray          # (rows, len(FEATURE_NAMES)) float64, NaN = missing
    y: np.ndarray          # (rows,) int8
    tick: np.ndarray       # (rows,) tick index in the trace
    pool: np.ndarray       # (rows,) pool index in the trace
    prior: np.ndarray      # (rows,) Advisor-band prior for the horizon (the baseline / fallback)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(self.name, self.X[mask], self.y[mask], self.tick[mask], self.pool[mask], self.prior[mask])

    @staticmethod
    def concat(parts: list[Dataset], name: str = "pooled") -> Dataset:
        return Dataset(name, np.vstack([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                       np.concatenate([p.tick for p in parts]), np.concatenate([p.pool for p in parts]),
                       np.concatenate([p.prior for p in parts]))


def epoch_seconds(trace: Trace) -> np.ndarray:
    return np.array([t.timestamp() for t in trace.times], dtype=float)


def region_fraction(trace: Trace) -> np.ndarray:
    """(ticks, pools): share of the trace's pools in the same region as each pool that are obtainable."""
    out = np.empty(trace.available.shape, dtype=float)
    regions = [trace.regions.get(p, "") for p in trace.pools]
    for region in set(regions):
        cols = [j for j, r in enumerate(regions) if r == region]
        share = trace.available[:, cols].mean(axis=1)
        for j in cols:
            out[:, j] = share
    return out


def pool_histories(trace: Trace) -> list[PoolHistory]:
    """One full-length history per pool of the trace (prices NaN where unknown)."""
    times = epoch_seconds(trace).tolist()
    region = region_fraction(trace)
    return [PoolHistory(times, trace.available[:, j].astype(int).tolist(), trace.prices[:, j].tolist(),
                        region[:, j].tolist(), float(trace.ondemand_price),
                        int(trace.advisor_band.get(pool, DEFAULT_ADVISOR_BAND)))
            for j, pool in enumerate(trace.pools)]


def feature_tensor(trace: Trace) -> np.ndarray:
    """(ticks, pools, features): the features of every pool at every tick, each from rows <= t only."""
    return np.stack([np.array(feature_rows(h), dtype=float) for h in pool_histories(trace)], axis=1)


def label_matrix(trace: Trace, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, window_end): y[t, p] = 1 if p is unobtainable at a tick in (t, t + horizon]; window_end[t] =
    index of the last tick at or before t + horizon (the label of tick t reads ticks t+1..window_end[t])."""
    stamps = epoch_seconds(trace)
    ticks, pools = trace.available.shape
    window_end = np.searchsorted(stamps, stamps + horizon_s, side="right") - 1
    # next_zero[t, p]: first tick > t where p is unobtainable (ticks when none)
    next_zero = np.full((ticks, pools), ticks, dtype=np.int64)
    upcoming = np.full(pools, ticks, dtype=np.int64)
    for t in range(ticks - 1, -1, -1):
        next_zero[t] = upcoming
        upcoming = np.where(trace.available[t] == 0, t, upcoming)
    y = (next_zero <= window_end[:, None]).astype(np.int8)
    return y, window_end


def trace_features(trace: Trace, horizon_s: float, *, start: int = 0, end: int | None = None,
                   label_end: int | None = None, tensor: np.ndarray | None = None) -> Dataset:
    """Rows for ticks ``start <= t < end`` where the pool is obtainable and whose label window
    (t, t + horizon] ends on or before tick ``label_end − 1`` (default: the trace's last tick).

    For a training part ending at the split, pass ``end=label_end=split``: no training label then
    reads a tick at or after the split. ``tensor`` is a precomputed :func:`feature_tensor`.
    """
    ticks = trace.ticks
    end = ticks if end is None else end
    label_end = ticks if label_end is None else label_end
    stamps = epoch_seconds(trace)
    features = feature_tensor(trace) if tensor is None else tensor
    y, _ = label_matrix(trace, horizon_s)
    rows = np.arange(ticks)
    in_range = (rows >= start) & (rows < end) & (stamps + horizon_s <= stamps[label_end - 1])
    mask = in_range[:, None] & (trace.available == 1)
    tick_idx, pool_idx = np.nonzero(mask)
    bands = [int(trace.advisor_band.get(p, DEFAULT_ADVISOR_BAND)) for p in trace.pools]
    prior = np.array([advisor_prior(b, horizon_s) for b in bands])[pool_idx]
    return Dataset(trace.name, features[tick_idx, pool_idx], y[tick_idx, pool_idx], tick_idx, pool_idx, prior)
