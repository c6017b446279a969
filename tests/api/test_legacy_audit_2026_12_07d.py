"""Legacy audit of the last session's changes (8d2e8c5..9d521c0: the daily switch bound past which the report of a
switch the service commanded is still recorded and a client's new switch is refused, the revival of a deleted agent
whose legacy process restarts on its host, the health monitor's offline move and lease sweep in one transaction with
their notifications, the orphan tagged before its termination, the cleanup's stuck-event abandonment in one
transaction): what a real, unchanged legacy client (v4.0.0, v3.2.0, the legacy dashboard) meets after them.

Audited, each test one legacy call sequence as the real client makes it:

- v4 (auto-terminate off: no terminate wait, it reports and posts its result) running a switch the decision cycle
  queued, reported when the agent already recorded its day's bound: HELD (200, recorded and counted, the command
  completed by the report, v4's ``executed`` a replay; the replacement's v4 registering is the same agent, one
  switch, and its poll gets no command).
- v3.2 running a decision's switch at the bound (its report, then its bare ``mark-command-executed``): HELD (recorded,
  the command completed, the mark a replay).
- v4 with auto-terminate (a 300 s wait: its process dies with its host before it reports) at the bound: HELD (the
  replacement's registration records the switch from the command, 200: never a 429 at a registration, which v4
  would exit on).
- a commanded switch whose lease ran out before v4's report, taken back by the health monitor's sweep (pending
  again, its delivery counted): HELD (recorded at the bound; not delivered again afterwards).
- a commanded switch whose lease ran out, the replacement's v4 registered and polled before the old one's report:
  HELD (the registration recorded it; the report 200 replaces it, one switch).
- a commanded switch whose lease ran out before v4's report, taken back by the sweep (every minute), then cancelled
  before the report came: as superseded by the replacement's v4 registering and polling, or by the dashboard's
  disable: FIXED. Before, the report was 429 ``switch_limit_exceeded`` at the bound (the command no longer open, so
  not the service's switch), v4 never sends it again, and the replacement's registration had nothing to infer it
  from (the command was not executing): the switch A → B was never recorded. Now a delivered switch command of the
  old instance that ended cancelled or timed out, with no switch recorded from that instance since it was queued,
  makes the report the service's switch: recorded and counted (``command_queue.delivered_switch_of``); a second
  report from that instance is still refused.
- the dashboard's force-switch (and ``issue-switch-command`` naming a target) when the agent is at its bound: HELD as
  the range meant it (429 ``switch_limit_exceeded``, nothing queued, v4's poll gets nothing; the legacy server had
  no bound, and before this range the command was queued and its report then refused, the switch lost: now said in
  docs/legacy-compatibility.md's rows); a force-switch sent again while one is already queued is still 201
  ``duplicate``; the switch queued before the bound and run after it is recorded.
- a v4 report nothing commanded at the bound: HELD (429 as before (and a switch command queued but never delivered does
  not make it commanded)).
- a deleted v4 agent on an instance the product launched (a failover's replacement), its process restarting there:
  HELD (revived, the row keeping its replica; the cleanup neither tags it an orphan nor terminates it, before or
  after, nor the instance v4's switch launched and tagged ``ManagedBy: SpotOptimizer`` itself).
- that deleted agent removed by the data cleaner past its retention (the released row of the product's launch kept),
  its v4 process then restarting on the instance (a reboot months later): FIXED. Before, 409 ``instance_replaced`` at
  every restart (the agent gone, the released row of its host read as a replaced instance), so v4 exited for good;
  on an instance the product did not launch (its row removed with the agent) it was a new agent. Now the row the
  delete closed as the agent's host (its termination and release times the delete's) registers as a new agent under
  the same id, the row keeping its replica; the cleanup leaves it running.
- the replica coordinator's planned return to spot of a manual-replica v4 agent fallen back to on-demand while v4
  runs the dashboard's force-switch of its primary (delivered to its poll): FIXED. Before, the coordinator started
  the hand-over beside v4's switch (its "busy" read only interruption events): the standby promoted and v4's host
  retired under the switch v4 runs to its end, two moves for one. Now an open switch command of the primary makes
  the agent busy: no planned return starts (``replica_coordinator._busy``).
- the health monitor taking a silent v4 agent offline (run twice): HELD (one ``agent_status`` notification; v4's next
  heartbeat is 200 and online again, and its queued force-switch is delivered).
- a v4 termination notice whose event the cleanup abandoned (no failover ever ran; the cleanup run twice): HELD (one
  ``interruption_abandoned`` notification and audit event; v4's next notice of the instance after that is 202 and
  starts a failover again, never a ``duplicate`` of the abandoned one).
"""

