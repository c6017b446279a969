"""Standby replicas of an agent's primary (legacy ``replica_instances``), keyed by agent.

The agent row's ``current_replica_id`` is the slot that makes "exactly one standby" hold under
concurrent writers: a standby is only created in a transaction that claims that slot.
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from components.replica_coordinator import ACTIVE_STATUSES as OPEN_STATUSES, ReplicaStatus

from chalicelib.tables.base import BaseMeta, DecimalAttribute, OptionalText, SparseIndex, SparseKeyed, table_name

# A replica in one of these statuses is history (``chalicelib.repositories.replicas`` closes it); the others are its
# open statuses, those of the ``open_by_client`` index. Here, next to the table, because every put derives the
# index's key from them.
FINAL = frozenset(ReplicaStatus) - OPEN_STATUSES  # a closed replica's statuses (the domain's open ones: the others)
ACTIVE_STATUSES = tuple(s.value for s in ReplicaStatus if s in OPEN_STATUSES)  # the open ones, as stored


class ReplicasByClientIndex(GlobalSecondaryIndex):
    """A client's replicas in id order (ids start with their creation time): the client dashboard."""

    class Meta:
        index_name = "replicas-by-client"
        projection = AllProjection()

    client_id = UnicodeAttribute(hash_key=True)
    replica_id = UnicodeAttribute(range_key=True)


class OpenReplicasByClientIndex(GlobalSecondaryIndex):
    """A client's open replicas only (sparse: ``open_client_id`` is set while the status is open), by agent: one
    agent's open replicas are a key condition, a client's are the partition (ids not in order: sort them).
    Eventually consistent, as every GSI read: a reader that decides a write on what it sees reads the table."""

    class Meta:
        index_name = "open-replicas-by-client"
        projection = AllProjection()

    open_client_id = UnicodeAttribute(hash_key=True)
    agent_id = UnicodeAttribute(range_key=True)


class ReplicaTable(SparseKeyed, Model):
    """One standby (or emergency replacement) and its lifecycle timestamps."""

    class Meta(BaseMeta):
        table_name = table_name("replicas")

    agent_id = UnicodeAttribute(hash_key=True)
    replica_id = UnicodeAttribute(range_key=True)
    client_id = UnicodeAttribute()
    status = UnicodeAttribute(default="launching")
    replica_type = UnicodeAttribute(default="manual")
    lifecycle = UnicodeAttribute(default="spot")  # spot | ondemand
    pool_id = OptionalText()
    instance_type = OptionalText()
    region = OptionalText()
    az = OptionalText()
    instance_id = OptionalText()
    # instance_id is what RunInstances returned to the product (chalicelib.replicas.launch), not an id an agent
    # reported: ours by construction, so terminated by id even while DescribeInstances does not list it yet.
    own_launch = BooleanAttribute(null=True)
    parent_instance_id = OptionalText()
    created_by = UnicodeAttribute(default="system")
    # Why the server placed it there, written with the slot's claim: a repeat of a create that died before its
    # audit event and placement decision writes them from it (chalicelib/replicas.py ``record_creation``).
    placement_reason = OptionalText()
    # SHA-256 (prefix) of the client's create request that claimed the slot: the same request again is its repeat.
    request_digest = OptionalText()
    interruption_id = OptionalText()
    hourly_cost = DecimalAttribute(null=True)
    sync_status = OptionalText()
    sync_latency_ms = NumberAttribute(null=True)
    state_transfer_progress = NumberAttribute(null=True)
    error_message = OptionalText()
    # How its launch failed, when that failed it: "<error class>:<EC2 code>" ("CapacityUnavailable:
    # InsufficientInstanceCapacity", "LaunchError:"). A retried failover step that finds the row failed raises that
    # error again and records the pool's refusal the failed attempt may have died before (chalicelib/replicas.py).
    launch_error = OptionalText()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    launched_at = UTCDateTimeAttribute(null=True)
    ready_at = UTCDateTimeAttribute(null=True)
    promoted_at = UTCDateTimeAttribute(null=True)
    terminated_at = UTCDateTimeAttribute(null=True)
    expires_at = UTCDateTimeAttribute(null=True)  # pre-warmed standbys only
    # A closed replica (promoted, terminated, failed, expired) is history: DynamoDB deletes it
    # EVENT_RETENTION_DAYS after it closed, so an agent's partition (read whole by the failover and by the callers
    # that decide a write on an agent's standbys) stays as small as its recent standbys.
    purge_at = TTLAttribute(null=True)
    # ``client_id`` while the status is open (absent once closed): the key of ``open_by_client``, the index of
    # OPEN_REPLICAS. Never set by hand: every put derives it (``SparseKeyed``), every status update uses
    # ``status_actions``.
    open_client_id = OptionalText()

    by_client = ReplicasByClientIndex()
    open_by_client = OpenReplicasByClientIndex()

    sparse_key = "open_client_id"
    sparse_sources = frozenset({"status", "client_id"})

    def sparse_value(self) -> str | None:
        return self.client_id if self.status in ACTIVE_STATUSES else None


def status_actions(status: ReplicaStatus, client_id: str) -> list[Action]:
    """The update actions that set a replica's status: the status and its place in the open index (``client_id``
    is the row's own: the key names the client whose open replicas it is among)."""
    key = ReplicaTable.open_client_id
    return [ReplicaTable.status.set(status.value),
            key.set(client_id) if status.value in ACTIVE_STATUSES else key.remove()]


OPEN_REPLICAS = SparseIndex(name="open-replicas", model=ReplicaTable,
                            belongs=lambda: ReplicaTable.status.is_in(*ACTIVE_STATUSES))
