"""Tokens, client status and the admin key."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import pytest

from chalicelib.tables import ALL_TABLES, METERING_TABLES
from chalicelib.tables.clients import ClientLookupTable, ClientTable
from tests.api._support import assert_error, diff_snapshots, now_utc, snapshot_tables, utc
from tests.conftest import Caller, registration


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _create(admin, **body):
    body.setdefault("name", f"auth-{uuid.uuid4().hex[:10]}")
    body.setdefault("legacy_agents", True)
    status, reply = admin.post("/api/admin/clients/create", body)
    assert status == 201, reply
    return reply


def test_missing_token_is_401(api, tenant_with_agent):
    """GIVEN no token at all WHEN an agent or client route is called THEN 401 unauthorized."""
    _, _, agent_id, _ = tenant_with_agent
    anonymous = Caller(api.http)
    for method, path in (("GET", f"/api/agents/{agent_id}/config"), ("GET", "/api/client/validate"),
                         ("POST", f"/api/agents/{agent_id}/heartbeat"), ("GET", "/api/notifications")):
        status, body = anonymous.call(method, path, {} if method == "POST" else None)
        assert_error(status, body, 401, code="unauthorized")


@pytest.mark.parametrize("header", ["Bearer sot_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz",
                                    "sot_token-without-scheme"])
def test_unknown_or_malformed_token_is_401(api, header):
    """GIVEN a made-up token or a non-Bearer header WHEN a client route is called THEN 401."""
    caller = Caller(api.http)
    status, body = caller.get("/api/client/validate", headers={"Authorization": header})
    assert_error(status, body, 401, code="unauthorized")


def test_legacy_body_client_token_is_accepted(api, make_tenant):
    """GIVEN only ``client_token`` in the JSON body (legacy agents) WHEN registering THEN it works."""
    client_id, caller = make_tenant()
    anonymous = Caller(api.http)
    status, body = anonymous.post("/api/agents/register", {**registration(), "client_token": caller.token})
    assert status == 200, body
    assert body["client_id"] == client_id
    status, body = anonymous.post(f"/api/agents/{body['agent_id']}/heartbeat",
                                  {"status": "online", "client_token": f"  {caller.token}  "})
    assert status == 200, body
    status, body = anonymous.post("/api/agents/register", {**registration(), "client_token": "sot_wrong"})
    assert_error(status, body, 401)


def test_inactive_client_gets_403_and_reactivation_restores_access(admin, make_tenant):
    """GIVEN a client WHEN an admin deactivates it THEN its token answers 403; reactivated THEN 200 again."""
    client_id, caller = make_tenant()
    status, body = admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})
    assert status == 200 and body["status"] == "inactive", body
    before = snapshot_tables()
    status, body = caller.post("/api/agents/register", registration())
    assert_error(status, body, 403, code="forbidden")
    status, body = caller.get("/api/client/validate")
    assert_error(status, body, 403, code="forbidden")
    assert diff_snapshots(before, snapshot_tables()) == {}

    status, body = admin.post(f"/api/admin/clients/{client_id}/status", {"status": "active"})
    assert status == 200 and body["status"] == "active"
    status, body = caller.get("/api/client/validate")
    assert status == 200 and body["client_id"] == client_id


@pytest.mark.parametrize("body", [{"status": "suspended"}, {}, {"status": None}])
def test_client_status_rejects_unknown_values(admin, make_tenant, body):
    """GIVEN a status other than active/inactive WHEN posted THEN 400 on field status, client unchanged."""
    client_id, caller = make_tenant()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/status", body)
    assert_error(status, reply, 400, field="status")
    assert caller.get("/api/client/validate")[0] == 200


def test_status_of_unknown_client_is_404_and_creates_nothing(admin):
    """GIVEN a client id that does not exist WHEN its status is set THEN 404 and no half-made client."""
    before = snapshot_tables()
    status, body = admin.post("/api/admin/clients/cl-doesnotexist/status", {"status": "inactive"})
    assert_error(status, body, 404, field="client_id")
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_regenerate_token_invalidates_the_old_one_at_once(api, admin, make_tenant):
    """GIVEN a client WHEN its token is regenerated THEN the old token is 401 immediately, the new one works."""
    client_id, old = make_tenant()
    assert old.get("/api/client/validate")[0] == 200
    status, body = admin.post(f"/api/admin/clients/{client_id}/regenerate-token", {})
    assert status == 200, body
    new_token = body["client_token"]
    assert new_token != old.token and body["token_expires_at"] is None

    status, reply = old.get("/api/client/validate")
    assert_error(status, reply, 401, code="unauthorized")
    status, reply = Caller(api.http, token=new_token).get("/api/client/validate")
    assert status == 200 and reply["client_id"] == client_id

    keys = {row.lookup_key for row in ClientLookupTable.scan(ClientLookupTable.client_id == client_id)}
    assert f"token#{_sha256(new_token)}" in keys
    assert f"token#{_sha256(old.token)}" not in keys
    assert ClientTable.get(client_id).token_hash == _sha256(new_token)


def test_regenerate_token_of_unknown_client_is_404(admin):
    """GIVEN an unknown client id WHEN a token is regenerated THEN 404 and nothing written."""
    before = snapshot_tables()
    status, body = admin.post("/api/admin/clients/cl-nobody/regenerate-token", {})
    assert_error(status, body, 404)
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_reveal_token_is_gone_and_never_returns_token_material(admin):
    """GIVEN a client WHEN the legacy 'reveal token' route is called THEN 410 and no token or hash."""
    created = _create(admin)
    status, body = admin.get(f"/api/admin/clients/{created['client_id']}/token")
    assert_error(status, body, 410, code="token_not_recoverable")
    text = json.dumps(body)
    assert created["client_token"] not in text and _sha256(created["client_token"]) not in text
    assert "client_token" not in body and "token" not in body

    status, body = admin.get(f"/api/admin/clients/{created['client_id']}")
    assert status == 200 and body["client_id"] == created["client_id"]
    text = json.dumps(body)
    assert created["client_token"] not in text and _sha256(created["client_token"]) not in text


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/admin/clients/create", {"name": "sneaky"}),
    ("GET", "/api/admin/clients", None),
    ("GET", "/api/admin/clients/cl-x", None),
    ("POST", "/api/admin/clients/cl-x/status", {"status": "inactive"}),
    ("POST", "/api/admin/clients/cl-x/regenerate-token", {}),
    ("GET", "/api/admin/clients/cl-x/token", None),
    ("GET", "/api/admin/activity", None),
])
@pytest.mark.parametrize("key", [None, "", "wrong-key", "WRONG"], ids=["no-key", "empty", "wrong", "wrong2"])
def test_admin_routes_need_the_admin_key(api, admin_key, method, path, body, key):
    """GIVEN no, an empty or a wrong X-Admin-Key WHEN an admin route is called THEN 401."""
    headers = {} if key is None else {"X-Admin-Key": key}
    status, reply = Caller(api.http).call(method, path, body, headers=headers)
    assert_error(status, reply, 401, code="unauthorized")


def test_admin_key_with_the_right_value_works_case_insensitive_header(api, admin_key):
    """GIVEN the right key under a lower-case header name WHEN listing clients THEN 200."""
    status, body = Caller(api.http).get("/api/admin/clients?limit=1", headers={"x-admin-key": admin_key})
    assert status == 200, body


def test_tokens_are_stored_only_as_sha256(admin):
    """GIVEN a created and a regenerated token WHEN every table is read THEN only their SHA-256 is stored."""
    created = _create(admin)
    first = created["client_token"]
    status, body = admin.post(f"/api/admin/clients/{created['client_id']}/regenerate-token", {})
    second = body["client_token"]
    dump = json.dumps(snapshot_tables())
    assert set(snapshot_tables()) == {t.Meta.table_name for t in ALL_TABLES if t not in METERING_TABLES}
    for token in (first, second):
        assert token not in dump
        assert token.removeprefix("sot_") not in dump
    assert _sha256(second) in dump
    row = ClientTable.get(created["client_id"])
    assert row.token_hash == _sha256(second)
    ClientLookupTable.get(f"token#{_sha256(second)}")
    with pytest.raises(ClientLookupTable.DoesNotExist):
        ClientLookupTable.get(f"token#{_sha256(first)}")


@pytest.mark.parametrize("variant", [str.upper, str.title, lambda n: f"  {n}  "],
                         ids=["upper", "title", "padded"])
def test_duplicate_client_name_is_409_and_writes_nothing(admin, variant):
    """GIVEN a client name WHEN another client is created with the same name in other case THEN 409."""
    name = f"dup-name-{uuid.uuid4().hex[:8]}"
    _create(admin, name=name)
    before = snapshot_tables()
    status, body = admin.post("/api/admin/clients/create", {"name": variant(name)})
    assert_error(status, body, 409, code="duplicate_name", field="name")
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_token_ttl_expiry(api, admin, monkeypatch):
    """GIVEN a client created with token_ttl_days=1 WHEN its expiry passes THEN its token answers 401."""
    from chalicelib import rate_limit

    created = _create(admin, token_ttl_days=1)
    expires = utc(created["token_expires_at"])
    assert timedelta(hours=23) < expires - now_utc() <= timedelta(days=1)
    caller = Caller(api.http, token=created["client_token"])
    assert caller.get("/api/client/validate")[0] == 200

    monkeypatch.setattr(rate_limit, "wall_clock", lambda: expires + timedelta(seconds=1))  # a day later
    status, body = caller.get("/api/client/validate")
    assert_error(status, body, 401, code="unauthorized")
    assert "expired" in body["message"]

    # Regenerating without a TTL gives a token that does not expire.
    status, body = admin.post(f"/api/admin/clients/{created['client_id']}/regenerate-token", {})
    assert status == 200 and body["token_expires_at"] is None
    assert Caller(api.http, token=body["client_token"]).get("/api/client/validate")[0] == 200
    assert ClientTable.get(created["client_id"]).token_expires_at is None


def test_new_clients_are_active_and_validate_at_once(api, admin):
    """GIVEN a freshly created client (the legacy server left its status empty) WHEN its token is validated THEN 200 and active."""
    created = _create(admin)
    assert created["status"] == "active"
    status, body = Caller(api.http, token=created["client_token"]).get("/api/client/validate")
    assert status == 200 and body == {"valid": True, "client_id": created["client_id"],
                                      "name": created["name"]}