from __future__ import annotations

import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import chalicelib.api.agents as agents_api
from chalicelib import bootstrap, command_queue, quotas
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.repositories import activity
from chalicelib.repositories import agents as agent_repo
from chalicelib.tables import AgentTable
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.switches import SwitchTable
from components.command_tracker.model import CommandStatus
from tests.api._support import assert_error, diff_snapshots, iso, snapshot_tables, utc
from tests.api.test_legacy_v3_bodies import v3_registration
from tests.api.test_legacy_v4_bodies import (
    _registered_keeping_instances,
    v4_heartbeat,
    v4_registration,
    v4_switch_body,
)
from tests.conftest import invoke_schedule, new_instance_id, registration
from tests.integration.test_data_cleaner import unbounded  # noqa: F401 - the fixture

# One fixed hour of today for every clocked step: the switch day never turns at midnight in the middle of a test.
T0 = datetime.now(timezone.utc).replace(hour=10, minute=0, second=0, microsecond=0)



@pytest.fixture
def clock(monkeypatch):
    """Set the agent routes' clock and the scheduled jobs' to ``when``."""

    def _set(when):
        monkeypatch.setattr(agents_api, "utcnow", lambda: when)
        monkeypatch.setattr(sys.modules["app"], "scheduled_time", lambda event: when)

    return _set


def _at_the_bound(client_id: str, agent_id: str, when: datetime) -> int:
    """The agent recorded its day's switches (``max_switches_per_agent_per_day``) by ``when``; the bound."""
    cap = int(quotas.limits(client_id)["max_switches_per_agent_per_day"])
    AgentTable(client_id, agent_id).update(actions=[AgentTable.switch_day.set(when.strftime("%Y-%m-%d")),
                                                    AgentTable.switch_day_count.set(cap)])
    return cap


def _counted(client_id: str, agent_id: str) -> int:
    return AgentTable.get(client_id, agent_id, consistent_read=True).switch_day_count


def _decision_switch(client_id: str, agent_id: str, when: datetime, *, itype: str = "m5.large",
                     az: str = "eu-west-1b"):
    """A switch of the agent's instance as the decision cycle queues it (its rails are not the daily bound)."""
    agent = agent_repo.require(client_id, agent_id)
    cmd = command_queue.switch_command(agent, target_mode="spot", target_pool_id=f"{itype}.{az}", priority=25,
                                       trigger="model", created_by=command_queue.DECISION_ENGINE, now=when)
    bootstrap.command_store().add(cmd)
    return cmd


def _v4_report(old: str, new: str, when: datetime, *, terminated: bool = False) -> dict:
    """v4's switch report (InstanceSwitcher.execute_switch) of a spot m5.large eu-west-1a → eu-west-1b switch."""
    timing = {"switch_initiated_at": iso(when - timedelta(seconds=400)),
              "new_instance_launched_at": iso(when - timedelta(seconds=390)),
              "new_instance_ready_at": iso(when - timedelta(seconds=100)),
              "traffic_switched_at": iso(when - timedelta(seconds=98))}
    if terminated:
        timing["old_instance_terminated_at"] = iso(when)
    return {**v4_switch_body(old, new, timing), "trigger": "model"}


def _recorded(client_id: str, agent_id: str) -> list[tuple[str, str]]:
    return sorted((r.old_instance_id, r.new_instance_id) for r in SwitchTable.query(client_id, consistent_read=True)
                  if r.agent_id == agent_id)


def _on(client_id: str, agent_id: str) -> str:
    return AgentTable.get(client_id, agent_id, consistent_read=True).instance_id


def _taken_back_at_the_bound(api, make_tenant, clock):
    """v4 on A (auto-terminate off) at its bound, running a decision's switch whose lease ran out, taken back by the
    health monitor's sweep: (client, caller, agent, logical id, A, B, the bound, the command, the sweep's time)."""
    client_id, caller, agent_id, logical, old, new = _registered_keeping_instances(make_tenant)
    clock(T0)
    cap = _at_the_bound(client_id, agent_id, T0)
    cmd = _decision_switch(client_id, agent_id, T0)
    [leased] = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]
    later = utc(leased["lease_expires_at"]) + timedelta(seconds=30)
    clock(later)
    invoke_schedule(api, "health-monitor", now=later)
    return client_id, caller, agent_id, logical, old, new, cap, cmd, later


