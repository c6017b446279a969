"""What the legacy-agent replays share: an agent of a given kind on a spot instance in eu-west-1a, a forced
switch, and short views of the calls for assertion messages."""

from __future__ import annotations

import uuid

from chalicelib.tables import AgentTable
from tests.conftest import new_instance_id
from tests.e2e.legacy_v4 import FakeEc2, Fleet, Host, Market, schedule, unique_type

EU = "eu-west-1"
EU_PRICES = {"eu-west-1a": 0.040, "eu-west-1b": 0.031, "eu-west-1c": 0.029}


def brief(calls) -> list[tuple]:
    return [(c.at, c.agent, c.method, c.path, c.status, c.answer) for c in calls]


def agent_row(client_id: str, agent_id: str) -> AgentTable:
    return AgentTable.get(client_id, agent_id, consistent_read=True)


def eu_fleet(api, make_tenant, sim, kind, *, outlive: bool):
    """An agent of ``kind`` on a spot instance in eu-west-1a, registered with prices reported, the health monitor
    on its rate; ``outlive``: its process survives the instance it terminates (a harness's), else it dies with it
    as on EC2. Returns (client_id, caller, fleet, agent, instance type)."""
    client_id, caller = make_tenant()
    itype = unique_type()
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), Market(on_demand=0.192, spot=dict(EU_PRICES)),
                  kind=kind, processes_outlive_hosts=outlive)
    agent = fleet.start_agent(Host(new_instance_id(), itype, EU, "eu-west-1a"), f"web-{uuid.uuid4().hex[:8]}")
    schedule(sim, api, "health-monitor", first=7)
    sim.run_until(60)
    assert agent.registration.status == 200, agent.registration.answer
    return client_id, caller, fleet, agent, itype


def force_switch(caller, instance_id: str, pool_id: str) -> dict:
    status, queued = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                 {"target": "pool", "pool_id": pool_id})
    assert status == 201, queued
    return queued["command"]


def deliveries(fleet, command_id: str) -> list[tuple[str, float]]:
    return [(a.name, t) for a in fleet.agents for t, ids in a.polls if command_id in ids]


def switch_without_wait(caller, old, itype: str, sim) -> dict:
    """The client turns auto-terminate off (the command says wait 0, leased as a switch without a wait) and forces
    a switch of ``old`` to eu-west-1b; the simulation runs until ``old`` stops (at most an hour), then 20 minutes
    more. Returns the command."""
    from tests.e2e.legacy_v4 import COMMANDS_S

    status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
    assert status == 200, reply
    command = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    assert command["terminate_wait_seconds"] == 0
    while old.running and sim.elapsed < 3600:
        sim.run_until(sim.elapsed + COMMANDS_S)
    sim.run_until(sim.elapsed + 20 * 60)
    return command


def switch_without_wait_recorded_from_registration(client_id: str, caller, fleet, old, itype: str, sim) -> None:
    """:func:`switch_without_wait` of ``old``, a legacy build that first makes an image of its instance and whose env
    terminates its host: the replacement's agent registers after that image, the health monitor sweeping leases
    meanwhile. Asserts the command was still leased then: the switch is recorded from that registration and the
    command completed on its one delivery (not taken back, superseded and lost), nothing refused."""
    from chalicelib import bootstrap
    from chalicelib.tables.switches import SwitchTable

    command = switch_without_wait(caller, old, itype, sim)
    [switch] = old.switches
    new = next(a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id)
    assert new.registration.status == 200 and new.agent_id == old.agent_id, new.registration.answer
    assert new.registration.at - deliveries(fleet, command["id"])[0][1] > 660  # past a lease without the image
    [recorded] = [r for r in SwitchTable.query(client_id) if r.agent_id == old.agent_id]
    assert (recorded.new_instance_id, recorded.new_pool_id, recorded.inferred) == (
        new.host.instance_id, f"{itype}.eu-west-1b", True)
    stored = bootstrap.command_store().get(old.agent_id, command["id"])
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    assert [a.name for a in fleet.agents if a.executed] == [old.name] and len(fleet.ec2.launched) == 1
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
