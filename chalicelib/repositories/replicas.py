"""Replica rows and the agent's standby slot, always changed with conditions.

"Exactly one standby" holds because a standby is only created in a transaction that also claims the
agent's ``current_replica_id`` slot (condition: empty). Status changes are compare-and-set on the
current status, so two coordinators (or a coordinator and a workflow) cannot both move a replica.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from components.agent_identity import AgentStatus
from components.pool_id import parse_pool_id
from components.replica_coordinator import ReplicaStatus, ReplicaType, StandbyView, check_transition

from chalicelib.errors import ConflictError, NotFoundError
from chalicelib.repositories.agents import AgentRecord
from chalicelib.settings import get_settings
from chalicelib.repositories.dynamo import cancellation_codes, condition_failed, delete_each, transaction_connection
from chalicelib.repositories import sparse_indexes
from chalicelib.repositories.paging import Page, decode_token, encode_token, read_page
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.replicas import ACTIVE_STATUSES, FINAL, OPEN_REPLICAS, ReplicaTable, status_actions


class SlotTakenError(ConflictError):
    """The agent already has a standby (409 on the API, a no-op for the coordinator)."""

    def __init__(self, current_replica_id: str | None) -> None:
        super().__init__("the agent already has a standby replica", field="replica", code="replica_exists")
        self.current_replica_id = current_replica_id


class AgentDeletedMeanwhile(SlotTakenError):
    """The agent was deleted since it was read: its slot is not claimed, nothing is launched for it (409 on the API;
    no standby, as for a taken slot, for the coordinator and the failover). Its delete retired the standbys it saw; a
    standby claimed after it would run on, billed and never retired (the coordinator and cleanup keep an open one)."""

    def __init__(self) -> None:
        ConflictError.__init__(self, "the agent was deleted meanwhile: no standby is created for it",
                               field="agent_id", code="agent_deleted")
        self.current_replica_id = None


class ManualModeOffMeanwhile(SlotTakenError):
    """A manual standby's claim for an agent whose manual-replica mode was turned off since it was read: the slot is
    not claimed, nothing is launched (409 ``manual_mode_required`` on the API; no standby for the coordinator). The
    disable retired the standbys it saw; one claimed after it would run on, billed, and no coordinator run retires
    the standby of an agent that is not in manual-replica mode."""

    def __init__(self) -> None:
        ConflictError.__init__(self, "manual-replica mode was turned off meanwhile: no standby is created",
                               field="manual_replica_enabled", code="manual_mode_required")
        self.current_replica_id = None


@dataclass(frozen=True)
class ReplicaRecord:
    """A replica as handlers and tasks see it."""

    agent_id: str
    replica_id: str
    client_id: str
    status: ReplicaStatus
    replica_type: str
    lifecycle: str
    pool_id: str | None
    instance_type: str | None
    region: str | None
    az: str | None
    instance_id: str | None
    parent_instance_id: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    interruption_id: str | None = None
    hourly_cost: Decimal | None = None
    sync_status: str | None = None
    sync_latency_ms: int | None = None
    state_transfer_progress: float | None = None
    error_message: str | None = None
    launch_error: str | None = None  # "<error class>:<EC2 code>" of the launch that failed it
    launched_at: datetime | None = None
    ready_at: datetime | None = None
    promoted_at: datetime | None = None
    terminated_at: datetime | None = None
    expires_at: datetime | None = None
    own_launch: bool = False  # instance_id came from the product's own RunInstances
    placement_reason: str | None = None  # why the server placed it in its pool (set with the slot's claim)
    request_digest: str | None = None  # the client create request that claimed the slot (its repeat finishes it)

    @property
    def active(self) -> bool:
        return self.status not in FINAL

    def view(self, ec2_state: str | None = None) -> StandbyView:
        return StandbyView(self.replica_id, self.status, self.pool_id, self.instance_id, self.created_at,
                           self.expires_at, ec2_state, self.launched_at,
                           failover=self.failover_replacement)

    @property
    def failover_replacement(self) -> bool:
        """A failover workflow's own replacement (chalicelib.failover writes it, ``created_by`` failover): its
        execution launches and closes it. An agent's emergency standby (v4's ``create-emergency-replica`` on a
        termination notice: the same type, created by the agent's call) is no workflow's: the agent's standby."""
        return self.replica_type == ReplicaType.TERMINATION.value and self.created_by == "failover"


