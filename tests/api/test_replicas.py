"""Replica, SEF and client-config routes against moto (the legacy routes and the product's standby model).

Server-launched standbys need a real primary in moto EC2 (the launch copies its AMI, security groups
and subnet), so those tests register through ``failover_support.register_agent`` (us-east-1, fresh
prices: us-east-1a 0.030 < b 0.035 < c 0.040 < d 0.045, primary in us-east-1a). Agent-launched
replicas (the legacy ``create_replica`` path) need no EC2 at all.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from chalicelib import replicas as replicas_service
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.errors import ConflictError
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable
from tests.api._support import assert_error, diff_snapshots, iso, snapshot_tables, snapshot_world
from tests.conftest import aws_client, invoke_schedule, new_instance_id, registration
from tests.e2e.failover_support import ec2, register_agent, state_of, tags_of, wait_for
from localmode.embedded_aws import image_id

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")

GONE = ("shutting-down", "terminated")


def agent_launched(region: str = "eu-west-1", az: str = "eu-west-1b") -> str:
    """An instance the agent launched itself (untagged by us, in another pool than the eu-west-1a primary):
    it must exist in the client's account."""
    client = aws_client("ec2", region)
    image = image_id(client)
    return client.run_instances(ImageId=image, InstanceType="m5.large", MinCount=1, MaxCount=1,
                                Placement={"AvailabilityZone": az})["Instances"][0]["InstanceId"]


def agent_row(client_id, agent_id):
    return AgentTable.get(client_id, agent_id, consistent_read=True)


def config(caller, agent_id, **body):
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", body)
    assert status == 200, reply
    return reply


def manual_agent(make_tenant, **settings):
    """A us-east-1 agent with a real primary, in manual-replica mode through the API."""
    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    config(caller, agent_id, manual_replica_enabled=True, **settings)
    return client_id, caller, agent_id, primary, itype


def legacy_manual_agent(make_tenant):
    """An eu-west-1 agent (no EC2 primary) in manual-replica mode: for the agent-launched path."""
    client_id, caller = make_tenant()
    reg = registration()
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    config(caller, agent_id, manual_replica_enabled=True)
    return client_id, caller, agent_id, reg


def agent_recorded_standby(make_tenant):
    """A legacy manual-replica agent and a standby it launched itself and then recorded (legacy create_replica):
    ``(caller, agent_id, instance_id, the replica's path)``, the replica still ``launching``."""
    _, caller, agent_id, reg = legacy_manual_agent(make_tenant)
    instance_id = agent_launched()
    status, created = caller.post(f"/api/agents/{agent_id}/replicas", {
        "instance_id": instance_id, "replica_type": "manual", "parent_instance_id": reg["instance_id"],
        "pool_id": "m5.large.eu-west-1b", "status": "launching"})
    assert status == 201, created
    return caller, agent_id, instance_id, f"/api/agents/{agent_id}/replicas/{created['replica_id']}"


def delete(caller, path):
    return caller.call("DELETE", path)


def put(caller, path, body):
    return caller.call("PUT", path, body)


# --- client config: modes, auto-terminate, hand-off -------------------------------------------------

def test_config_turns_one_mode_off_when_the_other_goes_on_and_bumps_the_version(tenant_with_agent):
    _, caller, agent_id, _ = tenant_with_agent
    _, before = caller.get(f"/api/agents/{agent_id}/config")
    assert before["auto_switch_enabled"] is True and before["manual_replica_enabled"] is False

    reply = config(caller, agent_id, manual_replica_enabled=True, terminate_wait_seconds=0)
    assert reply["manual_replica_enabled"] is True and reply["auto_switch_enabled"] is False
    assert reply["terminate_wait_seconds"] == 0 and reply["config_version"] == before["config_version"] + 1

    reply = config(caller, agent_id, auto_switch_enabled=True)
    assert reply["auto_switch_enabled"] is True and reply["manual_replica_enabled"] is False
    assert reply["config_version"] == before["config_version"] + 2
    _, after = caller.get(f"/api/agents/{agent_id}/config")  # what the agent reads is what was written
    assert {k: after[k] for k in ("auto_switch_enabled", "manual_replica_enabled", "config_version")} == \
        {"auto_switch_enabled": True, "manual_replica_enabled": False, "config_version": before["config_version"] + 2}


def test_both_modes_on_in_one_body_is_400_and_writes_nothing(tenant_with_agent):
    _, caller, agent_id, _ = tenant_with_agent
    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config",
                                {"auto_switch_enabled": True, "manual_replica_enabled": True})
    assert_error(status, reply, 400, code="validation_error", field="manual_replica_enabled")
    assert diff_snapshots(before, snapshot_tables()) == {}


