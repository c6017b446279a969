"""Market data nobody can poison (issue #12): one tenant's pricing reports never steer another tenant's
decisions or failovers, a flood of pools is refused and bounded everywhere, and the decision cycle
completes for everyone."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from components.decision_engine import ONDEMAND, Decision, DecisionAction, PoolOption, Situation

from chalicelib import decisions, replicas
from chalicelib.jobs import risk_scorer
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import pools as pool_repo
from chalicelib.tables import DecisionTable, PoolTable
from tests.conftest import invoke_schedule, registration
from tests.integration.test_instance_types import EU, same_risk, server_prices, settle, unique

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")

ITEM_LIMIT = 400 * 1024


def _register(caller, itype):
    status, reply = caller.post("/api/agents/register", registration(instance_type=itype))
    assert status == 200, reply
    return reply["agent_id"]


def _report(caller, agent_id, itype, pools: dict[str, float], od: float):
    body = {"instance": {"instance_type": itype, "region": EU},
            "pricing": {"on_demand_price": od, "spot_pools": [{"pool_id": p, "price": v} for p, v in pools.items()]}}
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200, reply
    return reply


def test_a_tenants_fake_pools_and_prices_never_steer_another_tenants_decisions(api, make_tenant):
    itype = unique("m5")
    a_client, a = make_tenant()
    b_client, b = make_tenant()
    a_agent, b_agent = _register(a, itype), _register(b, itype)
    settle(a_client, a_agent)
    settle(b_client, b_agent)
    now = datetime.now(timezone.utc)
    # GIVEN AWS's prices of the type's three zones, and tenant B's own on-demand price (a made-up type)
    server_prices({f"{itype}.{EU}a": 0.040, f"{itype}.{EU}b": 0.044}, now)
    _report(b, b_agent, itype, {}, od=0.096)
    # WHEN tenant A reports a fake zone, a zone AWS does not list, another region's pool, a dirt-cheap
    # price for the zone AWS has not priced yet, and an absurd on-demand price
    reply = _report(a, a_agent, itype, {f"{itype}.{EU}-x001-1a": 0.0011, f"{itype}.{EU}z": 0.0011,
                                        f"{itype}.us-east-1a": 0.0011, f"{itype}.{EU}c": 0.0011}, od=50.0)
    assert reply["pools"] == 1 and len(reply["warnings"]) == 3, reply
    same_risk([f"{itype}.{EU}{z}" for z in "abc"], now)
    for fake in (f"{itype}.{EU}-x001-1a", f"{itype}.{EU}z", f"{itype}.us-east-1a"):
        assert PoolTable.count(fake) == 0
    # THEN tenant B's decision cycle does not see A's price (eu-west-1c has no price for B) nor its
    # on-demand price, and B's failover plan never names the poisoned pool
    invoke_schedule(api, "decision-cycle")
    stored = list(DecisionTable.query(b_agent))[-1]
    pools = {p["pool_id"]: p for p in stored.inputs["pools"]}
    assert set(pools) == {f"{itype}.{EU}{z}" for z in "abc"}
    assert pools[f"{itype}.{EU}c"]["price"] is None and pools[f"{itype}.{EU}c"]["available"] is False
    assert float(stored.inputs["ondemand_price"]) == 0.096
    assert stored.target != f"{itype}.{EU}c"
    b_record = agent_repo.require(b_client, b_agent)
    plan = replicas.candidates(b_record, now)
    assert plan and all(p.pool_id != f"{itype}.{EU}c" for p in plan)
    assert plan[0].pool_id == f"{itype}.{EU}b"
    # AND tenant A's own decision may use its own report (it speaks for its own fleet only)
    a_options, a_ondemand = decisions.market(agent_repo.require(a_client, a_agent), now)
    assert {o.pool_id: o.price for o in a_options}[f"{itype}.{EU}c"] == 0.0011
    assert a_ondemand == 50.0
    # AND the client pool view of B shows no price for A's pool
    status, view = b.get(f"/api/client/pools?region={EU}&instance_type={itype}")
    assert status == 200 and {p["pool_id"]: p["price"] for p in view["pools"]}[f"{itype}.{EU}c"] is None


def test_a_report_of_5000_pools_is_refused_and_the_cycle_completes_for_everyone(api, make_tenant):
    itype = unique("m5")
    a_client, a = make_tenant()
    b_client, b = make_tenant()
    a_agent, b_agent = _register(a, itype), _register(b, itype)
    settle(b_client, b_agent)
    now = datetime.now(timezone.utc)
    server_prices({f"{itype}.{EU}a": 0.040, f"{itype}.{EU}b": 0.030}, now)
    _report(b, b_agent, itype, {}, od=0.096)
    # WHEN tenant A reports 5,000 pools (in zones of its region, as short as a body can name them)
    flood = {"pricing": {"spot_pools": [{"pool_id": f"{itype}.{EU}{chr(97 + i % 26)}", "price": 0.001}
                                        for i in range(5000)]}}
    status, reply = a.post(f"/api/agents/{a_agent}/pricing-report", flood)
    # THEN refused (too large a body) or every pool dropped: no pool row created
    assert status in (200, 413), reply
    if status == 200:
        assert reply["pools"] == 0 and reply["warnings"], reply
    assert PoolTable.count(f"{itype}.{EU}d") == 0
    # AND a list over the schema's bound that fits in a body is dropped whole (named in warnings)
    flood["pricing"]["spot_pools"] = flood["pricing"]["spot_pools"][:1000]
    status, reply = a.post(f"/api/agents/{a_agent}/pricing-report", flood)
    assert status == 200 and reply["pools"] == 0, reply
    assert any(w.startswith("pricing.spot_pools") for w in reply["warnings"]), reply
    assert PoolTable.count(f"{itype}.{EU}d") == 0
    # AND the decision cycle completes and decides for B from AWS's prices
    result = json.loads(json.dumps(invoke_schedule(api, "decision-cycle")))
    assert "failed" not in result, result
    stored = list(DecisionTable.query(b_agent))[-1]
    assert stored.target == f"{itype}.{EU}b"


def test_thousands_of_stored_pools_do_not_break_decisions_or_the_risk_scorer(api, make_tenant):
    """GIVEN 3,000 junk pools of a type already in the table (data from before these rules) WHEN an
    agent of that type is decided for and the risk scorer runs THEN each reads a bounded number of pools
    and the decision item stays far below DynamoDB's 400 KB."""
    itype = unique("m5")
    client_id, caller = make_tenant()
    agent_id = _register(caller, itype)
    settle(client_id, agent_id)
    now = datetime.now(timezone.utc)
    with PoolTable.batch_write() as batch:
        for i in range(3000):
            az = f"{EU}-junk{i:04d}-1a"
            batch.save(PoolTable(f"{itype}.{az}", instance_type=itype, az=az, region=EU,
                                 region_type=f"{EU}#{itype}", updated_at=now, recent=[]))
    server_prices({f"{itype}.{EU}a": 0.040, f"{itype}.{EU}b": 0.030}, now)
    _report(caller, agent_id, itype, {}, od=0.096)
    options, _ = decisions.market(agent_repo.require(client_id, agent_id), now)
    assert len(options) <= pool_repo.MAX_POOLS_PER_TYPE
    assert len(pool_repo.priced_page(now, 50).pools) <= 50
    assert not any(p.pool_id.startswith(f"{itype}.{EU}-junk") for p in pool_repo.priced_page(now, 10**6).pools)
    scored = risk_scorer.run(now)["scored"]
    assert sum(scored.values()) <= 2000


