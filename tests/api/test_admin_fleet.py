"""Admin fleet routes (chalicelib/api/admin_fleet.py): stats, every agent and instance, system health, the client
list with counts and savings, the hard delete of a client, and the activity feed paged back past two days.

Savings come from the savings repository through ``admin_fleet._savings``; these tests replace it with a fake
whose figures are distinctive, so the routes are shown to pass them through, never to compute them."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from chalicelib.api import admin_fleet
from chalicelib.repositories import activity
from chalicelib.tables import (
    AgentTable,
    ClientLookupTable,
    ClientTable,
    InstanceTable,
    InterruptionTable,
    PoolTable,
    ReplicaTable,
    SwitchTable,
)
from chalicelib.tables.clients import name_lookup_key
from tests.api._support import assert_error, iso, now_utc, walk
from tests.api.test_replicas import manual_agent
from tests.conftest import Caller, invoke_schedule, registration
from tests.e2e.failover_support import state_of
from tests.integration.test_risk_scorer_scale import dynamodb_calls

GONE = ("shutting-down", "terminated")
FLEET = {"total_savings": 1234.5678, "total_actual_cost": 10.0, "total_baseline_cost": 1244.5678,
         "savings_percent": 99.2, "month_to_date_savings": 1.0, "last_30d_savings": 2.0, "currency": "USD",
         "as_of": None}


@pytest.fixture
def fake_savings(monkeypatch):
    """The savings repository as a fake: each client's total is derived from its id (distinct per client)."""
    calls = []

    def client_summary(client_id, now):
        calls.append(client_id)
        return {**FLEET, "total_savings": round(len(client_id) + 0.1234, 4)}

    fake = SimpleNamespace(fleet_summary=lambda now: dict(FLEET), client_summary=client_summary)
    monkeypatch.setattr(admin_fleet, "_savings", lambda: fake)
    return calls


def test_admin_routes_need_the_admin_key(api, tenant_with_agent):
    client_id, caller, _, _ = tenant_with_agent
    anonymous = Caller(api.http)
    for method, path in (("GET", "/api/admin/stats"), ("GET", "/api/admin/agents"), ("GET", "/api/admin/instances"),
                         ("GET", "/api/admin/system-health"), ("GET", "/api/admin/clients"),
                         ("GET", "/api/admin/activity"), ("DELETE", f"/api/admin/clients/{client_id}")):
        for who in (anonymous, caller):  # no key, and a client token (never an admin key)
            status, body = who.call(method, path)
            assert_error(status, body, 401)
    assert ClientTable.get(client_id, consistent_read=True).client_id == client_id  # not deleted


def test_stats_count_the_fleet_and_pass_the_fleet_savings_through(api, admin, tenant_with_agent, fake_savings):
    """GIVEN a stage the growth snapshot has not counted yet WHEN an admin reads the stats THEN they are counted
    then (and stored); they stay as stored until the next snapshot counts again.

    The stored counts are global: an earlier test's snapshot may have counted before this test's agent existed,
    or be stamped later than the one this test runs (``test_growth_snapshot_route`` runs one up to 20 minutes
    ahead), so the test starts from none stored."""
    from chalicelib.repositories.fleet import FLEET_COUNTS
    from chalicelib.tables.jobs import JobStateTable

    client_id, caller, agent_id, _ = tenant_with_agent
    JobStateTable(FLEET_COUNTS).delete()
    status, stats = admin.get("/api/admin/stats")
    assert status == 200, stats
    assert stats["savings"] == FLEET
    assert stats["clients_total"] >= 1 and stats["agents_total"] >= 1 and stats["agents_online"] >= 1
    assert stats["instances_active"] >= 1
    for key in ("pools_tracked", "switches_total", "switches_24h", "interruptions_24h"):
        assert isinstance(stats[key], int) and stats[key] >= 0
    assert set(stats["active_model"]) >= {"version", "source"}
    # one more client shows in the counts once the growth snapshot (every 15 minutes) has counted again
    _, other = admin.post("/api/admin/clients/create", {"name": f"stats-{uuid.uuid4().hex[:8]}"})
    status, unchanged = admin.get("/api/admin/stats")
    assert (unchanged["clients_total"], unchanged["counted_at"]) == (stats["clients_total"], stats["counted_at"])
    counted = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)  # the run's time is whole seconds
    invoke_schedule(api, "growth-snapshot", counted)
    status, again = admin.get("/api/admin/stats")
    assert again["clients_total"] >= stats["clients_total"] + 1 and again["counted_at"] == iso(counted)
    assert datetime.fromisoformat(again["counted_at"]) > datetime.fromisoformat(stats["counted_at"])


