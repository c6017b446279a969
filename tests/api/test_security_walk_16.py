"""Security walk 16: what the service does over time with what a tenant controls — the scheduled jobs that walk
every tenant's rows in turn (one tenant's rows, or its own AWS account refusing the product's role, must never
hold a job's walk or end its run for everyone after it: the data cleaner, the cleanup job, the replica
coordinator), a client token regenerated while a request made with the old one is between its lookup and its
admission, an agent credential after its agent was deleted and registered again under the same logical id, one
tenant's requests spread over its credentials and id spellings against its rate limit, numbers at the edges of
what JSON and DynamoDB take (``-0.0``, subnormals, ``1e-130``, ``1e125``) in a tenant's thresholds and prices, the
once-keys of the audit log that two tenants' events share a partition under, and what a tenant could point the
service at (webhooks, URLs). Each test is one attack; its docstring says what it tries and what holds (and, when it
found something, what happened before the fix)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import rate_limit
from chalicelib.jobs import data_cleaner
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories import clients as client_repo
from chalicelib.settings import get_settings
from chalicelib.tables.commands import CommandTable
from chalicelib.tables.notifications import NotificationTable
from chalicelib.tables.system_events import SystemEventTable
from tests.api._support import assert_error, diff_snapshots, snapshot_tables, switch_body
from components.data_valve import ValveConfig
from tests.api.test_agent_identity import verified_registration
from tests.api.test_security_walk_4 import AGENT_ROUTES
from tests.api.test_security_walk_4 import verified_agent as _verified_agent
from tests.api.test_security_walk_15 import _unchanged_but_rate_limits
from tests.conftest import Caller, new_instance_id, registration
from tests.integration.test_data_cleaner import _command, _notification, _walk_from


verified_agent = _verified_agent  # a fixture: a client without legacy mode and one verified agent


# --- the data cleaner's walk: one tenant's rows must not hold it for every client after it ----------------------


def test_one_tenants_read_notifications_never_hold_the_cleaners_walk_for_the_clients_after_it(make_tenant,
                                                                                          monkeypatch):
    """The attack: a tenant makes more read notifications a day than the daily data cleaner's whole delete budget
    (``CLEANER_MAX_DELETES``, 5,000): each termination report of an online agent notifies (a heartbeat brings it
    back online), 1,200 requests a minute, and mark-all-read reads 500 a call; its notifications live 30 days
    (TTL) and the cleaner deletes the read ones past 7. The cleaner walks the clients in creation order. BEFORE:
    a client's read notifications took the run's whole budget, and a run that ran out of budget in a client
    restarted that client next run: the flooding tenant's notifications were all the cleaner ever deleted, and no
    client after it was cleaned again (their finished commands, ended instance rows and gone agents stayed for
    good). NOW: a client's read notifications take at most a share of a run's budget
    (``data_cleaner.NOTIFICATION_SHARE``); the rest wait for the walk's next round (or their TTL), and the run goes
    on to the client's agents and the clients after it."""
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    flooder_id, _ = make_tenant()
    victim_id, victim = make_tenant()  # created after: the walk reaches it after the flooder
    status, reply = victim.post("/api/agents/register", registration())
    assert status == 200, reply
    victim_agent = reply["agent_id"]
    tight = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_agents=100_000,
                                cleaner_max_deletes=20)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: tight)
    stale = _command(victim_agent, victim_id, "completed", old, old, "victims")
    _walk_from(flooder_id, now)

    for day in range(3):  # the flood goes on: more read notifications past 7 days than a run may delete, each day
        for i in range(tight.cleaner_max_deletes + 5):
            _notification(flooder_id, old - timedelta(days=day, seconds=i), True, f"flood{day}-{i}")
        data_cleaner.run(now)

    assert stale not in {r.command_id for r in CommandTable.query(victim_agent, consistent_read=True)}
    assert any(r.is_read for r in NotificationTable.query(flooder_id))  # the flood itself waits for a later round


