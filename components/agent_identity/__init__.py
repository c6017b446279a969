"""Stable agent identity and the rules for (re)registration."""

from components.agent_identity.errors import (
    AgentIdentityError,
    InvalidLogicalAgentIdError,
    InvalidRegistrationError,
)
from components.agent_identity.identity import (
    agent_id_for,
    normalize_logical_agent_id,
    normalize_mode,
    plan_registration,
    registration_refusal,
    validate_registration,
)
from components.agent_identity.model import (
    AgentStatus,
    InstanceMode,
    KnownAgent,
    Registration,
    RegistrationAction,
    RegistrationPlan,
)

__all__ = [
    "AgentIdentityError",
    "AgentStatus",
    "InstanceMode",
    "InvalidLogicalAgentIdError",
    "InvalidRegistrationError",
    "KnownAgent",
    "Registration",
    "RegistrationAction",
    "RegistrationPlan",
    "agent_id_for",
    "normalize_logical_agent_id",
    "normalize_mode",
    "plan_registration",
    "registration_refusal",
    "validate_registration",
]
