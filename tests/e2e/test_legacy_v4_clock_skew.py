"""The real v4 agent, unchanged, on an instance whose clock is a day behind (NTP never synced): every time it writes
(``datetime.now(timezone.utc).isoformat()``: its pricing reports' ``collected_at``, its switch report's timings) is
a day and an hour old. The product still manages it on its own clock (tests/api/test_agent_clock_skew.py audits
each field)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.switches import SwitchTable
from tests.e2e import legacy_v4
from tests.e2e.legacy_support import agent_row, brief, eu_fleet, force_switch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

SKEW = timedelta(days=1, hours=1)  # behind the server's clock


def test_a_v4_agent_a_day_behind_is_managed_switches_once_and_its_report_is_accepted(api, make_tenant, sim,
                                                                                     monkeypatch):
    """GIVEN a v4 agent whose clock is 25 h behind WHEN it registers, reports prices and the client forces a switch
    THEN it is online, the switch runs once, its report is accepted (200, the skew named), and the switch and the
    new instance are dated by the server's clock, with the 290 s launch → ready the agent measured."""
    real = legacy_v4.v4_time
    monkeypatch.setattr(legacy_v4, "v4_time", lambda value: real(value - SKEW))
    client_id, caller, fleet, agent, itype = eu_fleet(api, make_tenant, sim, None, outlive=True)
    assert agent_row(client_id, agent.agent_id).status == "online"
    pricing = [c for c in fleet.calls if c.path.endswith("/pricing-report")]
    assert pricing and all(c.status == 200 for c in pricing), brief(pricing)

    command = force_switch(caller, agent.host.instance_id, f"{itype}.eu-west-1b")
    while not agent.switches and sim.elapsed < 1800:
        sim.run_until(sim.elapsed + legacy_v4.COMMANDS_S)
    sim.run_until(sim.elapsed + 15 * 60)

    [switch] = agent.switches
    assert switch["report"].status == 200, brief(fleet.calls[-4:])
    assert any("clock" in w for w in switch["report"].answer["warnings"]), switch["report"].answer
    assert [c["id"] for c in agent.executed] == [command["id"]] and len(fleet.ec2.launched) == 1
    [row] = [r for r in SwitchTable.query(client_id) if r.agent_id == agent.agent_id]
    assert sim.start <= row.initiated_at <= sim.now, (row.initiated_at, sim.start, sim.now)
    assert (row.ready_at - row.launched_at).total_seconds() == legacy_v4.RUNNING_WAIT_S
    new = InstanceTable.get(row.new_instance_id, consistent_read=True)
    assert new.installed_at == row.initiated_at and new.agent_id == agent.agent_id
    assert agent_row(client_id, agent.agent_id).instance_id == row.new_instance_id
    assert fleet.failed_calls() == [], brief(fleet.failed_calls())
