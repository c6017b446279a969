"""Security walk 14: what an outside team tries first after the latest changes — the client switch queue
(``issue-switch-command``'s duplicate answer, its engine-chosen path, a switch racing the agent's delete), the
pagination cursors of one listing replayed on another, odd JSON on the switch routes, a deleted client's token, an
agent credential on the client routes that live under ``/api/agents/``, and the CSV exports' answers. Each test is
one attack; its docstring says what it tries and what holds (and, when it found something, what happened before the
fix)."""

from __future__ import annotations

import pytest

from chalicelib import bootstrap, command_queue
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.api.test_security_walk_7 import _first_calls_meet, _together
from tests.api.test_agent_identity import verified  # noqa: F401,F811 - a fixture
from tests.conftest import registration
from tests.integration.test_decisions import _set_risk, settled_agent  # noqa: F401,F811 - a fixture


def _unchanged_but_rate_limits(before) -> None:
    changed = diff_snapshots(before, snapshot_tables())
    assert set(changed) <= {t for t in changed if t.endswith("-rate-limits")}, changed


# --- the client switch queue ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("atomic_moto_requests")
def test_racing_switch_requests_without_a_target_queue_one_switch(settled_agent, monkeypatch):  # noqa: F811
    """The attack (or a console retrying on a slow answer): four ``issue-switch-command`` requests without a target
    (the engine chooses it) at the same moment, each past the read of the agent's empty queue before any writes.
    BEFORE: each queued its own switch of the same instance to the same pool: four pending commands, all handed
    out by the agent's next poll, and a legacy agent runs every switch it is handed (four replacements launched;
    the explicit-target path, ``queue_client_switch``, already guarded this race, this path did not). NOW: the write
    is conditional on no client switch having been queued since the agent row was read: one request queues the
    switch (201), the others find the queue taken (200, ``queued: false``), one command is delivered."""
    client_id, caller, agent_id, itype = settled_agent
    _set_risk(itype, {"a": 0.01, "b": 0.01, "c": 0.01})
    _first_calls_meet(monkeypatch, command_queue, "switch_command", 4)
    results = _together([lambda: caller.post(f"/api/agents/{agent_id}/issue-switch-command", {})
                         for _ in range(4)])
    assert sorted(status for status, _ in results) == [200, 200, 200, 201], results
    queued = [reply["command"]["id"] for status, reply in results if status == 201]
    assert all(reply["queued"] is False for status, reply in results if status == 200), results
    active = bootstrap.command_store().active_for_agent(agent_id, 50)
    assert [c.command_id for c in active] == queued
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["id"] for c in reply["commands"]] == queued, reply


def test_a_decision_cycle_racing_a_clients_switch_queues_nothing(tenant_with_agent, monkeypatch):
    """The attack: a client times its force-switch to land between the decision cycle's read of the agent's empty
    queue and the cycle's own write. BEFORE: the cycle's write was unguarded, both switches were queued and a
    legacy agent ran both (two replacements). NOW: the cycle's write is conditional on no switch of the agent having
    been queued since its row was read, as the client's is: the cycle queues nothing, the client's switch is the one
    delivered. A client disabling the agent in that window gets the same (the cycle queues nothing, no error)."""
    from datetime import UTC, datetime

    from chalicelib import decisions
    from chalicelib.repositories import agents as agent_repo
    from components.decision_engine import Decision, DecisionAction

    client_id, caller, agent_id, reg = tenant_with_agent
    agent = agent_repo.get(client_id, agent_id)  # the cycle's read of the agent
    store = type(bootstrap.command_store())
    real_active = store.active_for_agent

    def client_lands_after_the_read(self, *args, **kwargs):
        found = real_active(self, *args, **kwargs)
        monkeypatch.setattr(store, "active_for_agent", real_active)
        status, reply = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch", {"target": "ondemand"})
        assert status == 201, reply
        return found

    monkeypatch.setattr(store, "active_for_agent", client_lands_after_the_read)
    move = Decision(DecisionAction.SWITCH_POOL, "m5.large.eu-west-1b", None, "cheaper in b")
    assert decisions.command_for(agent, move, datetime.now(UTC), trigger="ml_recommendation") is None
    active = bootstrap.command_store().active_for_agent(agent_id, 10)
    assert [(c.created_by, c.target_mode) for c in active] == [("client", "ondemand")]

    assert caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})[0] == 200
    fresh = agent_repo.get(client_id, agent_id)
    stale = agent_repo.AgentRecord(**{**fresh.__dict__, "config": {**fresh.config, "enabled": True},
                                      "active_commands": 0})
    assert decisions.command_for(stale, move, datetime.now(UTC), trigger="ml_recommendation") is None
    assert bootstrap.command_store().active_for_agent(agent_id, 10) == []


