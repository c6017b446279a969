"""The legacy v3.2.0 agent, run unchanged, replayed against the real handlers on a simulated clock.

Each test plays v3.2's documented calls and timings (``tests.e2e.legacy_v3``): register without ``mode``,
heartbeat every 30 s naming its instance only in ``monitored_instances``, config every 60 s, its own pricing
report shape every 300 s, pending commands every 15 s (the first command; the thread blocks while it runs), a
switch with a root-volume snapshot and termination decided by its environment, and ``mark-command-executed
{command_id}`` after every command, done or not. It has no termination/rebalance check, replica polling or
cleanup report. The scheduled jobs run on their rates at the same simulated time.
"""

from __future__ import annotations

import pytest

from chalicelib import bootstrap
from chalicelib.tables.switches import SwitchTable
from tests.e2e.failover_support import state_of
from tests.e2e.legacy_v3 import VERSION, v3_kind
from tests.e2e.legacy_support import (
    agent_row,
    brief,
    deliveries,
    eu_fleet,
    force_switch,
    switch_without_wait,
    switch_without_wait_recorded_from_registration,
)
from tests.e2e.legacy_v4 import BOOT_S, COMMANDS_S, failover_by_eventbridge, v4_on_us_spot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]


def v3_fleet(api, make_tenant, sim, *, outlive: bool = True, **env):
    """A v3.2 agent (environment ``env``) on spot in eu-west-1a (``legacy_support.eu_fleet``)."""
    return eu_fleet(api, make_tenant, sim, v3_kind(**env), outlive=outlive)


def test_a_v3_agent_registers_without_mode_reports_and_a_forced_switch_runs_once_end_to_end(api, make_tenant, sim):
    """GIVEN a v3.2 agent on spot (registered without ``mode``, heartbeats naming no instance field, its own
    pricing report shape) WHEN the client forces a switch to eu-west-1b and v3.2 executes it with its worst-case
    timings (snapshot, running after 290 s, 2 s traffic switch, its env's 300 s wait, terminated after 290 s), the
    new instance's v3.2 agent registering 90 s after launch, then its report and its bare ``mark-command-executed``
    THEN every call is answered 2xx; the mode is learnt from the pricing report; one switch is recorded with the
    snapshot, its timings and savings; the command completed on its first delivery and never delivered again; the
    agent is on the new instance (still spot), online; and a restart of the new agent keeps all of it."""
    client_id, caller, fleet, old, itype = v3_fleet(api, make_tenant, sim)
    agent_id = old.agent_id
    assert old.registration.answer["action"] == "created"
    row = agent_row(client_id, agent_id)
    assert (row.current_mode, row.agent_version, row.status) == ("spot", VERSION, "online")  # from its pricing report
    pricing = [c for c in fleet.calls if c.path.endswith("/pricing-report")]
    assert pricing and all(c.status == 200 and c.answer["pools"] == 3 for c in pricing), brief(pricing)

    command = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    assert command["terminate_wait_seconds"] == 300
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    assert not old.running and len(old.switches) == 1, brief(fleet.calls[-5:])
    [switch] = old.switches
    new_host = switch["new_host"]
    sim.run_until(sim.elapsed + 30 * 60)

    new = next(a for a in fleet.agents if a.host.instance_id == new_host.instance_id)
    assert new.registration.status == 200 and new.agent_id == agent_id, new.registration.answer
    assert new.registration.answer["action"] == "migrated"
    report, [mark] = switch["report"], old.marks
    # the switch was recorded when the new agent registered (the old one was thought dead with its host); the
    # report, coming after all, replaces that record with its own prices and timings
    assert report.status == 200 and report.answer["duplicate"] is False, report.answer
    assert report.answer["warnings"] == [], report.answer
    assert mark.status == 200 and mark.answer["replay"] is True, mark.answer
    assert mark.at - deliveries(fleet, command["id"])[0][1] >= 880  # its env's wait and both waiters

    [recorded] = [r for r in SwitchTable.query(client_id) if r.agent_id == agent_id]
    assert (recorded.old_instance_id, recorded.new_instance_id, recorded.new_pool_id) == (
        old.host.instance_id, new_host.instance_id, f"{itype}.eu-west-1b")
    assert recorded.snapshot_used is True and recorded.hourly_savings is not None and recorded.ready_at is not None
    assert recorded.old_terminated_at is not None and recorded.total_duration_seconds == 291
    stored = bootstrap.command_store().get(agent_id, command["id"])
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    assert deliveries(fleet, command["id"]) == [(old.name, deliveries(fleet, command["id"])[0][1])]
    assert [a.name for a in fleet.agents if a.executed] == [old.name]
    assert bootstrap.command_store().active_for_agent(agent_id, 50) == []
    row = agent_row(client_id, agent_id)
    assert (row.instance_id, row.current_mode, row.current_pool_id, row.status) == (
        new_host.instance_id, "spot", f"{itype}.eu-west-1b", "online")
    assert old.stopped_at == mark.at and fleet.ec2.terminated == [old.host.instance_id]

    # WHEN the new instance's agent restarts (systemd): it registers again, without mode, under its logical id
    new.stop()
    again = fleet.start_agent(new_host, new.logical_agent_id)
    sim.run_until(sim.elapsed + 5)
    assert again.registration.status == 200 and again.agent_id == agent_id, again.registration.answer
    row = agent_row(client_id, agent_id)
    assert (row.instance_id, row.current_mode, row.status) == (new_host.instance_id, "spot", "online")
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


