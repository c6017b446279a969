"""Ownership before action (issue #12): an attacker holding a valid client token names resources it does not
own — another account's EIP or target group, another tenant's or a foreign instance, an absurd instance type,
more than its quotas — and nothing changes: no table row, no EC2 instance, EIP association or target-group
registration. The client's AWS account bindings (admin API, AssumeRole through moto) are tested here too.

Other accounts are moto accounts: resources are created with ``MOTO_ACCOUNT_ID`` set, then it is unset before
the product is called (moto then answers in the default account 123456789012, the product's home account).
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager

import boto3
import pytest

from chalicelib.aws import accounts
from chalicelib.aws import ec2 as adapter
from chalicelib.tables.agents import AgentTable
from tests.api._support import assert_error, described_instances, diff_snapshots, mock_instances, snapshot_tables
from tests.conftest import aws_client, new_instance_id, registration
from tests.e2e.failover_support import REGION, ZONES, register_agent, unique_type
from localmode.embedded_aws import image_id

OTHER = "222222222222"
BOUND = "111111111111"


@contextmanager
def in_account(account_id: str):
    """Requests made inside run in another moto account."""
    previous = os.environ.get("MOTO_ACCOUNT_ID")
    os.environ["MOTO_ACCOUNT_ID"] = account_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MOTO_ACCOUNT_ID", None)
        else:
            os.environ["MOTO_ACCOUNT_ID"] = previous


def ec2(region: str = REGION):
    return aws_client("ec2", region)


def ec2_snapshot(region: str = REGION) -> dict:
    """Instances (state, tags), EIP associations and target-group registrations of the home account."""
    client, elb = ec2(region), aws_client("elbv2", region)
    found = mock_instances(region)  # DescribeInstances' answer, without its cost (tests/api/_support.py)
    instances = {i["id"]: (i["state"], tuple(i["tags"]))
                 for i in (described_instances(region) if found is None else found)}
    addresses = {a["AllocationId"]: a.get("InstanceId") for a in client.describe_addresses()["Addresses"]}
    targets = {g["TargetGroupArn"]: sorted(d["Target"]["Id"] for d in elb.describe_target_health(
        TargetGroupArn=g["TargetGroupArn"])["TargetHealthDescriptions"])
        for g in elb.describe_target_groups()["TargetGroups"]}
    return {"instances": instances, "addresses": addresses, "targets": targets}


def snapshot():
    return snapshot_tables(), ec2_snapshot()


def assert_unchanged(before):
    tables, world = before
    assert diff_snapshots(tables, snapshot_tables()) == {}
    assert ec2_snapshot() == world


def manual(caller, agent_id):
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})
    assert status == 200, reply


def plain_instance(**tags) -> str:
    client = ec2()
    params = {"ImageId": image_id(client), "InstanceType": "t3.micro",
              "MinCount": 1, "MaxCount": 1, "Placement": {"AvailabilityZone": ZONES[2]}}
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "instance",
                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return client.run_instances(**params)["Instances"][0]["InstanceId"]


# --- launches: no client AMI, no absurd type ----------------------------------------------------------------


@pytest.mark.parametrize("itype", ["u-24tb1.112xlarge", "p5.48xlarge", "x2iedn.metal", "m5.96xlarge"])
def test_registration_with_an_absurd_type_is_409_and_writes_nothing(make_tenant, itype):
    _, caller = make_tenant()
    before = snapshot()
    status, reply = caller.post("/api/agents/register", registration(instance_type=itype, ami_id="ami-attacker"))
    assert_error(status, reply, 409, code="instance_type_not_allowed")
    assert itype in reply["message"]
    assert_unchanged(before)


def test_an_allowed_type_list_naming_a_gpu_is_409(make_tenant):
    _, caller = make_tenant()
    before = snapshot()
    status, reply = caller.post("/api/agents/register", registration(instance_types=["m5.xlarge", "p4d.24xlarge"]))
    assert_error(status, reply, 409, code="instance_type_not_allowed")
    assert_unchanged(before)


def test_the_operator_can_allow_a_family_for_one_client(admin, make_tenant):
    client_id, caller = make_tenant()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/limits", {"allowed_instance_families": ["p5"],
                                                                          "max_instance_vcpus": 192})
    assert status == 200, reply
    assert caller.post("/api/agents/register", registration(instance_type="p5.48xlarge"))[0] == 200


def test_a_launch_whose_source_is_not_in_the_account_copies_nothing(make_tenant):
    """The agent names an instance that is not in the client's account (and a free-text AMI): the standby is
    recorded failed, no instance is launched."""
    _, caller = make_tenant()
    itype = unique_type()
    reg = registration(instance_id="i-0123456789abcdef0", instance_type=itype, region=REGION, az=ZONES[0],
                       ami_id="ami-attacker-anything")
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    manual(caller, agent_id)
    world = ec2_snapshot()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"pool_id": f"{itype}.{ZONES[1]}"})
    assert status in (201, 409, 503), reply
    assert ec2_snapshot()["instances"] == world["instances"]  # nothing launched, from any AMI
    if status == 201:
        assert reply["status"] == "failed" and reply["instance_id"] is None


# --- terminate / clone: only what the product launched for this client ----------------------------------------


def test_a_foreign_account_instance_cannot_be_claimed_as_a_standby(make_tenant):
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    manual(caller, agent_id)
    with in_account(OTHER):
        foreign = plain_instance()
    before = snapshot()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"instance_id": foreign})
    assert_error(status, reply, 409, code="not_owned")
    assert_unchanged(before)


def test_another_tenants_product_launched_instance_cannot_be_claimed(make_tenant):
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    manual(caller, agent_id)
    theirs = plain_instance(ManagedBy="SpotOptimizer", ClientId="cl-victim", SpotOptimizerStage="dev")
    before = snapshot()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"instance_id": theirs})
    assert_error(status, reply, 409, code="not_owned")
    assert_unchanged(before)


@pytest.mark.parametrize("how", ["delete", "failed", "manual-off"])
def test_an_instance_the_product_did_not_launch_is_deregistered_never_terminated(make_tenant, how):
    """The legacy agent-launched standby: recorded, but DELETE / status failed / manual mode off only close the
    row; the instance (not ours) keeps running."""
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    manual(caller, agent_id)
    victim = plain_instance()  # untagged: someone's instance in the account
    status, created = caller.post(f"/api/agents/{agent_id}/replicas", {"instance_id": victim})
    assert status == 201, created
    base = f"/api/agents/{agent_id}/replicas/{created['replica_id']}"
    if how == "delete":
        status, reply = caller.call("DELETE", base)
    elif how == "failed":
        status, reply = caller.post(f"{base}/status", {"status": "failed"})
    else:
        status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"auto_switch_enabled": True})
    assert status == 200, reply
    assert ec2().describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]["Name"] \
        == "running"


def test_terminate_refuses_instances_of_another_client_or_stage():
    ours = plain_instance(ManagedBy="SpotOptimizer", ClientId="cl-a", SpotOptimizerStage="dev")
    theirs = plain_instance(ManagedBy="SpotOptimizer", ClientId="cl-b", SpotOptimizerStage="dev")
    prod = plain_instance(ManagedBy="SpotOptimizer", ClientId="cl-a", SpotOptimizerStage="prod")
    untagged = plain_instance()
    assert adapter.terminate(REGION, [ours, theirs, prod, untagged], client_id="cl-a") == [ours]
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2().describe_instances(
        InstanceIds=[theirs, prod, untagged])["Reservations"] for i in r["Instances"]}
    assert set(states.values()) == {"running"}


# --- hand-over resources: the client's account and region only ---------------------------------------------


def test_an_eip_of_another_account_is_refused(make_tenant):
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    with in_account(OTHER):
        foreign = ec2().allocate_address(Domain="vpc")["AllocationId"]
    before = snapshot()
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config",
                                {"handover": "eip", "eip_allocation_id": foreign})
    assert_error(status, reply, 409, code="not_owned")
    assert_unchanged(before)


def test_an_eip_held_by_an_instance_the_client_does_not_own_is_refused(make_tenant):
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    stranger = plain_instance()
    allocation = ec2().allocate_address(Domain="vpc")["AllocationId"]
    ec2().associate_address(AllocationId=allocation, InstanceId=stranger)
    before = snapshot()
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config",
                                {"handover": "eip", "eip_allocation_id": allocation})
    assert_error(status, reply, 409, code="not_owned")
    assert_unchanged(before)
    with pytest.raises(adapter.NotOwnedError):  # and the failover's move refuses it too
        adapter.move_eip(REGION, allocation, plain_instance(), client_id="cl-x")
    assert ec2().describe_addresses(AllocationIds=[allocation])["Addresses"][0]["InstanceId"] == stranger


def test_a_target_group_of_another_account_is_refused(make_tenant):
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    with in_account(OTHER):
        vpc = ec2().describe_vpcs()["Vpcs"][0]["VpcId"]
        arn = boto3.client("elbv2", region_name=REGION).create_target_group(
            Name=f"tg-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    assert f":{OTHER}:" in arn
    before = snapshot()
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config",
                                {"handover": "target-group", "target_group_arn": arn})
    assert_error(status, reply, 409, code="not_owned")
    assert_unchanged(before)


# --- quotas ------------------------------------------------------------------------------------------------


def test_the_agent_quota_is_409_and_writes_nothing(admin, make_tenant):
    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 1})[0] == 200
    assert caller.post("/api/agents/register", registration())[0] == 200
    before = snapshot()
    status, reply = caller.post("/api/agents/register", registration())
    assert_error(status, reply, 409, code="quota_exceeded")
    assert "max_agents" in reply["message"]
    assert_unchanged(before)


def test_a_deleted_agent_registering_again_counts_against_the_agent_quota(admin, make_tenant):
    """GIVEN max_agents 1, agent A registered then deleted, agent B registered in its place WHEN A's logical id
    registers again THEN 409 quota_exceeded and nothing written (a revival is a new agent for the quota: it was
    not counted, and reviving it would run two agents on a quota of one)."""
    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 1})[0] == 200
    first = registration()
    status, reply = caller.post("/api/agents/register", first)
    assert status == 200, reply
    assert caller.call("DELETE", f"/api/client/agents/{reply['agent_id']}")[0] == 200
    assert caller.post("/api/agents/register", registration())[0] == 200
    before = snapshot()
    status, reply = caller.post("/api/agents/register", {**first, "instance_id": new_instance_id()})
    assert_error(status, reply, 409, code="quota_exceeded")
    assert_unchanged(before)


def test_two_new_agents_registering_at_once_for_the_last_slot_land_one(admin, make_tenant, monkeypatch):
    """GIVEN max_agents 2 with one agent registered WHEN two new agents register interleaved, both counting the
    client's agents (1 of 2: room for one) before either writes THEN one lands (200) and the other is 409
    quota_exceeded with nothing of it written: the registration that counted before the other's write counts
    again (the client row's ``agent_admissions`` is a condition of each new agent's write)."""
    from chalicelib import quotas

    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 2})[0] == 200
    assert caller.post("/api/agents/register", registration())[0] == 200
    first, second = registration(), registration()
    real_check, answers = quotas.check_agents, []

    def counted_then_overtaken(*args, **kwargs):
        found = real_check(*args, **kwargs)
        if not answers:  # the other registration runs whole between this one's count and its write
            answers.append(None)
            answers.append(caller.post("/api/agents/register", second))
        return found

    monkeypatch.setattr(quotas, "check_agents", counted_then_overtaken)
    status, reply = caller.post("/api/agents/register", first)
    monkeypatch.undo()
    assert answers[1][0] == 200, answers
    assert_error(status, reply, 409, code="quota_exceeded")
    agents = [row.instance_id for row in AgentTable.query(client_id)]
    assert len(agents) == 2 and second["instance_id"] in agents and first["instance_id"] not in agents


def test_deleted_agents_kept_are_capped_but_a_deleted_one_may_come_back(make_tenant, monkeypatch):
    """GIVEN QUOTA_MAX_DELETED_AGENTS 2 and two agents registered and deleted (their rows are kept for their
    history) WHEN a third, new logical id registers THEN 409 quota_exceeded naming the deleted agents, nothing
    written; a deleted agent's own logical id still registers (it is revived, which shrinks what is kept)."""
    from chalicelib.settings import get_settings

    monkeypatch.setenv("QUOTA_MAX_DELETED_AGENTS", "2")
    get_settings.cache_clear()
    try:
        _, caller = make_tenant()
        bodies = [registration(), registration()]
        for body in bodies:
            status, reply = caller.post("/api/agents/register", body)
            assert status == 200, reply
            assert caller.call("DELETE", f"/api/client/agents/{reply['agent_id']}")[0] == 200
        before = snapshot()
        status, reply = caller.post("/api/agents/register", registration())
        assert_error(status, reply, 409, code="quota_exceeded")
        assert "2 deleted agents" in reply["message"]
        assert_unchanged(before)
        status, reply = caller.post("/api/agents/register", {**bodies[0], "instance_id": new_instance_id()})
        assert status == 200 and reply["action"] != "created", reply
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


