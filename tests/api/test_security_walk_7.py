"""Security walk 7: quotas under concurrent requests, what a tenant can pile up that no TTL removes (its agent's
command queue, the shared pools table), inputs that nest too deep to parse (pagination cursors, identity
documents), existence oracles on every route (another tenant's ids against made-up ones), request bodies with
fields the service sets itself, and secrets in logs. Each test is one attack; its docstring says what happened
before the fix (when it found something) and what holds now."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib import bootstrap
from chalicelib.repositories import agents as agent_repo
from tests.api import test_tenant_isolation as isolation
from tests.api._support import assert_error, diff_snapshots, now_utc, snapshot_tables
from tests.conftest import registration


def _first_calls_meet(monkeypatch, module, name: str, parties: int) -> None:
    """Make ``module.name``'s first call in each of ``parties`` threads wait for the others' first call to finish:
    every request has read (and checked) before any of them writes, the interleaving a burst of concurrent
    requests gets on as many Lambda containers."""
    real, barrier, seen = getattr(module, name), threading.Barrier(parties, timeout=20), threading.local()

    def meeting(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        finally:
            if not getattr(seen, "met", False):
                seen.met = True
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass

    monkeypatch.setattr(module, name, meeting)


def _together(calls) -> list:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


# --- quotas and growth ------------------------------------------------------------------------------------------


def _queue_bound() -> int:
    """``QUOTA_MAX_QUEUED_COMMANDS`` (10 when the setting is unknown: the code before the fix)."""
    from chalicelib.settings import get_settings

    return getattr(get_settings(), "quota_max_queued_commands", 10)


_SWITCH_TYPES = ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.large", "c5.xlarge", "r5.large"]


def _queue(caller, reg, agent_id, i):
    """One more client command: a force-switch first, then switches issued through the ML route, each to its own
    pool (the same switch sent again is the one queued, not a new command: ``test_switch_targets``); the agent
    declares the types these pools are of (``_roomy``)."""
    if i:
        pool = f"{_SWITCH_TYPES[(i - 1) // 3]}.eu-west-1{'abc'[(i - 1) % 3]}"
        return caller.post(f"/api/agents/{agent_id}/issue-switch-command",
                           {"target_mode": "spot", "target_pool_id": pool})
    return caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch", {"target": "ondemand"})


def _roomy(tenant_with_agent):
    """The tenant's agent declaring every type of ``_SWITCH_TYPES``: 18 pools a switch can name."""
    _, caller, agent_id, _ = tenant_with_agent
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"instance_types": _SWITCH_TYPES})
    assert status == 200, reply
    return tenant_with_agent


def test_a_client_cannot_grow_an_agents_command_queue_without_bound(tenant_with_agent):
    """ATTACK (state growth): a client force-switches (or issues a switch for) an agent that does not poll, again
    and again. BEFORE: each request queued one more pending command, and an active command has no TTL (the data
    cleaner removes finished ones only): 50 requests, 50 pending commands, a queue growing with every request the
    rate limit admits, for good. NOW: at most ``QUOTA_MAX_QUEUED_COMMANDS`` active commands when a client queues
    one; past that 409 ``command_queue_full`` and nothing written. The service's own commands (the failover's, the
    decision cycle's) are never refused."""
    from components.command_tracker import CommandPriority, CommandType, enqueue, new_command

    bound = _queue_bound()
    client_id, caller, agent_id, reg = _roomy(tenant_with_agent)
    statuses = [_queue(caller, reg, agent_id, i)[0] for i in range(bound)]
    assert statuses == [201] * bound
    store = bootstrap.command_store()
    before = snapshot_tables()
    for i in range(bound, bound + 6):
        status, reply = _queue(caller, reg, agent_id, i)
        assert_error(status, reply, 409, code="command_queue_full")
    status, reply = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert_error(status, reply, 409, code="command_queue_full")
    status, reply = _queue(caller, reg, agent_id, 0)  # the queued force-switch again: that command, nothing new
    assert status == 201 and reply["duplicate"] is True, reply
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert len(store.active_for_agent(agent_id, 100)) == bound
    own = new_command(command_id="cmd-walk7-prepare", client_id=client_id, agent_id=agent_id,
                      command_type=CommandType.PREPARE_SHUTDOWN, priority=CommandPriority.EMERGENCY, now=now_utc(),
                      instance_id=reg["instance_id"])
    enqueue(store, own)
    assert len(store.active_for_agent(agent_id, 100)) == bound + 1


