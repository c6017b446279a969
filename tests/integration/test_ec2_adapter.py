"""The EC2/ELBv2 adapter against moto: real launches, tags, EIPs and target groups, plus error mapping."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib.aws import ec2 as adapter
from chalicelib.aws.ec2 import (
    MANAGED_BY,
    CapacityUnavailable,
    Ec2Error,
    LaunchError,
    LaunchSpec,
    TransientAwsError,
)
from localmode.embedded_aws import image_id

REGION = "us-east-1"
CLIENT = "client-adapter"
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/0123456789abcdef"


def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def ec2():
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture(scope="module")
def ami(ec2):
    return image_id(ec2)


@pytest.fixture
def network(ec2):
    """A fresh VPC: a small and a large subnet in 1a, one in 1c, none in 1f."""
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]

    def subnet(cidr, az):
        return ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]

    return {"vpc": vpc, "a_small": subnet("10.20.0.0/26", "us-east-1a"),
            "a_large": subnet("10.20.4.0/22", "us-east-1a"), "c": subnet("10.20.8.0/24", "us-east-1c")}


@pytest.fixture
def primary(ec2, ami, network):
    """A running primary with SG, key pair and instance profile, in the small 1a subnet."""
    name = f"primary-{uid()}"
    profile = boto3.client("iam").create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    ec2.create_key_pair(KeyName=name)
    sg = ec2.create_security_group(GroupName=name, Description="primary", VpcId=network["vpc"])["GroupId"]
    raw = ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1, KeyName=name,
                            SubnetId=network["a_small"], SecurityGroupIds=[sg],
                            IamInstanceProfile={"Arn": profile["Arn"]})["Instances"][0]
    return {"id": raw["InstanceId"], "ami": ami, "sg": sg, "key": name, "profile_arn": profile["Arn"], **network}


def spec(**overrides) -> LaunchSpec:
    """``ami_id`` (tests only): launch a plain source instance of that AMI in the default VPC to copy from —
    the adapter itself only ever copies a source instance (no client-supplied AMI)."""
    ami_id = overrides.pop("ami_id", None)
    values = dict(region=REGION, instance_type="m5.large", az="us-east-1c", lifecycle="spot",
                  replica_id=f"rep-{uid()}", logical_agent_id=f"web-{uid()}", agent_id=f"agent-{uid()}",
                  client_id=CLIENT, source_instance_id=None)
    values.update(overrides)
    if ami_id and not values["source_instance_id"]:
        values["source_instance_id"] = boto3.client("ec2", region_name=REGION).run_instances(
            ImageId=ami_id, InstanceType="t3.micro", MinCount=1, MaxCount=1,
            Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    return LaunchSpec(**values)


def moto_instance(ec2, instance_id) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def subnet_of(ec2, subnet_id) -> dict:
    return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]


# --- launch ---------------------------------------------------------------------------------------------------


def test_spot_launch_into_other_az_copies_the_primary(ec2, primary):
    s = spec(source_instance_id=primary["id"], az="us-east-1c")
    info = adapter.launch(s)

    raw = moto_instance(ec2, info.instance_id)
    assert raw["ImageId"] == primary["ami"]
    assert raw["InstanceType"] == "m5.large"
    assert [g["GroupId"] for g in raw["SecurityGroups"]] == [primary["sg"]]
    assert raw["KeyName"] == primary["key"]
    assert raw["IamInstanceProfile"]["Arn"] == primary["profile_arn"]
    assert raw["SubnetId"] == primary["c"]
    subnet = subnet_of(ec2, raw["SubnetId"])
    assert (subnet["AvailabilityZone"], subnet["VpcId"]) == ("us-east-1c", primary["vpc"])
    assert raw["InstanceLifecycle"] == "spot"  # moto 5.2.5 honours InstanceMarketOptions
    assert raw["ClientToken"] == f"{s.replica_id}-spot"
    tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
    assert tags == {"ManagedBy": MANAGED_BY, "LogicalAgentId": s.logical_agent_id, "ReplicaId": s.replica_id,
                    "AgentId": s.agent_id, "ClientId": s.client_id, "SpotOptimizerStage": "dev",
                    "Name": f"spot-optimizer-{s.logical_agent_id}-spot"}

    assert info.lifecycle == "spot" and info.az == "us-east-1c" and info.instance_type == "m5.large"
    assert info.tags == tags and info.state in ("pending", "running")
    assert info.launch_time is not None and info.launch_time.utcoffset().total_seconds() == 0


def test_ondemand_launch_in_same_az_reuses_the_primary_subnet(ec2, primary):
    s = spec(source_instance_id=primary["id"], az="us-east-1a", lifecycle="ondemand")
    info = adapter.launch(s)

    raw = moto_instance(ec2, info.instance_id)
    assert raw["SubnetId"] == primary["a_small"]  # not the roomier a_large subnet
    assert "InstanceLifecycle" not in raw
    assert info.lifecycle == "ondemand"
    assert info.tags["Name"] == f"spot-optimizer-{s.logical_agent_id}-ondemand"
    assert raw["ClientToken"] == f"{s.replica_id}-ondemand"


def test_client_token_is_capped_at_64_chars(ec2, ami):
    s = spec(replica_id="r" * 80, ami_id=ami)
    raw = moto_instance(ec2, adapter.launch(s).instance_id)
    assert raw["ClientToken"] == "r" * 64


def test_launch_is_idempotent_per_replica(ec2, primary):
    s = spec(source_instance_id=primary["id"])
    first, second = adapter.launch(s), adapter.launch(s)
    assert first.instance_id == second.instance_id

    tagged = ec2.describe_instances(Filters=[{"Name": "tag:ReplicaId", "Values": [s.replica_id]}])
    assert [i["InstanceId"] for r in tagged["Reservations"] for i in r["Instances"]] == [first.instance_id]


def test_terminated_replica_is_launched_again(ec2, ami):
    s = spec(ami_id=ami)
    first = adapter.launch(s)
    adapter.terminate(REGION, [first.instance_id], client_id=CLIENT)
    assert adapter.launch(s).instance_id != first.instance_id


def test_a_source_in_the_default_vpc_launches_in_the_default_subnet_of_the_az(ec2, ami):
    info = adapter.launch(spec(ami_id=ami, az="us-east-1d"))
    subnet = subnet_of(ec2, moto_instance(ec2, info.instance_id)["SubnetId"])
    assert subnet["AvailabilityZone"] == "us-east-1d" and subnet["DefaultForAz"] is True
    assert moto_instance(ec2, info.instance_id)["ImageId"] == ami


@pytest.mark.parametrize("source", ["i-0123456789abcdef0", None])
def test_a_source_not_in_the_account_is_a_launch_error_and_nothing_is_launched(ec2, source):
    s = spec(source_instance_id=source)
    with pytest.raises(LaunchError, match="not found in the client's account"):
        adapter.launch(s)
    assert not ec2.describe_instances(Filters=[{"Name": "tag:ReplicaId", "Values": [s.replica_id]}])["Reservations"]


def test_source_vpc_without_subnet_in_az_is_a_launch_error(ec2, primary):
    s = spec(source_instance_id=primary["id"], az="us-east-1f")
    with pytest.raises(LaunchError, match="no subnet"):
        adapter.launch(s)
    assert not ec2.describe_instances(Filters=[{"Name": "tag:ReplicaId", "Values": [s.replica_id]}])["Reservations"]


def test_unknown_lifecycle_is_rejected(ami):
    with pytest.raises(LaunchError):
        adapter.launch(spec(ami_id=ami, lifecycle="reserved"))


# --- describe / terminate / managed_instances ----------------------------------------------------------------


def test_describe_skips_unknown_and_malformed_ids_across_chunks(ami):
    info = adapter.launch(spec(ami_id=ami))
    fakes = [f"i-{uuid.uuid4().hex[:17]}" for _ in range(150)]
    found = adapter.describe(REGION, [*fakes, info.instance_id, "not-an-id"])
    assert list(found) == [info.instance_id]
    assert found[info.instance_id].tags["ReplicaId"] == info.tags["ReplicaId"]
    assert adapter.describe(REGION, []) == {}


def test_terminate_is_idempotent(ec2, ami):
    info = adapter.launch(spec(ami_id=ami))
    assert adapter.terminate(REGION, [info.instance_id, "i-0123456789abcdef0"], client_id=CLIENT) == [info.instance_id]
    assert moto_instance(ec2, info.instance_id)["State"]["Name"] == "terminated"
    assert adapter.terminate(REGION, [info.instance_id], client_id=CLIENT) == []
    assert adapter.terminate(REGION, ["i-0123456789abcdef0", "garbage"], client_id=CLIENT) == []


def test_an_instance_we_launched_is_terminated_by_id_while_describe_does_not_list_it_yet(ec2, ami, monkeypatch):
    """GIVEN an instance RunInstances just returned to us, which DescribeInstances does not list yet (eventually
    consistent) WHEN it is terminated naming it ``launched`` THEN TerminateInstances gets its id; without
    ``launched`` (an id we only read somewhere) nothing unlisted is ever terminated."""
    ours, other = adapter.launch(spec(ami_id=ami)), adapter.launch(spec(ami_id=ami))
    monkeypatch.setattr(adapter, "describe", lambda region, ids, **_: {})  # the listing lags for both
    assert adapter.terminate(REGION, [other.instance_id], client_id=CLIENT) == []
    assert adapter.terminate(REGION, [ours.instance_id], client_id=CLIENT,
                             launched=(ours.instance_id,)) == [ours.instance_id]
    assert moto_instance(ec2, ours.instance_id)["State"]["Name"] == "terminated"
    assert moto_instance(ec2, other.instance_id)["State"]["Name"] == "running"


def test_an_id_named_launched_that_ec2_lists_as_not_ours_is_still_refused(ec2, ami):
    """``launched`` only stands in for a listing EC2 has not caught up with: an instance it does list is checked
    for our tags like any other (another client's, or not launched by us, is left alone)."""
    theirs = adapter.launch(spec(ami_id=ami, client_id="client-someone-else"))
    foreign = ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]
    ids = [theirs.instance_id, foreign["InstanceId"]]
    assert adapter.terminate(REGION, ids, client_id=CLIENT, launched=tuple(ids)) == []
    assert {moto_instance(ec2, i)["State"]["Name"] for i in ids} == {"running"}