def _record(row: ReplicaTable) -> ReplicaRecord:
    return ReplicaRecord(
        agent_id=row.agent_id, replica_id=row.replica_id, client_id=row.client_id,
        status=ReplicaStatus(row.status), replica_type=row.replica_type, lifecycle=row.lifecycle,
        pool_id=row.pool_id, instance_type=row.instance_type, region=row.region, az=row.az,
        instance_id=row.instance_id, parent_instance_id=row.parent_instance_id, created_by=row.created_by,
        created_at=row.created_at, updated_at=row.updated_at, interruption_id=row.interruption_id,
        hourly_cost=row.hourly_cost, sync_status=row.sync_status,
        sync_latency_ms=None if row.sync_latency_ms is None else int(row.sync_latency_ms),
        state_transfer_progress=row.state_transfer_progress, error_message=row.error_message,
        launch_error=row.launch_error,
        launched_at=row.launched_at, ready_at=row.ready_at, promoted_at=row.promoted_at,
        terminated_at=row.terminated_at, expires_at=row.expires_at, own_launch=bool(row.own_launch),
        placement_reason=row.placement_reason, request_digest=row.request_digest)


def new_replica_id(now: datetime) -> str:
    """Replica ids sort by creation time within an agent."""
    return f"rep-{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


def get(agent_id: str, replica_id: str) -> ReplicaRecord | None:
    try:
        return _record(ReplicaTable.get(agent_id, replica_id, consistent_read=True))
    except ReplicaTable.DoesNotExist:
        return None


def require(agent: AgentRecord, replica_id: str) -> ReplicaRecord:
    """The agent's replica or 404 (the agent was already checked against the caller's tenant)."""
    replica = get(agent.agent_id, replica_id)
    if replica is None or replica.client_id != agent.client_id:
        raise NotFoundError("replica not found", field="replica_id")
    return replica


def for_agent(agent_id: str, *, include_final: bool = True) -> list[ReplicaRecord]:
    """An agent's replicas, oldest first: its open ones and those closed within the retention (``purge_at``).
    Without ``include_final`` the closed ones are filtered out by DynamoDB, not shipped to be dropped here: a
    consistent read of the agent's whole partition, for a caller that decides a write on what it finds (an agent's
    delete, an account change); one that only shows or plans reads ``open_for_agent``."""
    condition = None if include_final else ReplicaTable.status.is_in(*ACTIVE_STATUSES)
    return [_record(r) for r in ReplicaTable.query(agent_id, consistent_read=True, filter_condition=condition)]


def _indexed_open(client_id: str, agent_id: str) -> list[ReplicaRecord]:
    """The agent's open replicas from the open-replicas index (a key condition), in id order."""
    rows = ReplicaTable.open_by_client.query(client_id, ReplicaTable.agent_id == agent_id)
    return sorted((_record(r) for r in rows), key=lambda r: r.replica_id)


def open_for_agent(client_id: str, agent_id: str, *, fresh: bool = False) -> list[ReplicaRecord]:
    """An agent's open replicas, oldest first, from the open-replicas index: the few open rows, not every replica the
    agent had within the retention (the filtered partition read evaluated all of them, 300 for a busy agent). The
    index is eventually consistent (a status written a moment ago may not show yet): for the polls, listings and
    plans that show or act on what they find with a compare-and-set; ``for_agent`` is the consistent read.
    ``fresh``: each row found is read again, consistently (one BatchGetItem of the few), and kept if still open: for
    a caller that acts on a row's state (the coordinator launches for a ``launching`` row without an instance).
    Until the index is ready (``sparse_indexes``: a stage upgraded in place, its backfill not done) the filtered
    read of the partition."""
    if not sparse_indexes.ready(OPEN_REPLICAS):
        return for_agent(agent_id, include_final=False)
    found = _indexed_open(client_id, agent_id)
    if not fresh or not found:
        return found
    rows = ReplicaTable.batch_get([(r.agent_id, r.replica_id) for r in found], consistent_read=True)
    return sorted((_record(r) for r in rows if r.status in ACTIVE_STATUSES), key=lambda r: r.replica_id)


