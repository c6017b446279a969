"""Tenant isolation, route by route.

GIVEN tenant A with an agent, an instance, a queued command, a notification and a standby replica, and B
WHEN B calls every route of the app with A's ids in the path (and in the body where a route takes ids)
THEN B gets 404 (client routes) or 401 (admin routes without the admin key), never A's data, and nothing
anywhere in DynamoDB changes.

The walk is driven by ``chalice_app.routes``; ``ROUTES`` below must name every route of the app, so a route
added later without an isolation expectation makes ``test_every_route_has_an_isolation_expectation`` fail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from chalicelib import bootstrap
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.clients import ClientTable
from tests.api._support import diff_snapshots, snapshot_world, switch_body
from tests.conftest import Caller, account_instance, new_instance_id, registration
from tests.e2e.failover_support import configure, wait_for

Ids = dict[str, str]


@dataclass(frozen=True)
class Route:
    """How to call one route with a tenant's ids, and what a foreign tenant / the owner must get.

    ``foreign``: status expected when tenant B calls it with A's ids (B's token, no admin key).
    ``owner``: status (and error code) expected when the owning tenant calls it (admin routes: with the
    admin key), proving the body is valid, so the foreign 404 really comes from tenancy.
    """

    foreign: int
    owner: int
    body: Callable[[Ids], Any] | None = None
    admin: bool = False
    owner_code: str | None = None
    public: bool = False
    notes: str = field(default="", compare=False)


def _pricing(ids: Ids) -> dict:
    return {"instance": {"instance_id": ids["instance_id"], "instance_type": "m5.large",
                         "region": "eu-west-1", "az": "eu-west-1b", "mode": "spot"},
            "pricing": {"on_demand_price": 0.107, "current_spot_price": 0.031,
                        "spot_pools": [{"pool_id": "m5.large.eu-west-1b", "price": 0.031}]}}


def _switch(ids: Ids) -> dict:
    return switch_body(ids["instance_id"], ids["spare_instance_id"], command_id=ids["command_id"])


# Every route of the app, in the order the owner walk calls them (termination and token regeneration
# last: they end the owner's ability to use the agent / the token).
ROUTES: dict[tuple[str, str], Route] = {
    ("/health", "GET"): Route(foreign=200, owner=200, public=True,
                              notes="public readiness check, carries no tenant data"),
    ("/", "GET"): Route(foreign=200, owner=200, public=True, notes="the web console's page: static, no tenant data"),
    ("/console/{name}", "GET"): Route(foreign=404, owner=404, public=True, owner_code="not_found",
                                      notes="console files by name from a fixed table (a client's name is none)"),
    ("/console/vendor/{name}", "GET"): Route(foreign=404, owner=404, public=True, owner_code="not_found",
                                             notes="pinned third-party console files, same table lookup"),
    ("/api/openapi.json", "GET"): Route(foreign=200, owner=200, public=True,
                                        notes="public OpenAPI document, carries no tenant data"),
    ("/api/agents/register", "POST"): Route(
        foreign=409, owner=200, body=lambda ids: registration(
            instance_id=ids["instance_id"], logical_agent_id=ids["logical_agent_id"],
            instance_type="m5.large", az="eu-west-1b"),
        notes="B claiming A's instance id is a conflict, and writes nothing"),
    ("/api/agents/{agent_id}/heartbeat", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"status": "online", "instance_id": ids["instance_id"]}),
    ("/api/agents/{agent_id}/config", "GET"): Route(foreign=404, owner=200),
    ("/api/client/instances/{instance_id}/force-switch", "POST"): Route(
        foreign=404, owner=201, body=lambda ids: {"target": "ondemand"}),
    ("/api/agents/{agent_id}/pending-commands", "GET"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/instances-to-terminate", "GET"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/commands/{command_id}/extend", "POST"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/commands/{command_id}/executed", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"success": True, "message": "done"}),
    ("/api/agents/{agent_id}/mark-command-executed", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"command_id": ids["command_id"], "success": True}),
    ("/api/agents/{agent_id}/pricing-report", "POST"): Route(foreign=404, owner=200, body=_pricing),
    ("/api/agents/{agent_id}/switch-report", "POST"): Route(foreign=404, owner=200, body=_switch),
    ("/api/agents/{agent_id}/cleanup-report", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"snapshots": {"deleted": ["snap-1"]}}),
    ("/api/client/validate", "GET"): Route(foreign=200, owner=200,
                                           notes="answers with the caller's own client only"),
    ("/api/client/accounts", "GET"): Route(foreign=200, owner=200,
                                           notes="the caller's own account bindings and ExternalId only"),
    ("/api/client/limits", "GET"): Route(foreign=200, owner=200, notes="the caller's own quotas only"),
    ("/api/client/{client_id}/savings", "GET"): Route(foreign=404, owner=200),
    ("/api/notifications", "GET"): Route(foreign=200, owner=200,
                                         notes="lists the caller's own notifications only"),
    ("/api/notifications/{notification_id}/mark-read", "POST"): Route(foreign=404, owner=200),
    ("/api/notifications/mark-all-read", "POST"): Route(foreign=200, owner=200,
                                                        notes="touches the caller's own partition only"),
    ("/api/agents/{agent_id}/decide", "POST"): Route(foreign=404, owner=200, body=lambda ids: {}),
    ("/api/agents/{agent_id}/switch-recommendation", "GET"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/issue-switch-command", "POST"): Route(
        foreign=404, owner=201, body=lambda ids: {"target_mode": "ondemand"}),
    ("/api/client/agents/{agent_id}/decisions", "GET"): Route(foreign=404, owner=200),
    ("/api/client/instances/{instance_id}/price-history", "GET"): Route(foreign=404, owner=200),
    ("/api/client/pricing-history", "GET"): Route(foreign=200, owner=200,
                                                  notes="the pools of the caller's own agents only"),
    ("/api/client/pools", "GET"): Route(foreign=400, owner=400, owner_code="validation_error",
                                        notes="market data, not tenant data; needs region and instance_type"),
    # The client dashboard (issue #13): a {client_id} that is not the caller's is 404 like any other id.
    ("/api/client/{client_id}", "GET"): Route(foreign=404, owner=200),
    ("/api/client/{client_id}/agents", "GET"): Route(foreign=404, owner=200),
    ("/api/client/{client_id}/agents/history", "GET"): Route(foreign=404, owner=200),
    ("/api/client/{client_id}/agents/decisions", "GET"): Route(foreign=404, owner=200),
    ("/api/client/{client_id}/instances", "GET"): Route(foreign=404, owner=200),
    ("/api/client/{client_id}/replicas", "GET"): Route(foreign=404, owner=200),
    ("/api/client/{client_id}/switch-history", "GET"): Route(foreign=404, owner=200),
    ("/api/client/{client_id}/stats/charts", "GET"): Route(foreign=404, owner=200),
    ("/api/client/instances/{instance_id}/pricing", "GET"): Route(foreign=404, owner=200),
    ("/api/client/instances/{instance_id}/metrics", "GET"): Route(foreign=404, owner=200),
    ("/api/client/instances/{instance_id}/available-options", "GET"): Route(foreign=404, owner=200),
    ("/api/client/agents/{agent_id}/toggle-enabled", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"enabled": True}),
    ("/api/client/agents/{agent_id}/settings", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"auto_terminate_enabled": True}),
    # Replicas, interruptions and modes (the owner's order matters: each step leaves what the next needs).
    ("/api/agents/{agent_id}/replica-config", "GET"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/replicas", "GET"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/sef-status", "GET"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/interruptions", "GET"): Route(foreign=404, owner=200),
    ("/api/client/interruptions", "GET"): Route(foreign=200, owner=200,
                                                notes="lists the caller's own interruptions only"),
    ("/api/agents/{agent_id}/rebalance-recommendation", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {}, notes="A's standby exists: monitor"),
    ("/api/agents/{agent_id}/replicas/{replica_id}", "PUT"): Route(
        foreign=404, owner=200, body=lambda ids: {"instance_id": ids["replica_instance_id"], "status": "syncing"}),
    ("/api/agents/{agent_id}/replicas/{replica_id}/status", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"status": "ready"}),
    ("/api/agents/{agent_id}/replicas/{replica_id}/sync-status", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"sync_status": "synced", "state_transfer_progress": 100}),
    ("/api/agents/{agent_id}/replicas/{replica_id}", "DELETE"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/replicas/{replica_id}/promote", "POST"): Route(
        foreign=404, owner=409, owner_code="replica_not_active", body=lambda ids: {"demote_old_primary": True},
        notes="the owner deleted it one step earlier (one replica id serves both routes)"),
    ("/api/agents/{agent_id}/create-emergency-replica", "POST"): Route(
        foreign=404, owner=201, body=lambda ids: {"signal_type": "termination-notice"},
        notes="owner: a standby is launched and the failover workflow promotes it"),
    ("/api/client/agents/{agent_id}/config", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"manual_replica_enabled": True, "terminate_wait_seconds": 0}),
    ("/api/agents/{agent_id}/replicas", "POST"): Route(
        foreign=404, owner=201, body=lambda ids: {"instance_id": _standby_instance(ids), "status": "ready"},
        notes="the agent-launched (legacy) path: no EC2 launch"),
    ("/api/agents/{agent_id}/manual-switch", "POST"): Route(foreign=404, owner=202),
    ("/api/agents/{agent_id}/manual-replica/enable", "POST"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/manual-replica/disable", "POST"): Route(foreign=404, owner=200),
    ("/api/agents/{agent_id}/termination-imminent", "POST"): Route(
        foreign=404, owner=202, body=lambda ids: {}),
    ("/api/agents/{agent_id}/termination", "POST"): Route(
        foreign=404, owner=200, body=lambda ids: {"instance_id": ids["spare_instance_id"],
                                                  "reason": "spot interruption"}),
    ("/api/client/agents/{agent_id}", "DELETE"): Route(
        foreign=404, owner=200, notes="soft delete after the agent routes: the agent is gone for the rest"),
    ("/api/admin/clients/create", "POST"): Route(
        foreign=401, owner=201, admin=True, body=lambda ids: {"name": f"iso-{uuid.uuid4().hex[:10]}"}),
    ("/api/admin/clients", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/clients/growth", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/clients/{client_id}", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/clients/{client_id}/rate-limit", "POST"): Route(
        foreign=401, owner=200, admin=True, body=lambda ids: {"requests_per_window": 100000}),
    ("/api/admin/clients/{client_id}/accounts", "POST"): Route(
        foreign=401, owner=201, admin=True, body=lambda ids: {
            "account_id": ids["account_id"], "role_arn": f"arn:aws:iam::{ids['account_id']}:role/SpotOptimizer"}),
    ("/api/admin/clients/{client_id}/external-id/rotate", "POST"): Route(foreign=401, owner=201, admin=True),
    ("/api/admin/clients/{client_id}/external-id/confirm", "POST"): Route(
        foreign=401, owner=200, admin=True, notes="moto's STS accepts any ExternalId: the bound role 'accepts' it"),
    ("/api/admin/clients/{client_id}/external-id/pending", "DELETE"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/clients/{client_id}/accounts/{account_id}", "DELETE"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/clients/{client_id}/limits", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/clients/{client_id}/limits", "POST"): Route(
        foreign=401, owner=200, admin=True, body=lambda ids: {"max_agents": 10}),
    ("/api/admin/clients/{client_id}/status", "POST"): Route(
        foreign=401, owner=200, admin=True, body=lambda ids: {"status": "inactive"}),
    ("/api/admin/clients/{client_id}/legacy-agents", "POST"): Route(
        foreign=401, owner=200, admin=True, body=lambda ids: {"enabled": True}),
    ("/api/admin/clients/{client_id}/token", "GET"): Route(
        foreign=401, owner=410, admin=True, owner_code="token_not_recoverable"),
    ("/api/admin/activity", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/ml-models", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/ml-models", "POST"): Route(foreign=401, owner=400, admin=True, owner_code="validation_error",
                                            body=lambda ids: {"manifest": {}, "artifact_base64": "AAAA"}),
    ("/api/admin/ml-models/{version}/activate", "POST"): Route(foreign=401, owner=404, admin=True,
                                                                owner_code="not_found"),
    ("/api/admin/ml-models/rollback", "POST"): Route(foreign=401, owner=409, admin=True,
                                                      owner_code="no_previous_version"),
    ("/api/admin/ml-models/upload", "POST"): Route(foreign=401, owner=400, admin=True,
                                                   body=lambda ids: {"manifest": {}, "artifact_base64": "AAAA"}),
    ("/api/admin/ml-models/activate", "POST"): Route(foreign=401, owner=404, admin=True, owner_code="not_found",
                                                     body=lambda ids: {"sessionId": ids["version"]}),
    ("/api/admin/ml-models/fallback", "POST"): Route(foreign=401, owner=409, admin=True,
                                                     owner_code="no_previous_version"),
    ("/api/admin/ml-models/sessions", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/ml-models/upload-url", "POST"): Route(foreign=401, owner=201, admin=True),
    ("/api/admin/ml-models/register", "POST"): Route(foreign=401, owner=400, admin=True, body=lambda ids: {
        "upload_id": "0" * 32, "manifest": {}}),
    ("/api/admin/decision-engine/upload", "POST"): Route(foreign=401, owner=410, admin=True,
                                                         owner_code="decision_engine_not_uploadable"),
    ("/api/admin/stats", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/agents", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/instances", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/system-health", "GET"): Route(foreign=401, owner=200, admin=True),
    ("/api/admin/clients/{client_id}/regenerate-token", "POST"): Route(
        foreign=401, owner=200, admin=True, body=lambda ids: {}),
    # last: the owner's client is gone afterwards
    ("/api/admin/clients/{client_id}", "DELETE"): Route(foreign=401, owner=200, admin=True),
}


def app_routes(chalice_app) -> set[tuple[str, str]]:
    """(path, method) of every route the app serves."""
    return {(path, method) for path, methods in chalice_app.routes.items() for method in methods}


def fill(path: str, ids: Ids) -> str:
    """Substitute every ``{placeholder}`` of a route path; an unknown placeholder is a test bug."""
    try:
        return path.format(**ids)
    except KeyError as exc:  # pragma: no cover - only when a new route uses a new placeholder
        pytest.fail(f"no id for placeholder {exc} of {path}: extend the tenant ids")


@pytest.fixture
def tenant_a(make_tenant):
    """Tenant A: agent, instance (after a switch), a queued command, notifications; returns its ids."""
    client_id, caller = make_tenant()
    reg = registration()
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    new_id = account_instance("eu-west-1b")  # the primary after the switch: replacements copy it
    status, body = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(reg["instance_id"], new_id))
    assert status == 200 and body["duplicate"] is False, body
    status, body = caller.post(f"/api/client/instances/{new_id}/force-switch",
                               {"target": "pool", "pool_id": "m5.large.eu-west-1c"})
    assert status == 201, body
    command_id = body["command"]["id"]
    status, body = caller.get("/api/notifications")
    assert status == 200 and body["notifications"], body
    notification_id = body["notifications"][0]["id"]
    # A standby recorded the agent-launched way (no EC2 needed), then auto-switch back on directly in the
    # table, so the walk's earlier routes (issue-switch-command) see the agent as before.
    status, body = caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})
    assert status == 200, body
    replica_instance_id = account_instance("eu-west-1c")
    status, body = caller.post(f"/api/agents/{agent_id}/replicas",
                               {"instance_id": replica_instance_id, "pool_id": "m5.large.eu-west-1c"})
    assert status == 201, body
    replica_id = body["replica_id"]
    configure(client_id, agent_id, manual_replica_enabled=False, auto_switch_enabled=True)
    name = ClientTable.get(client_id).name
    ids = {"client_id": client_id, "agent_id": agent_id, "instance_id": new_id, "command_id": command_id,
           "notification_id": notification_id, "logical_agent_id": reg["logical_agent_id"],
           "spare_instance_id": account_instance("eu-west-1b"), "old_instance_id": reg["instance_id"], "name": name,
           "version": "never-uploaded", "replica_id": replica_id, "replica_instance_id": replica_instance_id,
           "replica2_instance_id": account_instance("eu-west-1c"), "account_id": "111111111111"}
    return ids, caller


def test_every_route_has_an_isolation_expectation(chalice_app):
    """GIVEN the app WHEN its routes are listed THEN ROUTES names exactly those (no route left unwalked)."""
    assert set(ROUTES) == app_routes(chalice_app)


def _leak_markers(ids: Ids, request_text: str) -> set[str]:
    """A's identifiers and name that B did not send itself: none may appear in a response to B."""
    keys = ("client_id", "agent_id", "instance_id", "command_id", "notification_id", "logical_agent_id",
            "old_instance_id", "name", "replica_id", "replica_instance_id")
    return {ids[k] for k in keys if ids[k] not in request_text}


