"""numpy glue between a :class:`ml.traces.Trace` and the risk model's rows, through observations.

A deployed product never sees a pool's availability at every tick: it sees what its own instances
and launches tell it (``components.capacity``). Training therefore does not read the trace's
availability as features. It replays the trace through an :func:`observer_log` — a probe fleet that
holds an instance in a pool while it can, is warned when the pool goes, retries with the product's
capacity back-off, and watches each pool only during random spans (so "nobody looked" is in the
training data as it is in production) — and computes every row with
``components.risk_model.feature_vector`` from that log and the prices: the one feature function the
backtest's ``ours`` and the production risk scorer call.

Rows are (scoring tick, pool): scoring ticks are spaced like the risk scorer's runs (15 minutes),
and a row exists where the pool is obtainable at that tick. Its label comes from the trace (ground
truth is allowed in labels): 1 if the pool is unobtainable at any tick in (t, t + horizon]. A row is
kept only when its whole label window lies inside the ticks the caller allows (``label_end``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from components.capacity import HELD_INTERVAL_S, BackoffPolicy, CapacityObservation, ObservationKind
from components.risk_model import (
    DEFAULT_ADVISOR_BAND,
    FEATURE_NAMES,
    PoolEvidence,
    advisor_prior,
    feature_vector,
    evidence_risk,
)
from ml.traces import Trace

__all__ = ["COVERAGE_MEAN_S", "SCORE_EVERY_S", "Dataset", "PoolProbe", "epoch_seconds", "evidence_at", "feature_tensor",
           "label_matrix", "observer_log", "scoring_ticks", "trace_features"]

SCORE_EVERY_S = 900.0  # the risk scorer's cadence
COVERAGE_MEAN_S = 24 * 3600.0  # the observer watches a pool for ~1 day, then looks away for ~1 day
OBSERVER_SEED = 11
_DAY = 24 * 3600.0


@dataclass
class Dataset:
    """Rows (tick, pool) of one trace: features ``X``, labels ``y``, where each row came from, and the
    two baselines' probabilities (``prior``: the Advisor band; ``fallback``: the evidence estimate)."""

    name: str
    X: np.ndarray          # (rows, len(FEATURE_NAMES)) float64, NaN = missing
    y: np.ndarray          # (rows,) int8
    tick: np.ndarray       # (rows,) tick index in the trace
    pool: np.ndarray       # (rows,) pool index in the trace
    prior: np.ndarray      # (rows,) Advisor-band prior for the horizon
    fallback: np.ndarray   # (rows,) components.risk_model.evidence_risk (what serves with no model)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(self.name, self.X[mask], self.y[mask], self.tick[mask], self.pool[mask], self.prior[mask],
                       self.fallback[mask])

    @staticmethod
    def concat(parts: list[Dataset], name: str = "pooled") -> Dataset:
        return Dataset(name, np.vstack([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                       np.concatenate([p.tick for p in parts]), np.concatenate([p.pool for p in parts]),
                       np.concatenate([p.prior for p in parts]), np.concatenate([p.fallback for p in parts]))


def epoch_seconds(trace: Trace) -> np.ndarray:
    return np.array([t.timestamp() for t in trace.times], dtype=float)


# The back-off the committed risk model's training probe was simulated under: the product's windows, without
# the day's loss memory the product's placements have had since 2026-12-04 (components.capacity.backoff).
# Changing it changes the training rows: retrain with it.
PROBE_BACKOFF = BackoffPolicy(loss_memory_s=0)


class PoolProbe:
    """One probe watching one pool: it holds an instance while the pool is obtainable (a HELD every
    ``HELD_INTERVAL_S``), gets an interruption warning at the first tick the pool is not, and then
    tries launches under ``PROBE_BACKOFF`` (refused / succeeded). Fed tick by tick, in time order."""

    def __init__(self, pool: str, t: float):
        self.pool = pool
        self.restart(t)

    def restart(self, t: float) -> None:
        """Nothing held; the next launch may be tried at ``t``."""
        self.holding, self.held_at, self.next_try, self.streak = False, 0.0, t, 0

    def step(self, t: float, up: bool) -> CapacityObservation | None:
        """What the probe records at time ``t`` when the pool is (``up``) or is not obtainable."""
        if self.holding:
            if not up:
                self.holding, self.streak = False, 1
                self.next_try = t + PROBE_BACKOFF.window(self.streak)
                return CapacityObservation(self.pool, ObservationKind.INTERRUPTION_WARNING, t)
            if t - self.held_at >= HELD_INTERVAL_S:
                self.held_at = t
                return CapacityObservation(self.pool, ObservationKind.HELD, t)
            return None
        if t < self.next_try:
            return None
        if up:
            self.holding, self.held_at, self.streak = True, t, 0
            return CapacityObservation(self.pool, ObservationKind.LAUNCH_SUCCEEDED, t)
        self.streak += 1
        self.next_try = t + PROBE_BACKOFF.window(self.streak)
        return CapacityObservation(self.pool, ObservationKind.LAUNCH_REFUSED, t, code="InsufficientInstanceCapacity")


def observer_log(trace: Trace, seed: int = OBSERVER_SEED) -> dict[str, list[CapacityObservation]]:
    """What a probe fleet would have recorded about every pool of the trace, in time order.

    Per pool: a :class:`PoolProbe` records during watched spans (exponential lengths, mean
    ``COVERAGE_MEAN_S``, alternating with unwatched spans of the same mean) and restarts with nothing
    held at each switch. Fixed seed: the log is reproducible.
    """
    rng = np.random.default_rng(seed)
    stamps = epoch_seconds(trace)
    log: dict[str, list[CapacityObservation]] = {}
    for j, pool in enumerate(trace.pools):
        out: list[CapacityObservation] = []
        watching = bool(rng.integers(2))
        switch_at = stamps[0] + rng.exponential(COVERAGE_MEAN_S)
        probe = PoolProbe(pool, float(stamps[0]))
        column = trace.available[:, j]
        for i, t in enumerate(stamps):
            if t >= switch_at:
                watching = not watching
                switch_at = t + rng.exponential(COVERAGE_MEAN_S)
                probe.restart(float(t))
            if not watching:
                continue
            made = probe.step(float(t), bool(column[i]))
            if made is not None:
                out.append(made)
        log[pool] = out
    return log


def scoring_ticks(trace: Trace) -> np.ndarray:
    """Indices of the ticks where the risk scorer would run: the first, then every >= 15 minutes."""
    stamps = epoch_seconds(trace)
    picked, last = [], -np.inf
    for i, t in enumerate(stamps):
        if t - last >= SCORE_EVERY_S - 1e-6:
            picked.append(i)
            last = t
    return np.array(picked, dtype=np.int64)


class _Index:
    """Observations of every pool with their times, for cheap "everything up to t" slices."""

    def __init__(self, log: dict[str, list[CapacityObservation]]):
        self.log = log
        self.times = {p: [o.at for o in obs] for p, obs in log.items()}

    def upto(self, pool: str, t: float, since: float = -np.inf) -> list[CapacityObservation]:
        times = self.times.get(pool, [])
        return self.log.get(pool, [])[bisect.bisect_left(times, since): bisect.bisect_right(times, t)]


def evidence_at(trace: Trace, index: _Index, j: int, i: int, stamps: np.ndarray) -> PoolEvidence:
    """The PoolEvidence of pool ``j`` at tick ``i`` (what the risk scorer would build then)."""
    pool, t = trace.pools[j], float(stamps[i])
    region = trace.regions.get(pool, "")
    neighbours = [p for p in trace.pools if p != pool and trace.regions.get(p, "") == region]
    first = max(0, int(np.searchsorted(stamps, t - _DAY, side="right")) - 1)
    prices = trace.prices[first: i + 1, j]
    keep = np.isfinite(prices)
    return PoolEvidence(
        now=t, observations=index.upto(pool, t, t - 7 * _DAY),
        region_observations=[o for p in neighbours for o in index.upto(p, t, t - _DAY)],
        price_times=tuple(stamps[first: i + 1][keep].tolist()), prices=tuple(prices[keep].tolist()),
        ondemand_price=float(trace.ondemand_price),
        advisor_band=int(trace.advisor_band.get(pool, DEFAULT_ADVISOR_BAND)))


def feature_tensor(trace: Trace, log: dict[str, list[CapacityObservation]] | None = None,
                   horizon_s: float = 3600.0) -> tuple[np.ndarray, np.ndarray]:
    """(features, fallback): (ticks, pools, F) and (ticks, pools), NaN except at scoring ticks. Row t
    uses observations and prices at or before t only."""
    log = observer_log(trace) if log is None else log
    index, stamps = _Index(log), epoch_seconds(trace)
    ticks, pools = trace.available.shape
    out = np.full((ticks, pools, len(FEATURE_NAMES)), np.nan)
    fallback = np.full((ticks, pools), np.nan)
    for i in scoring_ticks(trace):
        for j in range(pools):
            evidence = evidence_at(trace, index, j, int(i), stamps)
            out[i, j] = feature_vector(evidence)
            fallback[i, j] = evidence_risk(evidence, horizon_s)
    return out, fallback


def label_matrix(trace: Trace, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, window_end): y[t, p] = 1 if p is unobtainable at a tick in (t, t + horizon]; window_end[t] =
    index of the last tick at or before t + horizon (the label of tick t reads ticks t+1..window_end[t])."""
    stamps = epoch_seconds(trace)
    ticks, pools = trace.available.shape
    window_end = np.searchsorted(stamps, stamps + horizon_s, side="right") - 1
    next_zero = np.full((ticks, pools), ticks, dtype=np.int64)
    upcoming = np.full(pools, ticks, dtype=np.int64)
    for t in range(ticks - 1, -1, -1):
        next_zero[t] = upcoming
        upcoming = np.where(trace.available[t] == 0, t, upcoming)
    y = (next_zero <= window_end[:, None]).astype(np.int8)
    return y, window_end


def trace_features(trace: Trace, horizon_s: float, *, start: int = 0, end: int | None = None,
                   label_end: int | None = None, tensor: tuple[np.ndarray, np.ndarray] | None = None) -> Dataset:
    """Rows for scoring ticks ``start <= t < end`` where the pool is obtainable and whose label window
    (t, t + horizon] ends on or before tick ``label_end − 1`` (default: the trace's last tick).

    For a training part ending at the split, pass ``end=label_end=split``: no training label then
    reads a tick at or after the split. ``tensor`` is a precomputed :func:`feature_tensor`.
    """
    ticks = trace.ticks
    end = ticks if end is None else end
    label_end = ticks if label_end is None else label_end
    stamps = epoch_seconds(trace)
    features, fallback = feature_tensor(trace, horizon_s=horizon_s) if tensor is None else tensor
    y, _ = label_matrix(trace, horizon_s)
    rows = np.arange(ticks)
    scored = np.zeros(ticks, dtype=bool)
    scored[scoring_ticks(trace)] = True
    in_range = scored & (rows >= start) & (rows < end) & (stamps + horizon_s <= stamps[label_end - 1])
    mask = in_range[:, None] & (trace.available == 1)
    tick_idx, pool_idx = np.nonzero(mask)
    bands = [int(trace.advisor_band.get(p, DEFAULT_ADVISOR_BAND)) for p in trace.pools]
    prior = np.array([advisor_prior(b, horizon_s) for b in bands])[pool_idx]
    return Dataset(trace.name, features[tick_idx, pool_idx], y[tick_idx, pool_idx], tick_idx, pool_idx, prior,
                   fallback[tick_idx, pool_idx])
