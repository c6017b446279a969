"""Interruption events with their timings, and the signal claims that de-duplicate them.

An interruption is claimed once per (instance, signal group) within the de-duplication window,
whichever source (EventBridge or the agent's IMDS report) arrives first; the claim names the event.
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name


class InterruptionsByAgentIndex(GlobalSecondaryIndex):
    """An agent's interruption events in time order."""

    class Meta:
        index_name = "interruptions-by-agent"
        projection = AllProjection()

    agent_id = UnicodeAttribute(hash_key=True)
    interruption_id = UnicodeAttribute(range_key=True)


class InterruptionTable(Model):
    """One handled signal; ``interruption_id`` starts with the detection time, so ids sort by age."""

    class Meta(BaseMeta):
        table_name = table_name("interruptions")

    client_id = UnicodeAttribute(hash_key=True)
    interruption_id = UnicodeAttribute(range_key=True)
    agent_id = UnicodeAttribute()
    instance_id = UnicodeAttribute()
    pool_id = OptionalText()
    signal_type = UnicodeAttribute()
    source = UnicodeAttribute()
    event_id = OptionalText()
    status = UnicodeAttribute(default="detected")
    response_action = OptionalText()
    replica_id = OptionalText()
    new_instance_id = OptionalText()
    new_pool_id = OptionalText()
    new_lifecycle = OptionalText()
    handover = OptionalText()
    execution_arn = OptionalText()
    error = OptionalText()
    success = BooleanAttribute(null=True)
    failover_time_ms = NumberAttribute(null=True)
    detected_at = UTCDateTimeAttribute()
    termination_time = UTCDateTimeAttribute(null=True)
    decided_at = UTCDateTimeAttribute(null=True)
    replacement_ready_at = UTCDateTimeAttribute(null=True)
    traffic_moved_at = UTCDateTimeAttribute(null=True)
    completed_at = UTCDateTimeAttribute(null=True)
    old_terminated_at = UTCDateTimeAttribute(null=True)
    # A step after the hand-over failed (set once: a retried failure task tells the client once, at this time).
    followup_failed_at = UTCDateTimeAttribute(null=True)
    counted_at = UTCDateTimeAttribute(null=True)  # added to its agent's interruption_count (once: count_once)
    expires_at = TTLAttribute(null=True)

    by_agent = InterruptionsByAgentIndex()


class SignalClaimTable(Model):
    """``<instance_id>#<signal group>`` → the interruption that claimed it, until the window ends (for a standby's
    signal, ``<instance_id>#standby-<group>`` → the event id its observation is recorded under)."""

    class Meta(BaseMeta):
        table_name = table_name("signal-claims")

    signal_key = UnicodeAttribute(hash_key=True)
    interruption_id = UnicodeAttribute()
    client_id = UnicodeAttribute()
    source = UnicodeAttribute()
    claimed_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()
