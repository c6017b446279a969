"""Errors raised by the money math."""

from __future__ import annotations

from components.errors import DomainError, ValidationError

__all__ = ["CalculationError", "InvalidAmountError"]


class CalculationError(DomainError):
    """Base for calculation failures."""


class InvalidAmountError(CalculationError, ValidationError):
    """A price, mode or interval cannot be used in a calculation."""