def test_stats_never_walk_the_clients_in_the_request(api, admin, tenant_with_agent, fake_savings):
    """However many clients there are, the stats request reads the stored counts: no query of a client's
    partitions (a walk of hundreds of clients outlasts API Gateway's 29 s)."""
    invoke_schedule(api, "growth-snapshot", datetime.now(UTC))
    with dynamodb_calls() as calls:
        status, stats = admin.get("/api/admin/stats")
    assert status == 200, stats
    walked = {AgentTable.Meta.table_name, SwitchTable.Meta.table_name, InterruptionTable.Meta.table_name,
              ClientTable.Meta.table_name, PoolTable.Meta.table_name}
    assert not [c for c in calls if c[1] in walked], calls


def test_all_agents_lists_every_client_with_its_client_id_and_filters_by_status(admin, make_tenant,
                                                                                tenant_with_agent):
    client_id, _, agent_id, _ = tenant_with_agent
    rows = walk(admin, "/api/admin/agents", "agents", stop=lambda r: any(a["agent_id"] == agent_id for a in r))
    mine = [a for a in rows if a["agent_id"] == agent_id]
    assert mine and mine[0]["client_id"] == client_id and mine[0]["status"] == "online"
    online = walk(admin, "/api/admin/agents?status=online", "agents", limit=100)
    assert online and {a["status"] for a in online} == {"online"}
    assert any(a["agent_id"] == agent_id for a in online)
    status, body = admin.get("/api/admin/agents?status=sleeping")
    assert_error(status, body, 400, field="status")
    status, body = admin.get("/api/admin/agents?next_token=bm9wZQ")
    assert_error(status, body, 400, field="next_token")


def test_all_instances_filter_by_status_mode_and_region(admin, tenant_with_agent):
    client_id, _, agent_id, reg = tenant_with_agent
    query = "/api/admin/instances?status=active&mode=spot&region=eu-west-1"
    rows = walk(admin, query, "instances")
    assert {(i["status"], i["mode"], i["region"]) for i in rows} == {("active", "spot", "eu-west-1")}
    mine = [i for i in rows if i["instance_id"] == reg["instance_id"]]
    assert mine and mine[0]["client_id"] == client_id and mine[0]["agent_id"] == agent_id
    assert not any(i["instance_id"] == reg["instance_id"]
                   for i in walk(admin, "/api/admin/instances?status=terminated", "instances"))
    assert not any(i["instance_id"] == reg["instance_id"]
                   for i in walk(admin, "/api/admin/instances?region=us-east-1", "instances"))
    for bad, field in (("status=gone", "status"), ("mode=reserved", "mode"), ("region=eu%20west", "region"),
                       ("region=%EF%BD%85u-west-1", "region"), ("region=EU-WEST-1", "region"),  # fullwidth e; upper
                       ("region=eu-west-1%0A", "region"), ("next_token=bm9wZQ", "next_token")):
        status, body = admin.get(f"/api/admin/instances?{bad}")
        assert_error(status, body, 400, field=field)


def test_system_health_reports_checks_stale_agents_failed_standbys_and_errors(admin):
    now = now_utc()
    marker = f"health-{uuid.uuid4().hex[:8]}"
    activity.record_event("standby_failed", marker, now, severity="warning")
    activity.record_event("workflow_failed", marker, now, severity="critical")
    status, health = admin.get("/api/admin/system-health")
    assert status == 200, health
    assert health["checks"]["dynamodb"] == "ok" and health["failed_replicas"] >= 1
    assert isinstance(health["stale_agents"], int)
    assert any(e["message"] == marker and e["severity"] == "critical" for e in health["recent_errors"])
    assert health["status"] == "degraded"  # a critical event and a failed standby in the last 24 h
    assert "version" in health["active_model"]


def test_client_list_has_counts_and_the_savings_repositorys_total(admin, make_tenant, fake_savings):
    from tests.conftest import registration

    client_id, caller = make_tenant()
    for _ in range(2):
        assert caller.post("/api/agents/register", registration())[0] == 200
    rows = walk(admin, "/api/admin/clients", "clients", stop=lambda r: any(c["client_id"] == client_id for c in r))
    mine = [c for c in rows if c["client_id"] == client_id][0]
    assert (mine["agents_total"], mine["agents_online"], mine["instances_active"]) == (2, 2, 2)
    assert mine["total_savings"] == round(len(client_id) + 0.1234, 4) and client_id in fake_savings
    assert "token_hash" not in mine and mine["name"]


