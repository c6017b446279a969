"""Errors raised while identifying and registering agents."""

from __future__ import annotations

from components.errors import DomainError, ValidationError

__all__ = ["AgentIdentityError", "InvalidLogicalAgentIdError", "InvalidRegistrationError"]


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
