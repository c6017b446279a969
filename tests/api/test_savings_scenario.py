"""A hand-computed savings scenario driven through the real routes (register, pricing and switch reports, a
standby, an agent deleted), rolled up as the savings-worker does, and read back from every place a client sees
savings: the savings route (summary, months, days, CSV), the overview, the charts, the instance metrics.

Clock (UTC, patched for the handlers and the roll-up), on-demand 0.10 everywhere, no discount:

client A, agent 1 (type X)                       client A, agent 2 (type Y, manual replica)
  03-31 20:00  registers spot X.a, price 0.03      03-31 20:00  registers spot Y.a, price 0.02 (to the end)
  23:30  switch to X.b (0.05), old gone 23:40      21:00  standby in Y.b at 0.04
  04-01 02:00  switch to on-demand                 04-01 01:00  standby deleted
  05:15  agent deleted (its instance ends)
client B (another tenant) reports X.a at 0.09 from 21:00: never client A's price.
Everything is read at 04-01 06:00.

By hand (actual / baseline), per instance:
  i1 X.a 20:00-23:40  3 h 40 min x 0.03 = 0.11      / x 0.10 = 0.36666667
  i2 X.b 23:30-02:00  2.5 h x 0.05      = 0.125     / 0.25          (10 min overlap with i1: both cost and count)
  i3 on-demand 02:00-05:15 3.25 h       = 0.325     / 0.325         (the fallback saves exactly 0)
  i4 Y.a 20:00-06:00  10 h x 0.02       = 0.20      / 1.00
  s  standby 21:00-01:00 4 h x 0.04     = 0.16      / 0             (insurance: a cost, never a saving)
  March: 0.335 / 0.81666667 (saved 0.48166667); April: 0.585 / 1.125 (saved 0.54)
  total: 0.92 / 1.94166667, saved 1.02166667 = 52.62 %
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import catalogue, clock
from chalicelib.jobs import savings_rollup
from chalicelib.tables.clients import ClientTable
from tests.api._support import pricing_body, random_instance_type
from tests.api.test_replicas import agent_launched
from tests.conftest import registration

T0 = datetime(2025, 3, 31, 20, tzinfo=UTC)
END = datetime(2025, 4, 1, 6, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def at(monkeypatch):
    """Set the handlers' clock."""
    def move(when: datetime) -> None:
        monkeypatch.setattr(clock, "now", lambda: when)
    return move


def _register(caller, itype, az="eu-west-1a"):
    body = registration(instance_type=itype, az=az, mode="spot", logical_agent_id=f"web-{uuid.uuid4().hex[:8]}")
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    return reply["agent_id"], body["instance_id"]


def _prices(caller, agent_id, instance_id, itype, prices):
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                pricing_body(instance_id, itype, prices, on_demand=0.10))
    assert status == 200, reply


def _switch(caller, agent_id, old_id, itype, *, old_az, new_az, new_mode, prices, initiated, terminated):
    new_id = "i-" + uuid.uuid4().hex[:17]
    body = {"old_instance": {"instance_id": old_id, "instance_type": itype, "az": old_az, "mode": "spot"},
            "new_instance": {"instance_id": new_id, "instance_type": itype, "region": "eu-west-1", "az": new_az,
                             "mode": new_mode},
            "snapshot": {"used": False}, "trigger": "manual", "prices": prices,
            "timing": {"switch_initiated_at": iso(initiated), "old_instance_terminated_at": iso(terminated)}}
    if new_mode == "spot":
        body["new_instance"]["pool_id"] = f"{itype}.{new_az}"
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", body)
    assert status == 200 and reply["success"], reply
    return new_id, body, reply


