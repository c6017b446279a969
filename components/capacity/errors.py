"""Errors of the capacity observations."""

from components.errors import ValidationError


class InvalidObservationError(ValidationError):
    """An observation that cannot be recorded (unknown kind, bad time or value)."""
