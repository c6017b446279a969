"""Security walk 3: market data shared between tenants (agent price reports, risk features, savings, replica
prices). Each test is an attack by one tenant on another's view of a pool; the rule is that a price or score
derived from another tenant's reports never reaches a tenant, and no tenant can hide another's prices."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import pools as pool_repo
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.pools import PricePointTable
from tests.api._support import now_utc, pricing_body, random_instance_type
from tests.conftest import registration


@pytest.fixture
def two_tenants_one_type(make_tenant):
    """Tenants A and B, each with one agent running the same never-seen type in eu-west-1a (the spot-prices
    job does not price it: only agents' reports do)."""
    itype = random_instance_type()
    out = []
    for _ in range(2):
        client_id, caller = make_tenant()
        reg = registration(instance_type=itype)
        status, reply = caller.post("/api/agents/register", reg)
        assert status == 200, reply
        out.append((client_id, caller, reply["agent_id"], reg["instance_id"]))
    return itype, out


def _report(caller, agent_id, body):
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200, reply
    return reply


def _pools_view(caller, itype):
    status, body = caller.get(f"/api/client/pools?region=eu-west-1&instance_type={itype}")
    assert status == 200, body
    return {p["pool_id"]: p for p in body["pools"]}


def test_another_tenants_report_does_not_hide_my_agent_price(two_tenants_one_type):
    """ATTACK: B reports a pool A's agent priced. BEFORE: the pool row held one agent price (B's now), so A saw
    no price for its own pool (its decisions lost the pool). NOW: each tenant keeps its own."""
    itype, [(_, ca, aa, ia), (_, cb, ab, ib)] = two_tenants_one_type
    t0 = now_utc().replace(microsecond=0) - timedelta(minutes=2)
    pool = f"{itype}.eu-west-1b"
    _report(ca, aa, pricing_body(ia, itype, {"eu-west-1b": 0.0300}, collected_at=t0))
    _report(cb, ab, pricing_body(ib, itype, {"eu-west-1b": 0.0500}, collected_at=t0 + timedelta(seconds=30)))
    assert _pools_view(ca, itype)[pool]["price"] == 0.03
    assert _pools_view(cb, itype)[pool]["price"] == 0.05


def test_a_third_tenant_sees_no_agent_price(two_tenants_one_type, make_tenant):
    itype, [(_, ca, aa, ia), _b] = two_tenants_one_type
    _report(ca, aa, pricing_body(ia, itype, {"eu-west-1b": 0.0300}))
    _, other = make_tenant()
    assert _pools_view(other, itype)[f"{itype}.eu-west-1b"]["price"] is None


def test_a_replica_pool_check_never_quotes_another_tenants_price(two_tenants_one_type):
    """ATTACK: A asks for a standby in a pool only B priced, with a low max_hourly_cost. BEFORE: 409 "<pool> costs
    0.9 $/h": B's reported price in A's answer. NOW: A has no price for that pool, so no quote."""
    itype, [(ca_id, ca, aa, _), (_, cb, ab, ib)] = two_tenants_one_type
    pool = f"{itype}.eu-west-1b"
    _report(cb, ab, pricing_body(ib, itype, {"eu-west-1b": 0.9}))
    agent = agent_repo.require(ca_id, aa)
    agent_repo.update_config(agent, {"manual_replica_enabled": True, "auto_switch_enabled": False}, now_utc())
    status, body = ca.post(f"/api/agents/{aa}/replicas", {"pool_id": pool, "max_hourly_cost": 0.1})
    # B's price as a number anywhere in the answer (not the digits of a time such as 14:08:40.988054)
    assert not re.search(r"(?<![\d.])0\.90*(?![\d])", str(body)), (status, body)


def _stored_point(pool_id, ts, price, *, source, client_id=None, quality="actual"):
    PricePointTable(pool_id, ts, price=Decimal(price), quality=quality, source_agent_id=source,
                    client_id=client_id, expires_at=ts + timedelta(days=90)).save()


def test_savings_integrate_aws_prices_and_never_another_tenants_points(make_tenant):
    """ATTACK: B's interpolated points (no source agent, B's client id) on a pool A runs. BEFORE: the savings
    roll-up took points without a source agent as everyone's, so B's gap fill set A's cost; and AWS's own
    points (source "aws") were dropped. NOW: A's runs read AWS's points and A's own agents' only."""
    from chalicelib.jobs import savings_rollup

    client_a, _ = make_tenant()
    client_b, _ = make_tenant()
    t = now_utc().replace(minute=0, second=0, microsecond=0)
    pool = f"{random_instance_type()}.eu-west-1a"
    _stored_point(pool, t - timedelta(hours=6), "0.03", source=pool_repo.SERVER_SOURCE)
    _stored_point(pool, t - timedelta(hours=5), "9.99", source=None, client_id=client_b, quality="interpolated")
    itype = pool.rsplit(".", 1)[0]
    row = InstanceTable("i-0123456789abcdef0", client_id=client_a, agent_id="ag-00a", instance_type=itype,
                        region="eu-west-1", az="eu-west-1a", mode="spot", lifecycle="spot", pool_id=pool,
                        role="primary", is_active=True, installed_at=t - timedelta(hours=4), updated_at=t)
    [run] = savings_rollup.instance_runs(client_a, [row], t - timedelta(hours=48), t)
    assert [price for _, price in run.spot_points] == [Decimal("0.03")]


def test_the_fleet_risk_never_reads_a_tenants_reported_prices(make_tenant):
    """ATTACK: B reports wild prices for a pool. BEFORE: the risk scorer's fleet score (which every tenant reads)
    took its price features from every point of the pool, B's agent points included. NOW: the fleet's evidence
    reads AWS's points; a client's own score reads AWS's and its own."""
    from chalicelib.jobs import risk_scorer

    client_a, _ = make_tenant()
    client_b, _ = make_tenant()
    t = now_utc().replace(microsecond=0)
    pool_id = f"{random_instance_type()}.eu-west-1a"
    _stored_point(pool_id, t - timedelta(hours=3), "0.03", source=pool_repo.SERVER_SOURCE)
    _stored_point(pool_id, t - timedelta(hours=2), "0.04", source="ag-a", client_id=client_a)
    _stored_point(pool_id, t - timedelta(hours=1), "9.99", source="ag-b", client_id=client_b)
    itype = pool_id.rsplit(".", 1)[0]
    pool = pool_repo.PoolPrice(pool_id, itype, "eu-west-1a", "eu-west-1", None, None, None)
    fleet = risk_scorer.evidence(pool, {}, {}, t)
    assert list(fleet.prices) == [0.03]
    own = risk_scorer.evidence(pool, {}, {}, t, viewer=client_a)
    assert list(own.prices) == [0.03, 0.04]
