"""EC2/ELBv2 adapter for failover, replicas and cleanup.

Every AWS error leaves this module as an ``Ec2Error`` subclass, because Step Functions Retry/Catch match on the
exception class name: TransientAwsError is retried, CapacityUnavailable moves on to another pool, LaunchError fails.

Every call runs in one client's account (``account``: chalicelib.aws.accounts; None = the product's own
credentials) and checks ownership in code before acting: a launch copies a source instance that exists in that
account (no client-supplied AMI), terminations need our tags for this client and stage (NotOwnedError
otherwise; only an id our own RunInstances returned may be terminated before DescribeInstances lists it), and an Elastic IP or target group must be in that account and region and may only be taken from
an instance the client owns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from logging import getLogger

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from components.capacity import CAPACITY_ERROR_CODES
from components.pool_id import InvalidPoolIdError, make_pool_id

from chalicelib.aws import accounts
from chalicelib.aws.accounts import AwsAccount
from chalicelib.settings import get_settings

MANAGED_BY = "SpotOptimizer"
TAG_MANAGED_BY, TAG_LOGICAL_AGENT, TAG_REPLICA, TAG_AGENT, TAG_CLIENT = (
    "ManagedBy", "LogicalAgentId", "ReplicaId", "AgentId", "ClientId")
# The launching stage (tagged at launch): IAM conditions (infra/policies.py) and the cleanup let a stage act
# only on its own instances.
TAG_STAGE = "SpotOptimizerStage"
# A client's own instance may be retired by the service (auto-terminate after a failover) only where the client
# tagged it ``SpotOptimizerRetire=<stage>``: IAM's condition for instances we did not launch (infra/policies.py).
TAG_RETIRE = "SpotOptimizerRetire"
# Set by the product's agent on the instance it launches for a switch (agent/spot_agent/switch.py): the old one's id.
TAG_REPLACES = "ReplacesInstance"
# Set by the cleanup job on an orphan it is about to terminate: when it decided so (``...Z``). The orphan's audit
# event is keyed on it, so a run that died between the tag, the event and the termination writes the event once.
TAG_ORPHANED = "SpotOptimizerOrphanedAt"

LIVE_STATES = ("pending", "running", "stopping", "stopped")
_TRANSIENT_CODES = frozenset({"Throttling", "RequestLimitExceeded", "ThrottlingException",
                              "InternalError", "ServiceUnavailable", "Unavailable"})
# Another pool may take the launch: no capacity here (components.capacity, the one list) or the type is
# not offered in this AZ ("Unsupported": not a capacity fact, so no observation is recorded for it).
_TRY_ANOTHER_POOL = CAPACITY_ERROR_CODES | {"Unsupported"}
_DENIED_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
_NETWORK_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15)
_CHUNK = 100
_log = getLogger(__name__)


class Ec2Error(Exception):
    """Base of every error this adapter raises."""


class TransientAwsError(Ec2Error):
    """Throttling, 5xx or a network failure: the same call may succeed later."""

    aws_unavailable = True  # the API answers 503 with Retry-After (chalicelib.errors.translate), never a 500


class CapacityUnavailable(Ec2Error):
    """No capacity for this type/AZ/market right now: try another pool. ``code`` is EC2's error code."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class LaunchError(Ec2Error):
    """A launch that will not succeed by retrying (bad AMI, no subnet in the AZ, ...)."""


class NotPermitted(Ec2Error):
    """IAM refused to let us act on an instance we did not launch (the client's own, not tagged ``TAG_RETIRE``).
    ``instance_ids`` are the ones left as they were."""

    def __init__(self, message: str, instance_ids: list[str]) -> None:
        super().__init__(message)
        self.instance_ids = instance_ids


class NotOwnedError(Ec2Error):
    """The named resource is not the client's (other account/region, or not launched by us for it): nothing done."""

    conflict_code = "not_owned"  # the API answers 409 (chalicelib.errors.translate)


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
    source_instance_id: str | None  # launch parameters are copied from this instance of the client's account
    account: AwsAccount | None = None  # where to launch (None: the product's own credentials)


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
    state_reason: str | None = None  # EC2's StateReason code of the last state change (Client.* / Server.*)

    @property
    def pool_id(self) -> str | None:
        """The pool of its type and zone, as EC2 shows them (None when EC2 gives neither or no valid pool)."""
        if not self.instance_type or not self.az:
            return None
        try:
            return make_pool_id(self.instance_type, self.az)
        except InvalidPoolIdError:
            return None


