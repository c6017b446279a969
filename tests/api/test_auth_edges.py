"""Edge cases of the credentials a request carries: odd text in a token or key is
refused with a JSON 401, never a 500, and a misconfigured or unreadable admin key never opens the admin
routes."""

from __future__ import annotations

import json

import pytest

from chalicelib.auth import hash_secret
from chalicelib.settings import get_settings
from tests.api._support import assert_error
from tests.conftest import Caller, aws_client, registration

LONE_SURROGATE = "\ud800"  # valid in a JSON string ("\\ud800"), not encodable as UTF-8


@pytest.mark.parametrize("method, path", [("POST", "/api/agents/register"),
                                          ("POST", "/api/notifications/mark-all-read"),
                                          ("POST", "/api/agents/ag-0123abcd/heartbeat")])
def test_a_body_token_that_is_not_valid_unicode_is_401(api, method, path):
    """GIVEN a legacy body ``client_token`` holding a lone surrogate (JSON allows it, UTF-8 does not)
    WHEN a client or agent route is called THEN 401, not a 500 from hashing it."""
    body = {**registration(), "client_token": f"sot_{LONE_SURROGATE}"}
    status, reply = Caller(api.http).call(method, path, body)
    assert_error(status, reply, 401, code="unauthorized")


@pytest.fixture
def stored_admin_key_hash(admin_key):
    """Store another admin-key hash for one test (as an operator would), then put the real one back."""
    from aws_lambda_powertools.utilities import parameters

    ssm, name = aws_client("ssm"), get_settings().admin_key_parameter

    def store(value: str) -> None:
        ssm.put_parameter(Name=name, Type="SecureString", Value=value, Overwrite=True)
        parameters.clear_caches()

    store.forget = parameters.clear_caches  # after a change made directly in SSM
    yield store
    store(hash_secret(admin_key))


@pytest.mark.parametrize("given", ["\u00a0", "\x1c", "\u3000", " \t "])
def test_a_blank_admin_key_is_refused_even_when_the_stored_hash_is_the_empty_keys(api, stored_admin_key_hash,
                                                                                   given):
    """GIVEN the hash of an empty key in SSM (``printf %s "$key" | sha256sum`` with ``key`` unset) WHEN an admin
    route is called with an X-Admin-Key that is only whitespace THEN 401: an empty key never opens them."""
    stored_admin_key_hash(hash_secret(""))
    status, reply = Caller(api.http).get("/api/admin/clients?limit=1", headers={"X-Admin-Key": given})
    assert_error(status, reply, 401, code="unauthorized")


def test_an_unreadable_admin_key_is_503_with_retry_after_never_open(api, admin_key, stored_admin_key_hash):
    """GIVEN no admin-key parameter in SSM (deleted, or SSM throttling the read) WHEN an admin route is called
    with a key THEN 503 with Retry-After (not a 500, never open); without a key THEN 401 as always."""
    aws_client("ssm").delete_parameter(Name=get_settings().admin_key_parameter)
    stored_admin_key_hash.forget()
    for key in (admin_key, "guess"):
        response = api.http.get("/api/admin/clients?limit=1", headers={"X-Admin-Key": key})
        assert_error(response.status_code, json.loads(response.body), 503, code="admin_key_unavailable")
        assert int(response.headers["Retry-After"]) >= 1
    status, reply = Caller(api.http).get("/api/admin/clients?limit=1")
    assert_error(status, reply, 401, code="unauthorized")