def test_tenant_b_cannot_reach_anything_of_tenant_a(api, tenant_a, make_tenant, chalice_app):
    """GIVEN tenants A (with data) and B WHEN B walks every route with A's ids THEN 404/401, no leak, no write."""
    ids, a_caller = tenant_a
    _, b_caller = make_tenant()
    status, a_config = a_caller.get(f"/api/agents/{ids['agent_id']}/config")
    assert status == 200
    command_before = bootstrap.command_store().get(ids["agent_id"], ids["command_id"])
    assert command_before is not None and command_before.status.value == "pending"
    before = snapshot_world()

    walked = set()
    for path, method in sorted(app_routes(chalice_app)):
        route = ROUTES[(path, method)]
        url = fill(path, ids)
        body = route.body(ids) if route.body else None
        status, reply = b_caller.call(method, url, body)
        walked.add((path, method))
        assert status == route.foreign, (method, path, status, reply)
        if not route.public and status >= 400:
            assert set(reply) >= {"error", "message"}, (path, reply)
        text = str(reply)
        for marker in _leak_markers(ids, url + str(body)):
            assert marker not in text, (method, path, marker, reply)
        if route.admin:
            # B's client token presented as the admin key is no admin key either.
            status, reply = b_caller.call(method, url, body, headers={"X-Admin-Key": b_caller.token})
            assert status == 401, (method, path, status, reply)

    assert walked == set(ROUTES)
    assert diff_snapshots(before, snapshot_world()) == {}

    # A's data is exactly as before, seen through A's own token.
    status, after_config = a_caller.get(f"/api/agents/{ids['agent_id']}/config")
    assert status == 200 and after_config == a_config
    assert bootstrap.command_store().get(ids["agent_id"], ids["command_id"]) == command_before
    status, listing = a_caller.get("/api/notifications")
    mine = {n["id"]: n for n in listing["notifications"]}
    assert mine[ids["notification_id"]]["is_read"] is False
    status, me = a_caller.get("/api/client/validate")
    assert status == 200 and me["client_id"] == ids["client_id"]


