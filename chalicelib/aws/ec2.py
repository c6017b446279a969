"""EC2/ELBv2 adapter for failover, replicas and cleanup.

Every AWS error leaves this module as an ``Ec2Error`` subclass, because Step Functions Retry/Catch match on the
exception class name: TransientAwsError is retried, CapacityUnavailable moves on to another pool, LaunchError fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from components.capacity import CAPACITY_ERROR_CODES

MANAGED_BY = "SpotOptimizer"
TAG_MANAGED_BY, TAG_LOGICAL_AGENT, TAG_REPLICA, TAG_AGENT, TAG_CLIENT = (
    "ManagedBy", "LogicalAgentId", "ReplicaId", "AgentId", "ClientId")
# The deploying stage: IAM conditions (infra/policies.py) let a stage act only on its own instances.
TAG_STAGE = "SpotOptimizerStage"

LIVE_STATES = ("pending", "running", "stopping", "stopped")
_TRANSIENT_CODES = frozenset({"Throttling", "RequestLimitExceeded", "ThrottlingException",
                              "InternalError", "ServiceUnavailable", "Unavailable"})
# Another pool may take the launch: no capacity here (components.capacity, the one list) or the type is
# not offered in this AZ ("Unsupported": not a capacity fact, so no observation is recorded for it).
_TRY_ANOTHER_POOL = CAPACITY_ERROR_CODES | {"Unsupported"}
_NETWORK_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15)
_CHUNK = 100


class Ec2Error(Exception):
    """Base of every error this adapter raises."""


class TransientAwsError(Ec2Error):
    """Throttling, 5xx or a network failure: the same call may succeed later."""


class CapacityUnavailable(Ec2Error):
    """No capacity for this type/AZ/market right now: try another pool. ``code`` is EC2's error code."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class LaunchError(Ec2Error):
    """A launch that will not succeed by retrying (bad AMI, no subnet in the AZ, ...)."""


@dataclass(frozen=True)
class LaunchSpec:
    region: str
    instance_type: str
    az: str
    lifecycle: str  # "spot" (one-time) or "ondemand"
    replica_id: str  # idempotency key: tag ReplicaId + ClientToken
    logical_agent_id: str
    agent_id: str
    client_id: str
    source_instance_id: str | None  # launch parameters are copied from this primary
    ami_id: str | None = None  # used when the source can no longer be described


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    state: str
    az: str | None
    instance_type: str | None
    lifecycle: str  # "spot" or "ondemand"
    tags: dict[str, str]
    launch_time: datetime | None  # tz-aware UTC
    private_ip: str | None = None


@cache
def _client(service: str, region: str):
    """One client per service and region; a private session keeps creation thread-safe."""
    return boto3.session.Session().client(service, region_name=region, config=_CONFIG)


