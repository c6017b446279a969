"""Verified agents (issue #12): registration with IMDS's signed identity document, per-agent credentials
bound to their agent, and legacy agent mode per client.

The server trusts local mode's test certificate as AWS's here (``aws_signs_locally``); documents are
signed by localmode.identity_signer as FakeImds signs them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.auth import hash_secret
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import clients as client_repo
from localmode.identity_signer import identity_document, sign, signed_identity
from tests.api._support import (
    assert_error,
    diff_snapshots,
    live_instance,
    pricing_body,
    snapshot_tables,
    switch_body,
)
from tests.conftest import Caller, new_instance_id, registration


def verified_registration(**overrides) -> dict:
    """A register body with a signed identity document that matches it."""
    body = registration(**overrides)
    document, signature = signed_identity(instance_id=body["instance_id"], instance_type=body["instance_type"],
                                          az=body["az"], region=body["region"])
    return {**body, "identity_document": document, "identity_signature": signature}


@pytest.fixture
def verified(make_tenant, api, aws_signs_locally):
    """A client without legacy mode and two verified sibling agents: (client_id, caller, a, b), where a and
    b are dicts of agent_id, credential, caller (holding the credential) and register body."""
    client_id, caller = make_tenant(legacy=False)
    agents = []
    for _ in range(2):
        body = verified_registration()
        status, reply = caller.post("/api/agents/register", body)
        assert status == 200, reply
        agents.append({"agent_id": reply["agent_id"], "credential": reply["agent_credential"], "body": body,
                       "reply": reply, "caller": Caller(api.http, token=reply["agent_credential"])})
    return client_id, caller, agents[0], agents[1]


def test_a_verified_registration_returns_a_credential_stored_only_as_its_hash(verified):
    client_id, _, a, _ = verified
    reply = a["reply"]
    assert reply["verified"] is True and reply["account_id"] == "123456789012"
    assert a["credential"].startswith(f"soa_{client_id}.{a['agent_id']}.")
    row = agent_repo.get(client_id, a["agent_id"])
    assert row.account_id == "123456789012" and row.credential_hash == hash_secret(a["credential"])
    assert a["credential"] not in str(agent_repo.get(client_id, a["agent_id"]).__dict__)


def test_the_agent_credential_serves_its_own_agent_routes(verified):
    _, _, a, _ = verified
    status, body = a["caller"].post(f"/api/agents/{a['agent_id']}/heartbeat", {"status": "online"})
    assert status == 200, body
    status, body = a["caller"].get(f"/api/agents/{a['agent_id']}/pending-commands")
    assert status == 200 and body == {"commands": []}
    status, body = a["caller"].get(f"/api/agents/{a['agent_id']}/config")
    assert status == 200, body


def test_re_registration_rotates_the_credential(verified):
    client_id, caller, a, _ = verified
    body = {**a["body"]}
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200 and reply["agent_credential"] != a["credential"]
    status, err = a["caller"].post(f"/api/agents/{a['agent_id']}/heartbeat", {"status": "online"})
    assert_error(status, err, 401)
    fresh = Caller(a["caller"].http, token=reply["agent_credential"])
    assert fresh.post(f"/api/agents/{a['agent_id']}/heartbeat", {"status": "online"})[0] == 200


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/api/client/validate", None),
    ("GET", "/api/client/agents/{agent_id}/decisions", None),
    ("GET", "/api/client/pools", None),
    ("POST", "/api/client/instances/{instance_id}/force-switch", {"target": "ondemand"}),
    ("GET", "/api/client/instances/{instance_id}/price-history", None),
    ("GET", "/api/client/pricing-history", None),
    ("GET", "/api/agents/{agent_id}/replicas", None),
    ("POST", "/api/agents/{agent_id}/manual-switch", {}),
    ("POST", "/api/agents/register", "reregister"),
    ("GET", "/api/client/{client_id}/agents", None),
    ("DELETE", "/api/client/agents/{agent_id}", None),
    ("POST", "/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False}),
])
def test_an_agent_credential_cannot_call_client_routes(verified, method, path, body):
    """GIVEN an agent credential WHEN it calls a client route (its own agent's included) THEN 403
    agent_credential_refused and nothing is written."""
    client_id, _, a, _ = verified
    path = path.format(agent_id=a["agent_id"], instance_id=a["body"]["instance_id"], client_id=client_id)
    if body == "reregister":
        body = verified_registration(instance_id=a["body"]["instance_id"])
    before = snapshot_tables()
    status, reply = a["caller"].call(method, path, body)
    assert_error(status, reply, 403, code="agent_credential_refused")
    assert diff_snapshots(before, snapshot_tables()) == {}


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/admin/clients"), ("GET", "/api/admin/activity"),
                                              ("POST", "/api/admin/clients/create")])
def test_an_agent_credential_cannot_call_admin_routes(verified, method, path):
    _, _, a, _ = verified
    status, reply = a["caller"].call(method, path, {"name": f"x-{uuid.uuid4().hex[:6]}"} if method == "POST" else None)
    assert_error(status, reply, 401)


def _sibling_calls(b, command_id):
    bid, inst = b["agent_id"], b["body"]["instance_id"]
    return [
        ("POST", f"/api/agents/{bid}/heartbeat", {"status": "offline"}),
        ("GET", f"/api/agents/{bid}/pending-commands", None),
        ("GET", f"/api/agents/{bid}/config", None),
        ("POST", f"/api/agents/{bid}/commands/{command_id}/executed", {"success": True, "message": "x"}),
        ("POST", f"/api/agents/{bid}/commands/{command_id}/extend", {}),
        ("POST", f"/api/agents/{bid}/mark-command-executed", {"command_id": command_id, "success": False}),
        ("POST", f"/api/agents/{bid}/switch-report", switch_body(inst, new_instance_id())),
        ("POST", f"/api/agents/{bid}/termination", {"instance_id": inst, "reason": "spot"}),
        ("POST", f"/api/agents/{bid}/pricing-report", pricing_body(inst, "m5.large", {"eu-west-1a": 0.03})),
        ("POST", f"/api/agents/{bid}/cleanup-report", {}),
        ("POST", f"/api/agents/{bid}/termination-imminent", {"instance_id": inst}),
        ("POST", f"/api/agents/{bid}/rebalance-recommendation", {"instance_id": inst}),
        ("POST", f"/api/agents/{bid}/create-emergency-replica", {"signal_type": "termination-notice",
                                                                  "instance_id": inst}),
        ("POST", "/api/agents/ag-000000000000000000000000/heartbeat", {"status": "online"}),
    ]


def test_an_agent_cannot_act_for_its_sibling(verified):
    """GIVEN agents A and B of one client and a command queued for B WHEN A's credential calls any of
    B's agent routes THEN 404 agent_id (as for another tenant's agent) and nothing is written."""
    _, caller, a, b = verified
    status, reply = caller.post(f"/api/client/instances/{b['body']['instance_id']}/force-switch",
                                {"target": "ondemand"})
    assert status == 201, reply
    command_id = reply["command"]["command_id"]
    for method, path, body in _sibling_calls(b, command_id):
        before = snapshot_tables()
        status, reply = a["caller"].call(method, path, body)
        assert_error(status, reply, 404, field="agent_id")
        assert diff_snapshots(before, snapshot_tables()) == {}, path


def test_without_legacy_mode_registration_needs_the_signed_document(make_tenant, aws_signs_locally):
    client_id, caller = make_tenant(legacy=False)
    body = registration()
    before = snapshot_tables()
    status, reply = caller.post("/api/agents/register", body)
    assert_error(status, reply, 400, code="identity_document_required", field="identity_document")
    only_half = {**verified_registration(), "identity_signature": None}
    assert_error(*caller.post("/api/agents/register", only_half), 400, field="identity_signature")
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_without_legacy_mode_the_client_token_is_refused_on_agent_routes(verified):
    _, caller, a, _ = verified
    status, reply = caller.post(f"/api/agents/{a['agent_id']}/heartbeat", {"status": "online"})
    assert_error(status, reply, 403, code="agent_credential_required")
    status, reply = caller.post(f"/api/agents/{a['agent_id']}/heartbeat",
                                {"status": "online", "client_token": caller.token}, headers={"Authorization": ""})
    assert status == 403


@pytest.mark.parametrize(("case", "change", "status", "code", "field"), [
    ("claims another instance", {"instance_id": "i-0fff1234567890abc"}, 403, "identity_mismatch", "instance_id"),
    ("claims another type", {"instance_type": "c5.large"}, 403, "identity_mismatch", "instance_type"),
    ("claims another zone", {"az": "eu-west-1b"}, 403, "identity_mismatch", "az"),
    ("tampered document", "tamper", 403, "identity_not_verified", "identity_signature"),
    ("garbage base64", {"identity_signature": "%%%not-base64%%%"}, 400, "validation_error", "identity_signature"),
    ("not a document", {"identity_document": "{\"a\": 1}"}, 400, "validation_error", "identity_document"),
    ("oversized document", {"identity_document": "x" * 5000}, 400, "validation_error", "identity_document"),
])
def test_a_bad_identity_is_refused_and_nothing_written(make_tenant, aws_signs_locally, case, change, status,
                                                       code, field):
    _, caller = make_tenant(legacy=True)  # even in legacy mode, a document that is sent must verify
    body = verified_registration()
    if change == "tamper":
        body["identity_document"] = body["identity_document"].replace("m5.large", "m5.xlarge")
    else:
        body.update(change)
    before = snapshot_tables()
    got, reply = caller.post("/api/agents/register", body)
    assert_error(got, reply, status, code=code, field=field)
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_the_local_certificate_is_not_trusted_in_the_dev_stage(make_tenant):
    _, caller = make_tenant(legacy=False)
    status, reply = caller.post("/api/agents/register", verified_registration())
    assert_error(status, reply, 403, code="identity_not_verified")


class _BoundClient:
    """A client record with these AWS accounts bound (as ClientRecord.aws_accounts holds them)."""

    def __init__(self, record, accounts):
        self._record = record
        self.aws_accounts = tuple({"account_id": a, "role_arn": f"arn:aws:iam::{a}:role/SpotOptimizer-dev-ClientAccess",
                                   "external_id": "so-test", "bound_at": None} for a in accounts)

    def __getattr__(self, name):
        return getattr(self._record, name)


@pytest.mark.parametrize(("tenancy", "accounts", "status"), [
    ("assume-role", ["210987654321"], 403),
    ("assume-role", [], 403),
    ("assume-role", ["210987654321", "123456789012"], 200),
    ("self-hosted", [], 200),  # the home account (moto's 123456789012, the document's) is usable
    ("self-hosted", ["210987654321"], 200),
])
def test_a_document_from_an_account_the_product_may_not_act_in_is_refused(make_tenant, aws_signs_locally, monkeypatch,
                                                                          tenancy, accounts, status):
    from chalicelib import auth
    from chalicelib.aws import accounts as account_module

    real = client_repo.get
    monkeypatch.setattr(auth.client_repo, "get", lambda client_id: _BoundClient(real(client_id), accounts))
    monkeypatch.setattr(account_module, "self_hosted", lambda: tenancy == "self-hosted")
    _, caller = make_tenant(legacy=False)
    before = snapshot_tables()
    got, reply = caller.post("/api/agents/register", verified_registration())
    assert got == status, reply
    if status == 403:
        assert reply["error"] == "account_not_bound"
        assert diff_snapshots(before, snapshot_tables()) == {}


def test_a_deactivated_clients_agent_credentials_are_refused(verified, admin):
    client_id, _, a, _ = verified
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})[0] == 200
    status, reply = a["caller"].post(f"/api/agents/{a['agent_id']}/heartbeat", {"status": "online"})
    assert_error(status, reply, 403)
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "active"})[0] == 200
    assert a["caller"].post(f"/api/agents/{a['agent_id']}/heartbeat", {"status": "online"})[0] == 200


def test_malformed_agent_credentials_are_401(verified, api):
    _, _, a, b = verified
    for token in ("soa_", "soa_garbage", f"soa_{a['credential'].split('.', 1)[0][4:]}.{b['agent_id']}.x" * 2,
                  a["credential"][:-2] + "AA", f"soa_cl-x.{a['agent_id']}.{'A' * 43}"):
        status, reply = Caller(api.http, token=token).post(f"/api/agents/{a['agent_id']}/heartbeat",
                                                           {"status": "online"})
        assert_error(status, reply, 401)


def test_legacy_mode_keeps_the_v4_flow_and_is_set_by_the_admin(make_tenant, admin):
    client_id, caller = make_tenant(legacy=False)
    assert admin.get(f"/api/admin/clients/{client_id}")[1]["legacy_agents"] is False
    status, view = admin.post(f"/api/admin/clients/{client_id}/legacy-agents", {"enabled": True})
    assert status == 200 and view["legacy_agents"] is True
    status, reply = caller.post("/api/agents/register", {**registration(), "client_token": caller.token})
    assert status == 200 and reply["verified"] is False and "agent_credential" not in reply
    agent_id = reply["agent_id"]
    body_token = Caller(caller.http)
    status, _ = body_token.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online", "client_token": caller.token})
    assert status == 200
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})[0] == 200
    assert admin.post(f"/api/admin/clients/{client_id}/legacy-agents", {"enabled": "yes"})[0] == 400
    assert admin.post("/api/admin/clients/cl-nope/legacy-agents", {"enabled": False})[0] == 404


def test_new_clients_default_to_legacy_mode_off(admin):
    status, body = admin.post("/api/admin/clients/create", {"name": f"def-{uuid.uuid4().hex[:8]}"})
    assert status == 201 and body["legacy_agents"] is False
    assert client_repo.get(body["client_id"]).legacy_agents is False


def test_the_signature_covers_the_exact_document_bytes(make_tenant, aws_signs_locally):
    """GIVEN a document re-serialised (same JSON, other bytes) WHEN registered THEN 403: the agent must
    send IMDS's text verbatim."""
    _, caller = make_tenant(legacy=False)
    body = registration()
    document = identity_document(instance_id=body["instance_id"], instance_type=body["instance_type"],
                                 az=body["az"], region=body["region"])
    signature = sign(document)
    compact = document.replace("\n", "").replace("  ", "")
    status, reply = caller.post("/api/agents/register", {**body, "identity_document": compact,
                                                          "identity_signature": signature})
    assert_error(status, reply, 403, code="identity_not_verified")


