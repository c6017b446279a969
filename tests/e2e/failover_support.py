"""Helpers for the failover end-to-end tests: a real primary in moto EC2, a registered agent with
prices, EventBridge events through the real sentinel handler, and waiting for the real execution."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from chalicelib.tables import AgentTable
from localmode.eventbridge import matching_rules, through_queue
from tests.conftest import aws_client, registration
from localmode.embedded_aws import image_id

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: the home account in the tests
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d")


def ec2():
    return aws_client("ec2", REGION)


def aws_reclaims(*instance_ids: str) -> None:
    """EC2 takes the instances as a spot interruption does: terminated with a ``Server.*`` state reason (moto's
    TerminateInstances gives ``Client.UserInitiatedShutdown``: the owner's doing, which is only its evidence)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    ec2().terminate_instances(InstanceIds=list(instance_ids))
    backend = ec2_backends[ACCOUNT][REGION]
    for instance_id in instance_ids:
        backend.get_instance(instance_id).state_reason = StateReason(
            "Server.SpotInstanceTermination: Spot instance termination", "Server.SpotInstanceTermination")


def aws_stops(instance_id: str) -> None:
    """EC2 stops the instance for a spot interruption (a ``Server.*`` state reason; moto's StopInstances gives
    ``Client.UserInitiatedShutdown``, the owner's doing)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    ec2().stop_instances(InstanceIds=[instance_id])
    ec2_backends[ACCOUNT][REGION].get_instance(instance_id).state_reason = StateReason(
        "Server.SpotInstanceShutdown: Spot instance shutdown", "Server.SpotInstanceShutdown")


def unique_type() -> str:
    """A pool namespace of its own per test (pools are global in the shared moto)."""
    return f"m5.t{uuid.uuid4().hex[:8]}xl"


def launch_primary(instance_type: str, az: str = ZONES[0]) -> str:
    """The customer's spot instance (not tagged by us): it is what replacements are copied from."""
    client = ec2()
    image = image_id(client)
    sg = client.create_security_group(GroupName=f"app-{uuid.uuid4().hex[:8]}", Description="app")["GroupId"]
    reply = client.run_instances(
        ImageId=image, InstanceType=instance_type, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": az},
        SecurityGroupIds=[sg], KeyName=_key(client),
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}})
    return reply["Instances"][0]["InstanceId"]


def _key(client) -> str:
    name = f"key-{uuid.uuid4().hex[:8]}"
    client.create_key_pair(KeyName=name)
    return name


def state_of(instance_id: str) -> str:
    return ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def tags_of(instance_id: str) -> dict[str, str]:
    inst = ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def register_agent(make_tenant, *, az: str = ZONES[0], prices: dict[str, float] | None = None, **config):
    """(client_id, caller, agent_id, instance_id, instance_type) with a real primary and fresh prices."""
    client_id, caller = make_tenant()
    itype = unique_type()
    instance_id = launch_primary(itype, az)
    body = registration(instance_id=instance_id, instance_type=itype, region=REGION, az=az, mode="spot")
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    prices = prices if prices is not None else {z: 0.03 + 0.005 * i for i, z in enumerate(ZONES)}
    if prices:
        report = {"instance": {"instance_type": itype, "region": REGION},
                  "pricing": {"on_demand_price": 0.192,
                              "spot_pools": [{"pool_id": f"{itype}.{z}", "price": p} for z, p in prices.items()]}}
        status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", report)
        assert status == 200, reply
    if config:
        configure(client_id, agent_id, **config)
    return client_id, caller, agent_id, instance_id, itype


def configure(client_id: str, agent_id: str, **config) -> None:
    """Set agent settings directly (the API route is tested separately)."""
    AgentTable(client_id, agent_id).update(actions=[getattr(AgentTable.config, k).set(v) for k, v in config.items()])


def handover_to(client_id, agent_id, primary, kind):
    """Configure the agent's hand-over (an EIP on the primary, or a target group serving it); returns a function
    telling which instance(s) the traffic goes to."""
    if kind == "eip":
        alloc = ec2().allocate_address(Domain="vpc")["AllocationId"]
        ec2().associate_address(AllocationId=alloc, InstanceId=primary)
        configure(client_id, agent_id, handover="eip", eip_allocation_id=alloc)
        return lambda: {ec2().describe_addresses(AllocationIds=[alloc])["Addresses"][0].get("InstanceId")}
    elb = aws_client("elbv2", REGION)
    vpc = ec2().describe_instances(InstanceIds=[primary])["Reservations"][0]["Instances"][0]["VpcId"]
    group = elb.create_target_group(Name=f"tg-{primary[-10:]}", Protocol="HTTP", Port=80, VpcId=vpc,
                                    TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=group, Targets=[{"Id": primary, "Port": 8080}])
    configure(client_id, agent_id, handover="target-group", target_group_arn=group, target_port=8080)
    return lambda: {d["Target"]["Id"] for d in elb.describe_target_health(TargetGroupArn=group)
                    ["TargetHealthDescriptions"]}


def ec2_event(detail_type: str, instance_id: str, *, event_id: str | None = None, **detail) -> dict:
    """An EventBridge EC2 event as AWS sends it."""
    return {"version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": detail_type, "source": "aws.ec2",
            "account": ACCOUNT, "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION, "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, **detail}}


def warning(instance_id: str, event_id: str | None = None) -> dict:
    return ec2_event("EC2 Spot Instance Interruption Warning", instance_id, event_id=event_id,
                     **{"instance-action": "terminate"})


def rebalance(instance_id: str) -> dict:
    return ec2_event("EC2 Instance Rebalance Recommendation", instance_id)


def deliver(api, rule: str, event: dict) -> dict:
    """An EventBridge event that sentinel rule ``rule`` matches, through the event queue's batch shape to the
    sentinel function (as production's SQS event source mapping sends it); returns what the sentinel did."""
    matched = matching_rules(event)  # none: a malformed message (no rule sends it, but a queue can hold it)
    assert not matched or matched == [rule], f"{rule} does not match {event['detail-type']}: {matched}"
    (result,) = through_queue([event], lambda name, payload: api.lambda_.invoke(name, payload).payload)
    return result


def wait_for(execution_arn: str, timeout: float = 60) -> dict:
    """Block until the execution leaves RUNNING; returns describe_execution. Takes its ARN or its name (the
    interruption id: what an API answer names)."""
    if not execution_arn.startswith("arn:"):
        from chalicelib.aws.stepfunctions import execution_arn as arn_of
        from chalicelib.settings import get_settings

        execution_arn = arn_of(get_settings().failover_state_machine_arn, execution_arn)
    sfn = aws_client("stepfunctions", REGION)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_arn} still running after {timeout} s")
