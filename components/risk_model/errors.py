"""Errors raised by the risk-model contract (histories, manifests)."""

from __future__ import annotations

from components.errors import DomainError, ValidationError

__all__ = ["InvalidRiskInputError", "ManifestError", "RiskModelError"]


class RiskModelError(DomainError):
    """Base for risk-model failures."""


class InvalidRiskInputError(RiskModelError, ValidationError):
    """An input cannot be scored: a pool history (lengths differ, time goes back, bad values), an
    advisor band outside 0..4, a negative horizon."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)


class ManifestError(RiskModelError, ValidationError):
    """A model manifest breaks the schema (``field`` names the offending key, dotted)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)
