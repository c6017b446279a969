"""v4 agents without ``LOGICAL_AGENT_ID``: the legacy installer asks for one as "optional, press Enter to use
instance ID", and v4 then takes its instance id as its logical id. The replacement a switch launches comes from the
same launch AMI (and env), so its agent registers naming the *new* instance id. It is the same agent all the same:
the switch's replacement registers as the agent that launched it (its settings, its switch recorded), whichever of
its registration and the switch report comes first, and whether or not the old agent lives to report."""

from __future__ import annotations

import pytest

from chalicelib import bootstrap
from chalicelib.tables import AgentTable
from chalicelib.tables.switches import SwitchTable
from tests.conftest import new_instance_id
from tests.e2e import legacy_v4
from tests.e2e.legacy_v3 import v3_kind
from tests.e2e.legacy_support import EU, EU_PRICES, brief, force_switch
from tests.e2e.legacy_v4 import FakeEc2, Fleet, Host, Market, schedule, unique_type

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]


def _unnamed_fleet(api, make_tenant, sim, *, named: bool = False, kind=None):
    """A v4 agent (or ``kind``) on a spot instance in eu-west-1a whose logical id is its instance id (``named``: one
    set in its env, the replacement's too). Returns (client_id, caller, fleet, agent, instance type)."""
    client_id, caller = make_tenant()
    itype = unique_type()
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), Market(on_demand=0.192, spot=dict(EU_PRICES)),
                  logical_from_instance=not named, kind=kind)
    host = Host(new_instance_id(), itype, EU, "eu-west-1a")
    agent = fleet.start_agent(host, "web-named" if named else host.instance_id)
    schedule(sim, api, "health-monitor", first=7)
    sim.run_until(60)
    assert agent.registration.status == 200, agent.registration.answer
    return client_id, caller, fleet, agent, itype


def _switch(client_id, caller, fleet, old, itype, sim, *, wait: bool):
    """The client forces a switch of ``old`` to eu-west-1b (auto-terminate on: the command's 300 s wait; else 0),
    and the fleet runs 40 minutes. Returns (the command's id, the replacement's agent)."""
    if not wait:
        status, reply = caller.post(f"/api/client/agents/{old.agent_id}/config", {"auto_terminate_enabled": False})
        assert status == 200, reply
    command = force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    assert (command["terminate_wait_seconds"] > 0) is wait
    sim.run_until(sim.elapsed + 40 * 60)
    [switch] = old.switches
    [new] = [a for a in fleet.agents if a.host.instance_id == switch["new_host"].instance_id]
    return command["id"], new


def _assert_one_agent_switched(client_id, fleet, old, new, command_id, *, inferred: bool) -> None:
    assert new.registration.status == 200 and new.agent_id == old.agent_id, new.registration.answer
    rows = list(AgentTable.query(client_id))
    assert [(r.agent_id, r.instance_id) for r in rows] == [(old.agent_id, new.host.instance_id)]
    assert rows[0].logical_agent_id == old.host.instance_id  # the identity it was created with
    [recorded] = list(SwitchTable.query(client_id))
    assert (recorded.old_instance_id, recorded.new_instance_id, bool(recorded.inferred)) == (
        old.host.instance_id, new.host.instance_id, inferred)
    stored = bootstrap.command_store().get(old.agent_id, command_id)
    assert (stored.status.value, stored.attempts, stored.success) == ("completed", 1, True), stored
    assert [a.name for a in fleet.agents if a.executed] == [old.name] and len(fleet.ec2.launched) == 1
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())


@pytest.mark.parametrize("kind", [None, v3_kind()], ids=["v4", "v3.2"])
def test_under_auto_terminate_the_replacement_registers_as_the_agent_and_its_switch_is_recorded(
        api, make_tenant, sim, kind):
    """GIVEN a v4 (or v3.2: no mode in its registration) agent without LOGICAL_AGENT_ID (its logical id: its instance
    id) WHEN a switch with the default 300 s terminate wait runs (the agent dies with its host before reporting)
    THEN the replacement's agent, naming its own instance id, registers as the same agent, the switch is recorded
    from that registration and the command completed: no second agent with default settings, no switch lost."""
    client_id, caller, fleet, old, itype = _unnamed_fleet(api, make_tenant, sim, kind=kind)
    command_id, new = _switch(client_id, caller, fleet, old, itype, sim, wait=True)
    assert old.stopped_at is not None and "report" not in old.switches[0]
    _assert_one_agent_switched(client_id, fleet, old, new, command_id, inferred=True)


def test_without_auto_terminate_the_replacement_registering_first_is_the_agent_its_report_moved(
        api, make_tenant, sim):
    """GIVEN the same agent under auto-terminate off WHEN the replacement's agent registers while the old one still
    waits for ``running`` (v4 boots faster than its waiter's 10 s polls report) and the old one reports afterwards
    THEN one agent, on the new instance, with the reported switch and the command completed."""
    client_id, caller, fleet, old, itype = _unnamed_fleet(api, make_tenant, sim)
    command_id, new = _switch(client_id, caller, fleet, old, itype, sim, wait=False)
    assert new.registration.at < old.switches[0]["report"].at
    assert old.switches[0]["report"].status == 200, old.switches[0]["report"].answer
    _assert_one_agent_switched(client_id, fleet, old, new, command_id, inferred=False)


def test_without_auto_terminate_the_replacement_registering_after_the_report_is_the_agent(
        api, make_tenant, sim, monkeypatch):
    """GIVEN the same switch WHEN the replacement's agent starts only after the old one reported (a slow boot)
    THEN it registers as the agent the report moved onto its instance."""
    monkeypatch.setattr(legacy_v4, "BOOT_S", legacy_v4.RUNNING_WAIT_S + 120)
    client_id, caller, fleet, old, itype = _unnamed_fleet(api, make_tenant, sim)
    command_id, new = _switch(client_id, caller, fleet, old, itype, sim, wait=False)
    assert new.registration.at > old.switches[0]["report"].at
    _assert_one_agent_switched(client_id, fleet, old, new, command_id, inferred=False)


def test_an_unrelated_new_instance_is_still_a_new_agent(api, make_tenant, sim):
    """GIVEN a switch in flight of an agent without LOGICAL_AGENT_ID WHEN an unrelated v4 agent without one starts on
    an instance the switch did not launch (same type, another zone; or the switch's zone but on-demand) THEN each is
    an agent of its own: only an instance the switch could have launched is taken for its replacement."""
    client_id, caller, fleet, old, itype = _unnamed_fleet(api, make_tenant, sim)
    force_switch(caller, old.host.instance_id, f"{itype}.eu-west-1b")
    sim.run_until(sim.elapsed + 30)
    assert old.executed, brief(fleet.calls[-3:])
    others = [fleet.start_agent(Host(new_instance_id(), itype, EU, "eu-west-1c"), "") ,
              fleet.start_agent(Host(new_instance_id(), itype, EU, "eu-west-1b", mode="ondemand"), "")]
    for other in others:
        other.logical_agent_id = other.host.instance_id
    sim.run_until(sim.elapsed + 60)
    assert all(o.registration.status == 200 and o.agent_id != old.agent_id for o in others), brief(fleet.calls)
    rows = {r.agent_id: r.logical_agent_id for r in AgentTable.query(client_id)}
    assert rows == {old.agent_id: old.host.instance_id, **{o.agent_id: o.host.instance_id for o in others}}
