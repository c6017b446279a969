"""The legacy v3.2.0 agent's bodies as it builds them, where they differ from
v4's: calls replayed one by one, as v3.2 makes them, with the client token (end to end: tests/e2e/test_legacy_v3.py)."""

from __future__ import annotations

import uuid

import pytest

from chalicelib.tables.agents import AgentTable
from components.command_tracker import enqueue, new_command

from chalicelib import bootstrap
from chalicelib.repositories import pools
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.pools import PricingReportTable
from tests.api._support import now_utc, shifted
from tests.conftest import invoke_schedule, new_instance_id


def v3_registration(instance_id: str, logical_agent_id: str, az: str = "eu-west-1a",
                    instance_type: str = "m5.large") -> dict:
    """v3.2's register body: no ``mode``, no IPs."""
    return {"client_token": "ignored-the-header-counts", "hostname": "ip-10-0-0-10", "instance_id": instance_id,
            "instance_type": instance_type, "region": az[:-1], "az": az, "ami_id": "ami-12345678",
            "agent_version": "3.2.0", "logical_agent_id": logical_agent_id}


def v3_pricing_report(instance_id: str, instance_type: str, az: str, mode: str, prices: dict[str, float],
                      on_demand: float = 0.192) -> dict:
    """v3.2's pricing report: no ``pricing`` block; ``on_demand_price{price}`` and ``spot_pools`` at the top."""
    return {"instance": {"instance_id": instance_id, "instance_type": instance_type, "region": az[:-1], "az": az,
                         "current_mode": mode,
                         "current_pool_id": f"{instance_type}.{az}" if mode == "spot" else None},
            "on_demand_price": {"price": on_demand},
            "spot_pools": [{"pool_id": f"{instance_type}.{zone}", "instance_type": instance_type, "az": zone,
                            "price": price} for zone, price in prices.items()]}


def _v3_agent(make_tenant, instance_type: str):
    client_id, caller = make_tenant()
    instance_id = new_instance_id()
    status, reply = caller.post("/api/agents/register",
                                v3_registration(instance_id, f"web-{uuid.uuid4().hex[:8]}", instance_type=instance_type))
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], instance_id


def test_a_v3_pricing_report_is_stored_with_its_pools_and_on_demand_price(make_tenant):
    """GIVEN a v3.2 agent WHEN it posts its pricing report (top-level ``spot_pools``, ``on_demand_price{price}``,
    ``instance.current_mode``) THEN 200, every pool priced, the raw report kept with its on-demand price and mode;
    an implausible pool price is dropped and named, never the report."""
    itype = f"m5.t{uuid.uuid4().hex[:8]}xl"
    client_id, caller, agent_id, instance_id = _v3_agent(make_tenant, itype)
    body = v3_pricing_report(instance_id, itype, "eu-west-1a", "spot",
                             {"eu-west-1a": 0.040, "eu-west-1b": 0.031, "eu-west-1c": 0.0})
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200, reply
    assert reply["pools"] == 2 and reply["warnings"][0].startswith("pricing.spot_pools.2.price"), reply
    assert float(pools.latest_prices([f"{itype}.eu-west-1b"])[f"{itype}.eu-west-1b"].seen_by(client_id).price) == 0.031
    [raw] = PricingReportTable.query(agent_id)
    assert (float(raw.on_demand_price), raw.mode, raw.pool_id, raw.pools_reported) == \
        (0.192, "spot", f"{itype}.eu-west-1a", 2), raw.attribute_values
    assert AgentTable.get(client_id, agent_id).last_pricing_at is not None


@pytest.mark.usefixtures("fleet_jobs_see_this_test_only")  # the decision cycle decides this test's agents only
def test_a_v3_agents_mode_is_learnt_from_its_pricing_report_and_kept_when_it_registers_again(make_tenant, api):
    """GIVEN a v3.2 agent on a spot instance: it registers without ``mode`` (unknown) and heartbeats without one
    WHEN the decision cycle runs before its first pricing report THEN it is not decided (read as on-demand it
    would be moved to spot, even into its own pool);
    WHEN its pricing report says ``instance.current_mode: spot`` THEN the agent and its instance are on spot;
    WHEN it restarts (registers again without mode) THEN the mode stays spot; a report of another instance, or a
    later report of another mode, changes nothing it did not learn."""
    itype = f"m5.t{uuid.uuid4().hex[:8]}xl"
    client_id, caller, agent_id, instance_id = _v3_agent(make_tenant, itype)
    logical = AgentTable.get(client_id, agent_id).logical_agent_id
    assert AgentTable.get(client_id, agent_id).current_mode == "unknown"
    prices = {"eu-west-1a": 0.030, "eu-west-1b": 0.034}
    assert caller.post(f"/api/agents/{agent_id}/heartbeat",
                       {"status": "online", "monitored_instances": [instance_id]})[0] == 200
    # a report naming another instance prices the market but says nothing of this agent's mode
    other = v3_pricing_report(new_instance_id(), itype, "eu-west-1a", "ondemand", prices)
    assert caller.post(f"/api/agents/{agent_id}/pricing-report", other)[0] == 200
    assert AgentTable.get(client_id, agent_id).current_mode == "unknown"
    invoke_schedule(api, "decision-cycle")
    assert bootstrap.command_store().active_for_agent(agent_id, 10) == []
    assert caller.get(f"/api/client/agents/{agent_id}/decisions")[1]["decisions"] == []

    body = v3_pricing_report(instance_id, itype, "eu-west-1a", "spot", prices)
    assert caller.post(f"/api/agents/{agent_id}/pricing-report", body)[0] == 200
    agent = AgentTable.get(client_id, agent_id)
    assert (agent.current_mode, agent.current_pool_id) == ("spot", f"{itype}.eu-west-1a")
    assert InstanceTable.get(instance_id).mode == "spot"
    # a report of another mode does not override what is known (a heartbeat with a mode or a switch report does)
    body["instance"]["current_mode"] = "ondemand"
    assert caller.post(f"/api/agents/{agent_id}/pricing-report", body)[0] == 200
    assert AgentTable.get(client_id, agent_id).current_mode == "spot"

    status, reply = caller.post("/api/agents/register", v3_registration(instance_id, logical, instance_type=itype))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert AgentTable.get(client_id, agent_id).current_mode == "spot"
    assert InstanceTable.get(instance_id).mode == "spot"
    # known on spot in the cheapest pool: the cycle decides it, and it stays
    invoke_schedule(api, "decision-cycle")
    assert bootstrap.command_store().active_for_agent(agent_id, 10) == []
    status, decided = caller.get(f"/api/client/agents/{agent_id}/decisions")
    assert status == 200 and decided["decisions"][0]["current"] == f"{itype}.eu-west-1a", decided



