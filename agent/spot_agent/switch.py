"""The legacy switch, done by the agent itself (the legacy "fast mode").

The agent launches its own replacement with the permissions of the instance profile: same AMI,
type, security groups, instance profile and key, in the target pool's AZ, spot one-time or
on-demand, tagged ``ManagedBy=SpotOptimizer`` and ``LogicalAgentId``. No AMI is created: the
replacement boots the launch AMI, so the application must not keep state on the root volume (as
in the legacy agent). The launch uses the command id as ``ClientToken``, so an SDK-level retry of
RunInstances cannot start a second replacement.

Differences from the legacy agent, on purpose:
- across AZs it picks a subnet of the *same VPC* in the target AZ (the legacy agent dropped the
  subnet, which only works in a default VPC);
- it reports the switch right after the replacement is running, with the field names the server
  reads (``prices``, ``timing.switch_initiated_at`` ...; the legacy field-name mismatches settled), and leaves
  terminating the old instance to a later, non-blocking step of the agent loop;
- no 2-second "traffic switch" sleep: hand-off (EIP, target group) is the server's failover job.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

log = logging.getLogger("spot_agent.switch")

SWITCH_TYPES = frozenset({"switch", "switch_to_ondemand", "emergency_switch"})
WAIT_DELAY_S = 10  # legacy: 10 s × 30
WAIT_ATTEMPTS = 30
KEEPALIVE_ATTEMPTS = 6  # renew the command's lease about every minute of waiting


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def split_pool(pool_id: str) -> tuple[str, str]:
    """``m5.large.us-east-1b`` → (``m5.large``, ``us-east-1b``): the AZ is the last dot-segment."""
    instance_type, _, az = pool_id.rpartition(".")
    if not instance_type or not az:
        raise ValueError(f"malformed pool id {pool_id!r}")
    return instance_type, az


class LegacySwitcher:
    """Executes one switch command against EC2 and builds the switch report."""

    def __init__(self, ec2: Any, *, identity: dict[str, Any], region: str, logical_agent_id: str,
                 price_source: Callable | None, clock: Callable[[], datetime],
                 on_phase: Callable[..., None] = lambda phase, **kw: None,
                 wait_delay_s: int = WAIT_DELAY_S, wait_attempts: int = WAIT_ATTEMPTS,
                 logger: logging.Logger | logging.LoggerAdapter = log):
        self.ec2, self.identity, self.region = ec2, identity, region
        self.logical_agent_id, self.price_source, self.clock = logical_agent_id, price_source, clock
        self.on_phase, self.wait_delay_s, self.wait_attempts = on_phase, wait_delay_s, wait_attempts
        self.log = logger

    def run(self, command: dict[str, Any], keepalive: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """Launch, wait for running, return ``{success, message, switch_report, new_instance_id}``.

        ``keepalive`` is called about once a minute while the replacement boots (it renews the
        command's lease on the server)."""
        initiated = self.clock()
        me = self._describe_self()
        old_mode = "spot" if me.get("InstanceLifecycle") == "spot" else "ondemand"
        old_type, old_az = me["InstanceType"], me["Placement"]["AvailabilityZone"]
        ctype = command.get("command_type") or "switch"
        target_mode = command.get("target_mode") or ("ondemand" if ctype == "switch_to_ondemand" else "spot")
        if target_mode not in ("spot", "ondemand"):
            return _failed(f"unknown target_mode {target_mode!r}")
        pool = command.get("target_pool_id") if target_mode == "spot" else None
        new_type, new_az = split_pool(pool) if pool else (old_type, old_az)

        params = self._launch_params(me, command, target_mode, new_type, new_az)
        reply = self.ec2.run_instances(**params)
        new_id = reply["Instances"][0]["InstanceId"]
        launched = self.clock()
        self.on_phase("launched", new_instance_id=new_id)
        self.log.info("replacement %s launched (%s %s in %s)", new_id, target_mode, new_type, new_az)
        try:
            self._wait_running(new_id, keepalive)
        except Exception as exc:  # noqa: BLE001 - any waiter/EC2 failure: undo the launch, report failure
            self.log.error("replacement %s did not reach running: %s; terminating it", new_id, exc)
            try:
                self.ec2.terminate_instances(InstanceIds=[new_id])
            except Exception as term_exc:  # noqa: BLE001
                self.log.error("could not terminate failed replacement %s: %s", new_id, term_exc)
            return _failed(f"replacement {new_id} did not reach running: {exc}")
        ready = self.clock()
        self.on_phase("ready", new_instance_id=new_id)

        on_demand, old_spot, new_spot = self._prices(old_type, old_az, old_mode, new_type, new_az, target_mode)
        priority = int(command.get("priority") or 0)
        trigger = "emergency" if ctype == "emergency_switch" else ("manual" if priority >= 50 else "model")
        old_pool = f"{old_type}.{old_az}" if old_mode == "spot" else None
        report = {
            "command_id": command["id"],
            "trigger": trigger,
            "success": True,
            "old_instance": {"instance_id": me["InstanceId"], "instance_type": old_type, "region": self.region,
                             "az": old_az, "ami_id": me.get("ImageId"), "mode": old_mode, "pool_id": old_pool},
            "new_instance": {"instance_id": new_id, "instance_type": new_type, "region": self.region,
                             "az": new_az, "ami_id": me.get("ImageId"), "mode": target_mode,
                             "pool_id": f"{new_type}.{new_az}" if target_mode == "spot" else None},
            "snapshot": {"used": False},
            "prices": {"on_demand": on_demand, "old_spot": old_spot, "new_spot": new_spot},
            "timing": {"switch_initiated_at": iso(initiated), "new_instance_launched_at": iso(launched),
                       "new_instance_ready_at": iso(ready), "traffic_switched_at": iso(ready)},
        }
        seconds = (ready - initiated).total_seconds()
        return {"success": True, "new_instance_id": new_id, "switch_report": report,
                "message": f"switched to {new_id} ({target_mode} {new_type} in {new_az}) in {seconds:.1f}s"}

    def _wait_running(self, instance_id: str, keepalive: Callable[[], None]) -> None:
        """The boto3 waiter in slices of ``KEEPALIVE_ATTEMPTS`` polls, ``wait_attempts`` polls in all,
        with a keepalive between slices. A slice that runs out of attempts moves on to the next; a
        terminal state (the instance died) raises at once."""
        waiter = self.ec2.get_waiter("instance_running")
        left = self.wait_attempts
        while True:
            attempts = min(KEEPALIVE_ATTEMPTS, left)
            try:
                waiter.wait(InstanceIds=[instance_id],
                            WaiterConfig={"Delay": self.wait_delay_s, "MaxAttempts": attempts})
                return
            except Exception as exc:  # noqa: BLE001 - botocore's WaiterError, read by its reason
                left -= attempts
                reason = str(getattr(exc, "kwargs", {}).get("reason", ""))
                if left <= 0 or not reason.startswith("Max attempts exceeded"):
                    raise
            keepalive()

    def _describe_self(self) -> dict[str, Any]:
        reply = self.ec2.describe_instances(InstanceIds=[self.identity["instance_id"]])
        return reply["Reservations"][0]["Instances"][0]

    def _subnet_in(self, vpc_id: str | None, az: str) -> str | None:
        if not vpc_id:
            return None
        subnets = self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                     {"Name": "availability-zone", "Values": [az]}])["Subnets"]
        subnets.sort(key=lambda s: (not s.get("DefaultForAz", False), s["SubnetId"]))
        return subnets[0]["SubnetId"] if subnets else None

    def _launch_params(self, me: dict[str, Any], command: dict[str, Any], target_mode: str,
                       new_type: str, new_az: str) -> dict[str, Any]:
        tags = [{"Key": "Name", "Value": f"SpotOptimizer-{target_mode}"},
                {"Key": "ManagedBy", "Value": "SpotOptimizer"},
                {"Key": "LogicalAgentId", "Value": self.logical_agent_id},
                {"Key": "SpotOptimizerCommandId", "Value": str(command["id"])[:256]},
                {"Key": "ReplacesInstance", "Value": me["InstanceId"]}]
        params: dict[str, Any] = {
            "ImageId": me["ImageId"], "InstanceType": new_type, "MinCount": 1, "MaxCount": 1,
            "ClientToken": str(command["id"])[:64],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        groups = [g["GroupId"] for g in me.get("SecurityGroups", []) if g.get("GroupId")]
        if groups:
            params["SecurityGroupIds"] = groups
        if me.get("KeyName"):
            params["KeyName"] = me["KeyName"]
        if me.get("IamInstanceProfile", {}).get("Arn"):
            params["IamInstanceProfile"] = {"Arn": me["IamInstanceProfile"]["Arn"]}
        same_az = new_az == me["Placement"]["AvailabilityZone"]
        subnet = me.get("SubnetId") if same_az else self._subnet_in(me.get("VpcId"), new_az)
        if subnet:
            params["SubnetId"] = subnet
        else:
            params["Placement"] = {"AvailabilityZone": new_az}
        if target_mode == "spot":
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        return params

    def _prices(self, old_type: str, old_az: str, old_mode: str, new_type: str, new_az: str,
                target_mode: str) -> tuple[float | None, float | None, float | None]:
        """(on-demand, old spot, new spot) from the price source; best-effort, None when unknown."""
        if self.price_source is None:
            return None, None, None
        try:
            pools, on_demand = self.price_source(old_type, self.region)
            by_pool = {p["pool_id"]: p["price"] for p in pools}
            if new_type != old_type:
                new_pools, _ = self.price_source(new_type, self.region)
                by_pool.update({p["pool_id"]: p["price"] for p in new_pools})
        except Exception as exc:  # noqa: BLE001 - prices only enrich the report
            self.log.warning("prices for the switch report unavailable: %s", exc)
            return None, None, None
        old_spot = by_pool.get(f"{old_type}.{old_az}") if old_mode == "spot" else None
        new_spot = by_pool.get(f"{new_type}.{new_az}") if target_mode == "spot" else None
        return on_demand, old_spot, new_spot


def _failed(message: str) -> dict[str, Any]:
    return {"success": False, "message": message, "switch_report": None, "new_instance_id": None}
