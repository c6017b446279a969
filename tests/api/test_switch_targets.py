"""A switch a client queues (force-switch, issue-switch-command) names the pool the agent will launch its next
instance in: only one of the agent's own instance types, in its own region, within the client's instance-type
policy. Anything else is 400/409 and no command is queued (the agent would launch whatever it is told)."""

from __future__ import annotations

import pytest

from tests.api._support import assert_error, diff_snapshots, snapshot_tables


@pytest.mark.parametrize(("pool_id", "status", "code"), [
    ("p5.48xlarge.eu-west-1b", 409, "instance_type_not_allowed"),  # not one of the agent's types, and a GPU
    ("u-24tb1.112xlarge.eu-west-1a", 409, "instance_type_not_allowed"),
    ("c5.large.eu-west-1b", 400, None),  # a sane type the agent never declared
    ("m5.large.us-east-1a", 400, None),  # the agent's type, another region
])
@pytest.mark.parametrize("route", ["force-switch", "issue-switch-command"])
def test_a_switch_to_a_pool_the_agent_cannot_run_in_queues_nothing(tenant_with_agent, route, pool_id, status,
                                                                   code):
    _, caller, agent_id, reg = tenant_with_agent
    if route == "force-switch":
        path, body = f"/api/client/instances/{reg['instance_id']}/force-switch", {"target": "pool", "pool_id": pool_id}
    else:
        assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_switch_enabled": True})[0] == 200
        path, body = f"/api/agents/{agent_id}/issue-switch-command", {"target_mode": "spot",
                                                                       "target_pool_id": pool_id}
    before = snapshot_tables()
    reply_status, reply = caller.post(path, body)
    assert_error(reply_status, reply, status, code=code,
                 field=None if code else ("pool_id" if route == "force-switch" else "target_pool_id"))
    assert diff_snapshots(before, snapshot_tables()) == {}


@pytest.mark.parametrize("route", ["force-switch", "issue-switch-command"])
def test_a_switch_to_another_pool_of_the_agents_type_is_queued(tenant_with_agent, route):
    _, caller, agent_id, reg = tenant_with_agent
    if route == "force-switch":
        path, body = f"/api/client/instances/{reg['instance_id']}/force-switch", {"target": "pool",
                                                                               "pool_id": "m5.large.eu-west-1b"}
    else:
        assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_switch_enabled": True})[0] == 200
        path, body = f"/api/agents/{agent_id}/issue-switch-command", {"target_mode": "spot",
                                                                       "target_pool_id": "m5.large.eu-west-1b"}
    status, reply = caller.post(path, body)
    assert status == 201, reply
    assert reply["command"]["target_pool_id"] == "m5.large.eu-west-1b"


@pytest.mark.parametrize("route", ["force-switch", "issue-switch-command"])
def test_the_same_switch_sent_again_is_the_queued_command_and_another_target_is_a_new_one(tenant_with_agent, route):
    """A client's retry (its answer was lost) must not queue a second switch of the instance: a legacy agent runs
    every switch one poll hands it, launching two replacements. A switch to another target is a new command."""
    _, caller, agent_id, reg = tenant_with_agent

    def send(pool_id):
        if route == "force-switch":
            return caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                               {"target": "pool", "pool_id": pool_id})
        return caller.post(f"/api/agents/{agent_id}/issue-switch-command",
                           {"target_mode": "spot", "target_pool_id": pool_id})

    if route == "issue-switch-command":
        assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_switch_enabled": True})[0] == 200
    (s1, first), (s2, again) = send("m5.large.eu-west-1b"), send("m5.large.eu-west-1b")
    assert (s1, s2) == (201, 201), (first, again)
    assert first["duplicate"] is False and again["duplicate"] is True
    assert again["command"]["command_id"] == first["command"]["command_id"]
    status, other = send("m5.large.eu-west-1c")
    assert status == 201 and other["duplicate"] is False
    assert other["command"]["command_id"] != first["command"]["command_id"]


def test_an_urgent_repeat_of_a_queued_switch_raises_its_priority_and_queues_nothing_new(tenant_with_agent):
    """An urgent issue-switch-command for the same switch queued as normal answers that command (``duplicate``) at the
    urgent priority (50), stored so: delivered first, as the urgent request asked. A normal repeat of an urgent one
    leaves it urgent."""
    from chalicelib import bootstrap

    _, caller, agent_id, _ = tenant_with_agent
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_switch_enabled": True})[0] == 200
    body = {"target_mode": "spot", "target_pool_id": "m5.large.eu-west-1b"}
    status, first = caller.post(f"/api/agents/{agent_id}/issue-switch-command", body)
    assert status == 201 and first["command"]["priority"] == 25, first
    status, urgent = caller.post(f"/api/agents/{agent_id}/issue-switch-command", {**body, "urgent": True})
    assert status == 201 and urgent["duplicate"] is True, urgent
    assert urgent["command"]["command_id"] == first["command"]["command_id"] and urgent["command"]["priority"] == 50
    status, normal = caller.post(f"/api/agents/{agent_id}/issue-switch-command", body)
    assert status == 201 and normal["duplicate"] is True and normal["command"]["priority"] == 50, normal
    active = bootstrap.command_store().active_for_agent(agent_id, 10)
    assert [(c.command_id, c.priority) for c in active] == [(first["command"]["command_id"], 50)]
