"""Security walk 22: what landed in the last session, attacked by a tenant holding two client tokens (its agents on
them): the daily switch bound's exception for the switches the service commanded (whether a client can make its own
reports count as commanded — a delivered command of its own left open, two reports of one command racing, another
agent's or tenant's command, a replay —, record switches through a legacy replacement's registration that never
count, or have the engine queue a switch for it at the bound as the engine's own), and a deleted agent's revival when
its legacy process registers again on its host (whether another tenant can revive it, take its released row, or
tell it from a live one). Each test is one attack; its docstring says what it tries and what holds (and, when it
found something, what happened before the fix)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chalicelib.repositories import agents as agent_repo
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.switches import SwitchTable
from tests.api._support import assert_error, diff_snapshots, snapshot_tables, switch_body
from tests.conftest import new_instance_id, registration
from tests.integration.test_decisions import settled_agent  # noqa: F401 - a fixture


def _now() -> datetime:
    return datetime.now(UTC)


def _unchanged_post(caller, path: str, body: dict):
    before = snapshot_tables()
    answer = caller.post(path, body)
    assert diff_snapshots(before, snapshot_tables()) == {}
    return answer


# --- the daily switch bound and the switches the service commanded ------------------------------------------------


def _bounded_agent(admin, make_tenant, cap: int = 2):
    """A tenant whose agent may record ``cap`` switches a day: (client id, caller, agent id, instance id)."""
    client_id, caller = make_tenant()
    reg = registration()
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_switches_per_agent_per_day": cap})[0] == 200
    return client_id, caller, reply["agent_id"], reg["instance_id"]


def _switch_rows(client_id: str, agent_id: str) -> list:
    return [row for row in SwitchTable.query(client_id, consistent_read=True) if row.agent_id == agent_id]


def test_a_clients_own_delivered_switch_buys_one_report_past_the_bound_not_many(admin, make_tenant):
    """The attack: the daily bound lets a report past it when its old instance has a delivered, open switch command
    (the service's word that the switch happens). One switch under the bound, the client force-switches its agent's
    instance (allowed: the day is not full), has the command delivered (pending-commands), then reports switches from
    that instance to made-up new instances with ``success: false``, which leaves the command open, so each next report
    still finds it. Before walk 22 every one of them was recorded past the bound (a row each, kept 90 days, the agent
    moved each time): the bound, which exists because a legacy report is taken on trust, was no bound. What holds: a
    delivered switch command answers for one switch, the first recorded from its instance since it was queued; the
    next report from that instance is 429 ``switch_limit_exceeded`` and writes nothing."""
    client_id, caller, agent_id, first = _bounded_agent(admin, make_tenant)
    second = new_instance_id()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(first, second, timing={}))
    assert status == 200 and not reply["duplicate"], reply
    status, reply = caller.post(f"/api/client/instances/{second}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1a"})
    assert status == 201, reply
    command_id = reply["command"]["id"] if "id" in reply["command"] else reply["command"]["command_id"]
    delivered = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]
    assert [c["id"] for c in delivered] == [command_id]

    answers = []
    for _ in range(4):
        body = {**switch_body(second, new_instance_id(), timing={}), "success": False}
        answers.append(caller.post(f"/api/agents/{agent_id}/switch-report", body))
    assert answers[0][0] == 200, answers[0]
    for status, reply in answers[1:]:
        assert_error(status, reply, 429, code="switch_limit_exceeded")
    assert len(_switch_rows(client_id, agent_id)) == 2
    assert AgentTable.get(client_id, agent_id, consistent_read=True).switch_day_count == 2


def test_two_reports_of_one_delivered_switch_racing_at_the_bound_record_one(admin, make_tenant, monkeypatch):
    """The attack: the previous attack's two reports sent at once, the second landing between the first's check that
    its old instance has an unanswered delivered switch and the first's write (both find the command unanswered).
    What holds: the check is made after the agent's day count is read, and that count is the write's condition: one
    report is recorded past the bound, the other is 429 ``switch_limit_exceeded``, the day counted once more."""
    from chalicelib import bootstrap, command_queue
    from tests.api.test_security_walk_19 import overtaken_at

    client_id, caller, agent_id, first = _bounded_agent(admin, make_tenant, cap=1)
    current = new_instance_id()
    assert caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(first, current, timing={}))[0] == 200
    command = command_queue.switch_command(agent_repo.get(client_id, agent_id), target_mode="spot",
                                           target_pool_id="m5.large.eu-west-1b", priority=50, trigger="risk",
                                           created_by="system", now=_now())
    bootstrap.command_store().add(command)
    assert len(caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]) == 1

    def report():
        body = {**switch_body(current, new_instance_id(), timing={}), "success": False}
        return caller.post(f"/api/agents/{agent_id}/switch-report", body)

    second = overtaken_at(monkeypatch, command_queue, "delivered_switch_of", report)
    first_answer = report()
    statuses = sorted([first_answer[0], second[0][0]])
    assert statuses == [200, 429], (first_answer, second)
    assert len(_switch_rows(client_id, agent_id)) == 2
    assert AgentTable.get(client_id, agent_id, consistent_read=True).switch_day_count == 2


def test_another_agents_delivered_switch_buys_no_report_past_the_bound(admin, make_tenant):
    """The attack: agent A has a delivered switch command of its instance (the service's switch, whose report the
    bound lets past). Agent B of the same client, and an agent of another tenant, each at their daily bound, report
    a switch from A's instance, hoping A's command makes their report "commanded"; then A's report is sent twice
    (a replay). What holds: B's and the other tenant's reports are 404 ``old_instance.instance_id`` (not their
    instance) and write nothing; A's report is recorded once past the bound, its replay a duplicate."""
    client_id, caller, a_agent, a_instance = _bounded_agent(admin, make_tenant, cap=1)
    b_reg = registration()
    b_agent = caller.post("/api/agents/register", b_reg)[1]["agent_id"]
    other_id, other, o_agent, o_instance = _bounded_agent(admin, make_tenant, cap=1)
    for who, agent_id, instance in ((caller, a_agent, a_instance), (caller, b_agent, b_reg["instance_id"]),
                                    (other, o_agent, o_instance)):
        new = new_instance_id()
        assert who.post(f"/api/agents/{agent_id}/switch-report", switch_body(instance, new, timing={}))[0] == 200
        if agent_id == a_agent:
            a_instance = new
    status, reply = caller.post(f"/api/client/instances/{a_instance}/force-switch", {"target": "ondemand"})
    assert_error(status, reply, 429, code="switch_limit_exceeded")  # the client's own: refused at the bound
    from chalicelib import bootstrap, command_queue

    command = command_queue.switch_command(agent_repo.get(client_id, a_agent), target_mode="spot",
                                           target_pool_id="m5.large.eu-west-1b", priority=50, trigger="risk",
                                           created_by="system", now=_now())
    bootstrap.command_store().add(command)  # the decision cycle's
    assert [c["id"] for c in caller.get(f"/api/agents/{a_agent}/pending-commands")[1]["commands"]] == [
        command.command_id]
    for who, agent_id in ((caller, b_agent), (other, o_agent)):
        status, reply = _unchanged_post(who, f"/api/agents/{agent_id}/switch-report",
                                        switch_body(a_instance, new_instance_id(), timing={}))
        assert_error(status, reply, 404, field="old_instance.instance_id")
    body = switch_body(a_instance, new_instance_id(), timing={})
    first = caller.post(f"/api/agents/{a_agent}/switch-report", body)
    again = caller.post(f"/api/agents/{a_agent}/switch-report", body)
    assert first[0] == 200 and not first[1]["duplicate"] and first[1]["commands_completed"] == [command.command_id]
    assert again[0] == 200 and again[1]["duplicate"], again
    assert len(_switch_rows(client_id, a_agent)) == 2
    assert len(_switch_rows(client_id, b_agent)) == 1 and len(_switch_rows(other_id, o_agent)) == 1


def test_switches_inferred_from_a_legacy_agents_registrations_count_against_the_daily_bound(admin, make_tenant):
    """The attack: a v4 agent's switch that ends with its host is recorded from the replacement's registration (the
    delivered switch command of the instance it left, ``inferred``), with no report. The client force-switches its
    agent, has the command delivered and its result posted, registers the agent on a made-up new instance in the
    target zone, and starts again, day after day past the agent's daily bound. Before walk 22 an inferred switch was
    recorded without counting against the day (``switches.record`` without ``daily_cap``), so the client's next
    force-switch always found the day empty: a switch row (kept 90 days) and an instance row per loop, without bound.
    What holds: an inferred switch is counted as the service's own (recorded past the bound, counted all the same);
    at the bound the client's next force-switch is 429 ``switch_limit_exceeded`` with nothing queued."""
    from tests.api.test_legacy_v4_bodies import _registered_keeping_instances, v4_registration

    client_id, caller, agent_id, logical, current, _ = _registered_keeping_instances(make_tenant)
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_switches_per_agent_per_day": 2})[0] == 200
    answers = []
    for zone in ("eu-west-1b", "eu-west-1a", "eu-west-1b", "eu-west-1a"):
        status, queued = caller.post(f"/api/client/instances/{current}/force-switch",
                                     {"target": "pool", "pool_id": f"m5.large.{zone}"})
        answers.append(status)
        if status != 201:
            assert_error(status, queued, 429, code="switch_limit_exceeded")
            break
        [command] = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]
        assert caller.post(f"/api/agents/{agent_id}/commands/{command['id']}/executed",
                           {"success": True, "message": "Switch completed"})[0] == 200
        current = new_instance_id()
        status, reply = caller.post("/api/agents/register", v4_registration(current, logical, zone))
        assert status == 200 and reply["agent_id"] == agent_id, reply
    assert answers == [201, 201, 429], answers
    rows = _switch_rows(client_id, agent_id)
    assert len(rows) == 2 and all(row.inferred for row in rows)
    assert AgentTable.get(client_id, agent_id, consistent_read=True).switch_day_count == 2


