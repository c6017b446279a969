"""Bad input is answered with a JSON 4xx and leaves every table exactly as it was.

GIVEN a tenant with an agent holding an executing command and a standby replica
WHEN an agent endpoint (or admin create-client) receives malformed JSON, wrong types, missing fields,
     impossible prices or an oversized body
THEN the answer is a 4xx ``{error, message, field?}`` and a scan of every table is unchanged.

Reports of what already happened (switch, termination, cleanup, a command's result, replica status,
prices) are the exception for their *secondary* fields: refusing them would lose the record of an
event that happened anyway, so such a field is dropped and named in ``warnings`` (``DROPPED`` below,
each on a fresh tenant); only what ties the report to its agent and instance refuses it.

GET endpoints are not here: config writes nothing; pending-commands leases commands by design but takes
no body, so there is no bad input for it to reject.
"""

from __future__ import annotations

import json
import uuid

import pytest
from chalice.test import Client

from chalicelib.tables import ALL_TABLES
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.system_events import SystemEventTable
from tests.api._support import (
    assert_error,
    SNAPSHOT_REGIONS,
    canonical,
    described_instances,
    diff_snapshots,
    iso,
    mock_instances,
    mock_items,
    scan_items,
    shifted,
    snapshot_tables,
    snapshot_world,
)
from tests.conftest import Caller, account_instance, aws_client, new_instance_id, registration

OVERSIZED = json.dumps({"instance_id": new_instance_id(), "pad": "x" * (256 * 1024 + 10)})
MALFORMED = '{"a":'

# Endpoint keys → path templates ({agent_id}, {command_id}, {replica_id} are the module tenant's).
ENDPOINTS = {
    "register": "/api/agents/register",
    "heartbeat": "/api/agents/{agent_id}/heartbeat",
    "pricing-report": "/api/agents/{agent_id}/pricing-report",
    "executed": "/api/agents/{agent_id}/commands/{command_id}/executed",
    "extend": "/api/agents/{agent_id}/commands/{command_id}/extend",
    "mark-command-executed": "/api/agents/{agent_id}/mark-command-executed",
    "switch-report": "/api/agents/{agent_id}/switch-report",
    "termination": "/api/agents/{agent_id}/termination",
    "cleanup-report": "/api/agents/{agent_id}/cleanup-report",
    "decide": "/api/agents/{agent_id}/decide",
    "issue-switch-command": "/api/agents/{agent_id}/issue-switch-command",
    "termination-imminent": "/api/agents/{agent_id}/termination-imminent",
    "rebalance-recommendation": "/api/agents/{agent_id}/rebalance-recommendation",
    "create-emergency-replica": "/api/agents/{agent_id}/create-emergency-replica",
    "replicas": "/api/agents/{agent_id}/replicas",
    "replica-put": "/api/agents/{agent_id}/replicas/{replica_id}",
    "replica-delete": "/api/agents/{agent_id}/replicas/{replica_id}",
    "replica-promote": "/api/agents/{agent_id}/replicas/{replica_id}/promote",
    "replica-status": "/api/agents/{agent_id}/replicas/{replica_id}/status",
    "replica-sync-status": "/api/agents/{agent_id}/replicas/{replica_id}/sync-status",
    "manual-replica-enable": "/api/agents/{agent_id}/manual-replica/enable",
    "manual-replica-disable": "/api/agents/{agent_id}/manual-replica/disable",
    "manual-switch": "/api/agents/{agent_id}/manual-switch",
    "client-config": "/api/client/agents/{agent_id}/config",
}
# Every endpoint is a POST unless named here.
METHODS = {"replica-put": "PUT", "replica-delete": "DELETE"}
# Endpoints whose body carries no fields of their own: only the raw-body cases (malformed, array, oversized).
NO_FIELDS = {"extend", "decide", "replica-delete", "manual-replica-enable", "manual-replica-disable", "manual-switch"}


def _pool(price, **extra):
    return {"instance_type": "m5.large", "az": "eu-west-1a", "price": price, **extra}


def _pricing(*pools, **pricing):
    return {"instance": {"instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1a"},
            "pricing": {"on_demand_price": 0.107, "spot_pools": list(pools), **pricing}}


