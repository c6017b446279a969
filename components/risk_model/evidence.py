"""The one feature function: what the product knows of a pool, from its own observations.

Training (``ml/``), the backtest (``bench/backtest/ours.py``) and production (the risk scorer) all build
a :class:`PoolEvidence` and call :func:`feature_vector`; nothing else turns data into features. The
inputs are only what a deployed product can have:

- the pool's capacity observations (``components.capacity``: launches refused or succeeded,
  interruption warnings, rebalance recommendations, AWS stops, instances held, placement scores);
- the same observations of the other pools of its region (capacity problems come in waves);
- the pool's spot price history (the server's own DescribeSpotPriceHistory job), the on-demand price;
- the Spot Advisor band.

A pool nobody looked at has no observations: its counts are 0 and its "hours since" features are the
cap (``EVIDENCE_WINDOW_S``); the model learns what "unknown" means from training rows that look the same.

:func:`evidence_hazard` is the calibrated fallback when no trained model is active: an empirical-Bayes
rate (negative observations per hour of exposure, shrunk towards the band's rate) instead of a constant.

Examples
--------
>>> from components.capacity import CapacityObservation as O, ObservationKind as K
>>> ev = PoolEvidence(now=5400.0, observations=(O("p", K.HELD, 900.0), O("p", K.INTERRUPTION_WARNING, 3600.0)),
...                   price_times=(0.0, 3600.0), prices=(0.3, 0.33), ondemand_price=1.0, advisor_band=2)
>>> f = dict(zip(FEATURE_NAMES, feature_vector(ev)))
>>> f["hours_since_negative"], f["negatives_24h"], f["held_hours_7d"], round(f["price_change_1h"], 6)
(0.5, 1.0, 0.25, 0.1)
>>> 0 < evidence_risk(ev, 3600.0) < 1
True
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from components.capacity import HELD_INTERVAL_S, NEGATIVE_KINDS, POSITIVE_KINDS, CapacityObservation, ObservationKind
from components.risk_model.errors import InvalidRiskInputError
from components.risk_model.prior import ADVISOR_BAND_MONTHLY_RATE, SECONDS_PER_MONTH

__all__ = ["EVIDENCE_WINDOW_S", "FEATURE_NAMES", "PoolEvidence", "evidence_hazard", "evidence_risk",
           "feature_vector", "placement_score"]

# The longest look-back of any feature (and of the risk scorer's read): one week.
EVIDENCE_WINDOW_S = 7 * 24 * 3600.0
_DAY = 24 * 3600.0
_NAN = float("nan")

FEATURE_NAMES: tuple[str, ...] = (
    "hours_since_negative",      # since the pool's last refusal / warning / AWS stop (cap 168)
    "negatives_6h",              # refusals + warnings + AWS stops of the pool in the last 6 h
    "negatives_24h",
    "negatives_7d",
    "refusals_24h",              # launches refused in the last 24 h
    "rebalances_24h",            # rebalance recommendations in the last 24 h
    "hours_since_positive",      # since the pool last ran or launched one of our instances (cap 168)
    "held_hours_7d",             # hours our instances ran there without a warning (HELD × 15 min)
    "negative_rate_7d",          # negatives_7d / (held_hours_7d + 1): a raw interruption rate
    "region_negatives_24h",      # negatives of the region's other pools in the last 24 h
    "region_negative_share_24h", # their negatives / (negatives + positives); NaN when none observed
    "price_to_ondemand",         # spot / on-demand now (NaN when unknown)
    "price_change_1h",           # relative change vs the price in force 1 h ago (NaN when unknown)
    "price_change_24h",
    "advisor_band",              # Spot Advisor interruption band 0..4
)


@dataclass(frozen=True)
class PoolEvidence:
    """Everything known about one pool at ``now`` (epoch seconds). Sequences sorted by time; items
    after ``now`` are ignored, so a longer log never leaks the future."""

    now: float
    observations: Sequence[CapacityObservation] = ()
    region_observations: Sequence[CapacityObservation] = ()
    price_times: Sequence[float] = ()
    prices: Sequence[float | None] = ()
    ondemand_price: float = _NAN
    advisor_band: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.now, (int, float)) or not math.isfinite(self.now):
            raise InvalidRiskInputError("now must be finite epoch seconds", "now")
        if len(self.price_times) != len(self.prices):
            raise InvalidRiskInputError("price_times and prices differ in length", "prices")
        if isinstance(self.advisor_band, bool) or not isinstance(self.advisor_band, int) \
                or not 0 <= self.advisor_band <= 4:
            raise InvalidRiskInputError("advisor_band must be an int 0..4", "advisor_band")


def _counts(observations: Sequence[CapacityObservation], now: float) -> dict:
    c = {"neg6": 0, "neg24": 0, "neg7": 0, "ref24": 0, "reb24": 0, "held7": 0, "pos24": 0,
         "last_neg": None, "last_pos": None, "score": None, "score_at": None}
    for o in observations:
        age = now - o.at
        if age < 0 or age >= EVIDENCE_WINDOW_S:
            continue
        kind = o.kind
        if kind in NEGATIVE_KINDS:
            c["neg7"] += 1
            if age < _DAY:
                c["neg24"] += 1
                c["ref24"] += kind is ObservationKind.LAUNCH_REFUSED
            if age < 6 * 3600.0:
                c["neg6"] += 1
            if c["last_neg"] is None or o.at > c["last_neg"]:
                c["last_neg"] = o.at
        elif kind in POSITIVE_KINDS:
            if kind is ObservationKind.HELD:
                c["held7"] += o.held_instances
            if age < _DAY:
                c["pos24"] += 1
            if c["last_pos"] is None or o.at > c["last_pos"]:
                c["last_pos"] = o.at
        elif kind is ObservationKind.REBALANCE:
            if age < _DAY:
                c["reb24"] += 1
        elif kind is ObservationKind.PLACEMENT_SCORE and age < _DAY:
            # the latest; two at the same instant: the lower (order-free, and the cautious reading)
            if c["score_at"] is None or o.at > c["score_at"] or (o.at == c["score_at"] and o.value < c["score"]):
                c["score"], c["score_at"] = o.value, o.at
    return c


def _since_h(at: float | None, now: float) -> float:
    cap = EVIDENCE_WINDOW_S / 3600.0
    return cap if at is None else min(cap, (now - at) / 3600.0)


def _price_at(times: Sequence[float], prices: Sequence[float | None], t: float) -> float:
    k = bisect.bisect_right(times, t) - 1
    if k < 0:
        return _NAN
    p = prices[k]
    return _NAN if p is None else float(p)


def _change(now: float, then: float) -> float:
    if math.isnan(now) or math.isnan(then) or then == 0:
        return _NAN
    return now / then - 1.0


def feature_vector(evidence: PoolEvidence) -> tuple[float, ...]:
    """The features of one pool at ``evidence.now``, in ``FEATURE_NAMES`` order (NaN = missing)."""
    now = evidence.now
    own = _counts(evidence.observations, now)
    region = _counts(evidence.region_observations, now)
    held_h = own["held7"] * HELD_INTERVAL_S / 3600.0
    region_seen = region["neg24"] + region["pos24"]
    price = _price_at(evidence.price_times, evidence.prices, now)
    od = evidence.ondemand_price
    ratio = price / od if od and od > 0 and math.isfinite(od) and not math.isnan(price) else _NAN
    return (
        _since_h(own["last_neg"], now),
        float(own["neg6"]), float(own["neg24"]), float(own["neg7"]), float(own["ref24"]), float(own["reb24"]),
        _since_h(own["last_pos"], now),
        held_h,
        own["neg7"] / (held_h + 1.0),
        float(region["neg24"]),
        region["neg24"] / region_seen if region_seen else _NAN,
        ratio,
        _change(price, _price_at(evidence.price_times, evidence.prices, now - 3600.0)),
        _change(price, _price_at(evidence.price_times, evidence.prices, now - _DAY)),
        float(evidence.advisor_band),
    )


# Empirical Bayes: the band's hourly rate counts as PRIOR_HOURS of exposure; each negative observation
# weighs exp(-age / DECAY_S), so a pool that failed last night matters more than one that failed last week.
PRIOR_HOURS = 6.0
DECAY_S = 24 * 3600.0
# Capacity comes back in runs whose hazard falls with their age (both probe traces: ≈ 1.2–1.6 per hour in a
# run's first half hour, 0.4–0.5 at 1–2 h, 0.1–0.14 at 8–16 h): a pool whose last loss or refusal was τ hours
# ago is in a run at most τ old, so its hazard is at least renewal_events / (RENEWAL_SCALE_H + τ).
RENEWAL_SCALE_H = 0.5


def placement_score(evidence: PoolEvidence) -> float | None:
    """The latest AWS Spot placement score (1..10) of the pool within 24 h, None when none."""
    return _counts(evidence.observations, evidence.now)["score"]


def evidence_hazard(evidence: PoolEvidence, *, prior_hours: float = PRIOR_HOURS, decay_s: float = DECAY_S,
                    refusal_weight: float = 1.0, region_prior_hours: float = 0.0,
                    renewal_events: float = 0.0, renewal_scale_h: float = RENEWAL_SCALE_H) -> float:
    """Interruptions per hour expected in this pool from what was observed (the no-model fallback).

    A placement score scales the band's prior rate by ``(11 − score) / 5.5`` (10 → ×0.18, 1 → ×1.8):
    no trace we train on carries scores, so they inform this prior rather than the trained model.
    The keyword arguments exist for the backtest's variants (``bench/backtest/variants.py``); production
    uses the defaults. ``region_prior_hours`` > 0 shrinks towards the rate the region's other pools showed
    (itself shrunk towards the band's with that many hours) instead of the band's rate.
    """
    now = evidence.now
    prior_rate = ADVISOR_BAND_MONTHLY_RATE[evidence.advisor_band] * 3600.0 / SECONDS_PER_MONTH
    score = placement_score(evidence)
    if score is not None:
        prior_rate *= (11.0 - score) / 5.5
    if region_prior_hours > 0:
        r_events, r_exposure = _tally(evidence.region_observations, now, decay_s, refusal_weight)
        prior_rate = (region_prior_hours * prior_rate + r_events) / (region_prior_hours + r_exposure)
    events, exposure = _tally(evidence.observations, now, decay_s, refusal_weight)
    rate = (prior_hours * prior_rate + events) / (prior_hours + exposure)
    if renewal_events > 0:
        last = max((o.at for o in evidence.observations if o.kind in NEGATIVE_KINDS and 0 <= now - o.at
                    < EVIDENCE_WINDOW_S), default=None)
        if last is not None:
            rate = max(rate, renewal_events / (renewal_scale_h + (now - last) / 3600.0))
    return rate


def _tally(observations: Sequence[CapacityObservation], now: float, decay_s: float,
           refusal_weight: float) -> tuple[float, float]:
    """(decayed negative observations, decayed hours held) within the evidence window."""
    events = exposure = 0.0
    for o in observations:
        age = now - o.at
        if age < 0 or age >= EVIDENCE_WINDOW_S:
            continue
        weight = math.exp(-age / decay_s)
        if o.kind in NEGATIVE_KINDS:
            events += weight * (refusal_weight if o.kind is ObservationKind.LAUNCH_REFUSED else 1.0)
        elif o.kind is ObservationKind.HELD:
            exposure += weight * o.held_instances * HELD_INTERVAL_S / 3600.0
    return events, exposure


def evidence_risk(evidence: PoolEvidence, horizon_s: float, **params: float) -> float:
    """P(interrupted within ``horizon_s``) under :func:`evidence_hazard` (constant rate; ``params`` go to it)."""
    return -math.expm1(-evidence_hazard(evidence, **params) * horizon_s / 3600.0)
