"""A model of the early v4.0.0 builds of ``backend/spot_optimizer_agent.py`` in atharva0608/agent-v2 (commits
ec1c6dd, 0911657, ee5339a, 27bdcdf), played on the v4 model's simulated clock (tests/e2e/legacy_v4.py).

They say ``agent_version: "4.0.0"`` like the last v4 (tests/e2e/legacy_v4.py), but act like v3.2 in what matters
to a switch, and differ from both on the wire. What all four do, as their code does it:

- **switch from their environment**: the old instance is terminated after ``TERMINATE_WAIT_TIME`` (default 300 s)
  when ``AUTO_TERMINATE_OLD_INSTANCE`` (default true) says so, whatever the command's ``terminate_wait_seconds``;
  then prices, the switch report (to the path of the ``agent_id`` the agent adds to the command), the result
  ``commands/{id}/executed {success, message}``, and a stop after a successful switch under its auto-terminate.
  Three builds first create an AMI of the old instance (``CREATE_SNAPSHOT_ON_SWITCH``, default true) and wait up to
  600 s for it (15 s x 40), then launch from it; 27bdcdf launches from the current AMI at once;
- **no create-emergency-replica, no replica polls**: threads are heartbeat 30 s, commands 15 s, config 60 s,
  pricing 300 s, termination check 5 s, rebalance check 30 s, cleanup hourly (first after 60 s);
- **termination notice reported on every check** (no handled flag, no stop on success): ``termination-imminent``
  every 5 s while IMDS serves ``spot/instance-action``, i.e. until the host is gone; an answer with a truthy
  ``create_emergency_replica`` would make it launch a spot copy of itself and post it to ``/replicas``;
- **rebalance recommendation reported on every check**: ``rebalance-recommendation`` every 30 s while IMDS serves
  it (it never clears before the host goes), the answer only logged.

Where the builds differ (``EarlyBuild``): registration names the mode ``current_mode`` (ec1c6dd) or ``mode``; the
heartbeat is bare (``{status, monitored_instances}``: ec1c6dd, 0911657) or carries the instance fields; the pricing
report is v3.2's shape (top-level ``spot_pools``, ``on_demand_price{price}``: ec1c6dd, 0911657) or v4's;
``termination-imminent`` sends IMDS's ``action`` and ``time`` (ec1c6dd, 0911657) or ``termination_time``; the
rebalance report is ``{}`` (ec1c6dd, 0911657) or ``{instance_id, detected_at}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.e2e.legacy_v3 import v3_time
from tests.e2e.legacy_v4 import (
    BOOT_S,
    CLEANUP_FIRST_S,
    COMMANDS_S,
    CONFIG_S,
    REBALANCE_CHECK_S,
    RUN_INSTANCES_S,
    RUNNING_WAIT_S,
    SHUTDOWN_S,
    TERMINATED_WAIT_S,
    TERMINATION_CHECK_S,
    TRAFFIC_SWITCH_S,
    Thread,
    V4Agent,
    v4_time,
)

VERSION = "4.0.0"
AMI_S = 300  # CreateImage and its image_available waiter: typical; the waiter gives up after 600 s


@dataclass(frozen=True)
class EarlyBuild:
    """How one early build speaks (see the module docstring)."""

    commit: str
    mode_field: str  # the registration's name for the mode: "mode" or "current_mode"
    bare_heartbeat: bool
    v3_pricing: bool
    imds_termination_fields: bool  # termination-imminent {instance_id, action, time, detected_at}
    empty_rebalance: bool
    makes_ami: bool
    aware_timestamps: bool  # datetime.now(timezone.utc).isoformat() (27bdcdf); else utcnow().isoformat() (+ "Z")


BUILDS = {b.commit: b for b in (
    EarlyBuild("ec1c6dd", "current_mode", True, True, True, True, True, False),
    EarlyBuild("0911657", "mode", True, True, True, True, True, False),
    EarlyBuild("ee5339a", "mode", False, False, False, False, True, False),
    EarlyBuild("27bdcdf", "mode", False, False, False, False, False, True),
)}


@dataclass(frozen=True)
class EarlyEnv:
    """The agent's own switch settings (its environment), which decide termination instead of the command."""

    auto_terminate: bool = True  # AUTO_TERMINATE_OLD_INSTANCE
    terminate_wait: int = 300  # TERMINATE_WAIT_TIME
    create_ami: bool = True  # CREATE_SNAPSHOT_ON_SWITCH (builds that make an AMI)
    ami_s: int = AMI_S