def _switch(**overrides):
    body = {"old_instance": {"instance_type": "m5.large", "az": "eu-west-1a", "mode": "spot"},
            "new_instance": {"instance_id": new_instance_id(), "instance_type": "m5.large",
                             "az": "eu-west-1b", "mode": "spot"},
            "prices": {"on_demand": 0.107, "old_spot": 0.04, "new_spot": 0.031},
            "timing": {"switch_initiated_at": "2026-01-01T00:00:00Z"}}
    body.update(overrides)
    return body


def _reg(**overrides):
    body = registration(**overrides)
    return {k: v for k, v in body.items() if v is not None}


def _without(body: dict, key: str) -> dict:
    return {k: v for k, v in body.items() if k != key}


# (case id, endpoint, JSON body, expected status, expected field or None when there is no single field)
CASES = [
    # register
    ("register-instance-id-number", "register", lambda: _reg(instance_id=12345), 400, "instance_id"),
    ("register-instance-id-garbage", "register", lambda: _reg(instance_id="web-1"), 400, "instance_id"),
    ("register-missing-instance-id", "register", lambda: _without(_reg(), "instance_id"), 400, "instance_id"),
    ("register-missing-instance-type", "register", lambda: _without(_reg(), "instance_type"), 400,
     "instance_type"),
    ("register-missing-region", "register", lambda: _without(_reg(), "region"), 400, "region"),
    ("register-bad-az", "register", lambda: _reg(az="nowhere"), 400, "az"),
    ("register-fake-az", "register", lambda: _reg(az="eu-west-1-x001-1a"), 400, "az"),
    ("register-az-of-another-region", "register", lambda: _reg(az="us-east-1a"), 400, "az"),
    ("register-unknown-region", "register", lambda: _reg(region="aa-x-1", az="aa-x-1a"), 400, "az"),
    ("register-az-outside-region", "register", lambda: _reg(az="us-east-1a"), 400, "az"),
    ("register-bad-instance-type", "register", lambda: _reg(instance_type="M5 Large"), 400, "instance_type"),
    ("register-bad-logical-id", "register", lambda: _reg(logical_agent_id="web 1; drop"), 400,
     "logical_agent_id"),
    ("register-mode-list", "register", lambda: _reg(mode=["spot"]), 400, "mode"),
    ("register-hostname-too-long", "register", lambda: _reg(hostname="h" * 300), 400, "hostname"),
    ("register-types-not-list", "register", lambda: _reg(instance_types="m5a.large"), 400, "instance_types"),
    ("register-types-bad-shape", "register", lambda: _reg(instance_types=["m5a.large", "M5 LARGE"]), 400,
     "instance_types.1"),
    ("register-types-too-many", "register", lambda: _reg(instance_types=[f"m5.{n}xlarge" for n in range(2, 23)]),
     400, "instance_types"),
    ("register-types-other-architecture", "register", lambda: _reg(instance_types=["m6g.large"]), 400,
     "instance_types"),
    ("register-requirements-typo", "register", lambda: _reg(requirements={"vcpu_min": 2}), 400,
     "requirements.vcpu_min"),
    ("register-requirements-inverted", "register", lambda: _reg(requirements={"vcpus_min": 4, "vcpus_max": 2}),
     400, "requirements"),
    ("register-requirements-unmet", "register", lambda: _reg(requirements={"vcpus_min": 1000}), 400,
     "requirements"),
    # heartbeat
    ("heartbeat-bad-status", "heartbeat", lambda: {"status": "sleeping"}, 400, "status"),
    ("heartbeat-instance-id-number", "heartbeat", lambda: {"instance_id": 42}, 400, "instance_id"),
    ("heartbeat-monitored-not-list", "heartbeat", lambda: {"monitored_instances": "i-1"}, 400,
     "monitored_instances"),
    ("heartbeat-bad-instance-type", "heartbeat", lambda: {"instance_type": "M5 LARGE", "az": "eu-west-1a"},
     400, "instance_type"),
    ("heartbeat-bad-az", "heartbeat", lambda: {"instance_type": "m5.large", "az": "eu-west-1"}, 400, "az"),
    ("heartbeat-az-of-another-region", "heartbeat", lambda: {"instance_type": "m5.large", "az": "us-east-1a"},
     400, "az"),
    # pricing-report
    ("pricing-missing-pricing", "pricing-report", lambda: {"instance": {}}, 400, "pricing"),
    ("pricing-spot-zero", "pricing-report", lambda: _pricing(_pool(0)), 400, "pricing.spot_pools.0.price"),
    ("pricing-spot-150", "pricing-report", lambda: _pricing(_pool(150)), 400, "pricing.spot_pools.0.price"),
    ("pricing-spot-negative", "pricing-report", lambda: _pricing(_pool(-0.03)), 400,
     "pricing.spot_pools.0.price"),
    ("pricing-spot-abc", "pricing-report", lambda: _pricing(_pool("abc")), 400, "pricing.spot_pools.0.price"),
    ("pricing-spot-nan", "pricing-report", lambda: _pricing(_pool("NaN")), 400, "pricing.spot_pools.0.price"),
    ("pricing-spot-infinity", "pricing-report", lambda: _pricing(_pool("Infinity")), 400,
     "pricing.spot_pools.0.price"),
    ("pricing-spot-list", "pricing-report", lambda: _pricing(_pool([0.03])), 400,
     "pricing.spot_pools.0.price"),
    ("pricing-spot-bool", "pricing-report", lambda: _pricing(_pool(True)), 400, "pricing.spot_pools.0.price"),
    ("pricing-second-pool-bad", "pricing-report",
     lambda: _pricing(_pool(0.03), _pool(0, az="eu-west-1b")), 400, "pricing.spot_pools.1.price"),
    ("pricing-ondemand-500", "pricing-report", lambda: _pricing(_pool(0.03), on_demand_price=500), 400,
     "pricing.on_demand_price"),
    ("pricing-ondemand-zero", "pricing-report", lambda: _pricing(_pool(0.03), on_demand_price=0), 400,
     "pricing.on_demand_price"),
    ("pricing-current-negative", "pricing-report", lambda: _pricing(_pool(0.03), current_spot_price=-1), 400,
     "pricing.current_spot_price"),
    ("pricing-pool-unnamed", "pricing-report", lambda: _pricing({"price": 0.03}), 400, "pricing.spot_pools.0"),
    ("pricing-pool-id-garbage", "pricing-report", lambda: _pricing({"pool_id": "garbage", "price": 0.03}), 400,
     "pricing.spot_pools.0.pool_id"),
    ("pricing-pool-bad-az", "pricing-report", lambda: _pricing(_pool(0.03, az="mars-1")), 400,
     "pricing.spot_pools.0"),
    ("pricing-collected-two-days-ago", "pricing-report",
     lambda: _pricing(_pool(0.03), collected_at=iso(shifted(-2 * 86400))), 400, "pricing.collected_at"),
    ("pricing-collected-in-future", "pricing-report",
     lambda: _pricing(_pool(0.03), collected_at=iso(shifted(3600))), 400, "pricing.collected_at"),
    ("pricing-collected-garbage", "pricing-report", lambda: _pricing(_pool(0.03), collected_at="yesterday"),
     400, "pricing.collected_at"),
    ("pricing-instance-id-number", "pricing-report",
     lambda: {**_pricing(_pool(0.03)), "instance": {"instance_id": 7}}, 400, "instance.instance_id"),
    ("pricing-pools-not-list", "pricing-report", lambda: _pricing(spot_pools={"a": 1}), 400,
     "pricing.spot_pools"),
    # commands/{id}/executed
    ("executed-success-maybe", "executed", lambda: {"success": "maybe"}, 400, "success"),
    ("executed-missing-success", "executed", lambda: {"message": "done"}, 400, "success"),
    ("executed-success-list", "executed", lambda: {"success": [True]}, 400, "success"),
    ("executed-message-too-long", "executed", lambda: {"success": True, "message": "m" * 2001}, 400, "message"),
    # mark-command-executed (v3.2)
    ("mark-missing-command-id", "mark-command-executed", lambda: {"success": True}, 400, "command_id"),
    ("mark-command-id-number", "mark-command-executed", lambda: {"command_id": 17, "success": True}, 400,
     "command_id"),
    ("mark-success-maybe", "mark-command-executed",
     lambda: {"command_id": "{command_id}", "success": "maybe"}, 400, "success"),
    ("mark-unknown-command", "mark-command-executed",
     lambda: {"command_id": "cmd-does-not-exist", "success": True}, 404, "command_id"),
    # switch-report
    ("switch-missing-new-instance", "switch-report", lambda: _without(_switch(), "new_instance"), 400,
     "new_instance"),
    ("switch-new-instance-id-number", "switch-report",
     lambda: _switch(new_instance={"instance_id": 99, "mode": "spot"}), 400, "new_instance.instance_id"),
    ("switch-missing-timing", "switch-report", lambda: _without(_switch(), "timing"), 400, "timing"),
    ("switch-timing-without-start", "switch-report", lambda: _switch(timing={}), 400, "timing"),
    ("switch-timing-garbage", "switch-report", lambda: _switch(timing={"switch_initiated_at": "soon"}), 400,
     "timing.switch_initiated_at"),
    ("switch-old-spot-zero", "switch-report",
     lambda: _switch(prices={"on_demand": 0.107, "old_spot": 0, "new_spot": 0.03}), 400, "prices.old_spot"),
    ("switch-new-spot-150", "switch-report",
     lambda: _switch(prices={"on_demand": 0.107, "old_spot": 0.04, "new_spot": 150}), 400, "prices.new_spot"),
    ("switch-ondemand-500", "switch-report",
     lambda: _switch(prices={"on_demand": 500, "old_spot": 0.04, "new_spot": 0.03}), 400, "prices.on_demand"),
    ("switch-price-abc", "switch-report",
     lambda: _switch(prices={"on_demand": 0.107, "old_spot": "abc", "new_spot": 0.03}), 400,
     "prices.old_spot"),
    ("switch-bad-trigger", "switch-report", lambda: _switch(trigger="gut-feeling"), 400, "trigger"),
    ("switch-bad-new-pool", "switch-report",
     lambda: _switch(new_instance={"instance_id": new_instance_id(), "pool_id": "junk"}), 400,
     "new_instance.pool_id"),
    ("switch-bad-new-az", "switch-report",
     lambda: _switch(new_instance={"instance_id": new_instance_id(), "instance_type": "m5.large",
                                   "az": "nowhere"}), 400, "new_instance.az"),
    ("switch-unknown-command", "switch-report", lambda: _switch(command_id="cmd-nope"), 404, "command_id"),
    ("switch-success-maybe", "switch-report", lambda: _switch(success="maybe"), 400, "success"),
    # termination
    ("termination-instance-id-number", "termination", lambda: {"instance_id": 5}, 400, "instance_id"),
    ("termination-unknown-instance", "termination", lambda: {"instance_id": new_instance_id()}, 404,
     "instance_id"),
    ("termination-time-garbage", "termination", lambda: {"termination_time": "soon"}, 400, "termination_time"),
    ("termination-reason-too-long", "termination", lambda: {"reason": "r" * 501}, 400, "reason"),
    # cleanup-report
    ("cleanup-deleted-not-list", "cleanup-report", lambda: {"snapshots": {"deleted": "snap-1"}}, 400,
     "snapshots.deleted"),
    ("cleanup-amis-list", "cleanup-report", lambda: {"amis": ["ami-1"]}, 400, "amis"),
    ("cleanup-timestamp-garbage", "cleanup-report", lambda: {"timestamp": "noonish"}, 400, "timestamp"),
    # decisions (decide records a decision only on success; the body carries no fields of its own)
    ("issue-target-mode-unknown", "issue-switch-command", lambda: {"target_mode": "reserved"}, 400,
     "target_mode"),
    ("issue-spot-without-pool", "issue-switch-command", lambda: {"target_mode": "spot"}, 400, None),
    ("issue-urgent-not-bool", "issue-switch-command", lambda: {"target_mode": "ondemand", "urgent": "maybe"},
     400, "urgent"),
    ("issue-pool-garbage", "issue-switch-command", lambda: {"target_mode": "spot", "target_pool_id": "nope"},
     400, "target_pool_id"),
    # interruption signals from the agent
    ("imminent-instance-id-number", "termination-imminent", lambda: {"instance_id": 5}, 400, "instance_id"),
    ("imminent-time-garbage", "termination-imminent", lambda: {"termination_time": "soon"}, 400,
     "termination_time"),
    ("imminent-unknown-instance", "termination-imminent", lambda: {"instance_id": new_instance_id()}, 404,
     "instance_id"),
    ("rebalance-instance-id-garbage", "rebalance-recommendation", lambda: {"instance_id": "web-1"}, 400,
     "instance_id"),
    ("rebalance-detected-garbage", "rebalance-recommendation", lambda: {"detected_at": "now-ish"}, 400,
     "detected_at"),
    ("emergency-missing-signal", "create-emergency-replica", lambda: {}, 400, "signal_type"),
    ("emergency-unknown-signal", "create-emergency-replica", lambda: {"signal_type": "meteor"}, 400,
     "signal_type"),
    # replicas
    ("replicas-pool-garbage", "replicas", lambda: {"pool_id": "garbage"}, 400, "pool_id"),
    ("replicas-too-many-tags", "replicas", lambda: {"tags": {f"k{i}": "v" for i in range(21)}}, 400, "tags"),
    ("replicas-reserved-tag", "replicas", lambda: {"tags": {"ManagedBy": "someone"}}, 400, "tags"),
    ("replicas-instance-id-number", "replicas", lambda: {"instance_id": 7}, 400, "instance_id"),
    ("replicas-ready-without-instance", "replicas", lambda: {"status": "ready"}, 400, "status"),
    ("replicas-bad-zone", "replicas", lambda: {"exclude_zones": ["nowhere"]}, 400, "exclude_zones"),
    ("replicas-cost-abc", "replicas", lambda: {"max_hourly_cost": "abc"}, 400, "max_hourly_cost"),
    ("replica-put-missing-instance", "replica-put", lambda: {"status": "syncing"}, 400, "instance_id"),
    ("replica-put-instance-garbage", "replica-put", lambda: {"instance_id": "i-xyz"}, 400, "instance_id"),
    ("replica-put-status-promoted", "replica-put", lambda: {"instance_id": "{replica_instance_id}", "status": "promoted"},
     400, "status"),
    ("replica-put-launched-garbage", "replica-put",
     lambda: {"instance_id": "{replica_instance_id}", "launched_at": "earlier"}, 400, "launched_at"),
    ("replica-promote-demote-maybe", "replica-promote", lambda: {"demote_old_primary": "maybe"}, 400,
     "demote_old_primary"),
    ("replica-status-sleeping", "replica-status", lambda: {"status": "sleeping"}, 400, "status"),
    ("replica-status-missing", "replica-status", lambda: {"error_message": "x"}, 400, "status"),
    ("replica-status-message-too-long", "replica-status", lambda: {"status": "failed", "error_message": "e" * 501},
     400, "error_message"),
    ("replica-sync-missing", "replica-sync-status", lambda: {"state_transfer_progress": 50}, 400, "sync_status"),
    ("replica-sync-progress-101", "replica-sync-status",
     lambda: {"sync_status": "syncing", "state_transfer_progress": 101}, 400, "state_transfer_progress"),
    ("replica-sync-latency-abc", "replica-sync-status", lambda: {"sync_status": "syncing", "sync_latency_ms": "fast"},
     400, "sync_latency_ms"),
    # client config (modes, hand-off)
    ("config-both-modes", "client-config", lambda: {"auto_switch_enabled": True, "manual_replica_enabled": True},
     400, "manual_replica_enabled"),
    ("config-wait-negative", "client-config", lambda: {"terminate_wait_seconds": -5}, 400, "terminate_wait_seconds"),
    ("config-eip-without-allocation", "client-config", lambda: {"handover": "eip"}, 400, "eip_allocation_id"),
    ("config-port-string", "client-config", lambda: {"target_port": "80"}, 400, "target_port"),
    ("config-types-bad-shape", "client-config", lambda: {"instance_types": ["nope"]}, 400, "instance_types.0"),
    ("config-types-other-architecture", "client-config", lambda: {"instance_types": ["c7g.large"]}, 400,
     "instance_types"),
    ("config-requirements-unmet", "client-config", lambda: {"type_requirements": {"memory_gib_min": 30000}}, 400,
     "type_requirements"),
    ("config-requirements-not-object", "client-config", lambda: {"type_requirements": "2 vcpu"}, 400,
     "type_requirements"),
]

