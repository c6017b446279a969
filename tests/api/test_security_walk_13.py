"""Security walk 13: what landed with the account lifecycle and the retry work — ExternalId rotation, the forced
unbinding, the registration's retry digest and account-move checks, the agent quota's admission versioning, the
force-switch race guard, a disabled agent's commands, the standby create's request digest — attacked as a
malicious tenant or agent. Each test is one attack; its docstring says what it tries and what holds (and, when it
found something, what happened before the fix)."""

from __future__ import annotations

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import clients as client_repo
from chalicelib.tables.agents import AgentTable
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.api.test_agent_identity import verified  # noqa: F401,F811 - a fixture
from tests.api.test_ownership import assume_role_tenancy  # noqa: F401 - a fixture
from tests.conftest import registration


def _bound(admin, client_id: str, account: str = "123456789012") -> str:
    """Bind ``account`` to the client (as its single account); returns it."""
    status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts",
                               {"account_id": account, "role_arn": f"arn:aws:iam::{account}:role/SpotOptimizer-dev"})
    assert status == 201, reply
    return account


def _unchanged_but_rate_limits(before) -> None:
    changed = diff_snapshots(before, snapshot_tables())
    assert set(changed) <= {t for t in changed if t.endswith("-rate-limits")}, changed


# --- the ExternalId rotation routes are the operator's -----------------------------------------------------------


EXTERNAL_ID_ROUTES = (("POST", "/external-id/rotate"), ("POST", "/external-id/confirm"),
                      ("DELETE", "/external-id/pending"))


@pytest.mark.parametrize("method, suffix", EXTERNAL_ID_ROUTES)
def test_a_client_cannot_rotate_confirm_or_cancel_its_own_external_id(make_tenant, admin, method, suffix):
    """The attack: a client (its own token, or its token with a made-up admin key) starts, confirms or cancels an
    ExternalId rotation of its own account: the ExternalId is the operator's defence against a confused deputy and a
    client choosing when it changes could keep an id it leaked. 401 with any non-admin credential, nothing written."""
    client_id, caller = make_tenant()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/external-id/rotate")  # one pending, to cancel
    assert status == 201, reply
    pending = reply["pending_external_id"]
    path = f"/api/admin/clients/{client_id}{suffix}"
    before = snapshot_tables()
    for headers in ({}, {"X-Admin-Key": "not-the-key"}, {"X-Admin-Key": caller.token}):
        status, reply = caller.call(method, path, headers=headers)
        assert status == 401, (headers, status, reply)
    _unchanged_but_rate_limits(before)
    client = client_repo.require(client_id)
    assert client.pending_external_id == pending and client.external_id != pending


def test_a_pending_external_id_is_shown_to_its_own_client_only(make_tenant, admin):
    """The attack: tenant B reads the accounts view hoping to see tenant A's pending ExternalId (with it, B could
    assume A's role from B's own stack once A trusts it). B sees its own client only, and no pending id."""
    a_id, a_caller = make_tenant()
    _, b_caller = make_tenant()
    status, reply = admin.post(f"/api/admin/clients/{a_id}/external-id/rotate")
    assert status == 201 and reply["pending_external_id"], reply
    pending = reply["pending_external_id"]

    status, mine = a_caller.get("/api/client/accounts")
    assert status == 200 and mine["pending_external_id"] == pending, mine
    status, theirs = b_caller.get("/api/client/accounts")
    assert status == 200 and theirs["client_id"] != a_id and theirs["pending_external_id"] is None, theirs
    assert pending not in str(theirs)
    for path in (f"/api/client/accounts?client_id={a_id}", f"/api/admin/clients/{a_id}"):
        status, reply = b_caller.get(path)
        assert pending not in str(reply), (path, status)


