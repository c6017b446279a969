"""Errors raised by the replica rules."""

from __future__ import annotations

from components.errors import DomainError

__all__ = ["IllegalReplicaTransitionError", "ReplicaError"]


class ReplicaError(DomainError):
    """Base for replica failures."""


class IllegalReplicaTransitionError(ReplicaError):
    """A replica cannot move from its status to the one asked for (e.g. promoting a failed one)."""

    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(f"replica is {current}, cannot become {wanted}")
        self.current, self.wanted = current, wanted
