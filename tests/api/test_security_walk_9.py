"""Security walk 9: what a request naming one instance makes the service do to another (force-switch). Each test is
one attack; its docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

import pytest

from chalicelib.repositories import agents as agent_repo
from tests.api._support import assert_error, diff_snapshots, snapshot_tables, switch_body
from tests.conftest import account_instance, new_instance_id, registration


# --- a request names one instance: the service acts on that one or on none --------------------------------------


@pytest.fixture
def kept_old_primary(make_tenant):
    """A tenant whose agent switched with auto-terminate off: (caller, agent id, the old instance it kept running,
    the agent's current instance)."""
    _, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": False})[0] == 200
    old, new = reg["instance_id"], new_instance_id()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(old, new))
    assert status == 200, reply
    row = agent_repo.instance_row(old)
    assert row.is_active and row.role == "primary"  # the customer keeps it: still listed as an active instance
    return caller, agent_id, old, new


@pytest.fixture
def agent_with_standby(make_tenant):
    """A manual-replica tenant's agent with a standby its agent launched: (caller, agent id, the standby, the
    agent's primary)."""
    _, caller = make_tenant()
    reg = registration(az="eu-west-1c")
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config",
                       {"manual_replica_enabled": True, "auto_terminate_enabled": True})[0] == 200
    standby = account_instance("eu-west-1b")
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas",
                                {"instance_id": standby, "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, reply
    return caller, agent_id, standby, reg["instance_id"]


@pytest.mark.parametrize("which", ["kept_old_primary", "agent_with_standby"])
def test_a_force_switch_of_an_instance_that_is_not_the_agents_primary_switches_nothing(request, which):
    """ATTACK (a careless client, or a link to an instance page): ``force-switch`` names an active instance of the
    client that is not its agent's current primary: the old instance a switch kept running (auto-terminate off) or
    the agent's standby. BEFORE: 201, and the command queued was a switch of the agent's *current* primary, which
    the request never named (for a standby under auto-terminate, with the primary terminated 300 s after). NOW: 409
    ``not_current_primary``, nothing queued; the agent's current primary is switched only when it is the one
    named."""
    caller, agent_id, named, current = request.getfixturevalue(which)
    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/instances/{named}/force-switch", {"target": "ondemand"})
    assert_error(status, reply, 409, code="not_current_primary", field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    status, reply = caller.post(f"/api/client/instances/{current}/force-switch", {"target": "ondemand"})
    assert status == 201 and reply["command"]["instance_id"] == current, reply
