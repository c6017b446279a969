"""Errors of the decision policy."""

from components.errors import ValidationError


class InvalidDecisionInputError(ValidationError):
    """Options or situation that the policy cannot reason about (e.g. duplicate pools)."""