def test_a_switch_the_client_asks_the_engine_for_at_the_bound_is_429_and_queues_nothing(admin, settled_agent):  # noqa: F811
    """The attack: at its agent's daily bound, where a force-switch or an ``issue-switch-command`` naming a target is
    429, the client sends ``issue-switch-command`` without a target: the engine chooses the switch (the agent's own
    rails, ``max_switches_per_day``, which its client may raise to 100, and moves to on-demand not counted there),
    and the command is queued as the engine's, the kind whose report the bound lets past. Before walk 22 it was
    queued (201), delivered, and its report recorded past the bound: one more switch a request, up to the engine's
    rails. What holds: a switch a client asks for is a client's new switch: 429 ``switch_limit_exceeded`` at the
    bound, nothing queued nor recorded (the rate limit's own rows aside), as with a target named (held)."""
    from chalicelib import bootstrap
    from tests.integration.test_decisions import _set_risk

    client_id, caller, agent_id, itype = settled_agent
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_switches_per_agent_per_day": 1})[0] == 200
    AgentTable(client_id, agent_id).update(actions=[AgentTable.switch_day.set(_now().strftime("%Y-%m-%d")),
                                                    AgentTable.switch_day_count.set(1)])  # the day's one switch
    _set_risk(itype, {"a": 0.01, "b": 0.01, "c": 0.01})
    before = snapshot_tables()
    for body in ({}, {"target_mode": "ondemand"}, {"target_mode": "ondemand", "urgent": True}):
        status, reply = caller.post(f"/api/agents/{agent_id}/issue-switch-command", body)
        assert_error(status, reply, 429, code="switch_limit_exceeded", field="agent_id")
    changed = diff_snapshots(before, snapshot_tables())
    assert set(changed) <= {t for t in changed if t.endswith("-rate-limits")}, changed
    assert bootstrap.command_store().active_for_agent(agent_id, 50) == []