def test_terminate_survives_an_instance_vanishing_mid_call(ec2, ami, monkeypatch):
    a, b = adapter.launch(spec(ami_id=ami)), adapter.launch(spec(ami_id=ami))
    client = adapter._client("ec2", REGION)
    real = client.terminate_instances

    def flaky(InstanceIds):
        if len(InstanceIds) > 1:
            raise ClientError({"Error": {"Code": "InvalidInstanceID.NotFound", "Message": "gone"}},
                              "TerminateInstances")
        return real(InstanceIds=InstanceIds)

    monkeypatch.setattr(client, "terminate_instances", flaky)
    adapter.terminate(REGION, [a.instance_id, b.instance_id], client_id=CLIENT)
    assert {moto_instance(ec2, i)["State"]["Name"] for i in (a.instance_id, b.instance_id)} == {"terminated"}


def test_managed_instances_lists_only_live_tagged_ones(ec2, ami):
    live, dead = adapter.launch(spec(ami_id=ami)), adapter.launch(spec(ami_id=ami))
    adapter.terminate(REGION, [dead.instance_id], client_id=CLIENT)
    stranger = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]

    listed = {i.instance_id: i for i in adapter.managed_instances(REGION)}
    assert live.instance_id in listed
    assert dead.instance_id not in listed and stranger not in listed
    assert all(i.tags.get("ManagedBy") == MANAGED_BY and i.state in adapter.LIVE_STATES for i in listed.values())


