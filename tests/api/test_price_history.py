"""Price history routes (chalicelib/api/price_history.py): a client's view of the rolled-up pool prices.

Each test uses its own never-seen instance type, so its pools are its own in the shared moto."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.jobs import pricing_aggregator
from chalicelib.repositories import pools as pool_repo
from components.data_valve import PricePoint
from components.price_buckets import DAY, HOUR, floor_to
from tests.api._support import assert_error, iso, random_instance_type
from tests.conftest import registration


@pytest.fixture
def market(make_tenant, handlers_now):
    """Two tenants whose agents run the same new type in eu-west-1a; AWS prices pool 1a (0.05 from 30 h
    ago, 0.03 from 2 h ago), tenant B's agent alone prices pool 1b (0.09, its own price); rolled up.
    The routes' clock is held at ``now``: the tests name the current hour and day they expect the series to end
    in, which would otherwise be the next ones when an hour or a day begins between this fixture and a request."""
    itype = random_instance_type()
    tenants = []
    for _ in range(2):
        client_id, caller = make_tenant()
        reg = registration(instance_type=itype)
        status, reply = caller.post("/api/agents/register", reg)
        assert status == 200, reply
        tenants.append({"client_id": client_id, "caller": caller, "agent_id": reply["agent_id"],
                        "instance_id": reg["instance_id"]})
    now = handlers_now
    pool_a, pool_b = f"{itype}.eu-west-1a", f"{itype}.eu-west-1b"
    pool_repo.store_server_prices([
        PricePoint(pool_a, now - timedelta(hours=30), Decimal("0.05"), source_agent_id="aws"),
        PricePoint(pool_a, now - timedelta(hours=2), Decimal("0.03"), source_agent_id="aws")], now)
    b_at = now - timedelta(hours=3)
    pool_repo.admit_points([PricePoint(pool_b, b_at, Decimal("0.09"), source_agent_id=tenants[1]["agent_id"])],
                           b_at, client_id=tenants[1]["client_id"])
    pricing_aggregator.run(now, pools=list(pool_repo.latest_prices([pool_a, pool_b]).values()))
    return {"itype": itype, "a": tenants[0], "b": tenants[1], "pool_a": pool_a, "pool_b": pool_b, "now": now}


def _series(body) -> dict[str, list[dict]]:
    return {s["pool_id"]: s["points"] for s in body["series"]}


def test_instance_price_history_hourly(market):
    """GIVEN rolled-up AWS prices WHEN tenant A asks for its instance's hourly history THEN its pool's
    series runs hour by hour to the current hour (from raw points, not rolled up yet), time-weighted,
    the hours without a point marked filled; tenant B's agent-only pool is not in A's answer."""
    a, now = market["a"], market["now"]
    status, body = a["caller"].get(f"/api/client/instances/{a['instance_id']}/price-history?days=2")
    assert status == 200, body
    assert body["instance_id"] == a["instance_id"] and body["interval"] == "hour"
    assert "on_demand_price" in body
    series = _series(body)
    assert set(series) == {market["pool_a"]} and body["series"][0]["pool_id"] == market["pool_a"]
    points = series[market["pool_a"]]
    assert points[-1]["t"] == iso(floor_to(now, HOUR))  # the current hour, from raw points
    assert points[-1]["price"] == 0.03
    times = [p["t"] for p in points]
    assert times == sorted(times) and len(times) == len(set(times))
    assert points[0]["t"] == iso(floor_to(now - timedelta(hours=30), HOUR))
    change = next(p for p in points if p["t"] == iso(floor_to(now - timedelta(hours=2), HOUR)))
    assert change["min"] == 0.03 and change["max"] == 0.05 and 0.03 <= change["price"] <= 0.05
    assert not change["filled"]
    assert any(p["filled"] and p["price"] == 0.05 for p in points)


def test_instance_price_history_daily(market):
    """``interval=day``: one point per UTC day, the current one included (from hourly rollups + raw)."""
    a, now = market["a"], market["now"]
    status, body = a["caller"].get(f"/api/client/instances/{a['instance_id']}/price-history?days=3&interval=day")
    assert status == 200, body
    points = _series(body)[market["pool_a"]]
    assert [p["t"] for p in points] == [iso(floor_to(now - timedelta(hours=30), DAY) + timedelta(days=i))
                                        for i in range(len(points))]
    assert points[-1]["t"] == iso(floor_to(now, DAY))
    assert all(0.03 <= p["price"] <= 0.05 for p in points)


def test_agent_prices_only_for_their_client(market):
    """Tenant B sees its own agent's pool next to AWS's; tenant A never does (market data trust)."""
    b = market["b"]
    status, body = b["caller"].get(f"/api/client/instances/{b['instance_id']}/price-history?days=1")
    assert status == 200, body
    series = _series(body)
    assert set(series) == {market["pool_a"], market["pool_b"]}
    assert {p["price"] for p in series[market["pool_b"]]} == {0.09}
    status, body = market["a"]["caller"].get("/api/client/pricing-history?days=1")
    assert status == 200, body
    assert market["pool_b"] not in _series(body)


def test_pricing_history(market):
    """The pools of the client's agents (all, or one with ``agent_id``), hourly up to 7 days."""
    b = market["b"]
    status, body = b["caller"].get(f"/api/client/pricing-history?days=2&agent_id={b['agent_id']}")
    assert status == 200, body
    assert body["interval"] == "hour" and body["agent_id"] == b["agent_id"]
    series = _series(body)
    assert {market["pool_a"], market["pool_b"]} <= set(series)
    status, body = b["caller"].get("/api/client/pricing-history?days=30")
    assert status == 200, body
    assert body["interval"] == "day" and market["pool_a"] in _series(body)


@pytest.mark.parametrize("query, field", [
    ("days=0", "days"), ("days=91", "days"), ("days=abc", "days"), ("days=-1", "days"),
    ("interval=week", "interval"), ("interval=", "interval"),
])
def test_instance_price_history_bad_params(market, query, field):
    a = market["a"]
    status, body = a["caller"].get(f"/api/client/instances/{a['instance_id']}/price-history?{query}")
    assert_error(status, body, 400, field=field)


@pytest.mark.parametrize("query, field", [
    ("days=31", "days"), ("days=0", "days"), ("interval=minute", "interval"), ("agent_id=%20x", "agent_id"),
])
def test_pricing_history_bad_params(market, query, field):
    status, body = market["a"]["caller"].get(f"/api/client/pricing-history?{query}")
    assert_error(status, body, 400, field=field)


def test_other_tenant_is_not_found(market):
    """Another tenant's instance or agent answers 404, as an unknown one does."""
    a, b = market["a"], market["b"]
    status, body = a["caller"].get(f"/api/client/instances/{b['instance_id']}/price-history")
    assert_error(status, body, 404)
    status, body = a["caller"].get("/api/client/instances/i-0123456789abcdef0/price-history")
    assert_error(status, body, 404)
    status, body = a["caller"].get(f"/api/client/pricing-history?agent_id={b['agent_id']}")
    assert_error(status, body, 404)


def test_needs_a_client_token(api, market):
    from tests.conftest import Caller

    status, body = Caller(api.http).get(f"/api/client/instances/{market['a']['instance_id']}/price-history")
    assert_error(status, body, 401)