# --- a client token regenerated while a request made with the old one is in flight --------------------------------


def _mid_flight_routes(agent_id: str, instance_id: str) -> list[tuple[str, str, dict | None]]:
    return [("POST", f"/api/agents/{agent_id}/heartbeat", {"status": "online"}),  # the gate alone (fast path)
            ("GET", f"/api/agents/{agent_id}/pending-commands", None),  # gate + agent row in one transaction
            ("POST", f"/api/agents/{agent_id}/switch-report",  # a critical report (the window's reserve)
             switch_body(instance_id, new_instance_id())),
            ("POST", f"/api/agents/{agent_id}/termination", {"reason": "mid-flight"}),
            ("POST", "/api/agents/register", registration()),
            ("POST", f"/api/client/instances/{instance_id}/force-switch", {"target": "ondemand"}),
            ("POST", "/api/notifications/mark-all-read", {})]


@pytest.mark.parametrize("index", range(7))
def test_a_token_regenerated_between_a_requests_lookup_and_its_admission_changes_nothing(tenant_with_agent,
                                                                                        monkeypatch, index):
    """The attack (a token the operator is revoking because it leaked): requests made with the old token while the
    operator regenerates it. A container remembers which client a token's hash names (``auth._token_clients``, no
    expiry: the answer never changes for a hash), so the request that looked its token up just before the
    regeneration reaches the client's gate after it, on every kind of route: the gate alone, the gate in one
    transaction with the agent row, a critical report admitted from the window's reserve, a registration, a
    client route that queues a command, one that writes many rows. What holds: the gate's own condition checks the
    token's hash against the client's current one in the write that admits the request, so each is 401 and
    nothing is written (the rate-limit window neither). The remembered pair itself is harmless: a hash names the
    same client for good, and only the gate says whether the token is still that client's."""
    from chalicelib import auth

    client_id, caller, agent_id, body = tenant_with_agent
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})[0] == 200  # the pair is cached
    method, path, request = _mid_flight_routes(agent_id, body["instance_id"])[index]
    client = client_repo.require(client_id)
    looked_up, before = [], {}
    real = auth.client_of

    def lookup_then_regenerate(token):
        answer = real(token)
        if not looked_up:
            looked_up.append(answer)
            client_repo.replace_token(client, new_hash=auth.hash_secret(auth.new_token()), expires_at=None,
                                      now=datetime.now(UTC))
            before.update(snapshot_tables())
        return answer

    monkeypatch.setattr(auth, "client_of", lookup_then_regenerate)
    status, reply = caller.call(method, path, request)

    assert looked_up and looked_up[0][0] == client_id
    assert_error(status, reply, 401)
    assert diff_snapshots(before, snapshot_tables()) == {}


# --- once-keys: the audit log is one partition a day for every tenant ----------------------------------------------


def _colliding_decision_commands(client_a: str, client_b: str, cycle: int) -> tuple[str, str, str, str]:
    """Logical ids of an agent of each client whose decision-cycle command ids (``cmd-dc-<agent>-<cycle>``) share the
    first 32 bits of their SHA-256: (agent a, command a, agent b, command b). A birthday search, ~2 x 2^17 hashes:
    what an attacker grinding its own logical ids against a victim's one command id does with 2^32."""
    from components.agent_identity import agent_id_for

    def prefix(command_id: str) -> str:
        return hashlib.sha256(command_id.encode()).hexdigest()[:8]

    seen: dict[str, tuple[str, str]] = {}
    for i in range(1 << 17):
        agent = agent_id_for(client_a, f"web-{i}")
        command = f"cmd-dc-{agent}-{cycle}"
        seen[prefix(command)] = (agent, command)
    for i in range(1 << 20):
        agent = agent_id_for(client_b, f"api-{i}")
        command = f"cmd-dc-{agent}-{cycle}"
        if prefix(command) in seen:
            return (*seen[prefix(command)], agent, command)
    raise AssertionError("no collision found")


