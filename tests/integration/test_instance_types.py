"""Interchangeable instance types (issue #11) against moto: an agent's declared types take part in the
decision cycle, the market-data jobs and the replica coordinator; launches use the pool's type; and the
24-pool eu-west-1 set (8 general-purpose ``.large`` types × 3 zones, real prices) goes through the
decision cycle for an agent whose requirements (2 vCPU, 8 GiB) resolve to those types.

Pools are global in the shared moto, so each test names its own types (``unique``) except the 24-pool
test, which uses the real names and sets every input it reads (fresh prices and risk of all 24 pools).
"""

from __future__ import annotations

import csv
import gzip
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from components.data_valve import PricePoint

from chalicelib import bootstrap
from chalicelib.aws.spot_market import SpotPriceRecord
from chalicelib.jobs import spot_prices
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations as observation_repo
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable, DecisionTable
from tests.conftest import invoke_schedule, registration
from tests.e2e.failover_support import REGION as US_EAST_1
from tests.e2e.failover_support import configure, ec2, register_agent

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")

EU = "eu-west-1"
EU_WEST_1_PRICES = (Path(__file__).resolve().parents[2] / "data" / "spot"
                    / "eu-west-1_spot_linux_2021-12_2022-06_general-purpose.csv.gz")
LARGE = ("m4.large", "m5.large", "m5a.large", "m5ad.large", "m5d.large", "m5n.large", "m6a.large", "m6i.large")


def unique(family: str) -> str:
    return f"{family}.t{uuid.uuid4().hex[:8]}xl"


def server_prices(prices: dict[str, float], now: datetime) -> None:
    """Fresh AWS prices for pools, as the spot-prices job stores them."""
    pool_repo.store_server_prices([PricePoint(pool_id=p, ts=now - timedelta(minutes=1), price=Decimal(str(v)),
                                              source_agent_id=pool_repo.SERVER_SOURCE) for p, v in prices.items()], now)


def same_risk(pool_ids, now: datetime, risk: float = 0.02) -> None:
    pool_repo.save_risk([(p, risk, "model", "test") for p in pool_ids], 3600, now)


def settle(client_id: str, agent_id: str) -> None:
    """Registered 3 h ago (no minimum-stay rail in the way)."""
    AgentTable(client_id, agent_id).update(actions=[
        AgentTable.registered_at.set(datetime.now(timezone.utc) - timedelta(hours=3))])


def report(caller, agent_id: str, itype: str, prices: dict[str, float], od: float) -> None:
    body = {"instance": {"instance_type": itype, "region": EU},
            "pricing": {"on_demand_price": od,
                        "spot_pools": [{"pool_id": p, "price": v} for p, v in prices.items()]}}
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200, reply


def test_the_cycle_moves_to_a_cheaper_pool_of_a_declared_type_a_legacy_agent_does_not(api, make_tenant):
    own, other = unique("m5"), unique("m5a")
    # GIVEN an agent on own.eu-west-1a declaring `other` interchangeable, and a legacy agent on the same pool
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(instance_type=own, instance_types=[other]))
    assert status == 200 and reply["config"]["allowed_instance_types"] == [own, other], reply
    agent_id = reply["agent_id"]
    status, legacy = caller.post("/api/agents/register", registration(instance_type=own))
    assert status == 200 and legacy["config"]["allowed_instance_types"] is None
    for a in (agent_id, legacy["agent_id"]):
        settle(client_id, a)
    now = datetime.now(timezone.utc)
    # own type: eu-west-1a is its cheapest pool; the declared type is half the price in eu-west-1b
    for a in (agent_id, legacy["agent_id"]):  # made-up types: each agent's own on-demand price is its report's
        report(caller, a, own, {f"{own}.{EU}{z}": p for z, p in {"a": 0.040, "b": 0.044, "c": 0.046}.items()},
               od=0.096)
    server_prices({f"{other}.{EU}{z}": p for z, p in {"a": 0.030, "b": 0.020, "c": 0.035}.items()}, now)
    same_risk([f"{t}.{EU}{z}" for t in (own, other) for z in "abc"], now)
    # WHEN the decision cycle runs
    invoke_schedule(api, "decision-cycle")
    # THEN the declaring agent is sent to the other type's cheapest pool; the command names the type
    [command] = bootstrap.command_store().active_for_agent(agent_id, 5)
    assert (command.command_type.value, command.target_pool_id) == ("switch", f"{other}.{EU}b")
    status, body = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and body["commands"][0]["target_instance_type"] == other
    stored = list(DecisionTable.query(agent_id))[-1]
    assert stored.action == "switch_pool"
    assert {p["pool_id"] for p in stored.inputs["pools"]} == {f"{t}.{EU}{z}" for t in (own, other) for z in "abc"}
    # AND the legacy agent only sees its own type's pools: it stays where it is
    status, body = caller.post(f"/api/agents/{legacy['agent_id']}/decide", {})
    assert status == 200 and body["recommended_pool_id"] == f"{own}.{EU}a", body
    assert bootstrap.command_store().active_for_agent(legacy["agent_id"], 5) == []


