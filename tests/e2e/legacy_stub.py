"""A model of the pre-v4 legacy agent ``agent/spot_agent.py`` of atharva0608/final-ml (commit c01b805, self-labelled
"Agent v4.0"), played against the real handlers on the v4 model's simulated clock (tests/e2e/legacy_v4.py).

The model describes the agent's requests and what it does with the answers, not its code:

- **every call** carries the client token as ``X-Client-Token: <token>`` (no Authorization header, no body
  ``client_token``); a call it needs is one answered exactly **200**, anything else is logged and dropped;
- **register** ``{hostname, instance_id, instance_type, region, az, current_mode, version: "4.0"}`` (no
  logical_agent_id, ami_id or IPs); it reads ``agent_id`` and exits on anything but 200. Its ``current_mode`` is
  ``spot`` only when IMDS serves ``spot/instance-action`` at start, which it does only once an interruption is
  scheduled: on a spot instance it is nearly always ``ondemand``;
- **one loop every 30 s**: heartbeat ``{status: online, instance_id, current_mode, current_pool_id}``; the pricing
  report when ``int(time) % 150 < 30`` (about every 5th turn), one flat line of constants
  ``{instance_type, region, az, spot_price: 0.0416, ondemand_price: 0.0832, timestamp}``; then
  ``GET pending-commands``, whose JSON it **iterates as a list** (``command.get('target_mode')`` on each item):
  a JSON object yields its keys, strings, and the loop turn dies with an AttributeError (caught, logged);
  each item with a ``target_mode`` is "executed": a 2 s sleep, then ``POST commands/{id}/executed
  {success: true, message: "Switched to <mode>"}``, and on 200 it takes the command's mode and pool as its own
  (sent in its next heartbeats). It never switches anything and never posts a switch report;
- **interruption monitor every 5 s**: a rebalance recommendation (IMDS ``events/recommendations/rebalance``),
  once per process, posts ``create-emergency-replica {signal_type: "rebalance-recommendation", instance_id,
  pool_id: <its current_pool_id>, urgency: "high"}`` (it logs success on 201 only); a termination time (IMDS
  ``spot/termination-time``) posts ``termination-imminent {instance_id, termination_time}`` and then shuts down
  whatever the answer: the final heartbeat ``{status: "offline"}`` (nothing else), and the process exits.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tests.conftest import Caller
from tests.e2e.legacy_v4 import Fleet, Host, Thread, V4Agent

VERSION = "4.0"
LOOP_S = 30  # HEARTBEAT_INTERVAL
MONITOR_S = 5
SWITCH_SLEEP_S = 2
SPOT_PRICE, ONDEMAND_PRICE = 0.0416, 0.0832  # its placeholders, whatever the type


class HeaderCaller(Caller):
    """The agent's transport: the client token in ``X-Client-Token``, never ``Authorization``."""

    def headers(self, extra=None):
        return {"Content-Type": "application/json", "X-Client-Token": self.token, **(extra or {})}


def stub_time(value: datetime) -> str:
    """``datetime.utcnow().isoformat()``: naive UTC, microseconds, no zone."""
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat()