# --- the forced unbinding's odd inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("force", ["maybe", "ｔｒｕｅ", "true ", "x" * 5000, "tru%C3%A9"])
def test_an_odd_force_on_an_unbinding_is_400_and_unbinds_nothing(make_tenant, admin, force):
    """The attack: ``?force=`` values a lenient parser might read as true (or crash on): fullwidth letters, a
    trailing space, 5000 characters, an accented letter. 400 on ``force``, the binding stays."""
    client_id, _ = make_tenant()
    account = _bound(admin, client_id)
    before = snapshot_tables()
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}?force={force}")
    assert_error(status, reply, 400, field="force")
    _unchanged_but_rate_limits(before)


@pytest.mark.parametrize("account", ["١٢٣٤٥٦٧٨٩٠١٢", "１２３４５６７８９０１２", "12345678901%0A", "12345678901２"])
def test_an_account_id_of_non_ascii_digits_is_400_on_bind_and_unbind(make_tenant, admin, account):
    """The attack: an account id of Arabic-Indic or fullwidth digits (or a trailing newline): ``\\d`` and ``$`` of a
    Unicode regex accept them. Not an AWS account id: 400 on ``account_id`` before any AWS call or write (the event
    bus's permission is neither opened nor closed for it)."""
    client_id, _ = make_tenant()
    before = snapshot_tables()
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}")
    assert_error(status, reply, 400, field="account_id")
    raw = account.replace("%0A", "\n")
    status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts",
                               {"account_id": raw, "role_arn": f"arn:aws:iam::{raw}:role/SpotOptimizer-dev"})
    assert_error(status, reply, 400)
    _unchanged_but_rate_limits(before)
    # API Gateway decodes a path parameter (the local test client does not): the route's own check must refuse it
    from chalicelib.aws import accounts

    assert not accounts.ACCOUNT_ID.match(raw)
    assert not accounts.ROLE_ARN.match(f"arn:aws:iam::{raw}:role/SpotOptimizer-dev")


def test_a_client_cannot_unbind_an_account_nor_force_it(make_tenant, admin):
    """The attack: a client unbinds its account itself with ``?force=true`` (turning its agents' modes off is the
    operator's call, and the unbinding closes the bus). 401, the binding stays."""
    client_id, caller = make_tenant()
    account = _bound(admin, client_id)
    before = snapshot_tables()
    status, reply = caller.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}?force=true")
    assert status == 401, reply
    _unchanged_but_rate_limits(before)


# --- the registration's retry digest and the agent quota --------------------------------------------------------


def test_a_registration_replayed_by_another_tenant_answers_nothing_of_the_first(make_tenant):
    """The attack: tenant B sends tenant A's registration byte for byte (same instance, logical id and body: the
    retry digest of A's row is of this request). B's registration is scoped to B: the instance is A's (409
    ``instance_conflict``), never A's agent id, config or action, and nothing of B's is written."""
    a_id, a_caller = make_tenant()
    _, b_caller = make_tenant()
    body = registration()
    status, first = a_caller.post("/api/agents/register", body)
    assert status == 200 and first["action"] == "created", first
    before = snapshot_tables()
    status, reply = b_caller.post("/api/agents/register", body)
    assert status == 409, reply
    assert first["agent_id"] not in str(reply) and a_id not in str(reply)
    _unchanged_but_rate_limits(before)
    # A's own retry still answers as its first did (the digest is A's request, in A's partition)
    status, again = a_caller.post("/api/agents/register", body)
    assert status == 200 and again["agent_id"] == first["agent_id"] and again["action"] == "created", again


def test_replaying_a_deleted_agents_registration_counts_toward_the_quota_again(make_tenant, admin):
    """The attack: max_agents 1. Agent a registers; it is deleted; agent b registers (the client's one agent). The
    client then replays a's first registration byte for byte, hoping its stored digest ("created", before any write
    since) answers the first instead of counting a revival. 409 quota, nothing written: the digest only ever names
    the action of a registration the quota already admitted."""
    client_id, caller = make_tenant()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 1})
    assert status == 200, reply
    first = registration()
    status, a = caller.post("/api/agents/register", first)
    assert status == 200, a
    status, reply = caller.call("DELETE", f"/api/client/agents/{a['agent_id']}")
    assert status == 200, reply
    status, b = caller.post("/api/agents/register", registration())
    assert status == 200, b
    before = snapshot_tables()
    status, reply = caller.post("/api/agents/register", first)
    assert_error(status, reply, 409)
    assert "quota" in (reply.get("code") or "") or "max_agents" in reply["message"] or "agents" in reply["message"]
    _unchanged_but_rate_limits(before)
    assert agent_repo.get(client_id, a["agent_id"]).deleted


