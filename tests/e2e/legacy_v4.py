"""A model of the legacy v4.0.0 agent, played against the real handlers on a simulated clock.

The model follows the legacy agent's documented protocol (its calls, timers and switch steps), not its
code: threads on fixed timers, every call with the client token in the Authorization header, any non-2xx
answer read as "no answer". Each thread is a generator that yields the
seconds it sleeps; ``Sim`` runs them in simulated time order and moves the one clock every handler reads
(``chalicelib.clock.now``) to each step's time. Nothing waits in real time except the caller's own
``wait_for`` on a Step Functions execution.

IMDS signals are the test's to raise: ``termination_notice`` (spot/instance-action, checked every 5 s, handled
once: create-emergency-replica, then termination-imminent; the agent stops on success) and
``rebalance_notice`` (events/recommendations/rebalance, checked every 30 s: create-emergency-replica, then
rebalance-recommendation, answers only logged; reported again after the signal clears and comes back).
The last v4.0.0 also polls ``replicas?status=terminated`` and terminates the instance of any row marked
``is_active`` (``replicas_terminated``; the product never marks one).

What the model does not do (the v4 agent does it against IMDS/EC2 only, never the server): mode
detection, snapshots/AMIs.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import boto3

from tests.conftest import Caller, new_instance_id

VERSION = "4.0.0"

# v4's timers (s)
HEARTBEAT_S, COMMANDS_S, CONFIG_S, PRICING_S = 30, 15, 60, 300
TERMINATION_CHECK_S, REPLICA_POLL_S, CLEANUP_S, CLEANUP_FIRST_S = 5, 30, 3600, 60
REBALANCE_CHECK_S = 30

# Switch execution, worst case of v4's waiter for running (10 s × 30).
RUN_INSTANCES_S = 1
RUNNING_WAIT_S = 290
TRAFFIC_SWITCH_S = 2
SHUTDOWN_S = 10  # from TerminateInstances on its own host to the process's end (SIGTERM, threads joined)
TERMINATED_WAIT_S = 290  # the waiter for terminated (15 s × 20); v4 never returns from it (tests/e2e/legacy_v3.py)
BOOT_S = 90  # a replacement's agent starts this long after RunInstances
REPLICA_RUNNING_WAIT_S = 60

Thread = Iterator[float]


def iso(value: datetime) -> str:
    """IMDS's form (``spot/instance-action`` ``time``)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def v4_time(value: datetime) -> str:
    """v4's own timestamps: ``datetime.now(timezone.utc).isoformat()``, microseconds and ``+00:00``."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


class Sim:
    """Discrete-event time: generators yield their sleep in seconds and run at their simulated time."""

    def __init__(self, start: datetime) -> None:
        self.start = self.now = start.replace(microsecond=0)
        self._queue: list[tuple[datetime, int, Thread]] = []
        self._seq = itertools.count()

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    @property
    def elapsed(self) -> float:
        return (self.now - self.start).total_seconds()

    def spawn(self, thread: Thread, at: float | None = None) -> None:
        """Start ``thread`` at ``at`` seconds from the start (default: now)."""
        when = self.now if at is None else self.at(at)
        heapq.heappush(self._queue, (max(when, self.now), next(self._seq), thread))

    def every(self, period: float, action: Callable[[], Any], first: float) -> None:
        """Run ``action`` at ``first`` seconds, then every ``period`` seconds."""

        def loop() -> Thread:
            while True:
                action()
                yield period

        self.spawn(loop(), at=first)

    def run_until(self, seconds: float) -> None:
        """Run every step due up to ``seconds`` from the start; the clock ends there."""
        end = self.at(seconds)
        while self._queue and self._queue[0][0] <= end:
            when, _, thread = heapq.heappop(self._queue)
            self.now = when
            try:
                delay = next(thread)
            except StopIteration:
                continue
            heapq.heappush(self._queue, (when + timedelta(seconds=delay), next(self._seq), thread))
        self.now = end


@dataclass(frozen=True)
class Host:
    """An EC2 instance as its agent reads it from IMDS."""

    instance_id: str
    instance_type: str
    region: str
    az: str
    ami_id: str = "ami-12345678"
    mode: str = "spot"
    private_ip: str = "10.0.0.10"
    public_ip: str | None = "203.0.113.10"

    @property
    def pool_id(self) -> str | None:
        return f"{self.instance_type}.{self.az}" if self.mode == "spot" else None


@dataclass
class Market:
    """What v4 reads from the Pricing API and DescribeSpotPriceHistory; ``switch_quotes`` overrides the
    prices it collects at the end of a switch (the embedded AWS answering with a glitched point)."""

    on_demand: float
    spot: dict[str, float]  # az -> price
    switch_quotes: dict[str, float] = field(default_factory=dict)


class FakeEc2:
    """The agent's own EC2 calls when the server never sees them (an agent-executed switch)."""

    def __init__(self) -> None:
        self.launched: list[Host] = []
        self.terminated: list[str] = []

    def run_instances(self, like: Host, *, az: str, mode: str, tags: dict[str, str]) -> Host:
        host = replace(like, instance_id=new_instance_id(), az=az, mode=mode,
                       private_ip=f"10.0.{len(self.launched) + 1}.10", public_ip=None)
        self.launched.append(host)
        return host

    def terminate(self, host: Host) -> None:
        self.terminated.append(host.instance_id)