@pytest.mark.parametrize("limit", [{"max_instances": 0}, {"max_standby_usd_per_hour": 0.01}])
def test_instance_and_spend_quotas_refuse_a_standby_with_409_and_nothing_launched(admin, make_tenant, limit):
    client_id, caller, agent_id, _, _ = register_agent(make_tenant)
    manual(caller, agent_id)
    assert admin.post(f"/api/admin/clients/{client_id}/limits", limit)[0] == 200
    before = snapshot()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert_error(status, reply, 409, code="quota_exceeded")
    assert_unchanged(before)


def test_limits_are_readable_by_the_client_and_reset_by_null(admin, make_tenant):
    client_id, caller = make_tenant()
    status, reply = caller.get("/api/client/limits")
    assert status == 200 and reply["limits"]["max_agents"] >= 1 and reply["limits"]["allow_accelerated_types"] is False
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": 3})[1]["limits"]["max_agents"] == 3
    default = admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": None})[1]["limits"]["max_agents"]
    assert default == reply["limits"]["max_agents"]


# --- account bindings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"account_id": "11111111111", "role_arn": f"arn:aws:iam::{BOUND}:role/SpotOptimizer"}, "account_id"),
    ({"account_id": BOUND, "role_arn": f"arn:aws:iam::{OTHER}:role/SpotOptimizer"}, None),
    ({"account_id": BOUND, "role_arn": "arn:aws:s3:::bucket"}, "role_arn"),
])
def test_bad_bindings_are_400_and_write_nothing(admin, make_tenant, body, field):
    client_id, _ = make_tenant()
    before = snapshot_tables()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts", body)
    assert_error(status, reply, 400, field=field)
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_bind_show_and_unbind_an_account(admin, make_tenant):
    client_id, caller = make_tenant()
    status, mine = caller.get("/api/client/accounts")
    assert status == 200 and mine["accounts"] == [] and mine["external_id"].startswith("so-")
    role = f"arn:aws:iam::{BOUND}:role/SpotOptimizer-dev"
    status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": BOUND, "role_arn": role})
    assert status == 201, reply
    assert reply["accounts"][0]["external_id"] == mine["external_id"]  # the one the client deployed the role with
    status, mine = caller.get("/api/client/accounts")
    assert [(a["account_id"], a["role_arn"]) for a in mine["accounts"]] == [(BOUND, role)]
    _, other_caller = make_tenant()
    assert other_caller.get("/api/client/accounts")[1]["external_id"] != mine["external_id"]  # unique per client
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{BOUND}")
    assert status == 200 and reply["accounts"] == []
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{BOUND}")
    assert_error(status, reply, 404, field="account_id")


