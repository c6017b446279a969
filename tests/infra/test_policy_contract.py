"""What the IAM conditions of infra/policies.py require from the code, checked against moto.

Launches must tag ``ManagedBy`` and ``SpotOptimizerStage=<stage>`` (else RunInstances is denied in AWS), and
the cleanup must list only this stage's instances (else it tries to terminate another stage's, which IAM
now refuses).
"""

from __future__ import annotations

import uuid

import boto3

from chalicelib.aws import ec2
from chalicelib.settings import get_settings
from localmode.embedded_aws import image_id

REGION = "us-east-1"


def _launch() -> ec2.InstanceInfo:
    """A launch copying a source instance of the account (launches copy a verified source, never an AMI)."""
    client = boto3.client("ec2", region_name=REGION)
    ami = image_id(client)
    source = client.run_instances(ImageId=ami, InstanceType="m5.large", MinCount=1, MaxCount=1,
                                  Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    uid = uuid.uuid4().hex[:10]
    return ec2.launch(ec2.LaunchSpec(region=REGION, instance_type="m5.large", az="us-east-1a",
                                     lifecycle="ondemand", replica_id=f"rep-{uid}", logical_agent_id=f"web-{uid}",
                                     agent_id=f"agent-{uid}", client_id=f"client-{uid}",
                                     source_instance_id=source))


def _tags(instance_id: str) -> dict[str, str]:
    raw = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance_id])
    return {t["Key"]: t["Value"] for t in raw["Reservations"][0]["Instances"][0].get("Tags", [])}


def test_launches_are_tagged_managed_by_us():
    assert _tags(_launch().instance_id)[ec2.TAG_MANAGED_BY] == ec2.MANAGED_BY


def test_launches_are_tagged_with_the_stage():
    assert _tags(_launch().instance_id).get(ec2.TAG_STAGE) == get_settings().stage


def test_the_cleanup_lists_only_this_stage_s_instances():
    client = boto3.client("ec2", region_name=REGION)
    ami = image_id(client)
    other = client.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": ec2.TAG_MANAGED_BY, "Value": ec2.MANAGED_BY},
                                              {"Key": ec2.TAG_STAGE, "Value": "another-stage"}]}])
    other_id = other["Instances"][0]["InstanceId"]
    assert other_id not in {i.instance_id for i in ec2.managed_instances(REGION)}
