"""The early v4.0.0 builds of agent-v2's ``backend/spot_optimizer_agent.py`` (ec1c6dd, 0911657, ee5339a, 27bdcdf),
run unchanged, replayed against the real handlers on a simulated clock (``tests.e2e.legacy_v4_early``).

They register as "4.0.0" like the last v4, but terminate the old instance by their environment (like v3.2), report
a termination notice and a rebalance recommendation on every check, and (two of them) speak v3.2's heartbeat and
pricing shapes, ``current_mode`` at registration, IMDS's ``time`` for the termination time and an empty rebalance
body. The scheduled jobs run on their rates at the same simulated time.
"""

from __future__ import annotations

import pytest

from chalicelib import bootstrap
from chalicelib.tables.switches import SwitchTable
from tests.e2e.failover_support import state_of, wait_for
from tests.e2e.legacy_support import (
    agent_row,
    brief,
    deliveries,
    eu_fleet,
    force_switch,
    switch_without_wait_recorded_from_registration,
)
from tests.e2e.legacy_v4 import BOOT_S, COMMANDS_S, v4_on_us_spot
from tests.e2e.legacy_v4_early import BUILDS, early_kind

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

COMMITS = sorted(BUILDS)


def early_fleet(api, make_tenant, sim, commit: str, *, outlive: bool = False, **env):
    """An early-v4 agent of build ``commit`` (environment ``env``) on spot in eu-west-1a (``legacy_support.eu_fleet``)."""
    return eu_fleet(api, make_tenant, sim, early_kind(commit, **env), outlive=outlive)


