"""Fixtures for the agent's tests: a real EC2 instance in moto, a fake IMDS describing it, a tenant
on the real in-process API, and Agents wired to them (the agent's own ApiClient over a shim)."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from spot_agent.agent import Agent
from spot_agent.api import ApiClient
from spot_agent.config import AgentConfig
from spot_agent.imds import ImdsClient
from tests.agent.chalice_session import BASE_URL, ChaliceSession
from tests.conftest import aws_client
from localmode.fake_imds import FakeImds
from localmode.embedded_aws import image_id

REGION = "us-east-1"


def ec2():
    return aws_client("ec2", REGION)


def unique_type() -> str:
    """A pool namespace of its own per test (pools are global in the shared moto and tables)."""
    return f"m5.a{uuid.uuid4().hex[:8]}xl"


def launch_instance(instance_type: str = "m5.large", az: str = "us-east-1a", *, spot: bool = True) -> dict:
    """A customer instance with a security group, key and instance profile (what a switch copies)."""
    client = ec2()
    image = image_id(client)
    suffix = uuid.uuid4().hex[:8]
    sg = client.create_security_group(GroupName=f"app-{suffix}", Description="app")["GroupId"]
    client.create_key_pair(KeyName=f"key-{suffix}")
    iam = aws_client("iam", REGION)
    profile = iam.create_instance_profile(InstanceProfileName=f"agent-{suffix}")["InstanceProfile"]["Arn"]
    params = dict(ImageId=image, InstanceType=instance_type, MinCount=1, MaxCount=1,
                  Placement={"AvailabilityZone": az}, SecurityGroupIds=[sg], KeyName=f"key-{suffix}",
                  IamInstanceProfile={"Arn": profile})
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}}
    instance_id = client.run_instances(**params)["Instances"][0]["InstanceId"]
    return describe(instance_id)


def describe(instance_id: str) -> dict:
    return ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def identity_of(instance: dict) -> dict:
    """What IMDS says about a moto instance."""
    return {"instance_id": instance["InstanceId"], "instance_type": instance["InstanceType"],
            "az": instance["Placement"]["AvailabilityZone"], "region": REGION, "ami_id": instance["ImageId"],
            "local_ipv4": instance.get("PrivateIpAddress"), "public_ipv4": instance.get("PublicIpAddress"),
            "instance_life_cycle": "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"}


def static_prices(instance_type: str, region: str):
    """A recorded-prices source: three pools, us-east-1b cheapest, on-demand 0.096."""
    pools = [{"pool_id": f"{instance_type}.{region}{z}", "instance_type": instance_type, "az": f"{region}{z}",
              "price": p} for z, p in (("a", 0.031), ("b", 0.029), ("c", 0.035))]
    return pools, 0.096


# Wire timestamps are run_due's ``now``; the server checks them against its own clock, so steps start now.
T0 = datetime.now(timezone.utc).replace(microsecond=0)


def at(seconds: float) -> str:
    """ISO time ``seconds`` after T0 (IMDS notice times)."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


class Tenant:
    def __init__(self, client_id, caller, http):
        self.client_id, self.caller, self.http = client_id, caller, http
        self.token = caller.token

    def session(self) -> ChaliceSession:
        return ChaliceSession(self.http)


@pytest.fixture(autouse=True)
def _aws_signs(aws_signs_locally):
    """FakeImds signs identity documents with local mode's key; the server takes it for AWS's."""


@pytest.fixture
def tenant(make_tenant, api) -> Tenant:
    """A client in the default (verified agents) mode: agents register with FakeImds's signed document
    and use their own credential."""
    client_id, caller = make_tenant(legacy=False)
    return Tenant(client_id, caller, api.http)


@pytest.fixture
def imds_factory():
    started: list[FakeImds] = []

    def make(identity: dict) -> FakeImds:
        fake = FakeImds(identity).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def make_agent(tmp_path, tenant):
    """Agent(config, imds=, api=, ...) on the real in-process API. Within one test every agent gets the
    same state dir and logical id unless told otherwise (a "restart" is just a second Agent). The
    agent's ``api.session`` is the shim, so tests can count calls or take the server down."""
    logical = f"web-{uuid.uuid4().hex[:8]}"

    def make(imds: FakeImds, *, session: ChaliceSession | None = None, price_source=static_prices,
             hook_runner=None, ec2=None, clock=None, **overrides) -> Agent:
        config = AgentConfig(**{"server_url": BASE_URL, "client_token": tenant.token,
                                "state_dir": str(tmp_path / "state"), "imds_endpoint": imds.url,
                                "logical_agent_id": logical, "region": REGION, "jitter": 0.0,
                                "ondemand_price": 0.096, **overrides})
        api = ApiClient(config.server_url, config.client_token, session=session or tenant.session(),
                        retry_delay_s=0, sleep=lambda s: None)
        return Agent(config, imds=ImdsClient(imds.url, backoff_s=0.01), api=api, price_source=price_source,
                     hook_runner=hook_runner, ec2=ec2, clock=clock, rng=random.Random(0))

    return make
