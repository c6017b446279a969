"""A model of the legacy v3.2.0 agent (``spot_agent_production_v2_final.py``), played against the real
handlers on the v4 model's simulated clock (tests/e2e/legacy_v4.py: ``Sim``, ``Fleet``, hosts, EC2 fakes).

What v3.2 does differently from v4, as the legacy protocol documents it:

- **register** sends ``client_token, hostname, instance_id, instance_type, region, az, ami_id,
  agent_version, logical_agent_id``: no ``mode`` (the legacy server defaulted it to ``unknown``) and no IPs;
- **four threads only**: heartbeat 30 s, pending commands 15 s, config 60 s, pricing 300 s. No termination
  or rebalance check, no replica polling, no cleanup report: v3.2 never calls those routes;
- **heartbeat** ``{status, monitored_instances: [its instance]}``, never ``instance_id``/``mode``/``az``;
  the final one at shutdown is ``{"status": "offline", "monitored_instances": []}``;
- **pricing report** in v3.2's own shape: ``instance{instance_id, instance_type, region, az, current_mode,
  current_pool_id}``, ``on_demand_price{price}`` and a top-level ``spot_pools`` (no ``pricing`` block);
- **commands**: the first command with an ``id`` is taken; one without ``target_mode`` is acknowledged with
  ``mark-command-executed`` unexecuted; ``command_type`` is not read (anything with a target mode is a switch).
  The first v3.2 builds (agent-v2 ``spot_agent_production_v2_final.py`` at fee1d2b and 4cb32dc, ``iterates_answer``)
  iterate the answer itself: a list works, an object yields its keys, and ``"commands".get`` raises on every poll
  (the worker logs it and waits 15 s), so such a build runs no command given ``{"commands": [...]}``;
- **switch**: root-volume snapshot first (``snapshot{used, snapshot_id, volume_id}``; agent-v2's
  ``backend/spot_agent_production_v2_final.py`` at ea15b23 waits up to 600 s for it to complete: ``snapshot_wait``),
  launch, wait running, 2 s traffic switch; then termination **from its env** (``AUTO_TERMINATE_OLD_INSTANCE``
  default true, ``TERMINATE_WAIT_TIME`` default 300), never from the command's ``terminate_wait_seconds``; prices (a spot
  price it cannot read is sent as ``0.0``); the switch report (no ``new_instance_launched_at``, unset timings
  sent as ``null``, timestamps ``utcnow().isoformat() + "Z"``); then ``POST .../mark-command-executed``
  ``{command_id}`` whatever the outcome (no ``success`` field); it stops after a successful switch under
  auto-terminate. Under auto-terminate its host is the instance it terminates, so it dies before the report
  and the mark, unless the fleet's ``processes_outlive_hosts`` (a harness that terminates no process).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tests.e2e.legacy_v4 import (
    COMMANDS_S,
    CONFIG_S,
    HEARTBEAT_S,
    RUN_INSTANCES_S,
    RUNNING_WAIT_S,
    SHUTDOWN_S,
    TERMINATED_WAIT_S,
    TRAFFIC_SWITCH_S,
    BOOT_S,
    Thread,
    V4Agent,
)

VERSION = "3.2.0"


def v3_time(value: datetime) -> str:
    """v3.2's timestamps: ``datetime.utcnow().isoformat() + 'Z'`` (naive UTC, then a literal Z)."""
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True)
class V3Env:
    """The agent's own switch settings (its environment), which decide termination instead of the command."""

    auto_terminate: bool = True  # AUTO_TERMINATE_OLD_INSTANCE
    terminate_wait: int = 300  # TERMINATE_WAIT_TIME
    snapshot: bool = True  # CREATE_SNAPSHOT_ON_SWITCH
    # agent-v2 backend/spot_agent_production_v2_final.py at ea15b23 waits for the snapshot to complete before it
    # launches (10 s polls, up to 600 s); the other builds launch at once
    snapshot_wait: int = 0


