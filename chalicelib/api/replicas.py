"""Standby replicas: the legacy replica routes, the SEF routes (never registered by the legacy server, live
here) and the client's mode/hand-off configuration, with the legacy defects fixed (replica polling, status
columns, DB-only replicas).

- EC2 work is real: a server-launched standby is started through ``chalicelib.replicas``; deleting or
  disabling terminates the instances. "Exactly one standby" is the agent's slot (conditional writes).
- A promotion is a manual signal through the sentinel: the failover workflow promotes the named replica,
  moves the traffic, retires the old instance per auto-terminate and starts the next standby.
- Auto-switch and manual-replica are mutually exclusive; config writes are conditional on
  ``config_version`` (a race answers 409) and bump it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any


from components.errors import ValidationError
from components.instance_types import InvalidTypeDeclarationError
from components.pool_id import make_pool_id
from components.replica_coordinator import (
    IllegalReplicaTransitionError,
    ReplicaStatus,
    ReplicaType,
    check_transition,
    choose_pool,
)
from components.sentinel import Signal, SignalKind, SignalSource, health_score

from chalicelib import catalogue, command_queue, decisions, quotas, replicas, sentinel, tenancy
from chalicelib.api.common import ApiBlueprint, client_request, noted, ok, page_params, utcnow
from chalicelib.api.inputs import bool_param
from chalicelib.api.views import config_view, iso, replica_view
from chalicelib.clock import MAX_REPORT_AGE, placed
from chalicelib.aws import ec2
from chalicelib.errors import ConflictError, InvalidInputError, ServiceUnavailableError
from chalicelib.observability import logger
from chalicelib.repositories import activity, agents, interruptions, observations, pools
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.replicas import ReplicaRecord, SlotTakenError
from chalicelib.schemas.replicas import (
    AgentConfigRequest,
    AttachReplicaRequest,
    CreateReplicaRequest,
    PromoteRequest,
    ReplicaStatusRequest,
    SyncStatusRequest,
)

bp = ApiBlueprint(__name__)

PRICING_FRESH_FOR = timedelta(hours=1)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _request():
    return bp.current_request


@contextmanager
def ec2_errors() -> Iterator[None]:
    """EC2 trouble is ours, not the client's: 503 with Retry-After instead of a 500. An ownership, policy or
    quota refusal is the client's: it passes through as its 409."""
    try:
        yield
    except ec2.Ec2Error as exc:
        if getattr(exc, "conflict_code", None) or isinstance(exc, ConflictError):
            raise
        logger.warning("EC2 call failed", extra={"error": str(exc)})
        raise ServiceUnavailableError("EC2 did not answer as expected, retry shortly", code="ec2_unavailable",
                                      headers={"Retry-After": "5"}) from exc


def _illegal(exc: IllegalReplicaTransitionError) -> ConflictError:
    return ConflictError(str(exc), field="status", code="illegal_transition")


def _check(current: ReplicaStatus, wanted: ReplicaStatus) -> None:
    try:
        check_transition(current, wanted)
    except IllegalReplicaTransitionError as exc:
        raise _illegal(exc) from exc


def _transition(replica: ReplicaRecord, wanted: ReplicaStatus, now: datetime, **fields: Any) -> ReplicaRecord:
    try:
        return replica_repo.transition(replica, wanted, now, **fields)
    except IllegalReplicaTransitionError as exc:
        raise _illegal(exc) from exc


def _reported(at: datetime, earliest: datetime, now: datetime) -> datetime:
    """A time the agent reports of its standby, within the standby's life as the server knows it (``clock.placed``:
    from ``earliest`` to the receive time); one outside it is the receive time (a lone time beyond a bound is moved
    as ``placed`` moves a whole report: a report follows its event), never refused."""
    return placed({"at": at}, min(earliest, now), now)[0]["at"]


def _active(replica: ReplicaRecord) -> ReplicaRecord:
    if not replica.active:
        raise ConflictError(f"replica is {replica.status.value}", field="replica_id", code="replica_not_active")
    return replica


def _owned(client, agent_id: str, replica_id: str) -> tuple[AgentRecord, ReplicaRecord]:
    agent = agents.require(client.client_id, agent_id)
    return agent, replica_repo.require(agent, replica_id)


def _instance_free(agent: AgentRecord, instance_id: str, replica_id: str | None) -> None:
    """409 (before anything is written) when the instance is already someone's primary or another standby."""
    if instance_id == agent.instance_id:
        raise InvalidInputError("that is the agent's primary instance", field="instance_id")
    row = agents.instance_row(instance_id)
    if row is None:
        return
    mine = (replica_id is not None and row.client_id == agent.client_id and row.agent_id == agent.agent_id
            and row.replica_id == replica_id)
    if not mine:
        raise ConflictError("instance_id belongs to another agent or replica", field="instance_id",
                            code="instance_conflict")