def listing_for_agent(client_id: str, agent_id: str, *, after: str | None, limit: int,
                      statuses: tuple[str, ...] | None, keep=None) -> tuple[list[ReplicaRecord], bool]:
    """Up to ``limit`` of an agent's replicas in id order after the id ``after`` (a key condition), with status among
    ``statuses`` (None: any; filtered by DynamoDB) and passing ``keep``, and whether more follow. The read stops once
    the page and one more row are found: without a status filter it reads ``limit + 1`` rows, not the agent's whole
    history (closed replicas stay ``EVENT_RETENTION_DAYS``). Open statuses only (the default listing, the legacy
    agents' ``status=launching`` poll) are read from the open-replicas index once it is ready: the agent's few open
    rows. Another filtered read goes on through the partition as far as its rows take it (1 MB a request), so a
    match older than many closed rows is still on the first page."""
    if statuses and set(statuses) <= set(ACTIVE_STATUSES) and sparse_indexes.ready(OPEN_REPLICAS):
        matching = [r for r in _indexed_open(client_id, agent_id) if r.status.value in statuses
                    and (after is None or r.replica_id > after) and (keep is None or keep(r))]
        return matching[:limit], len(matching) > limit
    found: list[ReplicaRecord] = []
    rows = ReplicaTable.query(
        agent_id, (ReplicaTable.replica_id > after) if after else None, consistent_read=True,
        filter_condition=ReplicaTable.status.is_in(*statuses) if statuses else None,
        page_size=None if statuses else limit + 1)
    for row in rows:
        record = _record(row)
        if keep is not None and not keep(record):
            continue
        found.append(record)
        if len(found) > limit:
            return found[:limit], True
    return found, False


def closed_since(agent_id: str, status: ReplicaStatus, since: datetime) -> list[ReplicaRecord]:
    """An agent's replicas closed with ``status`` at ``since`` or later (filtered by DynamoDB): what a request that
    died halfway through closing them left to finish."""
    condition = (ReplicaTable.status == status.value) & (ReplicaTable.terminated_at >= since)
    return [_record(r) for r in ReplicaTable.query(agent_id, consistent_read=True, filter_condition=condition)]


def delete_closed(agent_id: str, budget: int) -> int:
    """Delete the agent's closed replicas (promoted, terminated, failed, expired), at most ``budget``, each on the
    condition that it is still closed: the data cleaner, removing a gone agent. Returns how many were deleted."""
    final = tuple(s.value for s in FINAL)
    rows = ReplicaTable.query(agent_id, consistent_read=True, filter_condition=ReplicaTable.status.is_in(*final))
    return delete_each(rows, ReplicaTable.status.is_in(*final), budget)


def purge_after(closed_at: datetime) -> datetime:
    """When DynamoDB deletes a replica closed at ``closed_at`` (its history lives as long as the events')."""
    return closed_at + timedelta(days=get_settings().event_retention_days)


def page_for_client(client_id: str, limit: int, next_token: str | None, *, active_only: bool = True) -> Page:
    """A client's replicas, newest first (the replicas-by-client index; ``paging.read_page``). The open ones only,
    once the open-replicas index is ready, are its partition of the client, sorted here (the token is the same)."""
    key = ("agent_id", "replica_id", "client_id")
    start = decode_token(next_token, partition_attr="client_id", partition_value=client_id, key_attrs=key)
    if active_only and sparse_indexes.ready(OPEN_REPLICAS):
        rows = sorted((_record(r) for r in ReplicaTable.open_by_client.query(client_id)),
                      key=lambda r: r.replica_id, reverse=True)
        rows = [r for r in rows if start is None or r.replica_id < start["replica_id"]["S"]]
        last = rows[limit - 1] if len(rows) > limit else None
        return Page(rows[:limit], None if last is None else encode_token(
            {"agent_id": {"S": last.agent_id}, "replica_id": {"S": last.replica_id}, "client_id": {"S": client_id}}))
    page = read_page(ReplicaTable, lambda size, at: ReplicaTable.by_client.query(
        client_id, scan_index_forward=False, page_size=size, last_evaluated_key=at,
        filter_condition=ReplicaTable.status.is_in(*ACTIVE_STATUSES) if active_only else None),
        limit=limit, start=start, key_attrs=key)
    return Page([_record(r) for r in page.items], page.next_token)


