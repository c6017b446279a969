"""Interruption events and signal claims.

A signal is claimed and its event written in ONE transaction, so a crash can never leave a claim
without the event it names (a retry then finds the event and restarts its workflow idempotently).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from components.sentinel import claim_is_stale

from chalicelib.errors import NotFoundError
from chalicelib.repositories.dynamo import cancellation_codes, condition_failed, transaction_connection
from chalicelib.repositories.paging import Page, decode_token, encode_token
from chalicelib.settings import get_settings
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.interruptions import InterruptionTable, SignalClaimTable


def new_interruption_id(now: datetime) -> str:
    """Ids start with the detection time, so a client's events sort by age."""
    return f"int-{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


def claim_and_record(row: InterruptionTable, signal_key: str, now: datetime, window_s: int) -> tuple[bool, str]:
    """Claim ``signal_key`` for ``row`` and save ``row``, atomically.

    Returns (True, row id) when this call claimed it, or (False, id of the event that holds the claim)
    when another signal for the same instance and group arrived within the window (a claim exactly one
    window old is stale, as ``components.sentinel.claim_is_stale`` defines it).
    """
    expires = now + timedelta(seconds=window_s)
    claim = SignalClaimTable(signal_key, interruption_id=row.interruption_id, client_id=row.client_id,
                             source=row.source, claimed_at=now, expires_at=expires)
    row.expires_at = now + timedelta(days=get_settings().event_retention_days)
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.save(claim, condition=SignalClaimTable.signal_key.does_not_exist()
                    | (SignalClaimTable.claimed_at <= now - timedelta(seconds=window_s)))
            tx.save(row, condition=InterruptionTable.interruption_id.does_not_exist())
    except TransactWriteError as exc:
        codes = cancellation_codes(exc)
        if codes and codes[0] == "ConditionalCheckFailed":
            held = SignalClaimTable.get(signal_key, consistent_read=True)
            return False, held.interruption_id
        raise
    return True, row.interruption_id


def claim_signal(signal_key: str, event_id: str, client_id: str, source: str, now: datetime,
                 window_s: int) -> str:
    """Claim ``signal_key`` for ``event_id`` alone (a signal with no interruption event: a standby's): the id the
    signal goes by, ``event_id`` when this call claimed it, else the one that holds the live claim, so the
    agent's copy of a signal and EventBridge's are one observation whichever came first."""
    claim = SignalClaimTable(signal_key, interruption_id=event_id, client_id=client_id, source=source,
                             claimed_at=now, expires_at=now + timedelta(seconds=window_s))
    try:
        claim.save(condition=SignalClaimTable.signal_key.does_not_exist()
                   | (SignalClaimTable.claimed_at <= now - timedelta(seconds=window_s)))
    except PutError as exc:
        if not condition_failed(exc):
            raise
        return SignalClaimTable.get(signal_key, consistent_read=True).interruption_id
    return event_id


def count_once(row: InterruptionTable, now: datetime) -> bool:
    """Add the event to its agent's ``interruption_count`` (and ``last_interruption_at``) exactly once: one
    transaction that also stamps the event's ``counted_at`` only where it has none, so a redelivered or
    duplicate signal counts nothing more, and one whose first handling failed before counting counts then.
    True when this call counted; False when the event was counted before or its agent is gone."""
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.update(InterruptionTable(row.client_id, row.interruption_id),
                      actions=[InterruptionTable.counted_at.set(now)],
                      condition=InterruptionTable.interruption_id.exists()
                      & InterruptionTable.counted_at.does_not_exist())
            tx.update(AgentTable(row.client_id, row.agent_id),
                      actions=[AgentTable.last_interruption_at.set(now), AgentTable.interruption_count.add(1)],
                      condition=AgentTable.agent_id.exists())
    except TransactWriteError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            return False
        raise
    return True


def held_claim(signal_key: str, now: datetime, window_s: int) -> str | None:
    """The event holding a live claim on ``signal_key`` (one that ``claim_and_record`` would refuse), if any."""
    try:
        claim = SignalClaimTable.get(signal_key, consistent_read=True)
    except SignalClaimTable.DoesNotExist:
        return None
    return None if claim_is_stale(claim.claimed_at, now, window_s) else claim.interruption_id