def _client_instance(agent: AgentRecord, instance_id: str) -> ec2.InstanceInfo:
    """An instance the agent launched itself: it must exist in the client's account (and region), and must not
    carry another client's or another stage's tags. It is recorded, never terminated by us (not ours).

    A verified agent's instances are proven, never taken on trust: only one the product launched for the client
    may be recorded as its standby. Anything else in a shared account (an operator's bastion) would become the
    agent's primary on promotion, and the next failover would retire it."""
    if not agent.region:
        raise ConflictError("the agent has not registered its region yet", field="instance_id")
    with ec2_errors():
        info = ec2.describe(agent.region, [instance_id], account=tenancy.for_agent(agent)).get(instance_id)
    if info is None or info.state in ("shutting-down", "terminated"):
        raise ConflictError(f"instance {instance_id} is not a live instance of the client's account in {agent.region}",
                            field="instance_id", code="not_owned")
    tagged_client = info.tags.get(ec2.TAG_CLIENT)
    if (tagged_client and tagged_client != agent.client_id) or (
            info.tags.get(ec2.TAG_MANAGED_BY) and info.tags.get(ec2.TAG_STAGE) not in (None, ec2.stage())):
        raise ConflictError(f"instance {instance_id} belongs to another tenant or stage", field="instance_id",
                            code="not_owned")
    if agent.account_id is not None and not ec2.owned_by(info, agent.client_id):
        raise ConflictError(f"instance {instance_id} was not launched by the product for this client: a verified "
                            "agent's standby is one the product launches", field="instance_id", code="not_owned")
    return info


def _price(pool_id: str | None, client_id: str) -> Decimal | None:
    """The pool's price as the client sees it (``PoolPrice.seen_by``): never another tenant's reported price."""
    if not pool_id:
        return None
    known = pools.latest_prices([pool_id]).get(pool_id)
    return None if known is None else known.seen_by(client_id).price


# --- legacy replica routes ---------------------------------------------------------------------