def test_b_own_agent_cannot_use_a_ids_in_paths_or_bodies(tenant_a, make_tenant):
    """GIVEN B's own agent WHEN it names A's command or instance THEN 404 and A's rows are untouched."""
    ids, _ = tenant_a
    _, b_caller = make_tenant()
    b_reg = registration()
    status, reply = b_caller.post("/api/agents/register", b_reg)
    assert status == 200
    b_agent = reply["agent_id"]
    before = snapshot_world()

    status, body = b_caller.post(f"/api/agents/{b_agent}/commands/{ids['command_id']}/executed",
                                 {"success": True})
    assert status == 404 and body["error"] == "not_found", body
    status, body = b_caller.post(f"/api/agents/{b_agent}/mark-command-executed",
                                 {"command_id": ids["command_id"], "success": True})
    assert status == 404, body
    status, body = b_caller.post(f"/api/agents/{b_agent}/switch-report",
                                 switch_body(new_instance_id(), new_instance_id(), command_id=ids["command_id"]))
    assert status == 404 and body["field"] == "old_instance.instance_id", body
    status, body = b_caller.post(f"/api/agents/{b_agent}/termination", {"instance_id": ids["instance_id"]})
    assert status == 404 and body["field"] == "instance_id", body
    status, body = b_caller.post(f"/api/client/instances/{ids['instance_id']}/force-switch",
                                 {"target": "ondemand"})
    assert status == 404, body
    assert diff_snapshots(before, snapshot_world()) == {}

    # A switch report naming A's instance as B's *new* instance must not hijack it either.
    status, body = b_caller.post(f"/api/agents/{b_agent}/switch-report",
                                 switch_body(b_reg["instance_id"], ids["instance_id"]))
    assert status == 409 and body["error"] == "instance_conflict", body
    assert diff_snapshots(before, snapshot_world()) == {}
    agent_row = AgentTable.get(ids["client_id"], ids["agent_id"])
    assert agent_row.instance_id == ids["instance_id"]