def _executed(caller, agent_id: str, command_id: str):
    return caller.post(f"/api/agents/{agent_id}/commands/{command_id}/executed",
                       {"success": True, "message": "Switch completed"})


# --- 1. the daily switch bound, seen by the legacy agents -------------------------------------------------------------


def test_v4_reporting_a_decisions_switch_at_its_bound_is_recorded_and_its_replacement_is_the_same_agent(
        make_tenant, clock):
    """GIVEN a v4 agent on A (auto-terminate off) that recorded its day's bound, and a decision's switch of A delivered
    to its poll WHEN v4 reports the switch to B, posts its result, and B's v4 registers and polls THEN the report is
    200 (recorded, counted past the bound, the command completed by it), the result a replay, B's registration the
    same agent with one switch, and B's poll gets no command."""
    client_id, caller, agent_id, logical, old, new = _registered_keeping_instances(make_tenant)
    clock(T0)
    cap = _at_the_bound(client_id, agent_id, T0)
    cmd = _decision_switch(client_id, agent_id, T0)
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["id"] for c in pending["commands"]] == [cmd.command_id], pending
    clock(T0 + timedelta(minutes=6))
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, T0 + timedelta(minutes=6)))
    assert status == 200 and reply["duplicate"] is False, reply
    assert reply["commands_completed"] == [cmd.command_id], reply
    assert _counted(client_id, agent_id) == cap + 1
    status, reply = _executed(caller, agent_id, cmd.command_id)
    assert status == 200 and reply["replay"] is True and reply["command"]["status"] == "completed", reply
    clock(T0 + timedelta(minutes=7))
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert _recorded(client_id, agent_id) == [(old, new)] and _on(client_id, agent_id) == new
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and pending["commands"] == [], pending


def test_v32_running_a_decisions_switch_at_its_bound_is_recorded_and_its_mark_is_a_replay(make_tenant, clock):
    """v3.2 (bare-list polls, its report, then ``mark-command-executed {command_id}``) at its bound: the report 200
    and recorded, the command completed by it, the mark a replay (never 'no switch report': failed)."""
    client_id, caller = make_tenant()
    old, new, logical = new_instance_id(), new_instance_id(), f"v3-{uuid.uuid4().hex[:8]}"
    status, reply = caller.post("/api/agents/register", v3_registration(old, logical))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    clock(T0)
    _at_the_bound(client_id, agent_id, T0)
    cmd = _decision_switch(client_id, agent_id, T0)
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["id"] for c in pending] == [cmd.command_id], pending
    clock(T0 + timedelta(minutes=12))
    body = _v4_report(old, new, T0 + timedelta(minutes=12))
    body["snapshot"] = {"used": True, "snapshot_id": "snap-0123456789abcdef0", "volume_id": "vol-0123456789abcdef0"}
    body["timing"].pop("new_instance_launched_at")
    body["timing"]["old_instance_terminated_at"] = None
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", body)
    assert status == 200 and reply["commands_completed"] == [cmd.command_id], reply
    status, reply = caller.post(f"/api/agents/{agent_id}/mark-command-executed", {"command_id": cmd.command_id})
    assert status == 200 and reply["replay"] is True and reply["command"]["success"] is True, reply
    assert _recorded(client_id, agent_id) == [(old, new)]


def test_v4_with_auto_terminate_at_its_bound_is_recorded_by_its_replacements_registration(make_tenant, clock):
    """GIVEN v4 with auto-terminate (its switch carries a 300 s wait: the process dies with its host before it
    reports) at its bound, the decision's switch delivered WHEN B's v4 registers THEN 200, the same agent, the
    switch recorded from the command (never a 429 at a registration: v4 would exit), the command completed."""
    client_id, caller = make_tenant()
    old, new, logical = new_instance_id(), new_instance_id(), f"web-{uuid.uuid4().hex[:8]}"
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config",
                       {"auto_terminate_enabled": True, "terminate_wait_seconds": 300})[0] == 200
    clock(T0)
    _at_the_bound(client_id, agent_id, T0)
    cmd = _decision_switch(client_id, agent_id, T0)
    [leased] = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]
    assert leased["id"] == cmd.command_id and leased["terminate_wait_seconds"] == 300, leased
    clock(T0 + timedelta(minutes=4))
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert _recorded(client_id, agent_id) == [(old, new)] and _on(client_id, agent_id) == new
    assert bootstrap.command_store().get(agent_id, cmd.command_id).status is CommandStatus.COMPLETED