def test_a_duplicate_switch_is_never_answered_with_another_agents_or_tenants_command(make_tenant):
    """The attack: tenant A queues a switch of its agent (``issue-switch-command`` and ``force-switch``); tenant B
    then sends the byte-identical requests for its own agent, and for A's agent id, hoping the new duplicate answer
    (the queued command of the same target) hands it A's command (its id, instance, lease). Holds: B's own agent
    gets a new command of its own (``duplicate`` false), A's agent id is 404 naming nothing of A's, a second agent of
    A's own gets its own command too, and A's queue is as it was."""
    a_id, a_caller = make_tenant()
    a_reg, a2_reg = registration(), registration()
    a_agent = a_caller.post("/api/agents/register", a_reg)[1]["agent_id"]
    a2_agent = a_caller.post("/api/agents/register", a2_reg)[1]["agent_id"]
    _, b_caller = make_tenant()
    b_reg = registration()
    b_agent = b_caller.post("/api/agents/register", b_reg)[1]["agent_id"]
    issue = {"target_mode": "spot", "target_pool_id": "m5.large.eu-west-1b"}
    status, first = a_caller.post(f"/api/agents/{a_agent}/issue-switch-command", issue)
    assert status == 201 and first["duplicate"] is False, first
    status, forced = a_caller.post(f"/api/client/instances/{a_reg['instance_id']}/force-switch", {"target": "ondemand"})
    assert status == 201 and forced["duplicate"] is False, forced
    theirs = {first["command"]["id"], forced["command"]["id"]}
    queue = sorted(c.command_id for c in bootstrap.command_store().active_for_agent(a_agent, 50))

    status, reply = b_caller.post(f"/api/agents/{b_agent}/issue-switch-command", issue)
    assert status == 201 and reply["duplicate"] is False and reply["command"]["id"] not in theirs, reply
    assert reply["command"]["instance_id"] == b_reg["instance_id"]
    status, reply = b_caller.post(f"/api/client/instances/{b_reg['instance_id']}/force-switch", {"target": "ondemand"})
    assert status == 201 and reply["duplicate"] is False and reply["command"]["id"] not in theirs, reply
    status, reply = a_caller.post(f"/api/agents/{a2_agent}/issue-switch-command", issue)
    assert status == 201 and reply["duplicate"] is False and reply["command"]["id"] not in theirs, reply

    before = snapshot_tables()
    for path, body in ((f"/api/agents/{a_agent}/issue-switch-command", issue),
                       (f"/api/client/instances/{a_reg['instance_id']}/force-switch", {"target": "ondemand"})):
        status, reply = b_caller.post(path, body)
        assert_error(status, reply, 404)
        assert not [c for c in theirs if c in str(reply)] and a_id not in str(reply) and a_agent not in str(reply)
    _unchanged_but_rate_limits(before)
    assert sorted(c.command_id for c in bootstrap.command_store().active_for_agent(a_agent, 50)) == queue