def _map_error(exc: Exception, operation: str, *, launching: bool = False) -> Ec2Error:
    """Translate a botocore error into the class the workflows retry or catch on."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        message = f"{operation}: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientAwsError(message)
        if launching and code in _TRY_ANOTHER_POOL:
            return CapacityUnavailable(message, code)
        return LaunchError(message) if launching else Ec2Error(message)
    if isinstance(exc, _NETWORK_ERRORS):
        return TransientAwsError(f"{operation}: {exc}")
    return (LaunchError if launching else Ec2Error)(f"{operation}: {type(exc).__name__}: {exc}")


@contextmanager
def _aws(operation: str, *, launching: bool = False) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise _map_error(exc, operation, launching=launching) from exc


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _info(raw: dict) -> InstanceInfo:
    launched = raw.get("LaunchTime")
    if launched is not None:
        launched = launched.replace(tzinfo=UTC) if launched.tzinfo is None else launched.astimezone(UTC)
    return InstanceInfo(
        instance_id=raw["InstanceId"], state=raw.get("State", {}).get("Name", "unknown"),
        az=raw.get("Placement", {}).get("AvailabilityZone"), instance_type=raw.get("InstanceType"),
        lifecycle="spot" if raw.get("InstanceLifecycle") == "spot" else "ondemand",
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])}, launch_time=launched,
        private_ip=raw.get("PrivateIpAddress"))


def _describe_raw(region: str, filters: list[dict], *, launching: bool = False) -> list[dict]:
    """Filters (not InstanceIds) so unknown or malformed ids are just absent instead of failing the batch."""
    with _aws("DescribeInstances", launching=launching):
        pages = _client("ec2", region).get_paginator("describe_instances").paginate(Filters=filters)
        return [inst for page in pages for res in page.get("Reservations", []) for inst in res.get("Instances", [])]


def describe(region: str, instance_ids: list[str]) -> dict[str, InstanceInfo]:
    """Current view of the given instances; ids EC2 does not know are absent."""
    found: dict[str, InstanceInfo] = {}
    ids = list(dict.fromkeys(instance_ids))
    for start in range(0, len(ids), _CHUNK):
        for raw in _describe_raw(region, [{"Name": "instance-id", "Values": ids[start:start + _CHUNK]}]):
            found[raw["InstanceId"]] = _info(raw)
    return found


def managed_instances(region: str) -> list[InstanceInfo]:
    """Everything we launched that still exists: input of the cleanup reconciler."""
    filters = [{"Name": f"tag:{TAG_MANAGED_BY}", "Values": [MANAGED_BY]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    return [_info(raw) for raw in _describe_raw(region, filters)]


def replica_instances(region: str, replica_ids: list[str]) -> list[InstanceInfo]:
    """Live instances tagged with any of ``replica_ids`` (attached to their row or not): what a failed
    failover must not leave running."""
    if not replica_ids:
        return []
    filters = [{"Name": f"tag:{TAG_REPLICA}", "Values": list(dict.fromkeys(replica_ids))},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    return [_info(raw) for raw in _describe_raw(region, filters)]


def state_reason(region: str, instance_id: str) -> str | None:
    """EC2's ``StateReason.Code`` of the instance's last state change (``Client.UserInitiatedShutdown``,
    ``Server.SpotInstanceShutdown``, ...); None when the instance is unknown or EC2 gives none."""
    found = _describe_raw(region, [{"Name": "instance-id", "Values": [instance_id]}])
    return (found[0].get("StateReason") or {}).get("Code") or None if found else None


def _pick_subnet(region: str, spec: LaunchSpec, source: dict | None) -> str:
    """Stay in the primary's network: its subnet if same AZ, else a subnet of its VPC in the target AZ."""
    if source and source.get("SubnetId") and source.get("Placement", {}).get("AvailabilityZone") == spec.az:
        return source["SubnetId"]
    if source and source.get("VpcId"):
        filters, where = [{"Name": "vpc-id", "Values": [source["VpcId"]]}], f"VPC {source['VpcId']}"
    else:
        filters, where = [{"Name": "default-for-az", "Values": ["true"]}], "the default VPC"
    filters += [{"Name": "availability-zone", "Values": [spec.az]}, {"Name": "state", "Values": ["available"]}]
    with _aws("DescribeSubnets", launching=True):
        subnets = _client("ec2", region).describe_subnets(Filters=filters).get("Subnets", [])
    if not subnets:
        raise LaunchError(f"no subnet of {where} in {spec.az}")
    return max(subnets, key=lambda s: (s.get("AvailableIpAddressCount", 0), s["SubnetId"]))["SubnetId"]