def active_count(client_id: str) -> int:
    """How many of the client's replicas are not closed: the client's partition of the open-replicas index (its open
    rows), or, until that index is ready, a filtered Query of every replica of the client."""
    if sparse_indexes.ready(OPEN_REPLICAS):
        return ReplicaTable.open_by_client.count(client_id)
    return ReplicaTable.by_client.count(client_id, filter_condition=ReplicaTable.status.is_in(*ACTIVE_STATUSES))


def active_with_expiry():
    """Every active pre-warmed standby (cleanup's batch scan; never a request path)."""
    condition = ReplicaTable.expires_at.exists() & ReplicaTable.status.is_in(
        ReplicaStatus.LAUNCHING.value, ReplicaStatus.SYNCING.value, ReplicaStatus.READY.value)
    return [_record(r) for r in ReplicaTable.scan(filter_condition=condition)]


def create(agent: AgentRecord, *, replica_id: str, replica_type: str, lifecycle: str, pool_id: str | None,
           az: str | None, created_by: str, now: datetime, take_slot: bool,
           expires_at: datetime | None = None, interruption_id: str | None = None,
           hourly_cost: Decimal | None = None, instance_id: str | None = None,
           status: ReplicaStatus = ReplicaStatus.LAUNCHING, placement_reason: str | None = None,
           request_digest: str | None = None) -> ReplicaRecord:
    """Write a new replica row; with ``take_slot`` also claim the agent's standby slot, atomically.

    Idempotent on ``replica_id``: an existing row with that id is returned as is.
    Raises SlotTakenError when the slot is held by another replica; a manual standby's claim also holds only while
    the agent is in manual-replica mode (``ManualModeOffMeanwhile``).
    """
    existing = get(agent.agent_id, replica_id)
    if existing is not None:
        return existing
    row = ReplicaTable(agent.agent_id, replica_id, client_id=agent.client_id, status=status.value,
                       replica_type=replica_type, lifecycle=lifecycle, pool_id=pool_id,
                       instance_type=parse_pool_id(pool_id)[0] if pool_id else agent.instance_type,
                       region=agent.region, az=az,
                       instance_id=instance_id, parent_instance_id=agent.instance_id, created_by=created_by,
                       interruption_id=interruption_id, hourly_cost=hourly_cost, created_at=now,
                       updated_at=now, expires_at=expires_at,
                       launched_at=now if instance_id else None, placement_reason=placement_reason,
                       request_digest=request_digest)
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.save(row, condition=ReplicaTable.replica_id.does_not_exist())
            agent_actions = [AgentTable.updated_at.set(now)]
            agent_condition = AgentTable.agent_id.exists()
            if take_slot:
                agent_actions += [AgentTable.current_replica_id.set(replica_id),
                                  AgentTable.replica_generation.add(1)]
                agent_condition &= AgentTable.current_replica_id.does_not_exist() \
                    & (AgentTable.status != AgentStatus.DELETED.value)
                if replica_type == ReplicaType.MANUAL.value:
                    agent_condition &= AgentTable.config.manual_replica_enabled == True  # noqa: E712
            tx.update(AgentTable(agent.client_id, agent.agent_id), actions=agent_actions,
                      condition=agent_condition)
    except TransactWriteError as exc:
        codes = cancellation_codes(exc)
        if codes and codes[0] == "ConditionalCheckFailed":
            return get(agent.agent_id, replica_id)  # a concurrent call with the same id won
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            try:
                current = AgentTable.get(agent.client_id, agent.agent_id, consistent_read=True)
            except AgentTable.DoesNotExist:  # its client's hard delete removed it since it was read
                raise AgentDeletedMeanwhile() from exc
            if take_slot and current.status == AgentStatus.DELETED.value and not current.current_replica_id:
                raise AgentDeletedMeanwhile() from exc
            if take_slot and replica_type == ReplicaType.MANUAL.value and not current.current_replica_id \
                    and not (current.config is not None and current.config.manual_replica_enabled):
                raise ManualModeOffMeanwhile() from exc
            raise SlotTakenError(current.current_replica_id) from exc
        raise
    return _record(row)


def _standby_instance(replica: ReplicaRecord, instance_id: str, mode: str, now: datetime) -> InstanceTable:
    """The instances-table row of ``instance_id`` as ``replica``'s standby."""
    return InstanceTable(instance_id, client_id=replica.client_id, agent_id=replica.agent_id,
                         instance_type=replica.instance_type, region=replica.region, az=replica.az,
                         mode=mode, pool_id=replica.pool_id, role="standby", replica_id=replica.replica_id,
                         lifecycle=mode, spot_price=replica.hourly_cost if mode == "spot" else None,
                         is_active=True, installed_at=now, updated_at=now)


