"""Value objects produced and consumed by the money math."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = ["PriceSegment", "SavingsSummary", "SwitchImpact"]


@dataclass(frozen=True)
class PriceSegment:
    """A stretch of time billed at one hourly price.

    Segments are assumed not to overlap; the caller cuts the timeline.
    """

    start: datetime
    end: datetime
    price_per_hour: Decimal


@dataclass(frozen=True)
class SwitchImpact:
    """What one switch changed, in money and in percent of on-demand.

    Any field whose inputs are missing is ``None`` (never a silent 0), so a
    dashboard can show "unknown" instead of a fake "$0.0000".
    """

    old_price: Decimal | None
    new_price: Decimal | None
    hourly_savings: Decimal | None
    percent_before: Decimal | None
    percent_after: Decimal | None
    improvement_pp: Decimal | None
    monthly_savings: Decimal | None
    yearly_savings: Decimal | None


@dataclass(frozen=True)
class SavingsSummary:
    """Actual spend versus the on-demand baseline over the same hours."""

    actual: Decimal
    baseline: Decimal
    savings: Decimal
    savings_percent: Decimal