def _existing_replica(region: str, replica_id: str) -> InstanceInfo | None:
    filters = [{"Name": f"tag:{TAG_REPLICA}", "Values": [replica_id]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    found = sorted((_info(raw) for raw in _describe_raw(region, filters, launching=True)),
                   key=lambda i: (i.launch_time or datetime.min.replace(tzinfo=UTC), i.instance_id))
    return found[0] if found else None


def launch(spec: LaunchSpec) -> InstanceInfo:
    """Start the replica once: a retried step returns the instance the first attempt created."""
    if spec.lifecycle not in ("spot", "ondemand"):
        raise LaunchError(f"unknown lifecycle {spec.lifecycle!r}")
    existing = _existing_replica(spec.region, spec.replica_id)
    if existing:
        return existing
    source = None
    if spec.source_instance_id:
        found = _describe_raw(spec.region, [{"Name": "instance-id", "Values": [spec.source_instance_id]}],
                              launching=True)
        source = found[0] if found else None
    image_id = (source or {}).get("ImageId") or spec.ami_id
    if not image_id:
        raise LaunchError(f"no AMI: source {spec.source_instance_id} not found and no ami_id given")
    tags = {TAG_MANAGED_BY: MANAGED_BY, TAG_LOGICAL_AGENT: spec.logical_agent_id, TAG_REPLICA: spec.replica_id,
            TAG_AGENT: spec.agent_id, TAG_CLIENT: spec.client_id,
            "Name": f"spot-optimizer-{spec.logical_agent_id}-{spec.lifecycle}"}
    params: dict = {
        "ImageId": image_id, "InstanceType": spec.instance_type, "MinCount": 1, "MaxCount": 1,
        "SubnetId": _pick_subnet(spec.region, spec, source),
        "ClientToken": f"{spec.replica_id}-{spec.lifecycle}"[:64],
        "TagSpecifications": [{"ResourceType": "instance",
                               "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    }
    if source:
        if groups := [g["GroupId"] for g in source.get("SecurityGroups", [])]:
            params["SecurityGroupIds"] = groups
        if profile := source.get("IamInstanceProfile", {}).get("Arn"):
            params["IamInstanceProfile"] = {"Arn": profile}
        if source.get("KeyName"):
            params["KeyName"] = source["KeyName"]
    if spec.lifecycle == "spot":
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    with _aws("RunInstances", launching=True):
        raw = _client("ec2", spec.region).run_instances(**params)["Instances"][0]
    # TagSpecifications are applied atomically with the launch, so the tags are real even if not echoed.
    return _info({**raw, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()] + raw.get("Tags", [])})


def terminate(region: str, instance_ids: list[str]) -> list[str]:
    """Terminate whatever still exists; unknown or already-terminated ids are skipped, not errors."""
    live = [i.instance_id for i in describe(region, instance_ids).values()
            if i.state not in ("shutting-down", "terminated")]
    for start in range(0, len(live), _CHUNK):
        chunk = live[start:start + _CHUNK]
        try:
            _client("ec2", region).terminate_instances(InstanceIds=chunk)
        except ClientError as exc:
            if _code(exc) != "InvalidInstanceID.NotFound":
                raise _map_error(exc, "TerminateInstances") from exc
            for instance_id in chunk:  # one vanished in between: the rest must still go
                try:
                    _client("ec2", region).terminate_instances(InstanceIds=[instance_id])
                except ClientError as one:
                    if _code(one) != "InvalidInstanceID.NotFound":
                        raise _map_error(one, "TerminateInstances") from one
        except BotoCoreError as exc:
            raise _map_error(exc, "TerminateInstances") from exc
    return live


def move_eip(region: str, allocation_id: str, instance_id: str) -> str:
    """Point the Elastic IP at the instance (a no-op if it already is); returns the association id."""
    client = _client("ec2", region)
    with _aws("DescribeAddresses"):
        address = client.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]
    if address.get("InstanceId") == instance_id and address.get("AssociationId"):
        return address["AssociationId"]
    with _aws("AssociateAddress"):
        return client.associate_address(AllocationId=allocation_id, InstanceId=instance_id,
                                        AllowReassociation=True)["AssociationId"]


def swap_target(region: str, target_group_arn: str, old_instance_id: str | None, new_instance_id: str,
                port: int | None) -> None:
    """Register the new target before deregistering the old, so the group never goes empty."""
    client = _client("elbv2", region)
    target = {"Id": new_instance_id, **({"Port": port} if port else {})}
    with _aws("RegisterTargets"):
        client.register_targets(TargetGroupArn=target_group_arn, Targets=[target])
    if not old_instance_id or old_instance_id == new_instance_id:
        return
    old = {"Id": old_instance_id, **({"Port": port} if port else {})}
    try:
        client.deregister_targets(TargetGroupArn=target_group_arn, Targets=[old])
    except ClientError as exc:
        if _code(exc) != "InvalidTarget":
            raise _map_error(exc, "DeregisterTargets") from exc
    except BotoCoreError as exc:
        raise _map_error(exc, "DeregisterTargets") from exc


def availability_zones(region: str) -> list[str]:
    """Usable AZs of the region (Local/Wavelength zones excluded), sorted."""
    with _aws("DescribeAvailabilityZones"):
        zones = _client("ec2", region).describe_availability_zones(
            Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
    return sorted(z["ZoneName"] for z in zones if z.get("ZoneType", "availability-zone") == "availability-zone")


def tag(region: str, instance_id: str, tags: dict[str, str]) -> None:
    """Add (client-chosen) tags to an instance; our own tags are set at launch and never changed here."""
    with _aws("CreateTags"):
        _client("ec2", region).create_tags(Resources=[instance_id],
                                           Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