# an open standby (not promoted, not closed). A ready one too: the agent's instance was launched for the row all the
# same (offered while ours was in flight), and only ours can be terminated by us (tagged): refusing the agent's left
# it running, owned by nothing, when our launch turned ready first (or between the PUT's read and its write).
TAKEOVER_STATUSES = (ReplicaStatus.LAUNCHING, ReplicaStatus.SYNCING, ReplicaStatus.READY)


def may_take_over(replica: ReplicaRecord) -> bool:
    """Whether an agent's own instance may replace ``replica``'s (``take_over_instance``): its instance is the
    product's own launch (``own_launch``), it is an open standby (``TAKEOVER_STATUSES``: not promoted or closed),
    and no failover's replacement (its workflow's, which hands it over)."""
    return (bool(replica.instance_id) and replica.own_launch and not replica.failover_replacement
            and replica.status in TAKEOVER_STATUSES)


def take_over_instance(replica: ReplicaRecord, *, instance_id: str, now: datetime) -> ReplicaRecord:
    """A legacy agent's own instance replaces the product's on a standby both launched for (v4 launches one for
    every row its ``status=launching`` poll is offered; the product's launch of that row, in flight then, attached
    first): the row takes ``instance_id`` and is no longer ``own_launch`` (the agent's instance: the agent reports
    it), and is ``syncing`` (the agent's instance has just been launched: a row ours had made ``ready`` is not ready
    any more, its ``ready_at`` removed, until the agent reports it so); the agent's instance is indexed as the standby
    (free, or already this replica's) and the product's instance row made inactive. The caller terminates the
    product's instance (ours, tagged).

    One transaction, compare-and-set on what ``replica`` was read with: the row still holds the same instance, from
    our own RunInstances, and is still open (``may_take_over``; a status change meanwhile, e.g. our instance turning
    ready, does not matter). Otherwise nothing is written and ConflictError: ``replica_instance_conflict`` when the
    row holds another instance, ``replica_closed`` when it closed, ``instance_conflict`` when the instance is
    someone else's."""
    old = replica.instance_id
    if not may_take_over(replica):
        raise ConflictError("replica already has another instance", field="instance_id",
                            code="replica_instance_conflict")
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.save(_standby_instance(replica, instance_id, replica.lifecycle, now),
                    condition=InstanceTable.instance_id.does_not_exist()
                    | (InstanceTable.replica_id == replica.replica_id))
            tx.update(ReplicaTable(replica.agent_id, replica.replica_id),
                      actions=[ReplicaTable.instance_id.set(instance_id), ReplicaTable.own_launch.remove(),
                               *status_actions(ReplicaStatus.SYNCING, replica.client_id),
                               ReplicaTable.ready_at.remove(), ReplicaTable.launched_at.set(now),
                               ReplicaTable.updated_at.set(now)],
                      condition=(ReplicaTable.instance_id == old) & (ReplicaTable.own_launch == True)  # noqa: E712
                      & ReplicaTable.status.is_in(*(s.value for s in TAKEOVER_STATUSES)))
            tx.update(InstanceTable(old),
                      actions=[*InstanceTable.close_actions(), InstanceTable.terminated_at.set(now),
                               InstanceTable.updated_at.set(now)],
                      condition=(InstanceTable.client_id == replica.client_id)
                      & (InstanceTable.replica_id == replica.replica_id))
    except TransactWriteError as exc:
        # pynamodb's order: puts, then updates: [the agent's instance row, the replica row, our instance row]
        codes = cancellation_codes(exc)
        if codes and codes[0] == "ConditionalCheckFailed":
            raise ConflictError("instance_id belongs to another agent or replica", field="instance_id",
                                code="instance_conflict") from exc
        if "ConditionalCheckFailed" in codes[1:]:
            raise _row_changed(replica) from exc
        raise
    return get(replica.agent_id, replica.replica_id)


def _row_changed(replica: ReplicaRecord) -> ConflictError:
    """Why an instance write's condition on the replica row failed: it closed (``replica_closed``) or holds another
    instance (``replica_instance_conflict``)."""
    current = get(replica.agent_id, replica.replica_id)
    if current is not None and not current.active:
        return ConflictError(f"replica already {current.status.value}", field="instance_id", code="replica_closed")
    return ConflictError("replica already has another instance", field="instance_id",
                         code="replica_instance_conflict")