@pytest.mark.parametrize("body, field", [
    ({"terminate_wait_seconds": -1}, "terminate_wait_seconds"),
    ({"terminate_wait_seconds": 86401}, "terminate_wait_seconds"),
    ({"terminate_wait_seconds": "300"}, "terminate_wait_seconds"),
    ({"terminate_wait_seconds": 1.5}, "terminate_wait_seconds"),
    ({"auto_terminate_enabled": "yes"}, "auto_terminate_enabled"),
    ({"auto_switch_enabled": None}, "auto_switch_enabled"),
    ({"manual_replica_enabled": 1}, "manual_replica_enabled"),
    ({"handover": "dns"}, "handover"),
    ({"eip_allocation_id": "eip-123"}, "eip_allocation_id"),
    ({"target_group_arn": "arn:aws:s3:::bucket"}, "target_group_arn"),
    ({"target_port": 0}, "target_port"),
    ({"target_port": 70000}, "target_port"),
    ({"min_savings_percent": 101}, "min_savings_percent"),
    ({"risk_threshold": 1.5}, "risk_threshold"),
    ({"risk_threshold": True}, "risk_threshold"),
    ({"max_switches_per_day": -1}, "max_switches_per_day"),
    ({"min_pool_duration_hours": "NaN"}, "min_pool_duration_hours"),
    ({"handover": "eip"}, "eip_allocation_id"),  # no allocation id given now or stored
    ({"handover": "target-group"}, "target_group_arn"),
    ({}, None),
    ({"replica_count": 3}, None),  # nothing this route knows
])
def test_bad_config_is_400_with_its_field_and_writes_nothing(tenant_with_agent, body, field):
    _, caller, agent_id, _ = tenant_with_agent
    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", body)
    assert_error(status, reply, 400, field=field)
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_handover_targets_are_checked_against_what_is_stored(tenant_with_agent):
    _, caller, agent_id, reg = tenant_with_agent  # eu-west-1
    regional = boto3.client("ec2", region_name=reg["region"])
    eip = regional.allocate_address(Domain="vpc")["AllocationId"]  # a real EIP of the client's account
    reply = config(caller, agent_id, eip_allocation_id=eip)
    assert reply["handover"] == "none"
    reply = config(caller, agent_id, handover="eip")  # the stored allocation id satisfies it
    assert reply["handover"] == "eip" and reply["eip_allocation_id"] == eip
    status, body = caller.post(f"/api/client/agents/{agent_id}/config", {"eip_allocation_id": None})
    assert_error(status, body, 400, field="eip_allocation_id")  # cannot clear it while eip is the hand-off
    other_region = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"
    status, body = caller.post(f"/api/client/agents/{agent_id}/config",
                               {"handover": "target-group", "target_group_arn": other_region})
    assert_error(status, body, 400, field="target_group_arn")
    vpc = regional.describe_vpcs()["Vpcs"][0]["VpcId"]
    arn = boto3.client("elbv2", region_name=reg["region"]).create_target_group(
        Name=f"tg-{agent_id[-8:]}", Protocol="HTTP", Port=8080, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    reply = config(caller, agent_id, handover="target-group", target_group_arn=arn, target_port=8080,
                   eip_allocation_id=None)
    assert (reply["handover"], reply["target_group_arn"], reply["target_port"], reply["eip_allocation_id"]) == \
        ("target-group", arn, 8080, None)


def test_a_config_write_that_races_another_answers_409_and_loses_nothing(tenant_with_agent, monkeypatch):
    client_id, caller, agent_id, _ = tenant_with_agent
    real_require = agent_repo.require
    calls = []

    def stale_then_concurrent_write(*args, **kwargs):
        record = real_require(*args, **kwargs)
        if not calls:  # someone else saves the config between our read and our write
            AgentTable(client_id, agent_id).update(actions=[AgentTable.config.risk_threshold.set(0.5),
                                                            AgentTable.config_version.add(1)])
        calls.append(1)
        return record

    monkeypatch.setattr(agent_repo, "require", stale_then_concurrent_write)
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"min_savings_percent": 40})
    assert_error(status, reply, 409, code="config_conflict")
    monkeypatch.undo()
    row = agent_row(client_id, agent_id)
    assert row.config.risk_threshold == 0.5 and row.config.min_savings_percent == 0  # theirs kept, ours not


def test_auto_switch_on_terminates_the_manual_standby_for_real(api, make_tenant):
    client_id, caller, agent_id, _, _ = manual_agent(make_tenant)
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201, standby
    reply = config(caller, agent_id, auto_switch_enabled=True)
    assert reply["manual_replica_enabled"] is False and reply["terminated_replicas"] == [standby["replica_id"]]
    assert state_of(standby["instance_id"]) in GONE
    assert replica_repo.get(agent_id, standby["replica_id"]).status.value == "terminated"
    assert agent_row(client_id, agent_id).current_replica_id is None


# --- POST/GET replicas ------------------------------------------------------------------------------

def test_create_replica_needs_manual_mode(tenant_with_agent):
    _, caller, agent_id, _ = tenant_with_agent
    before = snapshot_tables()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert_error(status, reply, 409, code="manual_mode_required")
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_server_launched_standby_is_real_and_there_is_exactly_one(api, make_tenant):
    client_id, caller, agent_id, primary, itype = manual_agent(make_tenant)
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"tags": {"team": "web"}})
    assert status == 201, reply
    # the cheapest pool other than the primary's (us-east-1a), launched in EC2 and in the slot
    assert reply["id"] == reply["replica_id"] and reply["pool_id"] == f"{itype}.us-east-1b"
    assert reply["az"] == "us-east-1b" and reply["status"] == "launching" and reply["replica_type"] == "manual"
    assert reply["hourly_cost"] == pytest.approx(0.035) and reply["created_by"] == "client"
    tags = tags_of(reply["instance_id"])
    assert tags["ReplicaId"] == reply["replica_id"] and tags["team"] == "web" and reply["tags_applied"] is True
    assert agent_row(client_id, agent_id).current_replica_id == reply["replica_id"]
    # a second one is refused before anything is launched or written
    before = snapshot_tables()
    status, again = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert_error(status, again, 409, code="replica_exists")
    assert diff_snapshots(before, snapshot_tables()) == {}
    launched = ec2().describe_instances(Filters=[{"Name": "tag:AgentId", "Values": [agent_id]}])
    assert len([i for r in launched["Reservations"] for i in r["Instances"]]) == 1


@pytest.mark.parametrize("body, field", [
    ({"pool_id": "{itype}.us-east-1a"}, "pool_id"),  # the primary's own pool
    ({"pool_id": "c5.large.us-east-1b"}, "pool_id"),  # another instance type
    ({"pool_id": "{itype}.eu-west-1b"}, "pool_id"),  # another region
    ({"pool_id": "garbage"}, "pool_id"),
    ({"exclude_zones": ["mars-1"]}, "exclude_zones"),
    ({"max_hourly_cost": -1}, "max_hourly_cost"),
    ({"tags": {"ManagedBy": "me"}}, "tags"),
    ({"tags": {"aws:x": "y"}}, "tags"),
    ({"tags": {f"k{i}": "v" for i in range(21)}}, "tags"),
    ({"instance_id": "web-1"}, "instance_id"),
    ({"status": "ready"}, "status"),  # only an agent-launched replica can start past launching
    ({"replica_type": "automatic-rebalance"}, "replica_type"),
])
def test_bad_replica_requests_are_400_and_launch_nothing(api, make_tenant, body, field):
    client_id, caller, agent_id, _, itype = manual_agent(make_tenant)
    body = {k: (v.replace("{itype}", itype) if isinstance(v, str) else v) for k, v in body.items()}
    before = snapshot_tables()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", body)
    assert_error(status, reply, 400, field=field)
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert ec2().describe_instances(Filters=[{"Name": "tag:AgentId", "Values": [agent_id]}])["Reservations"] == []