@pytest.mark.parametrize("commit", COMMITS)
def test_a_each_early_build_registers_and_reports_and_is_answered_2xx(api, make_tenant, sim, commit):
    """GIVEN an early-v4 agent of each build on spot WHEN it runs for 70 minutes (heartbeats, config, pricing
    reports in its build's shape, command polls, its hourly cleanup report) THEN every call is answered 2xx, the
    agent is online on its instance in spot mode (ec1c6dd names it ``current_mode``: learnt from its pricing report),
    and each pricing report stored its three pools."""
    client_id, _, fleet, agent, itype = early_fleet(api, make_tenant, sim, commit)
    sim.run_until(70 * 60)

    row = agent_row(client_id, agent.agent_id)
    assert (row.instance_id, row.current_mode, row.current_pool_id, row.status, row.agent_version) == (
        agent.host.instance_id, "spot", f"{itype}.eu-west-1a", "online", "4.0.0")
    pricing = [c for c in fleet.calls if c.path.endswith("/pricing-report")]
    assert len(pricing) == 15 and all(c.answer["pools"] == 3 for c in pricing), brief(pricing[:1])
    assert [c.status for c in fleet.calls if c.path.endswith("/cleanup-report")] == [200, 200]
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.parametrize("server_auto_terminate", [True, False])
@pytest.mark.parametrize("commit", COMMITS)
def test_b_a_switch_whose_early_agent_dies_with_its_host_is_recorded_from_the_new_registration(
        api, make_tenant, sim, commit, server_auto_terminate):
    """GIVEN an early-v4 agent on spot whose env terminates the old instance after 300 s (its default), on a real
    host: it dies with the instance it terminates, before its report and its result; the client's auto-terminate on
    (the command says wait 300) or off (wait 0: the early builds never read it and wait by their env all the same)
    WHEN the client forces a switch to eu-west-1b (three builds first make an AMI: 300 s) and the new instance's
    agent registers 90 s after launch
    THEN one switch is recorded (from that registration, with the server's prices), the agent is on the new
    instance in spot mode, the command is completed on its one delivery, never run again, and nothing either
    agent sent is refused."""
    client_id, caller, fleet, old, itype = early_fleet(api, make_tenant, sim, commit)
    if not server_auto_terminate:
        status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
        assert status == 200, reply
    command = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    assert command["terminate_wait_seconds"] == (300 if server_auto_terminate else 0)
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    sim.run_until(sim.elapsed + 20 * 60)

    [switch] = old.switches
    assert "report" not in switch and "executed" not in switch  # it died first
    assert fleet.ec2.terminated == [old.host.instance_id]
    new = next(a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id)
    assert new.registration.status == 200 and new.agent_id == old.agent_id, new.registration.answer
    recorded = [r for r in SwitchTable.query(client_id) if r.agent_id == old.agent_id]
    assert [(r.old_instance_id, r.new_instance_id, r.new_pool_id, r.new_mode) for r in recorded] == [
        (old.host.instance_id, new.host.instance_id, f"{itype}.eu-west-1b", "spot")]
    assert recorded[0].inferred is True and recorded[0].hourly_savings is not None
    row = agent_row(client_id, old.agent_id)
    assert (row.instance_id, row.current_mode, row.status) == (new.host.instance_id, "spot", "online")
    stored = bootstrap.command_store().get(old.agent_id, command["id"])
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    assert [a.name for a in fleet.agents if a.executed] == [old.name] and len(fleet.ec2.launched) == 1
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.parametrize("server_auto_terminate", [True, False])
def test_c_an_early_switch_that_reports_after_its_host_is_gone_is_recorded_once(
        api, make_tenant, sim, server_auto_terminate):
    """GIVEN an early-v4 agent (ee5339a) whose process outlives the instance it terminates (a harness's), its env
    terminating after 300 s, its AMI taking the waiter's worst case (600 s), the client's auto-terminate on or off
    WHEN it executes a forced switch and reports, then posts its result, ~25 min after the delivery (past the lease
    of a switch without a wait, 1,320 s, when the client's auto-terminate is off: the health monitor sweeps leases
    every minute meanwhile)
    THEN the switch is recorded once (the report replaces the one recorded at the new agent's registration), the
    command ends completed, executed by one agent only, and every call is answered 2xx."""
    client_id, caller, fleet, old, itype = early_fleet(api, make_tenant, sim, "ee5339a", outlive=True, ami_s=600)
    if not server_auto_terminate:
        status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
        assert status == 200, reply
    command = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    sim.run_until(sim.elapsed + 20 * 60)

    [switch] = old.switches
    report, executed = switch["report"], switch["executed"]
    assert report.status == 200 and report.answer["duplicate"] is False, report.answer
    assert executed.status == 200 and executed.at - deliveries(fleet, command["id"])[0][1] > 1320, executed.answer
    recorded = [r for r in SwitchTable.query(client_id) if r.agent_id == old.agent_id]
    assert [(r.new_instance_id, r.snapshot_used, r.inferred) for r in recorded] == [
        (switch["new_host"].instance_id, True, None)]
    stored = bootstrap.command_store().get(old.agent_id, command["id"])
    assert (stored.status.value, stored.success) == ("completed", True), stored
    assert [a.name for a in fleet.agents if a.executed] == [old.name] and len(fleet.ec2.launched) == 1
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.usefixtures("failover_machine")
@pytest.mark.parametrize("commit", ["0911657", "27bdcdf"])
def test_d_a_termination_notice_reported_every_5_s_starts_one_failover(api, make_tenant, sim, commit):
    """GIVEN an early-v4 agent in auto-switch mode on a real spot instance (moto EC2, us-east-1a)
    WHEN IMDS shows a termination notice for t=178: the build reports it with termination-imminent on every 5 s
    check until its host is gone (0911657 sends IMDS's ``action`` and ``time``, 27bdcdf ``termination_time``),
    never calling create-emergency-replica; the replacement's agent registers 90 s after the failover launched it
    THEN every report is answered 2xx, never asking the agent to launch a replica itself
    (``create_emergency_replica``); one interruption event records the notice's termination time and resolves
    onto the replacement, on which the agent runs on as the same agent."""
    client_id, caller, fleet, old, primary, _ = v4_on_us_spot(api, make_tenant, sim, kind=early_kind(commit))
    sim.run_until(58)
    agent_id = old.agent_id
    old.termination_notice = sim.at(58 + 120)
    sim.run_until(61)
    [first] = old.termination_reports
    assert first.status == 202 and first.answer["action"] == "failover_started", first.answer
    assert wait_for(first.answer["interruption_id"])["status"] == "SUCCEEDED"
    replacement = agent_row(client_id, agent_id).instance_id
    assert replacement != primary
    new = fleet.start_agent(fleet.ec2.host(replacement), old.logical_agent_id, at=60 + BOOT_S)
    sim.run_until(178)
    old.running = False  # AWS reclaims the host
    sim.run_until(20 * 60)

    assert len(old.termination_reports) >= 20 and all(c.ok for c in old.termination_reports), \
        brief(old.termination_reports[-2:])
    assert old.replicas_asked == []
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    [event] = listing["interruptions"]
    assert event["status"] == "resolved" and event["new_instance_id"] == replacement, event
    assert event["termination_time"] == old.termination_notice.strftime("%Y-%m-%dT%H:%M:%SZ"), event
    assert state_of(primary) == "terminated" and state_of(replacement) == "running"
    assert new.registration.status == 200 and new.agent_id == agent_id, new.registration.answer
    row = agent_row(client_id, agent_id)
    assert (row.instance_id, row.status) == (replacement, "online")
    assert old.executed == [] and new.executed == []
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.parametrize("commit", ["0911657", "ee5339a"])
def test_e_a_rebalance_recommendation_reported_every_30_s_is_one_signal(api, make_tenant, sim, commit):
    """GIVEN an early-v4 agent on spot WHEN IMDS serves a rebalance recommendation for 20 minutes and the build
    reports it on every 30 s check (0911657 with an empty body, ee5339a with ``instance_id`` and ``detected_at``)
    THEN every report is answered 200, and they make one interruption event per 15-minute signal window (the
    reports within it join the event that claimed it: one or two events over 20 minutes), not one per report."""
    client_id, caller, fleet, agent, _ = early_fleet(api, make_tenant, sim, commit)
    agent.rebalance_notice = sim.now
    sim.run_until(sim.elapsed + 20 * 60)
    agent.rebalance_notice = None

    assert len(agent.rebalance_calls) >= 39 and all(c.status == 200 for c in agent.rebalance_calls), \
        brief(agent.rebalance_calls[:2])
    status, listing = caller.get(f"/api/agents/{agent.agent_id}/interruptions")
    assert status == 200, listing
    events = [e["signal_type"] for e in listing["interruptions"]]
    assert events in (["rebalance-recommendation"], ["rebalance-recommendation"] * 2), listing
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


def test_f_an_early_switch_whose_ami_takes_the_waiters_worst_case_is_recorded_from_the_new_registration(
        api, make_tenant, sim):
    """GIVEN an early-v4 agent that makes an AMI of the old instance before it launches (ee5339a), the AMI taking
    the waiter's worst case (600 s), on a real host, its env terminating after 300 s, the client's auto-terminate off
    (the command says wait 0, leased as a switch without a wait)
    WHEN the client forces a switch to eu-west-1b: the replacement's agent registers ~690 s after the delivery,
    the health monitor sweeping leases every minute meanwhile, and the old agent dies with its host
    THEN the command was still leased when that registration came, so the switch is recorded from it and the
    command completed on its one delivery (not taken back, superseded and lost), nothing refused."""
    client_id, caller, fleet, old, itype = early_fleet(api, make_tenant, sim, "ee5339a", ami_s=600)
    switch_without_wait_recorded_from_registration(client_id, caller, fleet, old, itype, sim)