def attach_instance(replica: ReplicaRecord, *, instance_id: str, now: datetime,
                    lifecycle: str | None = None, own_launch: bool = False) -> ReplicaRecord:
    """Record the EC2 instance of a replica (once) and index it in the instances table as a standby.

    One transaction: a half-done attach (replica row pointing at the instance, no instances row) would
    make a retry return early and leave the instance running unowned (#12). Idempotent: attaching the
    same instance again rewrites the same values. Only while the row is open (not final): a launch that
    outlived its caller (a timed-out workflow step) cannot attach to a row the hand-over or the failure
    path already closed (ConflictError ``replica_closed``; the launcher terminates what it launched).
    ``own_launch``: the id is what the product's RunInstances returned (``replicas.launch``), never an agent's
    report; it is only ever set, so a report of the same id later cannot clear it."""
    instance = _standby_instance(replica, instance_id, lifecycle or replica.lifecycle, now)
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.update(ReplicaTable(replica.agent_id, replica.replica_id),
                      actions=[ReplicaTable.instance_id.set(instance_id), ReplicaTable.launched_at.set(now),
                               ReplicaTable.updated_at.set(now)]
                      + ([ReplicaTable.own_launch.set(True)] if own_launch else []),
                      condition=ReplicaTable.replica_id.exists() & ReplicaTable.status.is_in(*ACTIVE_STATUSES)
                      & (ReplicaTable.instance_id.does_not_exist() | (ReplicaTable.instance_id == instance_id)))
            tx.save(instance, condition=InstanceTable.instance_id.does_not_exist()
                    | (InstanceTable.replica_id == replica.replica_id))
    except TransactWriteError as exc:
        # pynamodb sends puts before updates: the reasons are [instances row, replica row].
        codes = cancellation_codes(exc)
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            raise _row_changed(replica) from exc
        if codes and codes[0] == "ConditionalCheckFailed":
            raise ConflictError("instance_id belongs to another agent", field="instance_id",
                                code="instance_conflict") from exc
        raise
    return get(replica.agent_id, replica.replica_id)


def transition(replica: ReplicaRecord, wanted: ReplicaStatus, now: datetime, *, release: bool = True,
               **fields: Any) -> ReplicaRecord:
    """Compare-and-set the status (plus fields); final statuses also close the instance row and then release the
    standby slot (``release``; a caller that writes records of the close releases it itself, last: while a closed
    replica holds the slot, the replica coordinator finds it and finishes the close, ``replicas.retire``).

    Idempotent: asking for the status the replica already has changes nothing. Raises
    IllegalReplicaTransitionError (409) for an illegal move, ConflictError when it raced.
    """
    if replica.status is wanted and wanted in FINAL:
        # the close that wrote the status may have died before what follows it
        finish_closing(replica, now, release=release)
        return replica
    check_transition(replica.status, wanted)
    actions = status_actions(wanted, replica.client_id) + [ReplicaTable.updated_at.set(now)]
    stamp = {ReplicaStatus.READY: "ready_at", ReplicaStatus.PROMOTED: "promoted_at",
             ReplicaStatus.TERMINATED: "terminated_at", ReplicaStatus.FAILED: "terminated_at",
             ReplicaStatus.EXPIRED: "terminated_at"}.get(wanted)
    if stamp and stamp not in fields:
        fields[stamp] = now
    if wanted in FINAL:
        fields["purge_at"] = purge_after(now)
    for name, value in fields.items():
        attribute = getattr(ReplicaTable, name)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    try:
        ReplicaTable(replica.agent_id, replica.replica_id).update(
            actions=actions, condition=ReplicaTable.status == replica.status.value)
    except UpdateError as exc:
        if condition_failed(exc):
            raise ConflictError("replica changed concurrently, retry", field="status") from exc
        raise
    if wanted in FINAL:
        if replica.instance_id and wanted is not ReplicaStatus.PROMOTED:
            deactivate_instance(replica.instance_id, replica.client_id, now)
        if release:
            release_slot(replica, now)
    return get(replica.agent_id, replica.replica_id)