# --- a deleted agent's revival on its own host ------------------------------------------------------------------------


def test_another_tenant_registering_on_a_deleted_agents_host_revives_nothing_and_learns_nothing(make_tenant):
    """The attack: the victim's agent was deleted; its host's row is released (kept, inactive), the case in which the
    same agent's process registering there again is revived under its id. The attacker registers on that instance
    with the victim's logical id (and with one of its own), hoping to revive the victim's agent under its token, take
    the released row (and its client's mark), or tell a deleted agent's host from a live one by the answer. What
    holds: 409 ``instance_conflict`` exactly as for the victim's live instance, nothing written, the victim's agent
    still deleted; the attacker's registration of that logical id on an instance of its own is an agent of its own,
    never the victim's."""
    victim_id, victim = make_tenant()
    gone, live = registration(), registration()
    gone_agent = victim.post("/api/agents/register", gone)[1]["agent_id"]
    assert victim.post("/api/agents/register", live)[0] == 200
    assert victim.call("DELETE", f"/api/client/agents/{gone_agent}")[0] == 200
    released = agent_repo.instance_row(gone["instance_id"])
    assert released.released_at is not None and not released.is_active

    _, attacker = make_tenant()
    answers = []
    for target in (gone, live):
        for logical in (target["logical_agent_id"], f"web-{uuid.uuid4().hex[:8]}"):
            body = registration(instance_id=target["instance_id"], logical_agent_id=logical)
            status, reply = _unchanged_post(attacker, "/api/agents/register", body)
            assert_error(status, reply, 409, code="instance_conflict", field="instance_id")
            answers.append({k: v for k, v in reply.items() if k != "request_id"})
    assert all(answer == answers[0] for answer in answers), answers
    assert agent_repo.get(victim_id, gone_agent).deleted

    status, reply = attacker.post("/api/agents/register", registration(logical_agent_id=gone["logical_agent_id"]))
    assert status == 200 and reply["agent_id"] != gone_agent and reply["action"] == "created", reply
    assert agent_repo.get(victim_id, gone_agent).deleted
