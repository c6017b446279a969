"""DynamoDB implementation of components.command_tracker's CommandStore port.

The lease rules live in the component; this store only reads, writes and does compare-and-set.
Active commands carry ``queue_agent_id``/``queue_key`` (sparse queue index); executing commands carry
``lease_shard``/``lease_expires_at`` (sparse lease index). Final commands expire by TTL.

The agent row's ``active_commands`` counts the agent's pending + executing commands: an enqueue adds 1 in
the same transaction as the command's write, the move to a final status subtracts 1 in the same transaction
as that compare-and-set, so a heartbeat or poll that sees 0 knows the queue is empty without a Query.
Commands not counted (written before the counter existed, or for a row that does not count yet) carry no
``counted`` mark and never subtract.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable

from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from components.agent_identity import AgentStatus
from components.command_tracker import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Command,
    CommandConflictError,
    CommandStatus,
    CommandType,
    queue_key,
)

from chalicelib.errors import ConflictError, NotFoundError
from chalicelib.repositories.dynamo import cancellation_codes, condition_failed, delete_each, transaction_connection
from chalicelib.settings import get_settings
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.commands import LEASED, CommandTable

FIELDS = ("client_id", "priority", "created_at", "target_mode", "target_pool_id", "instance_id",
          "terminate_wait_seconds", "trigger", "created_by", "attempts", "max_attempts", "leased_at",
          "lease_expires_at", "finished_at", "success", "message")


def to_command(row: CommandTable) -> Command:
    """Row → domain value."""
    values = {name: getattr(row, name) for name in FIELDS}
    for name in ("priority", "terminate_wait_seconds", "attempts", "max_attempts"):
        values[name] = int(values[name] or 0)
    return Command(command_id=row.command_id, agent_id=row.agent_id,
                   command_type=CommandType(row.command_type), status=CommandStatus(row.status),
                   **values)


def to_row(command: Command) -> CommandTable:
    """Domain value → row, with the sparse index attributes derived from the status."""
    row = CommandTable(command.agent_id, command.command_id,
                       command_type=command.command_type.value, status=command.status.value,
                       **{name: getattr(command, name) for name in FIELDS})
    if command.status in ACTIVE_STATUSES:
        row.queue_agent_id = command.agent_id
        row.queue_key = queue_key(command)
    if command.status is CommandStatus.EXECUTING:
        row.lease_shard = LEASED
    if command.is_final:
        finished = command.finished_at or command.created_at
        row.expires_at = finished + timedelta(days=get_settings().command_retention_days)
    return row


_FAILED = "ConditionalCheckFailed"


class QueueFull(ConflictError):
    """A client's command for an agent whose queue holds ``max_active`` active commands: 409, nothing written."""

    code = "command_queue_full"


def _replace_actions(row: CommandTable) -> list:
    """SET every attribute of ``row`` (REMOVE the unset ones) but its key and the ``counted`` mark."""
    keep = {CommandTable.agent_id.attr_name, CommandTable.command_id.attr_name, CommandTable.counted.attr_name}
    return [attribute.remove() if getattr(row, name) is None else attribute.set(getattr(row, name))
            for name, attribute in CommandTable.get_attributes().items() if name not in keep]


class ForceSwitchRaced(ConflictError):
    """Another force-switch of the agent was queued since its guard was read: read the queue again."""

    code = "conflict"


_UNGUARDED = object()
_GONE = (AgentStatus.DELETED.value, AgentStatus.TERMINATED.value)  # an agent that no longer runs


def _guard(after):
    """The agent row still names ``after`` as its last force-switch (None: names none), and it may still be handed a
    client's switch: enabled and not deleted. Checked before the write too (``command_queue.switch_command``), but a
    disabling or a delete between that read and this write cancelled the pending commands it saw, not this one: the
    switch would wait in the queue and run once the agent is enabled again (or revived)."""
    named = AgentTable.last_force_switch_id.does_not_exist() if after is None \
        else AgentTable.last_force_switch_id == after
    return named & _takes_client_switches()


def _takes_client_switches():
    return ((AgentTable.config.enabled.does_not_exist() | (AgentTable.config.enabled == True))  # noqa: E712
            & ~AgentTable.status.is_in(*_GONE))