@bp.route("/api/agents/{agent_id}/replica-config", methods=["GET"], response="ReplicaConfigReply")
def replica_config(agent_id):
    """Whether a standby is kept, how many replicas are active, and the modes."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id)
    active = replica_repo.open_for_agent(agent.client_id, agent.agent_id)
    return ok({"agent_id": agent.agent_id, "enabled": agent.manual_replica, "count": len(active),
               "manual_replica_enabled": agent.manual_replica,
               "auto_switch_enabled": bool(agent.config.get("auto_switch_enabled")),
               "auto_terminate_enabled": bool(agent.config.get("auto_terminate_enabled")),
               "current_replica_id": agent.current_replica_id})


def _server_pool(agent: AgentRecord, body: CreateReplicaRequest, now: datetime) -> str | None:
    """The pool for a server-launched standby; None lets ``replicas.place`` choose."""
    try:
        excluded = tuple(make_pool_id(t, zone) for zone in body.exclude_zones for t in agent.runnable_types)
    except ValidationError as exc:
        raise InvalidInputError(exc.message, field="exclude_zones") from exc
    if body.pool_id:
        replicas.place(agent, now, exclude=excluded, pool_id=body.pool_id)  # 400: wrong type/region/own pool
        price = _price(body.pool_id, agent.client_id)
        if body.max_hourly_cost is not None and price is not None and price > Decimal(str(body.max_hourly_cost)):
            raise ConflictError(f"{body.pool_id} costs {price} $/h, over max_hourly_cost", field="max_hourly_cost",
                                code="no_pool")
        return body.pool_id
    if body.max_hourly_cost is not None:
        options, _ = decisions.market(agent, now)
        affordable = [o for o in options if o.price is not None and o.price <= body.max_hourly_cost]
        best = choose_pool(affordable, {agent.spot_pool_id, *excluded} - {None},
                           risk_ceiling=replicas.RISK_CEILING,
                           blocked=observations.backoff([o.pool_id for o in affordable], now,
                                                        viewer=agent.client_id))
        if best is None:
            raise ConflictError("no other pool with a fresh price at most max_hourly_cost (outside capacity "
                                "back-off)", field="max_hourly_cost",
                                code="no_pool")
        return best.pool_id
    if excluded:
        return replicas.place(agent, now, exclude=excluded).pool_id
    return None


def _apply_tags(replica: ReplicaRecord, tags: dict[str, str] | None) -> bool:
    """The client's tags on the standby's instance (ours stay: the schema refuses our keys)."""
    if not tags or not replica.instance_id or not replica.region:
        return False
    try:
        ec2.tag(replica.region, replica.instance_id, tags, client_id=replica.client_id,
                account=tenancy.for_replica(replica))
    except ec2.Ec2Error as exc:
        logger.warning("tagging the standby failed", extra={"replica_id": replica.replica_id, "error": str(exc)})
        return False
    return True


def _agent_launched(agent: AgentRecord, body: CreateReplicaRequest, now: datetime) -> ReplicaRecord:
    """Legacy ``create_replica`` path: the agent launched the instance; record it in the standby slot."""
    if body.parent_instance_id and body.parent_instance_id != agent.instance_id:
        raise InvalidInputError("parent_instance_id is not the agent's primary", field="parent_instance_id")
    _instance_free(agent, body.instance_id, None)
    info = _client_instance(agent, body.instance_id)
    pool_id, az = body.pool_id, None
    if pool_id:
        az = replicas.place(agent, now, pool_id=pool_id).az
    else:
        if info.az:
            az = info.az
            pool_id = make_pool_id(info.instance_type or agent.instance_type, az)
            if pool_id == agent.spot_pool_id:
                raise InvalidInputError("a standby must be in a different pool than its primary", field="instance_id")
    replica = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now),
                                  replica_type=ReplicaType.MANUAL.value, lifecycle="spot", pool_id=pool_id, az=az,
                                  created_by="agent", now=now, take_slot=True, hourly_cost=_price(pool_id, agent.client_id))
    try:
        replica = replica_repo.attach_instance(replica, instance_id=body.instance_id, now=now)
    except ConflictError:
        # Lost a race for the instance after the checks: close the row again so the slot is free.
        replica_repo.transition(replica, ReplicaStatus.FAILED, now, error_message="instance_id already taken")
        raise
    wanted = ReplicaStatus(body.status or "launching")
    if wanted is not ReplicaStatus.LAUNCHING:
        replica = _transition(replica, wanted, now)
    activity.record_event("standby_created", f"agent-launched standby {replica.replica_id} ({replica.instance_id})",
                          now, client_id=agent.client_id, agent_id=agent.agent_id, instance_id=replica.instance_id,
                          metadata={"replica_id": replica.replica_id})
    return replica


@bp.route("/api/agents/{agent_id}/replicas", methods=["POST"], response="CreatedReplicaReply")
def create_replica(agent_id):
    """The manual-mode standby: launched by the server, or recorded when the agent launched it. 201. Sent again while
    the client's server-launched standby's create is unfinished (its Lambda died between the slot's claim and the
    launch's observation, or its answer was lost: ``replicas.create_unfinished``), it finishes that create and answers
    it; otherwise a second standby is 409 ``replica_exists``."""
    client, body = client_request(_request(), CreateReplicaRequest)
    agent = agents.require(client.client_id, agent_id)
    if not agent.manual_replica:
        raise ConflictError("manual-replica mode is off for this agent", code="manual_mode_required")
    now = utcnow()
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()[:32]
    if agent.current_replica_id:
        held = replica_repo.get(agent.agent_id, agent.current_replica_id)
        if body.instance_id or held is None or held.created_by != "client" \
                or not replicas.create_unfinished(held, digest):
            raise SlotTakenError(agent.current_replica_id)
        # the repeat of the client's create whose Lambda died: its event, decision, launch (idempotent on the
        # replica) and the launch's observation, each written once
        with ec2_errors():
            replica = replicas.finish_launch(agent, held, now)
        return ok({"success": True, **replica_view(replica), "tags_applied": _apply_tags(replica, body.tags)},
                  status=201)
    if body.instance_id:
        replica = _agent_launched(agent, body, now)
        tagged = False
    else:
        pool_id = _server_pool(agent, body, now)
        with ec2_errors():
            replica = replicas.start_standby(agent, now, replica_type=ReplicaType.MANUAL, created_by="client",
                                             pool_id=pool_id, request_digest=digest)
        tagged = _apply_tags(replica, body.tags)
    return ok({"success": True, **replica_view(replica), "tags_applied": tagged}, status=201)


def _statuses(raw: str | None) -> set[ReplicaStatus] | None:
    if raw is None:
        return None
    try:
        return {ReplicaStatus(part.strip()) for part in raw.split(",") if part.strip()} or None
    except ValueError:
        allowed = ", ".join(s.value for s in ReplicaStatus)
        raise InvalidInputError(f"status must be among {allowed}", field="status") from None


def _offered(replica: ReplicaRecord) -> bool:
    """Kept in a ``status=`` listing: a ``launching`` row only while it waits for an agent's instance (no instance
    yet, and no failover's replacement, which its workflow launches)."""
    return not (replica.status is ReplicaStatus.LAUNCHING and (replica.instance_id or replica.failover_replacement))


@bp.route("/api/agents/{agent_id}/replicas", methods=["GET"], response="ReplicasReply")
def list_replicas(agent_id):
    """The agent's replicas in id order (ids start with their creation time), flat (top-level ``id``,
    ``pool_id``, ``az``); paginated (``limit``, ``next_token``).

    ``include_terminated`` (default false) adds closed ones; ``status`` (comma-separated) filters and
    wins over it. ``status=launching`` is what legacy agents poll to launch instances: it lists only
    replicas still waiting for an instance, never one the server (or an agent) already launched, and never a
    failover's replacement (``ReplicaRecord.failover_replacement``): its workflow launches and retries it, and the
    agent polling runs on the very host being lost (a v4 agent launched a second replacement for it).

    A standby the server is still launching is offered (its RunInstances may fail; the agent's launch is then the
    hand-off): when the server's launch attaches first, the agent's PUT of its own instance takes the row over
    (``attach_replica``), so one instance is left running either way.
    """
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id)
    params = _request().query_params or {}
    include_terminated = bool_param(params, "include_terminated", default=False)
    wanted = _statuses(params.get("status"))
    limit, next_token = page_params(_request())
    if next_token is not None and not _TOKEN.fullmatch(next_token):
        raise InvalidInputError("next_token is not valid", field="next_token")
    if wanted is not None:
        statuses = tuple(sorted(s.value for s in wanted))
        keep = _offered
    else:
        statuses, keep = (None if include_terminated else replica_repo.ACTIVE_STATUSES), None
    page, more = replica_repo.listing_for_agent(agent.client_id, agent.agent_id, after=next_token, limit=limit,
                                                statuses=statuses, keep=keep)
    return ok({"replicas": [replica_view(r) for r in page],
               "next_token": page[-1].replica_id if more else None})


