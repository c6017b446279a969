"""What a read route costs in DynamoDB, and a client with a long history to measure it on.

``reads()`` counts the DynamoDB calls made inside it and the items they read (a Query's or Scan's
``ScannedCount``: what DynamoDB evaluated and charges for, filter or not; a GetItem's item; a BatchGetItem's
items), at the botocore client, as ``tests.conftest.dynamodb_calls`` does. Counts, never times.

``history()`` writes a client's past straight into the tables (batch writes: seconds, not the minutes the API would
take): closed instance rows, switches spread over days, notifications (read ones and a few unread), closed standbys.
"""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from tests.conftest import new_instance_id


@dataclass
class Reads:
    """DynamoDB calls by operation and the items they read."""

    calls: Counter = field(default_factory=Counter)
    items: int = 0
    table_calls: Counter = field(default_factory=Counter)  # by table name's last part ("instances")
    table_items: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __str__(self) -> str:
        return f"{self.total} calls {dict(self.calls)}, {self.items} items"


def _items_read(op: str, reply: dict) -> int:
    if op in ("Query", "Scan"):
        return int(reply.get("ScannedCount", reply.get("Count", 0)))
    if op == "GetItem":
        return 1 if reply.get("Item") else 0
    if op == "BatchGetItem":
        return sum(len(rows) for rows in reply.get("Responses", {}).values())
    return 0


def _short(name: str) -> str:
    """A table's name without the stage prefix: ``spot-optimizer-dev-instances`` → ``instances``."""
    from chalicelib.tables import ALL_TABLES

    for table in ALL_TABLES:
        if table.Meta.table_name == name:
            return table.__name__.removesuffix("Table").lower()
    return name


def _full(params: dict, short: str) -> str:
    return next((name for name in params.get("RequestItems", {}) if _short(name) == short), short)


def _tables(op: str, params: dict) -> list[str]:
    if "TableName" in params:
        return [_short(params["TableName"])]
    return [_short(name) for name in params.get("RequestItems", {})]


@contextmanager
def reads():
    """Count every DynamoDB call made inside, and the items read."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call
    seen = Reads()

    def counted(client, op, params):
        reply = original(client, op, params)
        if client.meta.service_model.service_name == "dynamodb":
            seen.calls[op] += 1
            seen.items += _items_read(op, reply)
            for table in _tables(op, params):
                seen.table_calls[table] += 1
                seen.table_items[table] += _items_read(op, {"Responses": {table: reply.get("Responses", {}).get(
                    _full(params, table), [])}} if op == "BatchGetItem" else reply)
        return reply

    BaseClient._make_api_call = counted
    try:
        yield seen
    finally:
        BaseClient._make_api_call = original


@dataclass(frozen=True)
class History:
    instances: int = 0
    switch_days: int = 0
    switches_a_day: int = 0
    notifications: int = 0
    unread: int = 0
    replicas: int = 0


def history(client_id: str, agent_id: str, size: History, now: datetime | None = None) -> None:
    """Write ``size`` of past for the client's agent: closed instance rows (installed over the last 90 days),
    switches (``switches_a_day`` on each of the last ``switch_days`` days), notifications (the oldest ``unread`` of
    them unread, the rest read; one a minute back from an hour ago) and closed standbys."""
    from chalicelib.repositories.replicas import new_replica_id
    from chalicelib.repositories.switches import switch_key
    from chalicelib.tables import InstanceTable, NotificationTable, ReplicaTable, SwitchTable

    now = now or datetime.now(timezone.utc)
    with InstanceTable.batch_write() as batch:
        for n in range(size.instances):
            installed = now - timedelta(days=90) + timedelta(minutes=60 * n % (89 * 24 * 60))
            batch.save(InstanceTable(new_instance_id(), client_id=client_id, agent_id=agent_id,
                                     instance_type="m5.large", region="eu-west-1", az="eu-west-1a",
                                     mode="spot", pool_id="m5.large.eu-west-1a", role="primary", is_active=False,
                                     installed_at=installed, updated_at=installed + timedelta(hours=1),
                                     terminated_at=installed + timedelta(hours=1)))
    with SwitchTable.batch_write() as batch:
        for day in range(size.switch_days):
            for k in range(size.switches_a_day):
                at = now - timedelta(days=day, hours=1 + k)
                switch_id = uuid.uuid4().hex
                batch.save(SwitchTable(client_id, switch_key(at, switch_id), switch_id=switch_id, agent_id=agent_id,
                                       new_instance_id=new_instance_id(), old_instance_id=new_instance_id(),
                                       old_mode="spot", new_mode="spot", initiated_at=at, recorded_at=at))
    with NotificationTable.batch_write() as batch:
        for n in range(size.notifications):
            at = now - timedelta(hours=1, minutes=size.notifications - n)
            unread = n < size.unread
            batch.save(NotificationTable(client_id, f"{at.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}",
                                         kind="agent_terminated", message="old news", is_read=not unread,
                                         created_at=at, read_at=None if unread else at,
                                         expires_at=now + timedelta(days=30)))
    with ReplicaTable.batch_write() as batch:
        for n in range(size.replicas):
            at = now - timedelta(days=60) + timedelta(minutes=n)
            batch.save(ReplicaTable(agent_id, new_replica_id(at),
                                    client_id=client_id, status="terminated", instance_id=new_instance_id(),
                                    created_at=at, updated_at=at, terminated_at=at))


def live_fleet(caller, count: int = 3) -> list[tuple[str, str]]:
    """``count`` agents registered by the client of ``caller`` (one active instance row each):
    [(agent_id, instance_id)]."""
    from tests.conftest import registration

    fleet = []
    for n in range(count):
        body = registration(logical_agent_id=f"live-{n}")
        status, reply = caller.post("/api/agents/register", body)
        assert status == 200, reply
        fleet.append((reply["agent_id"], body["instance_id"]))
    return fleet
