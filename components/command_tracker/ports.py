"""What the command use cases need from storage."""

from __future__ import annotations

from typing import Protocol

from components.command_tracker.model import Command

__all__ = ["CommandStore"]


class CommandStore(Protocol):
    """Persistence of commands with compare-and-set updates.

    Compare-and-set (on status and attempts) is what makes leases safe when
    two pollers or a poller and the sweeper race for the same command.
    """

    def add(self, command: Command) -> None:
        """Store a new command; `CommandConflictError` if the id exists."""
        ...

    def get(self, agent_id: str, command_id: str) -> Command | None:
        """Return the command, or ``None`` if unknown."""
        ...

    def active_for_agent(self, agent_id: str, limit: int) -> list[Command]:
        """Pending and executing commands of the agent, in queue order, at most `limit`."""
        ...

    def replace(self, before: Command, after: Command) -> None:
        """Store `after` only if the stored command still has ``before.status``
        and ``before.attempts``; else raise `CommandConflictError`."""
        ...