def _promote(agent: AgentRecord, replica: ReplicaRecord, now: datetime):
    """A manual signal through the sentinel: the failover workflow promotes ``replica``. 202."""
    _active(replica)
    if not replica.instance_id:
        raise ConflictError("the replica has no instance yet", field="replica_id", code="replica_not_launched")
    if not agent.instance_id:
        raise ConflictError("the agent has no primary instance", code="no_instance")
    result = sentinel.handle(Signal(kind=SignalKind.MANUAL, instance_id=agent.instance_id, detected_at=now,
                                    source=SignalSource.CLIENT, region=agent.region), now,
                             replica_id=replica.replica_id, on_behalf_of=agent)
    if result["action"] == "ignored":
        raise ConflictError(f"promotion not started: {result.get('reason')}", code="promotion_ignored")
    if result["action"] == "duplicate":
        running = interruptions.get(agent.client_id, result["interruption_id"])
        if running is not None and running.replica_id and running.replica_id != replica.replica_id:
            raise ConflictError(f"a promotion of {running.replica_id} is already under way",
                                code="promotion_in_progress")
    activity.record_event("manual_promotion", f"promotion of {replica.replica_id} requested "
                          f"({result['action']})", now, client_id=agent.client_id, agent_id=agent.agent_id,
                          instance_id=replica.instance_id, metadata={"replica_id": replica.replica_id,
                                                                     "interruption_id": result.get("interruption_id")})
    return ok({"success": True, "action": result["action"], "interruption_id": result.get("interruption_id"),
               "replica_id": replica.replica_id,
               "new_instance_id": replica.instance_id, "old_instance_id": agent.instance_id}, status=202)


@bp.route("/api/agents/{agent_id}/replicas/{replica_id}/promote", methods=["POST"], response="PromotionReply", status=202)
def promote_replica(agent_id, replica_id):
    """Switch to the replica (the legacy options are accepted; auto-terminate decides the old primary)."""
    client, _body = client_request(_request(), PromoteRequest)
    agent, replica = _owned(client, agent_id, replica_id)
    return _promote(agent, replica, utcnow())


@bp.route("/api/agents/{agent_id}/replicas/{replica_id}", methods=["DELETE"], response="DeletedReplicaReply")
def delete_replica(agent_id, replica_id):
    """Terminate the replica's instance for real and close it (idempotent once terminated). EC2 first: a failure
    (the account reachable) leaves the replica as it was, so a retry finishes.

    A standby whose account is no longer bound to the client (``tenancy.unreachable_account``: a forced unbinding
    whose retirement failed) cannot be terminated by the product any more: it is closed ``failed`` instead, the
    ``message`` (and a notification, and an audit event) telling the client to terminate instance X in account Y
    itself. Otherwise it would answer 409 ``account_not_bound`` for ever and block its agent's account move."""
    client, _ = client_request(_request())
    agent, replica = _owned(client, agent_id, replica_id)
    unreachable = tenancy.unreachable_account(replica) if replica.instance_id else None
    if unreachable and (replica.active or replicas.abandoned(replica)):
        replica = replicas.abandon(replica, unreachable, utcnow())
        return ok({"success": True, "replica_id": replica.replica_id, "status": replica.status.value,
                   "instance_id": replica.instance_id, "message": replica.error_message})
    if replica.status is not ReplicaStatus.TERMINATED:
        _active(replica)
    with ec2_errors():  # terminated already: finishes what a delete that died after the row's write left undone
        replica = replicas.retire(replica, ReplicaStatus.TERMINATED, utcnow(), "deleted by the client")
    return ok({"success": True, "replica_id": replica.replica_id, "status": replica.status.value,
               "instance_id": replica.instance_id})


def _take_over(replica: ReplicaRecord, instance_id: str, now: datetime) -> ReplicaRecord:
    """The agent's instance replaces the product's own launch on ``replica`` (compare-and-set on the row's
    instance: ``replica_repo.take_over_instance``), then the product's instance is terminated, as
    ``replicas._lost_attach`` does in the other order (ours, tagged: IAM allows it). A termination that fails is
    logged, not answered: the row no longer points at that instance and its instance row is inactive, so the
    cleanup's orphan sweep ends it."""
    ours, account = replica.instance_id, tenancy.for_replica(replica)  # before the write: a refusal changes nothing
    taken = replica_repo.take_over_instance(replica, instance_id=instance_id, now=now)
    try:
        ec2.terminate(replica.region, [ours], client_id=replica.client_id, account=account, launched=(ours,))
    except ec2.Ec2Error as exc:
        logger.warning("terminating the replaced standby instance failed; the cleanup ends it",
                       extra={"replica_id": replica.replica_id, "instance_id": ours, "error": str(exc)})
    activity.record_event("standby_instance_replaced", f"{replica.replica_id}: the agent's instance {instance_id} "
                          f"replaced the product's {ours} (both launched for it; ours terminated)", now,
                          client_id=replica.client_id, agent_id=replica.agent_id, instance_id=instance_id,
                          metadata={"replica_id": replica.replica_id, "replaced_instance_id": ours},
                          once=f"standby_instance_replaced:{replica.replica_id}:{ours}")
    return taken


