"""The API client: errors carry status and the server's JSON error; one retry on connection errors."""

from __future__ import annotations

import pytest
import requests

from spot_agent.api import ApiClient, ApiError
from tests.agent.chalice_session import BASE_URL, ChaliceSession


def test_a_refused_token_is_an_error_with_status_and_body(api):
    client = ApiClient(BASE_URL, "not-a-token", session=ChaliceSession(api.http))
    with pytest.raises(ApiError) as caught:
        client.heartbeat("ag-unknown", {"status": "online"})
    assert caught.value.status == 401 and isinstance(caught.value.body, dict)
    assert caught.value.body["error"] and not caught.value.retryable


def test_an_unknown_agent_is_a_404_with_the_field(make_tenant, api):
    _, caller = make_tenant(legacy=True)  # a v4-style client token on an agent route
    client = ApiClient(BASE_URL, caller.token, session=ChaliceSession(api.http))
    with pytest.raises(ApiError) as caught:
        client.heartbeat("ag-unknown", {"status": "online"})
    assert caught.value.status == 404 and caught.value.body.get("field") == "agent_id"


def test_without_legacy_mode_the_client_token_is_refused_on_agent_routes(tenant):
    client = ApiClient(BASE_URL, tenant.token, session=tenant.session())
    with pytest.raises(ApiError) as caught:
        client.heartbeat("ag-unknown", {"status": "online"})
    assert caught.value.status == 403 and caught.value.code == "agent_credential_required"


def test_the_agent_credential_serves_agent_routes_and_register_keeps_the_client_token(tenant):
    """GIVEN an ApiClient holding an agent credential WHEN it calls register and heartbeat THEN register
    carries the client token and heartbeat the credential."""
    seen = []

    class Recording:
        def request(self, method, url, headers=None, **kwargs):
            seen.append(headers["Authorization"])
            return type("R", (), {"status_code": 200, "content": b"{}", "json": lambda self: {}})()

    client = ApiClient(BASE_URL, tenant.token, session=Recording())
    client.credential = "soa_cl-x.ag-y.secret"
    client.register({})
    client.heartbeat("ag-y", {})
    assert seen == [f"Bearer {tenant.token}", "Bearer soa_cl-x.ag-y.secret"]


def test_an_invalid_body_is_a_400_naming_the_field(tenant):
    client = ApiClient(BASE_URL, tenant.token, session=tenant.session())
    with pytest.raises(ApiError) as caught:
        client.register({"instance_id": "i-0123456789abcdef0", "instance_type": "m5.large"})
    assert caught.value.status == 400 and caught.value.body["field"] in ("region", "az")


class FlakySession:
    """Fails the first ``failures`` calls with a connection error, then answers 200 {}."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def request(self, method, url, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise requests.ConnectionError("refused")

        class Ok:
            status_code, content, text = 200, b'{"success": true}', '{"success": true}'

            def json(self):
                return {"success": True}

        return Ok()


def test_one_connection_error_is_retried_once():
    session = FlakySession(failures=1)
    client = ApiClient("http://x", "t", session=session, sleep=lambda s: None)
    assert client.config("a") == {"success": True} and session.calls == 2


def test_two_connection_errors_are_an_unreachable_error():
    session = FlakySession(failures=5)
    client = ApiClient("http://x", "t", session=session, sleep=lambda s: None)
    with pytest.raises(ApiError) as caught:
        client.config("a")
    assert caught.value.unreachable and caught.value.retryable and session.calls == 2
