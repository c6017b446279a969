"""System events (audit log) and client notifications."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib.errors import InvalidInputError, NotFoundError
from chalicelib.repositories import sparse_indexes
from chalicelib.repositories.dynamo import condition_failed, delete_each, save_if
from chalicelib.repositories.paging import Page, decode_scan_token, decode_token, encode_token, read_page
from chalicelib.settings import get_settings
from chalicelib.tables.notifications import UNREAD_NOTIFICATIONS, NotificationTable, read_actions
from chalicelib.tables.system_events import SystemEventTable


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S%fZ")


# A once-key's hash digits in an event's or a notification's key. The audit log is one partition a day for every
# tenant, and the decision cycle writes each agent's event at the cycle's scheduled time: with 8 digits (32 bits) two
# agents' once-keys of one cycle could share them (by chance, or a tenant grinding its logical ids), and the second
# tenant's event was taken for a repeat of the first and never written.
ONCE_DIGITS = 16


def _suffix(once: str | None) -> str:
    return hashlib.sha256(once.encode()).hexdigest()[:ONCE_DIGITS] if once else uuid.uuid4().hex[:8]


# An event's metadata is one JSON text attribute (pynamodb's JSONAttribute escapes every non-ASCII character: an
# emoji is 12 bytes), and an item holds at most 400 KB. Reports carry what agents send (a cleanup report's ids, the
# warnings of the fields a report lost), so metadata past this bound is stored as a marker and a prefix of its text.
METADATA_MAX_BYTES = 64 * 1024


def bounded_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """``metadata`` itself when its stored text fits ``METADATA_MAX_BYTES``; otherwise ``{"truncated": true,
    "stored_bytes": n, "preview": <the text's start>}`` (stored escaped, at most twice the preview's length)."""
    if metadata is None:
        return None
    text = json.dumps(metadata)  # as JSONAttribute stores it (ASCII only)
    if len(text) <= METADATA_MAX_BYTES:
        return metadata
    return {"truncated": True, "stored_bytes": len(text), "preview": text[:METADATA_MAX_BYTES // 4]}


def _save_once(row, key_attribute, once: str | None) -> bool:
    """Save ``row``; with ``once`` only if its key (derived from ``once`` and the time) is new. True if written."""
    return save_if(row, key_attribute.does_not_exist() if once else None)


def record_event(event_type: str, message: str, now: datetime, *, severity: str = "info",
                 client_id: str | None = None, agent_id: str | None = None,
                 instance_id: str | None = None, metadata: dict[str, Any] | None = None,
                 once: str | None = None) -> bool:
    """Append one event to the day's partition of the audit log. With ``once`` (a key naming what happened)
    and the same ``now``, a retried step writes nothing the second time; returns whether it wrote. Metadata
    too large for an item is stored truncated (``bounded_metadata``)."""
    return _save_once(event_row(event_type, message, now, severity=severity, client_id=client_id, agent_id=agent_id,
                                instance_id=instance_id, metadata=metadata, once=once),
                      SystemEventTable.event_key, once)


def event_row(event_type: str, message: str, now: datetime, *, severity: str = "info",
              client_id: str | None = None, agent_id: str | None = None, instance_id: str | None = None,
              metadata: dict[str, Any] | None = None, once: str | None = None) -> SystemEventTable:
    """The row ``record_event`` writes, unwritten: for a caller that writes it in one transaction with the change it
    records."""
    return SystemEventTable(
        now.strftime("%Y-%m-%d"), f"{_stamp(now)}#{_suffix(once)}", event_type=event_type,
        severity=severity, message=message, client_id=client_id, agent_id=agent_id,
        instance_id=instance_id, metadata=bounded_metadata(metadata), created_at=now,
        expires_at=now + timedelta(days=get_settings().event_retention_days))


def event_recorded(now: datetime, once: str) -> bool:
    """Is the event ``record_event(..., now, once=once)`` writes already stored? One small read: a caller that
    repeats a record every run (a launch retried until it succeeds) reads instead of a write whose condition fails."""
    try:
        SystemEventTable.get(now.strftime("%Y-%m-%d"), f"{_stamp(now)}#{_suffix(once)}",
                             attributes_to_get=["event_key"])
    except SystemEventTable.DoesNotExist:
        return False
    return True


def recent_events(now: datetime, limit: int = 50, days: int = 2) -> list[SystemEventTable]:
    """Newest events first, reading today's partition and then earlier ones as needed."""
    found: list[SystemEventTable] = []
    for back in range(days):
        day = (now - timedelta(days=back)).strftime("%Y-%m-%d")
        found += list(SystemEventTable.query(day, scan_index_forward=False, limit=limit - len(found)))
        if len(found) >= limit:
            break
    return found