@pytest.mark.parametrize("closing", ["delete", "disable"])
def test_a_switch_racing_the_agents_delete_or_disabling_is_never_queued(tenant_with_agent, monkeypatch, closing):
    """The attack (a race the agent-delete and agent-disable fixes did not close): a force-switch reads the live,
    enabled agent; the client's delete (or disabling) of that agent runs in between and cancels the pending
    commands it sees (none yet); then the switch is written. BEFORE: the switch was queued (201) after all: pending on a
    disabled agent, it was delivered the moment the agent was enabled again, maybe days later (the stale switch the
    disabling is meant to cancel); on a deleted agent it was answered as queued. NOW: the command's own transaction
    requires the agent still enabled and not deleted: 404 for the deleted agent, 409 ``agent_disabled`` for the
    disabled one (what the same request gets a moment later), nothing queued, and the re-enabled (or revived, on
    another instance) agent is delivered nothing."""
    from tests.conftest import new_instance_id

    client_id, caller, agent_id, reg = tenant_with_agent
    real, closed = command_queue.open_client_switch, []

    def close_first(agent, **kwargs):
        if not closed:
            closed.append(caller.call("DELETE", f"/api/client/agents/{agent_id}") if closing == "delete"
                          else caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False}))
        return real(agent, **kwargs)

    monkeypatch.setattr(command_queue, "open_client_switch", close_first)
    status, reply = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    monkeypatch.setattr(command_queue, "open_client_switch", real)
    assert closed and closed[0][0] == 200, closed
    if closing == "delete":
        assert_error(status, reply, 404, field="agent_id")
        status, reply = caller.post("/api/agents/register", {**reg, "instance_id": new_instance_id()})
        assert status == 200 and reply["action"] == "revived" and reply["agent_id"] == agent_id, reply
    else:
        assert_error(status, reply, 409, code="agent_disabled")
        status, reply = caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": True})
        assert status == 200, reply
    assert bootstrap.command_store().active_for_agent(agent_id, 50) == []
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and reply["commands"] == [], reply


# --- pagination cursors ---------------------------------------------------------------------------------------


# the history-shaped cursor the active instances listing issued before the live index was ready (agents.live_token)
HONOURED = {("/api/client/{b}/instances?status=all", "/api/client/{b}/instances")}


def test_a_cursor_of_one_listing_is_400_on_every_other_listing_of_the_same_tenant(make_tenant):
    """The attack: a tenant takes a real-shaped ``next_token`` of one of its listings (its own partition, so the
    partition check passes) and replays it on each of its other paginated routes: the key of another table or index
    as an ``ExclusiveStartKey`` is a ValidationException in DynamoDB (a 500; moto does not check), or, were it
    accepted, a position the route never issued. Holds: 400 ``next_token`` wherever the key shape is not the route's
    own (the agents listing and its decisions view share one index and one shape: both accept it), and the offset
    cursor of the agents history takes no key at all. The one exception is a position the route did issue: the
    active instances listing read the history's index before the live index was ready, so a cursor of that shape
    (``status=all``'s) is read there as the same position of the caller's own live partition (200)."""
    from chalicelib.repositories.paging import encode_token
    from tests.api.test_security_walk_10 import _cursors

    me, caller = make_tenant()
    agent = caller.post("/api/agents/register", registration())[1]["agent_id"]
    cursors = _cursors(me, agent)
    shapes = {route: frozenset(key) for route, key in cursors.items()}
    for route, key in cursors.items():
        token = encode_token({name: {"S": value} for name, value in key.items()})
        for other in [*cursors, "/api/client/{b}/agents/history"]:
            path = other.format(b=me, b_agent=agent)
            glue = "&" if "?" in path else "?"
            status, reply = caller.get(f"{path}{glue}next_token={token}")
            if shapes.get(other) == shapes[route] or (route, other) in HONOURED:
                assert status == 200, (route, other, reply)
            else:
                assert_error(status, reply, 400, field="next_token")


# --- odd JSON on the switch routes ------------------------------------------------------------------------------

