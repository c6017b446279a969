"""The v4 variant ``agent-backend.py``, run unchanged, replayed against the real handlers on a simulated clock
(``tests.e2e.legacy_v4_backend``): what it does beyond the v4 agent already replayed in test_legacy_v4_*.py —
its minutely ``instances-to-terminate`` poll, and a ``replicas?status=terminated`` poll that terminates the
instance of every listed row whatever its ``is_active``."""

from __future__ import annotations

import uuid

import pytest

from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable
from chalicelib.tables.switches import SwitchTable
from tests.conftest import new_instance_id
from tests.e2e.failover_support import state_of
from tests.e2e.legacy_v4 import COMMANDS_S, FakeEc2, Fleet, Host, Market, schedule, unique_type, v4_on_us_spot
from tests.e2e.legacy_v4_backend import BackendV4Agent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]


def brief(calls) -> list[tuple]:
    return [(c.at, c.agent, c.method, c.path, c.status, c.answer) for c in calls]


def polls_of(fleet, suffix: str):
    return [c for c in fleet.calls if c.method == "GET" and c.path.endswith(suffix)]


def test_a_the_standby_the_product_terminated_is_only_confirmed_by_the_agent_and_nothing_else_is_terminated(
        api, make_tenant, sim):
    """GIVEN agent-backend.py on a real spot instance (moto EC2, us-east-1a) whose client turns manual-replica mode
    on, so that the product launches a standby, then off, so that the product terminates it
    WHEN the agent polls ``replicas?status=terminated`` every 30 s (it terminates the instance of each listed row,
    unless EC2 says it is gone) and ``instances-to-terminate`` every 60 s
    THEN the terminated standby is listed and the agent's re-post of its status is answered 200 without a change;
    the agent terminates no running instance (its own primary runs on); every instances-to-terminate poll is
    answered 200 with no instance; and every call it makes is answered 2xx."""
    client_id, caller, fleet, agent, primary, _ = v4_on_us_spot(api, make_tenant, sim, kind=BackendV4Agent)
    status, reply = caller.post(f"/api/client/agents/{agent.agent_id}/config", {"manual_replica_enabled": True})
    assert status == 200, reply
    sim.run_until(5 * 60)
    [standby] = replica_repo.for_agent(agent.agent_id)
    assert standby.status.value == "ready" and state_of(standby.instance_id) == "running", standby
    status, reply = caller.post(f"/api/client/agents/{agent.agent_id}/config", {"manual_replica_enabled": False})
    assert status == 200, reply
    sim.run_until(10 * 60)

    [standby] = replica_repo.for_agent(agent.agent_id)
    assert standby.status.value == "terminated" and state_of(standby.instance_id) in ("shutting-down", "terminated")
    listed = [c for c in polls_of(fleet, "/replicas?status=terminated") if c.answer["replicas"]]
    assert listed and listed[0].answer["replicas"][0]["id"] == standby.replica_id, brief(listed[:1])
    [confirmed] = [c for c in fleet.calls if c.path.endswith(f"/replicas/{standby.replica_id}/status")]
    assert confirmed.status == 200 and confirmed.answer["status"] == "terminated", confirmed.answer
    assert set(agent.replica_instances_terminated) <= {standby.instance_id}  # at most a repeat of the product's
    assert state_of(primary) == "running" and agent.running and agent.instances_terminated == []
    polls = polls_of(fleet, "/instances-to-terminate")
    assert len(polls) >= 8 and all(c.status == 200 and c.answer["instances"] == [] for c in polls), brief(polls[:2])
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


def test_b_the_instance_a_switch_kept_is_never_listed_for_the_agent_to_terminate(api, make_tenant, sim):
    """GIVEN agent-backend.py on spot in eu-west-1a whose client turned auto-terminate off: its forced switch to
    eu-west-1b carries ``terminate_wait_seconds: 0``, so it reports at once and keeps the old instance and its own
    process running (the legacy backend called that instance a "zombie")
    WHEN the client turns auto-terminate back on, and the agents on both instances poll instances-to-terminate
    (it would terminate what is listed: the legacy backend listed zombies past their wait)
    THEN the polls are answered 200 with no instance, now with ``auto_terminate_enabled`` true: the kept instance
    stays the customer's; the switch is recorded once and every call is answered 2xx."""
    client_id, caller = make_tenant()
    itype = unique_type()
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), Market(on_demand=0.192, spot={"eu-west-1a": 0.040,
                                                                                         "eu-west-1b": 0.031}),
                  kind=BackendV4Agent)
    old = fleet.start_agent(Host(new_instance_id(), itype, "eu-west-1", "eu-west-1a"), f"web-{uuid.uuid4().hex[:8]}")
    schedule(sim, api, "health-monitor", first=7)
    sim.run_until(60)
    status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
    assert status == 200, reply
    status, queued = caller.post(f"/api/client/instances/{old.host.instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 201 and queued["command"]["terminate_wait_seconds"] == 0, queued
    while not old.switches or "executed" not in old.switches[0]:
        sim.run_until(sim.elapsed + COMMANDS_S)
    new_host = old.switches[0]["new_host"]
    sim.run_until(sim.elapsed + 5 * 60)
    status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": True})
    assert status == 200, reply
    mark = sim.elapsed
    sim.run_until(sim.elapsed + 5 * 60)

    later = [c for c in polls_of(fleet, "/instances-to-terminate") if c.at > mark]
    assert {c.instance_id for c in later} == {old.host.instance_id, new_host.instance_id}, brief(later)
    assert all(c.status == 200 and c.answer["instances"] == [] and c.answer["auto_terminate_enabled"] is True
               for c in later), brief(later[:2])
    assert fleet.ec2.terminated == [] and old.running
    [row] = [r for r in SwitchTable.query(client_id) if r.agent_id == old.agent_id]
    assert (row.old_instance_id, row.new_instance_id) == (old.host.instance_id, new_host.instance_id)
    assert AgentTable.get(client_id, old.agent_id, consistent_read=True).instance_id == new_host.instance_id
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