class V3Agent(V4Agent):
    """One v3.2 agent process: register, then its four timer threads; a command blocks its command thread."""

    LABEL = "v3"
    ENV = V3Env()
    ITERATES_ANSWER = False  # the first builds: the pending-commands answer is iterated as it is (module docstring)
    AGENT_VERSION = VERSION  # the first builds say "3.1.0"
    ENABLED_FROM_REGISTRATION = True
    launch_fails = False  # the test's switch: RunInstances refused (v3.2 then reports nothing but the mark)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marks: list[Any] = []  # mark-command-executed calls (Call)
        self.poll_errors: list[str] = []  # polls whose answer the first builds could not iterate

    # --- life -------------------------------------------------------------------------------------

    def registration_body(self) -> dict:
        """v4's registration without ``mode``, the IPs, and with v3's version."""
        body = super().registration_body()
        for field in ("mode", "private_ip", "public_ip"):
            del body[field]
        return body | {"agent_version": self.AGENT_VERSION}

    def threads(self) -> list[tuple[Thread, float]]:
        return [(self._heartbeats(), 0), (self._commands(), 0), (self._config(), 0), (self._pricing(), 0)]

    # --- threads ----------------------------------------------------------------------------------

    def heartbeat(self, status: str) -> Any:
        return self.answer("POST", f"{self.base}/heartbeat",
                           {"status": status, "monitored_instances": [self.host.instance_id]})

    def _config(self) -> Thread:
        while self.running:
            config = self.answer("GET", f"{self.base}/config")
            if config:
                self.enabled = bool(config.get("enabled", True))
            yield CONFIG_S

    def pricing_body(self) -> dict:
        h, market = self.host, self.fleet.market
        pools = [{"pool_id": f"{h.instance_type}.{az}", "instance_type": h.instance_type, "az": az, "price": price}
                 for az, price in sorted(market.spot.items())]
        return {"instance": {"instance_id": h.instance_id, "instance_type": h.instance_type, "region": h.region,
                             "az": h.az, "current_mode": h.mode, "current_pool_id": h.pool_id},
                "on_demand_price": {"price": market.on_demand},
                "spot_pools": pools}

    def mark_executed(self, command_id: str) -> Any:
        call = self.call("POST", f"{self.base}/mark-command-executed", {"command_id": command_id})
        self.marks.append(call)
        return call

    def _commands(self) -> Thread:
        """Every 15 s when enabled: the first command with an id; one without ``target_mode`` is marked
        executed unexecuted and the next one is looked at."""
        while self.running:
            if self.enabled:
                answer = self.answer("GET", f"{self.base}/pending-commands")
                if self.ITERATES_ANSWER and isinstance(answer, dict) and answer:
                    # its items are the object's keys: str has no .get (AttributeError, logged; next poll in 15 s)
                    self.poll_errors.append(f"'str' object has no attribute 'get' ({sorted(answer)})")
                    yield COMMANDS_S
                    continue
                if isinstance(answer, dict):
                    commands = answer.get("commands", answer.get("pending_commands", answer.get("data", [])))
                else:
                    commands = answer or []
                self.polls.append((self.fleet.sim.elapsed, [c.get("id") for c in commands]))
                for command in commands:
                    if not command.get("id"):
                        continue
                    if not command.get("target_mode"):
                        self.skipped.append(command)
                        self.mark_executed(command["id"])
                        continue
                    self.executed.append(command)
                    success = yield from self._switch(command)
                    if not self.running:
                        return  # died with the host it terminated: no mark, no more polls
                    self.mark_executed(command["id"])
                    if success and self.ENV.auto_terminate:
                        self.stop()
                    break
            if self.running:
                yield COMMANDS_S

    def _switch(self, command: dict) -> Thread:
        """Snapshot, launch, wait running, 2 s traffic switch, (env) wait + terminate old, prices, report.
        Returns whether the switch succeeded (the generator's value)."""
        sim, old, env = self.fleet.sim, self.host, self.ENV
        mode = command["target_mode"]
        pool = command.get("target_pool_id")
        az = pool.split(".")[-1] if mode == "spot" and pool else old.az
        record: dict[str, Any] = {"command": command}
        self.switches.append(record)
        timing: dict[str, Any] = {"switch_initiated_at": v3_time(sim.now), "new_instance_ready_at": None,
                                  "traffic_switched_at": None, "old_instance_terminated_at": None}
        snapshot: dict[str, Any] = {"used": False}
        if env.snapshot:
            snapshot = {"used": True, "snapshot_id": "snap-0123456789abcdef0", "volume_id": "vol-0123456789abcdef0"}
            if env.snapshot_wait:
                yield env.snapshot_wait
        yield RUN_INSTANCES_S
        if self.launch_fails:
            record["failed"] = "launch refused"
            return False
        new = self.fleet.ec2.run_instances(old, az=az, mode=mode if mode == "spot" and pool else "ondemand", tags={
            "Name": f"SpotOptimizer-{mode}", "ManagedBy": "SpotOptimizer", "LogicalAgentId": self.logical_agent_id})
        record["new_host"] = new
        self.fleet.start_agent(new, self.replacement_logical_id(new), at=sim.elapsed + BOOT_S)
        yield RUNNING_WAIT_S
        timing["new_instance_ready_at"] = v3_time(sim.now)
        yield TRAFFIC_SWITCH_S
        timing["traffic_switched_at"] = v3_time(sim.now)
        if env.auto_terminate:
            yield env.terminate_wait
            self.fleet.ec2.terminate(old)
            if not self.fleet.processes_outlive_hosts:
                # its own host: the process dies with it before the report (tests/e2e/legacy_v4.py, _switch)
                yield SHUTDOWN_S
                self.stop()
                return None
            yield TERMINATED_WAIT_S
            timing["old_instance_terminated_at"] = v3_time(sim.now)
        market = self.fleet.market
        prices: dict[str, Any] = {"on_demand": market.on_demand}
        if old.mode == "spot":
            prices["old_spot"] = market.spot.get(old.az, 0.0)
        if mode == "spot":
            prices["new_spot"] = market.spot.get(new.az, 0.0)
        prices |= market.switch_quotes
        record["report"] = self.call("POST", f"{self.base}/switch-report", {
            "old_instance": {"instance_id": old.instance_id, "instance_type": old.instance_type,
                             "region": old.region, "az": old.az, "ami_id": old.ami_id, "mode": old.mode,
                             "pool_id": old.pool_id},
            "new_instance": {"instance_id": new.instance_id, "instance_type": new.instance_type,
                             "region": new.region, "az": new.az, "ami_id": new.ami_id, "mode": mode,
                             "pool_id": pool},
            "snapshot": snapshot, "prices": prices, "timing": timing,
            "trigger": "manual" if command.get("priority", 0) >= 50 else "model"})
        return True


def v3_kind(*, iterates_answer: bool = False, **env: Any) -> type[V3Agent]:
    """The v3.2 agent with its environment (``V3Env`` fields) set, for ``Fleet(kind=...)``; ``iterates_answer``: one
    of its first builds (module docstring)."""
    return type("V3Agent", (V3Agent,), {"ENV": V3Env(**env), "ITERATES_ANSWER": iterates_answer,
                                        "AGENT_VERSION": "3.1.0" if iterates_answer else VERSION})


__all__ = ["V3Agent", "V3Env", "VERSION", "v3_kind", "v3_time", "COMMANDS_S", "HEARTBEAT_S"]