# --- EIP / target group / AZs --------------------------------------------------------------------------------


def test_move_eip_between_instances(ec2, ami):
    a, b = adapter.launch(spec(ami_id=ami, az="us-east-1a")), adapter.launch(spec(ami_id=ami, az="us-east-1a"))
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(AllocationId=allocation, InstanceId=a.instance_id)

    association = adapter.move_eip(REGION, allocation, b.instance_id, client_id=CLIENT)
    address = ec2.describe_addresses(AllocationIds=[allocation])["Addresses"][0]
    assert address["InstanceId"] == b.instance_id and address["AssociationId"] == association
    assert adapter.move_eip(REGION, allocation, b.instance_id, client_id=CLIENT) == association


def test_move_eip_unknown_allocation_is_an_ec2_error(ami):
    info = adapter.launch(spec(ami_id=ami))
    with pytest.raises(Ec2Error):
        adapter.move_eip(REGION, "eipalloc-00000000000000000", info.instance_id, client_id=CLIENT)


def test_swap_target_registers_new_then_drops_old(primary):
    elb = boto3.client("elbv2", region_name=REGION)
    group = elb.create_target_group(Name=f"tg-{uid()}", Protocol="HTTP", Port=80, VpcId=primary["vpc"],
                                    TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    new = adapter.launch(spec(source_instance_id=primary["id"], az="us-east-1a"))
    elb.register_targets(TargetGroupArn=group, Targets=[{"Id": primary["id"], "Port": 8080}])

    adapter.swap_target(REGION, group, primary["id"], new.instance_id, 8080, client_id=CLIENT)
    targets = {(d["Target"]["Id"], d["Target"].get("Port"))
               for d in elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]}
    assert targets == {(new.instance_id, 8080)}

    adapter.swap_target(REGION, group, primary["id"], new.instance_id, 8080, client_id=CLIENT)  # old already gone: fine
    adapter.swap_target(REGION, group, None, new.instance_id, 8080, client_id=CLIENT)
    assert len(elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]) == 1


