"""Command delivery with leases, results, retries and timeouts, through the API."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from components.command_tracker import CommandPriority, CommandStatus, CommandType, enqueue, new_command

import chalicelib.api.agents as agents_api
from chalicelib import bootstrap
from chalicelib.command_queue import new_command_id
from chalicelib.repositories.commands import DynamoCommandStore
from chalicelib.tables.agents import AgentTable
from tests.api._support import assert_error, diff_snapshots, now_utc, snapshot_tables, utc
from tests.conftest import registration
from tests.conftest import invoke_schedule


@pytest.fixture
def agent(tenant_with_agent):
    """(client_id, caller, agent_id, instance_id) of a fresh tenant's registered agent."""
    client_id, caller, agent_id, reg = tenant_with_agent
    return client_id, caller, agent_id, reg["instance_id"]


@pytest.fixture
def clock(monkeypatch):
    """Move the agent routes' clock (and the scheduled job's) to a given time."""

    def _set(when):
        monkeypatch.setattr(agents_api, "utcnow", lambda: when)
        monkeypatch.setattr(sys.modules["app"], "scheduled_time", lambda event: when)

    return _set


def force_switch(caller, instance_id, **body):
    status, reply = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                body or {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, reply
    return reply["command"]


def pending(caller, agent_id):
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200, reply
    return reply["commands"]


def executed(caller, agent_id, command_id, success=True, message="ok"):
    return caller.post(f"/api/agents/{agent_id}/commands/{command_id}/executed",
                       {"success": success, "message": message})


def stored(agent_id, command_id):
    return bootstrap.command_store().get(agent_id, command_id)


def run_health_monitor(api):
    return invoke_schedule(api, "health-monitor")


def test_a_force_switch_sent_again_is_the_queued_one(agent):
    """GIVEN a force-switch queued (then delivered) WHEN the client sends the same force-switch again (a retry: its
    answer was lost, or its Lambda died after the command's write) THEN the answer is that command (``duplicate``),
    no second switch of the instance is queued (both would be delivered in one poll, and a legacy agent runs each);
    another target, or the same one once the first finished, is a new command."""
    _, caller, agent_id, instance_id = agent
    first = force_switch(caller, instance_id)
    status, again = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201 and again["duplicate"] is True and again["command"]["id"] == first["id"], again
    [delivered] = pending(caller, agent_id)
    assert delivered["id"] == first["id"]
    before = snapshot_tables()
    status, again = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201 and again["duplicate"] is True and again["command"]["id"] == first["id"], again
    assert diff_snapshots(before, snapshot_tables()) == {}  # its audit event was written once, with the first
    other = force_switch(caller, instance_id, target="ondemand")
    assert other["id"] != first["id"]
    assert executed(caller, agent_id, first["id"])[0] == 200
    status, later = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201 and later["duplicate"] is False and later["command"]["id"] != first["id"], later


def test_force_switch_is_leased_by_pending_commands_and_heartbeat(agent):
    """GIVEN a force-switch WHEN the agent polls THEN the command comes back executing with a lease,
    in the shape legacy agents read; the heartbeat returns the same lease (not a second one)."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    assert cmd["status"] == "pending" and cmd["priority"] == 75 and cmd["lease_expires_at"] is None
    assert cmd["target_mode"] == "spot" and cmd["target_pool_id"] == "m5.large.eu-west-1b"

    before = now_utc()
    [leased] = pending(caller, agent_id)
    assert leased["id"] == leased["command_id"] == cmd["id"]
    assert leased["status"] == "executing" and leased["attempts"] == 1
    assert leased["instance_id"] == instance_id and leased["command_type"] == "switch"
    assert leased["terminate_wait_seconds"] == 300 and leased["created_at"]
    lease = utc(leased["lease_expires_at"])
    # spot-agent 5.x: base lease (300 s) plus the launch wait (360 s); it reports before terminating
    assert before + timedelta(seconds=659) <= lease <= now_utc() + timedelta(seconds=661)

    status, beat = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert status == 200
    [again] = beat["commands"]
    assert again["id"] == cmd["id"] and again["lease_expires_at"] == leased["lease_expires_at"]
    assert again["attempts"] == 1
    assert pending(caller, agent_id)[0]["attempts"] == 1


def test_result_within_lease_completes_and_replays(agent):
    """GIVEN a leased command WHEN the result arrives in time THEN completed; the same result again is a
    replay (200); a different result afterwards is 409."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    pending(caller, agent_id)
    status, body = executed(caller, agent_id, cmd["id"])
    assert status == 200 and body["replay"] is False, body
    assert body["command"]["status"] == "completed" and body["command"]["success"] is True
    assert stored(agent_id, cmd["id"]).status is CommandStatus.COMPLETED

    status, body = executed(caller, agent_id, cmd["id"])
    assert status == 200 and body["replay"] is True and body["command"]["status"] == "completed"

    before = snapshot_tables()
    status, body = executed(caller, agent_id, cmd["id"], success=False, message="actually no")
    assert_error(status, body, 409, code="illegal_transition")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert pending(caller, agent_id) == []


def test_failure_result_is_recorded(agent):
    """GIVEN a leased command WHEN the agent reports failure THEN failed with the message; success then 409."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id, target="ondemand")
    pending(caller, agent_id)
    status, body = executed(caller, agent_id, cmd["id"], success=False, message="no capacity")
    assert status == 200 and body["command"]["status"] == "failed"
    assert body["command"]["message"] == "no capacity"
    assert executed(caller, agent_id, cmd["id"], success=False)[1]["replay"] is True
    assert_error(*executed(caller, agent_id, cmd["id"], success=True), 409)


def test_result_for_a_pending_command_is_409(agent):
    """GIVEN a command never delivered WHEN a result is posted THEN 409: only a leased command finishes."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    status, body = executed(caller, agent_id, cmd["id"])
    assert_error(status, body, 409, code="illegal_transition")
    assert stored(agent_id, cmd["id"]).status is CommandStatus.PENDING


def test_unknown_command_and_other_agents_command_are_404(agent):
    """GIVEN two agents of one tenant WHEN agent 2 reports agent 1's command (or an unknown one) THEN 404."""
    _, caller, agent_id, instance_id = agent
    status, reply = caller.post("/api/agents/register", registration())
    assert status == 200
    other_agent = reply["agent_id"]
    cmd = force_switch(caller, instance_id)
    pending(caller, agent_id)

    status, body = executed(caller, agent_id, "cmd-20200101T000000000000-deadbeef")
    assert_error(status, body, 404, code="not_found", field="command_id")
    before = snapshot_tables()
    status, body = executed(caller, other_agent, cmd["id"])
    assert_error(status, body, 404, field="command_id")
    status, body = caller.post(f"/api/agents/{other_agent}/mark-command-executed", {"command_id": cmd["id"]})
    assert_error(status, body, 404, field="command_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert stored(agent_id, cmd["id"]).status is CommandStatus.EXECUTING
    assert pending(caller, other_agent) == []


def test_late_results_are_recorded_never_retried_even_after_a_time_out(agent, clock):
    """GIVEN a leased command whose agent stays silent past every lease (re-queued, then timed_out and the
    client notified) WHEN the agent's result finally arrives THEN it is recorded as the command's outcome
    (200, ``late``), the command is never delivered again, and a repeat is a replay."""
    client_id, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    max_attempts = bootstrap.lease_policy().max_attempts
    leased = pending(caller, agent_id)[0]
    for attempt in range(1, max_attempts):
        clock(utc(leased["lease_expires_at"]) + timedelta(seconds=1))
        [leased] = pending(caller, agent_id)  # re-delivered on the next poll, same id
        assert leased["id"] == cmd["id"] and leased["attempts"] == attempt + 1
    clock(utc(leased["lease_expires_at"]) + timedelta(seconds=1))
    assert pending(caller, agent_id) == []
    assert stored(agent_id, cmd["id"]).status is CommandStatus.TIMED_OUT

    status, body = executed(caller, agent_id, cmd["id"], message="switched, slowly")
    assert status == 200 and body["late"] is True and body["replay"] is False, body
    assert body["command"]["status"] == "completed" and body["command"]["success"] is True
    assert executed(caller, agent_id, cmd["id"], message="switched, slowly")[1]["replay"] is True
    assert_error(*executed(caller, agent_id, cmd["id"], success=False), 409, code="illegal_transition")
    assert pending(caller, agent_id) == []

    status, body = caller.get("/api/notifications")
    kinds = [n["kind"] for n in body["notifications"] if n["agent_id"] == agent_id]
    assert kinds.count("command_timed_out") == 1, body


def test_a_late_result_of_a_requeued_command_completes_it_before_any_retry(agent, clock):
    """GIVEN a lease that ran out and was taken back (pending again) WHEN the first delivery's result
    arrives before the next poll THEN the command is completed and not delivered again."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    [leased] = pending(caller, agent_id)
    clock(utc(leased["lease_expires_at"]) + timedelta(seconds=30))
    status, body = executed(caller, agent_id, cmd["id"])
    assert status == 200 and body["late"] is True and body["command"]["status"] == "completed", body
    assert body["command"]["attempts"] == 1
    assert pending(caller, agent_id) == []


def test_a_result_exactly_at_the_deadline_still_counts(agent, clock):
    """GIVEN a leased command WHEN the result arrives exactly at lease_expires_at THEN it completes."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    [leased] = pending(caller, agent_id)
    clock(utc(leased["lease_expires_at"]))
    status, body = executed(caller, agent_id, cmd["id"])
    assert status == 200 and body["command"]["status"] == "completed", body


def test_expired_lease_is_redelivered_by_the_next_poll(agent, clock):
    """GIVEN a lease that ran out with no result WHEN the agent polls again THEN it gets the command
    again under a fresh lease (attempt 2)."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    [first] = pending(caller, agent_id)
    later = utc(first["lease_expires_at"]) + timedelta(seconds=5)
    clock(later)
    [second] = pending(caller, agent_id)
    assert second["id"] == cmd["id"] and second["attempts"] == 2
    assert utc(second["lease_expires_at"]) == later + timedelta(seconds=660)
    status, body = executed(caller, agent_id, cmd["id"])
    assert status == 200 and body["command"]["status"] == "completed" and body["command"]["attempts"] == 2


def test_last_lease_expiring_on_a_poll_times_out_with_a_notification(agent, clock):
    """GIVEN a command on its last attempt WHEN its lease has run out at the next poll THEN it is
    timed_out (not delivered again) and the client is notified."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    leased = pending(caller, agent_id)[0]
    for _ in range(bootstrap.lease_policy().max_attempts - 1):
        clock(utc(leased["lease_expires_at"]) + timedelta(seconds=1))
        [leased] = pending(caller, agent_id)
    clock(utc(leased["lease_expires_at"]) + timedelta(seconds=1))
    status, beat = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert status == 200 and beat["commands"] == []
    assert stored(agent_id, cmd["id"]).status is CommandStatus.TIMED_OUT
    status, body = caller.get("/api/notifications")
    kinds = [n["kind"] for n in body["notifications"] if n["agent_id"] == agent_id]
    assert kinds.count("command_timed_out") == 1, body


def test_health_monitor_requeues_then_times_out_expired_leases(api, agent, clock):
    """GIVEN a leased command whose agent went silent WHEN the health monitor runs after each deadline
    THEN it re-queues the command while attempts remain, then times it out and notifies the client."""
    client_id, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    max_attempts = bootstrap.lease_policy().max_attempts
    [leased] = pending(caller, agent_id)
    for attempt in range(1, max_attempts + 1):
        clock(utc(leased["lease_expires_at"]) - timedelta(seconds=1))
        run_health_monitor(api)
        assert stored(agent_id, cmd["id"]).status is CommandStatus.EXECUTING  # lease still live
        clock(utc(leased["lease_expires_at"]) + timedelta(seconds=1))
        result = run_health_monitor(api)
        current = stored(agent_id, cmd["id"])
        if attempt < max_attempts:
            assert result["leases"]["requeued"] >= 1
            assert current.status is CommandStatus.PENDING and current.attempts == attempt
            [leased] = pending(caller, agent_id)
    assert result["leases"]["timed_out"] >= 1
    assert current.status is CommandStatus.TIMED_OUT and current.finished_at is not None
    status, body = caller.get("/api/notifications")
    timed_out = [n for n in body["notifications"] if n["kind"] == "command_timed_out"]
    assert len(timed_out) == 1 and timed_out[0]["agent_id"] == agent_id
    assert cmd["id"] in timed_out[0]["message"] and timed_out[0]["severity"] == "warning"


def test_priority_beats_age(agent):
    """GIVEN an older low-priority command and a newer manual one WHEN the agent polls THEN 75 comes first."""
    client_id, caller, agent_id, instance_id = agent
    created = now_utc() - timedelta(minutes=5)
    low = new_command(command_id=new_command_id(created), client_id=client_id, agent_id=agent_id,
                      command_type=CommandType.HEALTH_CHECK, priority=CommandPriority.ML_NORMAL.value,
                      now=created, policy=bootstrap.lease_policy())
    enqueue(DynamoCommandStore(), low)
    manual = force_switch(caller, instance_id)
    commands = pending(caller, agent_id)
    assert [c["id"] for c in commands] == [manual["id"], low.command_id]
    assert [c["priority"] for c in commands] == [75, 25]
    assert {c["status"] for c in commands} == {"executing"}


def test_legacy_mark_command_executed(agent):
    """GIVEN a v3.2 agent WHEN it posts {command_id, success} to mark-command-executed THEN completed;
    a body with only command_id (all v3.2 sends, done or not) is a failure unless the switch was reported
    (tests/api/test_legacy_v3_bodies.py)."""
    _, caller, agent_id, instance_id = agent
    first = force_switch(caller, instance_id)
    pending(caller, agent_id)
    status, body = caller.post(f"/api/agents/{agent_id}/mark-command-executed",
                               {"command_id": first["id"], "success": True})
    assert status == 200 and body["command"]["status"] == "completed" and body["replay"] is False, body

    second = force_switch(caller, instance_id, target="ondemand")
    pending(caller, agent_id)
    status, body = caller.post(f"/api/agents/{agent_id}/mark-command-executed", {"command_id": second["id"]})
    assert status == 200 and body["command"]["status"] == "failed" and body["command"]["success"] is False, body
    assert "no switch report" in body["command"]["message"]


def test_disabled_agent_gets_no_commands_and_leases_nothing(agent):
    """GIVEN an agent whose config says enabled=false WHEN it polls THEN no commands and none leased."""
    client_id, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    AgentTable(client_id, agent_id).update(actions=[AgentTable.config.enabled.set(False)])
    assert pending(caller, agent_id) == []
    status, beat = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert status == 200 and beat["commands"] == []
    assert stored(agent_id, cmd["id"]).status is CommandStatus.PENDING


def test_offline_heartbeat_leases_nothing(agent):
    """GIVEN a queued command WHEN the agent's final heartbeat says offline THEN nothing is leased."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    status, beat = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "offline"})
    assert status == 200 and beat["commands"] == [] and beat["status"] == "offline"
    assert stored(agent_id, cmd["id"]).status is CommandStatus.PENDING


def test_force_switch_without_auto_terminate_waits_zero(agent):
    """GIVEN auto-terminate off (the old instance is kept) WHEN a switch is forced THEN terminate_wait_seconds is 0."""
    client_id, caller, agent_id, instance_id = agent
    AgentTable(client_id, agent_id).update(actions=[AgentTable.config.auto_terminate_enabled.set(False)])
    cmd = force_switch(caller, instance_id, target="ondemand")
    assert cmd["terminate_wait_seconds"] == 0 and cmd["target_mode"] == "ondemand"
    assert cmd["target_pool_id"] is None


@pytest.mark.parametrize("body, field", [({"target": "pool"}, None), ({"target": "warp"}, "target"),
                                         ({"target": "pool", "pool_id": "nonsense"}, "pool_id"), ({}, "target")])
def test_force_switch_bad_input_is_400_and_queues_nothing(agent, body, field):
    """GIVEN a bad force-switch body WHEN posted THEN 400 and no command is queued."""
    _, caller, agent_id, instance_id = agent
    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/instances/{instance_id}/force-switch", body)
    assert_error(status, reply, 400, field=field)
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_force_switch_on_an_inactive_instance_is_409(agent):
    """GIVEN a terminated instance WHEN a switch is forced on it THEN 409 instance_inactive."""
    _, caller, agent_id, instance_id = agent
    status, _ = caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": instance_id})
    assert status == 200
    status, body = caller.post(f"/api/client/instances/{instance_id}/force-switch", {"target": "ondemand"})
    assert_error(status, body, 409, code="instance_inactive")


def test_pending_commands_for_a_named_instance(agent):
    """GIVEN a force-switch of the agent's instance WHEN a caller names another instance THEN it gets
    nothing and nothing is leased; a malformed ``instance_id`` is a 400 that writes nothing."""
    from tests.conftest import new_instance_id

    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    before = snapshot_tables()
    status, body = caller.get(f"/api/agents/{agent_id}/pending-commands?instance_id=web-1")
    assert_error(status, body, 400, field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    status, body = caller.get(f"/api/agents/{agent_id}/pending-commands?instance_id={new_instance_id()}")
    assert status == 200 and body["commands"] == []
    assert stored(agent_id, cmd["id"]).status is CommandStatus.PENDING
    status, body = caller.get(f"/api/agents/{agent_id}/pending-commands?instance_id={instance_id}")
    assert [c["id"] for c in body["commands"]] == [cmd["id"]]


# --- error_code of a failed result: capacity observations --------------------------------------------------


@pytest.fixture
def own_pool_agent(make_tenant):
    """(caller, agent_id, instance_id, target pool) of an agent whose instance type no other test uses, so the
    observations this test writes cannot put another test's pools in back-off."""
    import uuid

    _, caller = make_tenant()
    itype = f"m5.c{uuid.uuid4().hex[:8]}xl"
    reg = registration(instance_type=itype)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    return caller, reply["agent_id"], reg["instance_id"], f"{itype}.eu-west-1b"


def observed(pool_id):
    from chalicelib.repositories import observations

    since = now_utc() - timedelta(hours=1)
    return [(o.kind.value, o.code, o.source) for o in observations.for_pools([pool_id], since)[pool_id]]


def fail_with(caller, agent_id, command_id, error_code):
    return caller.post(f"/api/agents/{agent_id}/commands/{command_id}/executed",
                       {"success": False, "message": "RunInstances refused", "error_code": error_code})


def test_a_failed_switch_with_a_capacity_code_records_one_refusal_of_its_target_pool(own_pool_agent):
    caller, agent_id, instance_id, pool = own_pool_agent
    cmd = force_switch(caller, instance_id, target="pool", pool_id=pool)
    pending(caller, agent_id)
    status, reply = fail_with(caller, agent_id, cmd["id"], "InsufficientInstanceCapacity")
    assert status == 200 and reply["warnings"] == [] and reply["command"]["status"] == "failed"
    again_status, again = fail_with(caller, agent_id, cmd["id"], "InsufficientInstanceCapacity")
    assert again_status == 200 and again["replay"] is True
    assert observed(pool) == [("launch_refused", "InsufficientInstanceCapacity", "agent")]


def test_a_failure_that_is_not_about_capacity_records_nothing(own_pool_agent):
    caller, agent_id, instance_id, pool = own_pool_agent
    cmd = force_switch(caller, instance_id, target="pool", pool_id=pool)
    pending(caller, agent_id)
    status, _ = fail_with(caller, agent_id, cmd["id"], "UnauthorizedOperation")
    assert status == 200 and observed(pool) == []


@pytest.mark.parametrize("bad", ["Insufficient Capacity; DROP", "x" * 80, 42, ["InsufficientInstanceCapacity"]])
def test_a_malformed_error_code_is_dropped_with_a_warning_and_the_result_still_recorded(own_pool_agent, bad):
    caller, agent_id, instance_id, pool = own_pool_agent
    cmd = force_switch(caller, instance_id, target="pool", pool_id=pool)
    pending(caller, agent_id)
    status, reply = fail_with(caller, agent_id, cmd["id"], bad)
    assert status == 200, reply
    assert reply["command"]["status"] == "failed" and stored(agent_id, cmd["id"]).status is CommandStatus.FAILED
    assert len(reply["warnings"]) == 1 and reply["warnings"][0].startswith("error_code:")
    assert observed(pool) == []


def test_a_switch_for_a_disabled_agent_is_refused_when_queued(agent):
    """GIVEN a disabled agent (delivered nothing) WHEN its client force-switches its instance THEN 409
    ``agent_disabled`` and nothing is written: queued, the command would stay pending for ever."""
    _, caller, agent_id, instance_id = agent
    status, reply = caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})
    assert status == 200 and reply["enabled"] is False, reply
    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert_error(status, reply, 409, code="agent_disabled")
    changed = diff_snapshots(before, snapshot_tables())
    assert set(changed) <= {t for t in changed if t.endswith("-rate-limits")}, changed