def test_another_tenants_decision_event_at_the_same_cycle_is_never_taken_for_mine(make_tenant):
    """The attack: the audit log is one partition a day for every tenant, and an event written ``once`` is keyed by
    its time and a hash of its once-key; a key already there means "written before", and the write is skipped. The
    decision cycle records every agent's decision event at the cycle's scheduled time, once-keyed by the command it
    queued (``cmd-dc-<agent>-<cycle>``). BEFORE: the key kept 8 hex digits (32 bits) of the hash, so two agents'
    command ids of one cycle that shared them made one event: the second tenant's decision event was silently
    never written (by chance one cycle in ~100 with 10,000 switches queued, or on purpose: a tenant grinding its own
    logical ids, 2^32 hashes, against a victim's command id). NOW: 16 hex digits (64 bits): both are written, and a
    repeat of either still writes nothing."""
    from chalicelib.repositories import activity

    client_a, _ = make_tenant()
    client_b, _ = make_tenant()
    scheduled = datetime.now(UTC).replace(microsecond=0)
    cycle = int(scheduled.timestamp()) // 300
    agent_a, command_a, agent_b, command_b = _colliding_decision_commands(client_a, client_b, cycle)

    assert activity.record_event("decision", "switch to a cheaper pool", scheduled, client_id=client_a,
                                 agent_id=agent_a, metadata={"command_id": command_a}, once=command_a)
    assert activity.record_event("decision", "switch to a cheaper pool", scheduled, client_id=client_b,
                                 agent_id=agent_b, metadata={"command_id": command_b}, once=command_b)
    assert not activity.record_event("decision", "switch to a cheaper pool", scheduled, client_id=client_b,
                                     agent_id=agent_b, metadata={"command_id": command_b}, once=command_b)

    day = SystemEventTable.query(scheduled.strftime("%Y-%m-%d"), SystemEventTable.event_key.startswith(
        scheduled.strftime("%Y%m%dT%H%M%S%fZ")), filter_condition=SystemEventTable.event_type == "decision")
    assert {(e.client_id, e.agent_id) for e in day} >= {(client_a, agent_a), (client_b, agent_b)}


# --- an agent credential after its agent was deleted and registered again under the same logical id ---------------


@pytest.mark.parametrize(("method", "route", "body"), AGENT_ROUTES)
def test_a_credential_from_before_the_agents_deletion_does_nothing_once_it_registered_again(
        one_rate_window, verified_agent, api, method, route, body):
    """The attack: the credential an agent held before its client deleted it (a decommissioned host, a copy left
    in an image), used after the same logical id registered again — the agent id is derived from it, so the
    revived agent is the same row — from a new instance with its own signed document. What holds: the
    registration replaced the row's credential (the old one is kept only as the retired credential of its old
    instance, good for that instance's termination report after a switch, on the switch-report route alone):
    on every other agent route the old credential is 401, the window is not charged (the fast path's count is
    refunded) and nothing is written."""
    client_id, caller, agent_id, old_credential = verified_agent
    logical = agent_repo.get(client_id, agent_id).logical_agent_id
    status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")
    assert status == 200, reply
    status, reply = caller.post("/api/agents/register", verified_registration(logical_agent_id=logical))
    assert status == 200 and reply["agent_id"] == agent_id and reply["agent_credential"] != old_credential, reply
    before, snap = rate_limit.requests_in_window(client_id), snapshot_tables()

    status, reply = Caller(api.http, token=old_credential).call(method, f"/api/agents/{agent_id}/{route}", body)

    assert_error(status, reply, 401)
    assert rate_limit.requests_in_window(client_id) == before
    assert diff_snapshots(snap, snapshot_tables()) == {}


# --- one tenant's requests under several credentials and id spellings share one window ---------------------------