# Cases of fact reports whose bad field is secondary: recorded without it, the field named in warnings.
FACT_CASE_IDS = {
    "pricing-spot-zero", "pricing-spot-150", "pricing-spot-negative", "pricing-spot-abc", "pricing-spot-nan",
    "pricing-spot-infinity", "pricing-spot-list", "pricing-spot-bool", "pricing-second-pool-bad",
    "pricing-ondemand-500", "pricing-ondemand-zero", "pricing-current-negative", "pricing-pool-unnamed",
    "pricing-pool-id-garbage", "pricing-pool-bad-az", "pricing-collected-two-days-ago",
    "pricing-collected-in-future", "pricing-collected-garbage", "pricing-instance-id-number",
    "pricing-pools-not-list", "executed-message-too-long", "switch-missing-timing",
    "switch-timing-without-start", "switch-timing-garbage", "switch-old-spot-zero", "switch-new-spot-150",
    "switch-ondemand-500", "switch-price-abc", "switch-bad-trigger", "switch-bad-new-pool", "switch-bad-new-az",
    "switch-unknown-command", "termination-time-garbage", "termination-reason-too-long",
    "cleanup-deleted-not-list", "cleanup-amis-list", "cleanup-timestamp-garbage", "replica-put-status-promoted",
    "replica-put-launched-garbage", "replica-status-message-too-long", "replica-sync-progress-101",
    "replica-sync-latency-abc",
}
DROPPED = [case for case in CASES if case[0] in FACT_CASE_IDS]
CASES = [case for case in CASES if case[0] not in FACT_CASE_IDS]
# Fact reports with no field that can refuse them (only the raw-body cases below refuse them).
NEVER_REFUSED = {"cleanup-report"}

