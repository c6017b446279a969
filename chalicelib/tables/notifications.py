"""Client notifications; ids start with a timestamp so the sort key orders them in time."""

from __future__ import annotations

from datetime import datetime

from pynamodb.attributes import BooleanAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, SparseIndex, SparseKeyed, table_name


class UnreadByClientIndex(GlobalSecondaryIndex):
    """A client's unread notifications only (sparse: ``unread_client_id`` is set while the row is unread), in time
    order: the unread listing and mark-all-read read what is unread, not the client's whole history."""

    class Meta:
        index_name = "unread-notifications-by-client"
        projection = AllProjection()

    unread_client_id = UnicodeAttribute(hash_key=True)
    notification_id = UnicodeAttribute(range_key=True)


class NotificationTable(SparseKeyed, Model):
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
    # ``client_id`` while unread (absent once read): the key of ``unread_by_client``, the index of
    # UNREAD_NOTIFICATIONS. Never set by hand: every put derives it (``SparseKeyed``), every update marking a row
    # read uses ``read_actions``.
    unread_client_id = OptionalText()

    unread_by_client = UnreadByClientIndex()

    sparse_key = "unread_client_id"
    sparse_sources = frozenset({"is_read", "client_id"})

    def sparse_value(self) -> str | None:
        return None if self.is_read else self.client_id


def read_actions(now: datetime) -> list[Action]:
    """The update actions that mark a notification read: the flag, when, and its leaving the unread index."""
    return [NotificationTable.is_read.set(True), NotificationTable.read_at.set(now),
            NotificationTable.unread_client_id.remove()]


UNREAD_NOTIFICATIONS = SparseIndex(name="unread-notifications", model=NotificationTable,
                                   belongs=lambda: NotificationTable.is_read == False)  # noqa: E712
