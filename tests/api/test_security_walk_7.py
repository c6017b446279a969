"""Security walk 7: quotas under concurrent requests, what a tenant can pile up that no TTL removes, existence
oracles on every route (another tenant's ids against made-up ones), pagination cursors, request bodies with fields
the service sets itself, and secrets in logs. Each test is one attack; its docstring says what happened before the
fix (when it found something) and what holds now."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib import bootstrap
from chalicelib.repositories import agents as agent_repo
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


@pytest.mark.usefixtures("atomic_moto_requests")
def test_concurrent_registrations_never_pass_the_agent_quota(make_tenant, admin, monkeypatch):
    """ATTACK (quota race): a tenant with ``max_agents`` 1 sends four registrations of new agents at once. BEFORE:
    each request counted the client's agents (0), then wrote its own: four live agents, and any burst of N
    concurrent registrations passed the quota by N - 1 (the deleted-agents cap the same way), so the client's
    partition, which registration and the dashboards read whole, grew past every bound. NOW: the registration's
    write is conditional on the client's ``agents_registered`` it read before counting: one agent, three 409
    ``quota_exceeded``."""
    from chalicelib import quotas

    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 1})[0] == 200
    _first_calls_meet(monkeypatch, quotas, "check_agents", 4)
    results = _together([lambda: caller.post("/api/agents/register", registration()) for _ in range(4)])
    assert sorted(status for status, _ in results) == [200, 409, 409, 409], results
    for status, reply in results:
        if status == 409:
            assert_error(status, reply, 409, code="quota_exceeded")
    assert len([a for a in agent_repo.all_for_client(client_id) if not a.deleted]) == 1


def _queue_bound() -> int:
    """``QUOTA_MAX_QUEUED_COMMANDS`` (10 when the setting is unknown: the code before the fix)."""
    from chalicelib.settings import get_settings

    return getattr(get_settings(), "quota_max_queued_commands", 10)


def _queue(caller, reg, agent_id, i):
    if i % 2:
        return caller.post(f"/api/agents/{agent_id}/issue-switch-command", {"target_mode": "ondemand"})
    return caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch", {"target": "ondemand"})


def test_a_client_cannot_grow_an_agents_command_queue_without_bound(tenant_with_agent):
    """ATTACK (state growth): a client force-switches (or issues a switch for) an agent that does not poll, again
    and again. BEFORE: each request queued one more pending command, and an active command has no TTL (the data
    cleaner removes finished ones only): 50 requests, 50 pending commands, a queue growing with every request the
    rate limit admits, for good. NOW: at most ``QUOTA_MAX_QUEUED_COMMANDS`` active commands when a client queues
    one; past that 409 ``command_queue_full`` and nothing written. The service's own commands (the failover's, the
    decision cycle's) are never refused."""
    from components.command_tracker import CommandPriority, CommandType, enqueue, new_command

    bound = _queue_bound()
    client_id, caller, agent_id, reg = tenant_with_agent
    statuses = [_queue(caller, reg, agent_id, i)[0] for i in range(bound)]
    assert statuses == [201] * bound
    store = bootstrap.command_store()
    before = snapshot_tables()
    for i in range(6):
        status, reply = _queue(caller, reg, agent_id, i)
        assert_error(status, reply, 409, code="command_queue_full")
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
    _, caller, agent_id, reg = tenant_with_agent
    assert [_queue(caller, reg, agent_id, i)[0] for i in range(bound - 1)] == [201] * (bound - 1)
    results = _together([lambda i=i: _queue(caller, reg, agent_id, i) for i in range(4)])
    assert sorted(status for status, _ in results) == [201, 409, 409, 409], results
    assert len(bootstrap.command_store().active_for_agent(agent_id, 100)) == bound


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
