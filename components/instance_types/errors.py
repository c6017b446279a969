"""Errors of the instance-type declaration."""

from components.errors import ValidationError


class InvalidTypeDeclarationError(ValidationError):
    """A declared instance-type list or requirement set cannot be used (``field`` names the part)."""
