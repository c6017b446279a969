"""Use cases over a `CommandStore`: enqueue, deliver, report, sweep.

The rules live in `lifecycle`; this module only reads, applies a rule and
writes back with compare-and-set, treating a conflict as "someone else won".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from components.command_tracker.errors import (
    CommandConflictError,
    CommandNotFoundError,
)
from components.command_tracker.lifecycle import (
    cancel,
    expire,
    extend,
    is_lease_expired,
    lease,
    record_result,
    sort_queue,
)
from components.command_tracker.model import (
    SWITCH_TYPES,
    Command,
    CommandStatus,
    LeasePolicy,
    ResultOutcome,
)
from components.command_tracker.ports import CommandStore

__all__ = ["deliver", "enqueue", "extend_lease", "report_result", "sweep_expired"]

logger = logging.getLogger(__name__)


def enqueue(store: CommandStore, command: Command) -> Command:
    """Store a new pending command.

    Raises
    ------
    CommandConflictError
        If a command with the same id exists.
    """
    store.add(command)
    return command


def deliver(
    store: CommandStore,
    agent_id: str,
    *,
    now: datetime,
    policy: LeasePolicy = LeasePolicy(),
    limit: int = 10,
    instance_id: str | None = None,
    current_instance_id: str | None = None,
) -> list[Command]:
    """Lease the agent's due commands and return everything the caller should be running.

    An expired lease is taken back first; if attempts remain the command is
    leased again at once, so the retry reaches the agent on this very poll.

    ``instance_id`` is the instance the caller runs on: a command that names
    another instance is neither leased nor returned to it (a retried switch
    never runs anywhere but on the instance it names). ``current_instance_id``
    is the instance the agent is on now: a pending switch of an instance the
    agent has left can never run, so it is cancelled as superseded (another
    command for such an instance once it waited a base lease unclaimed).

    Returns
    -------
    list[Command]
        Executing commands (leased now or earlier), in queue order. Leasing is a
        claim (compare-and-set): a command another poller (or a result, or the
        sweep) changed between this poll's read and its write is not handed to
        this poller, so two pollers at once never both get it.
    """
    delivered: list[Command] = []
    for cmd in store.active_for_agent(agent_id, limit):
        current = _take_back_if_expired(store, cmd, now)
        if current is None:
            continue
        if _left_behind(current, current_instance_id, now, policy):
            _try_replace(store, current, cancel(current, now, f"superseded: the agent moved from "
                                                              f"{current.instance_id} to {current_instance_id}"))
            continue
        if instance_id and current.instance_id and current.instance_id != instance_id:
            continue
        if current.status is CommandStatus.PENDING:
            current = _claim(store, current, lease(current, now, policy))
        if current is not None and current.status is CommandStatus.EXECUTING:
            delivered.append(current)
    return sort_queue(delivered)


def _left_behind(cmd: Command, current_instance_id: str | None, now: datetime, policy: LeasePolicy) -> bool:
    """A pending command for an instance the agent no longer runs on that can no longer matter: a switch
    of it at once; anything else (``prepare_shutdown`` for the interrupted instance) once it waited a
    whole base lease for an agent there to pick it up."""
    if not (cmd.status is CommandStatus.PENDING and current_instance_id and cmd.instance_id
            and cmd.instance_id != current_instance_id):
        return False
    return cmd.command_type in SWITCH_TYPES or (now - cmd.created_at).total_seconds() > policy.base_lease_seconds


def _take_back_if_expired(store: CommandStore, cmd: Command, now: datetime) -> Command | None:
    if not is_lease_expired(cmd, now):
        return cmd
    return _claim(store, cmd, expire(cmd, now))


def _claim(store: CommandStore, before: Command, after: Command) -> Command | None:
    """Write ``after``; None when another writer changed the command first (it is theirs, not this poll's)."""
    try:
        store.replace(before, after)
    except CommandConflictError:
        logger.info("command %s claimed concurrently; left to its claimer", before.command_id)
        return None
    return after


def _try_replace(store: CommandStore, before: Command, after: Command) -> Command | None:
    """Write `after`; on conflict return whatever is stored now (another poller won)."""
    try:
        store.replace(before, after)
    except CommandConflictError:
        logger.info("command %s changed concurrently; re-reading", before.command_id)
        return store.get(before.agent_id, before.command_id)
    return after


def report_result(
    store: CommandStore,
    agent_id: str,
    command_id: str,
    *,
    success: bool,
    message: str | None,
    now: datetime,
) -> ResultOutcome:
    """Record the agent's result for one command (idempotent for retries; late results count).

    Raises
    ------
    CommandNotFoundError
        If the agent has no such command.
    IllegalTransitionError
        If the command was never delivered, or already ended the other way.
    """
    for _ in range(3):  # a concurrent delivery or sweep may move the command while we write
        cmd = store.get(agent_id, command_id)
        if cmd is None:
            raise CommandNotFoundError(f"command {command_id} not found for agent {agent_id}")
        outcome = record_result(cmd, success=success, message=message, now=now)
        if outcome.replay:
            return outcome
        try:
            store.replace(cmd, outcome.command)
        except CommandConflictError:
            logger.info("command %s changed concurrently; re-reading", command_id)
            continue
        return outcome
    raise CommandConflictError(f"command {command_id} kept changing while its result was recorded")


def extend_lease(
    store: CommandStore,
    agent_id: str,
    command_id: str,
    *,
    now: datetime,
    policy: LeasePolicy = LeasePolicy(),
) -> Command:
    """Renew the lease of a command its agent is still working on.

    Raises
    ------
    CommandNotFoundError
        If the agent has no such command.
    IllegalTransitionError
        If the command is not executing (taken back, finished or cancelled).
    CommandConflictError
        If it changed concurrently (the caller may retry).
    """
    cmd = store.get(agent_id, command_id)
    if cmd is None:
        raise CommandNotFoundError(f"command {command_id} not found for agent {agent_id}")
    renewed = extend(cmd, now, policy)
    store.replace(cmd, renewed)
    return renewed


def sweep_expired(store: CommandStore, commands: Iterable[Command], *, now: datetime) -> list[Command]:
    """Expire every executing command in `commands` whose lease ran out.

    Used by a scheduled job so commands of agents that stopped polling still
    time out. Commands changed concurrently are skipped.
    """
    changed: list[Command] = []
    for cmd in commands:
        if not is_lease_expired(cmd, now):
            continue
        after = expire(cmd, now)
        try:
            store.replace(cmd, after)
        except CommandConflictError:
            logger.info("command %s changed concurrently; skipped by sweep", cmd.command_id)
            continue
        changed.append(after)
    return changed
