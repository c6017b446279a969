"""Command values: statuses, priorities, types, the lease policy and the command."""

from __future__ import annotations


import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum, IntEnum
from types import MappingProxyType

from components.command_tracker.errors import InvalidCommandError

__all__ = [
    "ACTIVE_STATUSES",
    "AgentTimings",
    "LATE_RESULT_STATUSES",
    "LAUNCHING_TYPES",
    "LEGACY_AGENT",
    "SPOT_AGENT",
    "SWITCH_TYPES",
    "FINAL_STATUSES",
    "LEGAL_TRANSITIONS",
    "Command",
    "CommandPriority",
    "CommandStatus",
    "CommandType",
    "LeasePolicy",
    "ResultOutcome",
    "timings_for_agent_version",
]


class CommandStatus(str, Enum):
    """Where a command is in its life. A final status is never delivered again; the only change it
    still takes is the late result of the agent that ran it (see `LATE_RESULT_STATUSES`)."""

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

_RESULTS = frozenset({CommandStatus.COMPLETED, CommandStatus.FAILED})
# Where a command can be when the agent that was handed it reports a result after its lease ran out:
# re-queued (pending), given up on (timed_out) or superseded (cancelled). The action happened (or
# failed) whatever the server decided meanwhile, so the result is recorded, never turned into a retry.
LATE_RESULT_STATUSES = frozenset({CommandStatus.PENDING, CommandStatus.TIMED_OUT, CommandStatus.CANCELLED})