@pytest.mark.usefixtures("atomic_moto_requests")
def test_concurrent_force_switches_never_pass_the_queue_bound(tenant_with_agent):
    """The same bound under a burst: the queue holds one place less than the bound and four requests come at once:
    one is queued, three answer 409 (the bound is the counter's condition in the command's own transaction)."""
    bound = _queue_bound()
    _, caller, agent_id, reg = _roomy(tenant_with_agent)
    assert [_queue(caller, reg, agent_id, i)[0] for i in range(bound - 1)] == [201] * (bound - 1)
    results = _together([lambda i=i: _queue(caller, reg, agent_id, i) for i in range(bound - 1, bound + 3)])
    assert sorted(status for status, _ in results) == [201, 409, 409, 409], results
    assert len(bootstrap.command_store().active_for_agent(agent_id, 100)) == bound


def test_a_client_cannot_add_made_up_pools_to_the_shared_market_data(tenant_with_agent):
    """ATTACK (shared state growth): a client declares 19 made-up (well-formed) instance types as its agent's
    interchangeable ones, and the agent reports prices for their pools in three zones. BEFORE: 57 new rows in the
    pools table, which every tenant shares, has no TTL, and which the risk scorer, the pricing aggregator and the
    data cleaner scan whole on every run: repeated with new names, any tenant grew it without bound and slowed the
    jobs for everyone. NOW: a report creates pools only of a type the catalogue lists (or the spot-prices job already
    priced); the others are dropped and named in ``warnings``."""
    import uuid

    from chalicelib.tables.pools import PoolTable

    _, caller, agent_id, reg = tenant_with_agent
    made_up = [f"zz{uuid.uuid4().hex[:6]}.large" for _ in range(19)]
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"instance_types": made_up})[0] == 200
    pools = [f"{t}.eu-west-1{z}" for t in made_up for z in "abc"]
    body = {"instance": {"instance_id": reg["instance_id"], "instance_type": "m5.large", "region": "eu-west-1",
                         "az": "eu-west-1a", "mode": "spot"},
            "pricing": {"on_demand_price": 0.1, "spot_pools": [{"pool_id": p, "price": 0.03} for p in pools]}}
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200 and reply["pools"] == 0, reply
    assert len(reply["warnings"]) == len(pools), reply
    assert [p for p in pools if PoolTable.count(p)] == []


# --- answers a client can turn into a 500 ---------------------------------------------------------------------


def _nested_token(depth: int = 5000) -> str:
    import base64

    return base64.urlsafe_b64encode(b"[" * depth).decode().rstrip("=")


CLIENT_LISTS = ["/api/notifications", "/api/client/{c}/agents", "/api/client/{c}/agents/decisions",
                "/api/client/{c}/instances", "/api/client/interruptions", "/api/agents/{a}/interruptions",
                "/api/client/agents/{a}/decisions", "/api/client/{c}/switch-history", "/api/client/{c}/replicas"]
ADMIN_LISTS = ["/api/admin/clients", "/api/admin/activity", "/api/admin/agents", "/api/admin/instances"]


@pytest.mark.parametrize("path", CLIENT_LISTS + ADMIN_LISTS)
def test_a_deeply_nested_next_token_is_400_not_500(tenant_with_agent, admin, path):
    """ATTACK (5xx): ``next_token`` = base64 of 5,000 ``[`` (7 KB of query string) on any paginated route. BEFORE:
    ``json.loads`` of the decoded token raised RecursionError, which the token check did not expect: 500 on every
    client and admin listing. NOW: 400 ``next_token is not valid`` (a token we issue is one flat object)."""
    client_id, caller, agent_id, _ = tenant_with_agent
    who = admin if path in ADMIN_LISTS else caller
    status, reply = who.get(f"{path.format(c=client_id, a=agent_id)}?next_token={_nested_token()}")
    assert_error(status, reply, 400, field="next_token")


def test_a_deeply_nested_identity_document_is_400_not_500(make_tenant):
    """ATTACK (5xx): a registration whose ``identity_document`` is 3,000 ``[`` (within its 4,096 characters; the
    body itself is flat, so the body's depth check does not see it). BEFORE: parsing the document raised
    RecursionError before its signature was checked: 500 to any client token holder. NOW: 400 on
    ``identity_document``, nothing written."""
    _, caller = make_tenant(legacy=False)
    before = snapshot_tables()
    status, reply = caller.post("/api/agents/register",
                                registration(identity_document="[" * 3000, identity_signature="AAAA"))
    assert_error(status, reply, 400, field="identity_document")
    assert diff_snapshots(before, snapshot_tables()) == {}


