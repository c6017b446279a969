"""Client dashboard, instances (issue #13): list with filters, csv and pages; pool prices; metrics (savings from
the savings repository); switch options; tenancy and bad parameters."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from chalicelib import catalogue
from tests.api._support import unchanged, assert_error, diff_snapshots, iso, now_utc, pricing_body, snapshot_tables, \
    switch_body
from chalicelib.repositories.switches import switch_key
from chalicelib.tables.switches import SwitchTable
from tests.conftest import account_instance, dynamodb_calls



def _recent_timing(hours_ago: float, *, terminated: bool = True) -> dict:
    start = now_utc() - timedelta(hours=hours_ago)
    timing = {"switch_initiated_at": iso(start), "new_instance_launched_at": iso(start + timedelta(seconds=40)),
              "new_instance_ready_at": iso(start + timedelta(seconds=90))}
    if terminated:
        timing["old_instance_terminated_at"] = iso(start + timedelta(seconds=400))
    return timing


@pytest.fixture
def fleet(tenant_with_agent):
    """A tenant whose agent switched spot → on-demand (old instance terminated) two hours ago, plus fresh prices."""
    client_id, caller, agent_id, reg = tenant_with_agent
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                pricing_body(reg["instance_id"], "m5.large",
                                             {"eu-west-1a": 0.031, "eu-west-1b": 0.029, "eu-west-1c": 0.035}))
    assert status == 200, reply
    new_id = account_instance("eu-west-1b")
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report",
                                switch_body(reg["instance_id"], new_id, new_mode="ondemand",
                                            timing=_recent_timing(2)))
    assert status == 200 and reply["duplicate"] is False, reply
    return {"client_id": client_id, "caller": caller, "agent_id": agent_id, "old": reg["instance_id"], "new": new_id}


def test_instances_list_filters_by_status_mode_and_search(fleet):
    caller, client_id = fleet["caller"], fleet["client_id"]
    base = f"/api/client/{client_id}/instances"
    status, reply = caller.get(base)
    assert status == 200, reply
    [row] = reply["instances"]
    assert row["instance_id"] == fleet["new"] and row["status"] == "active" and row["mode"] == "ondemand"
    assert row["role"] == "primary" and row["agent_id"] == fleet["agent_id"] and row["launched_at"]
    od = catalogue.ondemand_price("m5.large")
    assert row["on_demand_price"] == round(od, 4) and row["current_price"] == round(od, 4)

    status, reply = caller.get(base + "?status=terminated")
    [old] = reply["instances"]
    assert old["instance_id"] == fleet["old"] and old["status"] == "terminated" and old["terminated_at"]
    assert old["mode"] == "spot" and old["pool_id"] == "m5.large.eu-west-1a"
    status, reply = caller.get(base + "?status=all")
    assert {r["instance_id"] for r in reply["instances"]} == {fleet["old"], fleet["new"]}
    status, reply = caller.get(base + "?status=all&mode=spot")
    assert [r["instance_id"] for r in reply["instances"]] == [fleet["old"]]
    status, reply = caller.get(base + f"?status=all&search={fleet['new'][2:10]}")
    assert [r["instance_id"] for r in reply["instances"]] == [fleet["new"]]
    status, reply = caller.get(base + "?status=all&search=m5.lar")
    assert len(reply["instances"]) == 2

    seen, token = [], None
    for _ in range(10):
        status, page = caller.get(base + "?status=all&limit=1" + (f"&next_token={token}" if token else ""))
        assert status == 200, page
        seen += [r["instance_id"] for r in page["instances"]]
        token = page["next_token"]
        if not token:
            break
    assert sorted(seen) == sorted([fleet["old"], fleet["new"]])


def test_instances_csv(api, fleet):
    response = api.http.get(f"/api/client/{fleet['client_id']}/instances?status=all&format=csv",
                            headers=fleet["caller"].headers())
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.body.decode())))
    assert {r["instance_id"]: r["status"] for r in rows} == {fleet["old"]: "terminated", fleet["new"]: "active"}
    assert list(rows[0]) == ["instance_id", "agent_id", "instance_type", "region", "az", "pool_id", "mode", "status",
                             "role", "launched_at", "terminated_at", "current_price", "on_demand_price"]


@pytest.mark.parametrize("query,field", [("status=running", "status"), ("mode=reserved", "mode"),
                                         ("search=%3Dcmd()", "search"), ("search=" + "a" * 65, "search"),
                                         ("format=pdf", "format"), ("limit=1000000", "limit"),
                                         ("next_token=bm9wZQ", "next_token")])
def test_instances_bad_parameters_are_400(fleet, query, field):
    status, reply = unchanged(lambda: fleet["caller"].get(f"/api/client/{fleet['client_id']}/instances?{query}"))
    assert_error(status, reply, 400, field=field)


def test_pricing_lists_every_pool_with_its_discount(fleet):
    caller = fleet["caller"]
    # the old (spot) instance: its pool is the current one
    status, reply = caller.get(f"/api/client/instances/{fleet['old']}/pricing")
    assert status == 200, reply
    assert reply["mode"] == "spot" and reply["pool_id"] == "m5.large.eu-west-1a"
    od = reply["on_demand_price"]
    assert od == round(catalogue.ondemand_price("m5.large"), 4)
    pools = {p["pool_id"]: p for p in reply["pools"]}
    assert {"m5.large.eu-west-1a", "m5.large.eu-west-1b", "m5.large.eu-west-1c"} <= set(pools)
    assert [pid for pid, p in pools.items() if p["is_current"]] == ["m5.large.eu-west-1a"]
    assert reply["current_primary"] is False  # the switch left it (terminated): force-switch would answer 409
    current = pools["m5.large.eu-west-1a"]
    assert reply["current_price"] == current["price"] is not None
    for pool in pools.values():
        if pool["price"] is not None:
            assert pool["savings_percent"] == pytest.approx(round((od - pool["price"]) / od * 100, 2), abs=0.011)
            assert pool["observed_at"] and pool["instance_type"] == "m5.large"
    # the on-demand instance: no pool is current, its price is on-demand
    status, reply = caller.get(f"/api/client/instances/{fleet['new']}/pricing")
    assert reply["mode"] == "ondemand" and reply["current_price"] == od and reply["current_primary"] is True
    assert not any(p["is_current"] for p in reply["pools"])


def test_available_options_exclude_the_current_pool_cheapest_first(fleet):
    status, reply = fleet["caller"].get(f"/api/client/instances/{fleet['old']}/available-options")
    assert status == 200, reply
    ids = [p["pool_id"] for p in reply["pools"]]
    assert "m5.large.eu-west-1a" not in ids and {"m5.large.eu-west-1b", "m5.large.eu-west-1c"} <= set(ids)
    prices = [p["price"] for p in reply["pools"]]
    assert prices == sorted(prices) and None not in prices
    assert reply["instance_types"] == ["m5.large"]
    assert set(reply["pools"][0]) == {"pool_id", "instance_type", "az", "price", "risk_score", "savings_percent"}


def test_metrics_count_switches_and_take_savings_from_the_repository(fleet, fake_savings):
    caller = fleet["caller"]
    status, reply = caller.get(f"/api/client/instances/{fleet['new']}/metrics")
    assert status == 200, reply
    assert reply["switches_7d"] == 1 and reply["switches_30d"] == 1
    assert reply["savings_30d"] == 1.25 and reply["savings_total"] == 9.75
    assert ("instance_summary", fleet["client_id"], fleet["new"]) in fake_savings.calls
    assert reply["uptime_seconds"] >= 0 and reply["status"] == "active"
    status, old = caller.get(f"/api/client/instances/{fleet['old']}/metrics")
    assert old["status"] == "terminated" and old["switches_30d"] == 1
    # a switch older than 7 days counts for 30 days only (stored as history: a report that late, or from a clock
    # that far behind, is placed at its receive time, tests/api/test_agent_clock_skew.py)
    at = now_utc() - timedelta(days=10)
    SwitchTable(fleet["client_id"], switch_key(at, "sw-ten-days-old"), switch_id="sw-ten-days-old",
                agent_id=fleet["agent_id"], old_instance_id=fleet["new"], old_mode="ondemand",
                new_instance_id=account_instance("eu-west-1c"), new_mode="ondemand", initiated_at=at,
                recorded_at=at).save()
    status, reply = caller.get(f"/api/client/instances/{fleet['new']}/metrics")
    assert reply["switches_7d"] == 1 and reply["switches_30d"] == 2


def test_metrics_read_the_switches_of_the_instances_agent_not_the_clients_month(fleet):
    """One instance's counts come from its agent's switches (the agents index): a client with thousands of
    agents does not read every switch of its month for each instance it looks at."""
    with dynamodb_calls() as calls:
        status, reply = fleet["caller"].get(f"/api/client/instances/{fleet['new']}/metrics")
    assert status == 200 and reply["switches_30d"] == 1, reply
    switch_reads = [(op, index) for op, table, index, _ in calls if table == SwitchTable.Meta.table_name]
    assert switch_reads == [("Query", SwitchTable.by_agent.Meta.index_name)]


def test_instance_routes_are_404_for_another_tenant(fleet, make_tenant):
    b_client, b_caller = make_tenant()
    before = snapshot_tables()
    for path in (f"/api/client/instances/{fleet['new']}/pricing", f"/api/client/instances/{fleet['new']}/metrics",
                 f"/api/client/instances/{fleet['new']}/available-options",
                 f"/api/client/{fleet['client_id']}/instances"):
        status, reply = b_caller.get(path)
        assert_error(status, reply, 404, code="not_found")
        assert fleet["agent_id"] not in str(reply)
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert b_caller.get(f"/api/client/{b_client}/instances?status=all")[1]["instances"] == []


def test_unknown_or_malformed_instance_ids(fleet):
    caller = fleet["caller"]
    status, reply = caller.get("/api/client/instances/i-0123456789abcdef0/pricing")
    assert_error(status, reply, 404, field="instance_id")
    status, reply = caller.get("/api/client/instances/%2Fetc/metrics")
    assert status in (400, 404) and reply["error"]