def test_a_legacy_replay_of_a_registration_never_hands_out_an_agent_credential(tenant_with_agent):
    """The attack: the agent's registration replayed without an identity document (the legacy protocol) to get a
    fresh agent credential, or to keep the old one working while answering as the first. A legacy registration
    answers no credential and leaves the agent's credential hash as it was."""
    client_id, caller, agent_id, body = tenant_with_agent
    hashed = AgentTable.get(client_id, agent_id, consistent_read=True).credential_hash
    for _ in range(2):
        status, reply = caller.post("/api/agents/register", body)
        assert status == 200 and "agent_credential" not in reply and reply["verified"] is False, reply
    assert AgentTable.get(client_id, agent_id, consistent_read=True).credential_hash == hashed


def test_a_registration_with_a_forged_digest_field_is_refused_or_ignored(tenant_with_agent):
    """The attack: the body names the stored retry fields (``registration_digest``, ``registration_action``,
    ``agent_admissions``) hoping a mass assignment makes the next registration answer ``created`` or resets the
    quota guard. 400 (unknown fields) or ignored; the rows keep what the server wrote."""
    client_id, caller, agent_id, body = tenant_with_agent
    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    forged = {**body, "registration_digest": "0" * 64, "registration_action": "created", "agent_admissions": 0,
              "last_force_switch_id": "cmd-x", "request_digest": "x"}
    status, reply = caller.post("/api/agents/register", forged)
    assert status in (200, 400), reply
    after = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert after.registration_digest != "0" * 64 and after.last_force_switch_id == row.last_force_switch_id
    if status == 200:
        assert reply["action"] != "created"


# --- the force-switch race guard, a disabled agent -----------------------------------------------------------------


def test_a_tenant_cannot_touch_another_tenants_force_switch_guard(tenant_with_agent, make_tenant):
    """The attack: tenant B force-switches tenant A's instance (hoping to set A's ``last_force_switch_id`` so A's own
    force-switch loses its race forever) and disables A's agent. 404 each, A's agent row unchanged; A's
    force-switch then queues."""
    a_id, a_caller, agent_id, body = tenant_with_agent
    _, b_caller = make_tenant()
    row = AgentTable.get(a_id, agent_id, consistent_read=True)
    before = snapshot_tables()
    status, reply = b_caller.post(f"/api/client/instances/{body['instance_id']}/force-switch",
                                  {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 404, reply
    status, reply = b_caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})
    assert status == 404, reply
    status, reply = b_caller.post(f"/api/client/agents/{agent_id}/config", {"enabled": False})
    assert status == 404, reply
    _unchanged_but_rate_limits(before)
    after = AgentTable.get(a_id, agent_id, consistent_read=True)
    assert (after.last_force_switch_id, after.config_version) == (row.last_force_switch_id, row.config_version)
    status, reply = a_caller.post(f"/api/client/instances/{body['instance_id']}/force-switch",
                                  {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201 and reply["duplicate"] is False, reply


def test_a_disabled_agent_polls_nothing_and_a_repeat_of_the_disabling_writes_nothing(tenant_with_agent):
    """The attack: a client queues a force-switch, disables the agent, and the agent polls anyway (to run a switch
    its operator stopped). The pending command was cancelled; the poll gets nothing; disabling again changes
    nothing (no config_version bump)."""
    client_id, caller, agent_id, body = tenant_with_agent
    status, reply = caller.post(f"/api/client/instances/{body['instance_id']}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, reply
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"enabled": False})
    assert status == 200, reply
    version = AgentTable.get(client_id, agent_id, consistent_read=True).config_version
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and reply["commands"] == [], reply
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"enabled": False})
    assert status == 200, reply
    assert AgentTable.get(client_id, agent_id, consistent_read=True).config_version == version
    status, reply = caller.post(f"/api/client/instances/{body['instance_id']}/force-switch",
                                {"target": "ondemand"})
    assert_error(status, reply, 409, code="agent_disabled")