LEGAL_TRANSITIONS: Mapping[CommandStatus, frozenset[CommandStatus]] = MappingProxyType(
    {
        CommandStatus.PENDING: frozenset({CommandStatus.EXECUTING, CommandStatus.CANCELLED}) | _RESULTS,
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
        CommandStatus.CANCELLED: _RESULTS,  # late result of a superseded delivery
        CommandStatus.TIMED_OUT: _RESULTS,  # late result after the last lease ran out
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


SWITCH_TYPES = frozenset({CommandType.SWITCH, CommandType.EMERGENCY_SWITCH, CommandType.SWITCH_TO_ONDEMAND})
# Commands whose agent launches an instance and waits for it to run before it can answer.
LAUNCHING_TYPES = SWITCH_TYPES | {CommandType.CREATE_REPLICA}


@dataclass(frozen=True)
class AgentTimings:
    """How long one kind of agent may take for the steps a command asks of it (seconds).

    ``prepare_s``: what the agent does before it launches (the early 4.0.0 builds of agent-v2 make an AMI of
    the old instance and wait for it, v3.2 snapshots the root volume and one build waits for the snapshot:
    each waiter gives up after 600 s). ``launch_s``: RunInstances plus the wait for ``running``.
    ``terminate_s``: terminating the old instance plus the wait for ``terminated``, for agents that do it on
    the command thread after the command's ``terminate_wait_seconds`` and only then answer
    (``reports_after_terminating``).
    ``extends_leases``: the agent renews its lease while it works. ``runs_hooks``: it executes the
    failover's ``prepare_shutdown``/``promote`` (legacy agents skip any command without a target mode,
    so queuing them would only leave commands to time out). ``launches_pool_type``: a spot switch launches
    the target pool's instance type (legacy agents launch the type they run on in the pool's zone).
    ``waits_as_commanded``: it terminates the old instance after the command's ``terminate_wait_seconds`` and only
    then (v3.2, and the early 4.0.0 builds of agent-v2, decide by their own AUTO_TERMINATE_OLD_INSTANCE /
    TERMINATE_WAIT_TIME, whatever the command says; every v4 build says 4.0.0, so no legacy agent is taken to).
    ``lists_commands``: it is answered its pending commands as a bare list (the first v3.2 builds iterate the
    answer itself, so an object would give them its keys; every v3.2 build reads a list).
    """

    launch_s: int
    terminate_s: int
    reports_after_terminating: bool
    extends_leases: bool
    runs_hooks: bool
    launches_pool_type: bool
    waits_as_commanded: bool = True
    lists_commands: bool = False
    prepare_s: int = 0

    def host_gone_s(self, terminate_wait_s: int) -> int:
        """How long after the new instance is launched the old instance (and the agent on it) may still run
        under auto-terminate: the launch, the terminate wait, the termination.

        >>> LEGACY_AGENT.host_gone_s(300), SPOT_AGENT.host_gone_s(300)
        (1020, 660)
        """
        return self.launch_s + terminate_wait_s + self.terminate_s

    def switch_s(self, terminate_wait_s: int) -> int:
        """How long the agent is busy with a switch before it answers: its preparation, then until its host is
        gone where it terminates it on the command thread (it reports only then), else the launch.

        >>> LEGACY_AGENT.switch_s(300), SPOT_AGENT.switch_s(300), LEGACY_AGENT.switch_s(0)
        (1680, 360, 1020)
        """
        if self.reports_after_terminating and terminate_wait_s > 0:
            return self.prepare_s + self.host_gone_s(terminate_wait_s)
        return self.prepare_s + self.launch_s


# Legacy v4/v3.2: the early 4.0.0 builds first make an AMI of the old instance (image_available waiter 15 s × 40),
# v3.2 a root-volume snapshot (agent-v2 ea15b23 waits for it: 10 s polls for up to 600 s); then waiter 10 s × 30
# for running; then it sleeps the command's terminate_wait_seconds, terminates, waits 15 s × 20 for terminated,
# and only then reports. Each EC2/HTTP call adds up to 30 s (its timeout): one minute of slack per phase. The last
# v4 builds make no image and terminate as the command says; v3.2 and the early 4.0.0 builds (agent-v2
# ec1c6dd..27bdcdf), which report the same version, decide both by their own environment: any legacy switch may
# first wait 600 s for its image, and one without a wait may end with its host too.
LEGACY_AGENT = AgentTimings(launch_s=300 + 60, terminate_s=300 + 60, reports_after_terminating=True,
                            extends_leases=False, runs_hooks=False, launches_pool_type=False,
                            waits_as_commanded=False, prepare_s=600 + 60)
# v3.2: the same, answered its pending commands as a list.
LEGACY_V3_AGENT = replace(LEGACY_AGENT, lists_commands=True)
# spot-agent ≥ 5 (agent/): the same launch wait; it reports as soon as the replacement runs, terminates
# the old instance later off the command path, and renews its lease while it waits.
SPOT_AGENT = AgentTimings(launch_s=300 + 60, terminate_s=0, reports_after_terminating=False,
                          extends_leases=True, runs_hooks=True, launches_pool_type=True)


def timings_for_agent_version(agent_version: str | None) -> AgentTimings:
    """The agent kind behind a registration's ``agent_version``: ≥ 5 is ours, anything else (3.x, 4.x,
    missing, unreadable) is treated as legacy, whose leases are the longest.

    >>> timings_for_agent_version("4.0.0") is LEGACY_AGENT, timings_for_agent_version("5.1.0") is SPOT_AGENT
    (True, True)
    >>> timings_for_agent_version(None) is LEGACY_AGENT, timings_for_agent_version("3.2.0") is LEGACY_V3_AGENT
    (True, True)
    """
    match = re.match(r"\s*v?(\d+)", agent_version or "")
    major = int(match.group(1)) if match else None
    if major is not None and major >= 5:
        return SPOT_AGENT
    return LEGACY_V3_AGENT if major == 3 else LEGACY_AGENT


@dataclass(frozen=True)
class LeasePolicy:
    """How long an agent may hold a command, and how often it is retried.

    The lease is what the legacy tracker lacked: a command handed to an agent
    that dies is otherwise "executing" forever. It is sized to the work the
    command asks of this kind of agent (`lease_seconds`), so an agent that is
    still working is never mistaken for a dead one.
    """

    base_lease_seconds: int = 300
    max_attempts: int = 3
    agent: AgentTimings = LEGACY_AGENT

    def __post_init__(self) -> None:
        if self.base_lease_seconds <= 0:
            raise InvalidCommandError("must be positive", "base_lease_seconds")
        if self.max_attempts < 1:
            raise InvalidCommandError("must be at least 1", "max_attempts")

    def lease_seconds(self, cmd: "Command") -> int:
        """The base lease (delivery, hooks, reporting) plus every step the command makes the agent wait.

        >>> from datetime import datetime, timezone
        >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
        >>> switch = Command("c", "cl", "ag", CommandType.SWITCH, 75, CommandStatus.PENDING, t0,
        ...                  target_mode="ondemand", terminate_wait_seconds=300)
        >>> LeasePolicy().lease_seconds(switch)  # 300 + 660 image + 360 launch + 300 wait + 360 terminate
        1980
        >>> LeasePolicy(agent=SPOT_AGENT).lease_seconds(switch)
        660
        """
        if cmd.command_type in SWITCH_TYPES:
            return self.base_lease_seconds + self.agent.switch_s(cmd.terminate_wait_seconds)
        if cmd.command_type in LAUNCHING_TYPES:
            return self.base_lease_seconds + self.agent.launch_s
        return self.base_lease_seconds


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
    """Result of recording an agent's report; ``replay`` marks an idempotent retry, ``late`` a result
    that arrived after its lease ran out (recorded all the same)."""

    command: Command
    replay: bool
    late: bool = False