def test_a_bound_account_is_reached_through_the_role_with_the_client_external_id(admin, make_tenant):
    """AssumeRole (moto links the returned credentials to the role's account): the product sees the bound
    account's instances, not the home account's, under a session naming the stage and the client."""
    client_id, _ = make_tenant()
    role = f"arn:aws:iam::{BOUND}:role/SpotOptimizer-dev"
    assert admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": BOUND, "role_arn": role})[0] == 201
    with in_account(BOUND):
        theirs = plain_instance(ManagedBy="SpotOptimizer", ClientId=client_id, SpotOptimizerStage="dev")
    from chalicelib import tenancy

    account = tenancy.for_client(client_id, BOUND)
    assert (account.account_id, account.role_arn, account.home) == (BOUND, role, False)
    assert account.session_name == f"spot-optimizer-dev-{client_id}"
    identity = accounts.role_client("sts", REGION, account).get_caller_identity()
    assert identity["Account"] == BOUND and identity["Arn"].endswith(f"/{account.session_name}")
    assert adapter.describe(REGION, [theirs], account=account)[theirs].tags["ClientId"] == client_id
    assert adapter.describe(REGION, [theirs]) == {}  # not in the home account
    assert accounts.role_client("ec2", REGION, account) is accounts.role_client("ec2", REGION, account)  # cached
    assert adapter.terminate(REGION, [theirs], client_id=client_id, account=account) == [theirs]
    with pytest.raises(tenancy.AccountNotBound):
        tenancy.for_client(client_id, OTHER)  # an account nobody bound


