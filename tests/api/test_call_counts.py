"""DynamoDB calls per agent request (issue #14): a heartbeat in at most 2, a pending-commands poll in at most 1,
for a legacy agent (client token) and a verified agent (its own credential), counted at the botocore client
(an event hook, as bench/api_bench.py counts them). Counts, never times.

The counts are of a warm container's steady state: the container already knows the token's client (one
GetItem the first time) and has counted the client in this rate-limit window. A command in the queue makes
the request read and lease it (more calls, by design); once it is finished the counts drop back.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import pytest

from chalicelib import rate_limit
from chalicelib.repositories.dynamo import transaction_connection
from chalicelib.tables import AgentTable
from tests.api.test_agent_identity import verified  # noqa: F401 - the fixture
from tests.conftest import Caller, registration

HEARTBEAT_MAX, POLL_MAX = 2, 1


def _clients():
    """Every botocore DynamoDB client the product uses: pynamodb's per-model connections and the
    transactions' connection."""
    seen = {}
    for model in (AgentTable, *_models()):
        client = model._get_connection().connection.client
        seen[id(client)] = client
    client = transaction_connection().client
    seen[id(client)] = client
    return list(seen.values())


def _models():
    from chalicelib.tables import ALL_TABLES

    return ALL_TABLES


@contextmanager
def counting():
    """Count DynamoDB operations sent while the block runs (botocore's before-call event)."""
    calls: Counter = Counter()

    def hook(model, **_):
        calls[model.name] += 1

    clients = _clients()
    for client in clients:
        client.meta.events.register("before-call.dynamodb", hook, unique_id="test-call-counts")
    try:
        yield calls
    finally:
        for client in clients:
            client.meta.events.unregister("before-call.dynamodb", unique_id="test-call-counts")


def _steady(caller: Caller, agent_id: str):
    """Warm the container for this caller (token → client known, window counted) and the agent row."""
    for _ in range(2):
        assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})[0] == 200
        assert caller.get(f"/api/agents/{agent_id}/pending-commands")[0] == 200


def _assert_counts(caller: Caller, agent_id: str):
    with counting() as calls:
        status, body = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert status == 200 and body["commands"] == [], body
    assert 0 < sum(calls.values()) <= HEARTBEAT_MAX, dict(calls)
    assert "Query" not in calls and "GetItem" not in calls, dict(calls)
    with counting() as calls:
        status, body = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and body == {"commands": []}, body
    assert 0 < sum(calls.values()) <= POLL_MAX, dict(calls)


@pytest.fixture(autouse=True)
def _fixed_window(one_rate_window):
    """All requests of a test in one rate-limit window (a window boundary may cost one retry)."""


def test_a_legacy_agents_heartbeat_and_poll_stay_within_the_budget(make_tenant):
    """GIVEN a legacy agent (client token) in a warm container WHEN it heartbeats and polls with nothing
    pending THEN the heartbeat sends at most 2 DynamoDB calls and the poll at most 1."""
    _, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration())
    assert status == 200, reply
    _steady(caller, reply["agent_id"])
    _assert_counts(caller, reply["agent_id"])


def test_a_verified_agents_heartbeat_and_poll_stay_within_the_budget(verified):  # noqa: F811
    """GIVEN a verified agent (its own credential) WHEN it heartbeats and polls with nothing pending THEN the
    heartbeat sends at most 2 DynamoDB calls and the poll at most 1."""
    _, _, a, _ = verified
    _steady(a["caller"], a["agent_id"])
    _assert_counts(a["caller"], a["agent_id"])


def test_a_pending_command_is_still_delivered_and_the_budget_returns_after_it(make_tenant):
    """GIVEN an agent in its steady state WHEN a command is enqueued THEN the next poll reads the queue and
    delivers it (the row's counter says there is work); once its result is in, the counts are back within
    the budget."""
    _, caller = make_tenant()
    body = registration()
    status, reply = caller.post("/api/agents/register", body)
    agent_id = reply["agent_id"]
    _steady(caller, agent_id)
    status, reply = caller.post(f"/api/client/instances/{body['instance_id']}/force-switch", {"target": "ondemand"})
    assert status == 201, reply
    with counting() as calls:
        status, body = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and len(body["commands"]) == 1, body
    # the queue, and (a switch not yet delivered) the agent's newest events: held while a failover may run
    assert calls["Query"] == 2, dict(calls)
    command_id = body["commands"][0]["command_id"]
    status, body = caller.post(f"/api/agents/{agent_id}/commands/{command_id}/executed", {"success": True})
    assert status == 200, body
    _assert_counts(caller, agent_id)


def test_a_refused_agent_credential_uses_none_of_its_clients_quota(verified, api):  # noqa: F811
    """GIVEN a verified agent WHEN a wrong credential naming its client and agent (forged, or rotated) is sent
    to the heartbeat and the poll THEN 401, and the client's rate-limit window counts none of them (the fast
    path's count is refunded when the row refuses the credential)."""
    client_id, _, a, _ = verified
    _steady(a["caller"], a["agent_id"])
    before = rate_limit.requests_in_window(client_id)
    forged = Caller(api.http, token=a["credential"][:-4] + "AAAA")
    for _ in range(3):
        status, body = forged.post(f"/api/agents/{a['agent_id']}/heartbeat", {"status": "online"})
        assert status == 401, body
        status, body = forged.get(f"/api/agents/{a['agent_id']}/pending-commands")
        assert status == 401, body
    assert rate_limit.requests_in_window(client_id) == before > 0


def test_a_client_without_a_gate_gets_one_built_from_its_row(make_tenant, admin):
    """GIVEN a client whose gate item is missing (created before the gate existed) WHEN it calls THEN the gate
    is built from the client row and the call is served; a deactivation then refuses it at once."""
    from chalicelib.tables.rate_limits import RateLimitTable, gate_key

    client_id, caller = make_tenant()
    RateLimitTable(gate_key(client_id)).delete()
    rate_limit.reset_container_state()
    assert caller.get("/api/client/validate")[0] == 200
    gate = RateLimitTable.get(gate_key(client_id), consistent_read=True)
    assert gate.status == "active" and gate.token_hash and gate.requests == 1
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})[0] == 200
    assert caller.get("/api/client/validate")[0] == 403


def test_an_agent_row_without_the_counter_reads_its_queue_then_starts_counting(make_tenant):
    """GIVEN an agent row from before the command counter, with a command pending WHEN it polls THEN the queue
    is read and the command delivered; once the queue is seen empty the row counts from 0 and polls skip it."""
    _, caller = make_tenant()
    body = registration()
    status, reply = caller.post("/api/agents/register", body)
    agent_id, client_id = reply["agent_id"], reply["client_id"]
    AgentTable(client_id, agent_id).update(actions=[AgentTable.active_commands.remove()])
    status, reply = caller.post(f"/api/client/instances/{body['instance_id']}/force-switch", {"target": "ondemand"})
    assert status == 201, reply
    assert AgentTable.get(client_id, agent_id).active_commands is None  # enqueued uncounted
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and len(reply["commands"]) == 1, reply
    assert AgentTable.get(client_id, agent_id).active_commands is None  # the queue was not empty
    command_id = reply["commands"][0]["command_id"]
    assert caller.post(f"/api/agents/{agent_id}/commands/{command_id}/executed", {"success": True})[0] == 200
    assert caller.get(f"/api/agents/{agent_id}/pending-commands") == (200, {"commands": []})
    assert AgentTable.get(client_id, agent_id).active_commands == 0
    _assert_counts(caller, agent_id)