def _take_over_once_more(replica: ReplicaRecord, instance_id: str, now: datetime) -> ReplicaRecord:
    """``_take_over``, and once more on the row read again when its compare-and-set lost: the row the write found
    may hold the agent's instance already (the same PUT, re-sent by an agent that retries a timed-out call, won the
    race: the attach that follows is idempotent), or another instance of ours it may take over. Only a row that
    closed or holds another instance of the agent's is the conflict (nothing written)."""
    try:
        return _take_over(replica, instance_id, now)
    except ConflictError as exc:
        if exc.code != "replica_instance_conflict":
            raise
        fresh = replica_repo.get(replica.agent_id, replica.replica_id)
        if fresh is not None and fresh.active and fresh.instance_id == instance_id:
            return fresh
        if fresh is None or not replica_repo.may_take_over(fresh):
            raise
        return _take_over(fresh, instance_id, now)


def _unowned_launch(agent: AgentRecord, replica: ReplicaRecord, instance_id: str) -> None:
    """An agent reports the instance it launched for a standby that closed meanwhile (the client deleted it, its mode
    went off, it expired; a legacy agent launches for every row its poll offered): the row cannot take it (409) and
    the product cannot terminate an instance it did not launch (untagged), so the client is told, once per standby
    and instance (keyed on the row's set-once close time): it runs, billed, until the client ends it.

    Only of an instance the PUT's own checks would take (``_instance_free``, ``_client_instance``): a live instance of
    the client's account that no one's row holds and no other client's tag names. Without them a PUT of any id wrote
    the warning (security walk 21): a made-up instance "still running and billed", or another tenant's primary or
    standby in a shared account the client was told to terminate. EC2 trouble is the route's 503 (a retry tells)."""
    at = replica.terminated_at or replica.updated_at
    if at is None:
        return
    try:
        _instance_free(agent, instance_id, None)
        _client_instance(agent, instance_id)
    except (ConflictError, InvalidInputError):
        return
    except ec2.Ec2Error as exc:
        if not getattr(exc, "conflict_code", None):
            raise
        return
    activity.notify(agent.client_id, "standby_instance_unowned",
                    f"{agent.logical_agent_id} launched instance {instance_id} for standby {replica.replica_id}, which "
                    f"was {replica.status.value} before the instance was reported: the product does not manage it. "
                    "Terminate it if you do not need it; it is still running and billed", at, severity="warning",
                    agent_id=agent.agent_id, once=f"standby_instance_unowned:{replica.replica_id}:{instance_id}")


@bp.route("/api/agents/{agent_id}/replicas/{replica_id}", methods=["PUT"], response="AttachedReplicaReply")
def attach_replica(agent_id, replica_id):
    """The agent launched the replica's instance: attach its id, then ``syncing`` (default) or ``ready``.

    A standby holding another instance is 409 ``replica_instance_conflict``, but for one the product launched
    itself while the agent launched its own (a legacy agent's poll offered the row while the product's launch of it
    was in flight, and that launch attached first): while that standby is not ready yet and no failover's
    replacement (``replica_repo.may_take_over``), the agent's instance, once checked as any other, takes the row
    over and the product's own is terminated (``_take_over``). Otherwise the agent's instance would run on in the
    client's account, owned by nothing: no tag of ours, so no cleanup of ours ends it."""
    client, body = client_request(_request(), AttachReplicaRequest)
    agent, replica = _owned(client, agent_id, replica_id)
    if not replica.active and replica.instance_id != body.instance_id:
        _unowned_launch(agent, replica, body.instance_id)
    _active(replica)
    wanted = ReplicaStatus(body.status)
    _check(replica.status, wanted)
    now = utcnow()
    if replica.instance_id != body.instance_id:
        if replica.instance_id and not replica_repo.may_take_over(replica):
            raise ConflictError("replica already has another instance", field="instance_id",
                                code="replica_instance_conflict")
        _instance_free(agent, body.instance_id, replica.replica_id)
        _client_instance(agent, body.instance_id)
        if replica.instance_id:
            replica = _take_over_once_more(replica, body.instance_id, now)
    replica = replica_repo.attach_instance(replica, instance_id=body.instance_id, now=now)
    # the launch is past by the time it is reported, and after the product asked for the standby: a later time would
    # keep a vanished standby "just launched", an earlier one (a clock behind) end the coordinator's listing grace at
    # once. A standby the agent launched on its own (legacy create_replica) is recorded after its launch: within the
    # day a report may be late.
    earliest = replica.created_at - (MAX_REPORT_AGE if replica.created_by == "agent" else timedelta(0))
    fields = {"launched_at": _reported(body.launched_at, earliest, now)} if body.launched_at else {}
    replica = _transition(replica, wanted, now, **fields)
    return ok({"success": True, "replica_id": replica.replica_id, "instance_id": replica.instance_id,
               "status": replica.status.value, "replica": replica_view(replica),
               "warnings": noted(body.warnings, f"replica {replica.replica_id} attach report", now,
                                 client_id=client.client_id, agent_id=agent.agent_id,
                                 instance_id=replica.instance_id)})


