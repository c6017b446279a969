"""Replica values: statuses and their legal moves, types, and the view the planner needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from types import MappingProxyType

from components.replica_coordinator.errors import IllegalReplicaTransitionError

__all__ = [
    "ACTIVE_STATUSES",
    "LEGAL_TRANSITIONS",
    "ReplicaStatus",
    "ReplicaType",
    "StandbyView",
    "check_transition",
]


class ReplicaStatus(str, Enum):
    """Lifecycle of a standby (legacy ``replica_instances.status`` plus ``expired``)."""

    LAUNCHING = "launching"
    SYNCING = "syncing"
    READY = "ready"
    PROMOTED = "promoted"
    TERMINATED = "terminated"
    FAILED = "failed"
    EXPIRED = "expired"


ACTIVE_STATUSES = frozenset({ReplicaStatus.LAUNCHING, ReplicaStatus.SYNCING, ReplicaStatus.READY})
_ENDS = frozenset({ReplicaStatus.PROMOTED, ReplicaStatus.TERMINATED, ReplicaStatus.FAILED,
                   ReplicaStatus.EXPIRED})

LEGAL_TRANSITIONS: Mapping[ReplicaStatus, frozenset[ReplicaStatus]] = MappingProxyType({
    ReplicaStatus.LAUNCHING: frozenset({ReplicaStatus.SYNCING, ReplicaStatus.READY}) | _ENDS,
    ReplicaStatus.SYNCING: frozenset({ReplicaStatus.SYNCING, ReplicaStatus.READY}) | _ENDS,
    ReplicaStatus.READY: frozenset({ReplicaStatus.SYNCING, ReplicaStatus.READY}) | _ENDS,
    ReplicaStatus.PROMOTED: frozenset(),
    ReplicaStatus.TERMINATED: frozenset(),
    ReplicaStatus.FAILED: frozenset(),
    ReplicaStatus.EXPIRED: frozenset(),
})


def check_transition(current: ReplicaStatus, wanted: ReplicaStatus) -> None:
    """Raise IllegalReplicaTransitionError unless ``current → wanted`` is allowed.

    >>> check_transition(ReplicaStatus.READY, ReplicaStatus.PROMOTED)
    >>> check_transition(ReplicaStatus.FAILED, ReplicaStatus.READY)
    Traceback (most recent call last):
    ...
    components.replica_coordinator.errors.IllegalReplicaTransitionError: replica is failed, cannot become ready
    """
    if wanted not in LEGAL_TRANSITIONS[current]:
        raise IllegalReplicaTransitionError(current.value, wanted.value)


class ReplicaType(str, Enum):
    """Why a replica exists."""

    MANUAL = "manual"  # the standby of a manual-replica agent
    REBALANCE = "automatic-rebalance"  # pre-warmed on a rebalance recommendation; expires
    TERMINATION = "automatic-termination"  # emergency replacement on a termination warning


@dataclass(frozen=True)
class StandbyView:
    """A replica as the planner sees it; ``ec2_state`` None = not launched or not described; ``launched_at`` when
    its instance was attached (EC2 may not list it yet right after: ``planning.not_listed_yet``)."""

    replica_id: str
    status: ReplicaStatus
    pool_id: str | None
    instance_id: str | None
    created_at: datetime
    expires_at: datetime | None = None
    ec2_state: str | None = None
    launched_at: datetime | None = None
    failover: bool = False  # a failover workflow's own replacement: its execution's, not a standby

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES
