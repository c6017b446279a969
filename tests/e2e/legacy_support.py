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
