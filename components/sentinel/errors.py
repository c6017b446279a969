"""Errors raised by the sentinel rules."""

from __future__ import annotations

from components.errors import DomainError, ValidationError

__all__ = ["InvalidThresholdsError", "SentinelError"]


class SentinelError(DomainError):
    """Base for sentinel failures."""


class InvalidThresholdsError(SentinelError, ValidationError):
    """Health thresholds are inconsistent (e.g. offline before degraded)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)