def test_an_on_demand_primary_may_have_its_standby_in_its_own_zone(api, make_tenant):
    """An on-demand primary shares no spot capacity with a spot standby beside it (the rule that keeps a standby
    out of its primary's pool is about spot interruptions): its own zone's pool is a standby's pool, chosen or
    asked for."""
    client_id, caller, agent_id, _, itype = manual_agent(make_tenant)
    AgentTable(client_id, agent_id).update(actions=[AgentTable.current_mode.set("ondemand")])
    assert agent_row(client_id, agent_id).current_pool_id == f"{itype}.us-east-1a"
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"pool_id": f"{itype}.us-east-1a"})
    assert status == 201, reply
    assert reply["pool_id"] == f"{itype}.us-east-1a" and reply["az"] == "us-east-1a"
    assert agent_row(client_id, agent_id).current_replica_id == reply["replica_id"]


def test_exclude_zones_and_max_hourly_cost_steer_the_pool(api, make_tenant):
    _, caller, agent_id, _, itype = manual_agent(make_tenant)
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"max_hourly_cost": 0.031})
    assert_error(status, reply, 409, code="no_pool", field="max_hourly_cost")  # only the primary's pool is that cheap
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas",
                                {"exclude_zones": ["us-east-1b"], "max_hourly_cost": 0.042})
    assert status == 201, reply
    assert reply["pool_id"] == f"{itype}.us-east-1c" and reply["az"] == "us-east-1c"
    described = ec2().describe_instances(InstanceIds=[reply["instance_id"]])["Reservations"][0]["Instances"][0]
    assert described["Placement"]["AvailabilityZone"] == "us-east-1c"


def test_list_filters_validate_and_page(api, make_tenant):
    _, caller, agent_id, _, _ = manual_agent(make_tenant)
    status, first = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201
    assert delete(caller, f"/api/agents/{agent_id}/replicas/{first['replica_id']}")[0] == 200
    status, second = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201

    base = f"/api/agents/{agent_id}/replicas"
    status, reply = caller.get(base)
    assert status == 200 and [r["id"] for r in reply["replicas"]] == [second["replica_id"]]
    status, reply = caller.get(base + "?include_terminated=true")
    by_id = {r["id"]: r for r in reply["replicas"]}
    assert set(by_id) == {first["replica_id"], second["replica_id"]}
    assert by_id[first["replica_id"]]["status"] == "terminated" and by_id[first["replica_id"]]["terminated_at"]
    status, reply = caller.get(base + "?status=terminated")
    assert [r["id"] for r in reply["replicas"]] == [first["replica_id"]]
    in_order = sorted(by_id)  # ids start with their creation time: the listing's order
    status, page = caller.get(base + "?include_terminated=true&limit=1")
    assert [r["id"] for r in page["replicas"]] == in_order[:1] and page["next_token"]
    status, page = caller.get(base + f"?include_terminated=true&limit=1&next_token={page['next_token']}")
    assert [r["id"] for r in page["replicas"]] == in_order[1:] and page["next_token"] is None
    for query, field in (("status=sleeping", "status"), ("include_terminated=maybe", "include_terminated"),
                         ("limit=0", "limit"), ("next_token=%7B%7D", "next_token")):
        status, reply = caller.get(f"{base}?{query}")
        assert_error(status, reply, 400, field=field)


def test_v4_termination_poll_is_never_told_to_terminate_an_instance(api, make_tenant):
    """v4's ReplicaTermination thread polls ``?status=terminated`` every 30 s and terminates the EC2 instance of
    every row with a truthy ``is_active`` (then posts it ``terminated``). The product terminates standbys itself,
    so no row may say so: not a closed one, and never a live standby's instance."""
    _, caller, agent_id, _, _ = manual_agent(make_tenant)
    status, first = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201
    assert delete(caller, f"/api/agents/{agent_id}/replicas/{first['replica_id']}")[0] == 200
    status, second = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201 and second["instance_id"]
    status, reply = caller.get(f"/api/agents/{agent_id}/replicas?status=terminated")
    assert status == 200 and [r["id"] for r in reply["replicas"]] == [first["replica_id"]]
    would_terminate = [r["instance_id"] for r in reply["replicas"] if r.get("is_active", False)]
    assert would_terminate == [], reply


def test_legacy_agent_polling_sees_flat_replicas_that_still_need_an_instance(tenant_with_agent):
    client_id, caller, agent_id, reg = tenant_with_agent
    config(caller, agent_id, manual_replica_enabled=True)  # a manual standby's slot is claimed only in that mode
    agent = agent_repo.require(client_id, agent_id)
    now = datetime.now(timezone.utc)
    waiting = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                                  lifecycle="spot", pool_id="m5.large.eu-west-1b", az="eu-west-1b",
                                  created_by="replica-coordinator", now=now, take_slot=True)
    status, reply = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert status == 200
    [polled] = reply["replicas"]
    # the legacy agent's checks: top-level id, pool_id and az (legacy returned a nested ``pool``)
    assert polled["id"] == waiting.replica_id and polled["pool_id"] == "m5.large.eu-west-1b"
    assert polled["az"] == "eu-west-1b" and polled["instance_id"] is None and "pool" not in polled
    assert polled["created_at"].endswith("Z")
    # once an instance is attached it is no longer offered for launching (no second EC2 for it)
    status, _ = put(caller, f"/api/agents/{agent_id}/replicas/{waiting.replica_id}",
                    {"instance_id": agent_launched(), "status": "syncing"})
    assert status == 200
    replica_repo.transition(replica_repo.get(agent_id, waiting.replica_id), replica_repo.ReplicaStatus.READY, now)
    assert caller.get(f"/api/agents/{agent_id}/replicas?status=launching")[1]["replicas"] == []