class EarlyV4Agent(V4Agent):
    """One early-v4 agent process."""

    LABEL = "v4e"
    BUILD = BUILDS["ee5339a"]
    ENABLED_FROM_REGISTRATION = True
    ENV = EarlyEnv()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.termination_reports: list[Any] = []  # termination-imminent calls (Call)
        self.rebalance_calls: list[Any] = []  # rebalance-recommendation calls (Call)
        self.replicas_asked: list[Any] = []  # answers with a truthy create_emergency_replica

    def stamp(self, at=None, *, z: bool = False) -> str:
        """The build's timestamp: aware ``+00:00``, or naive UTC (with a literal ``Z`` in a switch's timing)."""
        at = at or self.fleet.sim.now
        if self.BUILD.aware_timestamps:
            return v4_time(at)
        return v3_time(at) if z else v3_time(at)[:-1]

    # --- life -------------------------------------------------------------------------------------

    def registration_body(self) -> dict:
        body = super().registration_body()
        body[self.BUILD.mode_field] = body.pop("mode")
        return body

    def threads(self) -> list[tuple[Thread, float]]:
        return [(self._heartbeats(), 0), (self._commands(), 0), (self._config(), 0), (self._pricing(), 0),
                (self._termination_check(), 0), (self._rebalance_check(), 0), (self._cleanup(), CLEANUP_FIRST_S)]

    # --- threads ----------------------------------------------------------------------------------

    def heartbeat(self, status: str) -> Any:
        if self.BUILD.bare_heartbeat:
            return self.answer("POST", f"{self.base}/heartbeat",
                               {"status": status, "monitored_instances": [self.host.instance_id]})
        return super().heartbeat(status)

    def _config(self) -> Thread:
        while self.running:
            config = self.answer("GET", f"{self.base}/config")
            if config:
                self.enabled = bool(config.get("enabled", True))
            yield CONFIG_S

    def pricing_body(self) -> dict:
        if not self.BUILD.v3_pricing:
            return super().pricing_body()
        h, market = self.host, self.fleet.market
        pools = [{"pool_id": f"{h.instance_type}.{az}", "instance_type": h.instance_type, "az": az, "price": price}
                 for az, price in sorted(market.spot.items())]
        return {"instance": {"instance_id": h.instance_id, "instance_type": h.instance_type, "region": h.region,
                             "az": h.az, "current_mode": h.mode, "current_pool_id": h.pool_id},
                "on_demand_price": {"price": market.on_demand}, "spot_pools": pools}

    def _commands(self) -> Thread:
        """Every 15 s when enabled: the first command with an ``id`` and a ``target_mode`` is run as a switch (the
        thread blocks); its result is posted whatever the outcome; a successful switch under the env's
        auto-terminate stops the agent."""
        while self.running:
            if self.enabled:
                answer = self.answer("GET", f"{self.base}/pending-commands")
                commands = answer if isinstance(answer, list) else (answer or {}).get("commands", [])
                self.polls.append((self.fleet.sim.elapsed, [c.get("id") for c in commands]))
                for command in commands:
                    if not command.get("id") or not command.get("target_mode"):
                        self.skipped.append(command)
                        continue
                    self.executed.append(command)
                    success = yield from self._switch(command)
                    if not self.running:
                        return  # died with the host it terminated: no report, no result
                    self.switches[-1]["executed"] = self.call(
                        "POST", f"{self.base}/commands/{command['id']}/executed",
                        {"success": bool(success), "message": "Switch completed" if success else "Switch failed"})
                    if success and self.ENV.auto_terminate:
                        self.stop()
                        return
                    break
            if self.running:
                yield COMMANDS_S

    def _switch(self, command: dict) -> Thread:
        """AMI (the builds that make one), launch, wait running, 2 s traffic switch, then (env) wait and terminate the
        old instance, its own host: on a real host the process dies there. Returns whether it succeeded."""
        sim, old, env = self.fleet.sim, self.host, self.ENV
        mode = command["target_mode"]
        pool = command.get("target_pool_id")
        record: dict[str, Any] = {"command": command}
        self.switches.append(record)
        timing: dict[str, Any] = {"switch_initiated_at": self.stamp(z=True), "snapshot_created_at": None,
                                  "ami_created_at": None, "new_instance_launched_at": None,
                                  "new_instance_ready_at": None, "traffic_switched_at": None,
                                  "old_instance_terminated_at": None}
        snapshot: dict[str, Any] = {"used": False}
        ami = old.ami_id
        if self.BUILD.makes_ami and env.create_ami:
            yield env.ami_s
            ami = "ami-0fedcba9876543210"
            snapshot = {"used": True, "ami_id": ami, "ami_name": f"SpotOptimizer-{old.instance_id}-x"}
            timing["ami_created_at"] = self.stamp(z=True)
        yield RUN_INSTANCES_S
        spot = mode == "spot" and bool(pool)  # a spot target without a pool launches on-demand
        az = pool.rsplit(".", 1)[1] if spot else old.az
        new = self.fleet.ec2.run_instances(old, az=az, mode="spot" if spot else "ondemand", tags={
            "Name": f"SpotOptimizer-{mode}", "ManagedBy": "SpotOptimizer", "LogicalAgentId": self.logical_agent_id})
        record["new_host"] = new
        timing["new_instance_launched_at"] = self.stamp(z=True)
        self.fleet.start_agent(new, self.replacement_logical_id(new), at=sim.elapsed + BOOT_S)
        yield RUNNING_WAIT_S
        timing["new_instance_ready_at"] = self.stamp(z=True)
        yield TRAFFIC_SWITCH_S
        timing["traffic_switched_at"] = self.stamp(z=True)
        if env.auto_terminate:
            yield env.terminate_wait
            self.fleet.ec2.terminate(old)
            if not self.fleet.processes_outlive_hosts:
                yield SHUTDOWN_S  # its own host (tests/e2e/legacy_v4.py, _switch)
                self.stop()
                return None
            yield TERMINATED_WAIT_S
            timing["old_instance_terminated_at"] = self.stamp(z=True)
        market = self.fleet.market
        prices: dict[str, Any] = {"on_demand": market.on_demand}
        if old.mode == "spot":
            prices["old_spot"] = market.spot.get(old.az)
        if mode == "spot":
            prices["new_spot"] = market.spot.get(new.az)
        record["report"] = self.call("POST", f"{self.base}/switch-report", {
            "old_instance": {"instance_id": old.instance_id, "instance_type": old.instance_type,
                             "region": old.region, "az": old.az, "ami_id": old.ami_id, "mode": old.mode,
                             "pool_id": old.pool_id},
            "new_instance": {"instance_id": new.instance_id, "instance_type": new.instance_type,
                             "region": new.region, "az": new.az, "ami_id": ami, "mode": mode, "pool_id": pool},
            "snapshot": snapshot, "prices": prices, "timing": timing,
            "trigger": "manual" if command.get("priority", 0) >= 50 else "model"})
        return True

    def _termination_check(self) -> Thread:
        """Every 5 s on spot while IMDS serves the notice: termination-imminent, again and again."""
        while self.running:
            if self.host.mode == "spot" and self.termination_notice:
                h, when = self.host, self.termination_notice.strftime("%Y-%m-%dT%H:%M:%SZ")
                body = {"instance_id": h.instance_id, "action": "terminate", "time": when} \
                    if self.BUILD.imds_termination_fields else {"instance_id": h.instance_id, "termination_time": when}
                body["detected_at"] = self.stamp()
                call = self.call("POST", f"{self.base}/termination-imminent", body)
                self.termination_reports.append(call)
                if call.ok and call.answer.get("create_emergency_replica"):
                    self.replicas_asked.append(call)  # it would launch and post a replica of its own
            yield TERMINATION_CHECK_S

    def _rebalance_check(self) -> Thread:
        """Every 30 s on spot while IMDS serves the recommendation: rebalance-recommendation, again and again."""
        while self.running:
            if self.host.mode == "spot" and self.rebalance_notice is not None:
                body = {} if self.BUILD.empty_rebalance else {"instance_id": self.host.instance_id,
                                                               "detected_at": self.stamp()}
                self.rebalance_calls.append(self.call("POST", f"{self.base}/rebalance-recommendation", body))
            yield REBALANCE_CHECK_S


def early_kind(commit: str, **env: Any) -> type[EarlyV4Agent]:
    """The early build ``commit`` with its environment (``EarlyEnv`` fields) set, for ``Fleet(kind=...)``."""
    return type("EarlyV4Agent", (EarlyV4Agent,), {"BUILD": BUILDS[commit], "ENV": EarlyEnv(**env),
                                                  "LABEL": f"v4e-{commit}"})


__all__ = ["AMI_S", "BUILDS", "EarlyBuild", "EarlyEnv", "EarlyV4Agent", "VERSION", "early_kind"]
