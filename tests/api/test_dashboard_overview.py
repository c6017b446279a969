"""Client dashboard (issue #13): overview, replicas with their primary, switch history (csv), 30-day charts;
the csv helper; tenancy and bad parameters."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from chalicelib.api.csv_export import cell, csv_response
from tests.api._support import unchanged, assert_error, diff_snapshots, iso, now_utc, snapshot_world, \
    switch_body
from tests.conftest import account_instance, registration



def _timing(hours_ago: float) -> dict:
    start = now_utc() - timedelta(hours=hours_ago)
    return {"switch_initiated_at": iso(start), "new_instance_ready_at": iso(start + timedelta(seconds=90)),
            "old_instance_terminated_at": iso(start + timedelta(seconds=400))}


@pytest.fixture
def tenant(make_tenant):
    """Two agents (one offline), two switches of the first (spot → spot → on-demand), a standby of the second."""
    client_id, caller = make_tenant()
    regs, ids = [], []
    for name in ("a-one", "b-two"):
        reg = registration(logical_agent_id=name)
        status, reply = caller.post("/api/agents/register", reg)
        assert status == 200, reply
        regs.append(reg)
        ids.append(reply["agent_id"])
    first, second = ids
    mid, last = account_instance("eu-west-1b"), account_instance("eu-west-1c")
    # within the day a report may be late (an older one is placed at its receive time)
    for old, new, mode, hours in ((regs[0]["instance_id"], mid, "spot", 20), (mid, last, "ondemand", 3)):
        status, reply = caller.post(f"/api/agents/{first}/switch-report",
                                    switch_body(old, new, new_mode=mode, timing=_timing(hours),
                                                old_mode="spot"))
        assert status == 200, reply
    status, reply = caller.post(f"/api/client/agents/{second}/config", {"manual_replica_enabled": True})
    assert status == 200, reply
    standby = account_instance("eu-west-1c")
    status, replica = caller.post(f"/api/agents/{second}/replicas",
                                  {"instance_id": standby, "pool_id": "m5.large.eu-west-1c"})
    assert status == 201, replica
    status, reply = caller.post(f"/api/agents/{second}/termination", {"reason": "test"})
    assert status == 200, reply
    return {"client_id": client_id, "caller": caller, "first": first, "second": second, "regs": regs,
            "mid": mid, "last": last, "replica_id": replica["replica_id"], "standby": standby}


def test_overview_counts_and_savings_from_the_repository(tenant, fake_savings):
    caller, client_id = tenant["caller"], tenant["client_id"]
    status, reply = caller.get(f"/api/client/{client_id}")
    assert status == 200, reply
    assert reply["client_id"] == client_id and reply["status"] == "active" and reply["name"]
    assert reply["agents_total"] == 2 and reply["agents_online"] == 1
    assert reply["instances_active"] == 1  # the first agent's on-demand instance; the second's was terminated
    assert reply["replicas_active"] == 1
    assert reply["savings"] == fake_savings.client_summary(client_id, None)
    assert ("client_summary", client_id) in fake_savings.calls
    assert reply["last_sync"] and reply["last_sync"].endswith("Z")
    assert caller.call("DELETE", f"/api/client/agents/{tenant['first']}")[0] == 200
    status, reply = caller.get(f"/api/client/{client_id}")
    assert reply["agents_total"] == 1 and reply["agents_online"] == 0 and reply["instances_active"] == 0


def test_replicas_carry_their_primary(tenant):
    caller, client_id = tenant["caller"], tenant["client_id"]
    status, reply = caller.get(f"/api/client/{client_id}/replicas")
    assert status == 200, reply
    [row] = reply["replicas"]
    assert row["replica_id"] == tenant["replica_id"] and row["instance_id"] == tenant["standby"]
    assert row["primary"] == {"instance_id": tenant["regs"][1]["instance_id"], "pool_id": "m5.large.eu-west-1a",
                              "instance_type": "m5.large", "mode": "spot", "agent_id": tenant["second"],
                              "hostname": "web-1"}
    status, reply = caller.post(f"/api/client/agents/{tenant['second']}/config", {"auto_switch_enabled": True})
    assert status == 200 and reply["terminated_replicas"] == [tenant["replica_id"]], reply
    assert caller.get(f"/api/client/{client_id}/replicas")[1]["replicas"] == []
    status, reply = caller.get(f"/api/client/{client_id}/replicas?status=all")
    assert [r["status"] for r in reply["replicas"]] == ["terminated"]
    status, reply = caller.post(f"/api/client/agents/{tenant['second']}/config", {"manualReplicaEnabled": True})
    assert status == 200, reply
    status, second = caller.post(f"/api/agents/{tenant['second']}/replicas",
                                 {"instance_id": account_instance("eu-west-1b"), "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, second
    seen, token = [], None
    for _ in range(5):
        status, page = caller.get(f"/api/client/{client_id}/replicas?status=all&limit=1"
                                  + (f"&next_token={token}" if token else ""))
        assert status == 200, page
        seen += [r["replica_id"] for r in page["replicas"]]
        token = page["next_token"]
        if not token:
            break
    assert seen == [second["replica_id"], tenant["replica_id"]]  # newest first
    status, reply = unchanged(lambda: caller.get(f"/api/client/{client_id}/replicas?status=gone"))
    assert_error(status, reply, 400, field="status")


def test_switch_history_filters_pages_and_exports(api, tenant):
    caller, client_id = tenant["caller"], tenant["client_id"]
    base = f"/api/client/{client_id}/switch-history"
    status, reply = caller.get(base)
    assert status == 200, reply
    rows = reply["switches"]
    assert [(r["old_instance_id"], r["new_instance_id"]) for r in rows] == [
        (tenant["mid"], tenant["last"]), (tenant["regs"][0]["instance_id"], tenant["mid"])]  # newest first
    latest = rows[0]
    assert latest["from_mode"] == "spot" and latest["to_mode"] == "ondemand" and latest["trigger"] == "manual"
    assert latest["old_price"] == 0.04 and latest["on_demand_price"] == 0.107
    assert latest["hourly_impact"] is not None and latest["downtime_seconds"] == 90.0
    assert latest["completed_at"] and latest["initiated_at"] < latest["completed_at"]
    status, reply = caller.get(base + f"?instance_id={tenant['last']}")
    assert [r["new_instance_id"] for r in reply["switches"]] == [tenant["last"]]
    status, page = caller.get(base + "?limit=1")
    assert len(page["switches"]) == 1 and page["next_token"]
    status, page2 = caller.get(base + f"?limit=1&next_token={page['next_token']}")
    assert page2["switches"][0]["switch_id"] != page["switches"][0]["switch_id"]

    response = api.http.get(base + "?format=csv&limit=1", headers=caller.headers())
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["X-Next-Token"]
    rows = list(csv.DictReader(io.StringIO(response.body.decode())))
    assert len(rows) == 1 and rows[0]["new_instance_id"] == tenant["last"] and rows[0]["hourly_impact"]
    for query, field in (("instance_id=nope", "instance_id"), ("format=x", "format"), ("limit=-1", "limit")):
        status, reply = unchanged(lambda query=query: caller.get(f"{base}?{query}"))
        assert_error(status, reply, 400, field=field)


def test_charts_cover_thirty_days(tenant, fake_savings, handlers_now):
    caller, client_id = tenant["caller"], tenant["client_id"]
    status, reply = caller.get(f"/api/client/{client_id}/stats/charts")
    assert status == 200, reply
    assert reply["savings_trend"] == fake_savings.daily(client_id, 30, None)
    assert ("daily", client_id, 30) in fake_savings.calls
    assert reply["cost_vs_on_demand"][0] == {"date": "2026-01-01", "actual_cost": 0.5, "baseline_cost": 2.0}
    assert reply["mode_distribution"] == {"spot": 0, "ondemand": 1}
    days = reply["switches_per_day"]
    assert len(days) == 30 and days[-1]["date"] == handlers_now.strftime("%Y-%m-%d")  # the day the route served
    assert days[0]["date"] == (handlers_now - timedelta(days=29)).strftime("%Y-%m-%d")
    assert sum(d["count"] for d in days) == 2


def test_every_client_id_route_is_404_for_another_tenant(tenant, make_tenant):
    _, b_caller = make_tenant()
    before = snapshot_world()
    for suffix in ("", "/replicas", "/switch-history", "/stats/charts", "/agents", "/agents/history",
                   "/agents/decisions", "/instances"):
        status, reply = b_caller.get(f"/api/client/{tenant['client_id']}{suffix}")
        assert_error(status, reply, 404, code="not_found", field="client_id")
        assert tenant["first"] not in str(reply)
    assert diff_snapshots(before, snapshot_world()) == {}


@pytest.mark.parametrize("value,expected", [
    ("=SUM(A1)", "'=SUM(A1)"), ("+1", "'+1"), ("-x", "'-x"), ("@cmd", "'@cmd"), ("\tx", "'\tx"),
    ("plain", "plain"), (None, ""), (True, "true"), (-0.5, "-0.5"), (3, "3"),
    # the fullwidth forms (U+FF1D, U+FF0B, U+FF0D, U+FF20), which some spreadsheet locales also evaluate
    ("\uff1dSUM(A1)", "'\uff1dSUM(A1)"), ("\uff0b1", "'\uff0b1"), ("\uff0dx", "'\uff0dx"),
    ("\uff20cmd", "'\uff20cmd"), ("a\uff1d1", "a\uff1d1")])
def test_csv_cells_never_start_a_formula(value, expected):
    assert cell(value) == expected


def test_csv_response_has_a_header_and_quotes_what_needs_it():
    response = csv_response([{"a": 'x,"y"', "b": "=1+1"}, {"a": None}], ["a", "b"], "my file.csv")
    assert response.headers["Content-Disposition"] == 'attachment; filename="my_file.csv"'
    assert list(csv.reader(io.StringIO(response.body))) == [["a", "b"], ['x,"y"', "'=1+1"], ["", ""]]
