"""Standbys as the handlers, the workflow and the coordinator use them: where, create, launch, retire.

Every standby lives in a different pool than its spot primary (co-interruptions cluster by pool). EC2 work
is real (chalicelib.aws.ec2); a launch that fails for capacity marks the replica failed so the
coordinator replaces it, a transient failure leaves it ``launching`` for the next attempt. Pools in
capacity back-off (``repositories.observations``) are not chosen; every spot launch's outcome is
recorded as a capacity observation of its pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from components.capacity import (
    CapacityObservation,
    ObservationKind,
    refusal_kind,
)
from components.pool_id import make_pool_id, parse_pool_id
from components.replica_coordinator import ReplicaStatus, ReplicaType, rank_pools

from chalicelib import decisions, quotas, tenancy
from chalicelib.aws import ec2
from chalicelib.errors import ConflictError, InvalidInputError, redact
from chalicelib.repositories import activity, observations
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.replicas import ReplicaRecord, SlotTakenError

RISK_CEILING = 0.6
MAX_CANDIDATES = 3  # spot pools one failover launch task tries before on-demand (within its 60 s)


@dataclass(frozen=True)
class Placement:
    """Where a replica goes: pool (None for on-demand), AZ and the hourly price if known."""

    pool_id: str | None
    az: str
    price: Decimal | None
    reason: str


def candidates(agent: AgentRecord, now: datetime, *, exclude: tuple[str, ...] = (),
               limit: int = MAX_CANDIDATES) -> list[Placement]:
    """Where a spot replica of ``agent`` may go, best first (at most ``limit``): the safe cheap pools
    other than its own and ``exclude``, of every type it may run on (``decisions.market``, which already marks
    the pools in capacity back-off unavailable: ``repositories.observations.backoff``, read once).

    With no fresh price outside back-off, the other AZs of the region (price unknown) not in back-off.
    An empty list means no spot pool is worth asking EC2 for now.
    """
    excluded = {agent.spot_pool_id, *exclude} - {None}
    options, _ = decisions.market(agent, now)
    ranked = rank_pools([o for o in options if o.pool_id not in excluded], excluded, risk_ceiling=RISK_CEILING)
    if ranked:
        return [Placement(o.pool_id, parse_pool_id(o.pool_id)[1], Decimal(str(o.price)),
                          f"safest affordable pool: risk {o.risk:.2f}, {o.price:.4f} $/h"
                          if o.risk is not None else f"affordable pool: {o.price:.4f} $/h")
                for o in ranked[:limit]]
    zones = {make_pool_id(agent.instance_type, z): z for z in ec2.availability_zones(agent.region, account=tenancy.for_agent(agent))}
    zones = {p: z for p, z in zones.items() if p not in excluded}
    blocked = observations.backoff(zones, now, viewer=agent.client_id)
    return [Placement(p, z, None, "no prices reported yet: another availability zone")
            for p, z in zones.items() if p not in blocked][:limit]


def place(agent: AgentRecord, now: datetime, *, exclude: tuple[str, ...] = (),
          pool_id: str | None = None) -> Placement:
    """The pool for a spot replica of ``agent``: the given one, else the first of ``candidates`` under
    the capacity back-off (a pool that keeps taking replicas back backs off longer each time).

    ConflictError ``no_pool`` when no other pool is available (or every one is in back-off).
    """
    excluded = {agent.spot_pool_id, *exclude} - {None}
    if pool_id:
        instance_type, az = parse_pool_id(pool_id)
        if instance_type not in agent.runnable_types or not az.startswith(agent.region or ""):
            raise InvalidInputError("pool must be one of the agent's instance types in its region", field="pool_id")
        if pool_id in excluded:
            raise InvalidInputError("a standby must be in a different pool than its primary", field="pool_id")
        return Placement(pool_id, az, None, "pool chosen by the client")
    found = candidates(agent, now, exclude=exclude, limit=1)
    if not found:
        raise ConflictError("no other pool is available for this instance type (or all are in capacity "
                            "back-off)", code="no_pool")
    return found[0]


def launch(agent: AgentRecord, replica: ReplicaRecord, now: datetime, *, source_instance_id: str | None = None
           ) -> ReplicaRecord:
    """Launch (or find) the replica's EC2 instance and attach it. Idempotent on the replica id.

    CapacityUnavailable/LaunchError mark the replica failed and are re-raised; transient errors leave it
    ``launching`` (the coordinator retries) and are re-raised. A spot launch's outcome is recorded as a
    capacity observation of its pool (refused with EC2's code, or succeeded), once per replica.
    """
    if replica.instance_id:
        _observe_launch(replica, ObservationKind.LAUNCH_SUCCEEDED, replica.launched_at or replica.updated_at)
        return replica
    spec = ec2.LaunchSpec(region=agent.region, az=replica.az,
                          instance_type=replica.instance_type or agent.instance_type,  # the pool's type
                          lifecycle=replica.lifecycle, replica_id=replica.replica_id,
                          logical_agent_id=agent.logical_agent_id, agent_id=agent.agent_id,
                          client_id=agent.client_id,
                          source_instance_id=source_instance_id or replica.parent_instance_id or agent.instance_id)
    try:
        if tenancy.not_anothers(agent, spec.source_instance_id) is None:  # never a copy of another's instance
            raise ec2.LaunchError(f"source instance {spec.source_instance_id} is not this agent's")
        spec = replace(spec, account=tenancy.for_agent(agent))
        quotas.check_launch(agent, spec.instance_type, replica)
        info = ec2.launch(spec)
    except (ec2.CapacityUnavailable, ec2.LaunchError) as exc:
        code = getattr(exc, "code", None)
        failed = replica_repo.transition(replica, ReplicaStatus.FAILED, now, error_message=redact(str(exc), 500),
                                         launch_error=f"{type(exc).__name__}:{code or ''}")
        if refusal_kind(code):
            _observe_launch(failed, ObservationKind.LAUNCH_REFUSED, failed.terminated_at or now, code=code)
        raise
    try:
        attached = replica_repo.attach_instance(replica, instance_id=info.instance_id, now=now,
                                                lifecycle=info.lifecycle, own_launch=True)
    except ConflictError:
        return _lost_attach(agent, replica, info.instance_id, spec.account)
    _observe_launch(attached, ObservationKind.LAUNCH_SUCCEEDED, attached.launched_at or now)
    return attached


def launch_failure(replica: ReplicaRecord) -> ec2.Ec2Error | None:
    """The error the launch that failed ``replica`` raised, to raise again (None when no launch failed it): a retried
    step answers as the attempt that failed the row did (its Lambda died after the row's write, before its answer).
    A capacity refusal is also recorded as its pool's observation, which that attempt may have died before writing
    (the same key as the first: the row's set-once ``terminated_at``)."""
    kind, _, code = (replica.launch_error or "").partition(":")
    if replica.status is not ReplicaStatus.FAILED or not kind:
        return None
    if refusal_kind(code or None):
        _observe_launch(replica, ObservationKind.LAUNCH_REFUSED, replica.terminated_at or replica.updated_at,
                        code=code)
    message = replica.error_message or f"replica {replica.replica_id} failed to launch"
    if kind == ec2.CapacityUnavailable.__name__:
        return ec2.CapacityUnavailable(message, code or None)
    return ec2.LaunchError(message)


def _lost_attach(agent: AgentRecord, replica: ReplicaRecord, instance_id: str, account) -> ReplicaRecord:
    """The row took another instance (a parallel attempt's, where EC2 did not honour the ClientToken) or was
    closed while this call launched (a workflow step that outlived its timeout): the instance launched here
    is terminated — never the row's own — and the row's instance adopted while the row is open."""
    current = replica_repo.get(replica.agent_id, replica.replica_id)
    if current is None or current.instance_id != instance_id:  # just launched: maybe not listed yet, ours
        ec2.terminate(agent.region, [instance_id], client_id=agent.client_id, account=account,
                      launched=(instance_id,))
    if current is not None and current.active and current.instance_id:
        return current
    raise ec2.LaunchError(f"replica {replica.replica_id} was closed while launching; its instance was not kept")


def create_unfinished(replica: ReplicaRecord, request_digest: str) -> bool:
    """A create of this standby repeated: still ``launching`` with no instance (a create that died before its
    launch), or the same request as the one that claimed the slot (``request_digest``: the client's retry of a
    create whose Lambda died after its launch, or whose answer was lost). A repeat finishes that create and answers
    it; any other create while the slot is held is a second standby (409)."""
    if replica.status is not ReplicaStatus.LAUNCHING:
        return False
    return replica.instance_id is None or (replica.request_digest is not None
                                           and replica.request_digest == request_digest)


def _launch_event_id(replica: ReplicaRecord) -> str:
    return f"replica:{replica.agent_id}:{replica.replica_id}"


def observe_launched(replica: ReplicaRecord) -> None:
    """The ``launch_succeeded`` observation of a launched replica, as its launch writes it (same key: written
    again, it changes nothing): for the step after the launch, so that a launch that died between its attach and
    its observation still has it (its retry finds the row launched and launches nothing)."""
    if replica.instance_id:
        _observe_launch(replica, ObservationKind.LAUNCH_SUCCEEDED, replica.launched_at or replica.updated_at)


def _observe_launch(replica: ReplicaRecord, kind: ObservationKind, at: datetime, *, code: str | None = None) -> None:
    """One observation per spot replica launch; the time is the replica's set-once stamp, so a retried
    step writes the same key. On-demand launches say nothing about a spot pool."""
    if replica.lifecycle != "spot" or not replica.pool_id:
        return
    observations.record(CapacityObservation(replica.pool_id, kind, at.timestamp(), code=code,
                                            source=replica.created_by),
                        event_id=_launch_event_id(replica), client_id=replica.client_id,
                        agent_id=replica.agent_id, instance_id=replica.instance_id)


def start_standby(agent: AgentRecord, now: datetime, *, replica_type: ReplicaType, created_by: str,
                  expires_at: datetime | None = None, pool_id: str | None = None,
                  interruption_id: str | None = None, why: str | None = None,
                  request_digest: str | None = None) -> ReplicaRecord:
    """Claim the agent's standby slot, write the replica and launch it.

    SlotTakenError when the agent already has one. A launch failure leaves a failed (capacity) or
    launching (transient) replica behind for the coordinator; it does not raise. ``why`` replaces the
    placement's own reason in the recorded decision. ``request_digest`` names the client request that creates it
    (``create_unfinished``).
    """
    where = place(agent, now, pool_id=pool_id)
    # Before anything is written: a 409 (type policy, quotas) leaves no row behind.
    quotas.check_launch(agent, parse_pool_id(where.pool_id)[0] if where.pool_id else agent.instance_type,
                        failover=replica_type is ReplicaType.TERMINATION, price=where.price)
    replica = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type=replica_type.value,
                                  lifecycle="spot", pool_id=where.pool_id, az=where.az, created_by=created_by,
                                  now=now, take_slot=True, expires_at=expires_at, hourly_cost=where.price,
                                  interruption_id=interruption_id, placement_reason=why or where.reason,
                                  request_digest=request_digest)
    record_creation(agent, replica)
    try:
        return launch(agent, replica, now)
    except ec2.Ec2Error as exc:
        return _launch_failed(agent, replica.replica_id, exc, now)


def _launch_failed(agent: AgentRecord, replica_id: str, exc: Exception, now: datetime) -> ReplicaRecord | None:
    """The ``standby_launch_failed`` event of a standby whose launch raised; a failed row's is written once, at its
    set-once close time (a retried caller finishing that failure writes the same key). Returns the row."""
    row = replica_repo.get(agent.agent_id, replica_id)
    closed = row.terminated_at if row is not None and row.status is ReplicaStatus.FAILED else None
    activity.record_event("standby_launch_failed", f"{replica_id}: {exc}", closed or now, severity="warning",
                          client_id=agent.client_id, agent_id=agent.agent_id,
                          once=f"standby_launch_failed:{replica_id}" if closed else None)
    return row


def finish_standby(agent: AgentRecord, replica: ReplicaRecord, now: datetime) -> ReplicaRecord | None:
    """A standby this caller's earlier attempt created (a retried step whose Lambda died): launched if still
    launching, as ``start_standby`` would have; if its launch failed, what followed that failure is finished once
    (the slot freed, the pool's refusal observed, the ``standby_launch_failed`` event)."""
    if replica.status is ReplicaStatus.LAUNCHING:
        record_creation(agent, replica)
        try:
            return launch(agent, replica, now)
        except ec2.Ec2Error as exc:
            return _launch_failed(agent, replica.replica_id, exc, now)
    failure = launch_failure(replica)
    if failure is not None:
        replica_repo.finish_closing(replica, now)
        return _launch_failed(agent, replica.replica_id, failure, now)
    return replica


def record_creation(agent: AgentRecord, replica: ReplicaRecord, *, read_first: bool = False) -> None:
    """The ``standby_created`` event and ``place_standby`` decision (#11) of a server-placed standby, at its creation
    time and keyed by its id: the first call writes them, and a repeat of a call that died between the slot's claim
    and them (``finish_launch`` of a standby still launching) writes what is missing, never twice.

    ``read_first``: for a caller that repeats this every time it retries the launch (the coordinator, every minute
    while the launch fails), where the records are nearly always there already: each is read (a small read) and
    only a missing one written, instead of two conditional writes that fail on every retry (and the placement's
    back-off reads behind the decision's)."""
    if replica.placement_reason is None:
        return  # an agent-launched standby, or a row from before the reason was kept: nothing to make up
    once = f"standby_created:{replica.replica_id}"
    if not (read_first and activity.event_recorded(replica.created_at, once)):
        activity.record_event("standby_created", f"{replica.replica_type} standby {replica.replica_id} in "
                              f"{replica.pool_id} ({replica.placement_reason})", replica.created_at,
                              client_id=agent.client_id, agent_id=agent.agent_id,
                              metadata={"replica_id": replica.replica_id}, once=once)
    if not (read_first and decisions.move_recorded(agent.agent_id, replica.replica_id, replica.created_at)):
        decisions.record_standby_placement(agent, replica.replica_id, replica.pool_id, replica.placement_reason,
                                           replica.created_at)


def ensure_standby(agent: AgentRecord, now: datetime, *, created_by: str,
                   interruption_id: str | None = None) -> ReplicaRecord | None:
    """The agent's standby, created when its slot is empty (safe under concurrent callers). A standby still launching
    is launched (or found: ``launch`` is idempotent on the replica), so a call repeated after one that died between
    the slot's claim and the launch finishes it rather than waiting for the coordinator."""
    if agent.current_replica_id:
        return finish_launch(agent, replica_repo.get(agent.agent_id, agent.current_replica_id), now)
    try:
        return start_standby(agent, now, replica_type=ReplicaType.MANUAL, created_by=created_by,
                             interruption_id=interruption_id)
    except SlotTakenError as exc:
        return replica_repo.get(agent.agent_id, exc.current_replica_id) if exc.current_replica_id else None


def finish_launch(agent: AgentRecord, replica: ReplicaRecord | None, now: datetime) -> ReplicaRecord | None:
    """``replica`` launched when it is still ``launching`` (transient EC2 trouble leaves it so, for the coordinator);
    a capacity refusal has marked it failed. Returns it as it is then."""
    if replica is None or replica.status is not ReplicaStatus.LAUNCHING:
        return replica
    if replica.instance_id is None:
        record_creation(agent, replica)
    try:
        return launch(agent, replica, now)
    except ec2.Ec2Error:
        return replica_repo.get(agent.agent_id, replica.replica_id)


def retire(replica: ReplicaRecord, status: ReplicaStatus, now: datetime, reason: str, *,
           observe: Callable[[ReplicaRecord], None] | None = None) -> ReplicaRecord:
    """Terminate the replica's instance (if any) and close the row with ``status``. An instance the product
    launched itself (``own_launch``) goes by its id even while EC2 does not list it yet (just launched).

    A replica already closed with ``status`` (its instance terminated before the row was written) is finished
    instead: whatever the close left undone when its Lambda died is done (``replica_repo.finish_closing``), and
    the audit event, keyed on the replica and its set-once close time, is written once; so is what ``observe``
    records of the closed row (keyed on it too). The agent's standby slot is released last: a close that died
    before the end leaves its closed replica holding the slot, where the replica coordinator's next run finds it and
    finishes it (before, the slot was released first, and a close that died after it left its instance row active,
    counted as running by every savings roll-up, and its event and observation never written)."""
    if replica.instance_id and replica.region and replica.status is not status:
        ec2.terminate(replica.region, [replica.instance_id], client_id=replica.client_id,
                      account=tenancy.for_replica(replica),
                      launched=(replica.instance_id,) if replica.own_launch else ())
    closed = replica_repo.transition(replica, status, now, release=False, error_message=reason[:500])
    activity.record_event(f"standby_{status.value}", f"{replica.replica_id}: {reason}", closed.terminated_at or now,
                          client_id=replica.client_id, agent_id=replica.agent_id,
                          instance_id=replica.instance_id, metadata={"replica_id": replica.replica_id},
                          once=f"standby_{status.value}:{replica.replica_id}")
    if observe is not None:
        observe(closed)
    replica_repo.release_slot(closed, now)
    return closed


ABANDONED = "not terminated by the product"  # the reason of a standby closed in an account the product lost


def abandon(replica: ReplicaRecord, account_id: str, now: datetime) -> ReplicaRecord:
    """Close a standby the product can no longer terminate (its account ``account_id`` is no longer bound to the
    client, e.g. after a forced unbinding whose retirement failed): ``failed``, the reason saying the product could
    not terminate it and the client must end instance X in account Y itself; an audit event and a notification,
    both written once (a retry, with the set-once close time, writes neither again). EC2 is not called: there is no
    role to call it with. Its slot and instance row are released as any close does, so the agent may move."""
    why = (f"{ABANDONED}: account {account_id} is no longer bound to the client, so the product cannot act there; "
           f"terminate instance {replica.instance_id} in account {account_id} yourself")
    closed = replica_repo.transition(replica, ReplicaStatus.FAILED, now, release=False, error_message=why[:500])
    at = closed.terminated_at or now
    activity.record_event("standby_abandoned", f"{replica.replica_id}: {why}", at, severity="warning",
                          client_id=replica.client_id, agent_id=replica.agent_id, instance_id=replica.instance_id,
                          metadata={"replica_id": replica.replica_id, "account_id": account_id},
                          once=f"standby_abandoned:{replica.replica_id}")
    activity.notify(replica.client_id, "standby_not_terminated",
                    f"Standby {replica.replica_id} was closed, but the product could not terminate its instance "
                    f"{replica.instance_id}: account {account_id} is no longer bound. Terminate it in that account "
                    "yourself, it is still running and billed", at, severity="warning", agent_id=replica.agent_id,
                    once=f"standby_abandoned:{replica.replica_id}")
    replica_repo.release_slot(closed, now)  # last, as ``retire`` does: a close that died is found by its slot
    return closed


def abandoned(replica: ReplicaRecord) -> bool:
    """Was the replica closed by ``abandon``?"""
    return replica.status is ReplicaStatus.FAILED and (replica.error_message or "").startswith(ABANDONED)