def test_agent_launched_flow_post_put_status_ready(make_tenant):
    client_id, caller, agent_id, reg = legacy_manual_agent(make_tenant)
    base = f"/api/agents/{agent_id}/replicas"
    instance_id = agent_launched()
    # the agent launched the EC2 itself (legacy create_replica command), then records it
    status, created = caller.post(base, {"instance_id": instance_id, "replica_type": "manual",
                                         "parent_instance_id": reg["instance_id"],
                                         "pool_id": "m5.large.eu-west-1b", "status": "launching"})
    assert status == 201, created
    rid = created["replica_id"]
    assert (created["instance_id"], created["status"], created["created_by"], created["az"]) == \
        (instance_id, "launching", "agent", "eu-west-1b")
    assert agent_row(client_id, agent_id).current_replica_id == rid
    assert all(i.tags.get("AgentId") != agent_id for i in ec2_adapter.managed_instances("eu-west-1"))  # no launch
    # PUT the real id (idempotent), syncing by default, with its launch time
    launched = iso(datetime.now(timezone.utc) - timedelta(seconds=30))
    status, reply = put(caller, f"{base}/{rid}", {"instance_id": instance_id, "launched_at": launched})
    assert status == 200 and (reply["status"], reply["instance_id"]) == ("syncing", instance_id), reply
    assert reply["replica"]["launched_at"] == launched
    status, reply = put(caller, f"{base}/{rid}", {"instance_id": agent_launched()})
    assert_error(status, reply, 409, code="replica_instance_conflict")
    # ready, with the legacy columns the old server lacked
    done = iso(datetime.now(timezone.utc) - timedelta(seconds=1))
    status, reply = caller.post(f"{base}/{rid}/status", {"status": "ready", "sync_started_at": launched,
                                                         "sync_completed_at": done, "error_message": None})
    assert status == 200 and reply["status"] == "ready", reply
    assert reply["replica"]["ready_at"] == done and reply["replica"]["sync_status"] == "synced"
    status, listing = caller.get(base)
    assert [(r["id"], r["status"], r["instance_id"]) for r in listing["replicas"]] == [(rid, "ready", instance_id)]
    status, cfg = caller.get(f"/api/agents/{agent_id}/replica-config")
    assert cfg == {"agent_id": agent_id, "enabled": True, "count": 1, "manual_replica_enabled": True,
                   "auto_switch_enabled": False, "auto_terminate_enabled": True, "current_replica_id": rid}


def test_agent_launched_replica_cannot_claim_a_taken_instance(make_tenant):
    client_id, caller, agent_id, reg = legacy_manual_agent(make_tenant)
    other_id, other = make_tenant()
    other_reg = registration()
    assert other.post("/api/agents/register", other_reg)[0] == 200
    base = f"/api/agents/{agent_id}/replicas"
    before = snapshot_tables()
    status, reply = caller.post(base, {"instance_id": reg["instance_id"]})
    assert_error(status, reply, 400, field="instance_id")  # its own primary
    status, reply = caller.post(base, {"instance_id": other_reg["instance_id"]})
    assert_error(status, reply, 409, code="instance_conflict")  # another tenant's instance: no hijack
    status, reply = caller.post(base, {"instance_id": agent_launched(), "parent_instance_id": agent_launched()})
    assert_error(status, reply, 400, field="parent_instance_id")
    status, reply = caller.post(base, {"instance_id": agent_launched(), "pool_id": "m5.large.eu-west-1a"})
    assert_error(status, reply, 400, field="pool_id")  # the primary's pool
    assert diff_snapshots(before, snapshot_tables()) == {}


# --- a legacy agent's own instance on a standby the product launched too (v4's poll raced our launch) ----------

def server_standby(make_tenant):
    """A us-east-1 manual-replica agent and the standby the product launched for it (``own_launch``, launching):
    ``(client_id, caller, agent_id, primary, the replica, its path)``."""
    client_id, caller, agent_id, primary, itype = manual_agent(make_tenant)
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201 and reply["status"] == "launching" and reply["instance_id"], reply
    replica = replica_repo.get(agent_id, reply["replica_id"])
    assert replica.own_launch, replica
    return client_id, caller, agent_id, primary, replica, f"/api/agents/{agent_id}/replicas/{replica.replica_id}"


@pytest.mark.parametrize("status_before", ["launching", "syncing"])
def test_a_legacy_agents_own_instance_takes_over_a_standby_our_launch_attached_first(make_tenant, status_before):
    """GIVEN a standby the product launched (its instance attached, ``own_launch``), not ready yet, for which a legacy
    agent launched its own instance too (its ``status=launching`` poll offered the row while our launch was in flight)
    WHEN the agent PUTs its instance
    THEN 200: the row takes the agent's instance (no longer ``own_launch``: the agent reports it), indexed as the
    standby, ours is terminated and its instance row inactive; the same PUT again is answered the same."""
    client_id, caller, agent_id, primary, replica, path = server_standby(make_tenant)
    if status_before == "syncing":
        replica = replica_repo.transition(replica, replica_repo.ReplicaStatus.SYNCING, datetime.now(timezone.utc))
    ours, theirs = replica.instance_id, agent_launched("us-east-1", "us-east-1c")
    status, reply = put(caller, path, {"instance_id": theirs, "status": "syncing"})
    assert status == 200 and (reply["instance_id"], reply["status"]) == (theirs, "syncing"), reply
    stored = replica_repo.get(agent_id, replica.replica_id)
    assert (stored.instance_id, stored.own_launch, stored.status.value) == (theirs, False, "syncing")
    assert state_of(ours) in GONE and state_of(theirs) == "running"
    mine, replaced = agent_repo.instance_row(theirs), agent_repo.instance_row(ours)
    assert (mine.replica_id, mine.role, mine.is_active) == (replica.replica_id, "standby", True)
    assert replaced.is_active is False and replaced.terminated_at is not None
    assert agent_row(client_id, agent_id).current_replica_id == replica.replica_id
    status, again = put(caller, path, {"instance_id": theirs, "status": "syncing"})
    assert status == 200 and again["instance_id"] == theirs, again


def test_a_put_that_fails_the_instance_checks_takes_nothing_over(make_tenant):
    """The PUT's checks of the agent's instance run before any take-over: its own primary (400), another tenant's
    instance (409 ``instance_conflict``), one that is not live in the client's account (409 ``not_owned``) change
    nothing, our standby instance included."""
    client_id, caller, agent_id, primary, replica, path = server_standby(make_tenant)
    _, other = make_tenant()
    other_reg = registration()
    assert other.post("/api/agents/register", other_reg)[0] == 200
    before = snapshot_world()
    status, reply = put(caller, path, {"instance_id": primary, "status": "syncing"})
    assert_error(status, reply, 400, field="instance_id")
    status, reply = put(caller, path, {"instance_id": other_reg["instance_id"], "status": "syncing"})
    assert_error(status, reply, 409, code="instance_conflict")
    # an id no test registers (a fixed one another module registers would be instance_conflict after it)
    status, reply = put(caller, path, {"instance_id": new_instance_id(), "status": "syncing"})
    assert_error(status, reply, 409, code="not_owned")
    assert diff_snapshots(before, snapshot_world()) == {}
    assert state_of(replica.instance_id) == "running"


