"""The single gate for price points: validate, deduplicate, average, gap-fill."""

from components.data_valve.errors import (
    DataValveError,
    InvalidPricePointError,
    PriceOutOfRangeError,
)
from components.data_valve.model import Admission, PointQuality, PricePoint, ValveConfig
from components.data_valve.valve import (
    admit,
    dedup_batch,
    expires_at,
    validate_ondemand_price,
    validate_spot_price,
)

__all__ = [
    "Admission",
    "DataValveError",
    "InvalidPricePointError",
    "PointQuality",
    "PriceOutOfRangeError",
    "PricePoint",
    "ValveConfig",
    "admit",
    "dedup_batch",
    "expires_at",
    "validate_ondemand_price",
    "validate_spot_price",
]