def test_a_v4_agent_declaring_another_type_is_switched_only_within_the_type_it_runs(api, make_tenant):
    """The legacy v4 agent launches the type it runs on in the target pool's zone (it reads only the zone of
    ``target_pool_id``): a switch to another declared type's pool would run its own type there and report the
    other type's pool. Its switches stay within its own type; its standbys (launched by the product) do not."""
    own, other = unique("m5"), unique("m5a")
    # GIVEN a v4 agent on own.eu-west-1a whose client declared `other` interchangeable
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(instance_type=own, agent_version="4.0.0"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"instance_types": [own, other]})
    assert status == 200 and reply["allowed_instance_types"] == [own, other], reply
    settle(client_id, agent_id)
    now = datetime.now(timezone.utc)
    report(caller, agent_id, own, {f"{own}.{EU}{z}": p for z, p in {"a": 0.040, "b": 0.044, "c": 0.046}.items()},
           od=0.096)
    server_prices({f"{other}.{EU}{z}": p for z, p in {"a": 0.030, "b": 0.020, "c": 0.035}.items()}, now)
    same_risk([f"{t}.{EU}{z}" for t in (own, other) for z in "abc"], now)
    # WHEN the decision cycle runs THEN it stays on its own type's cheapest pool, where it is
    invoke_schedule(api, "decision-cycle")
    assert bootstrap.command_store().active_for_agent(agent_id, 5) == []
    status, body = caller.post(f"/api/agents/{agent_id}/decide", {})
    assert status == 200 and body["recommended_pool_id"] == f"{own}.{EU}a", body
    # AND the client cannot force it to the other type's pool (400, nothing queued); its own type's is fine
    agent = agent_repo.require(client_id, agent_id)
    status, body = caller.post(f"/api/client/instances/{agent.instance_id}/force-switch",
                               {"target": "pool", "pool_id": f"{other}.{EU}b"})
    assert status == 400 and body["field"] == "pool_id", body
    assert bootstrap.command_store().active_for_agent(agent_id, 5) == []
    status, body = caller.post(f"/api/client/instances/{agent.instance_id}/force-switch",
                               {"target": "pool", "pool_id": f"{own}.{EU}b"})
    assert status == 201 and body["command"]["target_pool_id"] == f"{own}.{EU}b", body


def test_declared_types_are_what_the_market_data_jobs_fetch(make_tenant):
    own, other = unique("m5"), unique("m6i")
    _, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(instance_type=own, instance_types=[other]))
    assert status == 200, reply
    assert {(EU, own), (EU, other)} <= set(agent_repo.types_in_use())
    asked = []
    now = datetime.now(timezone.utc)

    def fetch(region, types, start):
        asked.extend((region, t) for t in types)
        return [SpotPriceRecord(t, f"{region}a", "Linux/UNIX", Decimal("0.0301"), now - timedelta(minutes=2))
                for t in types if t == other]

    # (the job's targets are what agents declare, above; at most a cap a run, in turns: a long session's other
    # tests declare more than one run asks, so the run here asks these, as some run of the job would)
    spot_prices.run(now, fetch=fetch, targets=[(EU, own), (EU, other)])
    assert (EU, other) in asked and (EU, own) in asked
    assert float(pool_repo.latest_prices([f"{other}.{EU}a"])[f"{other}.{EU}a"].price) == 0.0301