# --- the standby create's request digest ----------------------------------------------------------------------------


def _manual_agent(make_tenant):
    from tests.api.test_ownership import manual
    from tests.e2e.failover_support import register_agent

    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    manual(caller, agent_id)
    return client_id, caller, agent_id, itype


def test_a_standby_create_repeated_by_another_tenant_or_for_another_agent_never_answers_the_first(make_tenant):
    """The attack: tenant A created a standby (its row keeps the request's digest: the same body again answers 201
    with that standby, a retry). Tenant B sends the same body for A's agent (404, nothing written), and A sends it
    for its other agent: that agent gets its own standby (another replica, launched for it), never A's first one.
    A different body for A's first agent is a second standby: 409 ``replica_exists``."""
    from chalicelib.repositories import replicas as replica_repo

    a_id, a_caller, agent_id, itype = _manual_agent(make_tenant)
    body = {"tags": {"team": "web"}}
    status, first = a_caller.post(f"/api/agents/{agent_id}/replicas", body)
    assert status == 201 and first["instance_id"], first
    held = replica_repo.get(agent_id, first["replica_id"])
    assert held.request_digest

    _, b_caller = make_tenant()
    before = snapshot_tables()
    status, reply = b_caller.post(f"/api/agents/{agent_id}/replicas", body)
    assert status == 404 and first["replica_id"] not in str(reply), reply
    _unchanged_but_rate_limits(before)

    status, again = a_caller.post(f"/api/agents/{agent_id}/replicas", body)  # A's own retry: the same standby
    assert status == 201 and again["replica_id"] == first["replica_id"], again
    status, other = a_caller.post(f"/api/agents/{agent_id}/replicas", {"tags": {"team": "db"}})
    assert_error(status, other, 409, code="replica_exists")

    # B's own agent, same body: B's own standby (its digest is its own slot's, nothing of A's)
    b_tenant = make_tenant
    b_id, b_caller2, b_agent, _ = _manual_agent(b_tenant)
    status, theirs = b_caller2.post(f"/api/agents/{b_agent}/replicas", body)
    assert status == 201 and theirs["replica_id"] != first["replica_id"], theirs
    assert theirs["instance_id"] != first["instance_id"]
    assert replica_repo.get(b_agent, first["replica_id"]) is None


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/agents/{agent_id}/replicas", {}),
    ("POST", "/api/agents/{agent_id}/replicas", {"tags": {"team": "web"}}),
    ("GET", "/api/client/accounts", None),
    ("POST", "/api/client/agents/{agent_id}/config", {"enabled": False}),
    ("POST", "/api/admin/clients/{client_id}/external-id/rotate", None),
    ("DELETE", "/api/admin/clients/{client_id}/accounts/123456789012?force=true", None),
])
def test_an_agent_credential_cannot_reach_the_client_and_operator_routes_of_this_walk(verified, method, path,  # noqa: F811
                                                                                    body):
    """The attack: a verified agent's credential (all an attacker on the instance holds) calls the standby create
    (to reach its request-digest repeat), the client's accounts view (the pending ExternalId), its own config (to
    disable itself and cancel its client's switches) and the operator's ExternalId and unbind routes. Refused
    (403 ``agent_credential_refused`` on client routes, 401 on admin ones), nothing written."""
    client_id, _, a, _ = verified
    path = path.format(agent_id=a["agent_id"], client_id=client_id)
    before = snapshot_tables()
    status, reply = a["caller"].call(method, path, body)
    if "/api/admin/" in path:
        assert status == 401, reply
    else:
        assert_error(status, reply, 403, code="agent_credential_refused")
    _unchanged_but_rate_limits(before)


# --- a deleted verified agent's revival ----------------------------------------------------------------------------


