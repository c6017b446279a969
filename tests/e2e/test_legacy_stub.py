"""The pre-v4 legacy agent ``spot_agent.py`` ("Agent v4.0"), run unchanged, replayed against the real handlers on a
simulated clock (``tests.e2e.legacy_stub``): its ``X-Client-Token`` header, its registration without logical id
(``version``, ``current_mode``), its flat pricing line of constants, a pending-commands answer it iterates as a
list, a "switch" that only sleeps and reports success, and its interruption monitor.
"""

from __future__ import annotations

import pytest

from chalicelib import bootstrap
from chalicelib.repositories import pools
from chalicelib.tables import AgentTable
from chalicelib.tables.pools import PricingReportTable
from tests.conftest import new_instance_id
from tests.e2e.failover_support import state_of, wait_for
from tests.e2e.legacy_stub import ONDEMAND_PRICE, SPOT_PRICE, VERSION, StubAgent
from tests.e2e.legacy_v4 import FakeEc2, Fleet, Host, Market, iso, schedule, unique_type, v4_on_us_spot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

EU = "eu-west-1"


def brief(calls) -> list[tuple]:
    return [(c.at, c.agent, c.method, c.path, c.status, c.answer) for c in calls]


def calls_to(fleet, suffix: str, method: str = "POST"):
    return [c for c in fleet.calls if c.method == method and c.path.endswith(suffix)]


def test_a_the_stub_agent_registers_reports_and_polls_and_is_never_given_a_switch_it_would_fake(
        api, make_tenant, sim):
    """GIVEN spot_agent.py on a spot instance (its client in legacy agent mode), which authenticates with
    ``X-Client-Token`` and calls its instance on-demand (no interruption scheduled, so IMDS has no
    spot/instance-action)
    WHEN it runs for ten minutes (loop every 30 s: heartbeat, the pricing line every 5th turn, pending commands),
    the client forces a switch of its instance, a rebalance recommendation shows in IMDS, then it stops
    THEN every call it makes is answered 2xx: it is registered under its instance id with version 4.0 and no mode
    (its "ondemand" is not believed); its pricing line is kept in the raw report only (no pool price from its
    constants); every pending-commands answer is a JSON list, empty, so no loop turn dies on it; the forced switch
    is refused with 409 and nothing is queued, so it never reports a switch it did not make; and its final
    ``{"status": "offline"}`` takes the agent offline."""
    client_id, caller = make_tenant()
    itype = unique_type()
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), Market(on_demand=0.192, spot={}), kind=StubAgent)
    host = Host(new_instance_id(), itype, EU, "eu-west-1a")
    stub = fleet.start_agent(host, host.instance_id)
    schedule(sim, api, "health-monitor", first=7)
    sim.run_until(10 * 60)

    assert stub.registration.status == 200 and stub.running, stub.registration.answer
    agent_id = stub.agent_id
    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert (row.logical_agent_id, row.instance_id, row.agent_version, row.current_mode, row.status) == (
        host.instance_id, host.instance_id, VERSION, "unknown", "online")
    assert row.runs_commands is False

    pricing = calls_to(fleet, "/pricing-report")
    assert len(pricing) >= 3 and all(c.status == 200 and c.answer["pools"] == 0 for c in pricing), brief(pricing)
    assert pools.latest_prices([f"{itype}.eu-west-1a"]) == {}
    [report, *_] = PricingReportTable.query(agent_id)
    assert (float(report.current_spot_price), float(report.on_demand_price), report.instance_type, report.az) == (
        SPOT_PRICE, ONDEMAND_PRICE, itype, "eu-west-1a")

    polls = calls_to(fleet, "/pending-commands", "GET")
    assert len(polls) >= 19 and all(c.status == 200 and c.answer == [] for c in polls), brief(polls[:3])
    assert stub.loop_errors == []

    status, refused = caller.post(f"/api/client/instances/{host.instance_id}/force-switch",
                                  {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 409 and refused["error"] == "agent_runs_no_commands", refused
    assert bootstrap.command_store().active_for_agent(agent_id, 10) == []
    stub.rebalance_notice = sim.now
    sim.run_until(sim.elapsed + 120)
    [(emergency, _)] = stub.rebalance_reports
    assert emergency.ok, (emergency.status, emergency.answer)
    assert stub.executed == [] and calls_to(fleet, "/executed") == [] and calls_to(fleet, "/switch-report") == []

    stub.stop()
    assert AgentTable.get(client_id, agent_id, consistent_read=True).status == "offline"
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.usefixtures("failover_machine")
def test_b_the_stub_agents_termination_notice_starts_one_failover_and_its_replacement_registers(
        api, make_tenant, sim):
    """GIVEN spot_agent.py on a real spot instance (moto EC2, us-east-1a), registered with X-Client-Token
    WHEN IMDS shows a termination time: its 5 s monitor posts ``termination-imminent {instance_id,
    termination_time}`` and shuts down (its final bare offline heartbeat), and the replacement's spot_agent.py
    registers 90 s later
    THEN the notice starts one failover onto a replacement, the old instance is terminated, the replacement's agent
    registers as the same agent (spot_agent.py names no logical id: the instance's agent is the one the failover
    moved onto it, not a new one under the instance id), no command ever reaches either agent, and every call is
    answered 2xx."""
    client_id, caller, fleet, old, primary, _ = v4_on_us_spot(api, make_tenant, sim, kind=StubAgent)
    sim.run_until(58)
    old.termination_time = iso(sim.at(58 + 120))
    sim.run_until(61)
    [imminent] = calls_to(fleet, "/termination-imminent")
    assert imminent.ok and imminent.answer["success"] is True, imminent.answer
    assert imminent.status == 200  # spot_agent.py logs any other status as "Failover failed"
    # ... and logs the answer's message ("Failover initiated: <message>"): what was started, in a sentence
    assert imminent.answer["message"].startswith(f"failover {imminent.answer['interruption_id']} started"), \
        imminent.answer
    assert not old.running and calls_to(fleet, "/heartbeat")[-1].body == {"status": "offline"}
    assert wait_for(imminent.answer["interruption_id"])["status"] == "SUCCEEDED"
    replacement = AgentTable.get(client_id, old.agent_id, consistent_read=True).instance_id
    assert replacement != primary
    new = fleet.start_agent(fleet.ec2.host(replacement), replacement, at=61 + 90)
    sim.run_until(15 * 60)

    status, listing = caller.get(f"/api/agents/{old.agent_id}/interruptions")
    [event] = listing["interruptions"]
    assert event["status"] == "resolved" and event["new_instance_id"] == replacement, event
    assert state_of(primary) == "terminated" and state_of(replacement) == "running"
    # spot_agent.py names no logical id: the instance's agent is the one the failover moved onto it
    assert new.registration.status == 200 and new.running and new.agent_id == old.agent_id, new.registration.answer
    assert new.registration.answer["action"] == "refreshed"
    row = AgentTable.get(client_id, old.agent_id, consistent_read=True)
    assert (row.instance_id, row.status, row.runs_commands) == (replacement, "online", False)
    assert [a.agent_id for a in AgentTable.query(client_id)] == [old.agent_id]
    assert old.executed == new.executed == [] and old.loop_errors == new.loop_errors == []
    assert all(c.answer == [] for c in calls_to(fleet, "/pending-commands", "GET"))
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