class MotoEc2:
    """The agent's own EC2 calls against the embedded AWS (what the server later describes)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.client = boto3.client("ec2", region_name=region)
        self.launched: list[Host] = []
        self.terminated: list[str] = []

    def describe(self, instance_id: str) -> dict:
        return self.client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    def host(self, instance_id: str) -> Host:
        raw = self.describe(instance_id)
        return Host(instance_id=instance_id, instance_type=raw["InstanceType"], region=self.region,
                    az=raw["Placement"]["AvailabilityZone"], ami_id=raw["ImageId"],
                    mode="spot" if raw.get("InstanceLifecycle") == "spot" else "ondemand",
                    private_ip=raw.get("PrivateIpAddress") or "10.0.0.10", public_ip=raw.get("PublicIpAddress"))

    def run_instances(self, like: Host, *, az: str, mode: str, tags: dict[str, str]) -> Host:
        """Same AMI, type, security groups and key as ``like`` (v4 reads them with DescribeInstances)."""
        source = self.describe(like.instance_id)
        params: dict[str, Any] = {
            "ImageId": source["ImageId"], "InstanceType": source["InstanceType"], "MinCount": 1, "MaxCount": 1,
            "Placement": {"AvailabilityZone": az},
            "TagSpecifications": [{"ResourceType": "instance",
                                   "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]}
        if groups := [g["GroupId"] for g in source.get("SecurityGroups", [])]:
            params["SecurityGroupIds"] = groups
        if source.get("KeyName"):
            params["KeyName"] = source["KeyName"]
        if mode == "spot":
            params["InstanceMarketOptions"] = {"MarketType": "spot",
                                               "SpotOptions": {"SpotInstanceType": "one-time"}}
        instance_id = self.client.run_instances(**params)["Instances"][0]["InstanceId"]
        host = self.host(instance_id)
        self.launched.append(host)
        return host

    def terminate(self, host: Host) -> None:
        self.client.terminate_instances(InstanceIds=[host.instance_id])
        self.terminated.append(host.instance_id)


@dataclass
class Call:
    """One HTTP call a v4 agent made, with the answer it got."""

    at: float
    agent: str
    instance_id: str
    method: str
    path: str
    body: Any
    status: int
    answer: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Fleet:
    """Everything the v4 agents of one test share: the clock, the server, EC2, prices and the record."""

    sim: Sim
    http: Any
    token: str
    ec2: FakeEc2 | MotoEc2
    market: Market
    calls: list[Call] = field(default_factory=list)
    agents: list[V4Agent] = field(default_factory=list)
    kind: type[V4Agent] | None = None  # the agent version the fleet runs (default v4; tests/e2e/legacy_v3.py)
    # A harness whose terminate does not end the agent's process (its "host" is not the EC2 instance the fake
    # EC2 terminates, e.g. an agent in a container): a switch's agent then waits for ``terminated``, reports,
    # posts its result, and stops. On a real host it dies with the instance before reporting (the default).
    processes_outlive_hosts: bool = False
    # ``LOGICAL_AGENT_ID`` unset on every host (the installer's default): each v4 agent's logical id is its own
    # instance id, the replacement's included (``V4Agent.replacement_logical_id``).
    logical_from_instance: bool = False

    def start_agent(self, host: Host, logical_agent_id: str, *, at: float | None = None) -> V4Agent:
        """An agent process of the fleet's kind on ``host`` (started now, or ``at`` seconds from the start);
        a switch's replacement runs the same kind."""
        kind = self.kind or V4Agent
        agent = kind(self, host, logical_agent_id, name=f"{kind.LABEL}#{len(self.agents) + 1}@{host.instance_id}")
        self.agents.append(agent)

        def boot() -> Thread:
            agent.start()
            return
            yield  # a generator: started by the simulation at its time

        self.sim.spawn(boot(), at=at)
        return agent

    def failed_calls(self) -> list[Call]:
        return [c for c in self.calls if not c.ok]


