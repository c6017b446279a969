"""The legacy v4.0.0 agent, run unchanged, replayed against the real handlers on a simulated clock.

Each test plays v4's documented calls and timings (``tests.e2e.legacy_v4``) step by step: heartbeat
every 30 s, config every 60 s, pricing every 300 s, pending commands every 15 s (only the first command
is executed; the command thread blocks while it runs), replica polling every 30 s, the termination
check every 5 s; the scheduled jobs run on their EventBridge rates at the same simulated time. Every
handler reads ``chalicelib.clock.now``, which is the simulation's clock.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from chalicelib import bootstrap, failover, replicas
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable
from chalicelib.tables.switches import SwitchTable
from tests.conftest import new_instance_id
from tests.e2e.failover_support import deliver, state_of, wait_for, warning
from tests.e2e.legacy_v4 import (
    failover_by_eventbridge,
    mid_v4_kind,
    BOOT_S,
    COMMANDS_S,
    REPLICA_POLL_S,
    FakeEc2,
    Fleet,
    Host,
    Market,
    US,
    schedule,
    unique_type,
    v4_on_us_spot,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

EU = "eu-west-1"




def agent_row(client_id: str, agent_id: str) -> AgentTable:
    return AgentTable.get(client_id, agent_id, consistent_read=True)


def brief(calls) -> list[tuple]:
    return [(c.at, c.agent, c.method, c.path, c.status, c.answer) for c in calls]


def ec2_tagged(key: str, value: str) -> list[dict]:
    reply = boto3.client("ec2", region_name=US).describe_instances(
        Filters=[{"Name": f"tag:{key}", "Values": [value]}])
    return [i for r in reply["Reservations"] for i in r["Instances"]]


@dataclass
class ForcedSwitch:
    """A v4 agent's forced switch played to its end, then 30 more minutes (``play_forced_switch``)."""

    client_id: str
    caller: Any
    fleet: Fleet
    old: Any
    itype: str
    command_id: str
    switch: dict
    new: Any
    delivered_at: float


