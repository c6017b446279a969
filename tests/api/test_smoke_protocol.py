"""GIVEN a new tenant WHEN an agent walks the whole protocol THEN every step answers as documented."""

import uuid

import pytest

from tests.conftest import new_instance_id, registration


@pytest.fixture
def tenant_with_agent(make_tenant):
    """A tenant's agent on an instance type of its own: the pools (and their price history, which the data
    valve gap-fills) are this test's alone, whatever other tests reported before."""
    client_id, caller = make_tenant()
    reg = registration(instance_type=f"m5.s{uuid.uuid4().hex[:8]}xl")
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], reg


def test_full_agent_protocol(tenant_with_agent):
    client_id, caller, agent_id, reg = tenant_with_agent
    itype = reg["instance_type"]
    status, body = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert status == 200, body
    assert body["commands"] == [] and body["config_version"] == 1

    status, cfg = caller.get(f"/api/agents/{agent_id}/config")
    assert status == 200 and cfg["auto_switch_enabled"] is True and cfg["terminate_wait_seconds"] == 300

    report = {"instance": {"instance_id": reg["instance_id"], "instance_type": itype,
                           "region": "eu-west-1", "az": "eu-west-1a", "mode": "spot"},
              "pricing": {"on_demand_price": 0.107, "current_spot_price": 0.035,
                          "spot_pools": [{"instance_type": itype, "az": f"eu-west-1{z}",
                                          "price": 0.03 + i / 100} for i, z in enumerate("abc")]}}
    status, body = caller.post(f"/api/agents/{agent_id}/pricing-report", report)
    assert status == 200, body
    assert body["pools"] == 3 and body["points_written"] == 3

    status, body = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                               {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 201, body
    command_id = body["command"]["id"]
    assert body["command"]["priority"] == 75 and body["command"]["terminate_wait_seconds"] == 300

    status, body = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200
    [cmd] = body["commands"]
    assert cmd["id"] == command_id and cmd["status"] == "executing" and cmd["lease_expires_at"]

    status, body = caller.post(f"/api/agents/{agent_id}/commands/{command_id}/executed",
                               {"success": True, "message": "switched"})
    assert status == 200 and body["command"]["status"] == "completed", body

    new_id = new_instance_id()
    switch = {"old_instance": {"instance_id": reg["instance_id"], "instance_type": itype,
                               "az": "eu-west-1a", "mode": "spot"},
              "new_instance": {"instance_id": new_id, "instance_type": itype, "region": "eu-west-1",
                               "az": "eu-west-1b", "mode": "spot", "pool_id": f"{itype}.eu-west-1b"},
              "prices": {"on_demand": 0.107, "old_spot": 0.040, "new_spot": 0.031},
              "timing": {"switch_initiated_at": "2026-01-01T00:00:00Z",
                         "new_instance_ready_at": "2026-01-01T00:01:30Z"},
              "trigger": "manual", "command_id": command_id}
    status, body = caller.post(f"/api/agents/{agent_id}/switch-report", switch)
    assert status == 200, body
    assert body["hourly_savings"] == 0.009 and body["duplicate"] is False
    status, again = caller.post(f"/api/agents/{agent_id}/switch-report", switch)
    assert status == 200 and again["duplicate"] is True

    status, body = caller.post(f"/api/agents/{agent_id}/cleanup-report",
                               {"snapshots": {"deleted": ["snap-1"]}, "amis": {"deleted_amis": []}})
    assert status == 200 and body["deleted_snapshots"] == 1

    status, body = caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": new_id})
    assert status == 200, body