class V4Agent:
    """One v4 agent process: register, then the timer threads; a command executes on its own thread."""

    LABEL = "v4"
    # The 4.0.0 builds between the early ones (tests/e2e/legacy_v4_early.py) and the last (agent-v2 419466f and
    # d05c426, final-ml 5837b84) make the same calls but launch an instance for every row ``replicas?status=launching``
    # offers, on every poll (``SKIPS_LAUNCHED_REPLICAS`` False), and have no ``replicas?status=terminated`` poll
    # (``POLLS_TERMINATED_REPLICAS`` False; final-ml 4223bf3 already skips, still without that poll): ``mid_v4_kind``.
    SKIPS_LAUNCHED_REPLICAS = True
    POLLS_TERMINATED_REPLICAS = True
    ENABLED_FROM_REGISTRATION = False  # the last v4 reads ``enabled`` from its config calls only

    def __init__(self, fleet: Fleet, host: Host, logical_agent_id: str, *, name: str) -> None:
        self.fleet, self.host, self.logical_agent_id, self.name = fleet, host, logical_agent_id, name
        self.caller = Caller(fleet.http, token=fleet.token)
        self.agent_id: str | None = None
        self.registration: Call | None = None
        self.running = False
        self.killed = False
        self.stopped_at: float | None = None
        self.enabled = True
        self.termination_notice: datetime | None = None  # IMDS spot/instance-action
        self.termination_handled = False
        self.rebalance_notice: datetime | None = None  # IMDS events/recommendations/rebalance (noticeTime)
        self.rebalance_reported = False
        self.rebalance_reports: list[tuple[Call, Call]] = []  # (create-emergency-replica, rebalance-recommendation)
        self.polls: list[tuple[float, list[str]]] = []  # pending-commands answers: (t, command ids)
        self.executed: list[dict] = []  # commands this agent started executing
        self.skipped: list[dict] = []  # commands it ignored (no target_mode, unknown type)
        self.switches: list[dict] = []  # {"command", "new_host", "report", "executed"}
        self.replicas_launched: list[tuple[str, Host]] = []
        self.replicas_terminated: list[tuple[str, str]] = []  # (replica id, instance id) its poll terminated

    # --- transport ------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> Call:
        status, answer = self.caller.call(method, path, body)
        call = Call(self.fleet.sim.elapsed, self.name, self.host.instance_id, method, path, body, status,
                    answer)
        self.fleet.calls.append(call)
        return call

    def answer(self, method: str, path: str, body: Any = None) -> Any:
        """v4 reads any non-2xx answer as None."""
        call = self.call(method, path, body)
        return call.answer if call.ok else None

    @property
    def base(self) -> str:
        return f"/api/agents/{self.agent_id}"

    # --- life -------------------------------------------------------------------------------------

    def registration_body(self) -> dict:
        h = self.host
        return {"client_token": self.fleet.token, "hostname": f"ip-{h.private_ip.replace('.', '-')}",
                "instance_id": h.instance_id, "instance_type": h.instance_type, "region": h.region, "az": h.az,
                "ami_id": h.ami_id, "agent_version": VERSION, "logical_agent_id": self.logical_agent_id,
                "mode": h.mode, "private_ip": h.private_ip, "public_ip": h.public_ip}

    def threads(self) -> list[tuple[Thread, float]]:
        """The threads the process starts after registering, each with its first run's delay (seconds)."""
        threads = [(self._heartbeats(), 0), (self._commands(), 0), (self._config(), 0), (self._pricing(), 0),
                   (self._termination_check(), 0), (self._rebalance_check(), 0), (self._replica_poll(), 0),
                   (self._cleanup(), CLEANUP_FIRST_S)]
        if self.POLLS_TERMINATED_REPLICAS:
            threads.append((self._replica_termination_poll(), 0))
        return threads

    def start(self) -> None:
        """Register (#1); the process exits if that fails; else the threads start."""
        self.registration = self.call("POST", "/api/agents/register", self.registration_body())
        if not self.registration.ok:
            self.stopped_at = self.fleet.sim.elapsed
            return
        self.agent_id = self.registration.answer["agent_id"]
        if self.ENABLED_FROM_REGISTRATION:
            self.enabled = bool((self.registration.answer.get("config") or {}).get("enabled", True))
        self.running = True
        sim = self.fleet.sim
        for thread, first in self.threads():
            sim.spawn(thread, at=sim.elapsed + first)

    def kill(self) -> None:
        """The process dies at once (a crash, SIGKILL, the host rebooting): no final heartbeat, and a switch it was
        running ends where it is (its launched instance runs on); systemd may start a new process on the same host
        (``Fleet.start_agent``), which registers again and knows nothing of it."""
        self.running, self.killed = False, True
        self.stopped_at = self.fleet.sim.elapsed

    def stop(self) -> None:
        """The agent stops itself: threads end, then the final heartbeat says offline (#2), bare: v4's
        shutdown sends ``send_heartbeat(agent_id, 'offline', [])`` without the instance fields."""
        if not self.running:
            return
        self.running = False
        self.stopped_at = self.fleet.sim.elapsed
        self.answer("POST", f"{self.base}/heartbeat", {"status": "offline", "monitored_instances": []})

    # --- threads ----------------------------------------------------------------------------------

    def heartbeat(self, status: str) -> Any:
        h = self.host
        return self.answer("POST", f"{self.base}/heartbeat", {
            "status": status, "instance_id": h.instance_id, "instance_type": h.instance_type,
            "mode": h.mode, "az": h.az, "monitored_instances": [h.instance_id]})

    def _heartbeats(self) -> Thread:
        while self.running:
            self.heartbeat("online" if self.enabled else "disabled")  # commands in the answer are ignored
            yield HEARTBEAT_S

    def _config(self) -> Thread:
        while self.running:
            config = self.answer("GET", f"{self.base}/config")
            if config is not None:
                self.enabled = bool(config.get("enabled", True))
            yield CONFIG_S

    def pricing_body(self) -> dict:
        h, market = self.host, self.fleet.market
        pools = [{"pool_id": f"{h.instance_type}.{az}", "instance_type": h.instance_type, "az": az,
                  "price": price} for az, price in sorted(market.spot.items())]
        # v4 names its pool, its spot price and the cheapest pool only on spot (null on on-demand)
        spot = h.mode == "spot" and bool(pools)
        cheapest = min(pools, key=lambda p: p["price"]) if spot else None
        return {"instance": {"instance_id": h.instance_id, "instance_type": h.instance_type, "region": h.region,
                             "az": h.az, "mode": h.mode, "pool_id": h.pool_id},
                "pricing": {"on_demand_price": market.on_demand,
                            "current_spot_price": market.spot.get(h.az) if spot else None,
                            "cheapest_pool": {"pool_id": cheapest["pool_id"], "price": cheapest["price"]}
                            if cheapest else None,
                            "spot_pools": pools, "collected_at": self.stamp()}}

    def _pricing(self) -> Thread:
        while self.running:
            self.answer("POST", f"{self.base}/pricing-report", self.pricing_body())
            yield PRICING_S

    def stamp(self, at: datetime | None = None) -> str:
        """A timestamp as this agent writes it in a body (``at`` defaults to now)."""
        return v4_time(at or self.fleet.sim.now)

    def _cleanup(self) -> Thread:
        while self.running:
            now = self.fleet.sim.now
            self.answer("POST", f"{self.base}/cleanup-report", {
                "timestamp": self.stamp(now),
                "snapshots": {"type": "snapshots", "deleted": [], "failed": [],
                              "cutoff_date": self.stamp(now - timedelta(days=7))},
                "amis": {"type": "amis", "deleted_amis": [], "deleted_snapshots": [], "failed": [],
                         "cutoff_date": self.stamp(now - timedelta(days=30))}})
            yield CLEANUP_S

    def _commands(self) -> Thread:
        """Every 15 s when enabled: execute the first command it can run (the thread blocks meanwhile); v4
        passes over a command without ``id`` or (a switch) without ``target_mode``."""
        while self.running:
            if self.enabled:
                answer = self.answer("GET", f"{self.base}/pending-commands")
                commands = answer if isinstance(answer, list) else (answer or {}).get("commands", [])
                self.polls.append((self.fleet.sim.elapsed, [c.get("id") for c in commands]))
                for command in commands:
                    kind = command.get("command_type", "switch")
                    if command.get("id") and self._runs_other(command):
                        self.executed.append(command)
                        break
                    if not command.get("id") or kind == "create_replica" or not command.get("target_mode"):
                        self.skipped.append(command)  # create_replica: the product never sends it (not modelled)
                        continue
                    self.executed.append(command)
                    for delay in self._switch(command):
                        yield delay
                        if self.killed:
                            return  # the process died mid-switch (``kill``)
                    break
            if self.running:
                yield COMMANDS_S

    def replacement_logical_id(self, new: Host) -> str:
        """The ``LOGICAL_AGENT_ID`` the replacement's agent registers with: the env's, which the launch AMI carries;
        left unset (the installer's default: "press Enter to use instance ID") v4 takes its own instance id, so
        the replacement's agent names the new instance (``Fleet.logical_from_instance``)."""
        return new.instance_id if self.fleet.logical_from_instance else self.logical_agent_id

    def _runs_other(self, command: dict) -> bool:
        """A command other than a switch this variant runs itself (True: run, the poll's turn ends); v4 runs none."""
        return False

    def _switch(self, command: dict) -> Thread:
        """Launch, wait running, 2 s traffic switch; then either (wait 0) report and result, the old instance
        kept, or (wait > 0) sleep the wait and terminate the old instance, which is its own host: it stops
        there, before its report (the code's order is wait, terminate, wait for ``terminated``, report, result,
        but the process dies with its host)."""
        sim, old = self.fleet.sim, self.host
        mode = command["target_mode"]
        pool = command.get("target_pool_id")
        az = pool.rsplit(".", 1)[1] if mode == "spot" and pool else old.az
        wait = command.get("terminate_wait_seconds") or 0  # v4 compares it with 0 as sent
        record: dict[str, Any] = {"command": command}
        self.switches.append(record)
        initiated = sim.now
        yield RUN_INSTANCES_S
        new = self.fleet.ec2.run_instances(old, az=az, mode=mode, tags={
            "Name": f"SpotOptimizer-{mode}", "ManagedBy": "SpotOptimizer",
            "LogicalAgentId": self.logical_agent_id})
        record["new_host"] = new
        launched = sim.now
        self.fleet.start_agent(new, self.replacement_logical_id(new), at=sim.elapsed + BOOT_S)
        yield RUNNING_WAIT_S
        ready = sim.now
        yield TRAFFIC_SWITCH_S
        traffic = sim.now
        terminated = None
        if wait > 0:
            yield wait
            self.fleet.ec2.terminate(old)
            if not self.fleet.processes_outlive_hosts:
                # Its own host: EC2 shuts the OS down, so the waiter for ``terminated`` (and the switch report
                # and the result after it) is never reached. SIGTERM ends the process: the threads are joined
                # (5 s each, the command thread's in vain), then the bare final heartbeat says offline.
                yield SHUTDOWN_S
                self.stop()
                return
            yield TERMINATED_WAIT_S
            terminated = sim.now
        market = self.fleet.market
        # v4 adds old_spot only when it ran on spot, new_spot only for a spot target
        quotes: dict[str, Any] = {"on_demand": market.on_demand}
        if old.mode == "spot":
            quotes["old_spot"] = market.spot.get(old.az)
        if mode == "spot":
            quotes["new_spot"] = market.spot.get(new.az)
        quotes |= market.switch_quotes
        timing = {"switch_initiated_at": v4_time(initiated), "new_instance_launched_at": v4_time(launched),
                  "new_instance_ready_at": v4_time(ready), "traffic_switched_at": v4_time(traffic)}
        if terminated is not None:
            timing["old_instance_terminated_at"] = v4_time(terminated)
        record["report"] = self.call("POST", f"{self.base}/switch-report", {
            "old_instance": {"instance_id": old.instance_id, "instance_type": old.instance_type,
                             "region": old.region, "az": old.az, "ami_id": old.ami_id, "mode": old.mode,
                             "pool_id": old.pool_id},
            "new_instance": {"instance_id": new.instance_id, "instance_type": new.instance_type,
                             "region": new.region, "az": new.az, "ami_id": new.ami_id, "mode": new.mode,
                             "pool_id": new.pool_id},
            "snapshot": {"used": False}, "prices": quotes, "timing": timing,
            "trigger": "manual" if command.get("priority", 0) >= 50 else "model"})
        record["executed"] = self.call("POST", f"{self.base}/commands/{command['id']}/executed",
                                       {"success": True, "message": "Switch completed"})
        if terminated is not None:
            self.stop()  # the process outlived the host it was told it ran on: it ends here

    def _termination_check(self) -> Thread:
        """IMDS spot/instance-action every 5 s (spot only), handled once: #8, then #9; stop on success."""
        while self.running:
            if self.host.mode == "spot" and self.termination_notice and not self.termination_handled:
                self.termination_handled = True
                h, when = self.host, iso(self.termination_notice)
                self.answer("POST", f"{self.base}/create-emergency-replica",
                            {"signal_type": "termination-notice", "instance_id": h.instance_id,
                             "termination_time": when})
                result = self.answer("POST", f"{self.base}/termination-imminent",
                                     {"instance_id": h.instance_id, "termination_time": when,
                                      "detected_at": v4_time(self.fleet.sim.now)})
                if result and result.get("success"):
                    self.stop()
                    return
            yield TERMINATION_CHECK_S

    def _rebalance_check(self) -> Thread:
        """IMDS events/recommendations/rebalance every 30 s (spot only): a signal not yet reported is reported
        with create-emergency-replica, then rebalance-recommendation (v4 only logs either answer; it acts on
        neither). The flag resets when the signal clears, so a signal that comes back is reported again."""
        while self.running:
            if self.host.mode == "spot":
                if self.rebalance_notice is None:
                    self.rebalance_reported = False
                elif not self.rebalance_reported:
                    self.rebalance_reported = True
                    h = self.host
                    emergency = self.call("POST", f"{self.base}/create-emergency-replica",
                                          {"signal_type": "rebalance-recommendation", "instance_id": h.instance_id})
                    recommendation = self.call("POST", f"{self.base}/rebalance-recommendation",
                                               {"instance_id": h.instance_id, "detected_at": v4_time(self.fleet.sim.now)})
                    self.rebalance_reports.append((emergency, recommendation))
            yield REBALANCE_CHECK_S

    def _replica_poll(self) -> Thread:
        """Every 30 s: launch an instance for each launching replica, PUT it syncing, wait, then ready.

        v4 skips a replica it already launched in this process, and one whose ``instance_id`` is set and does
        not start with ``manual-`` (the legacy server's placeholder): it reads that as already launched."""
        launched: set[str] = set()
        while self.running:
            answer = self.answer("GET", f"{self.base}/replicas?status=launching")
            replicas = answer if isinstance(answer, list) else (answer or {}).get("replicas", [])
            for replica in replicas:
                if not (replica.get("id") and replica.get("pool_id") and replica.get("az")):
                    continue
                placed = replica.get("instance_id")
                if self.SKIPS_LAUNCHED_REPLICAS and (replica["id"] in launched
                                                     or (placed and not placed.startswith("manual-"))):
                    continue
                launched.add(replica["id"])
                path = f"{self.base}/replicas/{replica['id']}"
                try:
                    host = self.fleet.ec2.run_instances(self.host, az=replica["az"], mode="spot", tags={
                        "ReplicaId": replica["id"], "ParentInstance": self.host.instance_id,
                        "Name": f"replica-{replica['id'][:8]}"})
                except Exception as exc:  # noqa: BLE001 - v4 reports any launch error as failed
                    self.answer("POST", f"{path}/status", {"status": "failed", "error_message": str(exc)})
                    continue
                self.replicas_launched.append((replica["id"], host))
                self.answer("PUT", path, {"instance_id": host.instance_id, "status": "syncing"})
                yield REPLICA_RUNNING_WAIT_S
                self.answer("POST", f"{path}/status", {"status": "ready",
                                                       "sync_completed_at": v4_time(self.fleet.sim.now)})
            yield REPLICA_POLL_S


    def _replica_termination_poll(self) -> Thread:
        """Every 30 s (the ReplicaTermination thread of the last v4.0.0): each row of ``?status=terminated`` with
        ``id``, ``instance_id`` and a truthy ``is_active`` (not a ``manual-``/``replica-`` placeholder) has its
        instance terminated, once per process, then is posted ``terminated``."""
        done: set[str] = set()
        while self.running:
            answer = self.answer("GET", f"{self.base}/replicas?status=terminated")
            replicas = answer if isinstance(answer, list) else (answer or {}).get("replicas", [])
            for replica in replicas:
                rid, placed = replica.get("id"), replica.get("instance_id")
                if not (rid and placed) or rid in done or not self._terminates_listed(replica):
                    continue
                done.add(rid)
                if placed.startswith(("manual-", "replica-")):
                    continue
                self._terminate_listed(rid, placed)
                self.answer("POST", f"{self.base}/replicas/{rid}/status", {
                    "status": "terminated", "is_active": False, "terminated_at": v4_time(self.fleet.sim.now)})
            yield REPLICA_POLL_S

    def _terminates_listed(self, replica: dict) -> bool:
        """Whether a ``?status=terminated`` row is one to act on: v4 only a truthy ``is_active``."""
        return bool(replica.get("is_active", False))

    def _terminate_listed(self, rid: str, placed: str) -> None:
        """What it does with a listed row's instance: v4 notes it (its EC2 call is not modelled)."""
        self.replicas_terminated.append((rid, placed))