def test_alternating_credentials_and_id_spellings_never_buy_a_tenant_more_requests(one_rate_window, verified_agent,
                                                                                   api):
    """The attack: a tenant near its rate limit spreads its requests over every credential it holds (its agent's
    credential in ``Authorization`` or ``X-Client-Token``, its client token on the client routes) and spells its
    ids otherwise (the agent id in capitals, with a trailing space or dot, the credential's client id in capitals),
    hoping one of them counts against another window or none. What holds: every admitted request counts once
    against the client's one window, whichever credential or header carried it; a spelling that names no row is
    refused (401/404) and charges nobody, neither the tenant nor a client the spelling might name."""
    client_id, caller, agent_id, credential = verified_agent
    agent = Caller(api.http, token=credential)
    by_header = Caller(api.http)
    start = rate_limit.requests_in_window(client_id)
    admitted = [agent.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})[0],
                by_header.call("POST", f"/api/agents/{agent_id}/heartbeat", {"status": "online"},
                               headers={"X-Client-Token": credential})[0],
                agent.get(f"/api/agents/{agent_id}/pending-commands")[0],
                caller.get("/api/client/validate")[0],
                caller.get(f"/api/client/{client_id}/agents")[0]]
    assert admitted == [200] * 5
    assert rate_limit.requests_in_window(client_id) == start + 5

    prefix, secret = credential.rsplit(".", 1)
    upper_client = prefix.replace(client_id, client_id.upper()) + "." + secret
    for token, path in [(credential, f"/api/agents/{agent_id.upper()}/heartbeat"),
                        (credential, f"/api/agents/{agent_id}./heartbeat"),
                        (credential, f"/api/agents/{agent_id}%20/heartbeat"),
                        (upper_client, f"/api/agents/{agent_id}/heartbeat")]:
        status, reply = Caller(api.http, token=token).post(path, {"status": "online"})
        assert status in (400, 401, 404), (path, status, reply)
    assert rate_limit.requests_in_window(client_id) == start + 5
    assert rate_limit.requests_in_window(client_id.upper()) == 0


# --- numbers at the edges of JSON and DynamoDB in a tenant's thresholds and prices ---------------------------------


EDGE_NUMBERS = ["-0.0", "0", "1e-130", "-1e-130", "4.9e-324", "2.2250738585072014e-308", "1e125", "1e308",
                "0.30000000000000004"]


@pytest.mark.parametrize("field", ["min_savings_percent", "risk_threshold", "min_pool_duration_hours",
                                   "terminate_wait_minutes"])
def test_edge_numbers_in_an_agents_thresholds_are_a_clear_400_or_stored_and_every_view_still_answers(
        tenant_with_agent, field):
    """The attack: the agent's thresholds (``POST /api/client/agents/{id}/config``) as ``-0.0``, a subnormal, the
    smallest and largest magnitudes DynamoDB stores, one past them, and a float whose shortest repr has 17
    digits, then every view and decision that reads them. What holds: a number DynamoDB cannot store or the field's
    range refuses is a 400 naming the field, nothing written; one it takes is stored, and the agent's config, the
    client's agent list, its overview, a decision and the recommendation still answer (never a 500; a 409 where no
    price is known yet)."""
    client_id, caller, agent_id, _ = tenant_with_agent
    for raw in EDGE_NUMBERS:
        before = snapshot_tables()
        status, reply = caller.call("POST", f"/api/client/agents/{agent_id}/config", raw='{"%s": %s}' % (field, raw))
        assert status in (200, 400), (raw, status, reply)
        if status == 400:
            assert reply.get("field") == field, (raw, reply)
            _unchanged_but_rate_limits(before)
        for path in (f"/api/agents/{agent_id}/config", f"/api/client/{client_id}/agents", f"/api/client/{client_id}",
                     f"/api/agents/{agent_id}/switch-recommendation", f"/api/agents/{agent_id}/replica-config"):
            assert caller.get(path)[0] < 500, (raw, path)
        assert caller.post(f"/api/agents/{agent_id}/decide", {})[0] < 500, raw


