"""Routes that list what is open (unread notifications, open standbys) read the open rows, not the history: the sparse
indexes of unread notifications and open replicas (``chalicelib.tables.notifications``/``replicas``). A client with a
long history (1,000 notifications, 300 closed standbys: tests/api/read_scaling_support.py) reads a handful of items
where the filtered reads evaluated every row of the partition (1,001 and 302 in docs/benchmarks.md).

Also: every write keeps the index key present iff the row is unread / open (the flows that create and move
replicas and notifications), and until an index is ready (a stage upgraded in place, its backfill not done) the
routes answer right from the filtered reads, for rows written before the index existed.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from components.replica_coordinator import ReplicaStatus

from chalicelib.repositories import activity, sparse_indexes
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import job_state
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import NotificationTable, ReplicaTable
from chalicelib.tables.notifications import UNREAD_NOTIFICATIONS
from chalicelib.tables.replicas import ACTIVE_STATUSES, OPEN_REPLICAS
from tests.api._support import assert_error
from tests.api.read_scaling_support import History, history, reads
from tests.conftest import registration

LONG = History(notifications=1000, unread=5, replicas=300)
HANDFUL = 10  # items a route over the open rows may read (it read the partition: 1,001 and 302)


def _tenant(make_tenant, size: History):
    """A client with ``size`` of history, its agent and one open standby (launching, no instance yet: offered)."""
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration())
    assert status == 200, reply
    agent_id = reply["agent_id"]
    history(client_id, agent_id, size)
    now = datetime.now(timezone.utc)
    standby = replica_repo.create(agent_repo.require(client_id, agent_id), replica_id=replica_repo.new_replica_id(now),
                                  replica_type="manual", lifecycle="spot", pool_id=None, az=None,
                                  created_by="agent", now=now, take_slot=False)
    caller.get("/api/client/validate")  # the container knows the token
    return client_id, caller, agent_id, standby.replica_id


def _read(caller, method: str, path: str, table: str):
    with reads() as seen:
        status, reply = caller.call(method, path)
    assert status == 200, (path, reply)
    return reply, seen.table_items[table]


def _unread_ids(client_id: str) -> list[str]:
    return sorted(r.notification_id for r in NotificationTable.query(client_id, consistent_read=True)
                  if not r.is_read)


# --- the read counts ---------------------------------------------------------------------------------------------

def test_the_unread_listing_and_mark_all_read_read_the_unread_rows_not_the_history(make_tenant):
    """GIVEN a client with 1,000 notifications, 5 unread WHEN it lists its unread ones and marks all read THEN each
    reads at most a handful of notification items (the filtered Query read all 1,000), lists the 5 newest first, and
    marks the 5 read; the listing is then empty."""
    client_id, caller, _, _ = _tenant(make_tenant, LONG)
    unread = _unread_ids(client_id)
    assert len(unread) == 5
    reply, items = _read(caller, "GET", "/api/notifications?unread=true", "notification")
    assert [n["id"] for n in reply["notifications"]] == unread[::-1] and reply["next_token"] is None, reply
    assert items <= HANDFUL, items
    reply, items = _read(caller, "POST", "/api/notifications/mark-all-read", "notification")
    assert (reply["updated"], reply["more"]) == (5, False), reply
    assert items <= HANDFUL, items
    assert _unread_ids(client_id) == []
    reply, items = _read(caller, "GET", "/api/notifications?unread=true", "notification")
    assert reply["notifications"] == [] and items <= HANDFUL, (reply, items)


def test_the_open_replica_routes_read_the_open_rows_not_the_history(make_tenant):
    """GIVEN an agent with 300 closed standbys and one open WHEN the client (and a legacy agent's poll) reads its open
    replicas: the default listing, ``status=launching``, ``replica-config``, the overview's count and the client's
    active standbys THEN each reads at most a handful of replica items (they read all 301: the agent's partition or
    the client's replicas-by-client partition, filtered) and answers the one open standby."""
    client_id, caller, agent_id, replica_id = _tenant(make_tenant, LONG)
    for path in (f"/api/agents/{agent_id}/replicas", f"/api/agents/{agent_id}/replicas?status=launching"):
        reply, items = _read(caller, "GET", path, "replica")
        assert [r["id"] for r in reply["replicas"]] == [replica_id] and reply["next_token"] is None, (path, reply)
        assert items <= HANDFUL, (path, items)
    reply, items = _read(caller, "GET", f"/api/agents/{agent_id}/replica-config", "replica")
    assert reply["count"] == 1 and items <= HANDFUL, (reply, items)
    reply, items = _read(caller, "GET", f"/api/client/{client_id}", "replica")
    assert reply["replicas_active"] == 1 and items <= HANDFUL, (reply, items)
    reply, items = _read(caller, "GET", f"/api/client/{client_id}/replicas", "replica")
    assert [r["id"] for r in reply["replicas"]] == [replica_id] and items <= HANDFUL, (reply, items)


def _token(key: dict) -> str:
    raw = json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_the_unread_listing_pages_by_its_own_token_and_refuses_another(make_tenant):
    """GIVEN 5 unread notifications WHEN they are listed 2 a page THEN the pages list each once, newest first; a
    token naming another client's unread partition is a 400 on the unread listing, and the unread listing's token a
    400 on the full one: never a 500. A token of the full listing's shape (as the filtered read issued before the
    index was ready) is the same position on the unread listing."""
    client_id, caller, _, _ = _tenant(make_tenant, History(notifications=12, unread=5))
    listed, token = [], None
    for _ in range(5):
        status, reply = caller.get("/api/notifications?unread=true&limit=2" + (f"&next_token={token}" if token else ""))
        assert status == 200, reply
        listed += [n["id"] for n in reply["notifications"]]
        token = reply["next_token"]
        if not token:
            break
    assert listed == _unread_ids(client_id)[::-1], listed
    status, reply = caller.get("/api/notifications?unread=true&limit=2")
    unread_token = reply["next_token"]
    status, reply = caller.get("/api/notifications?limit=2")
    full_token = reply["next_token"]
    assert unread_token and full_token
    last = listed[1]
    foreign = _token({"client_id": {"S": client_id}, "notification_id": {"S": last},
                      "unread_client_id": {"S": "cl-someone-else"}})
    status, reply = caller.get(f"/api/notifications?unread=true&limit=2&next_token={full_token}")
    assert status == 200, reply  # the filtered read's shape (before the index was ready): the same position
    for path in (f"/api/notifications?unread=true&next_token={foreign}",
                 f"/api/notifications?next_token={unread_token}"):
        status, reply = caller.get(path)
        assert_error(status, reply, 400, field="next_token")


# --- the invariant: the key is there iff the row is unread / open ----------------------------------------------------

def assert_notification_keys(client_id: str) -> None:
    rows = list(NotificationTable.query(client_id, consistent_read=True))
    assert rows
    bad = [(r.notification_id, r.is_read, r.unread_client_id) for r in rows
           if r.unread_client_id != (None if r.is_read else client_id)]
    assert bad == [], bad


def assert_replica_keys(agent_id: str) -> list[ReplicaTable]:
    rows = list(ReplicaTable.query(agent_id, consistent_read=True))
    bad = [(r.replica_id, r.status, r.open_client_id) for r in rows
           if r.open_client_id != (r.client_id if r.status in ACTIVE_STATUSES else None)]
    assert bad == [], bad
    return rows


def test_notify_and_marking_read_keep_the_unread_key(make_tenant):
    """notify writes an unread row with its key; mark-read and mark-all-read remove it with the flag."""
    client_id, caller = make_tenant()
    now = datetime.now(timezone.utc)
    ids = [activity.notify(client_id, "test", f"n{n}", now + timedelta(seconds=n)) for n in range(4)]
    assert_notification_keys(client_id)
    assert caller.post(f"/api/notifications/{ids[0]}/mark-read", {})[0] == 200
    assert_notification_keys(client_id)
    assert [r.notification_id for r in NotificationTable.unread_by_client.query(client_id)] == ids[1:]
    status, reply = caller.post("/api/notifications/mark-all-read", {})
    assert status == 200 and reply["updated"] == 3, reply
    assert_notification_keys(client_id)
    assert list(NotificationTable.unread_by_client.query(client_id)) == []


def test_every_replica_flow_keeps_the_open_key(make_tenant):
    """Create (an agent's record, the coordinator's), syncing, ready, promote, close by DELETE, a failover's
    replacement failed, the coordinator's runs: after each, a replica row carries ``open_client_id`` iff it is open."""
    from chalicelib.jobs import replica_coordinator
    from tests.api.test_replicas import agent_recorded_standby, manual_agent

    # an agent's own standby: created launching, syncing on its PUT, ready, then closed by DELETE
    caller, agent_id, instance_id, path = agent_recorded_standby(make_tenant)
    rid = path.rsplit("/", 1)[-1]
    assert_replica_keys(agent_id)
    assert caller.call("PUT", path, {"instance_id": instance_id})[0] == 200
    assert_replica_keys(agent_id)
    assert caller.post(f"{path}/status", {"status": "ready"})[0] == 200
    assert [r.replica_id for r in assert_replica_keys(agent_id) if r.open_client_id] == [rid]
    assert caller.call("DELETE", path)[0] == 200
    assert [r.open_client_id for r in assert_replica_keys(agent_id)] == [None]

    # the coordinator's standby (server-launched), made ready, promoted; a failover's replacement that failed
    client_id, caller, agent_id, primary, itype = manual_agent(make_tenant)
    agent = agent_repo.require(client_id, agent_id)
    now = datetime.now(timezone.utc)
    replica_coordinator.reconcile_agent(agent, now)
    [standby] = [r for r in assert_replica_keys(agent_id) if r.open_client_id]
    replica_coordinator.reconcile_agent(agent_repo.require(client_id, agent_id), now + timedelta(minutes=5))
    assert_replica_keys(agent_id)
    record = replica_repo.get(agent_id, standby.replica_id)
    if record.status.value != "ready":
        record = replica_repo.transition(record, ReplicaStatus.READY, now)
    assert_replica_keys(agent_id)
    assert replica_repo.promote(agent_repo.require(client_id, agent_id), record, old_instance_id=primary,
                                new_az=record.az, new_pool_id=record.pool_id, new_mode="spot", now=now)
    assert_replica_keys(agent_id)
    replacement = replica_repo.create(agent_repo.require(client_id, agent_id),
                                      replica_id=f"emg-{replica_repo.new_replica_id(now)}-spot",
                                      replica_type="automatic-termination", lifecycle="spot",
                                      pool_id=f"{itype}.us-east-1b", az="us-east-1b", created_by="failover",
                                      now=now, take_slot=False, interruption_id="int-test")
    assert [r.replica_id for r in assert_replica_keys(agent_id) if r.open_client_id] == [replacement.replica_id]
    replica_repo.transition(replacement, ReplicaStatus.FAILED, now, error_message="no capacity")
    rows = assert_replica_keys(agent_id)
    assert {r.status for r in rows} >= {"promoted", "failed"}
    replica_coordinator.reconcile_agent(agent_repo.require(client_id, agent_id), now + timedelta(minutes=10))
    assert_replica_keys(agent_id)


@pytest.mark.parametrize("row, action, key", [
    (lambda: NotificationTable("cl-x", "n-1"), lambda: NotificationTable.is_read.set(True), "unread_client_id"),
    (lambda: ReplicaTable("ag-x", "r-1"), lambda: ReplicaTable.status.set("failed"), "open_client_id"),
], ids=["is_read", "status"])
def test_an_update_of_what_the_key_derives_from_without_the_key_is_refused(row, action, key):
    """The guard (``SparseKeyed``): a writer that sets the flag or the status by hand, forgetting the key (instead of
    ``read_actions`` / ``status_actions``), fails before anything is sent, alone or in a transaction."""
    from pynamodb.transactions import TransactWrite

    from chalicelib.repositories.dynamo import transaction_connection

    with pytest.raises(ValueError, match=key):
        row().update(actions=[action()])
    with pytest.raises(ValueError, match=key), TransactWrite(connection=transaction_connection()) as tx:
        tx.update(row(), actions=[action()])


# --- before the index is ready: the filtered reads, for rows written without the key ----------------------------------

@pytest.fixture
def indexes_not_ready(aws_tables):
    """The two indexes as on a stage upgraded in place before their backfill: not ready, the walk not begun."""
    now = datetime.now(timezone.utc)
    for index in (UNREAD_NOTIFICATIONS, OPEN_REPLICAS):
        job_state.set_position(f"sparse-index#{index.name}", {}, now)
    sparse_indexes.forget_ready()
    yield
    for index in (UNREAD_NOTIFICATIONS, OPEN_REPLICAS):
        sparse_indexes.mark_ready(index, now)


def _strip_keys(client_id: str, agent_id: str) -> None:
    """The client's rows as the code before the indexes wrote them: no ``unread_client_id``/``open_client_id``."""
    for row in NotificationTable.query(client_id):
        row.update(actions=[NotificationTable.unread_client_id.remove()])
    for row in ReplicaTable.query(agent_id):
        row.update(actions=[ReplicaTable.open_client_id.remove()])


def test_before_the_indexes_are_ready_the_routes_answer_from_the_filtered_reads(make_tenant, indexes_not_ready):
    """GIVEN rows without the index keys (written before the indexes existed) and the indexes not ready WHEN the
    routes are read THEN they answer what the rows hold (the index has none of them); mark-all-read marks them."""
    client_id, caller, agent_id, replica_id = _tenant(make_tenant, History(notifications=20, unread=3, replicas=4))
    _strip_keys(client_id, agent_id)
    assert not sparse_indexes.ready(UNREAD_NOTIFICATIONS) and not sparse_indexes.ready(OPEN_REPLICAS)
    unread = _unread_ids(client_id)
    status, reply = caller.get("/api/notifications?unread=true")
    assert status == 200 and [n["id"] for n in reply["notifications"]] == unread[::-1], reply
    for path in (f"/api/agents/{agent_id}/replicas", f"/api/agents/{agent_id}/replicas?status=launching"):
        status, reply = caller.get(path)
        assert status == 200 and [r["id"] for r in reply["replicas"]] == [replica_id], (path, reply)
    assert caller.get(f"/api/agents/{agent_id}/replica-config")[1]["count"] == 1
    assert caller.get(f"/api/client/{client_id}")[1]["replicas_active"] == 1
    status, reply = caller.get(f"/api/client/{client_id}/replicas")
    assert status == 200 and [r["id"] for r in reply["replicas"]] == [replica_id], reply
    assert [r.replica_id for r in replica_repo.open_for_agent(client_id, agent_id)] == [replica_id]
    status, reply = caller.post("/api/notifications/mark-all-read", {})
    assert status == 200 and (reply["updated"], reply["more"]) == (3, False), reply
    assert _unread_ids(client_id) == []
