"""Price points, the valve's tuning knobs and the admission verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum

from components.data_valve.errors import InvalidPricePointError

__all__ = ["Admission", "PointQuality", "PricePoint", "ValveConfig"]


class PointQuality(str, Enum):
    """Where a stored price came from; only ACTUAL and AVERAGED were reported."""

    ACTUAL = "actual"
    INTERPOLATED = "interpolated"
    AVERAGED = "averaged_duplicate"
    FALLBACK = "fallback_default"


REPORTED_QUALITIES = frozenset({PointQuality.ACTUAL, PointQuality.AVERAGED})


@dataclass(frozen=True)
class PricePoint:
    """One spot price of one pool at one instant.

    The store keys points by ``(pool_id, ts)``; ``sources`` counts how many
    agent reports were averaged into this point.
    """

    pool_id: str
    ts: datetime
    price: Decimal
    quality: PointQuality = PointQuality.ACTUAL
    source_agent_id: str | None = None
    sources: int = 1

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None or self.ts.utcoffset() is None:
            raise InvalidPricePointError("must be timezone-aware (UTC)", "ts")
        if not isinstance(self.price, Decimal):
            raise InvalidPricePointError("must be a Decimal", "price")
        if self.sources < 1:
            raise InvalidPricePointError("must be at least 1", "sources")


@dataclass(frozen=True)
class ValveConfig:
    """Thresholds of the gate (defaults are the legacy server's values)."""

    spot_min: Decimal = Decimal("0.001")
    spot_max: Decimal = Decimal("100")
    ondemand_min: Decimal = Decimal("0.001")
    ondemand_max: Decimal = Decimal("200")
    dedup_window_s: int = 5
    dedup_tolerance_pct: Decimal = Decimal("0.5")
    gap_min_s: int = 90
    gap_max_s: int = 600
    gap_step_s: int = 60
    gap_max_points: int = 10
    recent_keep: int = 10
    retention_days: int = 90

    def __post_init__(self) -> None:
        if self.gap_step_s <= 0:
            raise InvalidPricePointError("must be positive", "gap_step_s")
        if not 0 <= self.gap_min_s <= self.gap_max_s:
            raise InvalidPricePointError("need 0 <= gap_min_s <= gap_max_s", "gap_min_s")
        if self.gap_max_points < 0 or self.recent_keep < 1 or self.dedup_window_s < 0:
            raise InvalidPricePointError("counts and windows must not be negative", "config")


@dataclass(frozen=True)
class Admission:
    """What to write after admitting one point, and the pool's new recent window.

    ``outcome`` is one of ``"stored"``, ``"averaged"``, ``"exact_duplicate"``,
    ``"out_of_order"``; ``filled`` counts interpolated points in ``upserts``.
    """

    upserts: tuple[PricePoint, ...]
    deletes: tuple[PricePoint, ...]
    recent: tuple[PricePoint, ...]
    outcome: str
    filled: int
    gap_s: float | None