@bp.route("/api/agents/{agent_id}/replicas/{replica_id}/status", methods=["POST"], response="ReplicaReportReply")
def replica_status(agent_id, replica_id):
    """Lifecycle report: syncing, ready (``ready_at`` = sync_completed_at or now), failed or terminated (the
    instance terminated, the row closed). A closed replica reported in its own status again is answered 200 and
    unchanged (agent-backend.py confirms each terminated row it lists)."""
    client, body = client_request(_request(), ReplicaStatusRequest)
    _, replica = _owned(client, agent_id, replica_id)
    wanted = ReplicaStatus(body.status)
    now = utcnow()
    if replica.status is wanted and not replica.active:
        return ok({"success": True, "replica_id": replica.replica_id, "status": replica.status.value})
    _active(replica)
    if wanted in (ReplicaStatus.FAILED, ReplicaStatus.TERMINATED):
        with ec2_errors():
            replica = replicas.retire(replica, wanted, now,
                                      body.error_message or f"reported {wanted.value} by the agent")
    else:
        fields: dict[str, Any] = {}
        if wanted is ReplicaStatus.READY:
            fields["ready_at"] = _reported(body.sync_completed_at or now, replica.launched_at or replica.created_at,
                                           now)
            fields["sync_status"] = "synced"
        else:
            fields["sync_status"] = "syncing"
        if body.error_message:
            fields["error_message"] = body.error_message
        replica = _transition(replica, wanted, now, **fields)
    return ok({"success": True, "replica_id": replica.replica_id, "status": replica.status.value,
               "replica": replica_view(replica),
               "warnings": noted(body.warnings, f"replica {replica.replica_id} status report", now,
                                 client_id=client.client_id, agent_id=agent_id)})


@bp.route("/api/agents/{agent_id}/replicas/{replica_id}/sync-status", methods=["POST"], response="ReplicaReportReply")
def replica_sync_status(agent_id, replica_id):
    """Sync progress; a report means the replica is at least syncing, progress ≥ 100 makes it ready."""
    client, body = client_request(_request(), SyncStatusRequest)
    _, replica = _owned(client, agent_id, replica_id)
    _active(replica)
    progress = body.state_transfer_progress
    if progress is not None and progress >= 100:
        wanted = ReplicaStatus.READY
    elif replica.status is ReplicaStatus.LAUNCHING:
        wanted = ReplicaStatus.SYNCING
    else:
        wanted = replica.status
    fields: dict[str, Any] = {"sync_status": body.sync_status}
    if body.sync_latency_ms is not None:
        fields["sync_latency_ms"] = body.sync_latency_ms
    if progress is not None:
        fields["state_transfer_progress"] = progress
    now = utcnow()
    replica = _transition(replica, wanted, now, **fields)
    return ok({"success": True, "replica_id": replica.replica_id, "status": replica.status.value,
               "replica": replica_view(replica),
               "warnings": noted(body.warnings, f"replica {replica.replica_id} sync report", now,
                                 client_id=client.client_id, agent_id=agent_id)})


# --- configuration and the SEF routes -----------------------------------------------------------

REPEAT_WINDOW = timedelta(minutes=15)  # how late the same request may come again to finish what its first run left


def _retire_manual(agent: AgentRecord, now: datetime, reason: str, *, repeat: bool = False) -> list[str]:
    """Terminate the manual-mode standbys (not a pre-warmed or emergency replica of a failover in flight).

    ``repeat``: the request found the mode already off, so it may be the same request again after a first run that
    died while closing them (its status written, its slot, instance row or audit event not yet): the manual standbys
    closed since the mode went off (``manual_replica_off_at``, within ``REPEAT_WINDOW``) are closed again, which
    finishes them (``replicas.retire``), and named in the answer as the first run would have."""
    found = replica_repo.for_agent(agent.agent_id, include_final=False)
    off = agent.manual_replica_off_at
    if repeat and off is not None and now - off <= REPEAT_WINDOW:
        found += replica_repo.closed_since(agent.agent_id, ReplicaStatus.TERMINATED, off)
    done = []
    with ec2_errors():
        for replica in found:
            if replica.replica_type == ReplicaType.MANUAL.value:
                replicas.retire(replica, ReplicaStatus.TERMINATED, now, reason)
                done.append(replica.replica_id)
    return done