@pytest.mark.parametrize("wanted", ["syncing", "ready"])
def test_a_put_onto_a_ready_standby_of_ours_takes_it_over(make_tenant, wanted):
    """Our own launch turned ``ready`` before the legacy agent's PUT of the instance it launched for the same row:
    the agent's instance takes the row over all the same (only ours can be terminated by us; a 409 left the agent's
    running, owned by nothing), back to ``syncing`` (its ``ready_at`` removed) unless the agent reports it ready."""
    client_id, caller, agent_id, primary, replica, path = server_standby(make_tenant)
    replica_repo.transition(replica, replica_repo.ReplicaStatus.READY, datetime.now(timezone.utc))
    theirs = agent_launched("us-east-1", "us-east-1c")
    status, reply = put(caller, path, {"instance_id": theirs, "status": wanted})
    assert status == 200 and (reply["instance_id"], reply["status"]) == (theirs, wanted), reply
    stored = replica_repo.get(agent_id, replica.replica_id)
    assert (stored.instance_id, stored.own_launch, stored.status.value) == (theirs, False, wanted)
    assert (stored.ready_at is None) == (wanted == "syncing")
    assert state_of(replica.instance_id) in GONE and state_of(theirs) == "running"
    assert agent_repo.instance_row(replica.instance_id).is_active is False


def test_an_instance_reported_for_a_standby_closed_meanwhile_is_409_and_the_client_told_once(make_tenant):
    """GIVEN a standby a legacy agent's poll offered, which the client deletes while the agent launches its own
    instance for it WHEN the agent reports that instance (PUT), twice THEN 409 as before (a closed row takes nothing),
    and the client is told once that the instance runs unmanaged (the product cannot terminate an instance it did not
    launch: before, nobody was told and it ran, billed, for good). The row's own instance reported again tells
    nothing."""
    from chalicelib.tables.notifications import NotificationTable

    client_id, caller, agent_id, primary, replica, path = server_standby(make_tenant)
    assert caller.call("DELETE", path)[0] == 200
    theirs = agent_launched("us-east-1", "us-east-1c")
    for _ in range(2):
        status, reply = put(caller, path, {"instance_id": theirs, "status": "syncing"})
        assert_error(status, reply, 409)
    told = [n for n in NotificationTable.query(client_id, consistent_read=True) if n.kind == "standby_instance_unowned"]
    assert len(told) == 1 and theirs in told[0].message and replica.replica_id in told[0].message
    status, reply = put(caller, path, {"instance_id": replica.instance_id, "status": "syncing"})
    assert status == 409
    assert len([n for n in NotificationTable.query(client_id, consistent_read=True)
                if n.kind == "standby_instance_unowned"]) == 1


def test_a_failovers_replacement_is_never_offered_nor_taken_over(api, make_tenant):
    """A failover's replacement row (``termination``, created by the failover) is its workflow's: the
    ``status=launching`` listing never offers it, not even with no instance yet, and an agent's PUT onto it once our
    launch attached is 409 ``replica_instance_conflict``, changing nothing."""
    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    agent = agent_repo.require(client_id, agent_id)
    now = datetime.now(timezone.utc)
    row = replica_repo.create(agent, replica_id=f"emg-{replica_repo.new_replica_id(now)}-spot",
                              replica_type="automatic-termination", lifecycle="spot", pool_id=f"{itype}.us-east-1b",
                              az="us-east-1b", created_by="failover", now=now, take_slot=False,
                              interruption_id="int-test")
    assert row.failover_replacement and row.instance_id is None
    status, reply = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert status == 200 and reply["replicas"] == [], reply
    launched = replicas_service.launch(agent, row, now, source_instance_id=primary)
    assert launched.own_launch and launched.status.value == "launching", launched
    theirs = agent_launched("us-east-1", "us-east-1c")
    before = snapshot_world()
    status, reply = put(caller, f"/api/agents/{agent_id}/replicas/{row.replica_id}",
                        {"instance_id": theirs, "status": "syncing"})
    assert_error(status, reply, 409, code="replica_instance_conflict")
    assert diff_snapshots(before, snapshot_world()) == {}
    assert replica_repo.get(agent_id, row.replica_id).instance_id == launched.instance_id
    assert state_of(launched.instance_id) == "running"