@pytest.mark.usefixtures("aws_signs_locally", "assume_role_tenancy")
def test_a_legacy_revival_of_a_deleted_verified_agent_on_another_instance_does_not_keep_its_account(admin,
                                                                                                   make_tenant):
    """The attack: the check that a legacy registration (no identity document) on an instance not the agent's does
    not keep the account the agent was verified in (409 ``identity_document_required``) skipped a deleted agent.
    So: delete the verified agent, register its logical id again without a document on any instance id: before the
    fix the revived agent kept the proven account (200, ``account_id`` still the old one), and the product would
    launch, hand over and retire in that account for an instance of unknown account. Now 409, nothing written (a
    verified revival proves its account, and moves it as a live agent's does)."""
    from tests.api.test_security_walk_12 import _standby_in_second_account
    from tests.e2e.failover_support import REGION, ZONES

    client_id, caller, agent_id, _ = _standby_in_second_account(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")
    assert status == 200, reply
    status, reply = admin.post(f"/api/admin/clients/{client_id}/legacy-agents", {"enabled": True})
    assert status == 200, reply
    before = snapshot_tables()

    status, reply = caller.post("/api/agents/register", registration(
        instance_type=agent.instance_type, region=REGION, az=ZONES[0], logical_agent_id=agent.logical_agent_id))

    assert_error(status, reply, 409, code="identity_document_required", field="identity_document")
    _unchanged_but_rate_limits(before)
    assert agent_repo.get(client_id, agent_id).deleted


# --- odd bodies and parameters on the operator's new routes -------------------------------------------------------


@pytest.mark.parametrize("raw", ["not json", "[]", '{"pending_external_id": "mine", "external_id": "mine"}',
                                 '{"x": "' + "é" * 200_000 + '"}', "\udcff".encode("utf-8", "surrogatepass").decode(
                                     "latin-1")])
@pytest.mark.parametrize("method, suffix", EXTERNAL_ID_ROUTES)
def test_odd_bodies_on_the_external_id_routes_never_set_the_id_nor_500(make_tenant, admin, method, suffix, raw):
    """The attack (with the operator's key, as a compromised console would send): a body naming the ids to set, not
    JSON, a JSON array, a huge unicode body, invalid UTF-8. The routes take no body: never a 500, the pending id is
    always the server's own (24 random bytes), never the body's."""
    client_id, _ = make_tenant()
    status, reply = admin.call(method, f"/api/admin/clients/{client_id}{suffix}", raw=raw)
    assert status < 500, reply
    client = client_repo.require(client_id)
    assert "mine" not in (client.pending_external_id or "", client.external_id or "")
    if status < 400:
        assert isinstance(reply, dict) and reply.get("client_id") == client_id


@pytest.mark.parametrize("query", ["force=true&force=maybe", "force=maybe&force=true", "force", "force=%00",
                                   "force=true%00"])
def test_a_repeated_or_broken_force_parameter_is_never_a_silent_force(make_tenant, admin, query):
    """The attack: ``force`` given twice (one parser takes the first, another the last), empty, or with a NUL. Never
    a 500; whatever is answered, an account with live agents is not unbound unless the parameter was plainly true."""
    from tests.api.test_security_walk_12 import SECOND  # noqa: F401 - the account name space

    client_id, caller = make_tenant()
    account = _bound(admin, client_id)
    status, reply = caller.post("/api/agents/register", registration())  # a live agent, in the single binding
    assert status == 200, reply
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}?{query}")
    assert status < 500, reply
    bound = [b["account_id"] for b in client_repo.require(client_id).aws_accounts]
    if status == 200:
        assert query.endswith("force=true") or query.startswith("force=true&"), (query, reply)
    else:
        assert bound == [account], (query, status, reply)


# --- what a forced unbinding leaves queued -----------------------------------------------------------------------