# Day partitions one page of the admin feed reads at most. A day without events costs one empty Query, and the feed
# goes back ``EVENT_RETENTION_DAYS`` (90): a page of a quiet stage, or the last page of any, queried all 91 days.
# A page that has not found ``limit`` events in that many days ends short, with a token naming the next day.
EVENT_DAYS_PER_PAGE = 14
# A token's event key that goes on from the top of its day: it sorts after every event key (they start with a digit).
WHOLE_DAY = "~"


def events_page(now: datetime, limit: int, next_token: str | None) -> Page:
    """The audit log newest first, one page at a time, back to the retention horizon (admin feed).

    Each day is one partition queried backwards; the token names the day and the last event key served, so
    the next page goes on in that day and then in earlier ones. Days without events cost one empty query: a page
    reads at most ``EVENT_DAYS_PER_PAGE`` days, and one that found fewer than ``limit`` events in them ends there
    with a token for the day before (``WHOLE_DAY``)."""
    oldest = (now - timedelta(days=get_settings().event_retention_days)).strftime("%Y-%m-%d")
    day, before = now.strftime("%Y-%m-%d"), None
    start = decode_scan_token(next_token, key_attrs=("day", "event_key"))
    if start is not None:
        day, before = start["day"]["S"], start["event_key"]["S"]
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            raise InvalidInputError("next_token is not valid", field="next_token") from None
        if day > now.strftime("%Y-%m-%d"):  # no page goes on from a day to come: it would walk back a query a day
            raise InvalidInputError("next_token is not valid", field="next_token")
    found: list[SystemEventTable] = []
    for _ in range(EVENT_DAYS_PER_PAGE):
        if day < oldest:
            return Page(found, None)
        condition = (SystemEventTable.event_key < before) if before else None
        found += list(SystemEventTable.query(day, condition, scan_index_forward=False, limit=limit - len(found)))
        if len(found) >= limit:
            return Page(found, event_token(found[-1]))
        day = (datetime.strptime(day, "%Y-%m-%d") - timedelta(days=1)).strftime("%Y-%m-%d")
        before = None
    if day < oldest:
        return Page(found, None)
    return Page(found, encode_token({"day": {"S": day}, "event_key": {"S": WHOLE_DAY}}))


def event_token(event: SystemEventTable) -> str:
    """The ``next_token`` of ``events_page`` that goes on after ``event``."""
    return encode_token({"day": {"S": event.day}, "event_key": {"S": event.event_key}})


def events_since_of_each(now: datetime, since: datetime, *, event_types: tuple[str, ...], types_limit: int,
                         severities: tuple[str, ...], severities_limit: int
                         ) -> tuple[list[SystemEventTable], list[SystemEventTable]]:
    """The newest events since ``since`` of one of ``event_types`` (at most ``types_limit``) and, apart, those of one of
    ``severities`` (at most ``severities_limit``), from one read of the log: the day partitions since ``since`` are
    queried once, newest first, filtered by either condition, until both lists are full. A read per list evaluated
    every event of the window twice (a healthy fleet's window has neither kind: each read went through all of it)."""
    condition = SystemEventTable.event_type.is_in(*event_types) | SystemEventTable.severity.is_in(*severities)
    of_type: list[SystemEventTable] = []
    of_severity: list[SystemEventTable] = []
    day = now
    while day.strftime("%Y-%m-%d") >= since.strftime("%Y-%m-%d") \
            and (len(of_type) < types_limit or len(of_severity) < severities_limit):
        for row in SystemEventTable.query(day.strftime("%Y-%m-%d"), SystemEventTable.event_key >= _stamp(since),
                                          scan_index_forward=False, filter_condition=condition):
            if row.event_type in event_types and len(of_type) < types_limit:
                of_type.append(row)
            if row.severity in severities and len(of_severity) < severities_limit:
                of_severity.append(row)
            if len(of_type) >= types_limit and len(of_severity) >= severities_limit:
                break
        day -= timedelta(days=1)
    return of_type, of_severity


def notify(client_id: str, kind: str, message: str, now: datetime, *, severity: str = "info",
           agent_id: str | None = None, once: str | None = None) -> str | None:
    """Create a notification for one client; returns its id. With ``once`` (a key naming what happened) and
    the same ``now``, a retried step creates nothing the second time and gets None."""
    row = notification_row(client_id, kind, message, now, severity=severity, agent_id=agent_id, once=once)
    written = _save_once(row, NotificationTable.notification_id, once)
    return row.notification_id if written else None