@pytest.fixture
def assume_role_tenancy(monkeypatch):
    """SPOT_TENANCY=assume-role (the deployed default) for one test."""
    from chalicelib.settings import get_settings

    monkeypatch.setenv("SPOT_TENANCY", "assume-role")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_with_assume_role_tenancy_an_unbound_client_acts_nowhere(make_tenant, assume_role_tenancy):
    """No account bound: a standby is refused with 409 account_not_bound, nothing launched or written —
    the product's own account is never used for a client in assume-role mode."""
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    manual(caller, agent_id)
    before = snapshot()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert_error(status, reply, 409, code="account_not_bound")
    assert_unchanged(before)


def test_with_assume_role_tenancy_a_bound_client_launches_in_its_account(admin, make_tenant, assume_role_tenancy):
    """The client's primary lives in its bound account: the standby is launched there, through the role,
    tagged for the client and stage; the home account gets nothing."""
    client_id, caller = make_tenant()
    role = f"arn:aws:iam::{BOUND}:role/SpotOptimizer-dev"
    assert admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": BOUND, "role_arn": role})[0] == 201
    itype = unique_type()
    with in_account(BOUND):
        client = ec2()
        image = image_id(client)
        primary = client.run_instances(ImageId=image, InstanceType=itype, MinCount=1, MaxCount=1,
                                       Placement={"AvailabilityZone": ZONES[0]})["Instances"][0]["InstanceId"]
    status, reply = caller.post("/api/agents/register", registration(
        instance_id=primary, instance_type=itype, region=REGION, az=ZONES[0], mode="spot"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    manual(caller, agent_id)
    home = ec2_snapshot()["instances"]
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"pool_id": f"{itype}.{ZONES[1]}"})
    assert status == 201 and reply["instance_id"], reply
    assert ec2_snapshot()["instances"] == home  # nothing in the product's own account
    with in_account(BOUND):
        [launched] = [i for r in ec2().describe_instances(InstanceIds=[reply["instance_id"]])["Reservations"]
                      for i in r["Instances"]]
    tags = {t["Key"]: t["Value"] for t in launched["Tags"]}
    assert (tags["ClientId"], tags["SpotOptimizerStage"], launched["ImageId"]) == (client_id, "dev", image)


