"""Per-client rate limit (chalicelib/rate_limit.py): 429 with Retry-After, nothing written by a refused
request, a new window allows again, tenants are independent, admin routes are not limited."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from chalicelib import rate_limit
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.conftest import registration

WINDOW_START = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)  # a window boundary (60 s windows)


@pytest.fixture
def clock(monkeypatch):
    """The rate limiter's wall clock, settable; the container's short-circuits start empty."""
    state = {"now": WINDOW_START.replace(second=10)}
    monkeypatch.setattr(rate_limit, "wall_clock", lambda: state["now"])
    rate_limit.reset_container_state()
    yield state
    rate_limit.reset_container_state()


def _limit(admin, client_id, n):
    status, body = admin.post(f"/api/admin/clients/{client_id}/rate-limit", {"requests_per_window": n})
    assert status == 200, body
    assert body["rate_limit_per_window"] == n
    return body


def _heartbeat(api, caller, agent_id):
    response = api.http.post(f"/api/agents/{agent_id}/heartbeat", headers=caller.headers(),
                             body=json.dumps({"status": "online"}))
    return response.status_code, json.loads(response.body), response.headers


def test_over_the_limit_is_429_with_retry_after_and_writes_nothing(api, admin, make_tenant, clock):
    """GIVEN a client limited to 3 requests per window WHEN it sends a 4th in the same window THEN 429
    rate_limited with Retry-After = seconds to the next window, and the refused call wrote nothing
    (not even its own counter: refused requests are not counted)."""
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration())  # counted before the limit is set
    assert status == 200
    agent_id = reply["agent_id"]
    _limit(admin, client_id, 3)
    clock["now"] = WINDOW_START.replace(minute=1, second=5)  # a fresh window
    for _ in range(3):
        assert _heartbeat(api, caller, agent_id)[0] == 200
    before = snapshot_tables()
    counter_before = rate_limit.requests_in_window(client_id, clock["now"])
    status, body, headers = _heartbeat(api, caller, agent_id)
    assert_error(status, body, 429, code="rate_limited")
    assert headers["Retry-After"] == "55"
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert rate_limit.requests_in_window(client_id, clock["now"]) == counter_before == 3
    status, body = caller.get("/api/client/validate")  # client routes share the same limit
    assert status == 429, body


def test_next_window_is_allowed_again(api, admin, make_tenant, clock):
    """GIVEN a client refused in one window WHEN the next window starts THEN its requests pass again
    (the container's short-circuit ends with its window)."""
    client_id, caller = make_tenant()
    _limit(admin, client_id, 1)
    clock["now"] = WINDOW_START.replace(minute=2, second=1)
    assert caller.get("/api/client/validate")[0] == 200
    assert caller.get("/api/client/validate")[0] == 429
    assert caller.get("/api/client/validate")[0] == 429  # short-circuit: same answer
    clock["now"] = WINDOW_START.replace(minute=3, second=0)
    assert caller.get("/api/client/validate")[0] == 200


def test_counter_holds_across_containers(api, admin, make_tenant, clock):
    """GIVEN a client at its limit WHEN a fresh container (no in-memory state) serves it THEN still 429:
    the count lives in DynamoDB."""
    client_id, caller = make_tenant()
    _limit(admin, client_id, 2)
    clock["now"] = WINDOW_START.replace(minute=4, second=30)
    assert caller.get("/api/client/validate")[0] == 200
    assert caller.get("/api/client/validate")[0] == 200
    rate_limit.reset_container_state()
    assert caller.get("/api/client/validate")[0] == 429


def test_two_tenants_are_independent(api, admin, make_tenant, clock):
    """GIVEN tenant A over its limit WHEN tenant B calls in the same window THEN B is served."""
    a_id, a = make_tenant()
    b_id, b = make_tenant()
    _limit(admin, a_id, 1)
    clock["now"] = WINDOW_START.replace(minute=5, second=0)
    assert a.get("/api/client/validate")[0] == 200
    assert a.get("/api/client/validate")[0] == 429
    for _ in range(3):
        assert b.get("/api/client/validate")[0] == 200


def test_admin_routes_are_not_rate_limited(api, admin, make_tenant, clock):
    """GIVEN a client over its limit WHEN the admin reads or changes it THEN served; clearing its
    override (null) gives it the stage default again."""
    client_id, caller = make_tenant()
    _limit(admin, client_id, 1)
    clock["now"] = WINDOW_START.replace(minute=6, second=0)
    caller.get("/api/client/validate")
    assert caller.get("/api/client/validate")[0] == 429
    for _ in range(3):
        assert admin.get(f"/api/admin/clients/{client_id}")[0] == 200
    status, body = admin.post(f"/api/admin/clients/{client_id}/rate-limit", {"requests_per_window": None})
    assert status == 200 and body["rate_limit_per_window"] is None
    clock["now"] = WINDOW_START.replace(minute=7, second=0)
    assert caller.get("/api/client/validate")[0] == 200


@pytest.mark.parametrize("value", [0, -1, "many", 10**9])
def test_bad_override_is_400(admin, make_tenant, value):
    """GIVEN an implausible limit WHEN the admin sets it THEN 400 and the client is unchanged."""
    client_id, _ = make_tenant()
    status, body = admin.post(f"/api/admin/clients/{client_id}/rate-limit", {"requests_per_window": value})
    assert_error(status, body, 400)
    assert admin.get(f"/api/admin/clients/{client_id}")[1]["rate_limit_per_window"] is None


def test_a_request_is_counted_once_however_many_auth_paths_check_it(make_tenant, admin, clock):
    """GIVEN one request object WHEN two auth paths call the limiter for it THEN it is counted once."""
    from types import SimpleNamespace

    from chalicelib.repositories import clients

    client_id, _ = make_tenant()
    _limit(admin, client_id, 1)
    clock["now"] = WINDOW_START.replace(minute=8, second=0)
    client = clients.require(client_id)
    request = SimpleNamespace(context={})
    rate_limit.check(client, request)
    rate_limit.check(client, request)  # the same request: not counted again, not refused
    with pytest.raises(Exception) as refused:
        rate_limit.check(client, SimpleNamespace(context={}))
    assert getattr(refused.value, "status", None) == 429


@pytest.fixture
def small_limits(monkeypatch):
    """A stage limit of 4 per window, 2 per agent, a default agent quota of 1 (so the stage limit covers it)."""
    from chalicelib.settings import get_settings

    for name, value in (("RATE_LIMIT_PER_WINDOW", "4"), ("RATE_LIMIT_PER_AGENT", "2"), ("QUOTA_MAX_AGENTS", "1")):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    rate_limit.reset_container_state()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
    rate_limit.reset_container_state()


def _served(caller, n: int) -> int:
    return sum(caller.get("/api/client/validate")[0] == 200 for _ in range(n))


@pytest.mark.usefixtures("small_limits")
def test_the_limit_grows_with_the_agent_quota_a_fleet_is_given(admin, make_tenant, clock):
    """GIVEN a client whose agent quota an admin raised WHEN its fleet calls THEN its limit is what that many agents
    need (RATE_LIMIT_PER_AGENT each) when that is above the stage's limit. Before, the limit stayed the stage's:
    a legacy v4 agent makes about 9 calls a minute, so raising max_agents to 200 left such a fleet refused (429)
    at random, its switch reports and command results too (which that agent never sends again). An explicit
    rate-limit override still wins; the quota's reset restores the stage's limit."""
    client_id, caller = make_tenant()
    assert admin.get(f"/api/admin/clients/{client_id}")[1]["effective_rate_limit"] == 4
    clock["now"] = WINDOW_START.replace(minute=20, second=1)
    assert _served(caller, 6) == 4
    status, reply = admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 5})
    assert status == 200, reply
    assert admin.get(f"/api/admin/clients/{client_id}")[1]["effective_rate_limit"] == 10
    rate_limit.reset_container_state()
    clock["now"] = WINDOW_START.replace(minute=21, second=1)
    assert _served(caller, 12) == 10
    rate_limit.reset_container_state()
    clock["now"] = WINDOW_START.replace(minute=22, second=1)
    assert _served(caller, 12) == 10  # the second path: the container already counted the client in a window
    _limit(admin, client_id, 3)
    assert admin.get(f"/api/admin/clients/{client_id}")[1]["effective_rate_limit"] == 3
    clock["now"] = WINDOW_START.replace(minute=23, second=1)
    assert _served(caller, 5) == 3
    _limit(admin, client_id, None)
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": None})[0] == 200
    clock["now"] = WINDOW_START.replace(minute=24, second=1)
    assert _served(caller, 6) == 4


@pytest.mark.usefixtures("small_limits")
def test_a_gate_rebuilt_from_the_client_row_keeps_the_fleets_limit(admin, make_tenant, clock):
    """GIVEN a client with a raised agent quota whose gate is lost (rebuilt from the client row on its next
    request) WHEN its fleet calls THEN the rebuilt gate has the fleet's limit, not the stage's."""
    from chalicelib.repositories import clients

    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 4})[0] == 200
    clients.delete_gate(client_id)
    rate_limit.reset_container_state()
    clock["now"] = WINDOW_START.replace(minute=30, second=1)
    assert _served(caller, 10) == 8


def test_critical_agent_reports_pass_a_client_over_its_limit_from_a_reserve(api, admin, make_tenant, clock):
    """GIVEN a client at its limit (its console or agents' polls used the window) WHEN its agent sends a report whose
    loss is permanent (a switch report, a termination: a legacy agent never resends a refused one) THEN it is
    admitted from the window's reserve (a quarter of the limit) and recorded, while any other request stays 429;
    past the reserve a critical report is 429 too; the next window has a full reserve again. Before, the switch
    report was refused like a poll, and the switch's record was lost."""
    from tests.api._support import switch_body

    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    _limit(admin, client_id, 8)  # reserve: 2
    clock["now"] = WINDOW_START.replace(minute=40, second=1)
    assert _served(caller, 9) == 8
    assert _heartbeat(api, caller, agent_id)[0] == 429
    new_id = "i-0aaaaaaaaaaaaaaa1"
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(reg["instance_id"], new_id))
    assert status == 200 and reply["duplicate"] is False, reply
    status, reply = caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": new_id, "reason": "spot"})
    assert status == 200, reply
    assert caller.get("/api/client/validate")[0] == 429  # the reserve is the critical reports' only
    before = snapshot_tables()
    status, reply = caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": new_id})
    assert_error(status, reply, 429, code="rate_limited")
    assert diff_snapshots(before, snapshot_tables()) == {}
    rate_limit.reset_container_state()  # another container: the reserve's count is in DynamoDB too
    assert caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": new_id})[0] == 429
    clock["now"] = WINDOW_START.replace(minute=41, second=1)
    assert _served(caller, 8) == 8 and caller.get("/api/client/validate")[0] == 429
    assert caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": new_id})[0] == 200


def test_every_critical_route_is_a_route_of_the_app(chalice_app):
    """The reserve is keyed by route templates: a renamed route must not silently lose it."""
    posts = {path for path, methods in chalice_app.routes.items() if "POST" in methods and path.startswith("/api/agents/")}
    assert rate_limit.CRITICAL_ROUTES <= posts
