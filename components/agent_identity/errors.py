"""Errors raised while identifying and registering agents."""

from __future__ import annotations

from components.errors import DomainError, ValidationError

__all__ = [
    "AgentIdentityError",
    "IdentityMismatchError",
    "InvalidIdentityDocumentError",
    "InvalidLogicalAgentIdError",
    "InvalidRegistrationError",
]


class AgentIdentityError(DomainError):
    """Base for agent identity failures."""


class InvalidLogicalAgentIdError(AgentIdentityError, ValidationError):
    """The agent's self-chosen logical id is empty, too long or has odd characters."""

    def __init__(self, message: str, field: str | None = "logical_agent_id") -> None:
        ValidationError.__init__(self, message, field)


class InvalidRegistrationError(AgentIdentityError, ValidationError):
    """A registration is missing a required field or is inconsistent."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)


class InvalidIdentityDocumentError(AgentIdentityError, ValidationError):
    """The identity document is not an EC2 instance identity document (a 400)."""

    def __init__(self, message: str, field: str | None = "identity_document") -> None:
        ValidationError.__init__(self, message, field)


class IdentityMismatchError(AgentIdentityError):
    """What an agent claims differs from its signed identity document (the edge answers 403)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message
