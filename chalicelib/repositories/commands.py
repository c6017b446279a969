"""DynamoDB implementation of components.command_tracker's CommandStore port.

The lease rules live in the component; this store only reads, writes and does compare-and-set.
Active commands carry ``queue_agent_id``/``queue_key`` (sparse queue index); executing commands carry
``lease_shard``/``lease_expires_at`` (sparse lease index). Final commands expire by TTL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable

from pynamodb.exceptions import PutError

from components.command_tracker import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Command,
    CommandConflictError,
    CommandStatus,
    CommandType,
    queue_key,
)

from chalicelib.repositories.dynamo import condition_failed, delete_each
from chalicelib.settings import get_settings
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


class DynamoCommandStore:
    """CommandStore over the commands table."""

    def add(self, command: Command) -> None:
        try:
            to_row(command).save(condition=CommandTable.command_id.does_not_exist())
        except PutError as exc:
            if condition_failed(exc):
                raise CommandConflictError(f"command {command.command_id} already exists") from exc
            raise

    def get(self, agent_id: str, command_id: str) -> Command | None:
        try:
            return to_command(CommandTable.get(agent_id, command_id, consistent_read=True))
        except CommandTable.DoesNotExist:
            return None

    def active_for_agent(self, agent_id: str, limit: int) -> list[Command]:
        rows = CommandTable.active.query(agent_id, limit=limit)
        return [to_command(row) for row in rows]

    def replace(self, before: Command, after: Command) -> None:
        condition = ((CommandTable.status == before.status.value)
                     & (CommandTable.attempts == before.attempts))
        try:
            to_row(after).save(condition=condition)
        except PutError as exc:
            if condition_failed(exc):
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

    def history(self, agent_id: str, limit: int) -> list[Command]:
        """An agent's commands, newest ids first (ids start with a timestamp)."""
        return [to_command(r) for r in CommandTable.query(agent_id, scan_index_forward=False, limit=limit)]


def delete_finished_before(agent_id: str, cutoff: datetime, budget: int) -> int:
    """Delete the agent's final commands that finished before ``cutoff`` (the data cleaner: rows TTL has
    not removed yet, and any final row without a TTL), at most ``budget``; each delete is conditional on
    the row still being final. Returns how many were deleted."""
    final = [s.value for s in FINAL_STATUSES]
    old = (CommandTable.finished_at < cutoff) | (CommandTable.finished_at.does_not_exist()
                                                 & (CommandTable.created_at < cutoff))
    rows = CommandTable.query(agent_id, filter_condition=CommandTable.status.is_in(*final) & old)
    return delete_each(rows, CommandTable.status.is_in(*final), budget)
