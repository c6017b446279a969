"""Command values: statuses, priorities, types, the lease policy and the command."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, IntEnum
from types import MappingProxyType

from components.command_tracker.errors import InvalidCommandError

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "LEGAL_TRANSITIONS",
    "Command",
    "CommandPriority",
    "CommandStatus",
    "CommandType",
    "LeasePolicy",
    "ResultOutcome",
]


class CommandStatus(str, Enum):
    """Where a command is in its life. Final statuses never change again."""

    PENDING = "pending"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


FINAL_STATUSES = frozenset(
    {CommandStatus.COMPLETED, CommandStatus.FAILED, CommandStatus.CANCELLED, CommandStatus.TIMED_OUT}
)
ACTIVE_STATUSES = frozenset({CommandStatus.PENDING, CommandStatus.EXECUTING})

LEGAL_TRANSITIONS: Mapping[CommandStatus, frozenset[CommandStatus]] = MappingProxyType(
    {
        CommandStatus.PENDING: frozenset({CommandStatus.EXECUTING, CommandStatus.CANCELLED}),
        CommandStatus.EXECUTING: frozenset(
            {
                CommandStatus.COMPLETED,
                CommandStatus.FAILED,
                CommandStatus.PENDING,  # lease expired, attempts left: retry
                CommandStatus.TIMED_OUT,  # lease expired, no attempts left
            }
        ),
        CommandStatus.COMPLETED: frozenset(),
        CommandStatus.FAILED: frozenset(),
        CommandStatus.CANCELLED: frozenset(),
        CommandStatus.TIMED_OUT: frozenset(),
    }
)


class CommandPriority(IntEnum):
    """Delivery priority: higher goes first."""

    EMERGENCY = 100
    MANUAL_OVERRIDE = 75
    ML_URGENT = 50
    ML_NORMAL = 25
    SCHEDULED = 10


class CommandType(str, Enum):
    """What the agent is asked to do."""

    SWITCH = "switch"
    EMERGENCY_SWITCH = "emergency_switch"
    SWITCH_TO_ONDEMAND = "switch_to_ondemand"
    CREATE_REPLICA = "create_replica"
    DELETE_REPLICA = "delete_replica"
    PROMOTE_REPLICA = "promote_replica"
    PREPARE_SHUTDOWN = "prepare_shutdown"
    PROMOTE = "promote"
    CLEANUP_OLD_AMIS = "cleanup_old_amis"
    HEALTH_CHECK = "health_check"


@dataclass(frozen=True)
class LeasePolicy:
    """How long an agent may hold a command, and how often it is retried.

    The lease is what the legacy tracker lacked: a command handed to an agent
    that dies is otherwise "executing" forever.
    """

    base_lease_seconds: int = 300
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.base_lease_seconds <= 0:
            raise InvalidCommandError("must be positive", "base_lease_seconds")
        if self.max_attempts < 1:
            raise InvalidCommandError("must be at least 1", "max_attempts")


@dataclass(frozen=True)
class Command:
    """One instruction for one agent, with its delivery lease.

    Invariants checked on construction: attempts stay within
    ``0..max_attempts`` and an executing command always has a lease deadline.
    """

    command_id: str
    client_id: str
    agent_id: str
    command_type: CommandType
    priority: int
    status: CommandStatus
    created_at: datetime
    target_mode: str | None = None
    target_pool_id: str | None = None
    instance_id: str | None = None
    terminate_wait_seconds: int = 0
    trigger: str = "manual"
    created_by: str = "system"
    attempts: int = 0
    max_attempts: int = 3
    leased_at: datetime | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    success: bool | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.attempts <= self.max_attempts:
            raise InvalidCommandError("attempts must be within 0..max_attempts", "attempts")
        if self.status is CommandStatus.EXECUTING and self.lease_expires_at is None:
            raise InvalidCommandError("an executing command needs a lease deadline", "lease_expires_at")

    @property
    def is_final(self) -> bool:
        """True once the command can never change again."""
        return self.status in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """True while the command is waiting for or held by an agent."""
        return self.status in ACTIVE_STATUSES


@dataclass(frozen=True)
class ResultOutcome:
    """Result of recording an agent's report; ``replay`` marks an idempotent retry."""

    command: Command
    replay: bool
