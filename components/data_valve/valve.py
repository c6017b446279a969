"""The single gate every price point passes before it is stored.

Validation rejects impossible prices; `admit` decides, for one incoming
point and the pool's recent window, whether it is a duplicate, should be
averaged with another agent's report, or stored (with a short gap filled by
interpolation). It returns the writes; the caller performs them. Retention
is the store's TTL (`expires_at`), not a delete on every insert.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from components.data_valve.errors import InvalidPricePointError, PriceOutOfRangeError
from components.data_valve.model import (
    REPORTED_QUALITIES,
    Admission,
    PointQuality,
    PricePoint,
    ValveConfig,
)
from components.timeutil import seconds_between

__all__ = [
    "admit",
    "dedup_batch",
    "expires_at",
    "validate_ondemand_price",
    "validate_spot_price",
]

_HUNDRED = Decimal(100)


def _parse_price(value: object, field: str) -> Decimal:
    if isinstance(value, bool):
        raise PriceOutOfRangeError("must be a number", field)
    try:
        if isinstance(value, Decimal):
            price = value
        elif isinstance(value, int):
            price = Decimal(value)
        elif isinstance(value, float):
            price = Decimal(repr(value)) if math.isfinite(value) else Decimal("NaN")
        elif isinstance(value, str):
            price = Decimal(value.strip())
        else:
            raise PriceOutOfRangeError(f"must be a number, got {type(value).__name__}", field)
    except (InvalidOperation, ValueError) as exc:
        raise PriceOutOfRangeError(f"not a number: {value!r}", field) from exc
    if not price.is_finite():
        raise PriceOutOfRangeError(f"not a finite number: {value!r}", field)
    return price


def _validate(value: object, low: Decimal, high: Decimal, field: str) -> Decimal:
    price = _parse_price(value, field)
    if not low <= price <= high:
        raise PriceOutOfRangeError(f"{price} outside {low}..{high} $/h", field)
    return price


def validate_spot_price(
    price: object, config: ValveConfig = ValveConfig(), field: str = "price"
) -> Decimal:
    """Parse a spot price and check it is plausible ($0.001–$100/h by default).

    Raises
    ------
    PriceOutOfRangeError
        For non-numbers, NaN, infinities and out-of-range values.

    Examples
    --------
    >>> validate_spot_price("0.0312")
    Decimal('0.0312')
    """
    return _validate(price, config.spot_min, config.spot_max, field)


def validate_ondemand_price(
    price: object, config: ValveConfig = ValveConfig(), field: str = "price"
) -> Decimal:
    """Parse an on-demand price and check it is plausible ($0.001–$200/h by default).

    Examples
    --------
    >>> validate_ondemand_price(0.096)
    Decimal('0.096')
    """
    return _validate(price, config.ondemand_min, config.ondemand_max, field)


def expires_at(ts: datetime, config: ValveConfig = ValveConfig()) -> int:
    """Epoch seconds at which the store's TTL should drop a point taken at `ts`."""
    return math.floor(ts.timestamp()) + config.retention_days * 86400


def admit(
    recent: Sequence[PricePoint], incoming: PricePoint, config: ValveConfig = ValveConfig()
) -> Admission:
    """Decide how `incoming` enters the pool's history, given its recent points.

    Order of checks: exact duplicate (same ts and source) → average with
    another agent's near-identical report → store, filling a short gap after
    the newest point, or store without fill if `incoming` is older.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> a = PricePoint("m5.large.us-east-1a", t0, Decimal("0.0300"), source_agent_id="a")
    >>> b = PricePoint("m5.large.us-east-1a", t0 + timedelta(seconds=2),
    ...                Decimal("0.0301"), source_agent_id="b")
    >>> result = admit([a], b)
    >>> result.outcome, result.upserts[0].price, result.upserts[0].sources
    ('averaged', Decimal('0.03005'), 2)
    >>> later = PricePoint("m5.large.us-east-1a", t0 + timedelta(seconds=200), Decimal("0.05"))
    >>> admit([a], later).filled
    3
    """
    for point in recent:
        if point.pool_id != incoming.pool_id:
            raise InvalidPricePointError("recent window holds another pool's point", "pool_id")
    reported = [p for p in recent if p.quality in REPORTED_QUALITIES]

    if any(p.ts == incoming.ts and p.source_agent_id == incoming.source_agent_id for p in reported):
        return Admission((), (), _window(recent, (), (), config), "exact_duplicate", 0, None)

    match = _dedup_partner(reported, incoming, config)
    if match is not None:
        merged = _merge(match, incoming)
        deletes = (match,) if merged.ts != match.ts else ()
        upserts = (merged,)
        return Admission(upserts, deletes, _window(recent, upserts, deletes, config), "averaged", 0, None)

    newest = max(recent, key=lambda p: p.ts, default=None)
    if newest is not None and incoming.ts < newest.ts:
        upserts = (incoming,)
        return Admission(upserts, (), _window(recent, upserts, (), config), "out_of_order", 0, None)

    gap_s = None if newest is None else float(seconds_between(newest.ts, incoming.ts))
    filled = () if newest is None else _interpolate(newest, incoming, config)
    upserts = (*filled, incoming)
    return Admission(upserts, (), _window(recent, upserts, (), config), "stored", len(filled), gap_s)