def _standby_instance(ids) -> str:
    """The fixture's spare standby instance, or a new one of the account, outside the agent's pool *now*: earlier
    routes of the walk (switches, a failover) may have moved the primary into the spare's zone."""
    current = AgentTable.get(ids["client_id"], ids["agent_id"]).az
    if current != "eu-west-1c":
        return ids["replica2_instance_id"]
    return account_instance("eu-west-1b")


def _execution_arn(reply) -> str | None:
    """The execution a reply started, by its name (the interruption id: answers name no ARN)."""
    if not isinstance(reply, dict):
        return None
    workflow = reply.get("workflow") or reply
    return workflow.get("interruption_id") if workflow.get("action") == "failover_started" else None


def test_the_walk_bodies_are_valid_for_the_owner(api, tenant_a, admin_key, failover_machine):
    """GIVEN the same requests WHEN the owner (or the admin) sends them THEN they succeed.

    This is the control for the foreign walk: the 404s above come from tenancy, not from bad bodies.
    A route that starts the failover workflow is followed to its end before the next one is called.
    """
    ids, a_caller = tenant_a
    admin_caller = Caller(api.http, admin=admin_key)
    for (path, method), route in ROUTES.items():
        caller = admin_caller if route.admin else a_caller
        body = route.body(ids) if route.body else None
        status, reply = caller.call(method, fill(path, ids), body)
        assert status == route.owner, (method, path, status, reply)
        if route.owner_code:
            assert reply["error"] == route.owner_code, reply
        if arn := _execution_arn(reply):
            assert wait_for(arn)["status"] == "SUCCEEDED", (method, path, reply)
        if (path, method) == ("/api/agents/{agent_id}/pending-commands", "GET"):
            assert ids["command_id"] in {c["id"] for c in reply["commands"]}