def test_b_a_failed_v3_switch_is_recorded_failed_and_not_executed_again(api, make_tenant, sim):
    """GIVEN a v3.2 agent WHEN its switch fails (RunInstances refused) and it posts ``mark-command-executed
    {command_id}`` as after any command THEN the command is failed (not completed), never delivered again, and
    the agent stays on its instance, running, every call answered 2xx."""
    client_id, caller, fleet, agent, itype = v3_fleet(api, make_tenant, sim)
    agent.launch_fails = True
    command = force_switch(caller, agent.host.instance_id, f"{itype}.eu-west-1b")
    sim.run_until(sim.elapsed + 20 * 60)

    [mark] = agent.marks
    assert mark.status == 200 and mark.answer["command"]["status"] == "failed", mark.answer
    stored = bootstrap.command_store().get(agent.agent_id, command["id"])
    assert (stored.status.value, stored.success, stored.attempts) == ("failed", False, 1), stored
    assert len(deliveries(fleet, command["id"])) == 1 and len(agent.executed) == 1
    assert agent.running and fleet.ec2.launched == []
    assert agent_row(client_id, agent.agent_id).instance_id == agent.host.instance_id
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


def test_c_the_kept_old_instances_v3_agent_never_runs_the_new_instances_switch(api, make_tenant, sim):
    """GIVEN a v3.2 agent whose environment says AUTO_TERMINATE_OLD_INSTANCE=false (the server's auto-terminate is
    on: v3.2 decides from its env) that switched from A to B: A and its agent keep running, B's agent registered
    WHEN the client forces a switch of B
    THEN A's agent never receives it (it would launch a replacement of A and report A's switch): both polls are
    held while A's agent runs and the client is told; once A's agent stops, B's agent alone executes it and the
    agent ends on B's replacement, with one instance launched per switch."""
    client_id, caller, fleet, old, itype = v3_fleet(api, make_tenant, sim, auto_terminate=False)
    first = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    while not old.marks and sim.elapsed < 1800:
        sim.run_until(sim.elapsed + COMMANDS_S)
    sim.run_until(sim.elapsed + 120)
    [switch] = old.switches
    assert switch["report"].status == 200 and old.running, brief(fleet.calls[-4:])
    new = next(a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id)
    assert new.running and new.agent_id == old.agent_id
    assert bootstrap.command_store().get(old.agent_id, first["id"]).status.value == "completed"

    forced_at = sim.elapsed
    second = force_switch(caller, new.host.instance_id, f"{itype}.eu-west-1c")
    sim.run_until(sim.elapsed + 5 * 60)
    assert deliveries(fleet, second["id"]) == [] and [c["id"] for c in old.executed] == [first["id"]]
    # held: both polls answered an empty list (v3.x gets the bare list, without the object's "held" reason)
    held = [c for c in fleet.calls if c.path.endswith("/pending-commands") and c.at >= forced_at and c.answer == []]
    assert {c.agent for c in held} == {old.name, new.name}, brief(held[-2:])
    # the client is told once A's agent is still heard after the terminate wait and termination v3.2 could have
    # been running (its own settings, which the server cannot see): not during them (tests/e2e/test_legacy_v4_replay.py)
    status, notes = caller.get("/api/notifications")
    assert [n["kind"] for n in notes["notifications"]].count("commands_held") == 0
    sim.run_until(sim.elapsed + 15 * 60)
    assert deliveries(fleet, second["id"]) == []
    status, notes = caller.get("/api/notifications")
    assert [n["kind"] for n in notes["notifications"]].count("commands_held") == 1

    old.stop()  # SIGTERM: its final heartbeat names no instance
    sim.run_until(sim.elapsed + 20 * 60)
    assert [name for name, _ in deliveries(fleet, second["id"])] == [new.name], deliveries(fleet, second["id"])
    assert [c["id"] for c in old.executed] == [first["id"]] and [c["id"] for c in new.executed] == [second["id"]]
    [third] = new.switches
    assert len(fleet.ec2.launched) == 2
    assert agent_row(client_id, old.agent_id).instance_id == third["new_host"].instance_id
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.usefixtures("failover_machine")
def test_d_a_termination_warning_is_handled_from_eventbridge_alone_and_the_replacements_v3_agent_takes_over(
        api, make_tenant, sim):
    """GIVEN a v3.2 agent in auto-switch mode on a real spot instance (moto EC2, us-east-1a): v3.2 has no
    termination or rebalance check, so it never reports the notice
    WHEN AWS's two-minute warning reaches the sentinel through EventBridge
    THEN one failover runs and resolves onto a replacement; the old v3.2 agent, which keeps heartbeating and
    polling until its host dies, is answered 2xx and gets no command (v3.2 would mark one it cannot run
    executed, or run a switch from the dying host); the replacement's v3.2 agent registers as the same agent and
    runs on; no command is left for v3.2."""
    client_id, caller, fleet, old, primary, _ = v4_on_us_spot(api, make_tenant, sim, kind=v3_kind())
    ec2, logical = fleet.ec2, old.logical_agent_id
    sim.run_until(58)
    agent_id = old.agent_id
    assert agent_row(client_id, agent_id).current_mode == "spot"
    _, replacement = failover_by_eventbridge(api, sim, client_id, agent_id, primary)
    sim.run_until(58 + 120)  # the old agent runs on until AWS reclaims its host
    old.running = False
    new = fleet.start_agent(ec2.host(replacement), logical, at=58 + BOOT_S)
    sim.run_until(20 * 60)

    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    [interruption] = listing["interruptions"]
    assert interruption["status"] == "resolved" and interruption["new_instance_id"] == replacement, interruption
    assert interruption["pool_id"] is not None  # a spot pool (v3.2's mode is known): a capacity signal
    assert state_of(primary) == "terminated" and state_of(replacement) == "running"
    assert new.registration.status == 200 and new.agent_id == agent_id, new.registration.answer
    row = agent_row(client_id, agent_id)
    assert (row.instance_id, row.status) == (replacement, "online")
    assert old.executed == old.skipped == old.marks == [] and new.executed == new.skipped == []
    left = [(c.command_type.value, c.status.value) for c in bootstrap.command_store().history(agent_id, 20)
            if c.status.value in ("pending", "executing", "timed_out")]
    assert left == []
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


