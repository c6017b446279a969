"""Savings that are true (issue #13): the roll-up job, the savings repository and the savings routes."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.repositories import savings
from chalicelib.tables.clients import ClientTable
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.pools import PricePointTable
from chalicelib.tables.savings import SavingsTable
from tests.api._support import assert_error, now_utc, random_instance_type
from tests.conftest import Caller, invoke_schedule, registration


def _point(pool_id, ts, price, source_agent_id="aws", client_id=None):
    """A stored price point: AWS's (the spot-prices job's) unless an agent's of ``client_id`` is named."""
    PricePointTable(pool_id, ts, price=Decimal(price), quality="actual", source_agent_id=source_agent_id,
                    client_id=client_id, expires_at=ts + timedelta(days=90)).save()


def _instance(client_id, agent_id, pool_id, mode, start, end, *, role="primary", od="0.10"):
    iid = "i-" + uuid.uuid4().hex[:17]
    itype, az = pool_id.rsplit(".", 1)
    InstanceTable(iid, client_id=client_id, agent_id=agent_id, instance_type=itype, region=az[:-1], az=az,
                  mode=mode, lifecycle=mode, pool_id=pool_id, role=role, ondemand_price=Decimal(od),
                  is_active=end is None, installed_at=start, updated_at=end or start, terminated_at=end).save()
    return iid


@pytest.fixture
def fleet(make_tenant):
    """A tenant whose agent ran a spot primary for 8 h (price 0.03 then, from T-6h, 0.05) and an
    on-demand standby for 2 h (a cost without a baseline: the client would run no standby on demand), all before T (the last whole hour); on-demand list price 0.10. Another
    tenant's agent reported a (wild) price for the pool at T-7h: never used for this tenant."""
    client_id, caller = make_tenant()
    t = now_utc().replace(minute=0, second=0, microsecond=0)
    pool = f"{random_instance_type()}.eu-west-1a"
    _point(pool, t - timedelta(hours=12), "0.03")
    _point(pool, t - timedelta(hours=6), "0.05")
    _point(pool, t - timedelta(hours=7), "9.99", source_agent_id="ag-of-another-tenant", client_id="cl-another")
    agent_id = "ag-" + uuid.uuid4().hex[:8]
    primary = _instance(client_id, agent_id, pool, "spot", t - timedelta(hours=10), t - timedelta(hours=2))
    standby = _instance(client_id, agent_id, f"{random_instance_type()}.eu-west-1b", "ondemand",
                        t - timedelta(hours=4), t - timedelta(hours=2), role="standby")
    return {"client_id": client_id, "caller": caller, "t": t, "pool": pool, "agent_id": agent_id,
            "primary": primary, "standby": standby}


def _client_rows(client_id):
    rows = []
    for granularity in ("hour", "day", "month"):
        rows += [(r.scope_key, r.period, r.actual_cost, r.baseline_cost, r.spot_seconds, r.ondemand_seconds)
                 for r in SavingsTable.query(savings.client_key(client_id, granularity))]
    return rows


def _roll(api, fleet):
    """The roll-up of this test's client, as the scheduled job rolls each client. The job itself walks every
    client, and by this point the session holds hundreds (the demo runs the whole job)."""
    from chalicelib.jobs import savings_rollup

    return savings_rollup.rollup_client(ClientTable.get(fleet["client_id"]), fleet["t"] + timedelta(minutes=5))