# Every endpoint also gets a truncated JSON body, a non-object body and an oversized body.
RAW_CASES = [(f"{name}-{kind}", name, raw, status, code)
             for name in ENDPOINTS
             for kind, raw, status, code in (("malformed-json", MALFORMED, 400, "malformed_json"),
                                             ("json-array", "[1, 2]", 400, "validation_error"),
                                             ("oversized", OVERSIZED, 413, "payload_too_large"))]


@pytest.fixture(scope="module")
def world(chalice_app, admin_key):
    """One tenant for the module: an agent whose force-switch command is executing (leased) and its standby."""
    yield from _world(chalice_app, admin_key)


@pytest.fixture
def fresh_world(chalice_app, admin_key):
    """The same setup for one test (a fact report that is recorded changes its world)."""
    yield from _world(chalice_app, admin_key)


def _world(chalice_app, admin_key):
    with Client(chalice_app, stage_name="dev") as client:
        admin = Caller(client.http, admin=admin_key)
        status, body = admin.post("/api/admin/clients/create", {"name": f"nw-{uuid.uuid4().hex[:10]}",
                                                              "legacy_agents": True})
        assert status == 201, body
        client_id = body["client_id"]
        caller = Caller(client.http, token=body["client_token"])
        reg = registration()
        status, body = caller.post("/api/agents/register", reg)
        assert status == 200, body
        agent_id = body["agent_id"]
        status, body = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                   {"target": "ondemand"})
        assert status == 201, body
        command_id = body["command"]["id"]
        status, body = caller.get(f"/api/agents/{agent_id}/pending-commands")
        assert [c["status"] for c in body["commands"]] == ["executing"]
        # a standby the agent launched (recorded in manual mode), then auto-switch back on in the table
        status, body = caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})
        assert status == 200, body
        replica_instance_id = account_instance("eu-west-1b")
        status, body = caller.post(f"/api/agents/{agent_id}/replicas",
                                   {"instance_id": replica_instance_id, "pool_id": "m5.large.eu-west-1b"})
        assert status == 201, body
        replica_id = body["replica_id"]
        AgentTable(client_id, agent_id).update(
            actions=[AgentTable.config.manual_replica_enabled.set(False),
                     AgentTable.config.auto_switch_enabled.set(True)])
        yield {"caller": caller, "admin": admin, "agent_id": agent_id, "command_id": command_id,
               "replica_id": replica_id, "replica_instance_id": replica_instance_id}