LOOKALIKE_POOLS = ["m5.large.eu-west-1\u0431", "m5.large.eu\u2010west-1b", "\uff4d5.large.eu-west-1b",
                   "m5.large.eu-west-1b\u0000", "M5.LARGE.EU-WEST-1B", "m5.large.eu-west-1b\u200b",
                   "m5.large." + "a" * 5000]


@pytest.mark.parametrize("route", ["force-switch", "issue-switch-command"])
def test_odd_json_on_the_switch_routes_is_400_and_queues_nothing(tenant_with_agent, route):
    """The attack: the two client routes that make the service switch capacity, with JSON a lenient stack reads
    differently from a strict one: a Cyrillic, fullwidth, hyphen-look-alike, zero-width, NUL-carrying, upper-case or
    5,000-character pool id (a pool that is not the agent's, or a key DynamoDB refuses), a number past what DynamoDB
    stores in ``urgent``, a NaN, a lone surrogate, and a target given twice (duplicate keys: the validator and the
    writer must read the same one). Holds: every odd pool id and number is a JSON 400 naming the field, nothing
    written; the duplicate key is read once, last one wins, and the command queued is exactly what the answer says."""
    _, caller, agent_id, reg = tenant_with_agent
    if route == "force-switch":
        path, field = f"/api/client/instances/{reg['instance_id']}/force-switch", "pool_id"
        bodies = [{"target": "pool", "pool_id": pool} for pool in LOOKALIKE_POOLS]
        raws = ['{"target": "pool", "pool_id": "m5.large.eu-west-1b", "pool_id": NaN}',
                '{"target": "pool", "pool_id": "m5.large.eu-west-1\\ud800"}']
        duplicate = '{"target": "ondemand", "target": "pool", "pool_id": "m5.large.eu-west-1b"}'
    else:
        path, field = f"/api/agents/{agent_id}/issue-switch-command", "target_pool_id"
        bodies = [{"target_mode": "spot", "target_pool_id": pool} for pool in LOOKALIKE_POOLS]
        raws = ['{"target_mode": "ondemand", "urgent": 1e400}', '{"target_mode": "ondemand", "urgent": NaN}',
                '{"target_mode": "spot", "target_pool_id": "m5.large.eu-west-1\\ud800"}']
        duplicate = '{"target_mode": "ondemand", "target_mode": "spot", "target_pool_id": "m5.large.eu-west-1b"}'
    before = snapshot_tables()
    for body in bodies:
        status, reply = caller.post(path, body)
        assert 400 <= status < 500 and status != 404, (body, status, reply)
        assert_error(status, reply, status)
        assert reply.get("field") in (field, None), reply
    for raw in raws:
        status, reply = caller.post(path, raw=raw)
        assert 400 <= status < 500, (raw, status, reply)
        assert_error(status, reply, status)
    _unchanged_but_rate_limits(before)
    assert bootstrap.command_store().active_for_agent(agent_id, 50) == []
    status, reply = caller.post(path, raw=duplicate)
    assert status == 201, reply
    [queued] = bootstrap.command_store().active_for_agent(agent_id, 50)
    assert (queued.command_id, queued.target_mode, queued.target_pool_id) == (
        reply["command"]["id"], "spot", "m5.large.eu-west-1b")


# --- credentials ------------------------------------------------------------------------------------------------