def mid_v4_kind() -> type[V4Agent]:
    """The 4.0.0 builds that launch every offered replica on every poll and never poll terminated ones
    (``V4Agent.SKIPS_LAUNCHED_REPLICAS``), for ``Fleet(kind=...)``."""
    return type("V4Agent", (V4Agent,), {"SKIPS_LAUNCHED_REPLICAS": False, "POLLS_TERMINATED_REPLICAS": False,
                                        "LABEL": "v4m"})


def unique_type() -> str:
    """An instance type no other test uses, so its pools are the test's own."""
    return f"m5.t{uuid.uuid4().hex[:8]}xl"


# The replays' us-east-1 market: its spot prices ($/h of their instance type).
US = "us-east-1"
US_PRICES = {"us-east-1a": 0.030, "us-east-1b": 0.034, "us-east-1c": 0.041, "us-east-1d": 0.047}


def schedule(sim: Sim, api, name: str, *, first: float, period: float = 60) -> None:
    """An ``@app.schedule`` job on its EventBridge rate, at the simulated time."""
    from tests.conftest import invoke_schedule

    sim.every(period, lambda: invoke_schedule(api, name, now=sim.now), first=first)


def v4_on_us_spot(api, make_tenant, sim: Sim, *, kind: type[V4Agent] | None = None):
    """A v4 agent (or ``kind``: tests/e2e/legacy_v3.py) on a real spot instance in us-east-1a, registered by t=20
    with the health monitor and the replica coordinator on their rates. Returns (client_id, caller, fleet, agent,
    primary instance id, instance type)."""
    import uuid

    from tests.e2e.failover_support import launch_primary

    client_id, caller = make_tenant()
    itype = unique_type()
    ec2 = MotoEc2(US)
    fleet = Fleet(sim, api.http, caller.token, ec2, Market(on_demand=0.192, spot=dict(US_PRICES)), kind=kind)
    primary = launch_primary(itype, "us-east-1a")
    v4 = fleet.start_agent(ec2.host(primary), f"web-{uuid.uuid4().hex[:8]}")
    schedule(sim, api, "health-monitor", first=7)
    schedule(sim, api, "replica-coordinator", first=37)
    sim.run_until(20)
    assert v4.registration.status == 200, v4.registration.answer
    return client_id, caller, fleet, v4, primary, itype


def failover_by_eventbridge(api, sim: Sim, client_id: str, agent_id: str, primary: str) -> tuple[dict, str]:
    """EventBridge's two-minute warning for ``primary``, delivered to the sentinel now; the failover it starts is
    run to success. Returns (the sentinel's answer, the replacement: the agent's instance afterwards)."""
    from chalicelib.tables import AgentTable
    from tests.e2e.failover_support import deliver, wait_for, warning

    event = warning(primary)
    event["time"] = sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    started = deliver(api, "sentinel-interruption", event)
    assert started["action"] == "failover_started", started
    assert wait_for(started["execution_arn"])["status"] == "SUCCEEDED"
    replacement = AgentTable.get(client_id, agent_id, consistent_read=True).instance_id
    assert replacement != primary
    return started, replacement

