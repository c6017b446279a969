"""Errors raised at the price gate."""

from __future__ import annotations

from components.errors import DomainError, ValidationError

__all__ = ["DataValveError", "InvalidPricePointError", "PriceOutOfRangeError"]


class DataValveError(DomainError):
    """Base for price-gate failures."""


class PriceOutOfRangeError(DataValveError, ValidationError):
    """A price is not a finite number inside the plausible range."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)


class InvalidPricePointError(DataValveError, ValidationError):
    """A price point is malformed or belongs to another pool than its window."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)
