"""Stable agent identity and the rules for (re)registration."""

from components.agent_identity.document import (
    IdentityDocument,
    account_bound,
    check_identity,
    parse_identity_document,
)
from components.agent_identity.errors import (
    AgentIdentityError,
    IdentityMismatchError,
    InvalidIdentityDocumentError,
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
    "IdentityDocument",
    "IdentityMismatchError",
    "InvalidIdentityDocumentError",
    "InstanceMode",
    "InvalidLogicalAgentIdError",
    "InvalidRegistrationError",
    "KnownAgent",
    "Registration",
    "RegistrationAction",
    "RegistrationPlan",
    "account_bound",
    "agent_id_for",
    "check_identity",
    "normalize_logical_agent_id",
    "normalize_mode",
    "parse_identity_document",
    "plan_registration",
    "registration_refusal",
    "validate_registration",
]