def test_delete_client_terminates_what_we_launched_removes_every_row_and_its_token(api, admin, make_tenant):
    client_id, caller, agent_id, primary, _ = manual_agent(make_tenant)
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201, standby
    assert state_of(standby["instance_id"]) in ("pending", "running")
    name = ClientTable.get(client_id).name

    status, body = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200, body
    assert body["success"] is True and body["client_id"] == client_id
    assert body["deleted"]["agents"] == 1 and body["deleted"]["instances"] >= 1 and body["deleted"]["replicas"] == 1
    assert body["terminated_instances"] == [standby["instance_id"]]
    # the standby we launched is gone; the customer's own primary is not ours to terminate
    assert state_of(standby["instance_id"]) in GONE and state_of(primary) == "running"
    # no row of the client is left, and the token is unknown (401)
    assert list(AgentTable.query(client_id)) == [] and list(InstanceTable.by_client.query(client_id)) == []
    assert list(ReplicaTable.query(agent_id)) == []
    with pytest.raises(ClientLookupTable.DoesNotExist):
        ClientLookupTable.get(name_lookup_key(name))
    status, reply = caller.get("/api/client/validate")
    assert_error(status, reply, 401)
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert_error(status, reply, 401)
    # the name is free again, and a second delete is 404
    status, again = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert_error(status, again, 404, code="not_found")
    assert admin.post("/api/admin/clients/create", {"name": name})[0] == 201


def test_delete_refused_by_ec2_keeps_the_rows_so_it_can_be_repeated(admin, make_tenant, monkeypatch):
    from chalicelib.aws import ec2

    client_id, caller, agent_id, primary, _ = manual_agent(make_tenant)
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201, standby

    def throttled(*args, **kwargs):
        raise ec2.TransientAwsError("throttled")

    monkeypatch.setattr(ec2, "terminate", throttled)
    status, body = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert_error(status, body, 503, code="ec2_unavailable")
    assert AgentTable.get(client_id, agent_id).agent_id == agent_id  # nothing deleted but the token
    assert_error(*caller.get("/api/client/validate"), 401)
    monkeypatch.undo()
    status, body = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200 and body["terminated_instances"] == [standby["instance_id"]], body


def test_delete_client_removes_its_savings_rows_and_keeps_the_fleets(admin, make_tenant):
    """GIVEN a client whose savings were rolled up (its hour/day/month totals, its agent's and its instances'
    day rows) WHEN an admin deletes it THEN none of those rows is left (before: they stayed for good, under the
    deleted client's id) and the fleet's totals, which name no client, are kept."""
    from chalicelib.jobs import savings_rollup
    from chalicelib.repositories import savings
    from chalicelib.tables.savings import SavingsTable

    client_id, caller, agent_id, primary, _ = manual_agent(make_tenant)
    later = datetime.now(UTC) + timedelta(hours=3)
    rolled = savings_rollup.rollup_client(ClientTable.get(client_id), later)
    savings_rollup.rollup_fleet([rolled], later)
    partitions = [savings.client_key(client_id, g) for g in ("hour", "day", "month")]
    partitions += [savings.agent_key(client_id, agent_id), savings.instance_key(client_id, primary)]
    written = {p: len(list(SavingsTable.query(p))) for p in partitions}
    assert all(written.values()), written
    fleet_days = len(list(SavingsTable.query(savings.fleet_key("day"))))
    assert fleet_days

    status, body = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200, body
    assert body["deleted"]["savings"] == sum(written.values())
    assert {p: list(SavingsTable.query(p)) for p in partitions} == {p: [] for p in partitions}
    assert len(list(SavingsTable.query(savings.fleet_key("day")))) == fleet_days


def test_delete_of_an_unknown_client_is_404(admin):
    status, body = admin.call("DELETE", "/api/admin/clients/cl-doesnotexist000")
    assert_error(status, body, 404)


