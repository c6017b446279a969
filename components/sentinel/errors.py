"""Errors raised by the sentinel rules."""

from __future__ import annotations

from components.errors import DomainError, ValidationError

__all__ = ["InvalidSignalError", "InvalidThresholdsError", "SentinelError"]


class SentinelError(DomainError):
    """Base for sentinel failures."""


class InvalidThresholdsError(SentinelError, ValidationError):
    """Health thresholds are inconsistent (e.g. offline before degraded)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)


class InvalidSignalError(SentinelError, ValidationError):
    """An event is not an EC2 signal we understand (wrong detail-type, no instance id, bad time)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)