def _path(world, endpoint: str) -> str:
    return ENDPOINTS[endpoint].format(agent_id=world["agent_id"], command_id=world["command_id"],
                                      replica_id=world["replica_id"])


def _method(endpoint: str) -> str:
    return METHODS.get(endpoint, "POST")


def _fill_ids(value, world):
    """Replace ``{command_id}`` placeholders inside a body with the module's command id."""
    if isinstance(value, dict):
        return {k: _fill_ids(v, world) for k, v in value.items()}
    if value == "{command_id}":
        return world["command_id"]
    if value == "{replica_instance_id}":
        return world["replica_instance_id"]
    return value


def test_snapshot_reads_what_a_scan_reads(world):
    """GIVEN the tables after the module setup WHEN read from the mock and through Scan THEN identical,
    so a snapshot cannot miss a write a Scan would show."""
    assert len(ALL_TABLES) >= 12
    for table in ALL_TABLES:
        fast = mock_items(table)
        assert fast is not None, table.Meta.table_name
        assert canonical(fast) == canonical(scan_items(table)), table.Meta.table_name
    assert sum(len(items) for items in snapshot_tables().values()) > 0


def test_ec2_snapshot_reads_what_describe_reads(world):
    """GIVEN instances in both snapshot regions, one tagged and one stopped WHEN read from the mock and through
    DescribeInstances THEN identical (ids, states, types, images, tags), so an EC2 snapshot cannot miss a
    change DescribeInstances would show."""
    tagged, stopped = account_instance("us-east-1a"), account_instance("eu-west-1c")
    aws_client("ec2", "us-east-1").create_tags(Resources=[tagged], Tags=[{"Key": "k", "Value": "v"}])
    aws_client("ec2", "eu-west-1").stop_instances(InstanceIds=[stopped])
    for region in SNAPSHOT_REGIONS:
        fast = mock_instances(region)
        assert fast is not None and fast, region
        assert canonical(fast) == canonical(described_instances(region)), region
    assert ("k", "v") in next(i for i in mock_instances("us-east-1") if i["id"] == tagged)["tags"]
    assert next(i for i in mock_instances("eu-west-1") if i["id"] == stopped)["state"] == "stopped"
    assert world["replica_instance_id"] in {i["id"] for i in mock_instances("eu-west-1")}


