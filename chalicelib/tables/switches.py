"""Completed switches with prices, timings and their hourly savings impact."""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, DecimalAttribute, OptionalText, table_name


class SwitchesByAgentIndex(GlobalSecondaryIndex):
    """An agent's switches in time order (decision limits, history)."""

    class Meta:
        index_name = "switches-by-agent"
        projection = AllProjection()

    agent_id = UnicodeAttribute(hash_key=True)
    switch_key = UnicodeAttribute(range_key=True)


class SwitchTable(Model):
    """One switch. ``switch_key`` = ``<initiated_at>#<switch_id>``: switches by client and time."""

    class Meta(BaseMeta):
        table_name = table_name("switches")

    client_id = UnicodeAttribute(hash_key=True)
    switch_key = UnicodeAttribute(range_key=True)
    switch_id = UnicodeAttribute()
    agent_id = UnicodeAttribute()
    command_id = OptionalText()
    trigger = UnicodeAttribute(default="manual")
    old_instance_id = OptionalText()
    old_instance_type = OptionalText()
    old_az = OptionalText()
    old_mode = OptionalText()
    old_pool_id = OptionalText()
    new_instance_id = UnicodeAttribute()
    new_instance_type = OptionalText()
    new_az = OptionalText()
    new_mode = OptionalText()
    new_pool_id = OptionalText()
    new_ami_id = OptionalText()
    on_demand_price = DecimalAttribute(null=True)
    old_price = DecimalAttribute(null=True)
    new_price = DecimalAttribute(null=True)
    hourly_savings = DecimalAttribute(null=True)
    monthly_savings = DecimalAttribute(null=True)
    initiated_at = UTCDateTimeAttribute()
    launched_at = UTCDateTimeAttribute(null=True)
    ready_at = UTCDateTimeAttribute(null=True)
    traffic_switched_at = UTCDateTimeAttribute(null=True)
    old_terminated_at = UTCDateTimeAttribute(null=True)
    total_duration_seconds = NumberAttribute(null=True)
    snapshot_used = BooleanAttribute(default=False)
    success = BooleanAttribute(default=True)
    recorded_at = UTCDateTimeAttribute()
    # Recorded from the replacement's registration, not from a report (a legacy agent that died with its host:
    # chalicelib/api/agents.py ``_unreported_switch``); the agent's own report, if it comes, replaces it.
    inferred = BooleanAttribute(null=True)
    # EVENT_RETENTION_DAYS after it was recorded (chalicelib/repositories/switches.py ``record``); rows written
    # before the TTL have none.
    expires_at = TTLAttribute(null=True)

    by_agent = SwitchesByAgentIndex()