def test_disabling_an_agent_cancels_its_pending_commands_with_the_reason(agent):
    """GIVEN an agent with a force-switch pending WHEN its client disables it THEN the command is cancelled with
    the reason recorded, its agent row no longer counts it, and enabled again the agent is delivered nothing."""
    client_id, caller, agent_id, instance_id = agent
    command = force_switch(caller, instance_id)
    status, reply = caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})
    assert status == 200 and reply["enabled"] is False, reply
    cancelled = stored(agent_id, command["id"])
    assert cancelled.status is CommandStatus.CANCELLED and "disabled" in cancelled.message
    assert int(AgentTable.get(client_id, agent_id, consistent_read=True).active_commands) == 0
    status, reply = caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": True})
    assert status == 200 and reply["enabled"] is True, reply
    assert pending(caller, agent_id) == []


def test_deleting_an_agent_cancels_its_pending_commands(agent):
    """GIVEN an agent with a force-switch pending WHEN its client deletes it THEN the command is cancelled with the
    reason: an agent revived by registering again on its instance must not run a switch queued before the delete."""
    client_id, caller, agent_id, instance_id = agent
    command = force_switch(caller, instance_id)
    status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")
    assert status == 200 and reply["status"] == "deleted", reply
    cancelled = stored(agent_id, command["id"])
    assert cancelled.status is CommandStatus.CANCELLED and "deleted" in cancelled.message
    assert int(AgentTable.get(client_id, agent_id, consistent_read=True).active_commands) == 0