@pytest.fixture
def scenario(make_tenant, at, monkeypatch):
    client_a, a = make_tenant()
    client_b, b = make_tenant()
    x, y = random_instance_type(), random_instance_type()  # pools of this test only
    listed = catalogue.ondemand_price
    monkeypatch.setattr(catalogue, "ondemand_price", lambda t, region=None: 0.10 if t in (x, y) else listed(t, region))  # AWS's price
    at(T0)
    agent1, i1 = _register(a, x)
    _prices(a, agent1, i1, x, {"eu-west-1a": 0.03, "eu-west-1b": 0.05})
    agent2, i4 = _register(a, y)
    _prices(a, agent2, i4, y, {"eu-west-1a": 0.02, "eu-west-1b": 0.04})
    agent_b, ib = _register(b, x)
    at(T0 + timedelta(hours=1))
    _prices(b, agent_b, ib, x, {"eu-west-1a": 0.09})
    # agent 2's standby (the agent launched it; manual-replica mode)
    status, reply = a.post(f"/api/client/agents/{agent2}/config", {"manual_replica_enabled": True})
    assert status == 200, reply
    standby = agent_launched()
    status, replica = a.post(f"/api/agents/{agent2}/replicas",
                             {"instance_id": standby, "replica_type": "manual", "parent_instance_id": i4,
                              "pool_id": f"{y}.eu-west-1b", "status": "launching"})
    assert status == 201, replica
    # agent 1: spot X.a -> spot X.b (reported after the old instance is gone), sent twice
    at(datetime(2025, 3, 31, 23, 45, tzinfo=UTC))
    prices = {"on_demand": 0.10, "old_spot": 0.03, "new_spot": 0.05}
    i2, body, first = _switch(a, agent1, i1, x, old_az="eu-west-1a", new_az="eu-west-1b", new_mode="spot",
                              prices=prices, initiated=datetime(2025, 3, 31, 23, 30, tzinfo=UTC),
                              terminated=datetime(2025, 3, 31, 23, 40, tzinfo=UTC))
    assert first["hourly_savings"] == -0.02 and first["duplicate"] is False
    at(datetime(2025, 4, 1, 0, 10, tzinfo=UTC))
    status, again = a.post(f"/api/agents/{agent1}/switch-report", body)
    assert status == 200 and again["duplicate"] is True, again
    # the standby is deleted at 01:00
    at(datetime(2025, 4, 1, 1, tzinfo=UTC))
    status, reply = a.call("DELETE", f"/api/agents/{agent2}/replicas/{replica['replica_id']}")
    assert status == 200, reply
    # agent 1 falls back to on-demand at 02:00, and is deleted at 05:15
    at(datetime(2025, 4, 1, 2, 5, tzinfo=UTC))
    i3, _, fallback = _switch(a, agent1, i2, x, old_az="eu-west-1b", new_az="eu-west-1b", new_mode="ondemand",
                              prices={"on_demand": 0.10, "old_spot": 0.05},
                              initiated=datetime(2025, 4, 1, 2, tzinfo=UTC),
                              terminated=datetime(2025, 4, 1, 2, tzinfo=UTC))
    assert fallback["hourly_savings"] == -0.05
    at(datetime(2025, 4, 1, 5, 15, tzinfo=UTC))
    status, reply = a.call("DELETE", f"/api/client/agents/{agent1}")
    assert status == 200, reply
    # the hourly roll-ups (each re-integrates the trailing window), then every read at 06:00
    for hour in (T0 + timedelta(hours=5), END):
        for client_id in (client_a, client_b):
            savings_rollup.rollup_client(ClientTable.get(client_id), hour)
    at(END)
    return {"a": a, "b": b, "client_a": client_a, "client_b": client_b,
            "instances": {"i1": i1, "i2": i2, "i3": i3, "i4": i4, "standby": standby}}


def test_every_view_shows_the_hand_computed_savings(scenario):
    a, client_a = scenario["a"], scenario["client_a"]
    status, body = a.get(f"/api/client/{client_a}/savings?months=2")
    assert status == 200, body
    assert body["summary"] | {"as_of": None} == {
        "total_savings": 1.0217, "total_actual_cost": 0.92, "total_baseline_cost": 1.9417, "savings_percent": 52.62,
        "month_to_date_savings": 0.54, "last_30d_savings": 1.0217, "currency": "USD", "as_of": None}
    assert body["monthly"] == [
        {"month": "2025-03", "baseline_cost": 0.8167, "actual_cost": 0.335, "savings": 0.4817,
         "savings_percent": 58.98},
        {"month": "2025-04", "baseline_cost": 1.125, "actual_cost": 0.585, "savings": 0.54, "savings_percent": 48.0}]
    days = {d["date"]: d for d in body["daily"] if d["actual_cost"] or d["baseline_cost"]}
    assert set(days) == {"2025-03-31", "2025-04-01"}
    assert (days["2025-03-31"]["savings"], days["2025-04-01"]["savings"]) == (0.4817, 0.54)
    # running time: spot i1 3h40 + i2 2.5 h + i4 10 h + standby 4 h; on demand i3 3.25 h
    assert sum(d["spot_hours"] for d in days.values()) == pytest.approx(20.17, abs=0.01)
    assert sum(d["ondemand_hours"] for d in days.values()) == 3.25
    status, overview = a.get(f"/api/client/{client_a}")
    assert status == 200 and overview["savings"] == body["summary"], overview
    status, charts = a.get(f"/api/client/{client_a}/stats/charts")
    assert status == 200 and charts["savings_trend"] == body["daily"]
    expected = {"i1": (0.2567, 0.2567), "i2": (0.125, 0.125), "i3": (0.0, 0.0), "i4": (0.8, 0.8),
                "standby": (-0.16, -0.16)}
    for name, (total, last_30d) in expected.items():
        status, metrics = a.get(f"/api/client/instances/{scenario['instances'][name]}/metrics")
        assert status == 200, metrics
        assert (metrics["savings_total"], metrics["savings_30d"]) == (total, last_30d), name


def test_another_tenant_is_never_mixed_in(scenario):
    b, client_b = scenario["b"], scenario["client_b"]
    summary = b.get(f"/api/client/{client_b}/savings")[1]["summary"]
    # its own price (0.09 from 21:00; before it, its first point holds): 10 h x 0.09 against 10 h x 0.10
    assert (summary["total_actual_cost"], summary["total_baseline_cost"], summary["total_savings"]) == (0.9, 1.0, 0.1)
    assert b.get(f"/api/client/instances/{scenario['instances']['i1']}/metrics")[0] == 404