def test_a_commanded_switch_whose_lease_the_sweep_took_back_is_recorded_at_the_bound_and_not_run_again(
        api, make_tenant, clock):
    """GIVEN v4 on A (auto-terminate off) at its bound, holding a decision's switch WHEN its lease runs out before the
    report (a very slow AWS call) and the health monitor's sweep takes it back, then v4 reports and posts its
    result THEN the report is 200 and recorded (the command was delivered: the service's switch), the result
    accepted, and no later poll delivers the switch again."""
    client_id, caller, agent_id, logical, old, new, _, cmd, later = _taken_back_at_the_bound(api, make_tenant, clock)
    taken_back = bootstrap.command_store().get(agent_id, cmd.command_id)
    assert (taken_back.status, taken_back.attempts) == (CommandStatus.PENDING, 1), taken_back
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, later))
    assert status == 200 and reply["duplicate"] is False, reply
    assert _recorded(client_id, agent_id) == [(old, new)]
    status, reply = _executed(caller, agent_id, cmd.command_id)
    assert status == 200 and reply["command"]["status"] == "completed", reply
    for instance_id, az in ((old, "eu-west-1a"), (new, "eu-west-1b")):
        status, beat = caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, az))
        assert status == 200 and not beat.get("commands"), beat
    assert caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"] == []


def test_a_commanded_switch_reported_after_its_lease_and_the_replacements_registration_is_one_switch(
        make_tenant, clock):
    """GIVEN v4 on A (auto-terminate off) at its bound, holding a decision's switch WHEN its lease runs out, B's v4
    registers and polls, then A's v4 reports and posts its result THEN B's registration records the switch (from the
    command), the report is 200 (it replaces that record), one switch A → B, the agent on B."""
    client_id, caller, agent_id, logical, old, new = _registered_keeping_instances(make_tenant)
    clock(T0)
    _at_the_bound(client_id, agent_id, T0)
    cmd = _decision_switch(client_id, agent_id, T0)
    [leased] = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]
    later = utc(leased["lease_expires_at"]) + timedelta(seconds=30)
    clock(later)
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"] == []
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, later))
    assert status == 200, reply
    status, reply = _executed(caller, agent_id, cmd.command_id)
    assert status == 200 and reply["command"]["status"] == "completed", reply
    assert _recorded(client_id, agent_id) == [(old, new)] and _on(client_id, agent_id) == new


def test_a_commanded_switch_taken_back_and_superseded_before_v4s_report_is_still_recorded_at_the_bound(
        api, make_tenant, clock):
    """GIVEN v4 on A (auto-terminate off) at its bound, running a decision's switch slowly WHEN its lease runs out and
    the health monitor's sweep (every minute) takes it back, B's v4 registers and polls (the switch of A, pending
    again, cancelled as superseded), then A's v4 reports and posts its result THEN the report is 200 and recorded:
    the service commanded that switch and delivered it (BEFORE: 429 ``switch_limit_exceeded``, which v4 never sends
    again, and B's registration had nothing to infer it from: the switch A → B was never recorded); one switch,
    the agent on B, the result accepted, nothing delivered again."""
    client_id, caller, agent_id, logical, old, new, cap, cmd, later = _taken_back_at_the_bound(api, make_tenant, clock)
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"] == []
    assert bootstrap.command_store().get(agent_id, cmd.command_id).status is CommandStatus.CANCELLED
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, later))
    assert status == 200 and reply["duplicate"] is False, reply
    assert _recorded(client_id, agent_id) == [(old, new)] and _on(client_id, agent_id) == new
    assert _counted(client_id, agent_id) == cap + 1
    status, reply = _executed(caller, agent_id, cmd.command_id)
    assert status == 200 and reply["command"]["status"] == "completed", reply
    assert caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"] == []
    # the same report again (a build that re-sends a call that timed out): a duplicate; another switch of A: refused
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, later))
    assert status == 200 and reply["duplicate"] is True, reply
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new_instance_id(), later))
    assert status in (404, 409, 429), reply
    assert _recorded(client_id, agent_id) == [(old, new)]


