"""Savings roll-up: each instance's real cost, hour by hour, against the effective on-demand price.

An instance ran from ``start`` to ``end`` in one pool and one mode (an EC2 instance never changes
either; a switch is a new instance, and while old and new overlap both run and both cost). Its spot
price is a step function of the pool's recorded price points: a point holds until the next one.
Each hour bucket gets one :class:`HourPart` per instance, quantized once to ``PART_QUANTUM``; every
coarser figure (client hour, day, month, agent, instance) is an exact sum of those parts, so sums
always conserve (what the property tests check).

Pricing rules (documented in docs/ARCHITECTURE.md, "Savings"):
- baseline = on-demand list price x (1 - client discount %) x hours (the client's effective price), for the
  hours the instance ran the workload: a standby (and a promoted standby before its promotion) is insurance the
  client buys to run on spot, which it would not run on demand, so it costs and adds no baseline;
- on-demand (or unknown-mode) time costs the effective on-demand price: the workload's saves exactly 0;
- spot time costs the price in force; with no price known at all it costs the on-demand price (no saving
  is ever claimed from a missing price);
- with no on-demand price known the workload's baseline is its actual cost (again: no claimed saving).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from components.calculations.errors import InvalidAmountError
from components.calculations.savings import to_decimal
from components.errors import ValidationError
from components.timeutil import seconds_between, to_utc

__all__ = [
    "PART_QUANTUM",
    "Bucket",
    "HourPart",
    "InstanceRun",
    "day_key",
    "effective_ondemand",
    "floor_hour",
    "hour_key",
    "hourly_parts",
    "month_key",
    "roll_up",
]

PART_QUANTUM = Decimal("0.00000001")
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_HOUR = timedelta(hours=1)
_SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True)
class InstanceRun:
    """One instance's stay in its pool and mode, with the prices needed to cost it.

    ``spot_points`` are ``(ts, price)`` pairs of the pool (any order; the last one at or before a
    time is in force). ``spot_fallback`` is used before the first point (or when there is none).
    ``baseline_from`` is when the instance started running the workload (counted in the baseline): ``start``
    when None; a standby never does (``in_baseline`` False); a promoted standby from its promotion.
    """

    instance_id: str
    agent_id: str
    mode: str
    start: datetime
    end: datetime
    ondemand_price: Decimal | None
    spot_points: tuple[tuple[datetime, Decimal], ...] = ()
    spot_fallback: Decimal | None = None
    in_baseline: bool = True
    baseline_from: datetime | None = None

    @property
    def is_spot(self) -> bool:
        return str(self.mode).strip().lower() == "spot"


@dataclass(frozen=True)
class HourPart:
    """What one instance cost (and would have cost on-demand) within one UTC hour."""

    instance_id: str
    agent_id: str
    hour: datetime
    actual: Decimal
    baseline: Decimal
    spot_seconds: Decimal
    ondemand_seconds: Decimal

    @property
    def savings(self) -> Decimal:
        return self.baseline - self.actual


@dataclass
class Bucket:
    """A sum of parts (exact: parts are already quantized)."""

    actual: Decimal = _ZERO
    baseline: Decimal = _ZERO
    spot_seconds: Decimal = _ZERO
    ondemand_seconds: Decimal = _ZERO
    instances: set = field(default_factory=set)

    @property
    def savings(self) -> Decimal:
        return self.baseline - self.actual

    def add(self, part: HourPart) -> None:
        self.actual += part.actual
        self.baseline += part.baseline
        self.spot_seconds += part.spot_seconds
        self.ondemand_seconds += part.ondemand_seconds
        self.instances.add(part.instance_id)

    def merge(self, other: Bucket) -> None:
        self.actual += other.actual
        self.baseline += other.baseline
        self.spot_seconds += other.spot_seconds
        self.ondemand_seconds += other.ondemand_seconds
        self.instances |= other.instances


def floor_hour(value: datetime) -> datetime:
    """The UTC hour a time falls in."""
    return to_utc(value).replace(minute=0, second=0, microsecond=0)


def hour_key(hour: datetime) -> str:
    """``YYYY-MM-DDTHH`` (sorts in time)."""
    return to_utc(hour).strftime("%Y-%m-%dT%H")


def day_key(value: datetime | date) -> str:
    """``YYYY-MM-DD``."""
    return (to_utc(value) if isinstance(value, datetime) else value).strftime("%Y-%m-%d")


def month_key(value: datetime | date) -> str:
    """``YYYY-MM``."""
    return (to_utc(value) if isinstance(value, datetime) else value).strftime("%Y-%m")


def effective_ondemand(list_price: Decimal | None, discount_percent: Decimal | int | float | str) -> Decimal | None:
    """The on-demand price the client really pays (Savings Plans / RI discount applied)."""
    discount = to_decimal(discount_percent, "discount_percent")
    if not _ZERO <= discount <= _HUNDRED:
        raise ValidationError("must be between 0 and 100", "discount_percent")
    if list_price is None:
        return None
    od = to_decimal(list_price, "ondemand_price")
    if od < 0:
        raise InvalidAmountError("must not be negative", "ondemand_price")
    return od * (1 - discount / _HUNDRED)


def _q(value: Decimal) -> Decimal:
    return value.quantize(PART_QUANTUM, rounding=ROUND_HALF_UP)


def _price_steps(run: InstanceRun) -> list[tuple[datetime, Decimal | None]]:
    """(from, price) steps sorted by time; the fallback (maybe None) holds before the first point."""
    points = sorted(((to_utc(ts), to_decimal(p, "spot_price")) for ts, p in run.spot_points),
                    key=lambda item: item[0])
    for _, price in points:
        if price < 0:
            raise InvalidAmountError("must not be negative", "spot_price")
    fallback = run.spot_fallback if run.spot_fallback is not None else (points[0][1] if points else None)
    return [(datetime.min.replace(tzinfo=UTC), fallback)] + points


def hourly_parts(run: InstanceRun, window_start: datetime, window_end: datetime,
                 discount_percent: Decimal | int | float | str = 0) -> list[HourPart]:
    """The run's cost per UTC hour within ``[window_start, window_end)``, oldest first.

    Deterministic: the same run and window give the same parts, to the last digit.
    """
    start = max(to_utc(run.start), to_utc(window_start))
    end = min(to_utc(run.end), to_utc(window_end))
    if end <= start:
        return []
    od = effective_ondemand(run.ondemand_price, discount_percent)
    steps = _price_steps(run) if run.is_spot else []
    counted_from = None if not run.in_baseline else to_utc(run.baseline_from or run.start)
    parts = []
    hour = floor_hour(start)
    while hour < end:
        lo, hi = max(start, hour), min(end, hour + _HOUR)
        if hi > lo:
            parts.append(_part(run, hour, lo, hi, od, steps, counted_from))
        hour += _HOUR
    return parts


def _spot_cost(lo: datetime, hi: datetime, od: Decimal | None, steps: list[tuple[datetime, Decimal | None]]) -> Decimal:
    """Spot cost of ``[lo, hi)``: the price in force, else the effective on-demand price, else nothing."""
    cost = _ZERO
    for i, (since, price) in enumerate(steps):
        until = steps[i + 1][0] if i + 1 < len(steps) else hi
        a, b = max(lo, since), min(hi, until)
        if b <= a:
            continue
        paid = price if price is not None else od
        if paid is None:  # nothing known at all: costed below as baseline = actual = 0
            continue
        cost += paid * seconds_between(a, b) / _SECONDS_PER_HOUR
    return cost


def _part(run: InstanceRun, hour: datetime, lo: datetime, hi: datetime, od: Decimal | None,
          steps: list[tuple[datetime, Decimal | None]], counted_from: datetime | None) -> HourPart:
    seconds = seconds_between(lo, hi)
    hours = seconds / _SECONDS_PER_HOUR
    # the part of [lo, hi) in the baseline: none for a standby, from its promotion for a promoted one
    base_lo = hi if counted_from is None else min(hi, max(lo, counted_from))
    counted_hours = seconds_between(base_lo, hi) / _SECONDS_PER_HOUR
    if run.is_spot:
        actual = _spot_cost(lo, hi, od, steps)
        baseline = od * counted_hours if od is not None else _spot_cost(base_lo, hi, od, steps)
        if od is None and all(price is None for _, price in steps):
            actual = baseline = _ZERO
        spot_s, od_s = seconds, _ZERO
    else:
        actual = od * hours if od is not None else _ZERO
        baseline = od * counted_hours if od is not None else _ZERO
        spot_s, od_s = _ZERO, seconds
    return HourPart(run.instance_id, run.agent_id, hour, _q(actual), _q(baseline), spot_s, od_s)


def roll_up(parts: Iterable[HourPart], key: Callable[[HourPart], Hashable]) -> dict[Hashable, Bucket]:
    """Sum parts into buckets by ``key`` (e.g. ``lambda p: (p.agent_id, day_key(p.hour))``)."""
    buckets: dict[Hashable, Bucket] = {}
    for part in parts:
        buckets.setdefault(key(part), Bucket()).add(part)
    return buckets