def _within_tolerance(a: Decimal, b: Decimal, tolerance_pct: Decimal) -> bool:
    """Symmetric relative difference (against the smaller price), so the
    verdict does not depend on which of the two reports arrived first."""
    low = min(a, b)
    if low <= 0:
        return a == b
    return abs(a - b) / low * _HUNDRED <= tolerance_pct


def _dedup_partner(
    reported: Sequence[PricePoint], incoming: PricePoint, config: ValveConfig
) -> PricePoint | None:
    window = timedelta(seconds=config.dedup_window_s)
    candidates = [
        p
        for p in reported
        if p.source_agent_id != incoming.source_agent_id
        and abs(p.ts - incoming.ts) <= window
        and _within_tolerance(p.price, incoming.price, config.dedup_tolerance_pct)
    ]
    return min(
        candidates,
        key=lambda p: (abs(p.ts - incoming.ts), abs(p.price - incoming.price), p.ts, p.source_agent_id or ""),
        default=None,
    )


def _merge(existing: PricePoint, incoming: PricePoint) -> PricePoint:
    """Weighted running mean; the merged point keeps the earlier timestamp."""
    n, m = existing.sources, incoming.sources
    earlier = existing if existing.ts <= incoming.ts else incoming
    return PricePoint(
        pool_id=existing.pool_id,
        ts=earlier.ts,
        price=(existing.price * n + incoming.price * m) / (n + m),
        quality=PointQuality.AVERAGED,
        source_agent_id=earlier.source_agent_id,
        sources=n + m,
    )


def _interpolate(
    newest: PricePoint, incoming: PricePoint, config: ValveConfig
) -> tuple[PricePoint, ...]:
    """Linear points every `gap_step_s` strictly between the two, if the gap is short."""
    gap = seconds_between(newest.ts, incoming.ts)
    if not config.gap_min_s < gap <= config.gap_max_s:
        return ()
    points: list[PricePoint] = []
    step = config.gap_step_s
    offset = step
    while len(points) < config.gap_max_points and offset < gap:
        fraction = Decimal(offset) / gap
        points.append(
            PricePoint(
                pool_id=incoming.pool_id,
                ts=newest.ts + timedelta(seconds=offset),
                price=newest.price + (incoming.price - newest.price) * fraction,
                quality=PointQuality.INTERPOLATED,
                source_agent_id=None,
            )
        )
        offset += step
    return tuple(points)


def _window(
    recent: Iterable[PricePoint],
    upserts: Iterable[PricePoint],
    deletes: Iterable[PricePoint],
    config: ValveConfig,
) -> tuple[PricePoint, ...]:
    by_ts = {p.ts: p for p in recent}
    for point in deletes:
        by_ts.pop(point.ts, None)
    for point in upserts:
        by_ts[point.ts] = point
    ordered = sorted(by_ts.values(), key=lambda p: p.ts)
    return tuple(ordered[-config.recent_keep :])


def _batch_key(p: PricePoint) -> tuple[object, ...]:
    # Every field takes part, so points with equal keys are equal points and
    # the fold below sees the same sequence whatever the input order was.
    source = p.source_agent_id
    return (p.pool_id, p.ts, source is not None, source or "", p.price, p.sources, p.quality.value)


def dedup_batch(
    points: Iterable[PricePoint], config: ValveConfig = ValveConfig()
) -> list[PricePoint]:
    """Deduplicate a batch of points, with the same rules as `admit` but no gap fill.

    The batch is sorted first, so the result does not depend on input order.
    Points of several pools may be mixed; the result is sorted by pool and time.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> pts = [PricePoint("m5.large.us-east-1a", t0 + timedelta(seconds=s), Decimal(p), source_agent_id=a)
    ...        for s, p, a in [(1, "0.0300", "b"), (0, "0.0300", "a"), (60, "0.0400", "a")]]
    >>> [(str(p.ts.time()), p.sources) for p in dedup_batch(pts)]
    [('00:00:00', 2), ('00:01:00', 1)]
    """
    fold_config = dataclasses.replace(config, gap_max_points=0)
    result: list[PricePoint] = []
    ordered = sorted(points, key=_batch_key)
    start = 0
    while start < len(ordered):
        end = start
        while end < len(ordered) and ordered[end].pool_id == ordered[start].pool_id:
            end += 1
        result.extend(_fold_pool(ordered[start:end], fold_config))
        start = end
    return result


def _fold_pool(points: Sequence[PricePoint], config: ValveConfig) -> list[PricePoint]:
    """Fold time-sorted points of one pool; only the dedup window is scanned."""
    kept: dict[datetime, PricePoint] = {}
    order: list[datetime] = []  # kept timestamps, ascending
    window = timedelta(seconds=config.dedup_window_s)
    for point in points:
        nearby: list[PricePoint] = []
        for ts in reversed(order):
            if ts < point.ts - window:
                break
            nearby.append(kept[ts])
        admission = admit(nearby, point, config)
        for gone in admission.deletes:
            kept.pop(gone.ts, None)
        rebuild = bool(admission.deletes)
        for new in admission.upserts:
            if new.ts not in kept:
                if order and new.ts < order[-1]:
                    rebuild = True  # cannot happen for sorted input; kept for safety
                else:
                    order.append(new.ts)
            kept[new.ts] = new
        if rebuild:
            order = sorted(kept)
    return [kept[ts] for ts in order]