def _check_handover(agent: AgentRecord, changes: dict[str, Any]) -> None:
    merged = {**agent.config, **changes}
    kind = merged.get("handover") or "none"
    if kind == "eip" and not merged.get("eip_allocation_id"):
        raise InvalidInputError("handover eip needs an eip_allocation_id", field="eip_allocation_id")
    if kind == "target-group":
        arn = merged.get("target_group_arn")
        if not arn:
            raise InvalidInputError("handover target-group needs a target_group_arn", field="target_group_arn")
        if agent.region and arn.split(":")[3] != agent.region:
            raise InvalidInputError(f"the target group must be in {agent.region}", field="target_group_arn")
    if not agent.region:
        return
    with ec2_errors():  # the resource must be the client's, in its account and region (409 not_owned otherwise)
        account = tenancy.for_agent(agent)
        own = tuple(i for i in (tenancy.not_anothers(agent, agent.instance_id),) if i)
        if kind == "eip":
            ec2.check_eip(agent.region, merged["eip_allocation_id"], client_id=agent.client_id, account=account,
                          own=own, known=tenancy.registered_to(agent.client_id))
        elif kind == "target-group":
            ec2.check_target_group(agent.region, merged["target_group_arn"], client_id=agent.client_id,
                                   account=account, own=own, known=tenancy.registered_to(agent.client_id))


def _type_changes(agent: AgentRecord, changes: dict[str, Any]) -> dict[str, Any]:
    """The declaration after this change (list and requirements merged with the stored ones), resolved."""
    merged = {name: changes.get(name, agent.config.get(name)) for name in ("instance_types", "type_requirements")}
    if not agent.instance_type:
        raise ConflictError("the agent has not registered an instance type yet", field="instance_types")
    try:
        return catalogue.type_config(agent.instance_type, merged["instance_types"], merged["type_requirements"])
    except InvalidTypeDeclarationError as exc:  # this body names the requirements type_requirements
        raise InvalidInputError(exc.message, field=(exc.field or "").replace("requirements", "type_requirements",
                                                                             1)) from exc


@bp.route("/api/client/agents/{agent_id}/config", methods=["POST"], response="ClientAgentConfigReply")
def update_config(agent_id):
    """Modes (auto-switch ⊕ manual-replica), auto-terminate and its wait, traffic hand-off, thresholds (the
    legacy dashboard's camelCase body with the wait in minutes too)."""
    client, body = client_request(_request(), AgentConfigRequest)
    agent = agents.require(client.client_id, agent_id)
    updated, terminated, _ = apply_config(agent, body.changes(), utcnow())
    return ok({**config_view(updated), "terminated_replicas": terminated})


def apply_config(agent: AgentRecord, changes: dict[str, Any], now: datetime) -> tuple[AgentRecord, list[str], dict]:
    """Write a config change the way every client route does: auto-switch on turns manual-replica off and
    the other way round, the hand-off resource and instance types are checked, turning manual-replica off
    terminates its standbys (EC2 included), disabling the agent cancels its pending commands (it is delivered
    none: they would wait for ever). Returns the agent, the terminated replicas and the changes.

    The audit event is keyed on the version the change made and its write time (both written with it): the
    same request again after a Lambda that died past the config write changes nothing, and writes that event
    (and cancels what the disabling left pending, retires the standbys manual-replica mode left running) then,
    once; a repeat that lost nothing adds nothing."""
    changes = dict(changes)
    if changes.get("auto_switch_enabled"):
        changes["manual_replica_enabled"] = False
    if changes.get("manual_replica_enabled"):
        changes["auto_switch_enabled"] = False
    if changes.keys() & {"handover", "eip_allocation_id", "target_group_arn"}:
        _check_handover(agent, changes)
    if changes.keys() & {"instance_types", "type_requirements"}:
        changes |= _type_changes(agent, changes)
        quotas.check_types(agent.client_id, changes.get("allowed_instance_types") or ())
    updated = agents.update_config(agent, changes, now, client_change=True)
    at = now  # the change's time: its audit event's
    manual_off = agent.manual_replica and not updated.manual_replica
    disabled = agent.config.get("enabled", True) and not updated.config.get("enabled", True)
    repeat = updated.config_version == agent.config_version
    if repeat:
        # The config it holds already: nothing written. When that config is a client change's (its version is the
        # last one a config route made), this may be that request again, its first run dead after the write.
        if updated.config_changed_version != updated.config_version or updated.config_changed_at is None:
            return updated, [], changes  # made by something else (a registration, a mode route)
        at = updated.config_changed_at
        manual_off = changes.get("manual_replica_enabled") is False  # its standbys would otherwise run on
        disabled = changes.get("enabled") is False
    terminated = _retire_manual(updated, now, "manual-replica mode turned off", repeat=repeat) if manual_off else []
    if disabled:
        command_queue.cancel_pending(updated, at, "the agent was disabled before it picked this command up",
                                     repeat=repeat)
    activity.record_event("agent_config", f"{agent.logical_agent_id}: {', '.join(sorted(changes))} changed", at,
                          client_id=agent.client_id, agent_id=agent.agent_id,
                          metadata={"changes": changes, "config_version": updated.config_version},
                          once=f"agent_config:{agent.agent_id}:{updated.config_version}")
    return updated, terminated, changes


