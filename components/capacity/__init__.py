"""Capacity observations (the one record of what the product saw about a pool) and back-off."""

from components.capacity.backoff import DEFAULT_BACKOFF, BackoffPolicy
from components.capacity.errors import InvalidObservationError
from components.capacity.model import (
    CAPACITY_ERROR_CODES,
    HELD_INTERVAL_S,
    NEGATIVE_KINDS,
    POSITIVE_KINDS,
    CapacityObservation,
    ObservationKind,
    refusal_kind,
)

__all__ = [
    "CAPACITY_ERROR_CODES",
    "DEFAULT_BACKOFF",
    "HELD_INTERVAL_S",
    "NEGATIVE_KINDS",
    "POSITIVE_KINDS",
    "BackoffPolicy",
    "CapacityObservation",
    "InvalidObservationError",
    "ObservationKind",
    "refusal_kind",
]
