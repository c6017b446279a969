"""Security walk 4: the console, notifications, CSV exports, decisions, admin routes, rate limits, agent
credentials, commands, replicas and odd request bodies, plus the price points agents write. Each test is one
attack; its docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib import rate_limit
from chalicelib.repositories import pools as pool_repo
from chalicelib.tables.pools import PricePointTable
from components.data_valve import PricePoint
from tests.api._support import diff_snapshots, now_utc, random_instance_type, snapshot_tables
from tests.api.test_agent_identity import verified_registration
from tests.conftest import Caller, registration


def _point(pool_id, ts, price, source):
    return PricePoint(pool_id=pool_id, ts=ts, price=Decimal(price), source_agent_id=source)


def _stored(pool_id, ts):
    try:
        return PricePointTable.get(pool_id, ts, consistent_read=True)
    except PricePointTable.DoesNotExist:
        return None


@pytest.mark.usefixtures("aws_tables")
def test_a_report_at_another_tenants_timestamp_leaves_its_point_alone():
    """ATTACK: B's agent reports a pool A's agent priced, with A's ``collected_at`` (an agent chooses it, up to a
    day back). BEFORE: the point (pool, ts) was a BatchWriteItem put: B's price and client replaced A's stored
    point (A's savings and risk history lost it). NOW: the put is conditional on a new key or the client's own."""
    t = now_utc().replace(microsecond=0) - timedelta(minutes=30)
    pool = f"{random_instance_type()}.eu-west-1a"
    pool_repo.admit_points([_point(pool, t, "0.030", "ag-a")], t, client_id="cl-a")
    pool_repo.admit_points([_point(pool, t, "9.990", "ag-b")], t + timedelta(minutes=1), client_id="cl-b")
    stored = _stored(pool, t)
    assert (stored.client_id, stored.price) == ("cl-a", Decimal("0.030"))
    # B's own view keeps its price (its pool entry), and its re-sent report is still idempotent.
    pool_repo.admit_points([_point(pool, t, "9.990", "ag-b")], t + timedelta(minutes=2), client_id="cl-b")
    assert pool_repo.latest_prices([pool])[pool].seen_by("cl-b").price == Decimal("9.990")
    assert pool_repo.latest_prices([pool])[pool].seen_by("cl-a").price == Decimal("0.030")


@pytest.mark.usefixtures("aws_tables")
def test_a_report_never_replaces_an_aws_point_of_a_pool_the_job_stopped_covering():
    """ATTACK: the spot-prices job priced a pool, then stopped covering it (no agent runs the type any more);
    an agent reports that pool at the time of AWS's point. BEFORE: its put replaced AWS's point (everyone's
    history). NOW: AWS's point stays."""
    t = now_utc().replace(microsecond=0) - timedelta(hours=3)
    pool = f"{random_instance_type()}.eu-west-1a"
    pool_repo.store_server_prices([_point(pool, t, "0.040", pool_repo.SERVER_SOURCE)], t)
    pool_repo.admit_points([_point(pool, t, "0.001", "ag-b")], t + timedelta(hours=2), client_id="cl-b",
                           server_window=timedelta(minutes=30))
    stored = _stored(pool, t)
    assert (stored.source_agent_id, stored.client_id, stored.price) == ("aws", None, Decimal("0.040"))


@pytest.mark.usefixtures("aws_tables")
def test_the_valves_delete_of_a_stale_point_spares_another_tenants_point():
    """ATTACK: A's window holds a point at t; B's point then sits at t (written before the fix); A's agent reports
    2 s before t, so the valve merges the two into one point at t - 2 s and deletes (pool, t). BEFORE: that
    delete removed B's point. NOW: the delete is conditional on the point still being A's."""
    t = now_utc().replace(microsecond=0) - timedelta(minutes=30)
    pool = f"{random_instance_type()}.eu-west-1a"
    pool_repo.admit_points([_point(pool, t, "0.030", "ag-a")], t, client_id="cl-a")
    PricePointTable(pool, t, price=Decimal("0.050"), source_agent_id="ag-b", client_id="cl-b",
                    expires_at=t + timedelta(days=1)).save()
    admissions = pool_repo.admit_points([_point(pool, t - timedelta(seconds=2), "0.0301", "ag-a2")],
                                        t + timedelta(minutes=1), client_id="cl-a")
    assert [p.ts for p in admissions[pool].deletes] == [t]
    assert _stored(pool, t - timedelta(seconds=2)).client_id == "cl-a"
    stored = _stored(pool, t)
    assert stored is not None and (stored.client_id, stored.price) == ("cl-b", Decimal("0.050"))


def test_a_re_sent_termination_report_moves_nothing_and_notifies_once(tenant_with_agent):
    """ATTACK (idempotency): the agent re-sends its termination report (a retry, or a replay much later). BEFORE:
    each copy moved the instance's ``terminated_at`` to its own arrival (the end of the run its savings integrate)
    and added a notification. NOW: the first time stays, one notification."""
    from chalicelib.repositories import agents as agent_repo

    client_id, caller, agent_id, reg = tenant_with_agent
    body = {"instance_id": reg["instance_id"], "reason": "spot"}
    assert caller.post(f"/api/agents/{agent_id}/termination", body)[0] == 200
    first = agent_repo.get_instance(client_id, reg["instance_id"]).terminated_at
    assert caller.post(f"/api/agents/{agent_id}/termination", body)[0] == 200
    assert agent_repo.get_instance(client_id, reg["instance_id"]).terminated_at == first
    status, page = caller.get("/api/notifications")
    assert status == 200
    assert [n["kind"] for n in page["notifications"]].count("termination") == 1


# --- attacks that held (kept as regression tests) ---

AGENT_ROUTES = [
    ("POST", "heartbeat", {"status": "online"}),
    ("GET", "pending-commands", None),
    ("GET", "config", None),
    ("POST", "commands/cmd-1/executed", {"success": True}),
    ("POST", "mark-command-executed", {"command_id": "cmd-1"}),
    ("POST", "commands/cmd-1/extend", {}),
    ("POST", "termination", {}),
    ("POST", "cleanup-report", {}),
    ("POST", "termination-imminent", {}),
    ("POST", "rebalance-recommendation", {}),
    ("POST", "create-emergency-replica", {}),
]


@pytest.fixture
def verified_agent(make_tenant, aws_signs_locally):
    """A client without legacy mode and one verified agent: (client_id, caller, agent_id, credential)."""
    client_id, caller = make_tenant(legacy=False)
    status, reply = caller.post("/api/agents/register", verified_registration())
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], reply["agent_credential"]