def test_the_config_route_declares_resolves_and_clears_types(make_tenant):
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(instance_type="m5.large"))
    agent_id, version = reply["agent_id"], reply["config"]["config_version"]
    # WHEN the client declares requirements THEN they resolve (own type first, same architecture, ≤ 20)
    status, body = caller.post(f"/api/client/agents/{agent_id}/config",
                               {"type_requirements": {"vcpus_min": 2, "vcpus_max": 2, "memory_gib_min": 8,
                                                      "memory_gib_max": 8}})
    assert status == 200, body
    allowed = body["allowed_instance_types"]
    assert allowed[0] == "m5.large" and set(LARGE) <= set(allowed) and "m6g.large" not in allowed
    assert body["config_version"] == version + 1 and body["type_requirements"]["vcpus_min"] == 2
    # a list is added to the stored requirements (merged), then both are cleared with null
    status, body = caller.post(f"/api/client/agents/{agent_id}/config", {"instance_types": ["c5.xlarge"]})
    assert status == 200 and body["allowed_instance_types"][:2] == ["m5.large", "c5.xlarge"], body
    assert set(LARGE) <= set(body["allowed_instance_types"])
    status, body = caller.post(f"/api/client/agents/{agent_id}/config",
                               {"instance_types": None, "type_requirements": None})
    assert status == 200 and body["allowed_instance_types"] is None and body["instance_types"] is None
    assert agent_repo.get(client_id, agent_id).runnable_types == ("m5.large",)
    # a legacy re-registration (no declaration) keeps a stored one; a declaring one replaces it
    status, body = caller.post(f"/api/client/agents/{agent_id}/config", {"instance_types": ["m6i.large"]})
    row = agent_repo.get(client_id, agent_id)
    status, again = caller.post("/api/agents/register", registration(
        instance_type="m5.large", instance_id=row.instance_id, logical_agent_id=row.logical_agent_id))
    assert status == 200 and again["config"]["allowed_instance_types"] == ["m5.large", "m6i.large"], again
    assert again["config"]["config_version"] == body["config_version"]
    status, again = caller.post("/api/agents/register", registration(
        instance_type="m5.large", instance_id=row.instance_id, logical_agent_id=row.logical_agent_id,
        instance_types=["m5a.large"]))
    assert again["config"]["allowed_instance_types"] == ["m5.large", "m5a.large"]
    assert again["config"]["config_version"] == body["config_version"] + 1


def test_the_coordinator_places_the_standby_in_another_declared_type_and_launches_that_type(api, make_tenant):
    # GIVEN a manual-replica agent in us-east-1a whose declared type is cheapest (and as safe) in us-east-1b
    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    other = unique("m6i")
    configure(client_id, agent_id, manual_replica_enabled=True, auto_switch_enabled=False,
              allowed_instance_types=[itype, other])
    now = datetime.now(timezone.utc)
    server_prices({f"{other}.{US_EAST_1}b": 0.011, f"{other}.{US_EAST_1}c": 0.019}, now)
    same_risk([f"{itype}.{US_EAST_1}{z}" for z in "abcd"] + [f"{other}.{US_EAST_1}{z}" for z in "bc"], now)
    # WHEN the coordinator runs
    invoke_schedule(api, "replica-coordinator")
    # THEN the standby is an `other` instance in that pool
    [standby] = replica_repo.for_agent(agent_id, include_final=False)
    assert standby.pool_id == f"{other}.{US_EAST_1}b" and standby.instance_type == other
    described = ec2().describe_instances(InstanceIds=[standby.instance_id])["Reservations"][0]["Instances"][0]
    assert described["InstanceType"] == other and described["Placement"]["AvailabilityZone"] == f"{US_EAST_1}b"
    assert agent_repo.get(client_id, agent_id).instance_type == itype  # the primary is untouched