def test_the_take_over_is_a_compare_and_set_on_the_rows_instance(make_tenant):
    """``take_over_instance`` writes only while the row holds what it was read with: a read that another take-over
    or the row's close overtook is 409 and writes nothing; one our instance turning ready overtook takes it over."""
    client_id, caller, agent_id, primary, replica, path = server_standby(make_tenant)
    now = datetime.now(timezone.utc)
    first, second = agent_launched("us-east-1", "us-east-1c"), agent_launched("us-east-1", "us-east-1c")
    taken = replica_repo.take_over_instance(replica, instance_id=first, now=now)
    assert (taken.instance_id, taken.own_launch) == (first, False)
    before = snapshot_tables()
    with pytest.raises(ConflictError) as raised:
        replica_repo.take_over_instance(replica, instance_id=second, now=now)  # read before the first
    assert raised.value.code == "replica_instance_conflict"
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert not replica_repo.may_take_over(taken)  # the agent's own instance is never replaced

    _, _, agent_id, _, replica, _ = server_standby(make_tenant)
    replica_repo.transition(replica, replica_repo.ReplicaStatus.READY, now)
    taken = replica_repo.take_over_instance(replica, instance_id=second, now=now)  # read while launching, ready since
    assert (taken.instance_id, taken.status.value, taken.ready_at) == (second, "syncing", None)

    _, _, agent_id, _, replica, _ = server_standby(make_tenant)
    replicas_service.retire(replica, replica_repo.ReplicaStatus.TERMINATED, now, "deleted by the client")
    before = snapshot_tables()
    with pytest.raises(ConflictError) as raised:
        replica_repo.take_over_instance(replica, instance_id=agent_launched("us-east-1", "us-east-1c"), now=now)
    assert raised.value.code == "replica_closed"  # read while launching, closed since
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_status_and_sync_reports_follow_the_lifecycle(make_tenant):
    _, caller, agent_id, _ = legacy_manual_agent(make_tenant)
    base = f"/api/agents/{agent_id}/replicas"
    status, created = caller.post(base, {"instance_id": agent_launched(), "pool_id": "m5.large.eu-west-1c"})
    rid = created["replica_id"]
    status, reply = caller.post(f"{base}/{rid}/sync-status", {"sync_status": "initializing", "sync_latency_ms": 12,
                                                              "state_transfer_progress": 10})
    assert status == 200 and reply["status"] == "syncing", reply  # a sync report means it runs
    replica = reply["replica"]
    assert (replica["sync_status"], replica["sync_latency_ms"], replica["state_transfer_progress"]) == \
        ("initializing", 12, 10)
    status, reply = caller.post(f"{base}/{rid}/sync-status", {"sync_status": "syncing",
                                                              "state_transfer_progress": 99.5})
    assert reply["status"] == "syncing"
    status, reply = caller.post(f"{base}/{rid}/sync-status", {"sync_status": "synced",
                                                              "state_transfer_progress": 100})
    assert reply["status"] == "ready" and reply["replica"]["ready_at"], reply
    status, reply = caller.post(f"{base}/{rid}/sync-status", {"sync_status": "done"})
    assert_error(status, reply, 400, field="sync_status")  # the report's fact itself is unreadable
    # an implausible secondary field is dropped and named; the report is still recorded
    for body, field in (({"sync_status": "syncing", "state_transfer_progress": 150}, "state_transfer_progress"),
                        ({"sync_status": "syncing", "state_transfer_progress": True}, "state_transfer_progress"),
                        ({"sync_status": "syncing", "sync_latency_ms": -1}, "sync_latency_ms")):
        status, reply = caller.post(f"{base}/{rid}/sync-status", body)
        assert status == 200 and [w.split(":")[0] for w in reply["warnings"]] == [field], reply
        assert reply["replica"]["state_transfer_progress"] == 100 and reply["replica"]["sync_latency_ms"] == 12
    status, reply = caller.post(f"{base}/{rid}/status", {"status": "launching"})
    assert_error(status, reply, 400, field="status")
    # failed: the replica closes (slot freed); afterwards only the same report is accepted again
    status, reply = caller.post(f"{base}/{rid}/status", {"status": "failed", "error_message": "disk full"})
    assert status == 200 and reply["status"] == "failed"
    assert replica_repo.get(agent_id, rid).error_message == "disk full"
    assert caller.post(f"{base}/{rid}/status", {"status": "failed"})[0] == 200
    status, reply = caller.post(f"{base}/{rid}/status", {"status": "ready"})
    assert_error(status, reply, 409, code="replica_not_active")
    status, reply = caller.post(f"{base}/{rid}/sync-status", {"sync_status": "synced"})
    assert_error(status, reply, 409, code="replica_not_active")
    status, reply = put(caller, f"{base}/{rid}", {"instance_id": agent_launched()})
    assert_error(status, reply, 409, code="replica_not_active")


def test_a_terminated_report_closes_the_standby_and_is_answered_again_unchanged(make_tenant):
    """GIVEN an agent-launched standby WHEN the agent reports it ``terminated`` (agent-backend.py does so for each
    row ``replicas?status=terminated`` lists, after terminating its instance unless EC2 says it is gone)
    THEN the row closes as terminated (slot freed; as for ``failed``, the product terminates the instance only if
    it launched it: this one the agent launched, and terminated); the same report again is 200 and changes
    nothing; a standby another status closed is not reopened or renamed (409)."""
    client_id, caller, agent_id, _ = legacy_manual_agent(make_tenant)
    base = f"/api/agents/{agent_id}/replicas"
    status, created = caller.post(base, {"instance_id": agent_launched(), "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, created
    rid = created["replica_id"]
    status, reply = caller.post(f"{base}/{rid}/status", {"status": "terminated", "is_active": False,
                                                         "terminated_at": iso(datetime.now(timezone.utc))})
    assert status == 200 and reply["status"] == "terminated", reply
    closed = replica_repo.get(agent_id, rid)
    assert closed.status.value == "terminated" and closed.terminated_at is not None
    assert agent_row(client_id, agent_id).current_replica_id is None
    before = snapshot_tables()
    status, reply = caller.post(f"{base}/{rid}/status", {"status": "terminated", "is_active": False})
    assert (status, reply["status"]) == (200, "terminated"), reply
    assert diff_snapshots(before, snapshot_tables()) == {}
    status, failed = caller.post(base, {"instance_id": agent_launched(), "pool_id": "m5.large.eu-west-1c"})
    assert caller.post(f"{base}/{failed['replica_id']}/status", {"status": "failed"})[0] == 200
    status, reply = caller.post(f"{base}/{failed['replica_id']}/status", {"status": "terminated"})
    assert_error(status, reply, 409, code="replica_not_active")


def test_unknown_replica_is_404(tenant_with_agent):
    _, caller, agent_id, _ = tenant_with_agent
    base = f"/api/agents/{agent_id}/replicas/rep-nope"
    for method, path, body in (("POST", "/promote", {}), ("DELETE", "", None), ("PUT", "", {"instance_id": agent_launched()}),
                               ("POST", "/status", {"status": "ready"}),
                               ("POST", "/sync-status", {"sync_status": "synced"})):
        status, reply = caller.call(method, base + path, body)
        assert_error(status, reply, 404, field="replica_id")


# --- DELETE, promote ---------------------------------------------------------------------------------

def test_delete_terminates_the_instance_in_ec2(api, make_tenant):
    client_id, caller, agent_id, primary, _ = manual_agent(make_tenant)
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201
    path = f"/api/agents/{agent_id}/replicas/{standby['replica_id']}"
    status, reply = delete(caller, path)
    assert status == 200 and reply == {"success": True, "replica_id": standby["replica_id"], "status": "terminated",
                                       "instance_id": standby["instance_id"]}
    assert state_of(standby["instance_id"]) in GONE and state_of(primary) == "running"
    assert agent_row(client_id, agent_id).current_replica_id is None
    assert delete(caller, path)[0] == 200  # idempotent
    status, reply = caller.post(f"{path}/promote", {})
    assert_error(status, reply, 409, code="replica_not_active")


def test_promote_needs_an_active_replica_with_an_instance(tenant_with_agent):
    client_id, caller, agent_id, _ = tenant_with_agent
    config(caller, agent_id, manual_replica_enabled=True)
    agent = agent_repo.require(client_id, agent_id)
    now = datetime.now(timezone.utc)
    bare = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                               lifecycle="spot", pool_id="m5.large.eu-west-1b", az="eu-west-1b",
                               created_by="test", now=now, take_slot=True)
    before = snapshot_tables()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas/{bare.replica_id}/promote", {})
    assert_error(status, reply, 409, code="replica_not_launched")
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas/{bare.replica_id}/promote",
                                {"demote_old_primary": "maybe"})
    assert_error(status, reply, 400, field="demote_old_primary")
    status, reply = caller.post(f"/api/agents/{agent_id}/manual-switch")
    assert_error(status, reply, 409, code="no_ready_standby")
    assert diff_snapshots(before, snapshot_tables()) == {}


