"""A v4 fleet booting together near the client's agent quota. v4 registers once at start and exits if that fails
(systemd's ``Restart=always`` starts it again after ``RestartSec=10``): every agent the quota has room for must land
and run, and only the ones past it are refused (409 ``quota_exceeded``), then land once the quota is raised. The
concurrent interleaving of such a burst (as many Lambda containers as agents) is tests/api/test_legacy_v4_bodies.py
``test_a_v4_fleet_booting_together_near_the_agent_quota_registers_every_agent_the_quota_allows``."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import new_instance_id
from tests.e2e.legacy_support import EU, EU_PRICES
from tests.e2e.legacy_v4 import FakeEc2, Fleet, Host, Market, unique_type

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

RESTART_SEC = 10  # the legacy installer's systemd unit: Restart=always, RestartSec=10


def test_a_v4_fleet_booting_at_once_registers_up_to_the_agent_quota_and_the_rest_once_it_is_raised(
        api, admin, make_tenant, sim):
    """GIVEN max_agents 5 WHEN six v4 agents boot at the same second THEN five register (200) and run (heartbeats
    and polls answered), the sixth is refused 409 ``quota_exceeded`` and exits; once the admin raises the quota,
    the sixth's next start by systemd registers and runs."""
    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 5})[0] == 200
    itype = unique_type()
    fleet = Fleet(sim, api.http, caller.token, FakeEc2(), Market(on_demand=0.192, spot=dict(EU_PRICES)))
    hosts = [Host(new_instance_id(), itype, EU, "eu-west-1a") for _ in range(6)]
    names = [f"web-{uuid.uuid4().hex[:8]}" for _ in hosts]
    agents = [fleet.start_agent(host, name, at=0) for host, name in zip(hosts, names, strict=True)]
    sim.run_until(120)

    landed = [a for a in agents if a.registration.status == 200]
    refused = [a for a in agents if a.registration.status != 200]
    assert len(landed) == 5 and len({a.agent_id for a in landed}) == 5, [a.registration.answer for a in agents]
    [late] = refused
    assert late.registration.status == 409 and late.registration.answer["error"] == "quota_exceeded", \
        late.registration.answer
    assert late.stopped_at is not None and not late.running
    beats = [c for c in fleet.calls if c.path.endswith("/heartbeat")]
    assert beats and all(c.ok for c in beats), [c for c in beats if not c.ok][:3]
    assert all(c.ok for c in fleet.calls if c.path != "/api/agents/register"), fleet.failed_calls()[:3]

    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 6})[0] == 200
    restarted = fleet.start_agent(late.host, late.logical_agent_id, at=sim.elapsed + RESTART_SEC)
    sim.run_until(sim.elapsed + 120)
    assert restarted.registration.status == 200 and restarted.running, restarted.registration.answer
    assert len({a.agent_id for a in [*landed, restarted]}) == 6