def _prices_in_force(at: str) -> dict[str, float]:
    """The eu-west-1 ``.large`` pools' spot prices in force at ``at`` (each pool a step function)."""
    latest: dict[str, tuple[str, float]] = {}
    with gzip.open(EU_WEST_1_PRICES, "rt") as f:
        for r in csv.DictReader(f):
            pool = f"{r['instance_type']}.{r['availability_zone']}"
            if r["instance_type"] in LARGE and r["timestamp"] <= at and r["timestamp"] >= latest.get(pool, ("",))[0]:
                latest[pool] = (r["timestamp"], float(r["spot_price"]))
    return {p: v for p, (_, v) in latest.items()}


def test_the_24_pool_eu_west_1_set_goes_through_the_decision_cycle(api, make_tenant):
    prices = _prices_in_force("2022-01-15T00:00:00Z")
    assert len(prices) == 24 and {p.rsplit(".", 1)[0] for p in prices} == set(LARGE)
    cheapest = min(prices, key=lambda p: (prices[p], p))
    assert not cheapest.startswith("m5.large."), "the data's cheapest pool at that instant is another type"
    # GIVEN an m5.large agent on on-demand whose requirements (2 vCPU, 8 GiB) resolve to the 8 types
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(
        instance_type="m5.large", az=f"{EU}b", mode="ondemand",
        requirements={"vcpus_min": 2, "vcpus_max": 2, "memory_gib_min": 8, "memory_gib_max": 8}))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    assert set(LARGE) <= set(reply["config"]["allowed_instance_types"])
    settle(client_id, agent_id)
    now = datetime.now(timezone.utc).replace(microsecond=0)  # a scheduled event's time has whole seconds
    report(caller, agent_id, "m5.large", {p: v for p, v in prices.items() if p.startswith("m5.large.")}, od=0.107)
    # and the server's spot-prices job prices the other types (the fetch answers from the data set)
    asked = []

    def fetch(region, types, start):
        asked.extend(types)
        return [SpotPriceRecord(p.rsplit(".", 1)[0], p.rsplit(".", 1)[1], "Linux/UNIX", Decimal(str(v)),
                                now - timedelta(minutes=1))
                for p, v in prices.items() if region == EU and p.rsplit(".", 1)[0] in types]

    in_use = set(agent_repo.types_in_use())
    assert {(EU, t) for t in LARGE} <= in_use  # the declared types are the job's targets (asked in turns)
    spot_prices.run(now, fetch=fetch, targets=[(EU, t) for t in LARGE])
    assert set(LARGE) <= set(asked)
    same_risk(prices, now)
    # WHEN the decision cycle runs, scheduled at the instant the back-off is read below (a pool whose window
    # ends between two different instants would be blocked in one and a target in the other)
    invoke_schedule(api, "decision-cycle", now)
    # THEN all 24 pools were compared and the agent goes back to spot in the cheapest, another type
    stored = list(DecisionTable.query(agent_id))[-1]
    seen = {p["pool_id"]: p for p in stored.inputs["pools"]}
    assert set(prices) <= set(seen)
    # (pools other tests of the session left in capacity back-off are compared but are no target; read as this
    # client's placements read it: other tenants' own reports are not its back-off)
    blocked = observation_repo.backoff(list(prices), now, viewer=client_id)
    off = {p: seen[p] for p in prices if p not in blocked
           and not (seen[p]["available"] and seen[p]["price"] == prices[p])}
    assert not off, off
    assert all(not seen[p]["available"] for p in blocked)
    cheapest = min((p for p in prices if p not in blocked), key=lambda p: (prices[p], p))
    assert not cheapest.startswith("m5.large.")
    assert stored.action == "to_spot" and stored.target == cheapest, stored.reason
    [command] = bootstrap.command_store().active_for_agent(agent_id, 5)
    assert command.target_pool_id == cheapest and command.target_mode == "spot"
