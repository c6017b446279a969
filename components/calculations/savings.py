"""Savings math: the price actually paid versus on-demand, over real time.

The legacy system guessed ("impact x 24 per switch", "30 full days"); here
cost is integrated over the intervals an instance really ran in a mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from components.calculations.constants import (
    HOURS_PER_MONTH,
    HOURS_PER_YEAR,
    MONEY_QUANTUM,
    PERCENT_QUANTUM,
)
from components.calculations.errors import InvalidAmountError
from components.calculations.model import PriceSegment, SavingsSummary, SwitchImpact
from components.errors import ValidationError
from components.timeutil import ensure_aware, seconds_between

__all__ = [
    "baseline_and_savings",
    "cost_of_interval",
    "effective_price",
    "hourly_savings",
    "integrate_cost",
    "savings_percent",
    "switch_impact",
    "to_decimal",
    "to_money",
    "to_percent",
]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_SECONDS_PER_HOUR = Decimal(3600)
_MODES = ("spot", "ondemand")

Number = Decimal | int | float | str


def to_decimal(value: Number, field: str = "amount") -> Decimal:
    """Convert a number to Decimal without float noise (floats go via ``str``)."""
    if isinstance(value, bool):
        raise InvalidAmountError("must be a number, not a bool", field)
    try:
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise InvalidAmountError(f"not a number: {value!r}", field) from exc
    if not result.is_finite():
        raise InvalidAmountError(f"not a finite number: {value!r}", field)
    return result


def to_money(value: Number) -> Decimal:
    """Round to 4 decimal places, half up (the house rule for money)."""
    return to_decimal(value).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def to_percent(value: Number) -> Decimal:
    """Round to 2 decimal places, half up (the house rule for percentages)."""
    return to_decimal(value).quantize(PERCENT_QUANTUM, rounding=ROUND_HALF_UP)


def hourly_savings(ondemand_price: Number, spot_price: Number) -> Decimal:
    """Dollars per hour saved by paying `spot_price` instead of on-demand.

    Examples
    --------
    >>> hourly_savings(Decimal("0.096"), Decimal("0.0312"))
    Decimal('0.0648')
    """
    od = to_decimal(ondemand_price, "ondemand_price")
    return to_money(od - to_decimal(spot_price, "spot_price"))


def savings_percent(ondemand_price: Number, price: Number) -> Decimal:
    """Percent below on-demand that `price` is; 0 when on-demand is unknown (<= 0).

    Examples
    --------
    >>> savings_percent(Decimal("0.10"), Decimal("0.03"))
    Decimal('70.00')
    """
    od = to_decimal(ondemand_price, "ondemand_price")
    if od <= 0:
        return to_percent(_ZERO)
    return to_percent((od - to_decimal(price, "price")) / od * _HUNDRED)


def effective_price(
    mode: str, spot_price: Number | None, ondemand_price: Number | None
) -> Decimal | None:
    """The hourly price actually paid in `mode` (``"spot"`` or ``"ondemand"``).

    Returns ``None`` for an unknown mode or when the price that mode needs is
    missing, so callers never mistake "unknown" for "free".

    Examples
    --------
    >>> effective_price("ondemand", Decimal("0.03"), Decimal("0.10"))
    Decimal('0.10')
    >>> effective_price("spot", None, Decimal("0.10")) is None
    True
    """
    normalized = str(mode.value if hasattr(mode, "value") else mode).strip().lower()
    if normalized not in _MODES:
        return None
    chosen = spot_price if normalized == "spot" else ondemand_price
    if chosen is None:
        return None
    return to_decimal(chosen, f"{normalized}_price")


def switch_impact(
    *,
    old_mode: str,
    new_mode: str,
    old_spot_price: Number | None,
    new_spot_price: Number | None,
    ondemand_price: Number | None,
) -> SwitchImpact:
    """Money effect of switching from (`old_mode`, old pool) to (`new_mode`, new pool).

    Mode-aware: an on-demand side is priced at on-demand, not at a stale spot
    price. ``hourly_savings`` is ``old - new`` (positive = cheaper now).

    Examples
    --------
    >>> impact = switch_impact(old_mode="ondemand", new_mode="spot",
    ...     old_spot_price=None, new_spot_price=Decimal("0.03"),
    ...     ondemand_price=Decimal("0.10"))
    >>> impact.hourly_savings, impact.monthly_savings, impact.improvement_pp
    (Decimal('0.0700'), Decimal('51.1000'), Decimal('70.00'))
    """
    old_price = effective_price(old_mode, old_spot_price, ondemand_price)
    new_price = effective_price(new_mode, new_spot_price, ondemand_price)
    od = None if ondemand_price is None else to_decimal(ondemand_price, "ondemand_price")

    diff = None if old_price is None or new_price is None else old_price - new_price
    before = _percent_or_none(od, old_price)
    after = _percent_or_none(od, new_price)
    return SwitchImpact(
        old_price=None if old_price is None else to_money(old_price),
        new_price=None if new_price is None else to_money(new_price),
        hourly_savings=None if diff is None else to_money(diff),
        percent_before=before,
        percent_after=after,
        improvement_pp=None if before is None or after is None else after - before,
        monthly_savings=None if diff is None else to_money(diff * HOURS_PER_MONTH),
        yearly_savings=None if diff is None else to_money(diff * HOURS_PER_YEAR),
    )


def _percent_or_none(od: Decimal | None, price: Decimal | None) -> Decimal | None:
    if od is None or price is None or od <= 0:
        return None
    return savings_percent(od, price)


def _hours(start: datetime, end: datetime) -> Decimal:
    ensure_aware(start, "start")
    ensure_aware(end, "end")
    if end <= start:
        return _ZERO
    return seconds_between(start, end) / _SECONDS_PER_HOUR


def cost_of_interval(price_per_hour: Number, start: datetime, end: datetime) -> Decimal:
    """Cost of running from `start` to `end` at `price_per_hour` (0 if empty).

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> cost_of_interval(Decimal("0.10"), t0, t0.replace(hour=1, minute=30))
    Decimal('0.1500')
    """
    return to_money(_raw_cost(price_per_hour, start, end))


def _raw_cost(price_per_hour: Number, start: datetime, end: datetime) -> Decimal:
    price = to_decimal(price_per_hour, "price_per_hour")
    if price < 0:
        raise InvalidAmountError("price must not be negative", "price_per_hour")
    return price * _hours(start, end)


def integrate_cost(segments: Iterable[PriceSegment]) -> Decimal:
    """Total cost over segments, rounded once at the end (no per-segment drift).

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> integrate_cost([PriceSegment(t0, t0 + timedelta(hours=2), Decimal("0.03")),
    ...                 PriceSegment(t0 + timedelta(hours=2), t0 + timedelta(hours=3),
    ...                              Decimal("0.10"))])
    Decimal('0.1600')
    """
    return to_money(sum((_raw_cost(s.price_per_hour, s.start, s.end) for s in segments), _ZERO))


def baseline_and_savings(
    segments: Iterable[PriceSegment],
    ondemand_price: Number,
    discount_percent: Number = Decimal(0),
) -> SavingsSummary:
    """Actual cost of `segments` versus paying (discounted) on-demand for the same hours.

    ``savings`` is signed: negative means the segments cost more than the
    baseline, which a report should show rather than hide.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> s = baseline_and_savings([PriceSegment(t0, t0 + timedelta(hours=10),
    ...                           Decimal("0.03"))], Decimal("0.10"))
    >>> s.actual, s.baseline, s.savings, s.savings_percent
    (Decimal('0.3000'), Decimal('1.0000'), Decimal('0.7000'), Decimal('70.00'))
    """
    items = list(segments)
    od = to_decimal(ondemand_price, "ondemand_price")
    discount = to_decimal(discount_percent, "discount_percent")
    if od < 0:
        raise InvalidAmountError("must not be negative", "ondemand_price")
    if not _ZERO <= discount <= _HUNDRED:
        raise ValidationError("must be between 0 and 100", "discount_percent")

    actual = sum((_raw_cost(s.price_per_hour, s.start, s.end) for s in items), _ZERO)
    hours = sum((_hours(s.start, s.end) for s in items), _ZERO)
    baseline = od * (1 - discount / _HUNDRED) * hours
    savings = baseline - actual
    percent = savings / baseline * _HUNDRED if baseline > 0 else _ZERO
    return SavingsSummary(
        actual=to_money(actual),
        baseline=to_money(baseline),
        savings=to_money(savings),
        savings_percent=to_percent(percent),
    )