@pytest.mark.usefixtures("failover_machine")
def test_promote_route_runs_the_workflow_and_keeps_the_old_primary_without_auto_terminate(api, make_tenant):
    client_id, caller, agent_id, primary, _ = manual_agent(make_tenant, auto_terminate_enabled=False)
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas/{standby['replica_id']}/promote",
                                {"demote_old_primary": True, "wait_for_sync": False})
    assert status == 202 and reply["action"] == "failover_started", reply
    assert reply["new_instance_id"] == standby["instance_id"] and reply["old_instance_id"] == primary
    assert wait_for(reply["interruption_id"])["status"] == "SUCCEEDED"
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id == standby["instance_id"] and agent.current_pool_id == standby["pool_id"]
    assert replica_repo.get(agent_id, standby["replica_id"]).status.value == "promoted"
    assert state_of(primary) == "running"  # auto-terminate off: the old primary is kept
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas/{standby['replica_id']}/promote", {})
    assert_error(status, reply, 409, code="replica_not_active")
    status, reply = delete(caller, f"/api/agents/{agent_id}/replicas/{standby['replica_id']}")
    assert_error(status, reply, 409, code="replica_not_active")  # it is the primary now: never terminated here
    assert state_of(standby["instance_id"]) == "running"


# --- SEF routes --------------------------------------------------------------------------------------

def test_sef_enable_starts_one_standby_and_disable_terminates_it(api, make_tenant):
    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    status, sef = caller.get(f"/api/agents/{agent_id}/sef-status")
    assert status == 200 and sef["mode"] == "auto-switch" and sef["replica"] is None
    assert sef["data_quality"]["pricing_fresh"] is True and sef["data_quality"]["last_pricing_at"]
    assert sef["last_interruption"] is None and sef["terminate_wait_seconds"] == 300
    # the legacy sentinel's health score: fresh heartbeat and prices → 100, keep monitoring
    assert sef["health"] == {"score": 100, "state": "online", "recommendation": "continue_monitoring"}

    status, enabled = caller.post(f"/api/agents/{agent_id}/manual-replica/enable")
    assert status == 200, enabled
    assert enabled["manual_replica_enabled"] is True and enabled["auto_switch_enabled"] is False
    replica = enabled["replica"]
    assert replica["pool_id"] != f"{itype}.us-east-1a" and state_of(replica["instance_id"]) in ("pending", "running")
    status, again = caller.post(f"/api/agents/{agent_id}/manual-replica/enable")
    assert again["replica"]["replica_id"] == replica["replica_id"]  # never a second standby
    assert again["config_version"] == enabled["config_version"]  # nothing to change the second time

    status, sef = caller.get(f"/api/agents/{agent_id}/sef-status")
    assert sef["mode"] == "manual-replica" and sef["replica"]["replica_id"] == replica["replica_id"]

    status, disabled = caller.post(f"/api/agents/{agent_id}/manual-replica/disable")
    assert status == 200 and disabled["terminated"] == [replica["replica_id"]], disabled
    assert state_of(replica["instance_id"]) in GONE and state_of(primary) == "running"
    status, sef = caller.get(f"/api/agents/{agent_id}/sef-status")
    assert sef["mode"] == "none" and sef["replica"] is None  # auto-switch stays off until the client turns it on
    # the same request again (a client retrying a lost answer) answers the same, and terminates nothing twice
    status, again = caller.post(f"/api/agents/{agent_id}/manual-replica/disable")
    assert status == 200 and again["terminated"] == [replica["replica_id"]], again
    assert again["config_version"] == disabled["config_version"]


