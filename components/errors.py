"""Base exceptions shared by every component.

One root (`DomainError`) lets the HTTP edge map *types* to status codes in a
single table instead of matching message text.
"""

from __future__ import annotations

__all__ = ["DomainError", "InvalidPoolIdError", "ValidationError"]


class DomainError(Exception):
    """Root of every error a component raises on purpose."""


class ValidationError(DomainError):
    """An input value breaks a domain rule.

    Parameters
    ----------
    message
        Human-readable reason, safe to show to the caller.
    field
        Name of the offending input, so the edge can point at it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidPoolIdError(ValidationError):
    """A pool id, instance type or availability zone is malformed."""
