"""Local mode's spot capacity (``localmode.capacity``): the product's own launches are refused where the
demo's replayed world has no capacity, as the agents' are."""

from __future__ import annotations

import uuid

import boto3
import pytest

from localmode import capacity
from localmode.embedded_aws import image_id


@pytest.fixture
def guarded(aws_tables, monkeypatch):
    """``install`` on a fresh state, undone afterwards (the product's EC2 client factory is restored)."""
    from chalicelib.aws import ec2

    monkeypatch.setattr(ec2, "_client", ec2._client)
    monkeypatch.setattr(capacity, "STATE", capacity.SpotCapacity())
    capacity.install()
    return ec2


def _spec(ec2, az: str, lifecycle: str):
    client = boto3.client("ec2", region_name="us-east-1")
    image = image_id(client)
    source = client.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)[
        "Instances"][0]["InstanceId"]  # a launch copies a source instance of the account
    return ec2.LaunchSpec(region="us-east-1", instance_type="p3.2xlarge", az=az, lifecycle=lifecycle,
                          replica_id=f"r-{uuid.uuid4().hex[:8]}", logical_agent_id="lm", agent_id="ag-lm",
                          client_id="c-lm", source_instance_id=source)


def test_the_products_spot_launches_follow_the_replayed_capacity(guarded):
    ec2 = guarded
    # GIVEN nothing set: every launch goes through (plain local mode)
    assert ec2.launch(_spec(ec2, "us-east-1b", "spot")).instance_id
    # WHEN the world offers the type in 1a and 1c and only 1a has capacity now
    capacity.STATE.set(["us-east-1a", "us-east-1c"], ["us-east-1a"])
    # THEN a spot launch in 1c (no capacity) or 1b (type not offered) is refused as EC2 refuses it
    for az in ("us-east-1c", "us-east-1b"):
        with pytest.raises(ec2.CapacityUnavailable) as refused:
            ec2.launch(_spec(ec2, az, "spot"))
        assert refused.value.code == capacity.REFUSAL
    # AND spot in 1a, and on-demand anywhere, launch
    assert ec2.launch(_spec(ec2, "us-east-1a", "spot")).lifecycle == "spot"
    assert ec2.launch(_spec(ec2, "us-east-1c", "ondemand")).lifecycle == "ondemand"
    # AND installing twice wraps once
    wrapped = ec2._client
    capacity.install()
    assert ec2._client is wrapped


def test_the_agents_guard_refuses_only_spot_launches_into_closed_zones(aws_tables):
    client = boto3.client("ec2", region_name="us-east-1")
    image = image_id(client)
    guard = capacity.CapacityGuard(client, lambda az: az != "us-east-1a")
    spot = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}}
    launch = dict(ImageId=image, InstanceType="p3.2xlarge", MinCount=1, MaxCount=1)
    with pytest.raises(Exception) as refused:
        guard.run_instances(**launch, Placement={"AvailabilityZone": "us-east-1d"}, InstanceMarketOptions=spot)
    assert refused.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert guard.run_instances(**launch, Placement={"AvailabilityZone": "us-east-1a"}, InstanceMarketOptions=spot)
    assert guard.run_instances(**launch, Placement={"AvailabilityZone": "us-east-1d"})  # on-demand