def test_after_a_switch_the_old_instances_credential_reports_only_its_termination(verified):
    """The old agent terminates its instance after the wait and reports the switch again with the termination
    time, after the new instance's agent registered and replaced the credential: that report is accepted
    (the old instance is closed, once); the replaced credential can do nothing else."""
    from chalicelib.repositories import switches
    from chalicelib.tables import InstanceTable

    client_id, caller, a, _ = verified
    agent_id, old_id = a["agent_id"], a["body"]["instance_id"]
    new_id = live_instance({"ManagedBy": "SpotOptimizer", "ReplacesInstance": old_id})  # what the agent launched
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": True})
    assert status == 200, reply
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ended = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the old instance's termination
    report = switch_body(old_id, new_id, timing={"switch_initiated_at": (now - timedelta(minutes=10)).isoformat(),
                                                 "new_instance_ready_at": (now - timedelta(minutes=8)).isoformat()})
    status, reply = a["caller"].post(f"/api/agents/{agent_id}/switch-report", report)
    assert status == 200 and reply["duplicate"] is False, reply
    status, reply = caller.post("/api/agents/register", verified_registration(
        logical_agent_id=a["body"]["logical_agent_id"], instance_id=new_id, az="eu-west-1b"))
    assert status == 200 and reply["agent_credential"] != a["credential"], reply
    assert InstanceTable.get(old_id).is_active  # still running: the agent terminates it after the wait

    status, err = a["caller"].post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert_error(status, err, 401)  # the replaced credential is no agent credential any more
    before = snapshot_tables()
    another = switch_body(old_id, new_instance_id(), timing={**report["timing"],
                                                             "old_instance_terminated_at": ended})
    status, err = a["caller"].post(f"/api/agents/{agent_id}/switch-report", another)
    assert_error(status, err, 403)  # not a switch recorded from that instance
    status, err = a["caller"].post(f"/api/agents/{agent_id}/switch-report",
                                   {**report, "old_instance": {**report["old_instance"], "instance_id": new_id}})
    assert_error(status, err, 401)  # not the instance it was issued to
    status, err = a["caller"].post(f"/api/agents/{agent_id}/switch-report", report)
    assert_error(status, err, 403)  # no termination time: nothing this credential may report
    assert diff_snapshots(before, snapshot_tables()) == {}

    terminated = {**report, "timing": {**report["timing"], "old_instance_terminated_at": ended}}
    for _ in range(2):  # a repeat changes nothing
        status, reply = a["caller"].post(f"/api/agents/{agent_id}/switch-report", terminated)
        assert status == 200 and reply["duplicate"] is True, reply
    row = InstanceTable.get(old_id)
    assert row.is_active is False and row.terminated_at == now - timedelta(minutes=1)
    [switch] = [s for s in switches.for_client_since(client_id, datetime(2025, 1, 1, tzinfo=timezone.utc))
                if s.old_instance_id == old_id]
    assert switch.old_terminated_at == now - timedelta(minutes=1)


