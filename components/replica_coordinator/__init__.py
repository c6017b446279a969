"""Replica rules: the standby lifecycle, the coordinator's plan and the failover route."""

from components.replica_coordinator.errors import IllegalReplicaTransitionError, ReplicaError
from components.replica_coordinator.model import (
    ACTIVE_STATUSES,
    LEGAL_TRANSITIONS,
    ReplicaStatus,
    ReplicaType,
    StandbyView,
    check_transition,
)
from components.replica_coordinator.planning import (
    LISTING_LAG_S,
    FailoverRoute,
    Step,
    StepKind,
    choose_pool,
    not_listed_yet,
    plan_standbys,
    rank_pools,
    retire_at,
    route_failover,
)
from components.replica_coordinator.returning import ReturnPlan, plan_return

__all__ = [
    "ACTIVE_STATUSES",
    "LEGAL_TRANSITIONS",
    "LISTING_LAG_S",
    "FailoverRoute",
    "IllegalReplicaTransitionError",
    "ReplicaError",
    "ReplicaStatus",
    "ReplicaType",
    "ReturnPlan",
    "StandbyView",
    "Step",
    "StepKind",
    "check_transition",
    "choose_pool",
    "not_listed_yet",
    "plan_return",
    "plan_standbys",
    "rank_pools",
    "retire_at",
    "route_failover",
]
