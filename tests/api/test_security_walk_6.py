"""Security walk 6: what the API's answers tell a tenant about the service itself (the failover workflow's ARN),
per-container state a caller can grow, suspended clients and deleted agents, and the routes added since walk 5.
Each test is one attack; its docstring says what happened before the fix (when it found something) and what holds
now."""

from __future__ import annotations

import json

import pytest

from chalicelib.tables.interruptions import InterruptionTable
from tests.e2e.failover_support import register_agent, wait_for


def _no_arn(reply) -> None:
    text = json.dumps(reply)
    assert "arn:aws" not in text and ":stateMachine:" not in text and ":execution:" not in text, reply


def _wait_for_failovers(client_id: str) -> None:
    """Let every workflow this tenant started finish before the next test snapshots the tables."""
    for row in InterruptionTable.query(client_id, consistent_read=True):
        if row.execution_arn:
            wait_for(row.execution_arn)


@pytest.mark.usefixtures("failover_machine")
@pytest.mark.parametrize("route", ["termination-imminent", "create-emergency-replica", "promote"])
def test_a_started_failover_never_answers_the_services_execution_arn(make_tenant, route):
    """ATTACK (disclosure): a tenant's agent reports its two-minute notice, or the client promotes its standby.
    BEFORE: the answer carried the Step Functions ``execution_arn`` (the service's own AWS account id, region and
    state machine name). NOW: the interruption id (the execution's name) only."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    if route == "promote":  # manual-switch answers through the same code
        assert caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})[0] == 200
        status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
        assert status == 201, standby
        status, reply = caller.post(f"/api/agents/{agent_id}/replicas/{standby['replica_id']}/promote", {})
    elif route == "create-emergency-replica":
        assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_switch_enabled": True})[0] == 200
        status, reply = caller.post(f"/api/agents/{agent_id}/{route}", {"signal_type": "termination-notice"})
    else:
        status, reply = caller.post(f"/api/agents/{agent_id}/{route}", {"instance_id": primary})
    assert status in (201, 202), reply
    _wait_for_failovers(client_id)
    workflow = reply.get("workflow") or reply
    assert workflow["action"] == "failover_started" and workflow["interruption_id"], reply
    _no_arn(reply)


def test_asking_for_many_made_up_types_never_grows_a_containers_memory_without_bound(make_tenant, monkeypatch):
    """ATTACK (resources): a client asks ``GET /api/client/pools`` for one made-up (well-formed) instance type after
    another. BEFORE: the container remembered each (region, type) on-demand lookup for an hour, with no bound: its
    memory grew with every request (1,200 a minute within the rate limit). NOW: at most ``LISTED_CACHED`` entries."""
    from chalicelib.repositories import market

    monkeypatch.setattr(market, "LISTED_CACHED", 5)
    market.forget_listed()
    _, caller = make_tenant()
    for i in range(12):
        status, reply = caller.get(f"/api/client/pools?region=eu-west-1&instance_type=zz{i}.large")
        assert status == 200 and reply["pools"] == [], reply
    assert 0 < len(market._listed) <= 5


@pytest.fixture
def suspended_manual_tenant(make_tenant, admin):
    """A legacy tenant (its client token speaks for its agent) whose agent has a real primary and manual-replica mode
    on, then suspended by the admin: (client_id, caller, agent_id, primary)."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})[0] == 200
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})[0] == 200
    return client_id, caller, agent_id, primary


SUSPENDED_WRITES = [
    ("POST", "/api/agents/register", "registration"),
    ("POST", "/api/agents/{a}/heartbeat", {"status": "online"}),
    ("GET", "/api/agents/{a}/pending-commands", None),
    ("POST", "/api/agents/{a}/replicas", {}),
    ("POST", "/api/agents/{a}/manual-switch", {}),
    ("POST", "/api/agents/{a}/manual-replica/enable", {}),
    ("POST", "/api/agents/{a}/issue-switch-command", {}),
    ("POST", "/api/agents/{a}/decide", {}),
    ("POST", "/api/agents/{a}/termination-imminent", {}),
    ("POST", "/api/agents/{a}/create-emergency-replica", {"signal_type": "termination-notice"}),
    ("POST", "/api/client/agents/{a}/config", {"auto_switch_enabled": True}),
    ("POST", "/api/client/agents/{a}/toggle-enabled", {"enabled": False}),
    ("POST", "/api/client/agents/{a}/settings", {"auto_terminate_enabled": False}),
    ("DELETE", "/api/client/agents/{a}", None),
    ("POST", "/api/client/instances/{i}/force-switch", {"target": "ondemand"}),
    ("POST", "/api/notifications/mark-all-read", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), SUSPENDED_WRITES)