def test_a_deleted_clients_token_is_401_in_every_place_it_can_be_sent(make_tenant, admin, api):
    """The attack: the operator deletes a client; its token (leaked, or kept by an old agent) is sent again as a
    Bearer header, as ``X-Client-Token`` (the pre-v4 agent) and as the legacy body ``client_token``, on client, agent
    and registration routes — a container that remembers the token's client (``client_of``'s cache: a hash never
    changes owner) must still refuse it. Holds: 401 everywhere, nothing written, the client is not recreated."""
    from tests.conftest import Caller

    client_id, caller = make_tenant()
    agent_id = caller.post("/api/agents/register", registration())[1]["agent_id"]
    assert caller.get("/api/client/validate")[0] == 200  # this container now remembers the token's client
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200, reply
    before = snapshot_tables()
    calls = [("GET", "/api/client/validate", None), ("GET", f"/api/client/{client_id}", None),
             ("GET", "/api/notifications", None), ("POST", "/api/agents/register", registration()),
             ("POST", f"/api/agents/{agent_id}/heartbeat", {"status": "online"}),
             ("POST", f"/api/agents/{agent_id}/issue-switch-command", {"target_mode": "ondemand"}),
             ("GET", f"/api/agents/{agent_id}/pending-commands", None)]
    anonymous = Caller(api.http)
    for method, path, body in calls:
        for status, reply in (caller.call(method, path, body),
                              anonymous.call(method, path, body, headers={"X-Client-Token": caller.token}),
                              anonymous.call(method, path, {**(body or {}), "client_token": caller.token})):
            assert_error(status, reply, 401)
            assert client_id not in str(reply), reply
    _unchanged_but_rate_limits(before)
    status, reply = admin.get(f"/api/admin/clients/{client_id}")
    assert status == 404, reply


CLIENT_ROUTES_UNDER_AGENTS = [("POST", "issue-switch-command", {"target_mode": "ondemand"}), ("POST", "decide", {}),
                              ("GET", "switch-recommendation", None), ("POST", "manual-switch", {}),
                              ("POST", "manual-replica/enable", {}), ("POST", "manual-replica/disable", {}),
                              ("GET", "replicas", None), ("GET", "replica-config", None), ("GET", "sef-status", None),
                              ("GET", "interruptions", None)]


@pytest.mark.parametrize("method, suffix, body", CLIENT_ROUTES_UNDER_AGENTS,
                         ids=[f"{m} {s}" for m, s, _ in CLIENT_ROUTES_UNDER_AGENTS])
def test_an_agent_credential_cannot_use_the_client_routes_under_its_own_agent_path(
        verified, api, method, suffix, body):  # noqa: F811
    """The attack: these routes live under ``/api/agents/{agent_id}/`` but are the client's (they queue switches,
    promote standbys, switch modes): an attacker on the instance holds only the agent's credential and names its own
    agent, as the agent routes beside them accept. Holds: 403 ``agent_credential_refused`` in either header, nothing
    written."""
    from tests.conftest import Caller

    _, _, a, _ = verified
    path = f"/api/agents/{a['agent_id']}/{suffix}"
    before = snapshot_tables()
    for status, reply in (a["caller"].call(method, path, body),
                          Caller(api.http).call(method, path, body, headers={"X-Client-Token": a["credential"]})):
        assert_error(status, reply, 403, code="agent_credential_refused")
    _unchanged_but_rate_limits(before)


# --- CSV exports ----------------------------------------------------------------------------------------------

CLIENT_EXPORTS = ["agents", "agents/history", "instances", "switch-history", "savings"]


@pytest.mark.parametrize("export", CLIENT_EXPORTS)
def test_every_client_csv_export_is_a_private_attachment_and_format_is_read_once(make_tenant, api, export):
    """The attack: a tenant's CSV export (its fleet, instances, switches, savings) opened from a shared browser or
    through a caching proxy, or rendered inline where the page could sniff it into HTML; and ``format`` given twice
    (``xlsx`` then ``csv`` and the reverse) in case the check reads one value and the renderer another. Holds: every
    export is ``text/csv`` as an attachment with a plain file name, ``no-store``, ``nosniff``, not framable; a
    repeated ``format`` is read once, the last one wins for the check and the answer alike (``xlsx`` last: a JSON 400
    on ``format``, nothing rendered); another tenant's export path is 404 with no CSV."""
    client_id, caller = make_tenant()
    assert caller.post("/api/agents/register", registration(hostname="=HYPERLINK(\"http://x\")"))[0] == 200
    _, other = make_tenant()
    auth = {"Authorization": f"Bearer {caller.token}"}
    for query in ("format=csv", "format=xlsx&format=csv"):
        response = api.http.get(f"/api/client/{client_id}/{export}?{query}", headers=auth)
        assert response.status_code == 200, (query, response.body)
        headers = {k.lower(): v for k, v in response.headers.items()}
        assert headers["content-type"].startswith("text/csv"), headers
        assert headers["content-disposition"].startswith("attachment; filename=\""), headers
        assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff", headers
        assert headers["x-frame-options"] == "DENY", headers
        assert "\n=" not in response.body.decode() and ",=" not in response.body.decode()
    response = api.http.get(f"/api/client/{client_id}/{export}?format=csv&format=xlsx", headers=auth)
    assert response.status_code == 400 and response.headers["Content-Type"] == "application/json", response.body
    status, reply = other.get(f"/api/client/{client_id}/{export}?format=csv")
    assert_error(status, reply, 404)