def test_a_commanded_switch_taken_back_then_cancelled_by_the_dashboards_disable_is_recorded_at_the_bound(
        api, make_tenant, clock):
    """GIVEN v4 on A at its bound running a decision's switch whose lease ran out (taken back by the sweep) WHEN the
    dashboard disables the agent (the switch, pending again, cancelled) and v4 then reports THEN 200, recorded (BEFORE:
    429, the switch lost), the result accepted late."""
    client_id, caller, agent_id, logical, old, new, _, cmd, later = _taken_back_at_the_bound(api, make_tenant, clock)
    assert caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})[0] == 200
    assert bootstrap.command_store().get(agent_id, cmd.command_id).status is CommandStatus.CANCELLED
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, later))
    assert status == 200 and reply["duplicate"] is False, reply
    status, reply = _executed(caller, agent_id, cmd.command_id)
    assert status == 200 and reply["command"]["status"] == "completed", reply
    assert _recorded(client_id, agent_id) == [(old, new)] and _on(client_id, agent_id) == new

def test_the_dashboards_force_switch_at_the_bound_is_a_429_and_one_queued_before_is_recorded(make_tenant):
    """GIVEN a v4 agent (auto-terminate off) one switch short of its bound WHEN the dashboard force-switches it
    (queued, 201), sends it again (201 ``duplicate``), an unrelated switch takes the day to its bound, and v4 runs the
    queued switch THEN its report is recorded past the bound. A further force-switch (or the legacy
    ``issue-switch-command`` naming a target) at the bound is 429 ``switch_limit_exceeded`` (JSON, naming
    ``agent_id``), nothing queued, and v4's poll gets nothing."""
    client_id, caller, agent_id, logical, old, new = _registered_keeping_instances(make_tenant)
    now = datetime.now(timezone.utc)
    cap = _at_the_bound(client_id, agent_id, now)
    AgentTable(client_id, agent_id).update(actions=[AgentTable.switch_day_count.set(cap - 1)])
    body = {"target": "pool", "pool_id": "m5.large.eu-west-1b"}
    status, queued = caller.post(f"/api/client/instances/{old}/force-switch", body)
    assert status == 201, queued
    status, again = caller.post(f"/api/client/instances/{old}/force-switch", body)
    assert status == 201 and again["duplicate"] is True and again["command"]["id"] == queued["command"]["id"], again
    AgentTable(client_id, agent_id).update(actions=[AgentTable.switch_day_count.set(cap)])
    [leased] = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]
    assert leased["id"] == queued["command"]["id"]
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, datetime.now(timezone.utc)))
    assert status == 200 and reply["commands_completed"] == [queued["command"]["id"]], reply
    assert _executed(caller, agent_id, queued["command"]["id"])[0] == 200
    assert caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))[0] == 200

    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/instances/{new}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1c"})
    assert_error(status, reply, 429, code="switch_limit_exceeded", field="agent_id")
    status, reply = caller.post(f"/api/agents/{agent_id}/issue-switch-command",
                                {"target_mode": "spot", "target_pool_id": "m5.large.eu-west-1c"})
    assert_error(status, reply, 429, code="switch_limit_exceeded", field="agent_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"] == []


def test_a_v4_report_nothing_delivered_at_the_bound_is_refused_as_before(make_tenant):
    """A v4 report at the bound whose old instance has only an undelivered switch queued (the agent never ran it):
    429 ``switch_limit_exceeded`` (as before this range), nothing written; the queued switch stays queued."""
    client_id, caller, agent_id, logical, old, new = _registered_keeping_instances(make_tenant)
    now = datetime.now(timezone.utc)
    _at_the_bound(client_id, agent_id, now)
    cmd = _decision_switch(client_id, agent_id, now)
    before = snapshot_tables()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v4_report(old, new, now))
    assert_error(status, reply, 429, code="switch_limit_exceeded")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert bootstrap.command_store().get(agent_id, cmd.command_id).status is CommandStatus.PENDING


# --- 2. a deleted agent's legacy process restarting on the product's instance, and the orphan pass ----------------


def _untouched_by_the_cleanup(api, *instance_ids: str) -> None:
    from tests.e2e.failover_support import state_of, tags_of
    from tests.integration.test_cleanup import past_grace

    outcome = invoke_schedule(api, "cleanup", now=past_grace(datetime.now(timezone.utc)))
    for instance_id in instance_ids:
        assert instance_id not in outcome["terminated"], outcome
        assert state_of(instance_id) == "running", instance_id
        assert ec2_adapter.TAG_ORPHANED not in tags_of(instance_id), instance_id


