"""Agent statuses, instance modes, registrations and the registration plan."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "AgentStatus",
    "InstanceMode",
    "KnownAgent",
    "Registration",
    "RegistrationAction",
    "RegistrationPlan",
]


class AgentStatus(str, Enum):
    """Lifecycle status of a logical agent (it outlives the instances it runs on)."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    DISABLED = "disabled"
    SWITCHING = "switching"
    ERROR = "error"
    DELETED = "deleted"
    TERMINATED = "terminated"


class InstanceMode(str, Enum):
    """How the current instance is billed."""

    SPOT = "spot"
    ONDEMAND = "ondemand"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Registration:
    """What an agent says about itself when it (re)registers."""

    client_id: str
    logical_agent_id: str
    instance_id: str
    instance_type: str
    region: str
    az: str
    ami_id: str | None = None
    hostname: str | None = None
    agent_version: str | None = None
    mode: InstanceMode = InstanceMode.UNKNOWN
    private_ip: str | None = None
    public_ip: str | None = None


@dataclass(frozen=True)
class KnownAgent:
    """The stored agent found for (client, logical id), whatever its status."""

    agent_id: str
    status: AgentStatus
    instance_id: str | None
    instance_count: int = 1


class RegistrationAction(str, Enum):
    """What a registration does to the stored agent."""

    CREATED = "created"
    REVIVED = "revived"
    MIGRATED = "migrated"
    REFRESHED = "refreshed"


@dataclass(frozen=True)
class RegistrationPlan:
    """The decision for one registration; the caller applies it to storage.

    ``previous_instance_id`` is the old instance to deactivate when the agent
    now runs elsewhere; ``reset_config`` is True when the agent's flags must
    be set to defaults (new agent, or a deleted one coming back).
    """

    agent_id: str
    action: RegistrationAction
    previous_instance_id: str | None
    reset_config: bool
    instance_count: int
    status: AgentStatus = AgentStatus.ONLINE