def test_snapshot_sees_a_valid_write(world):
    """GIVEN a valid heartbeat WHEN posted between two snapshots THEN the agents table shows the change
    (the control for every 'nothing written' assertion below)."""
    before = snapshot_world()
    status, _ = world["caller"].post(_path(world, "heartbeat"), {"status": "online"})
    assert status == 200
    changed = diff_snapshots(before, snapshot_world())
    assert set(changed) == {AgentTable.Meta.table_name}  # last_heartbeat_at moved


def test_every_agent_write_endpoint_is_covered(chalice_app):
    """GIVEN the app WHEN its agent POST/PUT/DELETE routes are listed THEN each one has bad-input cases here."""
    agent_writes = {(path, method) for path, methods in chalice_app.routes.items() for method in methods
                    if path.startswith("/api/agents") and method in ("POST", "PUT", "DELETE")}
    listed = {(path, _method(name)) for name, path in ENDPOINTS.items()}
    assert agent_writes == {(path, method) for path, method in listed if path.startswith("/api/agents")}
    assert all(method in chalice_app.routes[path] for path, method in listed)
    # the NO_FIELDS endpoints take no fields of their own: only the raw-body cases apply to them
    assert {endpoint for _, endpoint, *_ in CASES} == set(ENDPOINTS) - NO_FIELDS - NEVER_REFUSED