def test_e_a_v3_switch_that_outlasts_its_lease_because_v3_waits_by_its_env_is_recorded_once(api, make_tenant, sim):
    """GIVEN a v3.2 agent whose client turned auto-terminate off (the command says ``terminate_wait_seconds: 0``,
    leased for a switch without a wait) while v3.2's env still terminates after its own 300 s wait, and the build
    first waits for its snapshot (ea15b23; the waiter's worst case, 600 s)
    WHEN it executes the forced switch and reports ~25 min after delivery, past the lease, the health monitor
    sweeping leases every minute meanwhile
    THEN the switch is recorded once, the command ends completed (its late result recorded, not retried), it is
    executed by one agent only, and every call is answered 2xx."""
    client_id, caller, fleet, old, itype = v3_fleet(api, make_tenant, sim, snapshot_wait=600)
    command = switch_without_wait(caller, old, itype, sim)

    [switch], [mark] = old.switches, old.marks
    assert switch["report"].status == 200 and mark.status == 200, brief([switch["report"], mark])
    assert mark.at - deliveries(fleet, command["id"])[0][1] > 1320  # past the lease of a switch without a wait
    assert len([r for r in SwitchTable.query(client_id) if r.agent_id == old.agent_id]) == 1
    stored = bootstrap.command_store().get(old.agent_id, command["id"])
    assert (stored.status.value, stored.success) == ("completed", True), stored
    assert [a.name for a in fleet.agents if a.executed] == [old.name] and len(fleet.ec2.launched) == 1
    status, notes = caller.get("/api/notifications")
    assert "command_timed_out" not in [n["kind"] for n in notes["notifications"]], notes
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.parametrize("server_auto_terminate", [True, False])
def test_f_a_v3_switch_whose_agent_dies_with_its_host_is_recorded_from_the_new_registration(
        api, make_tenant, sim, server_auto_terminate):
    """GIVEN a v3.2 agent on spot whose env terminates the old instance after 300 s (its default), on a real host:
    the process dies with the instance it terminates, before its report and its mark; the client's auto-terminate
    on (the command says wait 300) or off (wait 0: v3.2 waits by its env all the same)
    WHEN the client forces a switch to eu-west-1b and the new instance's v3.2 agent registers 90 s after launch
    (without a mode)
    THEN one switch is recorded (from that registration, with the server's prices), the agent is on the new
    instance in spot mode (the command's), the command is completed on its one delivery, never run again, and
    nothing either agent sent is refused."""
    client_id, caller, fleet, old, itype = v3_fleet(api, make_tenant, sim, outlive=False)
    if not server_auto_terminate:
        status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
        assert status == 200, reply
    command = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    assert command["terminate_wait_seconds"] == (300 if server_auto_terminate else 0)
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    sim.run_until(sim.elapsed + 20 * 60)

    [switch] = old.switches
    assert "report" not in switch and old.marks == []  # it died first
    new = next(a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id)
    assert new.registration.status == 200 and new.agent_id == old.agent_id, new.registration.answer
    [recorded] = [r for r in SwitchTable.query(client_id) if r.agent_id == old.agent_id]
    assert (recorded.old_instance_id, recorded.new_instance_id, recorded.new_pool_id, recorded.new_mode) == (
        old.host.instance_id, new.host.instance_id, f"{itype}.eu-west-1b", "spot")
    assert recorded.inferred is True and recorded.hourly_savings is not None
    row = agent_row(client_id, old.agent_id)
    assert (row.instance_id, row.current_mode, row.status) == (new.host.instance_id, "spot", "online")
    stored = bootstrap.command_store().get(old.agent_id, command["id"])
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    assert [a.name for a in fleet.agents if a.executed] == [old.name] and len(fleet.ec2.launched) == 1
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.parametrize("server_auto_terminate", [True, False])
def test_g_a_first_v3_build_that_iterates_the_pending_commands_answer_runs_its_switch_once(
        api, make_tenant, sim, server_auto_terminate):
    """GIVEN one of the first v3.2 builds (agent-v2 spot_agent_production_v2_final.py, fee1d2b / 4cb32dc), which
    iterates the pending-commands answer as it is (an object would yield its keys: every poll would fail and no
    command would ever run), on a real host, its env terminating after 300 s, the client's auto-terminate on or off
    WHEN the client forces a switch to eu-west-1b
    THEN every poll is answered a list it can read, the switch runs once (on its one delivery), it is recorded (from
    the new instance's registration: the agent dies with its host), the command completed, nothing refused."""
    client_id, caller, fleet, old, itype = v3_fleet(api, make_tenant, sim, outlive=False, iterates_answer=True)
    if not server_auto_terminate:
        status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
        assert status == 200, reply
    command = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    sim.run_until(sim.elapsed + 20 * 60)

    assert [a.poll_errors for a in fleet.agents if a.poll_errors] == []
    polls = [c for c in fleet.calls if c.path.endswith("/pending-commands")]
    assert polls and all(isinstance(c.answer, list) for c in polls), brief(polls[:1])
    [switch] = old.switches
    new = next(a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id)
    assert new.registration.status == 200 and new.agent_id == old.agent_id, new.registration.answer
    [recorded] = [r for r in SwitchTable.query(client_id) if r.agent_id == old.agent_id]
    assert (recorded.new_instance_id, recorded.new_pool_id) == (new.host.instance_id, f"{itype}.eu-west-1b")
    stored = bootstrap.command_store().get(old.agent_id, command["id"])
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    assert [a.name for a in fleet.agents if a.executed] == [old.name] and len(fleet.ec2.launched) == 1
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


def test_h_a_v3_switch_that_first_waits_for_its_snapshot_is_recorded_from_the_new_registration(
        api, make_tenant, sim):
    """GIVEN the v3.2 build that waits for its root-volume snapshot to complete before it launches (agent-v2
    ``backend/spot_agent_production_v2_final.py`` at ea15b23: 10 s polls, up to 600 s), on a real host, its env
    terminating after 300 s, the client's auto-terminate off (the command says wait 0, leased as a switch without
    a wait), the snapshot taking the waiter's worst case
    WHEN the client forces a switch to eu-west-1b: the replacement's agent registers ~690 s after the delivery,
    the health monitor sweeping leases every minute meanwhile, and the old agent dies with its host
    THEN the command was still leased when that registration came, so the switch is recorded from it and the
    command completed on its one delivery (not taken back, superseded and lost), nothing refused."""
    client_id, caller, fleet, old, itype = v3_fleet(api, make_tenant, sim, outlive=False, snapshot_wait=600)
    switch_without_wait_recorded_from_registration(client_id, caller, fleet, old, itype, sim)
