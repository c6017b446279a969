"""What the risk model sees: one pool's history, and the names and order of its features.

The model answers one question for a pool that can be obtained now: how likely is it to become
unobtainable (capacity gone, so a running instance is at risk) within the horizon? Its inputs are
computed from a :class:`PoolHistory` by :mod:`components.risk_model.features`, in the order of
:data:`FEATURE_NAMES`; the manifest of every trained artifact records that order and
:func:`~components.risk_model.manifest.validate_manifest` refuses any other.

Examples
--------
>>> h = PoolHistory(times=(0.0, 195.0), available=(1, 1), prices=(0.9, 0.9),
...                 region_available_fraction=(1.0, 0.5), ondemand_price=3.06, advisor_band=4)
>>> len(h), h.prefix(1).available
(2, (1,))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from components.risk_model.errors import InvalidRiskInputError

__all__ = [
    "FEATURE_NAMES",
    "LOOKBACK_S",
    "UNAVAILABLE_RISK",
    "WINDOWS_S",
    "PoolHistory",
]

# Trailing windows (seconds). An element belongs to the window W ending at t when its time is > t − W.
WINDOWS_S: dict[str, float] = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 24 * 3600.0}
# The longest look-back of any feature. Durations (streak, time since drop, outage length) are cut at
# it, so the features at t depend only on the elements from the last one at or before t − LOOKBACK_S
# onwards: a history covering 24 h (plus one element) gives exactly the values the model was trained on.
LOOKBACK_S: float = 24 * 3600.0
# Risk of a pool that cannot be obtained now: the model is trained on obtainable pools only.
UNAVAILABLE_RISK: float = 1.0

FEATURE_NAMES: tuple[str, ...] = (
    "available_streak_h",       # hours the pool has been obtainable without a break (cut at 24 h)
    "pool_availability_1h",     # share of the pool's observations in the last hour that were 1
    "pool_availability_6h",
    "pool_availability_24h",
    "drops_6h",                 # 1→0 transitions of the pool in the last 6 h
    "drops_24h",
    "hours_since_drop",         # since the pool's last 1→0 transition (24 when none in 24 h)
    "last_outage_h",            # length of the pool's latest outage inside the last 24 h (0 when none)
    "region_availability_now",  # share of the region's pools obtainable now
    "region_availability_1h",   # its mean over the last hour
    "region_availability_6h",
    "region_availability_24h",
    "price_to_ondemand",        # spot / on-demand now (NaN when the price is unknown)
    "price_change_1h",          # relative change vs the price in force 1 h ago (NaN when unknown)
    "price_change_24h",
    "hour_sin",                 # hour of day (UTC) on the unit circle
    "hour_cos",
    "dow_sin",                  # day of week (UTC, fractional) on the unit circle
    "dow_cos",
    "advisor_band",             # Spot Advisor interruption band 0..4 of the pool's type and region
)


def _is_price(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and (math.isnan(value) or value >= 0))


@dataclass(frozen=True)
class PoolHistory:
    """Everything known about one pool up to now; element ``i`` is the state at ``times[i]``.

    Parameters
    ----------
    times
        Epoch seconds (UTC), strictly increasing; the last one is "now".
    available
        1 when a spot instance of the pool could be obtained at that time, else 0.
    prices
        Spot price in $/h at that time; ``None`` or NaN when unknown.
    region_available_fraction
        Share (0..1) of the region's observed pools that were obtainable at that time.
    ondemand_price
        On-demand $/h of the pool's instance type (0 or NaN when unknown: no price ratio then).
    advisor_band
        Spot Advisor interruption band 0..4 (``components.risk_model.prior``).
    """

    times: Sequence[float]
    available: Sequence[int]
    prices: Sequence[float | None]
    region_available_fraction: Sequence[float]
    ondemand_price: float
    advisor_band: int

    def __post_init__(self) -> None:
        n = len(self.times)
        if n == 0:
            raise InvalidRiskInputError("a history needs at least one element", "times")
        for name in ("available", "prices", "region_available_fraction"):
            if len(getattr(self, name)) != n:
                raise InvalidRiskInputError(f"{name} has {len(getattr(self, name))} elements, times has {n}",
                                            name)
        times = self.times
        if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in times):
            raise InvalidRiskInputError("times must be finite epoch seconds", "times")
        if any(times[i] >= times[i + 1] for i in range(n - 1)):
            raise InvalidRiskInputError("times must be strictly increasing", "times")
        if any(a not in (0, 1) for a in self.available):
            raise InvalidRiskInputError("available must hold 0 or 1", "available")
        if not all(isinstance(r, (int, float)) and 0.0 <= r <= 1.0 for r in self.region_available_fraction):
            raise InvalidRiskInputError("region_available_fraction must be in [0, 1]", "region_available_fraction")
        if not all(_is_price(p) for p in self.prices):
            raise InvalidRiskInputError("prices must be >= 0, None or NaN", "prices")
        if not _is_price(self.ondemand_price) or self.ondemand_price is None:
            raise InvalidRiskInputError("ondemand_price must be >= 0 or NaN", "ondemand_price")
        if isinstance(self.advisor_band, bool) or not isinstance(self.advisor_band, int) \
                or not 0 <= self.advisor_band <= 4:
            raise InvalidRiskInputError("advisor_band must be an int 0..4", "advisor_band")

    def __len__(self) -> int:
        return len(self.times)

    def prefix(self, count: int) -> PoolHistory:
        """The history as it was known at element ``count − 1`` (its first ``count`` elements)."""
        return PoolHistory(tuple(self.times[:count]), tuple(self.available[:count]),
                           tuple(self.prices[:count]), tuple(self.region_available_fraction[:count]),
                           self.ondemand_price, self.advisor_band)
