"""The agent: identity from IMDS, registration, and the periodic work of the legacy agent, scheduled
in one loop instead of the legacy agent's eight threads.

``run_due(now)`` does whatever is due at ``now`` and never sleeps, so the same object serves the
daemon (``run_forever`` sleeps on an Event between calls) and step-driven simulators (the demo
calls ``run_due`` with its own clock). Wire timestamps (``collected_at``, ``detected_at``) are that
``now``, so a replay's agents speak in the replay's time.

One heartbeat per cycle both proves liveness and fetches the commands (docs/ARCHITECTURE.md, "Agent protocol"), so the
legacy pending-commands (15 s) and config (60 s) polls are gone: the config is fetched only when
the heartbeat's ``config_version`` changes.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import socket
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from spot_agent import __version__
from spot_agent.api import ApiClient, ApiError
from spot_agent.commands import CommandExecutor, run_hook
from spot_agent.config import AgentConfig
from spot_agent.imds import ImdsClient, ImdsError
from spot_agent.logs import AgentLog
from spot_agent.pricing import Boto3PriceSource, load_price_source
from spot_agent.state import AgentState
from spot_agent.switch import LegacySwitcher, iso

URGENT_HEARTBEAT_S = 10.0  # while a termination notice is active: pick up prepare_shutdown quickly
# A standby (or an agent the server does not know yet) asks to register at most this far apart: a failover's
# promotion is noticed by this call, and the promote command waits for it (the heartbeat's 120 s is too slow).
REGISTER_RETRY_S = 30.0
MAX_SLEEP_S = 60.0
MIN_SLEEP_S = 0.05


class FatalError(RuntimeError):
    """The agent cannot work with this configuration (e.g. the token is refused); restarting won't help."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Agent:
    """One agent on one instance. ``start()`` once, then ``run_due(now)`` repeatedly (or ``run_forever``)."""

    TASKS = ("instance_action", "heartbeat", "rebalance", "pricing")

    def __init__(self, config: AgentConfig, *, imds: ImdsClient | None = None, api: ApiClient | None = None,
                 clock: Callable[[], datetime] | None = None, price_source: Callable | None = None,
                 ec2: Any = None, hook_runner: Callable | None = None, rng: random.Random | None = None):
        self.config = config
        self.imds = imds or ImdsClient(config.imds_endpoint)
        self.api = api or ApiClient(config.server_url, config.client_token, timeout=config.http_timeout_s)
        self.clock = clock or utcnow
        self._price_source = price_source
        self._ec2 = ec2
        self.hook_runner = hook_runner or run_hook
        self.rng = rng or random.Random()
        self.log = AgentLog(logging.getLogger("spot_agent.agent"), {"agent_id": None, "instance_id": None})
        self.identity: dict[str, Any] = {}
        self.region: str | None = None
        self.state: AgentState | None = None
        self.executor: CommandExecutor | None = None
        self.started = False
        self._next: dict[str, datetime] = {}
        self._terminating = False

    # ---- identity ----------------------------------------------------------------------------

    @property
    def agent_id(self) -> str | None:
        return self.state["agent_id"] if self.state else None

    @property
    def instance_id(self) -> str | None:
        return self.identity.get("instance_id")

    @property
    def mode(self) -> str:
        return self.identity.get("mode") or "ondemand"

    @property
    def retired(self) -> bool:
        return bool(self.state and self.state["retired"])

    @property
    def ec2(self):
        if self._ec2 is None:
            import boto3

            self._ec2 = boto3.client("ec2", region_name=self.region)
        return self._ec2

    @property
    def price_source(self) -> Callable:
        if self._price_source is None:
            if self.config.price_source:
                self._price_source = load_price_source(self.config.price_source)
            else:
                self._price_source = Boto3PriceSource(ondemand_price=self.config.ondemand_price, ec2=self._ec2)
        return self._price_source

    # ---- start -------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Identity from IMDS, state from disk, registration, then any results still unreported.

        A command the previous process left ``executing`` is reported failed, never re-run
        (see commands.py). A retired agent (its instance was switched away or shut down) does not
        register again: that would point the agent back at this instance.
        """
        self.identity = self.imds.identity()
        self.region = self.config.region or self.identity.get("region") or "us-east-1"
        self.log.extra["instance_id"] = self.instance_id
        state = AgentState.load(self.config.state_file)
        if state["instance_id"] and state["instance_id"] != self.instance_id:
            # A state file from another instance (e.g. baked into an AMI): nothing in it applies here.
            self.log.warning("state file belongs to instance %s; starting afresh", state["instance_id"])
            state = AgentState(self.config.state_file)
        state.update(instance_id=self.instance_id)
        self.state = state
        self.api.credential = state["agent_credential"]
        self.log.extra["agent_id"] = state["agent_id"]
        self.executor = CommandExecutor(
            state=state, api=self.api, instance_id=self.instance_id, config=self.config, clock=self.clock,
            switcher_factory=self._switcher, hook_runner=self.hook_runner, logger=self.log)
        actions: list[str] = []
        recovered = self.executor.recover()
        if recovered:
            actions.append(f"recovered {recovered}")
        if self.retired:
            self.log.info("this instance was retired (%s); not registering", state["retired"].get("reason"))
        else:
            actions.append(self._register())
        if self.agent_id:
            actions += self.executor.report_pending(self.agent_id)
        self.started = True
        return actions

    def _register(self) -> str:
        """Register (or re-register) this instance; returns ``registered``, ``retired`` or ``standby``.

        The server refuses an instance it already replaced (the agent retires: it must never point
        the logical agent back here) and a standby (the agent waits: it registers once a failover
        has promoted this instance).
        """
        ident = self.identity
        body = {"instance_id": ident["instance_id"], "instance_type": ident["instance_type"],
                "region": self.region, "az": ident["az"], "ami_id": ident.get("ami_id"),
                "hostname": socket.gethostname()[:255], "agent_version": __version__,
                "logical_agent_id": self.config.logical_agent_id or ident["instance_id"], "mode": self.mode,
                "private_ip": ident.get("local_ipv4"), "public_ip": ident.get("public_ipv4")}
        if self.config.declared_types:
            body["instance_types"] = self.config.declared_types
        body["identity_document"], body["identity_signature"] = self.imds.signed_identity()
        try:
            reply = self.api.register({k: v for k, v in body.items() if v is not None})
        except ApiError as exc:
            if exc.status == 409 and exc.code == "instance_replaced":
                self.log.warning("the server says this instance was replaced; retiring")
                self.state.update(retired={"reason": "replaced", "at": iso(self.clock())})
                return "retired"
            if exc.status == 409 and exc.code == "instance_is_standby":
                self.log.info("this instance is a standby; registering once it is promoted")
                self.state.update(agent_id=None)
                return "standby"
            raise
        config = reply.get("config") or {}
        # A verified registration returns the agent's credential (once; it replaces the previous one). A
        # legacy-mode server returns none: the client token then serves the agent routes.
        credential = reply.get("agent_credential") or None
        self.api.credential = credential
        self.state.update(agent_id=reply["agent_id"], client_id=reply.get("client_id"), config=config,
                          config_version=config.get("config_version"), agent_credential=credential)
        self.log.extra["agent_id"] = reply["agent_id"]
        self.log.info("registered (%s) as %s", reply.get("action", "ok"), body["logical_agent_id"])
        return "registered"

    def _switcher(self) -> LegacySwitcher:
        return LegacySwitcher(
            self.ec2, identity=self.identity, region=self.region,
            logical_agent_id=self.config.logical_agent_id or self.instance_id,
            price_source=self.price_source, clock=self.clock, on_phase=self.state.set_phase, logger=self.log)

    # ---- scheduling --------------------------------------------------------------------------

    def _cadence(self, task: str) -> float:
        c = self.config
        if task == "heartbeat":
            return min(c.heartbeat_s, URGENT_HEARTBEAT_S) if self._terminating else c.heartbeat_s
        return {"instance_action": c.notice_s, "rebalance": c.rebalance_s, "pricing": c.pricing_s,
                "report": c.heartbeat_s, "register": min(c.heartbeat_s, REGISTER_RETRY_S)}[task]

    def _tasks(self) -> tuple[str, ...]:
        if self.retired:
            return ("report",)
        if not self.agent_id:
            return ("register",)  # a standby: ask again (REGISTER_RETRY_S)
        # Spot notices exist only for spot instances (legacy: "spot mode only").
        return self.TASKS if self.mode == "spot" else ("heartbeat", "pricing")

    def _due(self, task: str, now: datetime) -> bool:
        return task not in self._next or now >= self._next[task]

    def _schedule(self, task: str, now: datetime) -> None:
        spread = 1 + self.rng.uniform(-self.config.jitter, self.config.jitter)
        self._next[task] = now + timedelta(seconds=self._cadence(task) * spread)

    def next_due(self, now: datetime | None = None) -> datetime:
        """When ``run_due`` next has something to do."""
        now = now or self.clock()
        times = [self._next.get(task, now) for task in self._tasks()]
        retire = self.state["retire_instance"] if self.state else None
        if retire:
            times.append(datetime.fromtimestamp(retire["at_epoch"], timezone.utc))
        return min(times) if times else now + timedelta(seconds=self.config.heartbeat_s)

    # ---- one step ----------------------------------------------------------------------------

    def run_due(self, now: datetime) -> list[str]:
        """Do every piece of work due at ``now`` (never sleeps); returns what was done.

        Order matters when several are due: the termination notice first (two minutes are
        short), then the heartbeat (which executes commands), then rebalance and prices.
        """
        if not self.started:
            raise RuntimeError("Agent.start() must succeed before run_due()")
        actions = self._retire_old_instance(now)
        for task in self._tasks():
            if not self._due(task, now):
                continue
            try:
                actions += getattr(self, f"_task_{task}")(now)
            except (ApiError, ImdsError) as exc:
                self.log.warning("%s failed: %s", task, exc)
                actions.append(f"{task} failed")
            finally:
                self._schedule(task, now)
            if self.retired:
                break
        return actions

    def _task_register(self, now: datetime) -> list[str]:
        outcome = self._register()
        return [outcome] if outcome != "standby" else []

    def _task_report(self, now: datetime) -> list[str]:
        return self.executor.report_pending(self.agent_id) if self.agent_id else []

    def _task_heartbeat(self, now: datetime) -> list[str]:
        actions = self.executor.report_pending(self.agent_id)
        enabled = (self.state["config"] or {}).get("enabled", True)
        status = "online" if enabled else "disabled"
        try:
            reply = self.api.heartbeat(self.agent_id, self._heartbeat_body(status))
        except ApiError as exc:
            # 404: unknown agent; 401: our credential was replaced; 403 agent_credential_required: we hold
            # none (a state file from before verified agents) and the client left legacy mode.
            stale = (exc.status == 404 and not exc.no_such_route) or (exc.status == 401 and self.api.credential) or \
                (exc.status == 403 and exc.code == "agent_credential_required")
            if not stale:
                raise
            self.log.warning("the server does not know agent %s (or its credential); registering again",
                             self.agent_id)
            return actions + [self._register()]
        actions.append("heartbeat")
        version = reply.get("config_version")
        if version is not None and version != self.state["config_version"]:
            actions += self._refresh_config()
        commands = reply.get("commands") or []
        if commands and status == "online":
            actions += self.executor.handle(self.agent_id, commands, now)
        return actions

    def _heartbeat_body(self, status: str) -> dict[str, Any]:
        ident = self.identity
        return {"status": status, "instance_id": ident["instance_id"], "instance_type": ident["instance_type"],
                "mode": self.mode, "az": ident["az"], "monitored_instances": [ident["instance_id"]]}

    def _refresh_config(self) -> list[str]:
        try:
            config = self.api.config(self.agent_id)
        except ApiError as exc:
            self.log.warning("config refresh failed: %s", exc)
            return []
        self.state.update(config=config, config_version=config.get("config_version"))
        self.log.info("config version %s (enabled=%s)", config.get("config_version"), config.get("enabled", True))
        return ["config"]

    def _task_pricing(self, now: datetime) -> list[str]:
        ident = self.identity
        try:
            pools, ondemand = self.price_source(ident["instance_type"], self.region)
        except Exception as exc:  # noqa: BLE001 - any price source (boto3, a replay) may fail; retry next time
            self.log.warning("price collection failed: %s", exc)
            return ["pricing failed"]
        pools = [{"pool_id": p.get("pool_id") or f"{p['instance_type']}.{p['az']}",
                  "instance_type": p.get("instance_type"), "az": p.get("az"), "price": float(p["price"])}
                 for p in pools]
        if not pools and ondemand is None:
            self.log.warning("no prices for %s in %s", ident["instance_type"], self.region)
            return []
        own = f"{ident['instance_type']}.{ident['az']}"
        current = next((p["price"] for p in pools if p["pool_id"] == own), None) if self.mode == "spot" else None
        cheapest = min(pools, key=lambda p: p["price"]) if pools else None
        body = {
            "instance": {"instance_id": ident["instance_id"], "instance_type": ident["instance_type"],
                         "region": self.region, "az": ident["az"], "mode": self.mode,
                         "pool_id": own if self.mode == "spot" else None},
            "pricing": {"on_demand_price": ondemand, "current_spot_price": current,
                        "cheapest_pool": {"pool_id": cheapest["pool_id"], "price": cheapest["price"]} if cheapest else None,
                        "spot_pools": pools, "collected_at": iso(now)},
        }
        self.api.pricing_report(self.agent_id, body)
        return ["pricing-report"]

    def _task_instance_action(self, now: datetime) -> list[str]:
        notice = self.imds.instance_action()
        if notice is None:
            self.state.set_notice("instance_action_time", None)  # cleared: a new notice is reported again
            self._terminating = False
            return []
        key = str(notice.get("time") or notice)
        self._terminating = True
        if self.state.notice("instance_action_time") == key:
            return []
        body = {"instance_id": self.instance_id, "termination_time": notice.get("time"), "detected_at": iso(now)}
        try:
            reply = self.api.termination_imminent(self.agent_id, {k: v for k, v in body.items() if v})
        except ApiError as exc:
            if exc.retryable:
                raise  # not recorded: the next check (seconds away) reports it again
            self.log.error("termination notice refused by the server: %s", exc)
            reply = {"action": f"refused ({exc.status})"}
        self.state.set_notice("instance_action_time", key)
        self._next["heartbeat"] = now  # fetch prepare_shutdown as soon as the workflow queues it
        self.log.warning("spot %s notice for %s reported: %s", notice.get("action"), notice.get("time"),
                         reply.get("action"))
        return ["termination-imminent"]

    def _task_rebalance(self, now: datetime) -> list[str]:
        notice = self.imds.rebalance()
        if notice is None:
            self.state.set_notice("rebalance_time", None)
            return []
        key = str(notice.get("noticeTime") or notice)
        if self.state.notice("rebalance_time") == key:
            return []
        try:
            reply = self.api.rebalance_recommendation(self.agent_id, {"instance_id": self.instance_id,
                                                                      "detected_at": iso(now)})
        except ApiError as exc:
            if exc.retryable:
                raise
            self.log.error("rebalance recommendation refused by the server: %s", exc)
            reply = {"action": f"refused ({exc.status})"}
        self.state.set_notice("rebalance_time", key)
        self.log.warning("rebalance recommendation (%s) reported: %s", key, reply.get("action"))
        return ["rebalance-recommendation"]

    def _retire_old_instance(self, now: datetime) -> list[str]:
        """After a switch with ``terminate_wait_seconds > 0``: terminate this (old) instance when due.

        A step of the loop rather than a sleeping thread, so it survives a restart (it is in the
        state file) and never blocks the loop.
        """
        retire = self.state["retire_instance"] if self.state else None
        if not retire or now.timestamp() < retire["at_epoch"]:
            return []
        try:
            self.ec2.terminate_instances(InstanceIds=[retire["instance_id"]])
        except Exception as exc:  # noqa: BLE001 - EC2 refused or unreachable: try again in a minute
            self.log.error("terminating the old instance %s failed: %s", retire["instance_id"], exc)
            self.state.update(retire_instance={**retire, "at_epoch": now.timestamp() + 60})
            return ["terminate failed"]
        self.state.update(retire_instance=None,
                          retired={**(self.state["retired"] or {}), "old_terminated_at": iso(now)})
        self.log.warning("old instance %s terminated after the switch", retire["instance_id"])
        return [f"terminated {retire['instance_id']}", *self._report_old_terminated(retire, now)]

    def _report_old_terminated(self, retire: dict, now: datetime) -> list[str]:
        """Send the switch report again with the old instance's termination time, so the server stops
        counting the old instance (it only deactivates it once a termination time is reported)."""
        entry = self.state.finished(retire.get("command_id") or "") if retire.get("command_id") else None
        if not entry or not entry.get("switch_report") or not self.agent_id:
            return []
        body = json.loads(json.dumps(entry["switch_report"]))
        body.setdefault("timing", {})["old_instance_terminated_at"] = iso(now)
        try:
            self.api.switch_report(self.agent_id, body)
        except ApiError as exc:
            self.log.error("reporting the old instance's termination failed: %s", exc)
            return ["termination report failed"]
        return ["termination reported"]

    # ---- daemon ------------------------------------------------------------------------------

    def shutdown(self) -> bool:
        """The final ``offline`` heartbeat (the legacy agent's last call too); skipped once retired."""
        if not self.started or not self.agent_id or self.retired:
            return False
        try:
            self.api.heartbeat(self.agent_id, self._heartbeat_body("offline"))
        except ApiError as exc:
            self.log.warning("offline heartbeat failed: %s", exc)
            return False
        self.log.info("offline heartbeat sent")
        return True

    def run_forever(self, stop_event: threading.Event) -> None:
        """Start (retrying), then sleep until the next due time (with jitter) and run it, until stopped.

        SIGTERM and SIGINT set ``stop_event`` (when called from the main thread); on the way out
        the agent sends its final ``offline`` heartbeat.
        """
        previous = _install_signal_handlers(stop_event)
        try:
            self._start_with_retry(stop_event)
            while not stop_event.is_set():
                try:
                    self.run_due(self.clock())
                except Exception:  # noqa: BLE001 - the daemon outlives one bad cycle
                    self.log.exception("cycle failed")
                delay = (self.next_due() - self.clock()).total_seconds()
                stop_event.wait(min(max(delay, MIN_SLEEP_S), MAX_SLEEP_S))
        finally:
            try:
                self.shutdown()
            finally:
                _restore_signal_handlers(previous)
                self.log.info("stopped")

    def _start_with_retry(self, stop_event: threading.Event) -> None:
        delay = 1.0
        while not self.started and not stop_event.is_set():
            try:
                self.start()
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise FatalError(f"the server refused the client token: {exc}") from exc
                if exc.no_such_route:
                    raise FatalError(f"the server has no route for the agent's registration; check "
                                     f"SPOT_OPTIMIZER_SERVER_URL (the API's stage URL): {exc}") from exc
                self.log.warning("start failed (%s); retrying in %.0fs", exc, delay)
            except ImdsError as exc:
                self.log.warning("instance metadata unavailable (%s); retrying in %.0fs", exc, delay)
            else:
                return
            stop_event.wait(delay)
            delay = min(delay * 2, MAX_SLEEP_S)


def _install_signal_handlers(stop_event: threading.Event) -> dict[int, Any] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, frame: stop_event.set())
    return previous


def _restore_signal_handlers(previous: dict[int, Any] | None) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)