def test_savings_integrate_prices_over_time_and_count_standbys_as_cost_only(api, fleet):
    _roll(api, fleet)
    status, body = fleet["caller"].get(f"/api/client/{fleet['client_id']}/savings")
    assert status == 200, body
    summary = body["summary"]
    # primary: 4 h x 0.03 + 4 h x 0.05 = 0.32 vs 0.80; standby: on-demand 2 h = 0.20 vs nothing (on demand the
    # client would have run the primary alone)
    assert summary["total_actual_cost"] == 0.52 and summary["total_baseline_cost"] == 0.8
    assert summary["total_savings"] == 0.28 and summary["savings_percent"] == 35.0
    assert summary["last_30d_savings"] == 0.28 and summary["currency"] == "USD" and summary["as_of"]
    assert len(body["monthly"]) == 12 and body["monthly"] == sorted(body["monthly"], key=lambda m: m["month"])
    assert sum(m["savings"] for m in body["monthly"]) == pytest.approx(0.28)
    assert len(body["daily"]) == 30 and sum(d["savings"] for d in body["daily"]) == pytest.approx(0.28)
    assert sum(d["spot_hours"] for d in body["daily"]) == 8 and sum(d["ondemand_hours"] for d in body["daily"]) == 2
    now = fleet["t"] + timedelta(minutes=5)
    assert savings.instance_summary(fleet["client_id"], fleet["primary"], now)["total_savings"] == 0.48
    assert savings.instance_summary(fleet["client_id"], fleet["standby"], now)["total_savings"] == -0.2
    assert savings.agent_summary(fleet["client_id"], fleet["agent_id"], now) == {
        "total_savings": 0.28, "last_30d_savings": 0.28, "total_actual_cost": 0.52, "total_baseline_cost": 0.8}
    assert savings.instance_summary("another-client", fleet["primary"], now)["total_savings"] == 0.0


def test_hour_rows_sum_to_days_and_months(api, fleet):
    _roll(api, fleet)
    key = savings.client_key
    hours = list(SavingsTable.query(key(fleet["client_id"], "hour")))
    days = list(SavingsTable.query(key(fleet["client_id"], "day")))
    months = list(SavingsTable.query(key(fleet["client_id"], "month")))
    total = sum((r.baseline_cost - r.actual_cost for r in hours), Decimal(0))
    assert total == Decimal("0.28")
    assert sum((r.baseline_cost - r.actual_cost for r in days), Decimal(0)) == total
    assert sum((r.baseline_cost - r.actual_cost for r in months), Decimal(0)) == total
    assert len(hours) == 8  # every hour an instance ran (T-10h..T-2h), nothing else


def test_rerun_changes_nothing_and_late_data_only_its_hours(api, fleet):
    _roll(api, fleet)
    before = _client_rows(fleet["client_id"])
    _roll(api, fleet)
    assert _client_rows(fleet["client_id"]) == before
    late = fleet["t"] - timedelta(hours=3)
    _point(fleet["pool"], late, "0.01")  # a late price point: 1 h at 0.01 instead of 0.05
    _roll(api, fleet)
    after = _client_rows(fleet["client_id"])
    changed_hours = {row[1] for row in set(after) ^ set(before) if row[0].endswith("#hour")}
    assert changed_hours == {late.strftime("%Y-%m-%dT%H")}
    status, body = fleet["caller"].get(f"/api/client/{fleet['client_id']}/savings")
    assert body["summary"]["total_savings"] == 0.32


def test_the_client_discount_lowers_the_baseline(api, admin, fleet):
    status, reply = admin.post(f"/api/admin/clients/{fleet['client_id']}/limits", {"ondemand_discount_percent": 20})
    assert status == 200 and reply["ondemand_discount_percent"] == 20, reply
    _roll(api, fleet)
    summary = fleet["caller"].get(f"/api/client/{fleet['client_id']}/savings")[1]["summary"]
    # effective on-demand 0.08: baseline 8 h x 0.08 = 0.64; the on-demand standby pays 0.08 too (2 h = 0.16)
    assert summary["total_baseline_cost"] == 0.64 and summary["total_actual_cost"] == 0.48
    assert summary["total_savings"] == 0.16 and summary["savings_percent"] == 25.0
    assert admin.post(f"/api/admin/clients/{fleet['client_id']}/limits",
                      {"ondemand_discount_percent": 101})[0] == 400


def test_csv_export_has_a_header_and_one_line_per_month(api, fleet):
    _roll(api, fleet)
    response = api.http.get(f"/api/client/{fleet['client_id']}/savings?format=csv&months=3",
                            headers=fleet["caller"].headers())
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.body.decode())))
    assert rows[0] == ["month", "baseline_cost", "actual_cost", "savings", "savings_percent"]
    assert len(rows) == 4 and [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])
    assert sum(float(r[3]) for r in rows[1:]) == pytest.approx(0.28)
    daily = api.http.get(f"/api/client/{fleet['client_id']}/savings?format=csv&period=daily",
                         headers=fleet["caller"].headers())
    lines = list(csv.reader(io.StringIO(daily.body.decode())))
    assert lines[0][:2] == ["date", "baseline_cost"] and len(lines) == 31