def get(client_id: str, interruption_id: str) -> InterruptionTable | None:
    try:
        return InterruptionTable.get(client_id, interruption_id, consistent_read=True)
    except InterruptionTable.DoesNotExist:
        return None


def require(client_id: str, interruption_id: str) -> InterruptionTable:
    row = get(client_id, interruption_id)
    if row is None:
        raise NotFoundError("interruption not found", field="interruption_id")
    return row


def update(client_id: str, interruption_id: str, **fields: Any) -> None:
    """Set fields on an event (None removes); unknown events are left alone."""
    actions = [getattr(InterruptionTable, k).remove() if v is None else getattr(InterruptionTable, k).set(v)
               for k, v in fields.items()]
    try:
        InterruptionTable(client_id, interruption_id).update(
            actions=actions, condition=InterruptionTable.interruption_id.exists())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise


def update_if(client_id: str, interruption_id: str, expected_status: str, *, written_with: tuple = (),
              **fields: Any) -> bool:
    """Set fields only while the event still has ``expected_status``; True if this call wrote them.

    ``written_with``: new rows (a notification, an audit event: keys of their own, put on the condition that they do
    not exist) written in the same transaction, so that what tells of the change exists exactly when it does."""
    actions = [getattr(InterruptionTable, k).remove() if v is None else getattr(InterruptionTable, k).set(v)
               for k, v in fields.items()]
    if written_with:
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.update(InterruptionTable(client_id, interruption_id), actions=actions,
                          condition=InterruptionTable.status == expected_status)
                for row in written_with:
                    tx.save(row, condition=type(row)._hash_key_attribute().does_not_exist())
        except TransactWriteError as exc:
            if "ConditionalCheckFailed" in cancellation_codes(exc):
                return False
            raise
        return True
    try:
        InterruptionTable(client_id, interruption_id).update(
            actions=actions, condition=InterruptionTable.status == expected_status)
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def stuck(status: str, before: datetime) -> list[InterruptionTable]:
    """Events still in ``status`` detected before ``before`` (the cleanup job's batch scan)."""
    condition = (InterruptionTable.status == status) & (InterruptionTable.detected_at < before)
    return list(InterruptionTable.scan(filter_condition=condition))


def set_once(client_id: str, interruption_id: str, name: str, value: datetime) -> bool:
    """Stamp a timing only if it is not set yet (retried steps keep the first time); True when this call
    stamped it, False when it was already set (or the event is gone)."""
    attribute = getattr(InterruptionTable, name)
    try:
        InterruptionTable(client_id, interruption_id).update(
            actions=[attribute.set(value)],
            condition=InterruptionTable.interruption_id.exists() & attribute.does_not_exist())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
        return False
    return True


def for_agent(agent_id: str, limit: int = 50) -> list[InterruptionTable]:
    """An agent's newest events first."""
    return list(InterruptionTable.by_agent.query(agent_id, scan_index_forward=False, limit=limit))


OPEN_STATUSES = ("detected", "handling")  # an interruption event whose workflow (failover, hand-over) may still run


def open_for_agent(agent_id: str) -> InterruptionTable | None:
    """The agent's event whose workflow may still be running, among its newest five (an older one is closed or
    abandoned by the cleanup: events are handled in minutes)."""
    return next((event for event in for_agent(agent_id, limit=5) if event.status in OPEN_STATUSES), None)


def page_for_agent(agent_id: str, limit: int, next_token: str | None) -> Page:
    """An agent's events, newest first (the caller has checked the agent is theirs)."""
    start = decode_token(next_token, partition_attr="agent_id", partition_value=agent_id,
                         key_attrs=("agent_id", "interruption_id", "client_id"))
    rows = InterruptionTable.by_agent.query(agent_id, scan_index_forward=False, limit=limit, last_evaluated_key=start)
    items = list(rows)
    return Page(items, encode_token(rows.last_evaluated_key))


def page_for_client(client_id: str, limit: int, next_token: str | None) -> Page:
    """A client's events, newest first."""
    start = decode_token(next_token, partition_attr="client_id", partition_value=client_id,
                         key_attrs=("client_id", "interruption_id"))
    rows = InterruptionTable.query(client_id, scan_index_forward=False, limit=limit, last_evaluated_key=start)
    items = list(rows)
    return Page(items, encode_token(rows.last_evaluated_key))