@cache
def _client(service: str, region: str):
    """One client per service and region (product credentials); a private session keeps creation thread-safe."""
    import boto3

    return boto3.session.Session().client(service, region_name=region, config=_CONFIG)


def _api(service: str, region: str, account: AwsAccount | None):
    """The client acting in ``account``: its role's credentials, or the product's own for the home account."""
    if account is None or account.home:
        return _client(service, region)
    try:
        return accounts.role_client(service, region, account)
    except (ClientError, BotoCoreError) as exc:
        raise _map_error(exc, "AssumeRole") from exc


def stage() -> str:
    return get_settings().stage


def owned_by(info: InstanceInfo, client_id: str) -> bool:
    """Launched by this product, for this client, in this stage (the tags set at launch)."""
    return (info.tags.get(TAG_MANAGED_BY) == MANAGED_BY and info.tags.get(TAG_CLIENT) == client_id
            and info.tags.get(TAG_STAGE) == stage())


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
        private_ip=raw.get("PrivateIpAddress"), state_reason=(raw.get("StateReason") or {}).get("Code") or None)


def _describe_raw(region: str, filters: list[dict], *, launching: bool = False,
                  account: AwsAccount | None = None) -> list[dict]:
    """Filters (not InstanceIds) so unknown or malformed ids are just absent instead of failing the batch."""
    with _aws("DescribeInstances", launching=launching):
        pages = _api("ec2", region, account).get_paginator("describe_instances").paginate(Filters=filters)
        return [inst for page in pages for res in page.get("Reservations", []) for inst in res.get("Instances", [])]


def describe(region: str, instance_ids: list[str], *, account: AwsAccount | None = None) -> dict[str, InstanceInfo]:
    """Current view of the given instances in ``account``; ids EC2 does not know there are absent."""
    found: dict[str, InstanceInfo] = {}
    ids = list(dict.fromkeys(instance_ids))
    for start in range(0, len(ids), _CHUNK):
        for raw in _describe_raw(region, [{"Name": "instance-id", "Values": ids[start:start + _CHUNK]}],
                                 account=account):
            found[raw["InstanceId"]] = _info(raw)
    return found