def test_a_deleted_v4_agent_on_the_products_instances_revived_there_is_never_reaped(api, make_tenant):
    """GIVEN a v4 agent (auto-terminate off) on A, an instance the product launched (a failover's replacement: tagged
    as ours, its row naming the replica), whose switch to B kept A running WHEN the dashboard deletes the agent, the
    cleanup runs, B's v4 process restarts (revived), the cleanup runs, A's v4 process restarts (409), the cleanup runs
    THEN A and B are never tagged as orphans nor terminated: A the client kept, B (which v4 tagged ``ManagedBy:
    SpotOptimizer`` itself, without our stage tag) the revived agent's host."""
    from tests.e2e.failover_support import ZONES
    from tests.integration.test_cleanup import launch

    client_id, caller = make_tenant()
    logical = f"web-{uuid.uuid4().hex[:8]}"
    reg = {"instance_type": "t3.micro", "region": "us-east-1", "az": ZONES[1], "logical_agent_id": logical,
           "agent_version": "4.0.0", "hostname": "ip-10-0-0-7"}
    status, reply = caller.post("/api/agents/register", registration(instance_id=launch(None), **reg))
    assert status == 200, reply
    agent_id, replica_id = reply["agent_id"], f"rep-{uuid.uuid4().hex[:8]}"
    ours = launch({"ManagedBy": "SpotOptimizer", "AgentId": agent_id, "ClientId": client_id, "LogicalAgentId": logical,
                   "ReplicaId": replica_id, "SpotOptimizerStage": "dev"})
    assert caller.post("/api/agents/register", registration(instance_id=ours, **reg))[0] == 200
    InstanceTable(ours).update(actions=[InstanceTable.replica_id.set(replica_id)])  # as a hand-over leaves it
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": False})[0] == 200
    # v4's own replacement, tagged as v4 tags it (``ManagedBy: SpotOptimizer``, the legacy product's tag; no stage)
    theirs = launch({"Name": "SpotOptimizer-spot", "ManagedBy": "SpotOptimizer", "LogicalAgentId": logical})
    now = datetime.now(timezone.utc)
    report = {"old_instance": {"instance_id": ours, "instance_type": "t3.micro", "region": "us-east-1",
                               "az": ZONES[1], "mode": "spot", "pool_id": f"t3.micro.{ZONES[1]}"},
              "new_instance": {"instance_id": theirs, "instance_type": "t3.micro", "region": "us-east-1",
                               "az": ZONES[1], "mode": "spot", "pool_id": f"t3.micro.{ZONES[1]}"},
              "snapshot": {"used": False}, "prices": {"on_demand": 0.0104, "old_spot": 0.004, "new_spot": 0.0035},
              "timing": {"switch_initiated_at": iso(now - timedelta(seconds=300)),
                         "new_instance_ready_at": iso(now - timedelta(seconds=60))}, "trigger": "manual"}
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", report)
    assert status == 200, reply
    assert caller.post("/api/agents/register", registration(instance_id=theirs, **reg))[1]["agent_id"] == agent_id
    _untouched_by_the_cleanup(api, ours, theirs)

    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    _untouched_by_the_cleanup(api, ours, theirs)
    status, reply = caller.post("/api/agents/register", registration(instance_id=theirs, **reg))
    assert status == 200 and (reply["agent_id"], reply["action"]) == (agent_id, "revived"), reply
    _untouched_by_the_cleanup(api, ours, theirs)
    status, reply = caller.post("/api/agents/register", registration(instance_id=ours, **reg))
    assert_error(status, reply, 409, code="instance_replaced")
    _untouched_by_the_cleanup(api, ours, theirs)
    row = agent_repo.instance_row(ours)
    assert (row.is_active, row.replica_id) == (False, replica_id), row.attribute_values



