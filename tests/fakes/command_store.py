"""`InMemoryCommandStore`: the `CommandStore` port in a dict, with real compare-and-set."""

from __future__ import annotations

from components.command_tracker import (
    ACTIVE_STATUSES,
    Command,
    CommandConflictError,
    queue_key,
)


class InMemoryCommandStore:
    """Behaves like the DynamoDB store: conditional put on add, conditional update on replace."""

    def __init__(self, commands: list[Command] | None = None) -> None:
        self._items: dict[tuple[str, str], Command] = {}
        self.writes = 0
        for command in commands or []:
            self.add(command)

    def add(self, command: Command) -> None:
        key = (command.agent_id, command.command_id)
        if key in self._items:
            raise CommandConflictError(f"command {command.command_id} already exists")
        self._items[key] = command
        self.writes += 1

    def get(self, agent_id: str, command_id: str) -> Command | None:
        return self._items.get((agent_id, command_id))

    def active_for_agent(self, agent_id: str, limit: int) -> list[Command]:
        active = [
            c for (agent, _), c in self._items.items() if agent == agent_id and c.status in ACTIVE_STATUSES
        ]
        return sorted(active, key=queue_key)[:limit]

    def replace(self, before: Command, after: Command) -> None:
        key = (before.agent_id, before.command_id)
        if (after.agent_id, after.command_id) != key:
            raise ValueError("replace must keep agent_id and command_id")
        stored = self._items.get(key)
        if stored is None or stored.status != before.status or stored.attempts != before.attempts:
            raise CommandConflictError(f"command {before.command_id} changed concurrently")
        self._items[key] = after
        self.writes += 1

    def all(self) -> list[Command]:
        """Every stored command (test helper, not part of the port)."""
        return list(self._items.values())
