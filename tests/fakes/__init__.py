"""In-memory fakes of the component ports, shared by unit, property and contract tests."""

from tests.fakes.command_store import InMemoryCommandStore

__all__ = ["InMemoryCommandStore"]