def managed_instances(region: str, *, account: AwsAccount | None = None,
                      client_id: str | None = None) -> list[InstanceInfo]:
    """Everything this stage launched (for ``client_id`` if given) that still exists in ``account``: input of
    the cleanup reconciler. Another stage's instances are never listed."""
    filters = [{"Name": f"tag:{TAG_MANAGED_BY}", "Values": [MANAGED_BY]},
               {"Name": f"tag:{TAG_STAGE}", "Values": [stage()]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    if client_id:
        filters.append({"Name": f"tag:{TAG_CLIENT}", "Values": [client_id]})
    return [_info(raw) for raw in _describe_raw(region, filters, account=account)]


def replica_instances(region: str, replica_ids: list[str], *, account: AwsAccount | None = None,
                      client_id: str | None = None) -> list[InstanceInfo]:
    """Live instances of this stage tagged with any of ``replica_ids`` (attached to their row or not): what a
    failed failover must not leave running. With ``client_id``, only that client's."""
    if not replica_ids:
        return []
    filters = [{"Name": f"tag:{TAG_REPLICA}", "Values": list(dict.fromkeys(replica_ids))},
               {"Name": f"tag:{TAG_STAGE}", "Values": [stage()]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    if client_id:
        filters.append({"Name": f"tag:{TAG_CLIENT}", "Values": [client_id]})
    return [_info(raw) for raw in _describe_raw(region, filters, account=account)]


def _pick_subnet(region: str, spec: LaunchSpec, source: dict) -> str:
    """Stay in the primary's network: its subnet if same AZ, else a subnet of its VPC in the target AZ."""
    if source.get("SubnetId") and source.get("Placement", {}).get("AvailabilityZone") == spec.az:
        return source["SubnetId"]
    if source.get("VpcId"):
        filters, where = [{"Name": "vpc-id", "Values": [source["VpcId"]]}], f"VPC {source['VpcId']}"
    else:
        filters, where = [{"Name": "default-for-az", "Values": ["true"]}], "the default VPC"
    filters += [{"Name": "availability-zone", "Values": [spec.az]}, {"Name": "state", "Values": ["available"]}]
    with _aws("DescribeSubnets", launching=True):
        subnets = _api("ec2", region, spec.account).describe_subnets(Filters=filters).get("Subnets", [])
    if not subnets:
        raise LaunchError(f"no subnet of {where} in {spec.az}")
    return max(subnets, key=lambda s: (s.get("AvailableIpAddressCount", 0), s["SubnetId"]))["SubnetId"]


def _existing_replica(spec: LaunchSpec) -> InstanceInfo | None:
    filters = [{"Name": f"tag:{TAG_REPLICA}", "Values": [spec.replica_id]},
               {"Name": f"tag:{TAG_CLIENT}", "Values": [spec.client_id]},
               {"Name": f"tag:{TAG_STAGE}", "Values": [stage()]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    found = sorted((_info(raw) for raw in _describe_raw(spec.region, filters, launching=True, account=spec.account)),
                   key=lambda i: (i.launch_time or datetime.min.replace(tzinfo=UTC), i.instance_id))
    return found[0] if found else None


def launch(spec: LaunchSpec) -> InstanceInfo:
    """Start the replica once: a retried step returns the instance the first attempt created.

    The launch copies the source instance's data (AMI, network, security groups, profile, key) as EC2 shows
    it in the client's account; a source that cannot be described there fails the launch (LaunchError)."""
    if spec.lifecycle not in ("spot", "ondemand"):
        raise LaunchError(f"unknown lifecycle {spec.lifecycle!r}")
    existing = _existing_replica(spec)
    if existing:
        return existing
    found = _describe_raw(spec.region, [{"Name": "instance-id", "Values": [spec.source_instance_id]}],
                          launching=True, account=spec.account) if spec.source_instance_id else []
    source = found[0] if found else None
    if source is None or not source.get("ImageId"):
        raise LaunchError(f"source instance {spec.source_instance_id} not found in the client's account: "
                          "nothing to copy the launch from")
    image_id = source["ImageId"]
    tags = {TAG_MANAGED_BY: MANAGED_BY, TAG_LOGICAL_AGENT: spec.logical_agent_id, TAG_REPLICA: spec.replica_id,
            TAG_AGENT: spec.agent_id, TAG_CLIENT: spec.client_id, TAG_STAGE: stage(),
            "Name": f"spot-optimizer-{spec.logical_agent_id}-{spec.lifecycle}"}
    params: dict = {
        "ImageId": image_id, "InstanceType": spec.instance_type, "MinCount": 1, "MaxCount": 1,
        "SubnetId": _pick_subnet(spec.region, spec, source),
        "ClientToken": f"{spec.replica_id}-{spec.lifecycle}"[:64],
        "TagSpecifications": [{"ResourceType": "instance",
                               "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    }
    if groups := [g["GroupId"] for g in source.get("SecurityGroups", [])]:
        params["SecurityGroupIds"] = groups
    if profile := source.get("IamInstanceProfile", {}).get("Arn"):
        params["IamInstanceProfile"] = {"Arn": profile}
    if source.get("KeyName"):
        params["KeyName"] = source["KeyName"]
    if spec.lifecycle == "spot":
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    try:
        raw = _api("ec2", spec.region, spec.account).run_instances(**params)["Instances"][0]
    except ClientError as exc:
        if _code(exc) != "IdempotentParameterMismatch":
            raise _map_error(exc, "RunInstances", launching=True) from exc
        # This ClientToken already launched (an earlier attempt whose answer was lost, with another subnet
        # chosen since): adopt that instance once EC2 lists it; until then a retry will.
        existing = _existing_replica(spec)
        if existing:
            return existing
        raise TransientAwsError(f"RunInstances: {spec.replica_id} launched by an earlier attempt, not listed yet") \
            from exc
    except BotoCoreError as exc:
        raise _map_error(exc, "RunInstances", launching=True) from exc
    # TagSpecifications are applied atomically with the launch, so the tags are real even if not echoed.
    return _info({**raw, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()] + raw.get("Tags", [])})


def terminate(region: str, instance_ids: list[str], *, client_id: str, account: AwsAccount | None = None,
              registered: tuple[str, ...] = (), launched: tuple[str, ...] = ()) -> list[str]:
    """Terminate those of ``instance_ids`` that still exist in ``account`` and that we launched for this client
    and stage (``owned_by``); ``registered`` names the client's own registered primaries it asked us to retire
    (auto-terminate). Anything else is left alone and logged; unknown or terminated ids are skipped.

    ``launched`` names ids that this product's own ``launch`` (RunInstances) returned for this client and stage
    in ``account`` — tagged atomically with the launch, so ours by construction; never an id a client or an
    agent reported. DescribeInstances may not list such an instance for a while after the launch (eventually
    consistent): one it does not list is terminated by its id all the same (TerminateInstances acts on a known
    id; IAM's tag condition still applies), and returned. Listed, it is checked like any other id.

    IAM lets us terminate a client's own instance only where it is tagged ``TAG_RETIRE`` = stage: one that is
    not is left running and, once ours are terminated, :class:`NotPermitted` names it."""
    found = describe(region, instance_ids, account=account).values()
    refused = [i.instance_id for i in found if not owned_by(i, client_id) and i.instance_id not in registered]
    if refused:
        _log.warning("not terminated: not launched by us for this client and stage",
                     extra={"instance_ids": refused, "client_id": client_id})
    live = [i for i in found if i.state not in ("shutting-down", "terminated") and i.instance_id not in refused]
    client = _api("ec2", region, account)
    listed = {i.instance_id for i in found}
    unlisted = [i for i in dict.fromkeys(launched) if i in instance_ids and i not in listed]
    ours = [i.instance_id for i in live if owned_by(i, client_id)] + unlisted
    for start in range(0, len(ours), _CHUNK):
        chunk = ours[start:start + _CHUNK]
        try:
            client.terminate_instances(InstanceIds=chunk)
        except ClientError as exc:
            if _code(exc) != "InvalidInstanceID.NotFound":
                raise _map_error(exc, "TerminateInstances") from exc
            for instance_id in chunk:  # one vanished in between: the rest must still go
                try:
                    client.terminate_instances(InstanceIds=[instance_id])
                except ClientError as one:
                    if _code(one) != "InvalidInstanceID.NotFound":
                        raise _map_error(one, "TerminateInstances") from one
        except BotoCoreError as exc:
            raise _map_error(exc, "TerminateInstances") from exc
    denied = []  # the client's own registered instances: one by one, as IAM may refuse each (untagged)
    for instance_id in (i.instance_id for i in live if not owned_by(i, client_id)):
        try:
            client.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if _code(exc) in _DENIED_CODES:
                denied.append(instance_id)
            elif _code(exc) != "InvalidInstanceID.NotFound":
                raise _map_error(exc, "TerminateInstances") from exc
        except BotoCoreError as exc:
            raise _map_error(exc, "TerminateInstances") from exc
    if denied:
        raise NotPermitted(f"TerminateInstances: not permitted on {', '.join(denied)} (the client's own, not "
                           f"tagged {TAG_RETIRE}={stage()})", denied)
    return [i.instance_id for i in live] + unlisted


def _not_the_clients(region: str, holders: list[str], *, client_id: str, account: AwsAccount | None,
                     own: tuple[str, ...], known: Callable[[str], bool] | None = None) -> list[str]:
    """The ``holders`` a hand-over may not take traffic from: neither one of the client's (``own``: the agent's
    instances; ``known``: registered to one of the client's agents) nor one we launched for it. One
    DescribeInstances for all the holders that need it."""
    unknown = [h for h in dict.fromkeys(holders) if h not in own and not (known is not None and known(h))]
    found = describe(region, unknown, account=account) if unknown else {}
    return [h for h in unknown if h not in found or not owned_by(found[h], client_id)]


@contextmanager
def _owned_lookup(operation: str, not_found: tuple[str, ...], message: str) -> Iterator[None]:
    """A describe of something the client named: EC2's "not found" codes mean it is not the client's
    (NotOwnedError); other errors are mapped as everywhere else."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in not_found:
            raise NotOwnedError(message) from exc
        raise _map_error(exc, operation) from exc
    except BotoCoreError as exc:
        raise _map_error(exc, operation) from exc


def check_eip(region: str, allocation_id: str, *, client_id: str, account: AwsAccount | None = None,
              own: tuple[str, ...] = (), known: Callable[[str], bool] | None = None) -> dict:
    """The Elastic IP as EC2 shows it in the client's account and region; NotOwnedError when it is not there, is
    on a network interface, or is held by an instance that is neither in ``own`` nor launched by us for the client."""
    missing = f"Elastic IP {allocation_id} is not in the client's account in {region}"
    with _owned_lookup("DescribeAddresses", ("InvalidAllocationID.NotFound", "InvalidAllocationID.Malformed"),
                       missing):
        addresses = _api("ec2", region, account).describe_addresses(AllocationIds=[allocation_id])["Addresses"]
    if not addresses:
        raise NotOwnedError(missing)
    address = addresses[0]
    if address.get("NetworkInterfaceId") and not address.get("InstanceId"):
        raise NotOwnedError(f"Elastic IP {allocation_id} is attached to a network interface, not an instance")
    holder = address.get("InstanceId")
    if holder and _not_the_clients(region, [holder], client_id=client_id, account=account, own=own, known=known):
        raise NotOwnedError(f"Elastic IP {allocation_id} is held by an instance that is not this client's")
    return address


def move_eip(region: str, allocation_id: str, instance_id: str, *, client_id: str,
             account: AwsAccount | None = None, own: tuple[str, ...] = (),
             known: Callable[[str], bool] | None = None) -> str:
    """Point the Elastic IP (checked by ``check_eip``) at the instance (a no-op if it already is); returns the
    association id. An EIP held by an instance that is not the client's is never taken."""
    address = check_eip(region, allocation_id, client_id=client_id, account=account, own=(*own, instance_id),
                        known=known)
    if address.get("InstanceId") == instance_id and address.get("AssociationId"):
        return address["AssociationId"]
    with _aws("AssociateAddress"):
        return _api("ec2", region, account).associate_address(
            AllocationId=allocation_id, InstanceId=instance_id, AllowReassociation=True)["AssociationId"]


def check_target_group_arn(arn: str, region: str, account_id: str) -> None:
    """NotOwnedError unless the ARN names a target group of ``account_id`` in ``region``."""
    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != "elasticloadbalancing" or parts[3] != region or parts[4] != account_id:
        raise NotOwnedError(f"target group {arn} is not in the client's account {account_id} and region {region}")


def check_target_group(region: str, arn: str, *, client_id: str, account: AwsAccount | None = None,
                       own: tuple[str, ...] = (), known: Callable[[str], bool] | None = None) -> None:
    """The target group is the client's: in the acting account and region (its ARN says so and it can be
    described there), and every target it holds is an instance of the client's (``own``, ``known``, or one we
    launched for it). An account can be shared (self-hosted): a group serving someone else's instances is
    theirs, whatever account it is in."""
    check_target_group_arn(arn, region, account.account_id if account else accounts.home_account_id())
    client = _api("elbv2", region, account)
    with _owned_lookup("DescribeTargetGroups", ("TargetGroupNotFound", "ValidationError"),
                       f"target group {arn} is not in the client's account"):
        client.describe_target_groups(TargetGroupArns=[arn])
        targets = [d["Target"]["Id"] for d in client.describe_target_health(TargetGroupArn=arn)
                   .get("TargetHealthDescriptions", [])]
    foreign = [t for t in targets if not t.startswith("i-")] or _not_the_clients(
        region, targets, client_id=client_id, account=account, own=own, known=known)
    if foreign:  # never named: another tenant's instance id is theirs to know
        _log.warning("target group serves instances not the client's", extra={"target_group_arn": arn,
                                                                              "instance_ids": foreign,
                                                                              "client_id": client_id})
        raise NotOwnedError(f"target group {arn} serves an instance that is not this client's")


def swap_target(region: str, target_group_arn: str, old_instance_id: str | None, new_instance_id: str,
                port: int | None, *, client_id: str, account: AwsAccount | None = None,
                known: Callable[[str], bool] | None = None) -> None:
    """Register the new target before deregistering the old, so the group never goes empty. The group must be
    the client's (``check_target_group``)."""
    own = tuple(i for i in (old_instance_id, new_instance_id) if i)
    check_target_group(region, target_group_arn, client_id=client_id, account=account, own=own, known=known)
    client = _api("elbv2", region, account)
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


def availability_zones(region: str, *, account: AwsAccount | None = None) -> list[str]:
    """Usable AZs of the region (Local/Wavelength zones excluded), sorted."""
    with _aws("DescribeAvailabilityZones"):
        zones = _api("ec2", region, account).describe_availability_zones(
            Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
    return sorted(z["ZoneName"] for z in zones if z.get("ZoneType", "availability-zone") == "availability-zone")


def mark_orphaned(region: str, instance_ids: list[str], at: str, *, account: AwsAccount | None = None) -> None:
    """Tag this stage's orphans ``TAG_ORPHANED`` = ``at`` before the cleanup terminates them (the cleanup's own
    tag: IAM lets it tag the instances it manages, never its ``ManagedBy``/stage tags)."""
    with _aws("CreateTags"):
        _api("ec2", region, account).create_tags(Resources=instance_ids, Tags=[{"Key": TAG_ORPHANED, "Value": at}])


def tag(region: str, instance_id: str, tags: dict[str, str], *, client_id: str,
        account: AwsAccount | None = None) -> None:
    """Add (client-chosen) tags to an instance we launched for this client; our own tags are set at launch and
    never changed here."""
    info = describe(region, [instance_id], account=account).get(instance_id)
    if info is None or not owned_by(info, client_id):
        raise NotOwnedError(f"instance {instance_id} was not launched by the product for this client")
    with _aws("CreateTags"):
        _api("ec2", region, account).create_tags(Resources=[instance_id],
                                           Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