# --- a shared resource two writers create at once -----------------------------------------------------------


def _report(caller, agent_id, reg, price):
    pool = f"{reg['instance_type']}.eu-west-1a"
    body = {"instance": {"instance_id": reg["instance_id"], "instance_type": reg["instance_type"],
                         "region": "eu-west-1", "az": "eu-west-1a", "mode": "spot"},
            "pricing": {"on_demand_price": 0.1, "spot_pools": [{"pool_id": pool, "price": price}]}}
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200 and reply["points_written"] >= 1, reply
    return pool


@pytest.mark.parametrize("rival", ["another tenant", "the spot-prices job"])
def test_a_new_pools_first_writers_never_erase_each_other(make_tenant, monkeypatch, rival):
    """The attack (a race on the shared pools table): tenant A's agent reports a pool nobody priced yet; between its
    read (no such pool) and its write, tenant B's agent reports the same pool (or the spot-prices job prices it).
    BEFORE: a new pool was written whole by a BatchWriteItem put, unconditionally: A's put replaced the row B (or the
    job) had just created, so B's own price entry vanished from B's view of the pool (a tenant could erase another's
    market data by reporting first), or AWS's price vanished from every tenant's view and decisions until the job's
    next run. NOW: a new pool is put only if it still does not exist; otherwise the writer sets only its own fields,
    as for a known pool: both entries (or A's entry and AWS's price) are kept."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from components.data_valve import PricePoint

    from chalicelib.repositories import pools
    from chalicelib.tables.pools import PoolTable
    from tests.api._support import random_instance_type

    itype = random_instance_type()
    a_id, a_caller = make_tenant()
    a_reg = registration(instance_type=itype)
    a_agent = a_caller.post("/api/agents/register", a_reg)[1]["agent_id"]
    b_id, b_caller = make_tenant()
    b_reg = registration(instance_type=itype)
    b_agent = b_caller.post("/api/agents/register", b_reg)[1]["agent_id"]
    pool_id = f"{itype}.eu-west-1a"
    real, rivals = pools._write_agent_prices, []

    def rival_first(*args, **kwargs):
        if not rivals:
            rivals.append(rival)
            if rival == "another tenant":
                _report(b_caller, b_agent, b_reg, 0.02)
            else:
                pools.store_server_prices([PricePoint(pool_id, datetime.now(timezone.utc), Decimal("0.025"),
                                                      source_agent_id=pools.SERVER_SOURCE)],
                                          datetime.now(timezone.utc))
        return real(*args, **kwargs)

    monkeypatch.setattr(pools, "_write_agent_prices", rival_first)
    assert _report(a_caller, a_agent, a_reg, 0.03) == pool_id and rivals == [rival]
    row = PoolTable.get(pool_id, consistent_read=True)
    entries = row.agent_prices.as_dict() if hasattr(row.agent_prices, "as_dict") else dict(row.agent_prices)
    if rival == "another tenant":
        assert set(entries) == {a_id, b_id}, entries
        assert Decimal(entries[b_id]["price"]) == Decimal("0.02"), entries
    else:
        assert set(entries) == {a_id}, entries
        assert row.price_source == pools.SERVER_SOURCE and row.latest_price == Decimal("0.025"), row.attribute_values
    assert Decimal(entries[a_id]["price"]) == Decimal("0.03"), entries


# --- what an answer echoes of the request -------------------------------------------------------------------


@pytest.mark.parametrize("given", ["a\r\nSet-Cookie: session=stolen", "trace\n{\"level\":\"ERROR\"}", "tr\u00e4ce",
                                   "\u202etrace", "trace id with spaces", "\"quoted\"", "x" * 129])
def test_a_correlation_id_that_could_split_a_header_or_forge_a_log_line_is_never_echoed(api, make_tenant, given):
    """The attack: ``X-Correlation-Id`` (echoed in every answer's headers, and stamped on every log line of the
    request) carrying CR/LF (a second header such as ``Set-Cookie`` where a server writes the value raw: the local
    mode's dev server does), a newline and JSON (a forged log line for whoever reads the logs raw), non-ASCII or a
    right-to-left override (a header value some gateways refuse: a 5xx for the caller), spaces, quotes, or 129
    characters. BEFORE: any value up to 128 characters was echoed and logged as given. NOW: only a plain token
    (letters, digits, ``. _ : / + = @ -``, up to 128) is taken; anything else gets a fresh id, and the request itself
    is answered as usual."""
    _, caller = make_tenant()
    response = api.http.get("/api/client/validate", headers={"Authorization": f"Bearer {caller.token}",
                                                             "X-Correlation-Id": given})
    assert response.status_code == 200, response.body
    echoed = response.headers["X-Correlation-Id"]
    assert echoed != given and echoed.isascii() and echoed.isprintable() and " " not in echoed, echoed
    plain = "trace-123:abc/def=@x"
    response = api.http.get("/health", headers={"X-Correlation-Id": plain})
    assert response.headers["X-Correlation-Id"] == plain


def test_a_standby_create_racing_the_agents_delete_launches_nothing(make_tenant, monkeypatch, api,
                                                                     fleet_jobs_see_this_test_only):
    """The attack (the same race on the standby slot): a manual-replica agent's client asks for a server-launched
    standby; the request has read the agent (manual mode on, slot empty) when the client's delete of the agent runs
    (it retires the standbys it sees: none yet). BEFORE: the create then claimed the deleted agent's slot and launched
    the standby (201): a running EC2 instance for a deleted agent that the replica coordinator and the cleanup job
    both keep (an open replica owns it), billed to the client for good. NOW: the slot's claim requires the agent not
    deleted: 409 ``agent_deleted``, no replica row, nothing launched."""
    from chalicelib.api import replicas as replicas_api
    from chalicelib.repositories import replicas as replica_repo
    from chalicelib.tables.agents import AgentTable
    from tests.api.test_replicas import manual_agent
    from tests.conftest import invoke_schedule
    from tests.e2e.failover_support import ec2

    client_id, caller, agent_id, _, _ = manual_agent(make_tenant)
    real, deleted = replicas_api._server_pool, []

    def delete_first(*args, **kwargs):
        if not deleted:
            deleted.append(caller.call("DELETE", f"/api/client/agents/{agent_id}"))
        return real(*args, **kwargs)

    monkeypatch.setattr(replicas_api, "_server_pool", delete_first)
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {})
    monkeypatch.setattr(replicas_api, "_server_pool", real)
    assert deleted and deleted[0][0] == 200 and deleted[0][1]["status"] == "deleted", deleted
    assert_error(status, reply, 409, code="agent_deleted")
    invoke_schedule(api, "replica-coordinator")
    assert AgentTable.get(client_id, agent_id, consistent_read=True).current_replica_id is None
    assert replica_repo.for_agent(agent_id) == []
    launched = ec2().describe_instances(Filters=[{"Name": "tag:AgentId", "Values": [agent_id]},
                                                 {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert [i["InstanceId"] for r in launched["Reservations"] for i in r["Instances"]] == []