def finish_closing(replica: ReplicaRecord, now: datetime, *, release: bool = True) -> None:
    """What closing a replica does after its status write, for one recorded closed: the agent's standby slot freed if
    it still names the replica, and its instance row (but a promoted one's: the primary now) made inactive if it is
    still active. A Lambda that died between the writes (the status written, the slot not) left the slot taken by
    a closed replica, which nothing else frees: no standby could be placed for the agent again."""
    if replica.instance_id and replica.status is not ReplicaStatus.PROMOTED:
        deactivate_instance(replica.instance_id, replica.client_id, now, only_active=True)
    if release:
        release_slot(replica, now)


def release_slot(replica: ReplicaRecord, now: datetime) -> bool:
    """Free the agent's standby slot if this replica holds it; True if it did."""
    try:
        AgentTable(replica.client_id, replica.agent_id).update(
            actions=[AgentTable.current_replica_id.remove(), AgentTable.updated_at.set(now)],
            condition=AgentTable.current_replica_id == replica.replica_id)
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def deactivate_instance(instance_id: str, client_id: str, now: datetime, *, only_active: bool = False) -> None:
    """Mark an instance row inactive (its EC2 instance is gone or going); ``only_active``: only a row still active
    (an inactive one keeps its end)."""
    condition = InstanceTable.client_id == client_id
    if only_active:
        condition &= InstanceTable.is_active == True  # noqa: E712
    try:
        InstanceTable(instance_id).update(
            actions=[*InstanceTable.close_actions(), InstanceTable.terminated_at.set(now),
                     InstanceTable.updated_at.set(now)],
            condition=condition)
    except UpdateError as exc:
        if not condition_failed(exc):
            raise


def promote(agent: AgentRecord, replica: ReplicaRecord, *, old_instance_id: str | None, new_az: str | None,
            new_pool_id: str | None, new_mode: str, now: datetime) -> bool:
    """Make the replica's instance the agent's primary, in one transaction.

    Replica → promoted; agent points at the new instance (only if it still points at the old one);
    new instance row → primary; old instance row → inactive. Returns False when it was already done
    (a retried workflow step).
    """
    if replica.status is ReplicaStatus.PROMOTED:
        return False
    check_transition(replica.status, ReplicaStatus.PROMOTED)
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.update(ReplicaTable(replica.agent_id, replica.replica_id),
                      actions=status_actions(ReplicaStatus.PROMOTED, replica.client_id)
                      + [ReplicaTable.promoted_at.set(now), ReplicaTable.updated_at.set(now),
                         ReplicaTable.purge_at.set(purge_after(now))],
                      condition=ReplicaTable.status == replica.status.value)
            actions = [AgentTable.instance_id.set(replica.instance_id), AgentTable.current_mode.set(new_mode),
                       AgentTable.last_switch_at.set(now), AgentTable.updated_at.set(now),
                       AgentTable.instance_count.add(1)]
            actions.append(AgentTable.current_pool_id.set(new_pool_id) if new_pool_id
                           else AgentTable.current_pool_id.remove())
            if new_az:
                actions.append(AgentTable.az.set(new_az))
            if replica.instance_type:  # a standby may run another of the agent's interchangeable types
                actions.append(AgentTable.instance_type.set(replica.instance_type))
            if agent.current_replica_id == replica.replica_id:
                actions.append(AgentTable.current_replica_id.remove())
            condition = (AgentTable.instance_id == old_instance_id if old_instance_id
                         else AgentTable.agent_id.exists())
            tx.update(AgentTable(agent.client_id, agent.agent_id), actions=actions, condition=condition)
            tx.update(InstanceTable(replica.instance_id),
                      actions=[InstanceTable.role.set("primary"), InstanceTable.mode.set(new_mode),
                               InstanceTable.last_switch_at.set(now), InstanceTable.updated_at.set(now)],
                      condition=InstanceTable.client_id == agent.client_id)
            if old_instance_id and old_instance_id != replica.instance_id:
                tx.update(InstanceTable(old_instance_id),
                          actions=[*InstanceTable.close_actions(), InstanceTable.updated_at.set(now)],
                          condition=InstanceTable.client_id == agent.client_id)
    except TransactWriteError as exc:
        if get(replica.agent_id, replica.replica_id).status is ReplicaStatus.PROMOTED:
            return False
        raise ConflictError("promotion raced with another change, retry") from exc
    return True