def test_edge_numbers_as_an_agents_prices_are_refused_or_dropped_and_every_view_still_answers(tenant_with_agent):
    """The attack: a pricing report whose on-demand, current and pool prices are each edge number above, then the
    instance's pricing, options, the savings and the pools. What holds: no price outside the data valve's plausible
    range is stored (the report is refused, or the price dropped and named in ``warnings``), and every view
    answers (never a 500)."""
    client_id, caller, agent_id, body = tenant_with_agent
    instance_id = body["instance_id"]
    for raw in EDGE_NUMBERS:
        report = ('{"instance": {"instance_id": "%s", "instance_type": "m5.large", "region": "eu-west-1", '
                  '"az": "eu-west-1a", "mode": "spot"}, "pricing": {"on_demand_price": %s, "current_spot_price": %s, '
                  '"spot_pools": [{"instance_type": "m5.large", "az": "eu-west-1b", "price": %s}]}}'
                  % (instance_id, raw, raw, raw))
        status, reply = caller.call("POST", f"/api/agents/{agent_id}/pricing-report", raw=report)
        assert status in (200, 400), (raw, status, reply)
        for path in (f"/api/client/instances/{instance_id}/pricing",
                     f"/api/client/instances/{instance_id}/available-options",
                     f"/api/client/{client_id}/savings", "/api/client/pools?instance_type=m5.large&region=eu-west-1"):
            assert caller.get(path)[0] < 500, (raw, path)
    valve = ValveConfig()
    seen = [p.seen_by(client_id).price for p in pool_repo.pools_of_type("eu-west-1", "m5.large")]
    assert all(price is None or valve.spot_min <= price <= valve.spot_max for price in seen), seen


# --- the cleanup job: one tenant's standby must not stop it for everyone ------------------------------------------


def test_a_standby_the_product_cannot_terminate_never_stops_the_cleanup_for_every_other_tenant(
        admin, make_tenant, api, monkeypatch, aws_signs_locally):
    """The attack: a tenant in assume-role tenancy whose agent has a pre-warmed standby in its own account (a
    rebalance recommendation makes one; it expires when no termination follows) removes the product's role from
    that account, or its right to terminate: from the standby's expiry on, the cleanup job (every 10 minutes)
    cannot terminate it. BEFORE: the job expired the pre-warmed standbys first, and the EC2 error of that one
    standby ended the whole run: every later step, for every tenant, never ran again (no stuck interruption
    abandoned, no orphan terminated in any account, each a bill running on). NOW: a standby that cannot be expired
    is logged and left for the next run (it stays active, its instance with it); the run goes on to the sweeps and
    every account's orphans."""

    from chalicelib.tables.replicas import ReplicaTable
    from tests.api.test_security_walk_12 import SECOND, _standby_in_second_account
    from tests.conftest import invoke_schedule
    from tests.integration.test_cleanup import GONE, launch, orphan_tags, past_grace, register_agent, state_of

    _, _, attacker_agent, standby = _standby_in_second_account(admin, make_tenant)
    now = datetime.now(UTC)
    ReplicaTable(attacker_agent, standby["replica_id"]).update(  # pre-warmed: it expires
        actions=[ReplicaTable.expires_at.set(now - timedelta(minutes=1))])
    register_agent(make_tenant)  # another tenant, in the home account (the cleanup scans the regions of agents)
    orphan = launch(orphan_tags())  # left behind in the home account: the cleanup's to terminate
    _remove_the_role_in(SECOND, monkeypatch)

    outcome = invoke_schedule(api, "cleanup", now=past_grace(now))

    assert orphan in outcome["terminated"] and state_of(orphan) in GONE
    assert standby["replica_id"] not in outcome["expired"]
    assert replica_repo.get(attacker_agent, standby["replica_id"]).active  # retried by the next run


