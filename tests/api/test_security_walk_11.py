"""Security walk 11: what one tenant, with its client token or its agents' credentials, can make the service store
or do without bound: rows per request that nothing bounds or expires, and one cheap request (or one tenant's data)
that makes the service, or a scheduled job's every run, do work that grows without bound. Each test is one attack;
its docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.repositories import agents as agent_repo
from chalicelib.tables.switches import SwitchTable
from tests.api._support import assert_error, diff_snapshots, snapshot_tables, switch_body
from tests.conftest import new_instance_id, registration


def _now() -> datetime:
    return datetime.now(UTC)


def _switch_cap() -> int:
    """``QUOTA_MAX_SWITCHES_PER_AGENT_PER_DAY`` (24 when the setting is unknown: the code before the fix)."""
    from chalicelib.settings import get_settings

    return getattr(get_settings(), "quota_max_switches_per_agent_per_day", 24)


# --- switch reports: rows that nothing expired, at the rate of the requests ------------------------------------


def test_a_switch_row_expires_with_the_event_retention(make_tenant):
    """ATTACK (storage that never expires): every switch report a client's agent sends records a switch row. BEFORE:
    the switches table had no TTL and no job removed a row of a live agent: a client's switch history (which the
    charts, the instance metrics and each switch report's own duplicate check read) only grew. NOW: a switch row
    carries ``expires_at``, ``EVENT_RETENTION_DAYS`` (90) after it was recorded, as interruptions and decisions do."""
    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    new = new_instance_id()
    before = _now()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(reg["instance_id"], new))
    assert status == 200 and not reply["duplicate"], reply
    rows = list(SwitchTable.query(client_id))
    assert len(rows) == 1
    expires = getattr(rows[0], "expires_at", None)
    assert expires is not None, "a switch row never expires"
    assert before + timedelta(days=89) < expires < _now() + timedelta(days=91)


def test_an_agent_cannot_record_switches_without_bound(make_tenant):
    """ATTACK (unbounded growth at the request rate): a legacy client (whose switch reports are taken on trust)
    reports switch after switch of one agent, each to a made-up instance (the rate limit admits 1,200 a minute).
    BEFORE: each report recorded a switch row, a new instance row (neither expires while the agent lives; each
    later report's duplicate check and the agent's kept-instance bound read the agent's whole history back), a
    notification and a capacity observation, without bound. NOW: an agent records at most
    ``QUOTA_MAX_SWITCHES_PER_AGENT_PER_DAY`` new switches a UTC day (the decision cycle makes at most 3); past that
    a new switch is 429 ``switch_limit_exceeded`` with ``Retry-After``, nothing written, while a repeat of a
    switch already recorded is still answered as one (its agent retries reports)."""
    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    cap = _switch_cap()
    chain = [reg["instance_id"]] + [new_instance_id() for _ in range(cap)]
    for old, new in zip(chain, chain[1:]):
        status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(old, new, timing={}))
        assert status == 200 and not reply["duplicate"], reply
    before = snapshot_tables()
    for _ in range(3):
        status, reply = caller.post(f"/api/agents/{agent_id}/switch-report",
                                    switch_body(chain[-1], new_instance_id(), timing={}))
        assert_error(status, reply, 429, code="switch_limit_exceeded")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert agent_repo.get(client_id, agent_id).instance_id == chain[-1]
    # the agent's retry of the last switch it recorded is still a duplicate, not a refusal
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(chain[-2], chain[-1], timing={}))
    assert status == 200 and reply["duplicate"], reply
    # another agent of the client has its own allowance
    other = registration()
    other_id = caller.post("/api/agents/register", other)[1]["agent_id"]
    status, reply = caller.post(f"/api/agents/{other_id}/switch-report",
                                switch_body(other["instance_id"], new_instance_id(), timing={}))
    assert status == 200 and not reply["duplicate"], reply