# --- attacks that held (kept as regression tests) ---------------------------------------------------------------

tenant_a = isolation.tenant_a  # A with an agent, instances, a command, a notification and a standby


def _shaped_like(ids: dict) -> dict:
    """Made-up ids of the same shapes as A's (prefix kept, hex digits redrawn): ids nobody holds."""
    import random
    import re

    def fake(value: str) -> str:
        prefix, tail = re.match(r"^([a-z]+-)?(.*)$", value).groups()
        return (prefix or "") + "".join(random.choice("0123456789abcdef") if c in "0123456789abcdef" else c
                                        for c in tail)
    keep = ("version", "account_id", "name")
    out = {k: v if k in keep or not isinstance(v, str) else fake(v) for k, v in ids.items()}
    out["logical_agent_id"] = "web-" + fake("00000000")
    return out


def _neutral(reply, ids: dict) -> str:
    """An answer with the ids it names replaced by their role, and times removed: what tells two answers apart."""
    import re

    text = str(reply)
    for key, value in ids.items():
        if isinstance(value, str) and len(value) > 3:
            text = text.replace(value, f"<{key}>")
    return re.sub(r"\d{4}-\d\d-\d\dT[0-9:.]+Z?", "<t>", text)


def test_no_route_tells_another_tenants_ids_from_made_up_ones(tenant_a, make_tenant, chalice_app):
    """ATTACK (existence oracle): B calls every client and agent route with A's ids (agent, instance, command,
    notification, replica, client), then with made-up ids of the same shapes. A different status, error code,
    message or field would tell B which ids exist. Held: the two answers are the same (admin routes: 401 either
    way; registration's 409 for a claimed instance id is by design, docs/ARCHITECTURE.md "Auth and tenancy")."""
    ids, _ = tenant_a
    _, b = make_tenant()
    made_up = _shaped_like(ids)
    differ = []
    for method, path, (real_path, body), (other_path, other_body) in paired_calls(chalice_app, ids, made_up):
        real = b.call(method, real_path, body)
        other = b.call(method, other_path, other_body)
        if (real[0], _neutral(real[1], ids)) != (other[0], _neutral(other[1], made_up)):
            differ.append((method, path, real, other))
    assert differ == []


def paired_calls(chalice_app, ids: dict, made_up: dict):
    """Every client and agent route (not admin, public, registration or the agent delete), as (method, path, (A's
    path, body), (the made-up ids' path, body)): the same call with another tenant's ids and with made-up ones."""
    for path, method in sorted(isolation.app_routes(chalice_app)):
        route = isolation.ROUTES[(path, method)]
        if route.admin or route.public or path == "/api/agents/register" \
                or (method, path) == ("DELETE", "/api/client/agents/{agent_id}"):
            continue
        body = route.body(ids) if route.body else None
        try:
            other_body = route.body(made_up) if route.body else None
        except Exception:  # noqa: BLE001 - a body builder that reads A's rows: the same body then
            other_body = body
        yield method, path, (isolation.fill(path, ids), body), (isolation.fill(path, made_up), other_body)


def test_no_log_line_or_audit_event_carries_a_secret(make_tenant, admin, admin_key, api, capsys, aws_signs_locally):
    """Tokens, agent credentials and the admin key (right and wrong ones, in every place a request may carry them):
    none appears in the powertools log lines of those requests, nor in the audit log the admin reads."""
    from tests.api.test_agent_identity import verified_registration
    from tests.conftest import Caller

    client_id, caller = make_tenant()
    secrets = [caller.token, admin_key]
    agent_id = caller.post("/api/agents/register", registration())[1]["agent_id"]
    caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online", "client_token": caller.token})
    Caller(api.http).post(f"/api/agents/{agent_id}/heartbeat", {"status": "online", "client_token": caller.token})
    Caller(api.http).post(f"/api/agents/{agent_id}/heartbeat", {"status": 7, "client_token": caller.token + "x"})
    secrets.append(admin.post(f"/api/admin/clients/{client_id}/regenerate-token", {})[1]["client_token"])
    _, verified = make_tenant(legacy=False)
    reply = verified.post("/api/agents/register", verified_registration())[1]
    credential = reply["agent_credential"]
    secrets += [verified.token, credential]
    as_agent = Caller(api.http, token=credential)
    as_agent.post(f"/api/agents/{reply['agent_id']}/heartbeat", {"status": "online"})
    Caller(api.http, token=credential[:-4] + "abcd").post(f"/api/agents/{reply['agent_id']}/heartbeat", {})
    as_agent.get("/api/client/validate")
    as_agent.get("/api/admin/clients")
    Caller(api.http, admin=admin_key + "x").get("/api/admin/clients")
    Caller(api.http, admin=credential).get("/api/admin/clients")
    audit = admin.get("/api/admin/activity?limit=200")[1]
    captured = capsys.readouterr()
    text = captured.out + captured.err + str(audit)
    for secret in secrets:
        assert secret[-24:] not in text


