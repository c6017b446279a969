"""Market data nobody can poison, capacity too (issue #12): what an agent *reports* about a pool's capacity (a
failed switch's EC2 error code, a switch report's launch) is its own client's evidence only.

GIVEN tenants A (attacker) and V (victim) whose agents run the same instance type, V's pool P fresh and priced
WHEN A queues switches of its own agent into P and reports each as refused for capacity (a switch report that
     claims a launch in P likewise)
THEN P is not in back-off for V's placements (decisions, standbys, failover), nor does A's claim reach the
     fleet-wide risk evidence; A's own placements do honour its report, and A's own risk score counts it.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from chalicelib import decisions
from chalicelib.jobs import risk_scorer
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations, pools
from tests.api._support import now_utc, pricing_body, switch_body
from tests.conftest import new_instance_id, registration


def _agent(make_tenant, itype):
    client_id, caller = make_tenant()
    reg = registration(instance_type=itype)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], reg["instance_id"]


def _refuse(caller, agent_id, instance_id, pool):
    status, cmd = caller.post(f"/api/client/instances/{instance_id}/force-switch", {"target": "pool", "pool_id": pool})
    assert status == 201, cmd
    status, polled = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and cmd["command"]["id"] in [c["id"] for c in polled["commands"]], polled
    status, reply = caller.post(f"/api/agents/{agent_id}/commands/{cmd['command']['id']}/executed",
                                {"success": False, "message": "RunInstances refused",
                                 "error_code": "InsufficientInstanceCapacity"})
    assert status == 200 and reply["command"]["status"] == "failed", reply


def _priced(caller, agent_id, instance_id, itype):
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                pricing_body(instance_id, itype, {"eu-west-1b": 0.03, "eu-west-1c": 0.04}))
    assert status == 200 and reply["pools"] == 2, reply


def _available(client_id, agent_id, pool):
    agent = agent_repo.get(client_id, agent_id)
    options, _ = decisions.market(agent, now_utc())
    return next(o for o in options if o.pool_id == pool).available


def test_another_tenants_capacity_reports_do_not_put_a_pool_in_back_off_for_the_victim(make_tenant):
    itype = f"m5.c{uuid.uuid4().hex[:8]}xl"  # no other test's pools
    pool = f"{itype}.eu-west-1b"
    victim_id, victim, victim_agent, victim_instance = _agent(make_tenant, itype)
    attacker_id, attacker, attacker_agent, attacker_instance = _agent(make_tenant, itype)
    _priced(attacker, attacker_agent, attacker_instance, itype)
    _priced(victim, victim_agent, victim_instance, itype)  # last: the pools' prices are the victim's
    assert _available(victim_id, victim_agent, pool)

    for _ in range(3):
        _refuse(attacker, attacker_agent, attacker_instance, pool)

    assert _available(victim_id, victim_agent, pool), "another tenant's claim put the victim's pool in back-off"
    assert pool in observations.backoff([pool], now_utc(), viewer=attacker_id)  # the reporter's own view has it
    since = now_utc() - timedelta(hours=1)
    assert observations.for_pools([pool], since, viewer=observations.FLEET)[pool] == []  # no fleet-wide evidence


def test_a_switch_report_does_not_clear_another_tenants_back_off(make_tenant):
    """A reported launch success is the reporter's evidence only: it does not clear a back-off the product's own
    launches (or the victim's reports) put the pool in."""
    itype = f"m5.c{uuid.uuid4().hex[:8]}xl"
    pool = f"{itype}.eu-west-1b"
    victim_id, victim, victim_agent, victim_instance = _agent(make_tenant, itype)
    attacker_id, attacker, attacker_agent, attacker_instance = _agent(make_tenant, itype)
    _priced(victim, victim_agent, victim_instance, itype)
    _refuse(victim, victim_agent, victim_instance, pool)
    assert not _available(victim_id, victim_agent, pool)

    body = switch_body(attacker_instance, new_instance_id())
    body["old_instance"]["instance_type"] = body["new_instance"]["instance_type"] = itype
    body["new_instance"]["pool_id"] = pool
    time.sleep(1.1)  # the claimed launch (whole seconds) is after the refusal
    body["timing"] = {"switch_initiated_at": now_utc().strftime("%Y-%m-%dT%H:%M:%SZ")}
    status, reply = attacker.post(f"/api/agents/{attacker_agent}/switch-report", body)
    assert status == 200 and reply["duplicate"] is False, reply

    assert not _available(victim_id, victim_agent, pool), "another tenant's report cleared the victim's back-off"


def _risk(client_id, agent_id, pool):
    agent = agent_repo.get(client_id, agent_id)
    options, _ = decisions.market(agent, now_utc())
    return next(o for o in options if o.pool_id == pool).risk


def _scorer_sees_only(monkeypatch, prefix: str) -> None:
    """The risk scorer scores every priced pool: in the shared embedded AWS that is every earlier test's pools too
    (minutes per run by the end of a session). Here it scores this test's pools only (their ids start with
    ``prefix``); each pool is scored on its own evidence, so what the test asserts of its pools is unchanged."""
    walk = risk_scorer.pool_walk.next_pools

    def next_pools(*args, **kwargs):
        turn = walk(*args, **kwargs)
        return turn._replace(pools=[p for p in turn.pools if p.pool_id.startswith(prefix)])

    monkeypatch.setattr(risk_scorer.pool_walk, "next_pools", next_pools)


def test_a_clients_own_refusals_raise_its_own_risk_score_and_no_one_elses(make_tenant, monkeypatch):
    """The risk scorer scores a pool once more for a client with reports there (the fleet's evidence plus its own):
    its own refused switches make its decisions warier of the pool; the fleet's score, the victim's decisions and
    the victim's pool listing keep the product's own evidence only."""
    itype = f"m5.r{uuid.uuid4().hex[:8]}xl"
    pool, sibling = f"{itype}.eu-west-1b", f"{itype}.eu-west-1c"
    _scorer_sees_only(monkeypatch, f"{itype}.")
    victim_id, victim, victim_agent, victim_instance = _agent(make_tenant, itype)
    attacker_id, attacker, attacker_agent, attacker_instance = _agent(make_tenant, itype)
    _priced(victim, victim_agent, victim_instance, itype)
    risk_scorer.run(now_utc())
    fleet_before = pools.latest_prices([pool])[pool].risk
    assert fleet_before is not None and _risk(attacker_id, attacker_agent, pool) == fleet_before

    for _ in range(3):
        _refuse(attacker, attacker_agent, attacker_instance, pool)
    risk_scorer.run(now_utc())

    stored = pools.latest_prices([pool, sibling])
    assert stored[pool].risk == fleet_before, "an agent's report moved the fleet-wide score"
    assert _risk(attacker_id, attacker_agent, pool) > fleet_before  # its own refusals count for it
    assert set(stored[pool].client_risk) == {attacker_id}  # the sibling is scored for it too (same type, region)
    assert attacker_id in stored[sibling].client_risk
    assert _risk(victim_id, victim_agent, pool) == fleet_before
    status, listed = victim.get(f"/api/client/pools?region=eu-west-1&instance_type={itype}")
    assert status == 200, listed
    assert next(p for p in listed["pools"] if p["pool_id"] == pool)["risk"] == fleet_before