def test_cleanup_reaps_orphans_in_a_bound_account_through_the_role(api, admin, make_tenant):
    """An orphan this stage launched for a client in its bound account is terminated by the cleanup job (through
    the role); an instance there without our tags is left alone."""
    from datetime import UTC, datetime, timedelta

    from chalicelib.settings import get_settings
    from tests.conftest import invoke_schedule

    client_id, caller, _, _, _ = register_agent(make_tenant)  # an agent in us-east-1: the region is scanned
    role = f"arn:aws:iam::{BOUND}:role/SpotOptimizer-dev"
    assert admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": BOUND, "role_arn": role})[0] == 201
    with in_account(BOUND):
        orphan = plain_instance(ManagedBy="SpotOptimizer", ClientId=client_id, SpotOptimizerStage="dev",
                                ReplicaId="rep-none", AgentId="ag-none")
        theirs = plain_instance()
    later = datetime.now(UTC) + timedelta(seconds=get_settings().orphan_grace_s + 60)
    outcome = invoke_schedule(api, "cleanup", now=later)
    assert orphan in outcome["terminated"] and theirs not in outcome["terminated"]
    with in_account(BOUND):
        states = {i["InstanceId"]: i["State"]["Name"] for r in ec2().describe_instances(
            InstanceIds=[orphan, theirs])["Reservations"] for i in r["Instances"]}
    assert states[theirs] == "running" and states[orphan] in ("shutting-down", "terminated")