MASS_ASSIGNED = {"client_id": "cl-someone-else", "status": "online", "account_id": "999999999999",
                 "credential_hash": "0" * 64, "config_version": 99, "active_commands": -5, "client_suspended": False,
                 "proven_account_id": "999999999999", "deleted_at": "2020-01-01T00:00:00Z", "liveness": "live",
                 "registered_at": "2000-01-01T00:00:00Z", "role": "standby", "is_active": False,
                 "expires_at": 1, "priority": 100, "created_by": "system", "max_attempts": 99, "attempts": 7,
                 "current_replica_id": "rep-x", "instance_count": 9, "retired_credential_hash": "1" * 64}


def test_fields_the_service_sets_are_never_taken_from_a_body(make_tenant):
    """ATTACK (mass assignment): every field the service itself sets on the agent, instance and command rows (the
    owner, ids, credential hashes, counters, TTLs, versions, roles) sent in the registration, config, heartbeat
    and force-switch bodies. Held: every one is ignored (the request is answered as without them)."""
    from chalicelib.tables.agents import AgentTable
    from chalicelib.tables.commands import CommandTable
    from chalicelib.tables.instances import InstanceTable

    client_id, caller = make_tenant()
    reg = {**MASS_ASSIGNED, **registration()}
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200 and reply["client_id"] == client_id, reply
    agent_id = reply["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config", {**MASS_ASSIGNED, "min_savings_percent": 5})[0] == 200
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", {**MASS_ASSIGNED, "status": "online"})[0] == 200
    status, reply = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                {**MASS_ASSIGNED, "target": "ondemand"})
    assert status == 201, reply
    agent = AgentTable.get(client_id, agent_id).attribute_values
    assert (agent["client_id"], agent["config_version"], agent.get("active_commands"), agent.get("account_id"),
            agent.get("credential_hash"), agent.get("deleted_at"), agent.get("current_replica_id"),
            agent.get("instance_count")) == (client_id, 2, 1, None, None, None, None, 1), agent
    instance = InstanceTable.get(reg["instance_id"]).attribute_values
    assert (instance["client_id"], instance["role"], instance["is_active"], instance.get("proven_account_id")) \
        == (client_id, "primary", True, None), instance
    command = CommandTable.get(agent_id, reply["command"]["id"]).attribute_values
    assert (command["client_id"], command["priority"], command["created_by"], command["max_attempts"],
            command["attempts"], command.get("expires_at")) == (client_id, 75, "client", 3, 0, None), command


@pytest.mark.usefixtures("atomic_moto_requests")
def test_two_tenants_registering_one_instance_at_once_leave_one_owner(make_tenant, monkeypatch):
    """RACE: tenants A and B register the same (new) instance id at the same moment, both past every read check
    before either writes. Held: one 200, one 409 ``instance_conflict``; the instance row is the winner's and the
    loser has no agent (the instance row's condition is in the registration's own transaction)."""
    from chalicelib import quotas

    (a_id, a), (b_id, b) = make_tenant(), make_tenant()
    _first_calls_meet(monkeypatch, quotas, "check_agents", 2)
    instance_id = registration()["instance_id"]
    results = _together([lambda c=c: c.post("/api/agents/register", registration(instance_id=instance_id))
                         for c in (a, b)])
    assert sorted(status for status, _ in results) == [200, 409], results
    loser = a_id if results[0][0] == 409 else b_id
    assert_error(*[r for r in results if r[0] == 409][0], 409, code="instance_conflict")
    assert agent_repo.instance_row(instance_id).client_id == ({a_id, b_id} - {loser}).pop()
    assert agent_repo.all_for_client(loser) == []