def test_two_concurrent_ensure_standby_calls_leave_exactly_one_standby(api, make_tenant, monkeypatch):
    from moto.dynamodb.models import DynamoDBBackend

    from chalicelib import replicas

    # DynamoDB runs transactions serializably; moto applies them item by item and rolls back from a
    # copy taken at the start, so two threads can interleave inside it. Give moto DynamoDB's guarantee
    # (our code stays fully concurrent: reads, placement, both transactions and the EC2 calls).
    serial, real_transact = threading.Lock(), DynamoDBBackend.transact_write_items

    def transact_write_items(self, *args, **kwargs):
        with serial:
            return real_transact(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", transact_write_items)
    client_id, _, agent_id, _, _ = manual_agent(make_tenant)
    stale = agent_repo.require(client_id, agent_id)  # both callers read the agent before either writes
    barrier, results, errors = threading.Barrier(2), [], []

    def call():
        try:
            barrier.wait()
            results.append(replicas.ensure_standby(stale, datetime.now(timezone.utc), created_by="test"))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 2
    active = replica_repo.for_agent(agent_id, include_final=False)
    assert len(active) == 1 and {r.replica_id for r in results} == {active[0].replica_id}
    assert agent_row(client_id, agent_id).current_replica_id == active[0].replica_id
    launched = ec2().describe_instances(Filters=[{"Name": "tag:AgentId", "Values": [agent_id]}])
    assert len([i for r in launched["Reservations"] for i in r["Instances"]]) == 1


@pytest.mark.usefixtures("failover_machine")
def test_manual_switch_promotes_the_ready_standby_through_the_workflow(api, make_tenant):
    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    config(caller, agent_id, terminate_wait_seconds=0)
    status, enabled = caller.post(f"/api/agents/{agent_id}/manual-replica/enable")
    standby = enabled["replica"]
    status, reply = caller.post(f"/api/agents/{agent_id}/manual-switch")
    assert_error(status, reply, 409, code="no_ready_standby")  # still launching
    invoke_schedule(api, "replica-coordinator")  # EC2 says running → ready
    assert replica_repo.get(agent_id, standby["replica_id"]).status.value == "ready"

    status, reply = caller.post(f"/api/agents/{agent_id}/manual-switch")
    assert status == 202 and reply["replica_id"] == standby["replica_id"], reply
    described = wait_for(reply["interruption_id"])
    assert described["status"] == "SUCCEEDED", described
    # the standby is the agent's instance, the old primary is gone (auto-terminate, no wait)
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id == standby["instance_id"] and agent.current_pool_id == standby["pool_id"]
    assert state_of(primary) in GONE and state_of(standby["instance_id"]) == "running"
    # and the next standby is starting, away from the new primary's pool
    nxt = replica_repo.get(agent_id, agent.current_replica_id)
    assert nxt.replica_id != standby["replica_id"] and nxt.instance_id and nxt.pool_id != standby["pool_id"]
    status, sef = caller.get(f"/api/agents/{agent_id}/sef-status")
    last = sef["last_interruption"]
    assert last["interruption_id"] == reply["interruption_id"] and last["signal_type"] == "manual-promotion"
    assert last["status"] == "resolved" and last["response_action"] == "promoted-existing-replica"
    assert isinstance(last["failover_time_ms"], int)
    assert sef["replica"]["replica_id"] == nxt.replica_id


def test_another_tenants_agent_cannot_reach_or_claim_a_replica(make_tenant):
    """B's own agent naming A's replica (path) or A's standby instance (body): 404/409, nothing written."""
    _, a_caller, a_agent, _ = legacy_manual_agent(make_tenant)
    a_instance = agent_launched()
    status, a_replica = a_caller.post(f"/api/agents/{a_agent}/replicas", {"instance_id": a_instance})
    assert status == 201
    _, b_caller, b_agent, _ = legacy_manual_agent(make_tenant)
    before = snapshot_tables()
    base = f"/api/agents/{b_agent}/replicas/{a_replica['replica_id']}"
    for method, suffix, body in (("PUT", "", {"instance_id": a_instance}), ("DELETE", "", None),
                                 ("POST", "/promote", {}), ("POST", "/status", {"status": "ready"}),
                                 ("POST", "/sync-status", {"sync_status": "synced"})):
        status, reply = b_caller.call(method, base + suffix, body)
        assert_error(status, reply, 404, field="replica_id")
    status, reply = b_caller.post(f"/api/agents/{b_agent}/replicas", {"instance_id": a_instance})
    assert_error(status, reply, 409, code="instance_conflict")
    status, listing = b_caller.get(f"/api/agents/{b_agent}/replicas?include_terminated=true")
    assert listing["replicas"] == []
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_a_second_promotion_while_one_is_under_way_is_refused(make_tenant, monkeypatch):
    from chalicelib.aws import stepfunctions

    started = []
    monkeypatch.setattr(stepfunctions, "start", lambda name, payload: started.append(payload) or f"arn:exec:{name}")
    client_id, caller, agent_id, _ = legacy_manual_agent(make_tenant)
    base = f"/api/agents/{agent_id}/replicas"
    status, first = caller.post(base, {"instance_id": agent_launched(), "pool_id": "m5.large.eu-west-1b"})
    agent = agent_repo.require(client_id, agent_id)
    now = datetime.now(timezone.utc)
    other = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                                lifecycle="spot", pool_id="m5.large.eu-west-1c", az="eu-west-1c",
                                created_by="test", now=now, take_slot=False)
    replica_repo.attach_instance(other, instance_id=agent_launched(), now=now)

    status, reply = caller.post(f"{base}/{first['replica_id']}/promote", {})
    assert status == 202 and reply["action"] == "failover_started", reply
    assert started == [{**started[0], "replica_id": first["replica_id"], "signal_type": "manual-promotion"}]
    status, again = caller.post(f"{base}/{first['replica_id']}/promote", {})  # a double click: same workflow
    assert status == 202 and again["action"] == "duplicate" and again["interruption_id"] == reply["interruption_id"]
    status, clash = caller.post(f"{base}/{other.replica_id}/promote", {})
    assert_error(status, clash, 409, code="promotion_in_progress")
    assert len(started) == 1


def _auto_agent(make_tenant):
    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    config(caller, agent_id, auto_switch_enabled=True)
    return client_id, caller, agent_id


def test_an_emergency_replica_whose_slot_frees_meanwhile_is_claimed_on_the_second_try(make_tenant, monkeypatch,
                                                                                      failover_machine):
    # GIVEN an auto-switch agent whose first slot claim is refused by a holder that is gone when read
    from chalicelib import replicas
    from chalicelib.repositories.replicas import SlotTakenError

    client_id, caller, agent_id = _auto_agent(make_tenant)
    real, tries = replicas.start_standby, []

    def refused_once(*args, **kwargs):
        tries.append(1)
        if len(tries) == 1:
            raise SlotTakenError(None)
        return real(*args, **kwargs)

    monkeypatch.setattr(replicas, "start_standby", refused_once)
    # WHEN the legacy agent asks for an emergency replica
    status, reply = caller.post(f"/api/agents/{agent_id}/create-emergency-replica",
                                {"signal_type": "termination-notice"})
    # THEN the second claim creates it (no 500)
    assert status == 201, reply
    assert reply["created"] is True and len(tries) == 2
    assert reply["workflow"]["action"] == "failover_started", reply
    # (the notice's failover promotes it: let it finish before the next test snapshots the tables)
    assert wait_for(reply["workflow"]["interruption_id"])["status"] == "SUCCEEDED"
    assert agent_row(client_id, agent_id).instance_id == replica_repo.get(agent_id, reply["replica_id"]).instance_id


def test_an_emergency_replica_whose_slot_keeps_changing_hands_is_a_409(make_tenant, monkeypatch):
    # GIVEN an auto-switch agent whose slot claim is always refused by a holder gone when read
    from chalicelib import replicas
    from chalicelib.repositories.replicas import SlotTakenError

    client_id, caller, agent_id = _auto_agent(make_tenant)

    def always_refused(*args, **kwargs):
        raise SlotTakenError(None)

    monkeypatch.setattr(replicas, "start_standby", always_refused)
    # WHEN it asks for an emergency replica
    before = snapshot_tables()
    status, reply = caller.post(f"/api/agents/{agent_id}/create-emergency-replica",
                                {"signal_type": "termination-notice"})
    # THEN a 409 the agent can retry, and nothing written
    assert_error(status, reply, 409, code="standby_slot_busy")
    assert agent_row(client_id, agent_id).current_replica_id is None
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_a_repeated_config_request_bumps_the_version_once(tenant_with_agent):
    _, caller, agent_id, _ = tenant_with_agent
    _, before = caller.get(f"/api/agents/{agent_id}/config")
    body = {"min_savings_percent": 40, "terminate_wait_seconds": 120, "auto_switch_enabled": True}
    first = config(caller, agent_id, **body)
    again = config(caller, agent_id, **body)  # the client's retry of a request whose answer was lost
    assert first["config_version"] == again["config_version"] == before["config_version"] + 1
    assert again == first
