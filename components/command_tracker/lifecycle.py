"""Pure rules of a command's life: create, lease, expire, finish, cancel, order.

Every function takes a `Command` and the current time and returns a new
`Command` (or raises); storage is someone else's job (see `ports.py`).

The life of a command::

    pending --lease--> executing --result--> completed | failed
       |                   |
       |                   +--lease expired, attempts left--> pending (retry)
       |                   +--lease expired, none left------> timed_out
       +--cancel--> cancelled

A result that arrives after the lease ran out is still the truth about what the agent did: it is
recorded from executing, from the re-queued pending, from timed_out and from a cancelled (superseded)
delivery, so a switch that happened is never retried because its report was slow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from components.command_tracker.errors import (
    CommandError,
    IllegalTransitionError,
    InvalidCommandError,
)
from components.command_tracker.model import (
    LATE_RESULT_STATUSES,
    LEGAL_TRANSITIONS,
    Command,
    CommandStatus,
    CommandType,
    LeasePolicy,
    ResultOutcome,
)
from components.errors import ValidationError
from components.timeutil import ensure_aware

__all__ = [
    "ResultOutcome",
    "TIMED_OUT_MESSAGE",
    "cancel",
    "expire",
    "extend",
    "is_lease_expired",
    "lease",
    "new_command",
    "queue_key",
    "record_result",
    "sort_queue",
    "transition",
]

TIMED_OUT_MESSAGE = "no result before lease deadline"
MAX_TERMINATE_WAIT_SECONDS = 3600
_TARGET_MODES = (None, "spot", "ondemand")
_NEEDS_TARGET_MODE = frozenset({CommandType.SWITCH, CommandType.EMERGENCY_SWITCH})


def new_command(
    *,
    command_id: str,
    client_id: str,
    agent_id: str,
    command_type: CommandType | str,
    priority: int,
    now: datetime,
    target_mode: str | None = None,
    target_pool_id: str | None = None,
    instance_id: str | None = None,
    terminate_wait_seconds: int = 0,
    trigger: str = "manual",
    created_by: str = "system",
    policy: LeasePolicy = LeasePolicy(),
) -> Command:
    """Validate the inputs and build a pending command.

    Raises
    ------
    InvalidCommandError
        With ``field`` set to the first offending input.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> cmd = new_command(command_id="c1", client_id="cl", agent_id="ag",
    ...     command_type="switch", priority=75, target_mode="ondemand",
    ...     now=datetime(2024, 1, 1, tzinfo=timezone.utc))
    >>> cmd.status.value, cmd.attempts, cmd.max_attempts
    ('pending', 0, 3)
    """
    for field, value in (("command_id", command_id), ("client_id", client_id), ("agent_id", agent_id)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidCommandError("must be a non-empty string", field)
    ctype = _command_type(command_type)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
        raise InvalidCommandError("must be an integer in 0..100", "priority")
    if target_mode not in _TARGET_MODES:
        raise InvalidCommandError("must be 'spot', 'ondemand' or empty", "target_mode")
    if ctype in _NEEDS_TARGET_MODE and target_mode is None:
        raise InvalidCommandError(f"{ctype.value} needs a target mode", "target_mode")
    if ctype is CommandType.SWITCH_TO_ONDEMAND and target_mode == "spot":
        raise InvalidCommandError("switch_to_ondemand cannot target spot", "target_mode")
    if target_mode == "spot" and not target_pool_id:
        raise InvalidCommandError("a switch to spot needs a target pool", "target_pool_id")
    if (
        isinstance(terminate_wait_seconds, bool)
        or not isinstance(terminate_wait_seconds, int)
        or not 0 <= terminate_wait_seconds <= MAX_TERMINATE_WAIT_SECONDS
    ):
        raise InvalidCommandError(
            f"must be an integer in 0..{MAX_TERMINATE_WAIT_SECONDS}", "terminate_wait_seconds"
        )
    _aware(now, "now")
    return Command(
        command_id=command_id,
        client_id=client_id,
        agent_id=agent_id,
        command_type=ctype,
        priority=int(priority),
        status=CommandStatus.PENDING,
        created_at=now,
        target_mode=target_mode,
        target_pool_id=target_pool_id,
        instance_id=instance_id,
        terminate_wait_seconds=terminate_wait_seconds,
        trigger=trigger,
        created_by=created_by,
        max_attempts=policy.max_attempts,
    )


def _command_type(value: CommandType | str) -> CommandType:
    try:
        return CommandType(value)
    except ValueError as exc:
        raise InvalidCommandError(f"unknown command type {value!r}", "command_type") from exc


def _aware(value: datetime, field: str) -> datetime:
    try:
        return ensure_aware(value, field)
    except ValidationError as exc:
        raise InvalidCommandError(exc.message, field) from exc


def transition(cmd: Command, to: CommandStatus, **changes: Any) -> Command:
    """Return `cmd` moved to status `to`, with other fields replaced by `changes`.

    Raises
    ------
    IllegalTransitionError
        If ``cmd.status -> to`` is not in `LEGAL_TRANSITIONS`.
    """
    if to not in LEGAL_TRANSITIONS[cmd.status]:
        raise IllegalTransitionError(cmd.status, to)
    return dataclasses.replace(cmd, status=to, **changes)


def lease(cmd: Command, now: datetime, policy: LeasePolicy = LeasePolicy()) -> Command:
    """Hand a pending command to its agent until a deadline.

    The deadline covers everything the command asks of this kind of agent
    (`LeasePolicy.lease_seconds`: launch wait, terminate wait, termination wait),
    so a slow but working agent is not retried early.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> cmd = new_command(command_id="c1", client_id="cl", agent_id="ag",
    ...     command_type="health_check", priority=10, now=t0)
    >>> leased = lease(cmd, t0, LeasePolicy(base_lease_seconds=60))
    >>> leased.status.value, leased.attempts, str(leased.lease_expires_at)
    ('executing', 1, '2024-01-01 00:01:00+00:00')
    """
    _aware(now, "now")
    if cmd.status is CommandStatus.PENDING and cmd.attempts >= cmd.max_attempts:
        raise IllegalTransitionError(cmd.status, CommandStatus.EXECUTING, "no attempts left")
    deadline = now + timedelta(seconds=policy.lease_seconds(cmd))
    return transition(
        cmd,
        CommandStatus.EXECUTING,
        attempts=cmd.attempts + 1,
        leased_at=now,
        lease_expires_at=deadline,
    )


def extend(cmd: Command, now: datetime, policy: LeasePolicy = LeasePolicy()) -> Command:
    """Renew the lease of an executing command for its agent that is still working on it.

    The deadline becomes at least ``now`` + the base lease, never earlier than it was. An agent may
    renew a lease that ran out as long as nobody took the command back (it is still executing).

    Raises
    ------
    IllegalTransitionError
        If `cmd` is not executing (re-queued, finished, cancelled).

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> cmd = lease(new_command(command_id="c1", client_id="cl", agent_id="ag",
    ...     command_type="health_check", priority=10, now=t0), t0, LeasePolicy(base_lease_seconds=60))
    >>> str(extend(cmd, t0 + timedelta(seconds=50), LeasePolicy(base_lease_seconds=60)).lease_expires_at)
    '2024-01-01 00:01:50+00:00'
    """
    _aware(now, "now")
    if cmd.status is not CommandStatus.EXECUTING:
        raise IllegalTransitionError(cmd.status, CommandStatus.EXECUTING, "only an executing lease can be extended")
    deadline = max(cmd.lease_expires_at, now + timedelta(seconds=policy.base_lease_seconds))
    return dataclasses.replace(cmd, lease_expires_at=deadline)


def is_lease_expired(cmd: Command, now: datetime) -> bool:
    """True when `cmd` is executing and `now` is past its lease deadline.

    A result arriving exactly at the deadline still counts.
    """
    return (
        cmd.status is CommandStatus.EXECUTING
        and cmd.lease_expires_at is not None
        and now > cmd.lease_expires_at
    )


def expire(cmd: Command, now: datetime) -> Command:
    """Take back an executing command whose lease ran out.

    Returns it to pending if attempts remain (a retry), else times it out.

    Raises
    ------
    IllegalTransitionError
        If `cmd` is not executing.
    CommandError
        If the lease is still live.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> cmd = new_command(command_id="c1", client_id="cl", agent_id="ag",
    ...     command_type="health_check", priority=10, now=t0)
    >>> expire(lease(cmd, t0), t0 + timedelta(hours=1)).status.value
    'pending'
    """
    retry = cmd.attempts < cmd.max_attempts
    target = CommandStatus.PENDING if retry else CommandStatus.TIMED_OUT
    if cmd.status is not CommandStatus.EXECUTING:
        raise IllegalTransitionError(cmd.status, target, "only an executing command can expire")
    if not is_lease_expired(cmd, now):
        raise CommandError(f"lease of command {cmd.command_id} is still live")
    if retry:
        return transition(
            cmd,
            target,
            leased_at=None,
            lease_expires_at=None,
            message=f"lease expired after attempt {cmd.attempts} of {cmd.max_attempts}; retrying",
        )
    return transition(cmd, target, finished_at=now, message=TIMED_OUT_MESSAGE)


def record_result(
    cmd: Command, *, success: bool, message: str | None, now: datetime
) -> ResultOutcome:
    """Apply the agent's report of how the command ended.

    A repeated report with the same outcome is a replay (the agent retried
    after a lost response) and changes nothing. A report that arrives after
    the lease ran out is recorded all the same (``late``): the command was
    delivered, so the agent may have acted, and what it did is the truth.

    Raises
    ------
    IllegalTransitionError
        For a command never delivered, or a final result that contradicts `success`.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> cmd = lease(new_command(command_id="c1", client_id="cl", agent_id="ag",
    ...     command_type="health_check", priority=10, now=t0), t0)
    >>> first = record_result(cmd, success=True, message="ok", now=t0)
    >>> first.command.status.value, first.replay, first.late
    ('completed', False, False)
    >>> record_result(first.command, success=True, message="ok", now=t0).replay
    True
    >>> late = record_result(cmd, success=True, message="ok", now=t0 + timedelta(hours=1))
    >>> late.command.status.value, late.late
    ('completed', True)
    """
    target = CommandStatus.COMPLETED if success else CommandStatus.FAILED
    if cmd.status in (CommandStatus.COMPLETED, CommandStatus.FAILED):
        if cmd.success == success:
            return ResultOutcome(command=cmd, replay=True)
        raise IllegalTransitionError(cmd.status, target)
    delivered = cmd.attempts >= 1
    if cmd.status is CommandStatus.EXECUTING or (cmd.status in LATE_RESULT_STATUSES and delivered):
        late = cmd.status is not CommandStatus.EXECUTING or is_lease_expired(cmd, now)
        done = transition(cmd, target, finished_at=now, success=success, message=message)
        return ResultOutcome(command=done, replay=False, late=late)
    raise IllegalTransitionError(cmd.status, target, "the command was never delivered")


def cancel(cmd: Command, now: datetime, reason: str | None = None) -> Command:
    """Withdraw a command that no agent has picked up yet.

    Raises
    ------
    IllegalTransitionError
        If `cmd` is not pending (an executing command cannot be pulled back).
    """
    return transition(cmd, CommandStatus.CANCELLED, finished_at=now, message=reason or "cancelled")


def queue_key(cmd: Command) -> str:
    """Sort key whose ascending order is priority DESC, created_at ASC, command_id.

    A plain string so a key-value store can use it as a sort key as is.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> cmd = new_command(command_id="c1", client_id="cl", agent_id="ag",
    ...     command_type="health_check", priority=75,
    ...     now=datetime(2024, 1, 1, tzinfo=timezone.utc))
    >>> queue_key(cmd)
    '025#2024-01-01T00:00:00.000000+00:00#c1'
    """
    created = cmd.created_at.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return f"{100 - cmd.priority:03d}#{created}#{cmd.command_id}"


def sort_queue(cmds: Iterable[Command]) -> list[Command]:
    """Commands in delivery order (see `queue_key`)."""
    return sorted(cmds, key=queue_key)