def _v3_switch_report(old: str, new: str, itype: str) -> dict:
    """v3.2's switch report: a snapshot, no launch time, unset timings as null, ``utcnow().isoformat() + 'Z'``."""
    return {"old_instance": {"instance_id": old, "instance_type": itype, "region": "eu-west-1", "az": "eu-west-1a",
                             "ami_id": "ami-12345678", "mode": "spot", "pool_id": f"{itype}.eu-west-1a"},
            "new_instance": {"instance_id": new, "instance_type": itype, "region": "eu-west-1", "az": "eu-west-1b",
                             "ami_id": "ami-12345678", "mode": "spot", "pool_id": f"{itype}.eu-west-1b"},
            "snapshot": {"used": True, "snapshot_id": "snap-0123456789abcdef0", "volume_id": "vol-0123456789abcdef0"},
            "prices": {"on_demand": 0.192, "old_spot": 0.04, "new_spot": 0.031},
            "timing": {"switch_initiated_at": shifted(-900).replace(tzinfo=None).isoformat() + "Z",
                       "new_instance_ready_at": shifted(-600).replace(tzinfo=None).isoformat() + "Z",
                       "traffic_switched_at": shifted(-598).replace(tzinfo=None).isoformat() + "Z",
                       "old_instance_terminated_at": None},
            "trigger": "manual"}


def test_v3s_bare_mark_command_executed_is_a_success_only_when_its_switch_was_reported(make_tenant):
    """GIVEN a v3.2 agent holding a forced switch WHEN the switch fails (no report) and v3.2 posts
    ``mark-command-executed {command_id}``, as it does whatever the outcome, THEN the command is failed, not
    completed; WHEN a second switch is reported first THEN its bare mark is a replay of the completed command;
    a command v3.2 cannot run (no target mode) that it marks unrun is failed too."""
    itype = f"m5.t{uuid.uuid4().hex[:8]}xl"
    client_id, caller, agent_id, instance_id = _v3_agent(make_tenant, itype)
    status, queued = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert status == 201, queued
    # v3.x is answered the bare list (the first v3.2 builds iterate the answer itself)
    assert [c["id"] for c in caller.get(f"/api/agents/{agent_id}/pending-commands")[1]] == [queued["command"]["id"]]
    status, reply = caller.post(f"/api/agents/{agent_id}/mark-command-executed", {"command_id": queued["command"]["id"]})
    assert status == 200 and reply["command"]["status"] == "failed", reply
    assert reply["command"]["success"] is False and "no switch report" in reply["command"]["message"]

    status, queued = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                 {"target": "pool", "pool_id": f"{itype}.eu-west-1b"})
    assert caller.get(f"/api/agents/{agent_id}/pending-commands")[1][0]["id"] == queued["command"]["id"]
    new = new_instance_id()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _v3_switch_report(instance_id, new, itype))
    assert status == 200 and reply["commands_completed"] == [queued["command"]["id"]], reply
    status, reply = caller.post(f"/api/agents/{agent_id}/mark-command-executed", {"command_id": queued["command"]["id"]})
    assert status == 200 and reply["replay"] is True and reply["command"]["status"] == "completed", reply

    # a command without a target mode (v3.2 marks it executed unrun)
    cmd = new_command(command_id=f"cmd-{uuid.uuid4().hex[:8]}", client_id=client_id, agent_id=agent_id,
                      command_type="health_check", priority=10, now=now_utc())
    enqueue(bootstrap.command_store(), cmd)
    [delivered] = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]
    assert delivered["id"] == cmd.command_id and delivered["target_mode"] is None
    status, reply = caller.post(f"/api/agents/{agent_id}/mark-command-executed", {"command_id": cmd.command_id})
    assert status == 200 and reply["command"]["status"] == "failed" and "not executed" in reply["command"]["message"]