def test_activity_pages_reach_back_past_two_days(admin):
    now = now_utc()
    marker = f"old-{uuid.uuid4().hex[:8]}"
    for days in (1, 3, 5):
        activity.record_event("test_event", f"{marker}-{days}", now - timedelta(days=days))
    seen = walk(admin, "/api/admin/activity", "events",
                stop=lambda rows: any(e["message"] == f"{marker}-5" for e in rows))
    found = [e["message"] for e in seen if e["message"].startswith(marker)]
    assert found == [f"{marker}-1", f"{marker}-3", f"{marker}-5"]  # newest first, across day partitions
    times = [datetime.fromisoformat(e["created_at"]) for e in seen]  # text would misorder "…:28Z" and "…:28.1Z"
    assert times == sorted(times, reverse=True)
    # a small page size still walks back without repeating an event
    small = walk(admin, "/api/admin/activity", "events", limit=7,
                 stop=lambda rows: any(e["message"] == f"{marker}-3" for e in rows))
    ids = [e["event_id"] for e in small]
    assert len(ids) == len(set(ids)) and any(e["message"] == f"{marker}-3" for e in small)
    status, body = admin.get("/api/admin/activity?next_token=bm9wZQ")
    assert_error(status, body, 400, field="next_token")


def test_an_activity_token_of_a_day_to_come_is_refused_before_any_query(admin):
    """A next_token is a day and an event key: one naming a day after today (9999-12-31) made the feed walk back one
    empty day-partition Query per day to today, millions of them in one request; it is 400 now, nothing read."""
    from chalicelib.repositories.paging import encode_token

    tomorrow = (now_utc() + timedelta(days=1)).strftime("%Y-%m-%d")
    for day in ("9999-12-31", tomorrow):
        token = encode_token({"day": {"S": day}, "event_key": {"S": "x"}})
        with dynamodb_calls() as calls:
            status, body = admin.get(f"/api/admin/activity?next_token={token}")
        assert_error(status, body, 400, field="next_token")
        assert not [c for c in calls if c[0] == "Query"], calls


def test_fleet_lists_export_csv_with_the_json_rows(api, admin, tenant_with_agent, fake_savings):
    client_id, _, agent_id, reg = tenant_with_agent
    for path, key, columns, ident, expected in (
            ("/api/admin/agents", "agents", admin_fleet.FLEET_AGENT_COLUMNS, "agent_id", agent_id),
            ("/api/admin/instances?status=active", "instances", admin_fleet.FLEET_INSTANCE_COLUMNS, "instance_id",
             reg["instance_id"]),
            ("/api/admin/clients", "clients", admin_fleet.CLIENT_COLUMNS, "client_id", client_id)):
        sep = "&" if "?" in path else "?"
        json_rows = walk(admin, path, key, stop=lambda r, i=ident, e=expected: any(x[i] == e for x in r))
        token = None
        found = None
        while found is None:
            query = f"{path}{sep}limit=200&format=csv" + (f"&next_token={token}" if token else "")
            response = api.http.get(query, headers=admin.headers())
            assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv"), path
            reader = csv.DictReader(io.StringIO(response.body.decode()))
            assert reader.fieldnames == columns
            found = next((r for r in reader if r[ident] == expected), None)
            token = response.headers.get("X-Next-Token")
            assert found is not None or token, f"{expected} not in the csv of {path}"
        row = next(x for x in json_rows if x[ident] == expected)
        assert found["client_id"] == row["client_id"] == client_id
        assert found["status"] == str(row["status"])
    status, body = admin.get("/api/admin/agents?format=pdf")
    assert_error(status, body, 400, field="format")


def test_a_delete_that_fails_after_the_gate_went_never_lets_the_old_token_back_in(admin, make_tenant, monkeypatch):
    """GIVEN a container that knows the client's token and a delete that fails after the client's gate was
    deleted (the client row is deleted last) WHEN the old token is used THEN it is still refused: the gate
    rebuilt from the client row must not hold the revoked token as active."""
    from chalicelib.repositories import fleet

    client_id, caller = make_tenant()
    assert caller.get("/api/client/validate")[0] == 200  # this container now remembers the token's client

    def fails(self, *args, **kwargs):
        raise RuntimeError("DynamoDB went away")

    monkeypatch.setattr(fleet.ClientTable, "delete", fails)
    status, _ = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 500
    status, reply = caller.get("/api/client/validate")
    assert status in (401, 403), reply
    status, reply = caller.post("/api/agents/register", registration())
    assert status in (401, 403), reply
    monkeypatch.undo()
    status, body = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200, body