@pytest.mark.parametrize("case, endpoint, make_body, status, field", CASES, ids=[c[0] for c in CASES])
def test_bad_body_is_rejected_and_nothing_is_written(world, case, endpoint, make_body, status, field):
    """GIVEN a bad body WHEN it is posted THEN a JSON 4xx (with its field) and no table changes."""
    body = _fill_ids(make_body(), world)
    before = snapshot_world()
    got, reply = world["caller"].call(_method(endpoint), _path(world, endpoint), body)
    assert_error(got, reply, status, field=field)
    if status == 400:
        assert reply["error"] in ("validation_error", "bad_request"), reply
    assert diff_snapshots(before, snapshot_world()) == {}


@pytest.mark.parametrize("case, endpoint, make_body, status, field", DROPPED, ids=[c[0] for c in DROPPED])
def test_a_fact_report_keeps_what_is_plausible_and_names_what_it_dropped(fresh_world, case, endpoint,
                                                                         make_body, status, field):
    """GIVEN a report of something that happened with one bad secondary field WHEN it is posted THEN it is
    recorded (2xx), the answer's ``warnings`` names the field, and the activity log says so."""
    world = fresh_world
    body = _fill_ids(make_body(), world)
    before = snapshot_world()
    got, reply = world["caller"].call(_method(endpoint), _path(world, endpoint), body)
    assert got in (200, 201), (got, reply)
    paths = [w.split(":")[0] for w in reply["warnings"]]
    assert any(p.startswith(field or "") or (field or "").startswith(p) for p in paths), reply["warnings"]
    changed = diff_snapshots(before, snapshot_world())
    assert any("report_warnings" in item for item in changed.get(SystemEventTable.Meta.table_name, {}).get("added", []))


