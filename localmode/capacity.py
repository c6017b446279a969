"""Spot capacity in local mode: which AZs a spot launch may succeed in.

The embedded EC2 (moto) launches anything anywhere. The demo's replayed world knows better: a spot launch
into a pool the trace has no capacity for (or an AZ the trace does not cover: the type is not offered
there) fails with InsufficientInstanceCapacity, as in AWS. That must hold for every launcher: the agents
(their own EC2 clients, ``localmode.demo.fleet``) and the product (the failover's tasks in the API process,
the replica coordinator in the demo's process), whose EC2 clients ``install`` wraps. The demo tells the
API process what is open at each replay time (``POST /_local/capacity``); without that, nothing is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

from botocore.exceptions import ClientError

REFUSAL = "InsufficientInstanceCapacity"


@dataclass
class SpotCapacity:
    """The AZs that offer the type (None: every AZ, nothing refused) and those with capacity now."""

    offered: frozenset[str] | None = None
    open: frozenset[str] = field(default_factory=frozenset)

    def set(self, offered: Iterable[str] | None, open_now: Iterable[str]) -> None:
        self.offered = None if offered is None else frozenset(offered)
        self.open = frozenset(open_now)

    def refuses(self, az: str | None) -> bool:
        return self.offered is not None and (az not in self.offered or az not in self.open)


STATE = SpotCapacity()  # this process's view (set by the demo, directly or through /_local/capacity)


class CapacityGuard:
    """Wraps an EC2 client: ``run_instances`` of a spot instance into an AZ ``refuses`` names fails with
    InsufficientInstanceCapacity; everything else goes to the client."""

    def __init__(self, client, refuses: Callable[[str | None], bool]):
        self._client, self._refuses = client, refuses
        self._subnet_az: dict[str, str] = {}

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _az(self, kwargs) -> str | None:
        if kwargs.get("Placement", {}).get("AvailabilityZone"):
            return kwargs["Placement"]["AvailabilityZone"]
        subnet = kwargs.get("SubnetId")
        if subnet and subnet not in self._subnet_az:
            for s in self._client.describe_subnets(SubnetIds=[subnet])["Subnets"]:
                self._subnet_az[s["SubnetId"]] = s["AvailabilityZone"]
        return self._subnet_az.get(subnet)

    def run_instances(self, **kwargs):
        az = self._az(kwargs)
        if "InstanceMarketOptions" in kwargs and self._refuses(az):
            raise ClientError({"Error": {"Code": REFUSAL,
                                         "Message": f"no spot capacity for {kwargs.get('InstanceType')} in {az}"}},
                              "RunInstances")
        return self._client.run_instances(**kwargs)


def install() -> None:
    """Guard the product's EC2 clients (``chalicelib.aws.ec2``) in this process with ``STATE``. Idempotent."""
    from chalicelib.aws import ec2

    if getattr(ec2._client, "capacity_guarded", False):
        return
    original = ec2._client

    @cache
    def guarded(service: str, region: str):
        client = original(service, region)
        return CapacityGuard(client, STATE.refuses) if service == "ec2" else client

    guarded.capacity_guarded = True
    ec2._client = guarded