class AgentDisabled(ConflictError):
    """409 ``agent_disabled``: a disabled agent is delivered nothing, so a switch queued for it would wait for ever."""

    def __init__(self, logical_agent_id: str) -> None:
        super().__init__(f"agent {logical_agent_id} is disabled: enable it before queueing a switch",
                         field="agent_id", code="agent_disabled")


def _agent_row(command: Command, exc: Exception) -> AgentTable:
    """The command's agent row as it is now (a failed condition is explained from it); 404 when it is gone."""
    try:
        return AgentTable.get(command.client_id, command.agent_id, consistent_read=True)
    except AgentTable.DoesNotExist:
        raise NotFoundError("agent not found", field="agent_id") from exc


def _refuse_if_closed(agent: AgentTable, exc: Exception) -> None:
    """The 404 / 409 ``agent_disabled`` a client's switch gets when the agent was deleted or disabled meanwhile."""
    if agent.status in _GONE:
        raise NotFoundError("agent not found", field="agent_id") from exc
    if agent.config is not None and agent.config.enabled is False:
        raise AgentDisabled(agent.logical_agent_id) from exc


class DynamoCommandStore:
    """CommandStore over the commands table."""

    def add(self, command: Command, *, max_active: int | None = None, force_switch_after=_UNGUARDED) -> None:
        """Store a new command and count it on its agent's row (404 when the agent row does not exist). A row
        from before the counter (no ``active_commands``: its queue is always read) gets the command uncounted
        until its queue is seen empty (``agents.start_counting_commands``), so a counter never starts below
        the commands it has.

        ``max_active`` (a client's command): refused with ``QueueFull`` (409) when the agent already counts that
        many active commands, in the same conditional write, so concurrent requests cannot pass it either.

        ``force_switch_after`` (a client's force-switch): the agent row's ``last_force_switch_id`` as read before
        the queue was; the write names this command there on that condition, else ``ForceSwitchRaced`` (409)."""
        row = to_row(command)
        row.counted = True
        counting = AgentTable.active_commands.exists()
        if max_active is not None:
            counting &= AgentTable.active_commands < max_active
        actions, guarded = [AgentTable.active_commands.add(1)], force_switch_after is not _UNGUARDED
        if guarded:
            counting &= _guard(force_switch_after)
            actions.append(AgentTable.last_force_switch_id.set(command.command_id))
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.save(row, condition=CommandTable.command_id.does_not_exist())
                tx.update(AgentTable(command.client_id, command.agent_id), actions=actions, condition=counting)
        except TransactWriteError as exc:
            codes = cancellation_codes(exc)
            if codes[:1] == [_FAILED]:
                raise CommandConflictError(f"command {command.command_id} already exists") from exc
            if codes[1:2] != [_FAILED]:
                raise
            agent = _agent_row(command, exc)
            if guarded:
                _refuse_if_closed(agent, exc)
            if guarded and agent.last_force_switch_id != force_switch_after:
                raise ForceSwitchRaced("another force-switch of the agent was queued meanwhile") from exc
            if max_active is not None and agent.active_commands is not None:
                if agent.active_commands >= max_active:
                    raise QueueFull(f"the agent already has {int(agent.active_commands)} commands waiting or "
                                    f"running (at most {max_active}); let them finish first") from exc
                raise ConflictError("the agent's commands changed concurrently, retry") from exc
            row.counted = None
            if guarded:  # a row from before the counter: the guard alone, still in the command's transaction
                self._add_guarded_uncounted(row, command, force_switch_after)
                return
            try:
                row.save(condition=CommandTable.command_id.does_not_exist())
            except PutError as put_exc:
                if condition_failed(put_exc):
                    raise CommandConflictError(f"command {command.command_id} already exists") from put_exc
                raise

    @staticmethod
    def _add_guarded_uncounted(row: CommandTable, command: Command, after) -> None:
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.save(row, condition=CommandTable.command_id.does_not_exist())
                tx.update(AgentTable(command.client_id, command.agent_id),
                          actions=[AgentTable.last_force_switch_id.set(command.command_id)],
                          condition=AgentTable.agent_id.exists() & _guard(after))
        except TransactWriteError as exc:
            codes = cancellation_codes(exc)
            if codes[:1] == [_FAILED]:
                raise CommandConflictError(f"command {command.command_id} already exists") from exc
            if codes[1:2] == [_FAILED]:
                _refuse_if_closed(_agent_row(command, exc), exc)
                raise ForceSwitchRaced("another force-switch of the agent was queued meanwhile") from exc
            raise

    def get(self, agent_id: str, command_id: str) -> Command | None:
        try:
            return to_command(CommandTable.get(agent_id, command_id, consistent_read=True))
        except CommandTable.DoesNotExist:
            return None

    def active_for_agent(self, agent_id: str, limit: int) -> list[Command]:
        rows = CommandTable.active.query(agent_id, limit=limit)
        return [to_command(row) for row in rows]

    def replace(self, before: Command, after: Command, *, written_with: tuple = ()) -> None:
        """Compare-and-set on status and attempts; a counted command leaving the active statuses is
        uncounted from its agent's row in the same transaction. ``written_with``: new rows (a notification of the
        change, its own random key) written in the same transaction as the command's."""
        condition = ((CommandTable.status == before.status.value)
                     & (CommandTable.attempts == before.attempts))
        actions = _replace_actions(to_row(after))
        row = CommandTable(after.agent_id, after.command_id)
        if before.is_active and after.is_final:
            try:
                with TransactWrite(connection=transaction_connection()) as tx:
                    tx.update(row, actions=actions, condition=condition & (CommandTable.counted == True))  # noqa: E712
                    tx.update(AgentTable(after.client_id, after.agent_id),
                              actions=[AgentTable.active_commands.add(-1)],
                              condition=AgentTable.active_commands > 0)
                    for extra in written_with:
                        tx.save(extra)
                return
            except TransactWriteError as exc:
                if _FAILED not in cancellation_codes(exc):
                    raise
                # A conflict, a command from before the counter, or its agent row gone: the plain write
                # below tells a conflict apart.
        try:
            if written_with:
                with TransactWrite(connection=transaction_connection()) as tx:
                    tx.update(row, actions=actions, condition=condition)
                    for extra in written_with:
                        tx.save(extra)
            else:
                row.update(actions=actions, condition=condition)
        except (UpdateError, TransactWriteError) as exc:
            if condition_failed(exc) or _FAILED in cancellation_codes(exc):
                raise CommandConflictError(
                    f"command {before.command_id} changed concurrently") from exc
            raise

    def expired_leases(self, now: datetime, limit: int = 100) -> Iterable[Command]:
        """Executing commands whose lease deadline has passed (health monitor sweep)."""
        keys = CommandTable.leases.query(LEASED, CommandTable.lease_expires_at < now, limit=limit)
        for key in keys:
            command = self.get(key.agent_id, key.command_id)
            if command is not None and command.status is CommandStatus.EXECUTING:
                yield command

    def history(self, agent_id: str, limit: int, *, consistent: bool = False) -> list[Command]:
        """An agent's commands, newest ids first (ids start with a timestamp)."""
        return [to_command(r) for r in CommandTable.query(agent_id, scan_index_forward=False, limit=limit,
                                                          consistent_read=consistent)]


def delete_finished_before(agent_id: str, cutoff: datetime, budget: int) -> int:
    """Delete the agent's final commands that finished before ``cutoff`` (the data cleaner: rows TTL has
    not removed yet, and any final row without a TTL), at most ``budget``; each delete is conditional on
    the row still being final. Returns how many were deleted."""
    final = [s.value for s in FINAL_STATUSES]
    old = (CommandTable.finished_at < cutoff) | (CommandTable.finished_at.does_not_exist()
                                                 & (CommandTable.created_at < cutoff))
    rows = CommandTable.query(agent_id, filter_condition=CommandTable.status.is_in(*final) & old)
    return delete_each(rows, CommandTable.status.is_in(*final), budget)


def delete_all(agent_id: str, budget: int) -> int:
    """Delete the agent's commands whatever their status, at most ``budget`` (the data cleaner, removing a gone
    agent: no agent runs them any more), each on the condition that the row is still there. Returns how many
    were deleted."""
    rows = CommandTable.query(agent_id, attributes_to_get=["agent_id", "command_id"])
    return delete_each(rows, CommandTable.command_id.exists(), budget)