def _remove_the_role_in(account_id: str, monkeypatch) -> None:
    """The tenant removed the product's role from ``account_id``: every AssumeRole there is refused."""
    from botocore.exceptions import ClientError

    from chalicelib.aws import accounts

    real = accounts.role_client

    def role_removed(service, region, account):
        if account.account_id == account_id:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized to perform "
                                         "sts:AssumeRole"}}, "AssumeRole")
        return real(service, region, account)

    monkeypatch.setattr(accounts, "role_client", role_removed)


# --- the replica coordinator: one tenant's account must not stop it for every agent after it ----------------------


def test_an_account_the_product_can_no_longer_act_in_never_stops_the_coordinator_for_the_agents_after_it(
        admin, make_tenant, monkeypatch, aws_signs_locally):
    """The attack: a tenant in assume-role tenancy whose manual-replica agent has a standby in its own account
    removes the product's role from that account (or its right to describe instances there). The replica
    coordinator runs every minute over every agent that wants or holds a standby, and reads EC2's view of each
    agent's standbys first. BEFORE: that read's EC2 error left the agent's reconcile and ended the whole run (only
    an account no longer *bound* was caught): every agent after the tenant's in the walk got no standby, had no
    lost standby replaced, no standby marked ready and no return to spot, every minute, for as long as the tenant
    kept it so. NOW: an agent whose reconcile fails is logged and counted (``failed``) and the run goes on to the
    next agent."""

    from chalicelib.jobs import replica_coordinator
    from chalicelib.repositories import agents as agents_repo
    from tests.api.test_security_walk_12 import SECOND, _standby_in_second_account
    from tests.integration.test_replica_coordinator import manual_agent, the_standby

    attacker_client, _, attacker_agent, _ = _standby_in_second_account(admin, make_tenant)
    victim_client, victim_agent, _, _ = manual_agent(make_tenant)
    assert replica_repo.for_agent(victim_agent, include_final=False) == []
    walk = [agents_repo.require(attacker_client, attacker_agent), agents_repo.require(victim_client, victim_agent)]
    monkeypatch.setattr(agents_repo, "agents_with_standbys", lambda: iter(walk))  # the tenant's agent comes first
    _remove_the_role_in(SECOND, monkeypatch)

    result = replica_coordinator.run(datetime.now(UTC))

    assert result["agents"] == 2 and result["failed"] == 1
    assert the_standby(victim_client, victim_agent).instance_id


# --- notifications and webhooks: what a tenant could point the service at -----------------------------------------


def test_no_request_names_a_place_the_service_would_connect_to(chalice_app):
    """The attack (server-side request forgery): a notification target, webhook or callback URL pointed at the
    instance metadata service (169.254.169.254), localhost or another tenant's endpoint. What holds: no request
    body of any route has a field that is a URL, host, endpoint, webhook or callback (a client's notifications are
    rows it reads from the API), and the service's code opens no connection of its own (no HTTP client, no
    socket): every outbound call is an AWS API call through boto3, to a resource ownership-checked first (an
    EIP, a target group: tests/api/test_ownership.py). A field or a client added later fails this test."""
    import pathlib
    import re

    from chalicelib import openapi

    document = openapi.document(chalice_app)
    requests = {op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
                .get("$ref", "").rsplit("/", 1)[-1] for ops in document["paths"].values() for op in ops.values()}
    named: list[tuple[str, str]] = []

    def fields(node, schema):
        if isinstance(node, dict):
            named.extend((schema, name) for name in (node.get("properties") or {}))
            for value in node.values():
                fields(value, schema)
        elif isinstance(node, list):
            for value in node:
                fields(value, schema)

    for name in requests - {""}:
        fields(document["components"]["schemas"][name], name)
    assert len(requests) > 20 and named
    assert not [f for f in named if re.search(r"(^|_)(urls?|uri|endpoint|webhook|callback|hook|host)(_|$)", f[1], re.I)]
    code = "\n".join(p.read_text() for p in pathlib.Path("chalicelib").rglob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+(urllib|requests|httpx|aiohttp|http\.client|socket|urllib3)\b", code,
                         re.M)