def test_a_v4_process_restarting_on_the_products_instance_after_its_deleted_agent_was_removed(
        api, make_tenant, unbounded):  # noqa: F811 - the fixture
    """GIVEN a v4 agent on an instance the product launched, deleted by the dashboard, and removed by the data
    cleaner past the agent retention (the released row of the product's launch kept: nothing else would say the
    instance is the client's) WHEN its v4 process there restarts (a reboot months later) THEN it registers (200, an
    agent, its row active: never a 5xx or a 409 at every restart, which v4 exits on), and the cleanup leaves the
    instance running, untagged."""
    from chalicelib.jobs import data_cleaner
    from tests.e2e.failover_support import ZONES
    from tests.integration.test_cleanup import launch
    from tests.integration.test_data_cleaner import _walk_from

    client_id, caller = make_tenant()
    logical = f"web-{uuid.uuid4().hex[:8]}"
    reg = {"instance_type": "t3.micro", "region": "us-east-1", "az": ZONES[1], "logical_agent_id": logical,
           "agent_version": "4.0.0", "hostname": "ip-10-0-0-8"}
    status, reply = caller.post("/api/agents/register", registration(instance_id=launch(None), **reg))
    agent_id, replica_id = reply["agent_id"], f"rep-{uuid.uuid4().hex[:8]}"
    ours = launch({"ManagedBy": "SpotOptimizer", "AgentId": agent_id, "ClientId": client_id, "LogicalAgentId": logical,
                   "ReplicaId": replica_id, "SpotOptimizerStage": "dev"})
    assert caller.post("/api/agents/register", registration(instance_id=ours, **reg))[0] == 200
    InstanceTable(ours).update(actions=[InstanceTable.replica_id.set(replica_id)])
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    now = datetime.now(timezone.utc)
    _walk_from(client_id, now)
    data_cleaner.run(now + timedelta(days=unbounded.agent_retention_days + 1))
    assert agent_repo.get(client_id, agent_id) is None  # removed: only the released row of our launch is left
    assert agent_repo.instance_row(ours).released_at is not None
    status, reply = caller.post("/api/agents/register", registration(instance_id=ours, **reg))
    assert status == 200 and (reply["agent_id"], reply["action"]) == (agent_id, "created"), reply
    row = agent_repo.instance_row(ours)
    assert (row.is_active, row.agent_id, row.released_at, row.replica_id) == (True, agent_id, None, replica_id)
    assert caller.post(f"/api/agents/{reply['agent_id']}/heartbeat", v4_heartbeat(ours, ZONES[1]))[0] == 200
    _untouched_by_the_cleanup(api, ours)

# --- 3. the health monitor's offline move -------------------------------------------------------------------------


def test_the_health_monitor_taking_a_silent_v4_agent_offline_tells_once_and_its_next_heartbeat_is_online(
        api, tenant_with_agent):
    """GIVEN a v4 agent with a force-switch queued, silent for 20 minutes (a network outage) WHEN the health monitor
    runs twice THEN one ``agent_status`` notification, the agent offline; v4's next heartbeat is 200 and online
    again, and its poll is handed the queued switch."""
    client_id, caller, agent_id, body = tenant_with_agent
    instance_id = body["instance_id"]
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, "eu-west-1a"))[0] == 200
    status, queued = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    later = datetime.now(timezone.utc) + timedelta(minutes=20)
    for _ in range(2):
        invoke_schedule(api, "health-monitor", now=later)
    assert AgentTable.get(client_id, agent_id, consistent_read=True).status == "offline"
    status, listed = caller.get(f"/api/notifications?client_id={client_id}&limit=10")
    assert [n["kind"] for n in listed["notifications"]].count("agent_status") == 1, listed
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, "eu-west-1a"))
    assert status == 200, reply
    assert AgentTable.get(client_id, agent_id, consistent_read=True).status == "online"
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert [c["id"] for c in pending["commands"]] == [queued["command"]["id"]], pending


# --- 4. the cleanup's abandonment of a stuck event ----------------------------------------------------------------


