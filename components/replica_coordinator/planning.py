"""What the coordinator and the failover workflow should do: pure decisions, no I/O.

The coordinator keeps exactly one standby per manual-replica agent (as the legacy coordinator did, minus
its duplicate-spawning window); pre-warmed standbys expire when no termination followed; the failover
picks promote → spot replacement → on-demand, in that order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from components.decision_engine import PoolOption
from components.replica_coordinator.model import ReplicaStatus, StandbyView

__all__ = [
    "LISTING_LAG_S",
    "FailoverRoute",
    "Step",
    "StepKind",
    "choose_pool",
    "not_listed_yet",
    "plan_standbys",
    "rank_pools",
    "retire_at",
    "route_failover",
]

GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
LIVE_STATES = frozenset({"pending", "running"})  # None = EC2 does not know the instance: not promotable
# EC2 is eventually consistent: DescribeInstances may not list an instance for a while after RunInstances
# returned it (AWS: "it might take a few moments"). Within this time of its launch, an instance EC2 does not list
# is still starting, not lost; past it, missing means gone.
LISTING_LAG_S = 60


def not_listed_yet(ec2_state: str | None, launched_at: datetime | None, now: datetime) -> bool:
    """Is a launched instance EC2 does not list (``ec2_state`` None) young enough to be still on its way?

    >>> from datetime import UTC, datetime, timedelta
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> not_listed_yet(None, now - timedelta(seconds=5), now), not_listed_yet(None, now - timedelta(minutes=2), now)
    (True, False)
    >>> not_listed_yet("terminated", now, now), not_listed_yet(None, None, now)
    (False, False)
    """
    return ec2_state is None and launched_at is not None and (now - launched_at).total_seconds() < LISTING_LAG_S


class StepKind(str, Enum):
    """One thing the coordinator does to one replica (or to the agent's standby slot)."""

    LAUNCH = "launch"  # the row exists but no instance is attached yet (a crash or a failed launch)
    MARK_READY = "mark_ready"  # EC2 says running
    MARK_FAILED = "mark_failed"  # EC2 lost it, or it never came up
    EXPIRE = "expire"  # a pre-warmed standby whose time ran out
    RETIRE_EXTRA = "retire_extra"  # more than one active standby: keep the newest
    CREATE = "create"  # manual-replica agent without an active standby
    ABANDON = "abandon"  # its account is no longer bound: closed once, the client told to end its instance


@dataclass(frozen=True)
class Step:
    kind: StepKind
    replica_id: str | None
    reason: str


def plan_standbys(standbys: Iterable[StandbyView], *, keep_one: bool, now: datetime,
                  launch_timeout_s: int = 900, blocked_pools: Iterable[str] = (),
                  lost_account: str | None = None) -> list[Step]:
    """Steps that bring an agent's standbys to the wanted state.

    ``keep_one`` is true for manual-replica agents: exactly one active standby afterwards.
    ``blocked_pools`` are in capacity back-off: a standby still to be launched there is given up
    (and, for ``keep_one``, replaced in another pool) instead of asking EC2 again.
    A failover's replacement (``failover``) belongs to its Step Functions execution, which launches it (or tries
    its next candidate), promotes it and closes the ones it did not use: it is never launched here (a launch here
    raced the workflow's, and a refusal marked the row the workflow was about to use failed) nor retired as an
    extra standby, nor does it make the agent's own standby one; it only holds off a new standby while in flight,
    and is failed once past the launch timeout without an instance (a workflow that died) or with its instance gone.
    ``lost_account`` is the agent's account when it is no longer bound to the client (a forced unbinding whose
    retirement failed): nothing can be done there any more, now or on any later run (no role to act with), so
    retrying would repeat the same failure every run for ever. Each active standby is abandoned instead (closed
    once, the client told to end its instance itself) and nothing is launched or created there.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> s = StandbyView("rep-1", ReplicaStatus.READY, "m5.large.us-east-1b", "i-1", t, ec2_state=None)
    >>> [(x.kind.value, x.replica_id) for x in plan_standbys([s], keep_one=True, now=t, lost_account="1" * 12)]
    [('abandon', 'rep-1')]
    """
    if lost_account:
        return [Step(StepKind.ABANDON, s.replica_id, f"account {lost_account} is no longer bound to the client")
                for s in sorted((s for s in standbys if s.active), key=lambda s: (s.created_at, s.replica_id))]
    blocked = frozenset(blocked_pools)
    steps: list[Step] = []
    alive: list[StandbyView] = []
    in_flight: list[StandbyView] = []  # a failover's replacements: never launched nor retired here
    for s in sorted((s for s in standbys if s.active), key=lambda s: (s.created_at, s.replica_id)):
        age = (now - s.created_at).total_seconds()
        if s.expires_at is not None and now >= s.expires_at:
            steps.append(Step(StepKind.EXPIRE, s.replica_id, "pre-warmed standby expired: no termination followed"))
        elif s.instance_id is None:
            if age >= launch_timeout_s:
                steps.append(Step(StepKind.MARK_FAILED, s.replica_id, f"no instance after {int(age)} s"))
            elif s.failover:
                in_flight.append(s)  # its workflow launches it (or moves on to its next candidate)
            elif s.pool_id in blocked:
                steps.append(Step(StepKind.MARK_FAILED, s.replica_id, f"pool {s.pool_id} is in capacity back-off"))
            else:
                steps.append(Step(StepKind.LAUNCH, s.replica_id, "no instance attached yet"))
                alive.append(s)
        elif not_listed_yet(s.ec2_state, s.launched_at, now):
            alive.append(s)  # launched moments ago: EC2 lists it shortly
        elif s.ec2_state is None or s.ec2_state in GONE_STATES:
            steps.append(Step(StepKind.MARK_FAILED, s.replica_id, f"instance {s.instance_id} is "
                              f"{s.ec2_state or 'missing'}"))
        else:
            if s.ec2_state == "running" and s.status is ReplicaStatus.LAUNCHING:
                steps.append(Step(StepKind.MARK_READY, s.replica_id, "instance running"))
            elif s.ec2_state == "pending" and age >= launch_timeout_s:
                steps.append(Step(StepKind.MARK_FAILED, s.replica_id, f"still pending after {int(age)} s"))
                continue
            (in_flight if s.failover else alive).append(s)
    if keep_one:
        for extra in alive[:-1]:
            steps.append(Step(StepKind.RETIRE_EXTRA, extra.replica_id, "more than one standby"))
        if not alive and not in_flight:
            steps.append(Step(StepKind.CREATE, None, "manual-replica agent has no standby"))
    return steps


def rank_pools(options: Sequence[PoolOption], exclude: Iterable[str], *, risk_ceiling: float = 1.0,
               unknown_risk: float = 0.5, penalty_per_hour: float = 0.0,
               blocked: Iterable[str] = ()) -> list[PoolOption]:
    """Every usable pool outside ``exclude`` and ``blocked`` (capacity back-off), best first: those
    within the risk ceiling by price + risk × penalty, then risk; then those above it, same order.

    >>> a, b = PoolOption("m5.large.us-east-1a", 0.05, 0.1), PoolOption("m5.large.us-east-1b", 0.04, 0.9)
    >>> c = PoolOption("m5.large.us-east-1c", 0.06, 0.2)
    >>> [o.pool_id[-1] for o in rank_pools([a, b, c], (), risk_ceiling=0.6)]
    ['a', 'c', 'b']
    >>> [o.pool_id[-1] for o in rank_pools([a, b, c], (), risk_ceiling=0.6, blocked={"m5.large.us-east-1a"})]
    ['c', 'b']
    """
    excluded = set(exclude) | set(blocked)
    usable = [o for o in options if o.available and o.price is not None and o.pool_id not in excluded]

    def risk(o: PoolOption) -> float:
        return o.risk if o.risk is not None else unknown_risk

    def cost(o: PoolOption) -> tuple[bool, float, float, str]:
        return (risk(o) > risk_ceiling, o.price + risk(o) * penalty_per_hour, risk(o), o.pool_id)

    return sorted(usable, key=cost)


def choose_pool(options: Sequence[PoolOption], exclude: Iterable[str], *, risk_ceiling: float = 1.0,
                unknown_risk: float = 0.5, penalty_per_hour: float = 0.0,
                blocked: Iterable[str] = ()) -> PoolOption | None:
    """The safest affordable pool outside ``exclude`` and ``blocked``: the first of ``rank_pools``.

    Pools above the risk ceiling are used only when nothing else is available. None when no pool
    with a known price is available.

    >>> a, b = PoolOption("m5.large.us-east-1a", 0.05, 0.1), PoolOption("m5.large.us-east-1b", 0.04, 0.9)
    >>> choose_pool([a, b], {"m5.large.us-east-1c"}, risk_ceiling=0.6).pool_id
    'm5.large.us-east-1a'
    """
    ranked = rank_pools(options, exclude, risk_ceiling=risk_ceiling, unknown_risk=unknown_risk,
                        penalty_per_hour=penalty_per_hour, blocked=blocked)
    return ranked[0] if ranked else None


class FailoverRoute(str, Enum):
    """The first branch of the failover state machine."""

    PROMOTE = "promote"
    LAUNCH = "launch"
    ONDEMAND = "ondemand"
    NOTHING = "nothing"


def route_failover(standby: StandbyView | None, spot_pool: str | None, primary_pool: str | None) -> FailoverRoute:
    """Promote a live standby in another pool; else a spot replacement; else on-demand (SEF).

    >>> route_failover(None, None, "m5.large.us-east-1a").value
    'ondemand'
    """
    if (standby is not None and standby.active and standby.instance_id is not None
            and standby.ec2_state in LIVE_STATES and standby.pool_id != primary_pool):
        return FailoverRoute.PROMOTE
    return FailoverRoute.LAUNCH if spot_pool else FailoverRoute.ONDEMAND


def retire_at(handover_at: datetime, deadline: datetime | None, *, auto_terminate: bool,
              wait_s: int) -> datetime | None:
    """When to terminate the old instance; None = never (auto-terminate off: the old instance is kept)."""
    if not auto_terminate:
        return None
    at = handover_at + timedelta(seconds=max(wait_s, 0))
    return max(at, deadline) if deadline is not None else at
