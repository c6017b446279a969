"""Two v4 agents of one logical agent: after a switch under auto-terminate off, the old instance and its v4
agent keep running (terminate wait 0: v4 neither terminates its host nor stops), and both agents poll the
same agent id. v4 names no instance when it polls ``pending-commands``; its heartbeats name it."""

from __future__ import annotations

import uuid

import pytest

from chalicelib.tables import AgentTable
from tests.conftest import new_instance_id
from tests.e2e.legacy_v4 import COMMANDS_S, FakeEc2, Fleet, Host, Market, unique_type

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

EU = "eu-west-1"


def brief(calls) -> list[tuple]:
    return [(c.at, c.agent, c.method, c.path, c.status, c.answer) for c in calls]


def _kept_old_instance(api, make_tenant, sim):
    """A v4 agent on A (auto-terminate off) that switched to B; A's agent runs on, B's registered.
    Returns (client_id, caller, fleet, old agent, new agent, itype)."""
    client_id, caller = make_tenant()
    itype = unique_type()
    market = Market(on_demand=0.192, spot={"eu-west-1a": 0.040, "eu-west-1b": 0.031, "eu-west-1c": 0.029})
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), market)
    old = fleet.start_agent(Host(new_instance_id(), itype, EU, "eu-west-1a"), f"web-{uuid.uuid4().hex[:8]}")
    sim.run_until(20)
    assert old.registration.status == 200, old.registration.answer
    status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
    assert status == 200, reply
    status, queued = caller.post(f"/api/client/instances/{old.host.instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 201 and queued["command"]["terminate_wait_seconds"] == 0, queued
    while not (old.switches and "executed" in old.switches[0]) and sim.elapsed < 1800:
        sim.run_until(sim.elapsed + COMMANDS_S)
    [switch] = old.switches
    assert switch["report"].status == 200 and switch["executed"].status == 200, brief(fleet.calls[-4:])
    new = next(a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id)
    sim.run_until(sim.elapsed + 120)
    assert old.running and new.running and new.agent_id == old.agent_id, new.registration.answer
    agent = AgentTable.get(client_id, old.agent_id, consistent_read=True)
    assert agent.instance_id == new.host.instance_id
    return client_id, caller, fleet, old, new, itype


def test_a_switch_of_the_new_instance_is_held_while_the_kept_old_instances_agent_runs_then_runs_on_the_new_one(
        api, make_tenant, sim):
    """GIVEN a v4 agent that switched from A to B under auto-terminate off: A and its v4 agent keep running
    (heartbeats name A, pending-commands names nothing), B's v4 agent registered under the same logical id
    WHEN the client forces a switch of B
    THEN no v4 agent receives it while A's agent runs (a poll naming no instance may be A's, which would launch
    a replacement of A and report A's switch), and the client is told why; once A's agent stops (its final
    bare offline heartbeat, then silence), B's agent receives it, executes it alone, and the agent ends on C."""
    client_id, caller, fleet, old, new, itype = _kept_old_instance(api, make_tenant, sim)
    status, queued = caller.post(f"/api/client/instances/{new.host.instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1c"})
    assert status == 201, queued
    command_id = queued["command"]["id"]
    sim.run_until(sim.elapsed + 5 * 60)

    def delivered() -> list[tuple[str, float]]:
        return [(a.name, t) for a in fleet.agents for t, ids in a.polls if command_id in ids]

    assert delivered() == [] and old.executed[1:] == [] and new.executed == [], delivered()
    held = [c for c in fleet.calls if c.path.endswith("/pending-commands") and c.answer.get("held")]
    assert {c.agent for c in held} == {old.name, new.name}, brief(held[-2:])
    status, notes = caller.get("/api/notifications")
    kinds = [n["kind"] for n in notes["notifications"]]
    assert kinds.count("commands_held") == 1, kinds

    # WHEN A's agent is stopped (SIGTERM: its final heartbeat names no instance)
    old.stop()
    sim.run_until(sim.elapsed + 15 * 60)
    assert [name for name, _ in delivered()][:1] == [new.name], delivered()
    assert old.executed[1:] == [] and [c["id"] for c in new.executed] == [command_id], delivered()
    [second] = new.switches
    assert second["report"].status == 200 and second["executed"].status == 200, brief(fleet.calls[-4:])
    agent = AgentTable.get(client_id, old.agent_id, consistent_read=True)
    assert agent.instance_id == second["new_host"].instance_id
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