def test_a_v4_notice_whose_failover_never_ran_is_abandoned_once_and_a_later_notice_starts_one(
        api, make_tenant, started, monkeypatch):
    """GIVEN v4's termination notice (``termination-imminent``) whose failover never ran (its execution never
    started work: the event still ``detected``) WHEN the cleanup runs twice after the signal's window THEN the event
    is closed ``abandoned`` with one ``interruption_abandoned`` notification and one audit event; v4's next notice of
    that instance is 202 and starts a failover again (a new event), never ``duplicate`` of the abandoned one."""
    from tests.e2e.failover_support import register_agent

    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    body = {"instance_id": primary, "termination_time": iso(datetime.now(timezone.utc) + timedelta(seconds=110))}
    status, first = caller.post(f"/api/agents/{agent_id}/termination-imminent", body)
    assert status == 202 and first["success"] is True, first
    later = datetime.now(timezone.utc) + timedelta(minutes=31)
    for _ in range(2):
        invoke_schedule(api, "cleanup", now=later)
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    [event] = listing["interruptions"]
    assert event["interruption_id"] == first["interruption_id"] and event["status"] != "detected", event
    status, listed = caller.get(f"/api/notifications?client_id={client_id}&limit=10")
    assert [n["kind"] for n in listed["notifications"]].count("interruption_abandoned") == 1, listed
    logged = [e for e in activity.recent_events(later + timedelta(minutes=1), limit=500)
              if e.agent_id == agent_id and e.event_type == "interruption_abandoned"]
    assert len(logged) == 1, logged
    # the same instance's notice again after that (a v4 build's check still seeing IMDS's notice), as of then
    import chalicelib.api.interruptions as interruptions_api

    monkeypatch.setattr(interruptions_api, "utcnow", lambda: later + timedelta(minutes=1))
    body = {"instance_id": primary, "termination_time": iso(later + timedelta(minutes=2))}
    status, again = caller.post(f"/api/agents/{agent_id}/termination-imminent", body)
    assert status == 202 and (again["success"], again["action"]) == (True, "failover_started"), again
    assert again["interruption_id"] != first["interruption_id"] and len(started) == 2, started


# --- 5. the coordinator's planned return while v4 runs a switch ---------------------------------------------------


@pytest.mark.usefixtures("failover_machine", "fleet_jobs_see_this_test_only")
def test_no_planned_return_starts_while_v4_runs_the_dashboards_switch_of_its_primary(api, make_tenant):
    """GIVEN a manual-replica v4 agent fallen back to on-demand with a ready spot standby, and the dashboard's
    force-switch of its primary handed to v4's poll (v4 is launching the replacement, and runs it to its end) WHEN
    the replica coordinator runs, the engine saying the standby's pool repays THEN no planned return starts (no
    event, no hand-over): it would promote the standby and terminate v4's host under its switch, two moves for one
    (BEFORE: ``returns_started`` 1, the hand-over running beside v4's switch). Once v4 reported its switch, its poll
    gets nothing and nothing is handed over."""
    from chalicelib.tables import InterruptionTable
    from tests.integration.test_return_to_spot import on_demand_agent_with_ready_standby, reconcile

    client_id, caller, agent_id, primary, itype, standby = on_demand_agent_with_ready_standby(make_tenant)
    AgentTable(client_id, agent_id).update(actions=[AgentTable.agent_version.set("4.0.0")])
    status, queued = caller.post(f"/api/client/instances/{primary}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.us-east-1c"})
    assert status == 201, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert [c["id"] for c in pending["commands"]] == [queued["command"]["id"]], pending
    done = reconcile(client_id, agent_id)
    assert not done.get("returns_started"), done
    assert [e for e in InterruptionTable.query(client_id, consistent_read=True)] == []
    assert _on(client_id, agent_id) == primary


# --- 6. the dashboard's switch while a failover of the agent may still run ----------------------------------------


def test_a_switch_queued_while_a_failover_may_run_is_held_until_the_event_closes(api, make_tenant, started):
    """GIVEN v4's termination notice whose failover is running (its event open) and the dashboard's force-switch of
    the same primary queued meanwhile (201) WHEN v4 polls THEN the switch is not handed to it: v4 would run it to its
    end beside the failover, two moves for one and the failover retiring the host the switch runs on (BEFORE: handed
    over at once). Once the event closed (here: the cleanup abandons it, the agent still on that primary) the next
    poll delivers the switch, the same command."""
    from tests.e2e.failover_support import register_agent

    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    AgentTable(client_id, agent_id).update(actions=[AgentTable.agent_version.set("4.0.0")])
    body = {"instance_id": primary, "termination_time": iso(datetime.now(timezone.utc) + timedelta(seconds=110))}
    status, notice = caller.post(f"/api/agents/{agent_id}/termination-imminent", body)
    assert status == 202 and notice["action"] == "failover_started", notice
    status, queued = caller.post(f"/api/client/instances/{primary}/force-switch", {"target": "ondemand"})
    assert status == 201, queued
    for _ in range(2):
        status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
        assert status == 200 and pending["commands"] == [], pending
    invoke_schedule(api, "cleanup", now=datetime.now(timezone.utc) + timedelta(minutes=31))
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert [c["id"] for c in pending["commands"]] == [queued["command"]["id"]], pending
