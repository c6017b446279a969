"""Client notifications; ids start with a timestamp so the sort key orders them in time."""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name


class NotificationTable(Model):
    """One notification for one client (no global rows, unlike the legacy server's)."""

    class Meta(BaseMeta):
        table_name = table_name("notifications")

    client_id = UnicodeAttribute(hash_key=True)
    notification_id = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()
    severity = UnicodeAttribute(default="info")
    message = UnicodeAttribute()
    agent_id = OptionalText()
    is_read = BooleanAttribute(default=False)
    created_at = UTCDateTimeAttribute()
    read_at = UTCDateTimeAttribute(null=True)
    expires_at = TTLAttribute()