@pytest.mark.parametrize(("method", "route", "body"), AGENT_ROUTES)
def test_a_forged_credential_naming_a_victim_uses_none_of_its_window(one_rate_window, verified_agent, api, method,
                                                                      route, body):
    """A credential with the victim's client and agent ids and a wrong secret: 401, the victim's rate-limit count
    unchanged (the fast paths' count is refunded), nothing written."""
    client_id, _, agent_id, credential = verified_agent
    forged = credential.rsplit(".", 1)[0] + "." + "x" * 43
    before, snap = rate_limit.requests_in_window(client_id), snapshot_tables()
    status, reply = Caller(api.http, token=forged).call(method, f"/api/agents/{agent_id}/{route}", body)
    assert status == 401, (status, reply)
    assert rate_limit.requests_in_window(client_id) == before
    assert diff_snapshots(snap, snapshot_tables()) == {}


@pytest.mark.parametrize(("method", "route", "body"), AGENT_ROUTES)
@pytest.mark.parametrize("how", ["deleted", "suspended"])
def test_a_deleted_or_suspended_clients_agent_credential_does_nothing(verified_agent, api, admin, how, method, route,
                                                                      body):
    client_id, caller, agent_id, credential = verified_agent
    if how == "deleted":
        assert admin.call("DELETE", f"/api/admin/clients/{client_id}")[0] == 200
    else:
        assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})[0] == 200
    snap = snapshot_tables()
    status, reply = Caller(api.http, token=credential).call(method, f"/api/agents/{agent_id}/{route}", body)
    assert status in ((401, 403, 404) if how == "deleted" else (403,)), (status, reply)
    assert diff_snapshots(snap, snapshot_tables()) == {}
    assert caller.get("/api/client/validate")[0] in (401, 403)


def test_a_regenerated_token_stops_at_once_on_every_kind_of_route(make_tenant, admin, api):
    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})[0] == 200  # cached in the container
    assert admin.post(f"/api/admin/clients/{client_id}/regenerate-token", {})[0] == 200
    for method, path, body in [("POST", f"/api/agents/{agent_id}/heartbeat", {"status": "online"}),
                               ("GET", f"/api/agents/{agent_id}/pending-commands", None),
                               ("GET", "/api/client/validate", None), ("GET", "/api/notifications", None),
                               ("POST", "/api/agents/register", reg)]:
        assert caller.call(method, path, body)[0] == 401, path
    legacy_body = {"status": "online", "client_token": caller.token}
    assert Caller(api.http).post(f"/api/agents/{agent_id}/heartbeat", legacy_body)[0] == 401


def test_admin_routes_refuse_a_client_token_in_either_header(make_tenant, api, admin_key):
    client_id, caller = make_tenant()
    for path in ("/api/admin/clients", "/api/admin/stats", f"/api/admin/clients/{client_id}"):
        assert caller.get(path)[0] == 401
        assert Caller(api.http, admin=caller.token).get(path)[0] == 401
        assert Caller(api.http, token=admin_key).get(path)[0] == 401
    assert Caller(api.http, token=admin_key).get("/api/client/validate")[0] == 401


def _csv_rows(api, path, headers):
    response = api.http.get(path, headers=headers)
    assert response.status_code == 200, (path, response.body)
    text = response.body.decode() if isinstance(response.body, bytes) else response.body
    return list(csv.reader(io.StringIO(text)))[1:]


def _formula_cells(rows):
    def number(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return False
    return [c for row in rows for c in row if c and c[0] in "=+-@\t\r" and not number(c)]


def test_no_csv_export_carries_a_formula(make_tenant, api, admin_key):
    """A client name, hostname and logical id that start like formulas, in every client and admin CSV export."""
    client_id, caller = make_tenant(name="=cmd|' /C calc'!A0")
    status, reply = caller.post("/api/agents/register", registration(hostname="=1+1", logical_agent_id="-2@3"))
    assert status == 200, reply
    client_paths = [f"/api/client/{client_id}/{p}?format=csv" for p in
                    ("agents", "agents/history", "instances", "switch-history", "savings")]
    admin_paths = [f"/api/admin/{p}?format=csv&limit=200" for p in ("clients", "agents", "instances")]
    for path in client_paths:
        assert _formula_cells(_csv_rows(api, path, {"Authorization": f"Bearer {caller.token}"})) == [], path
    for path in admin_paths:
        assert _formula_cells(_csv_rows(api, path, {"X-Admin-Key": admin_key})) == [], path