class StubAgent(V4Agent):
    """One spot_agent.py process: register, then its loop and its interruption monitor."""

    LABEL = "stub"

    def __init__(self, fleet: Fleet, host: Host, logical_agent_id: str, *, name: str) -> None:
        super().__init__(fleet, host, logical_agent_id, name=name)
        self.caller = HeaderCaller(fleet.http, token=fleet.token)
        self.current_mode: str | None = None
        self.current_pool_id: str | None = None
        self.loop_errors: list[str] = []  # turns of its loop that died (what it logs as "Heartbeat loop error")
        self.interruption_detected = False
        self.termination_time: str | None = None  # IMDS spot/termination-time (the test sets it)

    def answered(self, method: str, path: str, body: Any = None) -> Any:
        """The answer of a call it acts on: only a 200 counts."""
        call = self.call(method, path, body)
        return call.answer if call.status == 200 else None

    # --- life -------------------------------------------------------------------------------------

    def start(self) -> None:
        h = self.host
        # IMDS spot/instance-action exists only once an interruption is scheduled (on a spot instance)
        self.current_mode = "spot" if h.mode == "spot" and self.termination_notice else "ondemand"
        self.registration = self.call("POST", "/api/agents/register", {
            "hostname": f"ip-{h.private_ip.replace('.', '-')}", "instance_id": h.instance_id,
            "instance_type": h.instance_type, "region": h.region, "az": h.az, "current_mode": self.current_mode,
            "version": VERSION})
        if self.registration.status != 200:
            self.stopped_at = self.fleet.sim.elapsed
            return
        self.agent_id = self.registration.answer.get("agent_id")
        self.running = True
        sim = self.fleet.sim
        sim.spawn(self._loop(), at=sim.elapsed)
        sim.spawn(self._monitor(), at=sim.elapsed)

    def stop(self) -> None:
        """shutdown(): the final heartbeat is ``{"status": "offline"}`` alone."""
        if not self.running:
            return
        self.running = False
        self.stopped_at = self.fleet.sim.elapsed
        self.call("POST", f"{self.base}/heartbeat", {"status": "offline"})

    # --- threads ----------------------------------------------------------------------------------

    def heartbeat(self, status: str) -> Any:
        return self.answered("POST", f"{self.base}/heartbeat", {
            "status": status, "instance_id": self.host.instance_id, "current_mode": self.current_mode,
            "current_pool_id": self.current_pool_id})

    def pricing_body(self) -> dict:
        h = self.host
        return {"instance_type": h.instance_type, "region": h.region, "az": h.az, "spot_price": SPOT_PRICE,
                "ondemand_price": ONDEMAND_PRICE, "timestamp": stub_time(self.fleet.sim.now)}

    def _loop(self) -> Thread:
        while self.running:
            self.heartbeat("online")
            if int(self.fleet.sim.now.timestamp()) % (LOOP_S * 5) < LOOP_S:
                self.answered("POST", f"{self.base}/pricing-report", self.pricing_body())
            commands = self.answered("GET", f"{self.base}/pending-commands")
            commands = commands if commands is not None else []
            ids = [c.get("id") for c in commands if isinstance(c, dict)]
            self.polls.append((self.fleet.sim.elapsed, ids))
            for command in commands:  # as the agent does: a JSON object yields its keys
                if not isinstance(command, dict):
                    self.loop_errors.append(f"'{type(command).__name__}' object has no attribute 'get'")
                    break
                if command.get("target_mode"):
                    self.executed.append(command)
                    yield SWITCH_SLEEP_S  # the whole "switch"
                    done = self.answered("POST", f"{self.base}/commands/{command.get('id')}/executed",
                                         {"success": True, "message": f"Switched to {command['target_mode']}"})
                    if done is not None:
                        self.current_mode, self.current_pool_id = command["target_mode"], command.get("target_pool_id")
            if self.running:
                yield LOOP_S

    def _monitor(self) -> Thread:
        while self.running:
            if self.rebalance_notice is not None and not self.interruption_detected:
                emergency = self.call("POST", f"{self.base}/create-emergency-replica", {
                    "signal_type": "rebalance-recommendation", "instance_id": self.host.instance_id,
                    "pool_id": self.current_pool_id, "urgency": "high"})
                self.rebalance_reports.append((emergency, None))
                self.interruption_detected = True
            if self.termination_time:
                self.call("POST", f"{self.base}/termination-imminent",
                          {"instance_id": self.host.instance_id, "termination_time": self.termination_time})
                self.stop()
                return
            yield MONITOR_S


__all__ = ["StubAgent", "HeaderCaller", "VERSION", "LOOP_S", "SPOT_PRICE", "ONDEMAND_PRICE"]