def _notifications(caller) -> list[dict]:
    status, body = caller.get("/api/notifications")
    assert status == 200, body
    return body.get("notifications", body.get("items", []))


def test_a_proven_registration_takes_an_instance_from_another_clients_unverified_claim(make_tenant,
                                                                                      aws_signs_locally):
    """GIVEN tenant A in legacy agent mode that registered an instance id first (its word only)
    WHEN tenant B's agent on that instance registers with the instance's signed identity document
    THEN 200: the instance is B's (its proven account recorded), A no longer lists it, and A is told."""
    from chalicelib.tables import InstanceTable

    a_client, a_caller = make_tenant()
    body = verified_registration()
    status, a_reply = a_caller.post("/api/agents/register", registration(instance_id=body["instance_id"]))
    assert status == 200, a_reply
    b_client, b_caller = make_tenant(legacy=False)
    status, b_reply = b_caller.post("/api/agents/register", body)
    assert status == 200, b_reply
    row = InstanceTable.get(body["instance_id"], consistent_read=True)
    assert (row.client_id, row.agent_id) == (b_client, b_reply["agent_id"])
    assert row.proven_account_id == b_reply["account_id"]
    status, listed = a_caller.get(f"/api/client/{a_client}/instances")
    assert status == 200 and body["instance_id"] not in str(listed), listed
    assert any(n.get("kind") == "instance_claim_ended" and body["instance_id"] in n.get("message", "")
               for n in _notifications(a_caller))
    assert not any(n.get("kind") == "instance_claim_ended" for n in _notifications(b_caller))


def test_a_proven_claim_is_not_taken_over(make_tenant, aws_signs_locally):
    """GIVEN tenant A's agent registered with the instance's signed identity document
    WHEN tenant B registers the same instance, with a signed document too or in legacy mode
    THEN 409 instance_conflict each time, and nothing is written."""
    from chalicelib.tables import InstanceTable

    a_client, a_caller = make_tenant(legacy=False)
    body = verified_registration()
    status, a_reply = a_caller.post("/api/agents/register", body)
    assert status == 200, a_reply
    for legacy, request in ((False, body), (True, registration(instance_id=body["instance_id"]))):
        _, b_caller = make_tenant(legacy=legacy)
        mid = snapshot_tables()
        status, reply = b_caller.post("/api/agents/register", request)
        assert_error(status, reply, 409, code="instance_conflict", field="instance_id")
        assert diff_snapshots(mid, snapshot_tables()) == {}
    assert InstanceTable.get(body["instance_id"]).client_id == a_client
