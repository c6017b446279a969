"""Errors of the command lifecycle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.errors import DomainError, ValidationError

if TYPE_CHECKING:
    from components.command_tracker.model import CommandStatus

__all__ = [
    "CommandConflictError",
    "CommandError",
    "CommandNotFoundError",
    "IllegalTransitionError",
    "InvalidCommandError",
]


class CommandError(DomainError):
    """Base for command lifecycle failures."""


class IllegalTransitionError(CommandError):
    """The requested status change is not in `LEGAL_TRANSITIONS`."""

    def __init__(self, frm: CommandStatus, to: CommandStatus, detail: str | None = None) -> None:
        self.frm = frm
        self.to = to
        text = f"illegal command transition {_name(frm)} -> {_name(to)}"
        super().__init__(f"{text}: {detail}" if detail else text)


class CommandConflictError(CommandError):
    """Someone else changed the command first, or its id already exists."""


class CommandNotFoundError(CommandError):
    """No command with that id for that agent."""


class InvalidCommandError(CommandError, ValidationError):
    """A new command's fields break a rule (``field`` names which)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        ValidationError.__init__(self, message, field)


def _name(status: object) -> str:
    return str(getattr(status, "value", status))
