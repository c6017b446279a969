"""Read routes cost what their answer shows, not what the client's history holds (the scale walk): for each fixed
route, a client with a short and one with a long history (closed standbys, empty audit days, ...) read the same
number of rows of the table in question, counted at the botocore client (tests/api/read_scaling_support.py).
Counts, never times. The numbers of every read route are in tests/api/test_read_scaling_report.py (opt-in)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.api.read_scaling_support import History, history, live_fleet, reads
from tests.conftest import registration


def _agent(make_tenant, size: History):
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration())
    assert status == 200, reply
    history(client_id, reply["agent_id"], size)
    caller.get("/api/client/validate")  # the container knows the token
    return client_id, caller, reply["agent_id"]


# --- an agent's replicas: a page reads the page (and one more row), not every closed standby -------------------------

def _replica_reads(caller, agent_id: str, query: str):
    with reads() as seen:
        status, reply = caller.get(f"/api/agents/{agent_id}/replicas?{query}")
    assert status == 200, reply
    return reply, seen.table_items["replica"], seen.table_calls["replica"]


def test_a_page_of_an_agents_replicas_reads_the_page_not_its_history(make_tenant):
    """GIVEN agents with 30 and with 240 closed standbys WHEN a page of 10 is listed with the closed ones (the console
    asks for 20), first and next THEN each page reads at most 11 replica rows in one Query, whatever the history (it
    read all 240)."""
    for size in (30, 240):
        _, caller, agent_id = _agent(make_tenant, History(replicas=size))
        first, items, calls = _replica_reads(caller, agent_id, "include_terminated=true&limit=10")
        assert len(first["replicas"]) == 10 and first["next_token"], first
        assert items <= 11 and calls == 1, (size, items, calls)
        second, items, calls = _replica_reads(caller, agent_id, f"include_terminated=true&limit=10"
                                              f"&next_token={first['next_token']}")
        assert items <= 11 and calls == 1, (size, items, calls)
        ids = [r["id"] for r in first["replicas"] + second["replicas"]]
        assert ids == sorted(ids) and len(set(ids)) == 20 and first["replicas"][-1]["id"] < second["replicas"][0]["id"]


def test_paging_an_agents_replicas_lists_each_once_in_id_order(make_tenant):
    """GIVEN an agent with 23 closed standbys WHEN every page of 5 is read (with the closed ones), and with
    ``status=terminated`` THEN each replica is listed once, in id order, the last page without a token; the
    active-only default lists none (the read goes on through the history and finds nothing)."""
    _, caller, agent_id = _agent(make_tenant, History(replicas=23))
    for query in ("include_terminated=true", "status=terminated"):
        listed, token = [], None
        for _ in range(10):
            reply, _, _ = _replica_reads(caller, agent_id, f"{query}&limit=5" + (f"&next_token={token}" if token else ""))
            listed += [r["id"] for r in reply["replicas"]]
            token = reply["next_token"]
            if token is None:
                break
        assert len(listed) == 23 and listed == sorted(set(listed)), (query, listed)
    reply, _, _ = _replica_reads(caller, agent_id, "limit=5")
    assert reply == {"replicas": [], "next_token": None}, reply


# --- the admin activity feed: a page reads a bounded number of days, not one empty Query per day of the retention ---

def test_a_page_of_a_quiet_activity_log_reads_a_bounded_number_of_days(admin, monkeypatch):
    """GIVEN an audit log with one event today and one 40 days ago, nothing else in the 90 days kept (a quiet stage)
    WHEN the admin feed is walked page by page THEN no page sends more than ``EVENT_DAYS_PER_PAGE`` (14) Queries of the
    log (the first page sent 91, one per day back to the horizon), and the walk lists both events, newest first, once,
    and ends (no token) at the horizon."""
    import uuid

    from chalicelib import clock
    from chalicelib.repositories import activity

    now = datetime(2031, 5, 20, 12, 0, tzinfo=timezone.utc) + timedelta(minutes=uuid.uuid4().int % 10_000)
    monkeypatch.setattr(clock, "now", lambda: now)
    marker = f"quiet-{uuid.uuid4().hex[:8]}"
    for days in (0, 40):
        activity.record_event("test_event", f"{marker}-{days}", now - timedelta(days=days, minutes=1))
    seen, token, pages = [], None, 0
    while True:
        with reads() as counted:
            status, body = admin.get("/api/admin/activity?limit=50" + (f"&next_token={token}" if token else ""))
        assert status == 200, body
        assert counted.table_calls["systemevent"] <= 14, (pages, dict(counted.table_calls))  # EVENT_DAYS_PER_PAGE
        seen += [e["message"] for e in body["events"] if e["message"].startswith(marker)]
        token, pages = body["next_token"], pages + 1
        if token is None:
            break
        assert pages < 20, "the walk does not end"
    assert seen == [f"{marker}-0", f"{marker}-40"]


# --- the client's standbys: their primaries in one BatchGetItem, not one GetItem per agent on the page ----------------

def test_a_page_of_the_clients_standbys_reads_their_agents_in_one_request(make_tenant):
    """GIVEN a client with 6 agents, each with a ready standby (and one agent with a closed one) WHEN its standbys are
    listed (active, then all) THEN each standby comes with its own agent's primary, and the agents are read in one
    BatchGetItem (it was one GetItem per agent on the page: 6)."""
    from chalicelib.repositories.replicas import new_replica_id
    from chalicelib.tables import ReplicaTable

    client_id, caller = make_tenant()
    agents = {}
    for n in range(6):
        body = registration(logical_agent_id=f"owner-{n}", hostname=f"host-{n}")
        status, reply = caller.post("/api/agents/register", body)
        assert status == 200, reply
        agents[reply["agent_id"]] = body
    now = datetime.now(timezone.utc) - timedelta(hours=1)
    for n, agent_id in enumerate(agents):
        at = now + timedelta(seconds=n)
        ReplicaTable(agent_id, new_replica_id(at), client_id=client_id, status="ready", created_at=at,
                     updated_at=at, instance_id=f"i-{n:017x}").save()
    ReplicaTable(agent_id, new_replica_id(now), client_id=client_id, status="terminated", created_at=now,
                 updated_at=now).save()
    caller.get("/api/client/validate")
    for query, count in (("", 6), ("?status=all", 7)):
        with reads() as seen:
            status, reply = caller.get(f"/api/client/{client_id}/replicas{query}")
        assert status == 200 and len(reply["replicas"]) == count, reply
        assert seen.table_calls["agent"] == 1, dict(seen.table_calls)
        for row in reply["replicas"]:
            primary = row["primary"]
            assert primary["agent_id"] == row["agent_id"], row
            assert primary["instance_id"] == agents[row["agent_id"]]["instance_id"], row
            assert primary["hostname"] == agents[row["agent_id"]]["hostname"], row


# --- the admin system health: the last 24 h of the audit log read once, not once per kind of event it counts ---------

def test_system_health_reads_the_days_events_once(admin, monkeypatch):
    """GIVEN a day of 300 ordinary events, 3 failed standbys among them and 25 errors (5 critical), on a day no other
    test writes WHEN the admin reads the system health THEN it reports the 3 failures and the newest 20 errors, newest
    first, and evaluates each event of the window at most once (two filtered reads evaluated all of them twice)."""
    import uuid

    from chalicelib import clock
    from chalicelib.tables import SystemEventTable

    now = datetime(2032, 3, 10, 12, 0, tzinfo=timezone.utc) + timedelta(minutes=uuid.uuid4().int % 10_000)
    monkeypatch.setattr(clock, "now", lambda: now)
    written = []
    with SystemEventTable.batch_write() as batch:
        for n in range(300):
            at = now - timedelta(hours=20) + timedelta(minutes=4 * n)
            kind, severity = (("standby_failed", "warning") if n in (10, 150, 290)
                              else ("workflow_failed", "critical" if n % 50 == 0 else "error") if n % 12 == 0
                              else ("decision", "info"))
            row = SystemEventTable(at.strftime("%Y-%m-%d"), f"{at.strftime('%Y%m%dT%H%M%S%fZ')}#{n:08d}",
                                   event_type=kind, severity=severity, message=f"event {n}", created_at=at,
                                   expires_at=at + timedelta(days=90))
            batch.save(row)
            written.append(row)
    errors = [r for r in reversed(written) if r.severity in ("critical", "error")]
    assert len(errors) == 25
    with reads() as seen:
        status, health = admin.get("/api/admin/system-health")
    assert status == 200, health
    assert health["failed_replicas"] == 3 and health["status"] == "degraded", health
    assert [e["message"] for e in health["recent_errors"]] == [r.message for r in errors[:20]]
    assert seen.table_items["systemevent"] <= 300, dict(seen.table_items)


# --- the client's active instances: the live index's rows, not a filtered read of every instance it ever had ---------

def _live_fleet(make_tenant, closed: int):
    """A client with 3 registered agents (3 active instance rows) and ``closed`` closed instance rows."""
    client_id, caller = make_tenant()
    fleet = live_fleet(caller)
    history(client_id, fleet[-1][0], History(instances=closed))
    caller.get("/api/client/validate")
    return client_id, caller


def _admin_page_of(client_id: str) -> str:
    """A token of the admin client list whose page starts at ``client_id`` (the listing index, oldest first)."""
    from chalicelib.repositories.paging import encode_token
    from chalicelib.tables import ClientTable
    from chalicelib.tables.clients import CLIENT_LISTING

    created = ClientTable.get(client_id, consistent_read=True).created_at - timedelta(microseconds=1)
    return encode_token({"listing": {"S": CLIENT_LISTING}, "created_at": {"S": ClientTable.created_at.serialize(created)},
                         "client_id": {"S": client_id}})


def test_the_active_instance_routes_read_the_live_rows_not_the_history(make_tenant, admin):
    """GIVEN clients with 3 active instances and 0 or 600 closed ones WHEN the overview, the charts, the active
    instances (the listing's default and ``status=active``) and the client's row of the admin client list are read
    THEN each shows the 3 and reads 3 instance rows, whatever the history (each read every row of the client's
    history: 603)."""
    for closed in (0, 600):
        client_id, caller = _live_fleet(make_tenant, closed)
        c = f"/api/client/{client_id}"
        for path, shows in ((c, lambda r: r["instances_active"] == 3),
                            (f"{c}/stats/charts", lambda r: r["mode_distribution"] == {"spot": 3, "ondemand": 0}),
                            (f"{c}/instances", lambda r: len(r["instances"]) == 3 and r["next_token"] is None),
                            (f"{c}/instances?status=active", lambda r: len(r["instances"]) == 3)):
            with reads() as seen:
                status, reply = caller.get(path)
            assert status == 200 and shows(reply), (path, reply)
            assert seen.table_items["instance"] == 3, (closed, path, dict(seen.table_items))
        with reads() as seen:
            status, reply = admin.get(f"/api/admin/clients?limit=1&next_token={_admin_page_of(client_id)}")
        assert status == 200, reply
        [row] = reply["clients"]
        assert row["client_id"] == client_id and row["instances_active"] == 3, row
        assert seen.table_items["instance"] == 3, (closed, dict(seen.table_items))


def test_paging_the_active_instances_lists_each_once_newest_first(make_tenant):
    """GIVEN 3 active instances and 100 closed ones WHEN the active ones are listed 2 a page THEN 2, then 1 and no
    token, newest first, no page reading more than 3 instance rows (the second read 1,000 of the history)."""
    client_id, caller = _live_fleet(make_tenant, 100)
    listed, token, pages = [], None, 0
    while True:
        with reads() as seen:
            status, reply = caller.get(f"/api/client/{client_id}/instances?status=active&limit=2"
                                       + (f"&next_token={token}" if token else ""))
        assert status == 200, reply
        assert seen.table_items["instance"] <= 3, dict(seen.table_items)
        listed += [row["launched_at"] for row in reply["instances"]]
        token, pages = reply["next_token"], pages + 1
        if token is None:
            break
    assert pages == 2 and len(listed) == 3 and listed == sorted(listed, reverse=True), listed
