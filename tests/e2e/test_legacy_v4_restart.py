"""A v4 agent process restarted in the middle of a switch (a crash and systemd's ``Restart=always``, an operator's
restart, a reboot). The new process registers again on the same instance and knows nothing of the switch; v4 runs
the first command a poll returns whatever its status, so the switch must not be handed to it again: the first process
may already have launched the replacement."""

from __future__ import annotations

import pytest

from chalicelib import bootstrap
from tests.e2e.legacy_support import EU, EU_PRICES, brief, force_switch
from tests.e2e.legacy_v4 import RUN_INSTANCES_S, FakeEc2, Fleet, Host, Market, schedule, unique_type
from tests.conftest import new_instance_id

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

RESTART_SEC = 10  # the legacy installer's systemd unit: Restart=always, RestartSec=10


def test_a_v4_process_restarted_mid_switch_is_not_handed_the_switch_again(api, make_tenant, sim):
    """GIVEN a v4 agent that polled a forced switch and launched the replacement WHEN its process dies while it
    waits for ``running`` and systemd starts a new one on the same instance 10 s later
    THEN the new process registers (200) and polls, but is never given the switch (no second replacement is
    launched), the command is timed out with the reason, and the client is told."""
    client_id, caller = make_tenant()
    itype = unique_type()
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), Market(on_demand=0.192, spot=dict(EU_PRICES)))
    host = Host(new_instance_id(), itype, EU, "eu-west-1a")
    first = fleet.start_agent(host, "web-restarted")
    schedule(sim, api, "health-monitor", first=7)
    sim.run_until(60)
    command = force_switch(caller, host.instance_id, f"{itype}.eu-west-1b")
    while not fleet.ec2.launched and sim.elapsed < 600:
        sim.run_until(sim.elapsed + RUN_INSTANCES_S)
    assert [c["id"] for c in first.executed] == [command["id"]], brief(fleet.calls[-4:])

    sim.run_until(sim.elapsed + 20)
    first.kill()
    second = fleet.start_agent(host, "web-restarted", at=sim.elapsed + RESTART_SEC)
    sim.run_until(sim.elapsed + 30 * 60)

    assert second.registration.status == 200 and second.agent_id == first.agent_id, second.registration.answer
    assert len(second.polls) > 10 and all(command["id"] not in ids for _, ids in second.polls), second.polls[:3]
    assert second.executed == [] and len(fleet.ec2.launched) == 1, [h.instance_id for h in fleet.ec2.launched]
    stored = bootstrap.command_store().get(first.agent_id, command["id"])
    assert (stored.status.value, stored.attempts) == ("timed_out", 1), stored
    assert "restarted" in stored.message, stored.message
    status, notes = caller.get("/api/notifications")
    assert [n["kind"] for n in notes["notifications"]].count("command_abandoned") == 1, notes
