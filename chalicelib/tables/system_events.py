"""Audit log and system events, partitioned by UTC day for the admin activity feed."""

from __future__ import annotations

from pynamodb.attributes import JSONAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name


class SystemEventTable(Model):
    """One event; ``event_key`` = ``<timestamp>#<id>`` orders a day's events."""

    class Meta(BaseMeta):
        table_name = table_name("system-events")

    day = UnicodeAttribute(hash_key=True)
    event_key = UnicodeAttribute(range_key=True)
    event_type = UnicodeAttribute()
    severity = UnicodeAttribute(default="info")
    message = UnicodeAttribute()
    client_id = OptionalText()
    agent_id = OptionalText()
    instance_id = OptionalText()
    metadata = JSONAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()
