"""Standby replicas of an agent's primary (legacy ``replica_instances``), keyed by agent.

The agent row's ``current_replica_id`` is the slot that makes "exactly one standby" hold under
concurrent writers: a standby is only created in a transaction that claims that slot.
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, DecimalAttribute, OptionalText, table_name


class ReplicasByClientIndex(GlobalSecondaryIndex):
    """A client's replicas in id order (ids start with their creation time): the client dashboard."""

    class Meta:
        index_name = "replicas-by-client"
        projection = AllProjection()

    client_id = UnicodeAttribute(hash_key=True)
    replica_id = UnicodeAttribute(range_key=True)


class ReplicaTable(Model):
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
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    launched_at = UTCDateTimeAttribute(null=True)
    ready_at = UTCDateTimeAttribute(null=True)
    promoted_at = UTCDateTimeAttribute(null=True)
    terminated_at = UTCDateTimeAttribute(null=True)
    expires_at = UTCDateTimeAttribute(null=True)  # pre-warmed standbys only
    # A closed replica (promoted, terminated, failed, expired) is history: DynamoDB deletes it
    # EVENT_RETENTION_DAYS after it closed, so an agent's partition (read whole by the failover and every
    # minute by the replica coordinator) stays as small as its recent standbys.
    purge_at = TTLAttribute(null=True)

    by_client = ReplicasByClientIndex()