def test_a_suspended_clients_token_changes_nothing(suspended_manual_tenant, method, path, body):
    """A suspended (inactive) client's token, on every route that writes or acts for an agent: 403, nothing written,
    no instance launched."""
    from tests.api._support import diff_snapshots, snapshot_world
    from tests.conftest import registration

    _, caller, agent_id, primary = suspended_manual_tenant
    if body == "registration":
        body = registration()
    before = snapshot_world()
    status, reply = caller.call(method, path.format(a=agent_id, i=primary), body)
    assert status == 403, (status, reply)
    assert diff_snapshots(before, snapshot_world()) == {}


@pytest.mark.usefixtures("fleet_jobs_see_this_test_only")
def test_the_coordinator_launches_nothing_for_a_suspended_client(suspended_manual_tenant):
    """ATTACK (acting for a suspended tenant): a manual-replica agent's client is suspended. BEFORE: the replica
    coordinator kept its standby policy, launching a standby (and handing the agent back to spot through the
    failover workflow) every run for a client the service no longer serves. NOW: no standby is created or launched
    and no planned return starts; a standby it already has is still watched (failed, expired), and an interruption
    of its running instance still fails it over (documented)."""
    from chalicelib.jobs import replica_coordinator
    from chalicelib.repositories import replicas as replica_repo
    from tests.api._support import diff_snapshots, now_utc, snapshot_world

    _, _, agent_id, _ = suspended_manual_tenant
    before = snapshot_world()
    replica_coordinator.run(now_utc())
    assert replica_repo.for_agent(agent_id) == []
    assert diff_snapshots(before, snapshot_world()) == {}


def test_the_decision_cycle_skips_a_suspended_clients_agent(tenant_with_agent, admin):
    """A suspended client's agents cannot poll: the decision cycle queues them no command (it would wait, undelivered,
    until it expired)."""
    from chalicelib.repositories import agents as agent_repo

    client_id, caller, agent_id, _ = tenant_with_agent
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_switch_enabled": True})[0] == 200
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})[0] == 200
    agent = agent_repo.require(client_id, agent_id)
    assert agent_repo.in_decision_cycle(agent) == (agent.current_mode != "unknown")
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})[0] == 200
    assert not agent_repo.in_decision_cycle(agent_repo.require(client_id, agent_id))


@pytest.fixture
def deleted_verified_agent(make_tenant, api, aws_signs_locally):
    """A verified agent its client deleted: (client_id, caller, agent_id, credential, register body)."""
    from tests.api.test_agent_identity import verified_registration

    client_id, caller = make_tenant(legacy=False)
    body = verified_registration(logical_agent_id="web-1")
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    agent_id, credential = reply["agent_id"], reply["agent_credential"]
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    return client_id, caller, agent_id, credential, body


@pytest.mark.parametrize(("method", "route", "body"), [
    ("POST", "heartbeat", {"status": "online"}), ("GET", "pending-commands", None), ("GET", "config", None),
    ("POST", "pricing-report", {}), ("POST", "switch-report", {}), ("POST", "termination", {}),
    ("GET", "instances-to-terminate", None), ("POST", "cleanup-report", {}),
    ("POST", "termination-imminent", {}), ("POST", "rebalance-recommendation", {}),
    ("POST", "create-emergency-replica", {}), ("GET", "replica-config", None), ("POST", "replicas", {}),
    ("POST", "manual-switch", {}), ("POST", "decide", {}), ("GET", "switch-recommendation", None),
])
def test_a_deleted_agents_credential_does_nothing(deleted_verified_agent, api, method, route, body):
    from tests.api._support import diff_snapshots, snapshot_world
    from tests.conftest import Caller

    _, _, agent_id, credential, _ = deleted_verified_agent
    before = snapshot_world()
    status, reply = Caller(api.http, token=credential).call(method, f"/api/agents/{agent_id}/{route}", body)
    assert status in (401, 403, 404), (status, reply)
    assert diff_snapshots(before, snapshot_world()) == {}


def test_another_tenant_never_revives_a_deleted_agent(deleted_verified_agent, make_tenant):
    """Tenant B registers with A's deleted agent's logical id (and its own instance): a new agent of B's; A's agent
    stays deleted, and A's instance stays A's."""
    from chalicelib.repositories import agents as agent_repo
    from tests.api.test_agent_identity import verified_registration

    client_id, _, agent_id, _, body = deleted_verified_agent
    b_client, b = make_tenant(legacy=False)
    status, reply = b.post("/api/agents/register", verified_registration(logical_agent_id="web-1"))
    assert status == 200 and reply["agent_id"] != agent_id, reply
    assert agent_repo.require(client_id, agent_id, allow_deleted=True).deleted
    assert agent_repo.get(b_client, agent_id) is None
    status, reply = b.post("/api/agents/register", {**body})
    assert status in (403, 409), reply  # A's proven instance: B's account is not bound (or the claim is proven)
    assert agent_repo.instance_row(body["instance_id"]).client_id == client_id