def test_another_clients_savings_are_404_and_bad_params_400(make_tenant, fleet):
    other_id, other = make_tenant()
    status, body = other.get(f"/api/client/{fleet['client_id']}/savings")
    assert_error(status, body, 404)
    for query, field in (("months=0", "months"), ("months=37", "months"), ("months=abc", "months"),
                         ("format=xml", "format"), ("period=weekly", "period")):
        status, body = fleet["caller"].get(f"/api/client/{fleet['client_id']}/savings?{query}")
        assert_error(status, body, 400, field=field)
    status, body = Caller(other.http).get(f"/api/client/{other_id}/savings")
    assert status == 401


def test_growth_snapshot_route(api, admin, fleet):
    from chalicelib.jobs import savings_rollup

    # the job's last step (the whole job walks every client of the session; the demo runs it end to end)
    savings_rollup.rollup_fleet([_roll(api, fleet)], fleet["t"] + timedelta(minutes=5))
    invoke_schedule(api, "growth-snapshot", fleet["t"] + timedelta(minutes=20))
    status, body = admin.get("/api/admin/clients/growth?days=7")
    assert status == 200, body
    assert body["days"] == 7 and body["growth"]
    last = body["growth"][-1]
    assert last["date"] == (fleet["t"] + timedelta(minutes=20)).strftime("%Y-%m-%d")
    assert last["clients_total"] >= 1 and last["clients_active"] >= 1 and last["total_savings"] >= 0.28
    assert set(last) >= {"date", "clients_total", "clients_active", "agents_total", "agents_online",
                         "instances_active", "total_savings"}
    for days in ("0", "366", "x"):
        status, body = admin.get(f"/api/admin/clients/growth?days={days}")
        assert_error(status, body, 400, field="days")
    status, body = fleet["caller"].get("/api/admin/clients/growth")
    assert status in (401, 403)


def test_jobs_are_scheduled_and_local_mode_runs_them():
    from localmode.invoke import scheduled_handlers
    from localmode.schedules import period_seconds

    handlers = scheduled_handlers()
    assert period_seconds(handlers["savings-rollup"]) == 3600
    assert period_seconds(handlers["savings-close"]) == 86400 and period_seconds(handlers["growth-snapshot"]) == 900


def test_the_snapshot_counts_a_new_agent_and_its_instance(tenant_with_agent):
    from chalicelib.repositories import fleet

    _, caller, _, _ = tenant_with_agent
    before = fleet.fleet_counts(now_utc())
    status, _ = caller.post("/api/agents/register", registration())
    assert status == 200
    after = fleet.fleet_counts(now_utc())
    assert after["agents_total"] == before["agents_total"] + 1 and after["agents_online"] == before["agents_online"] + 1
    assert after["instances_active"] == before["instances_active"] + 1
    assert after["clients_total"] == before["clients_total"]


def test_the_on_demand_price_is_aws_list_price_not_the_one_an_agent_reported(api, make_tenant):
    """A switch report's ``prices.on_demand`` is stored on the new instance; the roll-up took it before the
    catalogue, so an agent reporting 0.50 for an m5.large (listed 0.096) made every hour of it 'save' 0.404
    more than the instance page, which shows the list price, suggests."""
    client_id, caller = make_tenant()
    t = now_utc().replace(minute=0, second=0, microsecond=0)
    agent_id = "ag-" + uuid.uuid4().hex[:8]
    iid = _instance(client_id, agent_id, "m5.large.eu-west-1a", "ondemand", t - timedelta(hours=3),
                    t - timedelta(hours=1), od="0.50")
    savings_rollup_client(client_id, t + timedelta(minutes=5))
    summary = caller.get(f"/api/client/{client_id}/savings")[1]["summary"]
    assert (summary["total_actual_cost"], summary["total_baseline_cost"]) == (0.192, 0.192)  # 2 h x 0.096
    status, pricing = caller.get(f"/api/client/instances/{iid}/pricing")
    assert status == 200 and pricing["on_demand_price"] == 0.096


def savings_rollup_client(client_id, now):
    from chalicelib.jobs import savings_rollup

    return savings_rollup.rollup_client(ClientTable.get(client_id), now)
