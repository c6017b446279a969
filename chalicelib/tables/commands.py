"""Agent commands: a priority queue per agent (sparse GSI) and a lease index for the sweeper."""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name

LEASED = "leased"


class ActiveCommandsIndex(GlobalSecondaryIndex):
    """Sparse: pending and executing commands of an agent in queue order (priority desc, age asc)."""

    class Meta:
        index_name = "active-commands"
        projection = AllProjection()

    queue_agent_id = UnicodeAttribute(hash_key=True)
    queue_key = UnicodeAttribute(range_key=True)


class LeasesIndex(GlobalSecondaryIndex):
    """Sparse: executing commands by lease deadline, so expired leases are found without a scan."""

    class Meta:
        index_name = "leases-by-deadline"
        projection = KeysOnlyProjection()

    lease_shard = UnicodeAttribute(hash_key=True)
    lease_expires_at = UTCDateTimeAttribute(range_key=True)


class CommandTable(Model):
    """One command (components.command_tracker.Command) as stored."""

    class Meta(BaseMeta):
        table_name = table_name("commands")

    agent_id = UnicodeAttribute(hash_key=True)
    command_id = UnicodeAttribute(range_key=True)
    client_id = UnicodeAttribute()
    command_type = UnicodeAttribute()
    priority = NumberAttribute()
    status = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    target_mode = OptionalText()
    target_pool_id = OptionalText()
    instance_id = OptionalText()
    terminate_wait_seconds = NumberAttribute(default=0)
    trigger = UnicodeAttribute(default="manual")
    created_by = UnicodeAttribute(default="system")
    attempts = NumberAttribute(default=0)
    max_attempts = NumberAttribute(default=3)
    leased_at = UTCDateTimeAttribute(null=True)
    lease_expires_at = UTCDateTimeAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    success = BooleanAttribute(null=True)
    message = OptionalText()
    queue_agent_id = OptionalText()
    queue_key = OptionalText()
    lease_shard = OptionalText()
    expires_at = TTLAttribute(null=True)
    # Counted in its agent's ``active_commands`` (set on enqueue; commands from before the counter lack it,
    # and finishing them leaves the counter alone).
    counted = BooleanAttribute(null=True)

    active = ActiveCommandsIndex()
    leases = LeasesIndex()
