"""A sparse index on a stage upgraded in place: rows written before it existed lack its key, and the cleanup job's
backfill gives them theirs, a slice a run, before any reader trusts the index.

The tables are the session's (other tests' rows are in them too): each test asserts on its own rows only, and puts
the index back to ready when it is done.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from chalicelib.repositories import job_state, sparse_indexes
from chalicelib.tables import SPARSE_INDEXES
from chalicelib.tables.instances import LIVE_INSTANCES, InstanceTable
from tests.conftest import invoke_schedule

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def before_backfill(aws_tables):
    """Every sparse index as on a stage deployed before it existed: not ready, the walk not begun."""
    for index in SPARSE_INDEXES:
        job_state.set_position(f"sparse-index#{index.name}", {}, NOW)
    sparse_indexes.forget_ready()
    yield
    for index in SPARSE_INDEXES:
        sparse_indexes.mark_ready(index, NOW)


def old_rows(client_id: str, active: int, closed: int) -> list[str]:
    """Instance rows as the code before the index wrote them (no ``live_client_id``: a save gives a row its key
    now, so it is taken off again)."""
    ids = []
    for n in range(active + closed):
        instance_id = f"i-{uuid.uuid4().hex[:17]}"
        row = InstanceTable(instance_id, client_id=client_id, agent_id=f"ag-{n}", is_active=n < active,
                            installed_at=NOW, updated_at=NOW)
        row.save()
        row.update(actions=[InstanceTable.live_client_id.remove()])
        ids.append(instance_id)
    return ids


def live_keys(ids: list[str]) -> list[str | None]:
    return [InstanceTable.get(i, consistent_read=True).live_client_id for i in ids]


def test_a_table_created_with_its_indexes_has_nothing_to_backfill(aws_tables):
    """ensure_tables (local mode, the tests) creates the tables empty: every sparse index is ready at once."""
    sparse_indexes.forget_ready()
    assert all(sparse_indexes.ready(index) for index in SPARSE_INDEXES)


def test_the_backfill_keys_active_rows_only_a_slice_at_a_time(before_backfill):
    client_id = f"cl-{uuid.uuid4().hex[:8]}"
    ids = old_rows(client_id, active=3, closed=2)
    assert not sparse_indexes.ready(LIVE_INSTANCES)

    runs = 0
    while not sparse_indexes.ready(LIVE_INSTANCES):
        sparse_indexes.backfill(LIVE_INSTANCES, NOW, reads=1, page_size=4)
        runs += 1
        assert runs < 10_000
    assert runs > 1, "a slice of one small page per run resumes where the last one stopped"
    assert live_keys(ids) == [client_id] * 3 + [None] * 2
    assert sorted(r.instance_id for r in InstanceTable.live.query(client_id)) == sorted(ids[:3])


def test_a_row_closed_before_the_backfill_reaches_it_is_not_keyed(before_backfill, monkeypatch):
    """The write is conditional on the row still belonging: a close between the scan and the write wins."""
    client_id = f"cl-{uuid.uuid4().hex[:8]}"
    [instance_id] = old_rows(client_id, active=1, closed=0)
    original = InstanceTable.update

    def close_first(row, actions, condition=None, **kwargs):
        if row.instance_id == instance_id and row.is_active:
            original(InstanceTable.get(instance_id), InstanceTable.close_actions())
        return original(row, actions, condition=condition, **kwargs)

    monkeypatch.setattr(InstanceTable, "update", close_first)
    while not sparse_indexes.ready(LIVE_INSTANCES):
        sparse_indexes.backfill(LIVE_INSTANCES, NOW)
    monkeypatch.undo()
    assert live_keys([instance_id]) == [None]


def test_the_cleanup_run_backfills_and_then_stops_scanning(api, before_backfill):
    client_id = f"cl-{uuid.uuid4().hex[:8]}"
    ids = old_rows(client_id, active=2, closed=1)
    first = invoke_schedule(api, "cleanup", now=NOW)
    assert first["backfilled"].get(LIVE_INSTANCES.name, 0) >= 2
    assert sparse_indexes.ready(LIVE_INSTANCES)
    assert live_keys(ids) == [client_id, client_id, None]
    assert invoke_schedule(api, "cleanup", now=NOW)["backfilled"] == {}


# --- the unread-notifications and open-replicas indexes ---------------------------------------------------------------

def test_the_backfill_keys_unread_notifications_only(before_backfill):
    """Notification rows written before the index (no ``unread_client_id``): the unread ones get it, the read don't."""
    from chalicelib.tables.notifications import UNREAD_NOTIFICATIONS, NotificationTable

    client_id = f"cl-{uuid.uuid4().hex[:8]}"
    ids = [f"20261207T1200{n:02d}000000Z-{uuid.uuid4().hex[:8]}" for n in range(4)]
    for n, notification_id in enumerate(ids):
        row = NotificationTable(client_id, notification_id, kind="test", message="old", is_read=n >= 2,
                                created_at=NOW, expires_at=NOW)
        row.save()
        row.update(actions=[NotificationTable.unread_client_id.remove()])  # as the code before the index wrote it
    assert list(NotificationTable.unread_by_client.query(client_id)) == []
    while not sparse_indexes.ready(UNREAD_NOTIFICATIONS):
        sparse_indexes.backfill(UNREAD_NOTIFICATIONS, NOW)
    keys = [NotificationTable.get(client_id, i, consistent_read=True).unread_client_id for i in ids]
    assert keys == [client_id, client_id, None, None]
    assert [r.notification_id for r in NotificationTable.unread_by_client.query(client_id)] == ids[:2]


def test_the_backfill_keys_open_replicas_only(before_backfill):
    """Replica rows written before the index (no ``open_client_id``): the open ones get it, the closed ones don't."""
    from chalicelib.tables.replicas import OPEN_REPLICAS, ReplicaTable

    client_id, agent_id = f"cl-{uuid.uuid4().hex[:8]}", f"ag-{uuid.uuid4().hex[:8]}"
    statuses = ("launching", "syncing", "ready", "promoted", "terminated", "failed", "expired")
    for n, status in enumerate(statuses):
        row = ReplicaTable(agent_id, f"rep-{n}", client_id=client_id, status=status, created_at=NOW, updated_at=NOW)
        row.save()
        row.update(actions=[ReplicaTable.open_client_id.remove()])  # as the code before the index wrote it
    while not sparse_indexes.ready(OPEN_REPLICAS):
        sparse_indexes.backfill(OPEN_REPLICAS, NOW)
    keys = [ReplicaTable.get(agent_id, f"rep-{n}", consistent_read=True).open_client_id for n in range(7)]
    assert keys == [client_id] * 3 + [None] * 4
    assert sorted(r.replica_id for r in ReplicaTable.open_by_client.query(client_id, ReplicaTable.agent_id == agent_id)
                  ) == ["rep-0", "rep-1", "rep-2"]