def notification_row(client_id: str, kind: str, message: str, now: datetime, *, severity: str = "info",
                     agent_id: str | None = None, once: str | None = None) -> NotificationTable:
    """The row ``notify`` writes, unwritten: for a caller that writes it in one transaction with the change it
    tells of (put it on the condition ``NotificationTable.notification_id.does_not_exist()`` when ``once``)."""
    return NotificationTable(
        client_id, f"{_stamp(now)}-{_suffix(once)}", kind=kind, severity=severity, message=message,
        agent_id=agent_id, is_read=False, created_at=now,
        expires_at=now + timedelta(days=get_settings().notification_retention_days))


# A page token of the unread index: the table's key and the index's (DynamoDB's LastEvaluatedKey of a GSI Query).
_UNREAD_KEY = ("client_id", "notification_id", "unread_client_id")


def notifications_page(client_id: str, limit: int, next_token: str | None,
                       unread_only: bool = False) -> Page:
    """A client's notifications, newest first. The unread ones only are the client's partition of the unread index
    once it is ready (its few unread rows, not its whole history filtered), with that index's token shape: a token
    of the other read is read as the same position (a page token issued before the index was ready, or by the
    full listing: the client's notifications in id order either way), the caller's own partition only; any other
    is refused (400), never passed to DynamoDB."""
    key = ("client_id", "notification_id")
    if unread_only and sparse_indexes.ready(UNREAD_NOTIFICATIONS):
        try:  # the filtered read's token (before the index was ready): the same position in the unread index
            plain = decode_token(next_token, partition_attr="client_id", partition_value=client_id, key_attrs=key)
        except InvalidInputError:
            plain = None
        if plain is not None:
            next_token = encode_token({**plain, "unread_client_id": {"S": client_id}})
        start = decode_token(next_token, partition_attr="client_id", partition_value=client_id,
                             key_attrs=_UNREAD_KEY)
        if start is not None and start["unread_client_id"] != {"S": client_id}:
            raise InvalidInputError("next_token is not valid", field="next_token")
        return read_page(NotificationTable, lambda size, at: NotificationTable.unread_by_client.query(
            client_id, scan_index_forward=False, page_size=size, last_evaluated_key=at),
            limit=limit, start=start, key_attrs=_UNREAD_KEY)
    start = decode_token(next_token, partition_attr="client_id", partition_value=client_id, key_attrs=key)
    return read_page(NotificationTable, lambda size, at: NotificationTable.query(
        client_id, scan_index_forward=False, page_size=size, last_evaluated_key=at,
        filter_condition=(NotificationTable.is_read == False) if unread_only else None),  # noqa: E712
        limit=limit, start=start, key_attrs=key)


def mark_read(client_id: str, notification_id: str, now: datetime) -> None:
    """Mark one of the client's notifications read (404 for unknown or foreign ids)."""
    try:
        NotificationTable(client_id, notification_id).update(
            actions=read_actions(now), condition=NotificationTable.notification_id.exists())
    except UpdateError as exc:
        if condition_failed(exc):
            raise NotFoundError("notification not found", field="notification_id") from exc
        raise


# Notifications one mark-all-read call marks at most (one UpdateItem each). An agent can create thousands (every
# termination report notifies, 1,200 requests a minute): marking them all in one request ran past API Gateway's
# 29 s (a 504). The answer says whether more are left (``more``); the console calls again until none are.
MARK_ALL_READ_BUDGET = 500


def mark_all_read(client_id: str, now: datetime, budget: int | None = None) -> tuple[int, bool]:
    """Mark the client's unread notifications read, oldest first, at most ``budget`` (``MARK_ALL_READ_BUDGET``);
    returns (how many changed, whether unread ones are left). The unread rows are the client's partition of the
    unread index once it is ready (the filtered Query read every notification of the client). A row gone since the
    query (its TTL, the cleaner) stays gone: an unconditioned update would write it back as a stub of two
    attributes; one already read (the index lags its writes a moment) keeps when it was read."""
    budget = MARK_ALL_READ_BUDGET if budget is None else budget
    count = 0
    unread = NotificationTable.is_read == False  # noqa: E712
    rows = NotificationTable.unread_by_client.query(client_id) if sparse_indexes.ready(UNREAD_NOTIFICATIONS) \
        else NotificationTable.query(client_id, filter_condition=unread)
    for row in rows:
        if count >= budget:
            return count, True
        try:
            row.update(actions=read_actions(now), condition=unread)
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            continue
        count += 1
    return count, False


def delete_read_before(client_id: str, cutoff: datetime, budget: int) -> int:
    """Delete the client's read notifications created before ``cutoff`` (the data cleaner; unread ones stay
    until their TTL), at most ``budget``, oldest first (ids start with their time: a key condition)."""
    rows = NotificationTable.query(client_id, NotificationTable.notification_id < _stamp(cutoff),
                                   filter_condition=NotificationTable.is_read == True)  # noqa: E712
    return delete_each(rows, NotificationTable.is_read == True, budget)  # noqa: E712
