"""Security walk 11: what one tenant, with its client token or its agents' credentials, can make the service store
or do without bound: rows per request that nothing bounds or expires, and one cheap request (or one tenant's data)
that makes the service, or a scheduled job's every run, do work that grows without bound. Each test is one attack;
its docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.repositories import agents as agent_repo
from chalicelib.tables.switches import SwitchTable
from tests.api._support import assert_error, diff_snapshots, pricing_body, snapshot_tables, switch_body
from tests.conftest import new_instance_id, registration
from tests.integration.test_data_cleaner import _walk_from, unbounded  # noqa: F401 - the fixture


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


def test_the_daily_switch_bound_is_the_clients_own_when_the_operator_sets_one(admin, make_tenant):
    """The bound above is a per-client quota like the others: the operator sets it with
    ``POST /api/admin/clients/{id}/limits`` (``max_switches_per_agent_per_day``; ``null`` restores the stage's
    default), the client reads it at ``GET /api/client/limits``, and the switch reports of its agents obey it."""
    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    status, reply = admin.post(f"/api/admin/clients/{client_id}/limits", {"max_switches_per_agent_per_day": 2})
    assert status == 200 and reply["limits"]["max_switches_per_agent_per_day"] == 2, reply
    assert caller.get("/api/client/limits")[1]["limits"]["max_switches_per_agent_per_day"] == 2
    chain = [reg["instance_id"]] + [new_instance_id() for _ in range(3)]
    for old, new in zip(chain[:2], chain[1:3]):
        status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(old, new, timing={}))
        assert status == 200 and not reply["duplicate"], reply
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(chain[2], chain[3], timing={}))
    assert_error(status, reply, 429, code="switch_limit_exceeded")
    status, reply = admin.post(f"/api/admin/clients/{client_id}/limits", {"max_switches_per_agent_per_day": None})
    assert reply["limits"]["max_switches_per_agent_per_day"] == _switch_cap()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(chain[2], chain[3], timing={}))
    assert status == 200 and not reply["duplicate"], reply
    for bad in (-1, 1441, "many", 2.5):
        status, reply = admin.post(f"/api/admin/clients/{client_id}/limits", {"max_switches_per_agent_per_day": bad})
        assert_error(status, reply, 400, field="max_switches_per_agent_per_day")


def test_the_daily_bound_never_refuses_the_report_of_a_switch_the_service_commanded(admin, make_tenant):
    """The daily bound is of the rows an agent's word writes, not of the service's own switches: the decision cycle's
    pool switches follow the agent's ``max_switches_per_day`` (up to 100) and its moves to and from on-demand are not
    counted there, so an agent can be handed more switches a day than the bound. BEFORE (docs audit 2026-12-07): the
    report of such a switch was 429 once the agent had recorded the bound, and a legacy agent never sends a refused
    report again: a switch that happened went unrecorded (the agent row on the old instance, the new one unknown).
    NOW: a report whose old instance has a switch command the service delivered is recorded past the bound (and
    counted); a client's new switch command at the bound is refused before anything happens (429, nothing queued);
    a report nothing commanded is still refused."""
    from chalicelib import bootstrap, command_queue
    from chalicelib.tables.agents import AgentTable

    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_switches_per_agent_per_day": 2})[0] == 200
    chain = [reg["instance_id"]] + [new_instance_id() for _ in range(4)]
    for old, new in zip(chain[:2], chain[1:3]):
        status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(old, new, timing={}))
        assert status == 200 and not reply["duplicate"], reply

    # the service's own switch (as the decision cycle queues it), delivered, then reported as a legacy agent does
    agent = agent_repo.get(client_id, agent_id)
    command = command_queue.switch_command(agent, target_mode="spot", target_pool_id="m5.large.eu-west-1b",
                                           priority=50, trigger="risk", created_by="system",
                                           now=datetime.now(UTC))
    bootstrap.command_store().add(command)
    assert [c["id"] for c in caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]] == [
        command.command_id]
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(chain[2], chain[3], timing={}))
    assert status == 200 and not reply["duplicate"] and reply["commands_completed"] == [command.command_id], reply
    assert agent_repo.get(client_id, agent_id).instance_id == chain[3]
    assert AgentTable.get(client_id, agent_id, consistent_read=True).switch_day_count == 3  # counted all the same

    # a client's new switch at the bound: refused before it is queued
    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/instances/{chain[3]}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1a"})
    assert_error(status, reply, 429, code="switch_limit_exceeded", field="agent_id")
    # and a switch nothing commanded is still refused
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(chain[3], chain[4], timing={}))
    assert_error(status, reply, 429, code="switch_limit_exceeded")
    assert diff_snapshots(before, snapshot_tables()) == {}


# --- an agent's ended instances: rows the hourly savings roll-up read back for good ------------------------------


def test_an_agents_ended_instance_rows_go_after_their_retention(make_tenant, unbounded):  # noqa: F811
    """ATTACK (storage that never expires, and a scheduled job's every run growing with it): each switch (and each
    standby) of a live agent leaves an instance row behind when it ends. BEFORE: only the removal of a gone agent
    deleted its inactive instance rows, so a live agent's only grew (a legacy client's switch reports to made-up
    instances at the request rate, or any long-lived fleet), and every hourly savings roll-up of the client reads
    all of them (its Query is on ``installed_at < end``; the closed rows without a termination time even pass its
    filter and are integrated again each hour). NOW: the daily data cleaner deletes a live agent's inactive
    instance rows that ended (``terminated_at``, else their last update) more than ``AGENT_RETENTION_DAYS`` (90)
    ago: the close run's month is long closed and their switches have expired. It keeps the row the agent names
    (a re-registration updates it), active rows however old, recent ones, and a proven instance's row that never
    recorded its termination (it may still run in its owner's account: the row keeps it that owner's), nor an
    instance the product launched (its row names its replica) that a switch left running: deleting it would make
    the cleanup job take the running instance for an orphan of ours and terminate it."""
    from chalicelib.jobs import data_cleaner
    from chalicelib.tables.instances import InstanceTable

    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    now = _now()
    old, recent = now - timedelta(days=100), now - timedelta(days=10)

    def row(tag, *, active=False, installed=old - timedelta(days=1), terminated=None, updated=old, proven=None,
            replica=None):
        instance_id = new_instance_id()
        InstanceTable(instance_id, client_id=client_id, agent_id=agent_id, role="primary", mode="spot",
                      instance_type="m5.large", az="eu-west-1a", is_active=active, installed_at=installed,
                      terminated_at=terminated, updated_at=updated, proven_account_id=proven,
                      replica_id=replica).save()
        return tag, instance_id

    gone = dict([row("terminated long ago", terminated=old), row("closed long ago"),
                 row("ours, terminated long ago", terminated=old, replica="rep-1")])
    kept = dict([row("terminated lately", terminated=recent, updated=recent), row("closed lately", updated=recent),
                 row("active however old", active=True, installed=now - timedelta(days=400)),
                 row("proven, closed long ago", proven="123456789012"),
                 row("ours, closed long ago", replica="rep-2")])
    current = reg["instance_id"]  # the row the agent names, inactive and old: a re-registration updates it
    InstanceTable(current).update(actions=[*InstanceTable.close_actions(), InstanceTable.terminated_at.set(old),
                                           InstanceTable.updated_at.set(old)])
    _walk_from(client_id, now)
    data_cleaner.run(now)
    left = {r.instance_id for r in InstanceTable.by_agent.query(agent_id)}
    assert {tag for tag, i in gone.items() if i in left} == set()
    assert {tag for tag, i in kept.items() if i not in left} == set()
    assert current in left
    _walk_from(client_id, now)
    assert data_cleaner.run(now).get("instances", 0) == 0  # a re-run deletes nothing


# --- a read that writes: the decision an agent or client asks for ------------------------------------------------


def test_asking_for_a_decision_again_and_again_records_one_a_minute(make_tenant, handlers_now):
    """ATTACK (a read that writes at the request rate): ``GET /api/agents/{id}/switch-recommendation`` and
    ``POST /api/agents/{id}/decide`` evaluate the policy and record the decision with its inputs (up to 40 pools a
    row, kept 90 days). BEFORE: every call wrote one more row (a uuid key): a client polling them at the rate limit
    stored ~1.7 M decision rows an agent a day, kept 90 days, and the agent's decision history (what the dashboard
    shows as its last five) was nothing but these. NOW: such a decision is keyed by its agent, source and minute:
    asking again within the minute replaces the row (never one naming a command), so each source records at most
    one decision an agent a minute, as the answer still reflects each call."""
    from chalicelib.tables.risk import DecisionTable

    _, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                pricing_body(reg["instance_id"], "m5.large", {"eu-west-1a": 0.031, "eu-west-1b": 0.029}))
    assert status == 200, reply
    for _ in range(6):
        status, reply = caller.get(f"/api/agents/{agent_id}/switch-recommendation")
        assert status == 200, reply
        status, reply = caller.post(f"/api/agents/{agent_id}/decide", {})
        assert status == 200, reply
    rows = list(DecisionTable.query(agent_id, consistent_read=True))
    assert sorted(r.source for r in rows) == ["decide", "switch-recommendation"]