@pytest.mark.usefixtures("aws_signs_locally", "assume_role_tenancy")
def test_a_forced_unbinding_cancels_the_agents_pending_switches(admin, make_tenant):
    """The attack: the client queues a force-switch of its agent in an account, the operator force-unbinds that
    account (the agent's modes off, ``enabled`` false: it is delivered nothing). Before the fix the switch stayed
    pending, counted against the agent's queue for ever, and was delivered — a switch queued for an account the
    product no longer works in — as soon as the client enabled the agent again. Now it is cancelled with the
    reason, as disabling the agent does, and the re-enabled agent polls nothing."""
    from chalicelib import bootstrap
    from components.command_tracker import CommandStatus
    from tests.api.test_security_walk_12 import SECOND, _standby_in_second_account

    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    status, reply = caller.post(f"/api/client/instances/{agent.instance_id}/force-switch", {"target": "ondemand"})
    assert status == 201, reply
    command_id = reply["command"]["id"]

    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")
    assert status == 200, reply

    command = bootstrap.command_store().get(agent_id, command_id)
    assert command.status is CommandStatus.CANCELLED and "unbound" in (command.message or ""), command
    assert int(AgentTable.get(client_id, agent_id, consistent_read=True).active_commands or 0) == 0
    status, reply = caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": True})
    assert status == 200, reply
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status in (200, 403), reply  # the client token may be refused on agent routes (no legacy mode)
    if status == 200:
        assert reply["commands"] == [], reply


def test_a_registration_replayed_after_legacy_mode_went_off_needs_the_identity_document(tenant_with_agent, admin):
    """The attack: a registration made while the client ran in legacy agent mode, replayed byte for byte after the
    operator turned legacy mode off, hoping its stored digest answers it as the first (a retry) before the
    identity check. The identity check runs first on every registration: refused, nothing written."""
    client_id, caller, agent_id, body = tenant_with_agent
    status, reply = admin.post(f"/api/admin/clients/{client_id}/legacy-agents", {"enabled": False})
    assert status == 200, reply
    before = snapshot_tables()
    status, reply = caller.post("/api/agents/register", body)
    assert_error(status, reply, 400, code="identity_document_required", field="identity_document")
    _unchanged_but_rate_limits(before)


@pytest.mark.parametrize("client_id", ["x" * 3000, "%F0%9F%98%80", "cl-" + "é" * 900, "%00"])
@pytest.mark.parametrize("method, suffix", [*EXTERNAL_ID_ROUTES, ("DELETE", "/accounts/123456789012?force=true")])
def test_odd_client_ids_on_the_new_operator_routes_are_400(admin, client_id, method, suffix):
    """The attack: a 3000-character, emoji, accented or NUL client id on the ExternalId and forced-unbind routes (a
    DynamoDB key over its size limit would be a ValidationException: 500). 400 on ``client_id``, nothing read."""
    status, reply = admin.call(method, f"/api/admin/clients/{client_id}{suffix}")
    assert_error(status, reply, 400, field="client_id")


@pytest.mark.usefixtures("aws_signs_locally", "assume_role_tenancy", "failover_machine")
def test_an_agent_cut_off_by_a_forced_unbinding_cannot_start_a_failover_there(admin, make_tenant):
    """The attack: the operator force-unbinds the account an agent runs in (its modes off, its account pinned: "no
    longer managed"); the agent (or whoever holds its credential) then reports a termination notice for its
    instance. The sentinel dropped such a signal when EventBridge brought it, but not from the agent's own route:
    before the fix a failover workflow started (an interruption row, a Step Functions execution) to act in an
    account the product no longer has a role for. Now it is ignored as the EventBridge event is, nothing
    recorded as an interruption."""
    from chalicelib.sentinel import UNBOUND_ACCOUNT
    from chalicelib.tables import InterruptionTable
    from tests.api.test_security_walk_12 import SECOND, _standby_in_second_account

    client_id, caller, agent_id, _ = _standby_in_second_account(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")
    assert status == 200, reply

    status, reply = caller.post(f"/api/agents/{agent_id}/termination-imminent", {"instance_id": agent.instance_id})

    assert status < 300 and reply["success"] is False and reply["action"] == "ignored", reply
    assert reply.get("reason") == UNBOUND_ACCOUNT or UNBOUND_ACCOUNT in reply.get("message", ""), reply
    assert list(InterruptionTable.query(client_id)) == []