def test_a_decision_item_keeps_at_most_n_pools_and_counts_the_rest():
    """GIVEN 5,000 candidate pools WHEN a decision is recorded THEN the named pools come first, at most N
    are kept, the rest counted, and the item is far below 400 KB."""
    options = tuple(PoolOption(f"m5.large.zone{i:05d}", 0.05 + i * 1e-6, 0.1, available=True) for i in range(5000))
    decision = Decision(action=DecisionAction.SWITCH_POOL, target="m5.large.zone04999", standby=None,
                        reason="test", fallbacks=("m5.large.zone04998",))
    evaluation = decisions.Evaluation(decision, Situation(current=ONDEMAND, since=datetime.now(timezone.utc)),
                                      options, 0.096)
    kept = decisions.recorded_pools(evaluation, 40)
    assert len(kept["pools"]) == 40 and kept["pools_omitted"] == 4960
    assert [p["pool_id"] for p in kept["pools"][:2]] == ["m5.large.zone04999", "m5.large.zone04998"]
    assert kept["pools"][2]["pool_id"] == "m5.large.zone00000"  # then the cheapest
    assert len(json.dumps(kept)) < ITEM_LIMIT // 20


def test_without_aws_zone_list_a_report_only_updates_pools_already_known(monkeypatch, make_tenant):
    """GIVEN DescribeAvailabilityZones failing WHEN an agent reports a known pool and a never-seen zone
    of its region THEN the known pool is taken and the unknown one dropped (no pool AWS does not know)."""
    from chalicelib import reported_pools
    from chalicelib.aws import ec2

    def down(region):
        raise ec2.TransientAwsError("DescribeAvailabilityZones: unavailable")

    itype = unique("m5")
    client_id, caller = make_tenant()
    agent_id = _register(caller, itype)
    now = datetime.now(timezone.utc)
    server_prices({f"{itype}.{EU}a": 0.040}, now)
    monkeypatch.setattr(reported_pools, "_zones", {})
    monkeypatch.setattr(ec2, "availability_zones", down)
    reply = _report(caller, agent_id, itype, {f"{itype}.{EU}a": 0.041, f"{itype}.{EU}b": 0.039}, od=0.096)
    assert reply["server_priced"] == 1 and reply["pools"] == 0
    assert any(f"{itype}.{EU}b" in w for w in reply["warnings"]), reply
    assert PoolTable.count(f"{itype}.{EU}b") == 0