def test_availability_zones_are_sorted_names():
    assert adapter.availability_zones(REGION) == [f"us-east-1{z}" for z in "abcdef"]


# --- error mapping -------------------------------------------------------------------------------------------


def client_error(code: str, operation: str = "RunInstances", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "stubbed"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize(("code", "status", "expected"), [
    ("InsufficientInstanceCapacity", 400, CapacityUnavailable),
    ("SpotMaxPriceTooLow", 400, CapacityUnavailable),
    ("MaxSpotInstanceCountExceeded", 400, CapacityUnavailable),
    ("Unsupported", 400, CapacityUnavailable),
    ("RequestLimitExceeded", 400, TransientAwsError),
    ("InternalError", 500, TransientAwsError),
    ("SomethingNew", 503, TransientAwsError),
    ("InvalidAMIID.NotFound", 400, LaunchError),
    ("InvalidParameterValue", 400, LaunchError),
])
def test_run_instances_errors_are_mapped(ami, monkeypatch, code, status, expected):
    def fail(**_):
        raise client_error(code, status=status)

    monkeypatch.setattr(adapter._client("ec2", REGION), "run_instances", fail)
    with pytest.raises(expected, match=code) as caught:
        adapter.launch(spec(ami_id=ami))
    assert type(caught.value) is expected  # Step Functions match on the exact class name
    assert isinstance(caught.value.__cause__, ClientError)


def test_a_client_token_already_used_adopts_its_instance_or_is_transient_until_ec2_lists_it(ami, monkeypatch):
    """GIVEN an earlier attempt launched with this ClientToken (its answer lost) and EC2 answers the retry
    IdempotentParameterMismatch (different parameters since, e.g. another subnet)
    THEN the retry adopts the instance tagged with the replica id, or retries (transient) until it is listed."""
    s = spec(ami_id=ami)
    earlier = adapter.launch(s)
    real_existing = adapter._existing_replica
    listed = [None]  # the first look (before RunInstances) misses, as EC2's eventually consistent list may

    def existing(sp):
        return listed.pop() if listed else real_existing(sp)

    def mismatch(**_):
        raise client_error("IdempotentParameterMismatch")

    monkeypatch.setattr(adapter._client("ec2", REGION), "run_instances", mismatch)
    monkeypatch.setattr(adapter, "_existing_replica", existing)
    assert adapter.launch(s).instance_id == earlier.instance_id

    monkeypatch.setattr(adapter, "_existing_replica", lambda sp: None)  # not listed yet
    with pytest.raises(TransientAwsError, match="earlier attempt"):
        adapter.launch(s)


def test_network_error_during_launch_is_transient(ami, monkeypatch):
    def fail(**_):
        raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com")

    monkeypatch.setattr(adapter._client("ec2", REGION), "run_instances", fail)
    with pytest.raises(TransientAwsError):
        adapter.launch(spec(ami_id=ami))


def test_other_calls_map_throttling_and_unknown_codes(monkeypatch):
    client = adapter._client("elbv2", REGION)
    monkeypatch.setattr(client, "describe_target_groups", lambda **_: {"TargetGroups": [{}]})
    monkeypatch.setattr(client, "describe_target_health", lambda **_: {"TargetHealthDescriptions": []})
    monkeypatch.setattr(client, "register_targets", lambda **_: (_ for _ in ()).throw(
        client_error("Throttling", "RegisterTargets")))
    with pytest.raises(TransientAwsError):
        adapter.swap_target(REGION, TG_ARN, None, "i-1", None, client_id=CLIENT)

    monkeypatch.setattr(client, "register_targets", lambda **_: (_ for _ in ()).throw(
        client_error("AccessDenied", "RegisterTargets")))
    with pytest.raises(Ec2Error, match="AccessDenied") as caught:
        adapter.swap_target(REGION, TG_ARN, None, "i-1", None, client_id=CLIENT)
    assert type(caught.value) is Ec2Error


def test_clients_are_cached_per_region():
    assert adapter._client("ec2", REGION) is adapter._client("ec2", REGION)
    assert adapter._client("ec2", "eu-west-1") is not adapter._client("ec2", REGION)