def test_a_failover_replacement_may_exceed_the_instance_quota_by_one(api, admin, make_tenant, failover_machine):
    """Quotas never cost service: with max_instances=0 and no standby budget, a termination warning still
    gets its replacement (an interruption's replacement may go one over; the old instance is going away)."""
    from tests.e2e.failover_support import deliver, wait_for, warning

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    assert admin.post(f"/api/admin/clients/{client_id}/limits",
                      {"max_instances": 0, "max_standby_usd_per_hour": 0})[0] == 200
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    from chalicelib.tables import AgentTable

    replacement = AgentTable.get(client_id, agent_id, consistent_read=True).instance_id
    assert replacement != primary
    tags = {t["Key"]: t["Value"] for t in ec2().describe_instances(InstanceIds=[replacement])[
        "Reservations"][0]["Instances"][0]["Tags"]}
    assert (tags["ClientId"], tags["SpotOptimizerStage"]) == (client_id, "dev")


def test_a_target_group_of_the_same_account_serving_someone_elses_instance_is_refused(make_tenant):
    """A shared (self-hosted) account: the group is in the client's account but serves an instance that is not
    the client's, so moving its traffic would be taking someone else's service."""
    _, caller, agent_id, _, _ = register_agent(make_tenant)
    stranger = plain_instance()
    client, elb = ec2(), boto3.client("elbv2", region_name=REGION)
    arn = elb.create_target_group(Name=f"tg-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80,
                                  VpcId=client.describe_vpcs()["Vpcs"][0]["VpcId"])["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": stranger}])
    before = snapshot()
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config",
                                {"handover": "target-group", "target_group_arn": arn})
    assert_error(status, reply, 409, code="not_owned")
    assert_unchanged(before)
    with pytest.raises(adapter.NotOwnedError):  # and the failover's swap refuses it too
        adapter.swap_target(REGION, arn, None, plain_instance(), None, client_id="cl-x")
    assert [d["Target"]["Id"] for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]] \
        == [stranger]


def test_a_target_group_serving_the_clients_own_instances_is_accepted(make_tenant):
    _, caller, agent_id, instance_id, _ = register_agent(make_tenant)
    client, elb = ec2(), boto3.client("elbv2", region_name=REGION)
    arn = elb.create_target_group(Name=f"tg-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80,
                                  VpcId=client.describe_vpcs()["Vpcs"][0]["VpcId"])["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config",
                                {"handover": "target-group", "target_group_arn": arn})
    assert status == 200, reply


# --- the event bus follows the bindings ---------------------------------------------------------------------


def bus_principals() -> dict[str, object]:
    """Sid → principal of the default bus's policy statements in the stage region (home account)."""
    policy = boto3.client("events", region_name=REGION).describe_event_bus(Name="default").get("Policy")
    return {s["Sid"]: s["Principal"] for s in (json.loads(policy)["Statement"] if policy else [])}


def fresh_account() -> str:
    """An account no other test binds (the tables outlive a test)."""
    return str(uuid.uuid4().int)[:12].rjust(12, "1")


