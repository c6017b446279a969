"""The demo's instances: each one booted in the embedded EC2, with its own fake IMDS and the real
agent (``agent/spot_agent``) driven step by step at replay time.

When the failover or a switch gives a logical agent a new instance, the fleet starts the agent on
the new instance (as the AMI's systemd unit would) and retires the old one. Standbys run no agent here
(the product tells the new primary's agent to ``promote`` when it takes over).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import requests

from components.sentinel import TERMINATION_NOTICE_S
from localmode.capacity import CapacityGuard
from localmode.demo.world import INSTANCE_TYPE, TraceWorld
from localmode.embedded_aws import image_id
from localmode.fake_imds import FakeImds


@dataclass
class Member:
    """One running instance with its agent."""

    logical_id: str
    instance_id: str
    az: str
    lifecycle: str
    imds: FakeImds
    agent: object
    warned: bool = False

    @property
    def pool_id(self) -> str:
        return f"{INSTANCE_TYPE}.{self.az}"


@dataclass
class Fleet:
    """Every managed instance of the demo client, keyed by logical agent id."""

    world: TraceWorld
    server_url: str
    token: str
    clock: object  # () -> datetime (replay time)
    members: dict[str, Member] = field(default_factory=dict)
    retiring: list[Member] = field(default_factory=list)  # old instances whose agent still has to terminate them
    agent_ids: dict[str, str] = field(default_factory=dict)
    state_root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spot-demo-agents-")))
    _ec2: dict[str, object] = field(default_factory=dict)

    def ec2(self, region: str):
        if region not in self._ec2:
            import boto3

            world, clock = self.world, self.clock
            self._ec2[region] = CapacityGuard(boto3.session.Session().client("ec2", region_name=region),
                                              lambda az: az not in world.zones or not world.available(az, clock()))
        return self._ec2[region]

    def boot(self, logical_id: str, az: str) -> Member:
        """Launch a spot instance in ``az`` and start its agent (which registers it)."""
        ec2 = self.ec2(self.world.region_of(az))
        image = image_id(ec2)
        instance = ec2.run_instances(
            ImageId=image, InstanceType=INSTANCE_TYPE, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": az},
            InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": logical_id}]}],
        )["Instances"][0]
        return self._start(logical_id, instance["InstanceId"], az, "spot", image)

    def adopt(self, logical_id: str, instance_id: str) -> Member:
        """The logical agent moved to ``instance_id``: start the agent there, retire the old member."""
        old = self.members.get(logical_id)
        region = self.world.region_of(old.az) if old else None
        described = self.ec2(region).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        if old and old.agent.state and old.agent.state["retire_instance"]:
            self.retiring.append(old)  # after a switch the old agent terminates its instance after the wait
        elif old:
            old.imds.stop()
        lifecycle = "spot" if described.get("InstanceLifecycle") == "spot" else "ondemand"
        return self._start(logical_id, instance_id, described["Placement"]["AvailabilityZone"], lifecycle,
                           described["ImageId"])

    def _start(self, logical_id: str, instance_id: str, az: str, lifecycle: str, image: str) -> Member:
        from spot_agent.agent import Agent
        from spot_agent.api import ApiClient
        from spot_agent.config import AgentConfig

        imds = FakeImds({"instance_id": instance_id, "instance_type": INSTANCE_TYPE, "az": az, "ami_id": image,
                         "local_ipv4": "10.0.0.10",
                         "instance_life_cycle": "spot" if lifecycle == "spot" else "on-demand"})
        imds.start()
        region = self.world.region_of(az)
        config = AgentConfig(server_url=self.server_url, client_token=self.token, logical_agent_id=logical_id,
                             region=region, state_dir=str(self.state_root / instance_id),
                             imds_endpoint=imds.url, heartbeat_s=30, pricing_s=300, notice_s=5,
                             rebalance_s=30, jitter=0.0, ondemand_price=self.world.ondemand_price)
        world, clock = self.world, self.clock

        def prices(instance_type: str, region_name: str):
            return world.region_prices(region_name, clock()), world.ondemand_price

        session = requests.Session()
        session.headers["Connection"] = "close"  # chalice local is slow on keep-alive
        agent = Agent(config, api=ApiClient(self.server_url, self.token, session=session), clock=clock,
                      price_source=prices, ec2=self.ec2(region))
        agent.start()
        member = Member(logical_id, instance_id, az, lifecycle, imds, agent)
        self.members[logical_id] = member
        self.agent_ids[logical_id] = agent.agent_id
        return member

    def warn(self, member: Member, when: datetime) -> datetime:
        """AWS's two-minute warning in the instance's IMDS (the EventBridge side is the runner's); returns the
        time AWS reclaims the instance."""
        deadline = when + timedelta(seconds=TERMINATION_NOTICE_S)
        member.imds.set_instance_action("terminate", deadline.strftime("%Y-%m-%dT%H:%M:%SZ"))
        member.warned = True
        return deadline

    def run_retiring(self, now: datetime) -> None:
        """Let old agents finish terminating their instances (then they stop for good)."""
        for member in list(self.retiring):
            member.agent.run_due(now)
            if not member.agent.state["retire_instance"]:
                member.imds.stop()
                self.retiring.remove(member)

    def stop(self) -> None:
        for member in [*self.members.values(), *self.retiring]:
            member.imds.stop()
