"""The legacy v4.0.0 agent, run unchanged, replayed against the real handlers on a simulated clock.

Each test plays v4's documented calls and timings (``tests.e2e.legacy_v4``) step by step: heartbeat
every 30 s, config every 60 s, pricing every 300 s, pending commands every 15 s (only the first command
is executed; the command thread blocks while it runs), replica polling every 30 s, the termination
check every 5 s; the scheduled jobs run on their EventBridge rates at the same simulated time. Every
handler reads ``chalicelib.clock.now``, which is the simulation's clock.
"""

from __future__ import annotations

import threading
import uuid

import boto3
import pytest

from chalicelib import bootstrap, failover
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable
from chalicelib.tables.switches import SwitchTable
from tests.conftest import new_instance_id
from tests.e2e.failover_support import deliver, launch_primary, state_of, wait_for, warning
from tests.e2e.legacy_v4 import (
    BOOT_S,
    COMMANDS_S,
    FakeEc2,
    Fleet,
    Host,
    Market,
    US,
    US_PRICES,
    MotoEc2,
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


def test_a_forced_switch_whose_agent_dies_with_its_host_is_recorded_once_from_the_new_registration(
        api, make_tenant, sim):
    """GIVEN a v4 agent on a spot instance in eu-west-1a (auto-terminate on, wait 300 s), reporting prices
    WHEN the client forces a switch to eu-west-1b and the agent executes it with v4's worst-case timings
    (running after 290 s, 2 s traffic switch, 300 s wait), while the new instance's agent boots 90 s after
    launch and registers under the same logical id; then the old agent terminates the old instance, its own
    host, and dies with it (v4's code would report after the wait for ``terminated``, which it never sees: only
    the bare final ``offline`` heartbeat of its SIGTERM shutdown goes out); the health monitor runs every minute
    THEN exactly one switch is recorded, from the new instance's registration, with its savings from the
    server's prices, the agent is on the new instance, the command is completed on its first attempt and was
    delivered to one poll of the old agent only, and after 30 more minutes of the new agent polling nothing is
    left in the queue; the old agent's final ``offline`` heartbeat does not flap the agent offline.
    """
    client_id, caller = make_tenant()
    itype = unique_type()
    market = Market(on_demand=0.192, spot={"eu-west-1a": 0.040, "eu-west-1b": 0.031})
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), market)
    old_host = Host(new_instance_id(), itype, EU, "eu-west-1a")
    old = fleet.start_agent(old_host, f"web-{uuid.uuid4().hex[:8]}")
    schedule(sim, api, "health-monitor", first=7)

    # GIVEN the agent has registered, heartbeated and reported prices for a while
    sim.run_until(100)
    assert old.registration.status == 200, old.registration.answer
    agent_id = old.agent_id
    # WHEN the client forces the switch
    status, queued = caller.post(f"/api/client/instances/{old_host.instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 201, queued
    command_id = queued["command"]["id"]
    assert queued["command"]["terminate_wait_seconds"] == 300
    # ... and v4 plays the switch to its end (the old agent dies with its host), then 30 more minutes
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    assert not old.running and len(old.switches) == 1, brief(fleet.calls[-5:])
    switch = old.switches[0]
    new_host = switch["new_host"]
    sequence_end = sim.elapsed
    sim.run_until(sequence_end + 30 * 60)

    # the harness played what v4 does: one launch, the replacement's agent registered as the same agent, the
    # old instance terminated, and neither a switch report nor a result from the old agent
    assert [h.instance_id for h in fleet.ec2.launched][:1] == [new_host.instance_id]
    assert fleet.ec2.terminated[:1] == [old_host.instance_id]
    new = next(a for a in fleet.agents if a.host.instance_id == new_host.instance_id)
    assert new.registration.status == 200 and new.agent_id == agent_id, new.registration.answer
    assert "report" not in switch and "executed" not in switch
    assert [c for c in fleet.calls if c.path.endswith(("/switch-report", "/executed"))] == []
    delivered_at = old.polls[-1][0]  # the poll that returned the command; the thread blocked after it

    # THEN 1. exactly one switch, its savings computed from the server's prices
    rows = [r for r in SwitchTable.query(client_id) if r.agent_id == agent_id]
    assert len(rows) == 1, [(r.old_instance_id, r.new_instance_id) for r in rows]
    [row] = rows
    assert (row.old_instance_id, row.new_instance_id) == (old_host.instance_id, new_host.instance_id)
    assert row.hourly_savings is not None and row.new_pool_id == f"{itype}.eu-west-1b", row.attribute_values
    assert (row.command_id, row.trigger, row.old_mode, row.new_mode) == (command_id, "manual", "spot", "spot")
    assert row.initiated_at == sim.at(delivered_at)
    assert row.ready_at == sim.at(new.registration.at)

    # 2. the agent points at the new instance
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id == new_host.instance_id and agent.current_pool_id == f"{itype}.eu-west-1b"

    # 3. the command is completed, on its first attempt
    stored = bootstrap.command_store().get(agent_id, command_id)
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored

    # 4. delivered to one poll of the old agent only (heartbeat answers do not count: v4 ignores them),
    #    never again to either agent, and nothing left in the queue
    deliveries = [(a.name, t) for a in fleet.agents for t, ids in a.polls if command_id in ids]
    assert deliveries == [(old.name, delivered_at)], deliveries
    assert [a.name for a in fleet.agents if a.executed] == [old.name]
    assert bootstrap.command_store().active_for_agent(agent_id, 50) == []

    # and nothing the agents sent was refused
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert [a.replicas_terminated for a in fleet.agents if a.replicas_terminated] == []  # v4 never told to
    # 5. the old instance's final "offline" heartbeat does not take the agent offline while its new
    #    instance's agent runs: no offline/online flap for the client
    assert old.stopped_at is not None and agent_row(client_id, agent_id).status == "online"
    status, notes = caller.get("/api/notifications")
    flaps = [(n["kind"], n["message"], n["created_at"]) for n in notes["notifications"]
             if n["kind"] == "agent_status"]
    assert flaps == [], flaps
    timeouts = [n["message"] for n in notes["notifications"] if n["kind"] == "command_timed_out"]
    assert timeouts == [], timeouts


def test_a_forced_switch_whose_agent_outlives_its_host_reports_late_and_is_still_recorded_once(
        api, make_tenant, sim):
    """GIVEN a v4 agent whose process outlives the instance it terminates (a harness or container whose
    terminate does not end it), on spot in eu-west-1a (auto-terminate on, wait 300 s), reporting prices
    WHEN the client forces a switch to eu-west-1b and v4 plays it with its worst-case timings (running after
    290 s, 2 s traffic switch, 300 s wait, terminated after 290 s), the new instance's agent registering 90 s
    after launch, and the old agent's switch report (an implausible ``prices.old_spot``) and result arrive
    ~15 min after the lease began
    THEN exactly one switch is recorded (from the registration; the late report is its duplicate, answered
    200), the command is completed on its first attempt and delivered once, the late result is accepted (200),
    nothing the agents sent is refused, and the old agent's final ``offline`` heartbeat flaps nothing."""
    client_id, caller = make_tenant()
    itype = unique_type()
    market = Market(on_demand=0.192, spot={"eu-west-1a": 0.040, "eu-west-1b": 0.031},
                    switch_quotes={"old_spot": 0.00001})  # below the valve's plausible 0.001 $/h
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), market, processes_outlive_hosts=True)
    old_host = Host(new_instance_id(), itype, EU, "eu-west-1a")
    old = fleet.start_agent(old_host, f"web-{uuid.uuid4().hex[:8]}")
    schedule(sim, api, "health-monitor", first=7)
    sim.run_until(100)
    assert old.registration.status == 200, old.registration.answer
    agent_id = old.agent_id
    status, queued = caller.post(f"/api/client/instances/{old_host.instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 201, queued
    command_id = queued["command"]["id"]
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    assert not old.running and len(old.switches) == 1, brief(fleet.calls[-5:])
    switch = old.switches[0]
    new_host = switch["new_host"]
    sim.run_until(sim.elapsed + 30 * 60)

    new = next(a for a in fleet.agents if a.host.instance_id == new_host.instance_id)
    assert new.registration.status == 200 and new.agent_id == agent_id, new.registration.answer
    delivered_at = old.polls[-1][0]
    assert switch["executed"].at - delivered_at >= 850  # the result came long after the lease began

    rows = [r for r in SwitchTable.query(client_id) if r.agent_id == agent_id]
    assert len(rows) == 1, [(r.old_instance_id, r.new_instance_id) for r in rows]
    [row] = rows
    assert (row.old_instance_id, row.new_instance_id) == (old_host.instance_id, new_host.instance_id)
    assert row.hourly_savings is not None and row.new_pool_id == f"{itype}.eu-west-1b"
    assert switch["report"].status == 200, (switch["report"].status, switch["report"].answer)
    assert switch["executed"].status == 200, (switch["executed"].status, switch["executed"].answer)
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id == new_host.instance_id and agent.current_pool_id == f"{itype}.eu-west-1b"
    stored = bootstrap.command_store().get(agent_id, command_id)
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    deliveries = [(a.name, t) for a in fleet.agents for t, ids in a.polls if command_id in ids]
    assert deliveries == [(old.name, delivered_at)], deliveries
    assert bootstrap.command_store().active_for_agent(agent_id, 50) == []
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
    assert old.stopped_at == switch["executed"].at and agent_row(client_id, agent_id).status == "online"
    status, notes = caller.get("/api/notifications")
    assert [n["message"] for n in notes["notifications"] if n["kind"] in ("agent_status", "command_timed_out")] == []
    # the old agent, heard in its terminate wait after the new one registered, keeps no instance running (the
    # real v4 run in local mode got a "commands_held ... left and kept running" warning here)
    assert [n["message"] for n in notes["notifications"] if n["kind"] == "commands_held"] == []


@pytest.mark.usefixtures("failover_machine")
def test_b_termination_notice_is_handled_once_and_the_replacements_v4_agent_takes_over(api, make_tenant, sim):
    """GIVEN a v4 agent in auto-switch mode on a real spot instance (moto EC2, us-east-1a) with prices
    WHEN IMDS shows a termination notice: v4's 5 s check calls create-emergency-replica, then
    termination-imminent, and stops itself on success; the replacement's v4 agent boots 90 s later and
    registers under the same logical id; the health monitor and the replica coordinator keep running
    THEN the notice starts one failover (the second call is a duplicate), one interruption event is
    recorded and resolved, the agent ends on the replacement (the old instance terminated, no other
    instance launched for it), and the replacement's agent registers as the same agent and runs on
    (every call answered 2xx, no switch executed), with no command left that v4 cannot read (it skips a
    command without ``target_mode``, as the workflow's promote / prepare_shutdown are).
    """
    client_id, caller = make_tenant()
    itype = unique_type()
    ec2 = MotoEc2(US)
    fleet = Fleet(sim, api.http, caller.token, ec2, Market(on_demand=0.192, spot=dict(US_PRICES)))
    primary = launch_primary(itype, "us-east-1a")
    logical = f"web-{uuid.uuid4().hex[:8]}"
    old = fleet.start_agent(ec2.host(primary), logical)
    schedule(sim, api, "health-monitor", first=7)
    schedule(sim, api, "replica-coordinator", first=37)

    sim.run_until(58)
    assert old.registration.status == 200, old.registration.answer
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
    assert wait_for(workflow["execution_arn"])["status"] == "SUCCEEDED"
    replacement = agent_row(client_id, agent_id).instance_id
    assert replacement != primary
    # the replacement was launched at t=60; its v4 agent boots 90 s later, then 20 minutes pass
    new = fleet.start_agent(ec2.host(replacement), logical, at=60 + BOOT_S)
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
    client_id, caller = make_tenant()
    ec2 = MotoEc2(US)
    fleet = Fleet(sim, api.http, caller.token, ec2, Market(on_demand=0.192, spot=dict(US_PRICES)))
    primary = launch_primary(unique_type(), "us-east-1a")
    logical = f"web-{uuid.uuid4().hex[:8]}"
    old = fleet.start_agent(ec2.host(primary), logical)
    schedule(sim, api, "health-monitor", first=7)
    schedule(sim, api, "replica-coordinator", first=37)
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
    client_id, caller = make_tenant()
    ec2 = MotoEc2(US)
    fleet = Fleet(sim, api.http, caller.token, ec2, Market(on_demand=0.192, spot=dict(US_PRICES)))
    primary = launch_primary(unique_type(), "us-east-1a")
    logical = f"web-{uuid.uuid4().hex[:8]}"
    old = fleet.start_agent(ec2.host(primary), logical)
    schedule(sim, api, "health-monitor", first=7)
    schedule(sim, api, "replica-coordinator", first=37)
    sim.run_until(58)
    agent_id = old.agent_id
    event = warning(primary)
    event["time"] = sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    started = deliver(api, "sentinel-interruption", event)
    assert started["action"] == "failover_started", started
    assert wait_for(started["execution_arn"])["status"] == "SUCCEEDED"
    replacement = agent_row(client_id, agent_id).instance_id
    assert replacement != primary

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


def _manual_replica_agent(api, make_tenant, sim):
    """A v4 agent on a real spot instance (us-east-1a) whose client turns manual-replica mode on at t=20."""
    client_id, caller, fleet, v4, primary, itype = v4_on_us_spot(api, make_tenant, sim)
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


def test_c_when_the_server_cannot_launch_the_standby_v4_launches_it_and_it_is_recorded_once(
        api, make_tenant, sim, monkeypatch):
    """GIVEN a v4 agent whose client turns manual-replica mode on, and EC2 throttles the coordinator's
    first launch (the standby stays ``launching`` with no instance)
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
    client_id, fleet, v4, primary, itype = _manual_replica_agent(api, make_tenant, sim)
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