@pytest.mark.parametrize("case, endpoint, raw, status, code", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_unparseable_or_oversized_body_is_rejected_and_nothing_is_written(world, case, endpoint, raw,
                                                                          status, code):
    """GIVEN a truncated, non-object or > 256 KiB body WHEN it is posted THEN 400/413 and no table changes."""
    before = snapshot_world()
    got, reply = world["caller"].call(_method(endpoint), _path(world, endpoint), raw=raw)
    assert_error(got, reply, status, code=code)
    assert diff_snapshots(before, snapshot_world()) == {}


def test_declared_oversized_content_length_is_rejected(world):
    """GIVEN a Content-Length over the limit WHEN posted THEN 413 before the body is even parsed."""
    before = snapshot_world()
    got, reply = world["caller"].post(_path(world, "heartbeat"), {"status": "online"},
                                      headers={"Content-Length": str(256 * 1024 + 1)})
    assert_error(got, reply, 413, code="payload_too_large")
    assert diff_snapshots(before, snapshot_world()) == {}


def test_the_module_command_is_still_executing(world):
    """GIVEN every bad result call above WHEN the command is read THEN it is still executing, unchanged."""
    from chalicelib import bootstrap

    cmd = bootstrap.command_store().get(world["agent_id"], world["command_id"])
    assert cmd.status.value == "executing" and cmd.attempts == 1 and cmd.success is None


ADMIN_CASES = [
    ("missing-name", {}, 400, "name"),
    ("empty-name", {"name": ""}, 400, "name"),
    ("blank-name", {"name": "    "}, 400, "name"),
    ("name-too-long", {"name": "n" * 101}, 400, "name"),
    ("name-number", {"name": 42}, 400, "name"),
    ("bad-email", {"name": "ok-name", "email": "not-an-email"}, 400, "email"),
    ("discount-150", {"name": "ok-name", "ondemand_discount_percent": 150}, 400, "ondemand_discount_percent"),
    ("discount-negative", {"name": "ok-name", "ondemand_discount_percent": -1}, 400,
     "ondemand_discount_percent"),
    ("discount-nan", {"name": "ok-name", "ondemand_discount_percent": "NaN"}, 400, "ondemand_discount_percent"),
    ("ttl-zero", {"name": "ok-name", "token_ttl_days": 0}, 400, "token_ttl_days"),
    ("ttl-huge", {"name": "ok-name", "token_ttl_days": 5000}, 400, "token_ttl_days"),
    ("ttl-abc", {"name": "ok-name", "token_ttl_days": "abc"}, 400, "token_ttl_days"),
    ("ttl-fraction", {"name": "ok-name", "token_ttl_days": 1.5}, 400, "token_ttl_days"),
]


@pytest.mark.parametrize("case, body, status, field", ADMIN_CASES, ids=[c[0] for c in ADMIN_CASES])
def test_admin_create_client_bad_input_writes_nothing(world, case, body, status, field):
    """GIVEN a bad create-client body WHEN the admin posts it THEN 400 with the field and no new client."""
    body = {**body, "name": f"{body['name']}-{uuid.uuid4().hex[:6]}"} if body.get("name") == "ok-name" else body
    before = snapshot_world()
    got, reply = world["admin"].post("/api/admin/clients/create", body)
    assert_error(got, reply, status, code="validation_error", field=field)
    assert diff_snapshots(before, snapshot_world()) == {}


@pytest.mark.parametrize("raw, status, code", [(MALFORMED, 400, "malformed_json"),
                                               ("[]", 400, "validation_error"),
                                               (json.dumps({"name": "x" * (300 * 1024)}), 413,
                                                "payload_too_large")],
                         ids=["malformed-json", "json-array", "oversized"])
def test_admin_create_client_unparseable_body_writes_nothing(world, raw, status, code):
    """GIVEN an unparseable or oversized body WHEN the admin posts it THEN 400/413 and no new client."""
    before = snapshot_world()
    got, reply = world["admin"].post("/api/admin/clients/create", raw=raw)
    assert_error(got, reply, status, code=code)
    assert diff_snapshots(before, snapshot_world()) == {}


def test_admin_create_client_without_the_key_writes_nothing(world):
    """GIVEN a valid body but the tenant's token instead of the admin key WHEN posted THEN 401, no write."""
    before = snapshot_world()
    got, reply = world["caller"].post("/api/admin/clients/create", {"name": f"nokey-{uuid.uuid4().hex[:6]}"})
    assert_error(got, reply, 401, code="unauthorized")
    assert diff_snapshots(before, snapshot_world()) == {}