def test_binding_opens_the_event_bus_to_the_account_until_no_client_binds_it(admin, make_tenant):
    """EC2 events of a bound account are forwarded to our bus: the bus accepts that account while any client
    of the stage binds it (one idempotent statement), and no longer after the last unbinding."""
    account = fresh_account()
    sid = f"spot-optimizer-dev-{account}"
    first, _ = make_tenant()
    second, _ = make_tenant()
    role = f"arn:aws:iam::{account}:role/SpotOptimizer-dev"
    for client_id in (first, second, first):  # re-binding is idempotent
        assert admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": account, "role_arn": role})[0] == 201
    principals = bus_principals()
    assert sid in principals and account in json.dumps(principals[sid])
    assert admin.call("DELETE", f"/api/admin/clients/{first}/accounts/{account}")[0] == 200
    assert sid in bus_principals()  # the second client still binds it
    assert admin.call("DELETE", f"/api/admin/clients/{second}/accounts/{account}")[0] == 200
    assert sid not in bus_principals()


def test_a_bus_failure_on_bind_is_503_and_stores_nothing(admin, make_tenant, monkeypatch):
    account = fresh_account()
    from botocore.exceptions import ClientError

    from chalicelib.aws import event_bus

    def refuse(*_args, **_kwargs):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutPermission")

    client_id, _ = make_tenant()
    monkeypatch.setattr(event_bus, "allow", refuse)
    before = snapshot_tables()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts",
                               {"account_id": account, "role_arn": f"arn:aws:iam::{account}:role/SpotOptimizer-dev"})
    assert_error(status, reply, 503, code="event_bus_unavailable")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert f"spot-optimizer-dev-{account}" not in bus_principals()


def test_a_bus_failure_on_unbind_is_503_and_a_repeated_delete_closes_the_bus(admin, make_tenant, monkeypatch):
    account = fresh_account()
    from botocore.exceptions import ClientError

    from chalicelib.aws import event_bus

    client_id, _ = make_tenant()
    role = f"arn:aws:iam::{account}:role/SpotOptimizer-dev"
    assert admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": account, "role_arn": role})[0] == 201
    real_revoke = event_bus.revoke

    def refuse(*_args, **_kwargs):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "RemovePermission")

    monkeypatch.setattr(event_bus, "revoke", refuse)
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}")
    assert_error(status, reply, 503, code="event_bus_unavailable")
    assert f"spot-optimizer-dev-{account}" in bus_principals()
    monkeypatch.setattr(event_bus, "revoke", real_revoke)
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}")
    assert_error(status, reply, 404, field="account_id")
    assert f"spot-optimizer-dev-{account}" not in bus_principals()


def test_a_full_bus_policy_is_409_and_stores_nothing(admin, make_tenant):
    """EventBridge keeps a bus's permission policy under 10 KB (about 45 accounts). Before, a bind past it was
    answered 503 "retry" for ever (AWS's PolicyLengthExceededException read as an outage, and local mode's bus
    had no limit at all); now 409 ``event_bus_full``, nothing stored, and a bind fits again once room is made."""
    from chalicelib.aws import event_bus

    events = boto3.client("events", region_name=REGION)
    fillers = []
    while len(events.describe_event_bus(Name="default").get("Policy") or "") < event_bus.POLICY_MAX_BYTES - 200:
        filler = fresh_account()  # another stage's clients, as the default bus is shared by the account's stages
        events.put_permission(EventBusName="default", Action="events:PutEvents", Principal=filler,
                              StatementId=f"spot-optimizer-other-{filler}")
        fillers.append(filler)
    try:
        client_id, _ = make_tenant()
        account = fresh_account()
        body = {"account_id": account, "role_arn": f"arn:aws:iam::{account}:role/SpotOptimizer-dev"}
        before = snapshot_tables()
        status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts", body)
        assert_error(status, reply, 409, code="event_bus_full", field="account_id")
        assert diff_snapshots(before, snapshot_tables()) == {}
        assert f"spot-optimizer-dev-{account}" not in bus_principals()
        for filler in (fillers.pop(), fillers.pop()):  # room for one statement, whatever the sizes' rounding
            events.remove_permission(EventBusName="default", StatementId=f"spot-optimizer-other-{filler}")
        assert admin.post(f"/api/admin/clients/{client_id}/accounts", body)[0] == 201
        assert f"spot-optimizer-dev-{account}" in bus_principals()
        assert admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}")[0] == 200
    finally:
        for filler in fillers:
            events.remove_permission(EventBusName="default", StatementId=f"spot-optimizer-other-{filler}")