def test_two_identical_force_switches_racing_queue_one(agent, monkeypatch):
    """GIVEN a force-switch that read an empty queue WHEN the same force-switch (a retry sent while the first is still
    in flight) queues its command before the first writes THEN the first's write is refused, it reads the queue
    again and answers the other's command (``duplicate``): one switch of the instance is queued, not two."""
    from chalicelib import command_queue

    _, caller, agent_id, instance_id = agent
    body = {"target": "pool", "pool_id": "m5.large.eu-west-1b"}
    real_open, answers = command_queue.open_client_switch, []

    def open_then_overtaken(*args, **kwargs):
        found = real_open(*args, **kwargs)
        if not answers:  # the second request runs whole between this one's queue read and its write
            answers.append(None)
            answers.append(caller.post(f"/api/client/instances/{instance_id}/force-switch", body))
        return found

    monkeypatch.setattr(command_queue, "open_client_switch", open_then_overtaken)
    status, first = caller.post(f"/api/client/instances/{instance_id}/force-switch", body)
    monkeypatch.undo()
    other_status, other = answers[1]
    assert (status, other_status) == (201, 201), (first, other)
    assert other["duplicate"] is False and first["duplicate"] is True, (first, other)
    assert first["command"]["id"] == other["command"]["id"]
    assert [c["id"] for c in pending(caller, agent_id)] == [other["command"]["id"]]


def test_two_pollers_at_once_hand_a_command_to_one(agent, monkeypatch):
    """GIVEN a pending switch WHEN two agent processes on the instance poll at once (both read it pending, one leases
    it first) THEN only the one whose claim (the lease's compare-and-set) wrote it is handed it; the other gets no
    command (before, it re-read the command, found it executing and ran the same switch too)."""
    _, caller, agent_id, instance_id = agent
    cmd = force_switch(caller, instance_id)
    real = DynamoCommandStore.active_for_agent
    stale = real(DynamoCommandStore(), agent_id, 50)  # the second process's read, before the first's lease
    [leased] = pending(caller, agent_id)  # the first process claims it
    assert leased["id"] == cmd["id"] and leased["status"] == "executing"
    monkeypatch.setattr(DynamoCommandStore, "active_for_agent", lambda self, agent_id, limit: stale)
    assert pending(caller, agent_id) == []  # the second process, whose lease write loses
    monkeypatch.undo()
    stored_cmd = stored(agent_id, cmd["id"])
    assert stored_cmd.status is CommandStatus.EXECUTING and stored_cmd.attempts == 1