def play_forced_switch(api, make_tenant, sim, *, outlive: bool, quotes: dict | None = None) -> ForcedSwitch:
    """A v4 agent on spot in eu-west-1a (auto-terminate on, wait 300 s) reporting prices, the health monitor on
    its rate; the client forces a switch to eu-west-1b and v4 plays it with its worst-case timings (running
    after 290 s, 2 s traffic switch, the 300 s wait), the new instance's agent registering 90 s after launch; then
    the old agent dies with its host (``outlive`` False) or waits for ``terminated`` (290 s) and reports."""
    client_id, caller = make_tenant()
    itype = unique_type()
    market = Market(on_demand=0.192, spot={"eu-west-1a": 0.040, "eu-west-1b": 0.031}, switch_quotes=quotes or {})
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), market, processes_outlive_hosts=outlive)
    old = fleet.start_agent(Host(new_instance_id(), itype, EU, "eu-west-1a"), f"web-{uuid.uuid4().hex[:8]}")
    schedule(sim, api, "health-monitor", first=7)
    sim.run_until(100)
    assert old.registration.status == 200, old.registration.answer
    status, queued = caller.post(f"/api/client/instances/{old.host.instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 201, queued
    assert queued["command"]["terminate_wait_seconds"] == 300
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    assert not old.running and len(old.switches) == 1, brief(fleet.calls[-5:])
    switch = old.switches[0]
    sim.run_until(sim.elapsed + 30 * 60)
    new = next(a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id)
    assert new.registration.status == 200 and new.agent_id == old.agent_id, new.registration.answer
    delivered_at = old.polls[-1][0]  # the poll that returned the command; the thread blocked after it
    return ForcedSwitch(client_id, caller, fleet, old, itype, queued["command"]["id"], switch, new, delivered_at)


def assert_recorded_once(run: ForcedSwitch) -> SwitchTable:
    """One switch old → new instance into eu-west-1b with its savings; the agent on the new instance, online;
    the command completed on its first attempt, delivered to one poll of the old agent only (heartbeat answers
    do not count: v4 ignores them), never again to either agent; nothing refused; no offline/online flap (the
    old agent's final bare ``offline`` heartbeat) and no timed-out command notified. Returns the switch row."""
    agent_id, old = run.old.agent_id, run.old
    rows = [r for r in SwitchTable.query(run.client_id) if r.agent_id == agent_id]
    assert len(rows) == 1, [(r.old_instance_id, r.new_instance_id) for r in rows]
    [row] = rows
    assert (row.old_instance_id, row.new_instance_id) == (old.host.instance_id, run.new.host.instance_id)
    assert row.hourly_savings is not None and row.new_pool_id == f"{run.itype}.eu-west-1b", row.attribute_values
    agent = agent_row(run.client_id, agent_id)
    assert (agent.instance_id, agent.current_pool_id, agent.status) == (
        run.new.host.instance_id, f"{run.itype}.eu-west-1b", "online")
    stored = bootstrap.command_store().get(agent_id, run.command_id)
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    deliveries = [(a.name, t) for a in run.fleet.agents for t, ids in a.polls if run.command_id in ids]
    assert deliveries == [(old.name, run.delivered_at)], deliveries
    assert [a.name for a in run.fleet.agents if a.executed] == [old.name]
    assert bootstrap.command_store().active_for_agent(agent_id, 50) == []
    assert run.fleet.failed_calls() == [], brief(run.fleet.failed_calls())
    assert [a.replicas_terminated for a in run.fleet.agents if a.replicas_terminated] == []  # v4 never told to
    status, notes = run.caller.get("/api/notifications")
    assert [(n["kind"], n["message"]) for n in notes["notifications"]
            if n["kind"] in ("agent_status", "command_timed_out")] == []
    return row


def test_a_forced_switch_whose_agent_dies_with_its_host_is_recorded_once_from_the_new_registration(
        api, make_tenant, sim):
    """GIVEN a v4 agent playing a forced switch with a 300 s terminate wait (``play_forced_switch``) on a real
    host: it terminates the old instance, its own host, and dies with it (v4's code would report after the wait
    for ``terminated``, which it never sees: only the bare final ``offline`` heartbeat of its SIGTERM goes out)
    THEN exactly one switch is recorded, from the new instance's registration (initiated at the delivery, ready
    at the registration, savings from the server's prices), and everything ``assert_recorded_once`` checks."""
    run = play_forced_switch(api, make_tenant, sim, outlive=False)

    assert [h.instance_id for h in run.fleet.ec2.launched][:1] == [run.new.host.instance_id]
    assert run.fleet.ec2.terminated[:1] == [run.old.host.instance_id]
    assert "report" not in run.switch and "executed" not in run.switch
    assert [c for c in run.fleet.calls if c.path.endswith(("/switch-report", "/executed"))] == []
    row = assert_recorded_once(run)
    assert (row.command_id, row.trigger, row.old_mode, row.new_mode) == (run.command_id, "manual", "spot", "spot")
    assert row.initiated_at == sim.at(run.delivered_at) and row.ready_at == sim.at(run.new.registration.at)
    assert row.inferred is True


def test_a_forced_switch_whose_agent_outlives_its_host_reports_late_and_is_still_recorded_once(
        api, make_tenant, sim):
    """GIVEN a v4 agent playing a forced switch with a 300 s terminate wait whose process outlives the instance it
    terminates (a harness or container), so that its report (with an implausible ``prices.old_spot``) and its
    result arrive ~15 min after the lease began, long after the new agent registered
    THEN the report replaces the switch recorded at the registration (answered 200, not a duplicate: its own
    timings), the late result is accepted (200), and everything ``assert_recorded_once`` checks."""
    run = play_forced_switch(api, make_tenant, sim, outlive=True,
                             quotes={"old_spot": 0.00001})  # below the valve's plausible 0.001 $/h
    report, executed = run.switch["report"], run.switch["executed"]
    assert report.status == 200 and report.answer["duplicate"] is False, (report.status, report.answer)
    assert "prices.old_spot" in json.dumps(report.answer["warnings"]), report.answer
    assert executed.status == 200 and executed.at - run.delivered_at >= 850, (executed.status, executed.answer)
    assert run.old.stopped_at == executed.at
    row = assert_recorded_once(run)
    assert row.inferred is None and row.old_terminated_at is not None and row.traffic_switched_at is not None
    status, notes = run.caller.get("/api/notifications")
    # nothing was kept: the old agent was heard only during its terminate wait and its waiter (the real v4 run in
    # local mode got a "commands_held ... left and kept running" warning here)
    assert [n["message"] for n in notes["notifications"] if n["kind"] == "commands_held"] == []


@pytest.mark.usefixtures("failover_machine")
@pytest.mark.parametrize("unnamed", [False, True], ids=["logical-id", "no-LOGICAL_AGENT_ID"])
def test_b_termination_notice_is_handled_once_and_the_replacements_v4_agent_takes_over(api, make_tenant, sim,
                                                                                          unnamed):
    """GIVEN a v4 agent in auto-switch mode on a real spot instance (moto EC2, us-east-1a) with prices
    WHEN IMDS shows a termination notice: v4's 5 s check calls create-emergency-replica, then
    termination-imminent, and stops itself on success; the replacement's v4 agent boots 90 s later and
    registers under the same logical id; the health monitor and the replica coordinator keep running
    THEN the notice starts one failover (the second call is a duplicate), one interruption event is
    recorded and resolved, the agent ends on the replacement (the old instance terminated, no other
    instance launched for it), and the replacement's agent registers as the same agent and runs on
    (every call answered 2xx, no switch executed), with no command left that v4 cannot read (it skips a
    command without ``target_mode``, as the workflow's promote / prepare_shutdown are). ``unnamed``: the
    replacement's env has no LOGICAL_AGENT_ID, so its v4 names its own instance id: the same agent all the same.
    """
    client_id, caller, fleet, old, primary, itype = v4_on_us_spot(api, make_tenant, sim)
    ec2, logical = fleet.ec2, old.logical_agent_id
    sim.run_until(58)
    agent_id = old.agent_id
    assert agent_row(client_id, agent_id).config.auto_switch_enabled is True
    # WHEN the two-minute notice appears; v4's check at t=60 reports it
    old.termination_notice = sim.at(58 + 120)
    sim.run_until(61)
    emergency, imminent = [c for c in fleet.calls if c.path.endswith(("/create-emergency-replica",
                                                                       "/termination-imminent"))]
    assert emergency.status == 201, emergency.answer
    workflow = emergency.answer["workflow"]
    assert workflow["action"] == "failover_started", emergency.answer
    assert imminent.ok and imminent.answer["action"] == "duplicate", imminent.answer
    assert imminent.answer["interruption_id"] == workflow["interruption_id"]
    assert not old.running and old.stopped_at == 60
    # the workflow runs (real time; the simulated clock stands at t=61 meanwhile)
    assert wait_for(workflow["interruption_id"])["status"] == "SUCCEEDED"
    replacement = agent_row(client_id, agent_id).instance_id
    assert replacement != primary
    # the replacement was launched at t=60; its v4 agent boots 90 s later, then 20 minutes pass
    new = fleet.start_agent(ec2.host(replacement), replacement if unnamed else logical, at=60 + BOOT_S)
    sim.run_until(60 + 20 * 60)

    # THEN one interruption event, resolved onto the replacement
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    assert status == 200, listing
    [event] = listing["interruptions"]
    assert event["interruption_id"] == workflow["interruption_id"] and event["status"] == "resolved", event
    assert event["new_instance_id"] == replacement and event["success"] is True
    # the agent ends on the replacement; the old instance is gone; nothing else was launched for it
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id == replacement and agent.status == "online"
    assert state_of(primary) == "terminated" and state_of(replacement) == "running"
    launched = [i["InstanceId"] for i in ec2_tagged("AgentId", agent_id)
                if i["State"]["Name"] not in ("shutting-down", "terminated")]
    assert launched == [replacement], launched
    # the replacement's v4 agent registered as the same agent and runs on
    assert new.registration.status == 200 and new.agent_id == agent_id, new.registration.answer
    assert new.running and new.executed == [] and old.executed == []
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to
    # and v4 is left with no command it cannot execute: it skips a command without target_mode (the
    # workflow's promote / prepare_shutdown), so none may wait in its queue or time out into a warning
    left = [(c.command_type.value, c.instance_id, c.status.value, c.attempts)
            for c in bootstrap.command_store().history(agent_id, 20)
            if c.status.value in ("pending", "executing", "timed_out")]
    assert left == [], (left, f"v4 skipped {len(new.skipped)} deliveries of "
                              f"{sorted({c['command_type'] for c in new.skipped})}")


@pytest.mark.usefixtures("failover_machine")
def test_b_when_eventbridge_delivers_the_notice_first_v4s_calls_launch_no_second_instance(
        api, make_tenant, sim, monkeypatch):
    """GIVEN a v4 agent in auto-switch mode on a real spot instance (moto EC2, us-east-1a) with prices,
    and the product's EventBridge rule, which delivers the same two-minute warning to the sentinel
    WHEN the warning reaches the sentinel first (the workflow plans and launches a replacement, which is
    still booting) and v4's 5 s check then calls create-emergency-replica and termination-imminent
    THEN both calls join the running failover: one interruption event, the agent ends on the workflow's
    replacement, whose v4 agent registers as the same agent, and no second instance is launched for the
    one notice.
    """
    booting, release = threading.Event(), threading.Event()
    real_check = failover.check_ready

    def still_booting(state):
        booting.set()
        release.wait(60)
        return real_check(state)

    monkeypatch.setattr(failover, "check_ready", still_booting)
    client_id, caller, fleet, old, primary, _ = v4_on_us_spot(api, make_tenant, sim)
    ec2, logical = fleet.ec2, old.logical_agent_id
    sim.run_until(58)
    agent_id = old.agent_id
    # WHEN the warning arrives through EventBridge at t=58 and IMDS shows it to v4's check at t=60
    event = warning(primary)
    event["time"] = sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    old.termination_notice = sim.at(58 + 120)
    try:
        started = deliver(api, "sentinel-interruption", event)
        assert started["action"] == "failover_started", started
        assert booting.wait(30), "the workflow did not reach its readiness check"
        sim.run_until(61)
    finally:
        release.set()
    assert wait_for(started["execution_arn"])["status"] == "SUCCEEDED"
    imminent = next(c for c in fleet.calls if c.path.endswith("/termination-imminent"))
    assert imminent.ok and imminent.answer["interruption_id"] == started["interruption_id"], imminent.answer
    assert not old.running
    replacement = agent_row(client_id, agent_id).instance_id
    new = fleet.start_agent(ec2.host(replacement), logical, at=58 + BOOT_S)
    sim.run_until(20 * 60)

    # THEN one event, the agent on the workflow's replacement, its v4 agent registered as the same agent
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    assert [e["interruption_id"] for e in listing["interruptions"]] == [started["interruption_id"]], listing
    assert listing["interruptions"][0]["new_instance_id"] == replacement != primary
    assert new.registration.status == 200 and new.agent_id == agent_id, new.registration.answer
    # and one instance launched for the one notice
    emergency = next(c for c in fleet.calls if c.path.endswith("/create-emergency-replica"))
    running = [i["InstanceId"] for i in ec2_tagged("AgentId", agent_id)
               if i["State"]["Name"] not in ("shutting-down", "terminated")]
    assert running == [replacement], (running, emergency.status, emergency.answer,
                                      [(r.replica_id, r.status.value, r.instance_id)
                                       for r in replica_repo.for_agent(agent_id)])


@pytest.mark.usefixtures("failover_machine")
def test_b_when_the_failover_ends_before_v4_sees_the_notice_its_calls_join_it_and_v4_stops(api, make_tenant, sim):
    """GIVEN a v4 agent in auto-switch mode on a real spot instance (moto EC2, us-east-1a) with prices
    WHEN EventBridge's warning reaches the sentinel and its failover has already made the replacement the agent's
    primary (a fast hand-over: seen with the real v4 agent in local mode, 3 s between the event and v4's IMDS
    check) before v4's 5 s check calls create-emergency-replica and termination-imminent
    THEN both calls join that failover: termination-imminent answers ``success`` with the same interruption and
    the replacement (the real v4 otherwise logs "Failover failed" and keeps running on the doomed host), v4 stops,
    and the one notice stays one interruption event with one replacement.
    """
    client_id, caller, fleet, old, primary, _ = v4_on_us_spot(api, make_tenant, sim)
    sim.run_until(58)
    agent_id = old.agent_id
    started, replacement = failover_by_eventbridge(api, sim, client_id, agent_id, primary)

    # WHEN IMDS shows the notice to v4's check only now (t=60)
    old.termination_notice = sim.at(58 + 120)
    sim.run_until(61)

    emergency = next(c for c in fleet.calls if c.path.endswith("/create-emergency-replica"))
    imminent = next(c for c in fleet.calls if c.path.endswith("/termination-imminent"))
    assert emergency.ok and emergency.answer["created"] is False, emergency.answer
    assert imminent.ok and imminent.answer["success"] is True, imminent.answer
    assert imminent.answer["action"] == "duplicate", imminent.answer
    assert imminent.answer["interruption_id"] == started["interruption_id"], imminent.answer
    assert imminent.answer["new_instance_id"] == replacement, imminent.answer
    assert not old.running  # v4 stops on success
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    assert [e["interruption_id"] for e in listing["interruptions"]] == [started["interruption_id"]], listing
    running = [i["InstanceId"] for i in ec2_tagged("AgentId", agent_id)
               if i["State"]["Name"] not in ("shutting-down", "terminated")]
    assert running == [replacement], running


def test_b_a_notice_of_an_instance_a_switch_left_is_still_ignored(api, make_tenant, sim):
    """GIVEN a v4 agent whose instance was replaced by a switch, not by a failover (no claim on its loss)
    WHEN a termination notice of the left instance comes from the agent
    THEN it is ignored as before (``success`` false): only a failover of that very instance is joined."""
    from chalicelib import sentinel
    from chalicelib.clock import now as clock_now
    from components.sentinel import Signal, SignalKind, SignalSource

    client_id, caller, fleet, v4, primary, itype = v4_on_us_spot(api, make_tenant, sim)
    moved = new_instance_id()
    status, reply = caller.post(f"/api/agents/{v4.agent_id}/switch-report", {
        "old_instance": {"instance_id": primary, "instance_type": itype, "region": US, "az": "us-east-1a",
                         "mode": "spot"},
        "new_instance": {"instance_id": moved, "instance_type": itype, "region": US, "az": "us-east-1b",
                         "mode": "spot"},
        "prices": {"on_demand": 0.192}, "timing": {}, "trigger": "manual"})
    assert status == 200, reply
    result = sentinel.handle(Signal(SignalKind.TERMINATION, primary, clock_now(), SignalSource.AGENT, region=US),
                             clock_now())
    assert result == {"action": "ignored", "reason": "instance is no longer the agent's primary"}, result


def _manual_replica_agent(api, make_tenant, sim, kind=None):
    """A v4 agent (or ``kind``) on a real spot instance (us-east-1a) whose client turns manual-replica mode on at
    t=20."""
    client_id, caller, fleet, v4, primary, itype = v4_on_us_spot(api, make_tenant, sim, kind=kind)
    status, reply = caller.post(f"/api/client/agents/{v4.agent_id}/config", {"manual_replica_enabled": True})
    assert status == 200 and reply["manual_replica_enabled"] is True, reply
    return client_id, fleet, v4, primary, itype


def _replica_polls(fleet):
    return [c for c in fleet.calls if c.method == "GET" and c.path.endswith("/replicas?status=launching")]


def test_c_manual_replica_standby_is_launched_by_the_server_and_v4_polling_finds_nothing_to_launch(
        api, make_tenant, sim):
    """GIVEN a v4 agent whose client turns manual-replica mode on
    WHEN the replica coordinator runs every minute and v4 polls ``replicas?status=launching`` every 30 s
    THEN the product launches the standby itself (server-side, in another pool) and marks it ready once
    running: v4's polling never gets a replica to launch (each poll answers 200 with an empty list), v4
    launches no instance, no command reaches it, and exactly one standby exists.

    This is what a v4 agent sees of manual replicas in the product: the product never issues the legacy
    ``create_replica`` command, and the ``status=launching`` listing only offers a replica still waiting
    for an instance (see the next test for when that happens).
    """
    client_id, fleet, v4, primary, itype = _manual_replica_agent(api, make_tenant, sim)
    sim.run_until(10 * 60)

    polls = _replica_polls(fleet)
    assert len(polls) >= 19, brief(polls)
    assert all(c.status == 200 and c.answer["replicas"] == [] for c in polls), brief(polls)
    assert v4.replicas_launched == [] and fleet.ec2.launched == []
    [standby] = replica_repo.for_agent(v4.agent_id)
    assert standby.status.value == "ready" and standby.created_by == "replica-coordinator", standby
    assert standby.instance_id and state_of(standby.instance_id) == "running"
    assert standby.pool_id != f"{itype}.us-east-1a"
    assert agent_row(client_id, v4.agent_id).current_replica_id == standby.replica_id
    assert [i["InstanceId"] for i in ec2_tagged("AgentId", v4.agent_id)] == [standby.instance_id]
    assert all(ids == [] for _, ids in v4.polls) and v4.executed == v4.skipped == []
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to


@pytest.mark.parametrize("mid_build", [False, True], ids=["v4", "v4-mid"])
def test_c_when_the_server_cannot_launch_the_standby_v4_launches_it_and_it_is_recorded_once(
        api, make_tenant, sim, monkeypatch, mid_build):
    """GIVEN a v4 agent (or one of the mid 4.0.0 builds, which launch every offered replica on every poll) whose
    client turns manual-replica mode on, and EC2 throttles the coordinator's first launch (the standby stays
    ``launching`` with no instance)
    WHEN v4's next replica poll offers that replica: v4 launches a spot instance in the replica's AZ,
    PUTs it ``syncing``, waits for it to run and posts ``ready``; the coordinator keeps running
    THEN the standby ends ``ready`` with v4's instance id, recorded once: one replica, one instance
    tagged with it, no server launch besides the throttled one, and later polls offer nothing.
    """
    real_launch = ec2_adapter.launch
    attempts = []

    def throttled_once(spec):
        """The first launch of each replica is throttled (the coordinator also serves agents other tests left
        in the shared tables: counting all launches would throttle one of theirs instead)."""
        attempts.append(spec.replica_id)
        if attempts.count(spec.replica_id) == 1:
            raise ec2_adapter.TransientAwsError("RequestLimitExceeded: throttled")
        return real_launch(spec)

    monkeypatch.setattr(ec2_adapter, "launch", throttled_once)
    client_id, fleet, v4, primary, itype = _manual_replica_agent(api, make_tenant, sim,
                                                                 kind=mid_v4_kind() if mid_build else None)
    sim.run_until(10 * 60)

    [replica] = replica_repo.for_agent(v4.agent_id)
    offered = [(c.at, [r["id"] for r in c.answer["replicas"]]) for c in _replica_polls(fleet)
               if c.ok and c.answer["replicas"]]
    assert offered == [(60, [replica.replica_id])], offered
    [(replica_id, host)] = v4.replicas_launched
    assert replica_id == replica.replica_id and host.az == replica.az != "us-east-1a"
    put, ready = [c for c in fleet.calls if f"/replicas/{replica_id}" in c.path]
    assert (put.method, put.status, put.answer["status"]) == ("PUT", 200, "syncing"), put.answer
    assert (ready.status, ready.answer["status"]) == (200, "ready"), ready.answer
    stored = replica_repo.get(v4.agent_id, replica_id)
    assert (stored.status.value, stored.instance_id) == ("ready", host.instance_id), stored
    assert agent_row(client_id, v4.agent_id).current_replica_id == replica_id
    assert [i["InstanceId"] for i in ec2_tagged("ReplicaId", replica_id)] == [host.instance_id]
    assert attempts.count(replica_id) == 1  # the coordinator never launched it again
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to


GONE = ("shutting-down", "terminated")


def running(key: str, value: str) -> list[str]:
    return [i["InstanceId"] for i in ec2_tagged(key, value) if i["State"]["Name"] not in GONE]


def _server_launch_throttled_once(monkeypatch) -> list[str]:
    """The first server launch of each replica is throttled (``EC2 RequestLimitExceeded``): the standby stays
    ``launching`` with no instance and the server retries it. Returns the replica ids of every attempt."""
    real_launch = ec2_adapter.launch
    attempts: list[str] = []

    def throttled_once(spec):
        attempts.append(spec.replica_id)
        if attempts.count(spec.replica_id) == 1:
            raise ec2_adapter.TransientAwsError("RequestLimitExceeded: throttled")
        return real_launch(spec)

    monkeypatch.setattr(ec2_adapter, "launch", throttled_once)
    return attempts


def _while_v4_launches(monkeypatch, fleet, meanwhile) -> None:
    """``meanwhile(host)`` runs once, when v4's own RunInstances of an offered replica has returned and before its
    PUT: what the server does in the seconds v4's launch takes."""
    real_run, done = fleet.ec2.run_instances, []

    def run_instances(like, **kwargs):
        host = real_run(like, **kwargs)
        if not done:
            done.append(host)
            meanwhile(host)
        return host

    monkeypatch.setattr(fleet.ec2, "run_instances", run_instances)


@pytest.mark.parametrize("mid_build", [False, True], ids=["v4", "v4-mid"])
def test_c_when_the_servers_launch_attaches_while_v4_launches_the_standby_v4s_instance_is_kept_and_ours_terminated(
        api, make_tenant, sim, monkeypatch, mid_build):
    """GIVEN a v4 agent (or a mid 4.0.0 build) in manual-replica mode whose standby is ``launching`` with no instance
    while the server's launch of it is in flight (here: its first attempt throttled, the retry under way)
    WHEN v4's poll offers that standby, v4 launches an instance for it, and the server's launch attaches its own
    instance before v4's PUT arrives
    THEN v4's PUT is answered 200 (not 409 ``replica_instance_conflict``): the standby takes v4's instance (the
    agent's, ``own_launch`` false), the server's instance is terminated, and no instance is left running that
    nothing owns; v4 marks it ready and later polls offer nothing. Before, v4's instance ran on, owned by nothing
    (untagged by us, never cleaned up), next to the server's."""
    _server_launch_throttled_once(monkeypatch)
    client_id, fleet, v4, primary, itype = _manual_replica_agent(api, make_tenant, sim,
                                                                 kind=mid_v4_kind() if mid_build else None)
    ours: list[str] = []

    def server_attaches(_host):
        [row] = replica_repo.for_agent(v4.agent_id)
        assert row.instance_id is None, row  # what v4's poll was offered
        attached = replicas.launch(agent_repo.require(client_id, v4.agent_id), row, sim.now)
        assert attached.own_launch and attached.instance_id, attached
        ours.append(attached.instance_id)

    _while_v4_launches(monkeypatch, fleet, server_attaches)
    sim.run_until(10 * 60)

    [replica] = replica_repo.for_agent(v4.agent_id)
    [(replica_id, host)] = v4.replicas_launched
    assert replica_id == replica.replica_id and ours
    put, ready = [c for c in fleet.calls if f"/replicas/{replica_id}" in c.path]
    assert (put.method, put.status, put.answer.get("instance_id")) == ("PUT", 200, host.instance_id), put.answer
    assert (ready.status, ready.answer["status"]) == (200, "ready"), ready.answer
    stored = replica_repo.get(v4.agent_id, replica_id)
    assert (stored.status.value, stored.instance_id, stored.own_launch) == ("ready", host.instance_id, False)
    assert agent_row(client_id, v4.agent_id).current_replica_id == replica_id
    assert state_of(ours[0]) in GONE
    assert running("ReplicaId", replica_id) == [host.instance_id]
    assert running("AgentId", v4.agent_id) == []  # nothing of ours left running for it
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    offered = [c.at for c in _replica_polls(fleet) if c.ok and c.answer["replicas"]]
    assert offered == [60], offered


def test_c_when_v4s_put_attaches_while_the_servers_launch_is_in_flight_the_server_keeps_v4s_instance(
        api, make_tenant, sim, monkeypatch):
    """GIVEN a v4 agent in manual-replica mode whose standby is ``launching`` with no instance while the server's
    launch of it is in flight (it read the row before v4's poll)
    WHEN v4 launches an instance for the offered standby and PUTs it first, and the server's launch attaches after
    THEN the server's launch loses the attach: its own instance is terminated and v4's is adopted (one instance
    runs for the standby, v4's), every v4 call answered 2xx."""
    _server_launch_throttled_once(monkeypatch)
    client_id, fleet, v4, primary, itype = _manual_replica_agent(api, make_tenant, sim)
    read: list = []
    _while_v4_launches(monkeypatch, fleet, lambda _host: read.append(replica_repo.for_agent(v4.agent_id)[0]))
    sim.run_until(2 * REPLICA_POLL_S + 1)  # v4's poll at t=60 launched its instance and PUT it
    [(replica_id, host)] = v4.replicas_launched
    [stale] = read
    assert stale.instance_id is None and replica_repo.get(v4.agent_id, replica_id).instance_id == host.instance_id
    kept = replicas.launch(agent_repo.require(client_id, v4.agent_id), stale, sim.now)  # the server's, late
    assert kept.instance_id == host.instance_id and not kept.own_launch, kept
    sim.run_until(10 * 60)

    stored = replica_repo.get(v4.agent_id, replica_id)
    assert (stored.status.value, stored.instance_id) == ("ready", host.instance_id), stored
    assert running("ReplicaId", replica_id) == [host.instance_id]
    assert running("AgentId", v4.agent_id) == []
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.usefixtures("failover_machine")
def test_b_a_failovers_replacement_still_launching_is_never_offered_to_v4s_replica_poll(
        api, make_tenant, sim, monkeypatch):
    """GIVEN a v4 agent in auto-switch mode on a real spot instance, and EventBridge's two-minute warning for it
    WHEN the failover's replacement row is ``launching`` with no instance (its RunInstances in flight) while v4's
    replica poll runs twice
    THEN neither poll offers the replacement (the workflow launches and retries it; v4 runs on the host being
    lost), v4 launches nothing, and the failover ends on its one replacement. Before, v4 launched a second one."""
    in_flight, release = threading.Event(), threading.Event()
    real_launch = ec2_adapter.launch

    def slow(spec):
        if spec.replica_id.startswith("emg-"):
            in_flight.set()
            release.wait(60)
        return real_launch(spec)

    monkeypatch.setattr(ec2_adapter, "launch", slow)
    client_id, caller, fleet, v4, primary, _ = v4_on_us_spot(api, make_tenant, sim)
    sim.run_until(58)
    event = warning(primary)
    event["time"] = sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        started = deliver(api, "sentinel-interruption", event)
        assert started["action"] == "failover_started", started
        assert in_flight.wait(30), "the workflow did not reach its launch"
        [row] = [r for r in replica_repo.for_agent(v4.agent_id) if r.failover_replacement]
        assert (row.status.value, row.instance_id) == ("launching", None), row
        sim.run_until(58 + 2 * REPLICA_POLL_S + 1)
    finally:
        release.set()
    assert wait_for(started["execution_arn"])["status"] == "SUCCEEDED"
    polls = [c for c in _replica_polls(fleet) if c.at >= 58]
    assert [(c.status, c.answer["replicas"]) for c in polls] == [(200, [])] * len(polls), brief(polls)
    assert len(polls) >= 2 and v4.replicas_launched == [] and fleet.ec2.launched == []
    replacement = agent_row(client_id, v4.agent_id).instance_id
    assert running("AgentId", v4.agent_id) == [replacement]