@bp.route("/api/agents/{agent_id}/manual-replica/enable", methods=["POST"], response="ManualReplicaEnableReply")
def manual_replica_enable(agent_id):
    """Manual-replica mode on (auto-switch off) and its standby started now."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id)
    now = utcnow()
    if not agent.manual_replica or agent.config.get("auto_switch_enabled"):
        agent = agents.update_config(agent, {"manual_replica_enabled": True, "auto_switch_enabled": False}, now)
    if agent.manual_replica_since is not None:
        # Keyed by when the mode went on: a repeat of a call that died after the config write writes it, and
        # every other repeat finds it written (one conditional write, nothing added).
        since = agent.manual_replica_since
        activity.record_event("manual_replica_enabled", f"{agent.logical_agent_id}: manual-replica mode on", since,
                              client_id=agent.client_id, agent_id=agent.agent_id,
                              once=f"manual_replica_enabled:{agent.agent_id}:{since.isoformat()}")
    message = None
    try:
        with ec2_errors():
            standby = replicas.ensure_standby(agent, now, created_by="client")
    except (ConflictError, ServiceUnavailableError) as exc:
        standby, message = None, f"standby not started yet ({exc.message}); the coordinator retries every minute"
    return ok({"success": True, "manual_replica_enabled": True, "auto_switch_enabled": False,
               "config_version": agent.config_version, "replica": replica_view(standby) if standby else None,
               "message": message})


@bp.route("/api/agents/{agent_id}/manual-replica/disable", methods=["POST"], response="ManualReplicaDisableReply")
def manual_replica_disable(agent_id):
    """Manual-replica mode off; its standbys are terminated (EC2 included)."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id)
    now = utcnow()
    repeat = not agent.manual_replica
    if not repeat:
        agent = agents.update_config(agent, {"manual_replica_enabled": False}, now)
    if agent.manual_replica_off_at is not None:
        # Keyed by when the mode went off, as the enable's by when it went on: a repeat of a call that died after
        # the config write writes it, every other repeat finds it written (one conditional write, nothing added).
        off = agent.manual_replica_off_at
        activity.record_event("manual_replica_disabled", f"{agent.logical_agent_id}: manual-replica mode off", off,
                              client_id=agent.client_id, agent_id=agent.agent_id,
                              once=f"manual_replica_disabled:{agent.agent_id}:{off.isoformat()}")
    terminated = _retire_manual(agent, now, "manual-replica mode disabled", repeat=repeat)
    return ok({"success": True, "manual_replica_enabled": False, "config_version": agent.config_version,
               "terminated": terminated})


@bp.route("/api/agents/{agent_id}/manual-switch", methods=["POST"], response="PromotionReply", status=202)
def manual_switch(agent_id):
    """Promote the agent's ready standby (the workflow then starts the next one in manual mode). 202."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id)
    standby = replica_repo.get(agent.agent_id, agent.current_replica_id) if agent.current_replica_id else None
    if standby is None or standby.status is not ReplicaStatus.READY or not standby.instance_id:
        state = "no standby" if standby is None else f"standby {standby.replica_id} is {standby.status.value}"
        raise ConflictError(f"no ready standby to switch to ({state})", code="no_ready_standby")
    return _promote(agent, standby, utcnow())


@bp.route("/api/agents/{agent_id}/sef-status", methods=["GET"], response="SefStatusReply")
def sef_status(agent_id):
    """Mode, standby, last interruption, the sentinel's health score and whether prices are fresh."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id)
    now = utcnow()
    mode = ("manual-replica" if agent.manual_replica
            else "auto-switch" if agent.config.get("auto_switch_enabled") else "none")
    standby = replica_repo.get(agent.agent_id, agent.current_replica_id) if agent.current_replica_id else None
    latest = interruptions.for_agent(agent.agent_id, 1)
    last = None
    if latest:
        row = latest[0]
        last = {"interruption_id": row.interruption_id, "signal_type": row.signal_type, "status": row.status,
                "response_action": row.response_action, "detected_at": iso(row.detected_at),
                "failover_time_ms": None if row.failover_time_ms is None else int(row.failover_time_ms)}
    last_pricing_at = agent.last_pricing_at
    health = health_score(agent.last_heartbeat_at, last_pricing_at, now)
    return ok({"agent_id": agent.agent_id, "mode": mode,
               "health": {"score": health.score, "state": health.state.value,
                          "recommendation": health.recommendation},
               "manual_replica_enabled": agent.manual_replica,
               "auto_switch_enabled": bool(agent.config.get("auto_switch_enabled")),
               "auto_terminate_enabled": bool(agent.config.get("auto_terminate_enabled")),
               "terminate_wait_seconds": int(agent.config.get("terminate_wait_seconds") or 0),
               "replica": replica_view(standby) if standby else None, "last_interruption": last,
               "data_quality": {"last_pricing_at": iso(last_pricing_at),
                                "pricing_fresh": last_pricing_at is not None
                                and now - last_pricing_at <= PRICING_FRESH_FOR}})
