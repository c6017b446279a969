"""Load and mass interruption in local mode: many simulated agents, then a zone draining under them.

    python -m bench.load [--agents 500] [--minutes 10] [--interruptions 50] [--json build/load.json]

Starts local mode (``localmode.server.LocalStack``: the embedded AWS and ``chalice local`` on free
loopback ports, the scheduled jobs running on their schedules) and drives ``--agents`` simulated agents
against it for ``--minutes`` of wall time, which here is also product time (the clock is not pinned;
``SPOT_LOCAL_CLOCK_SPEED``, 1 by default, only shortens the failover's Wait states). Each simulated agent
makes the requests the real agent makes, through the real agent's HTTP client
(``spot_agent.api.ApiClient``): register (v5 agents with a signed identity document from local mode's
signer, so they hold their own credential; v4 agents with the client token in legacy-mode clients),
a heartbeat every 30 s (commands in its answer are acknowledged), a pricing report of its type's pools
in its region every 5 min, and for v4 agents the pending-commands poll every 15 s. Agents start spread
over one heartbeat period. ``--concurrency`` threads send everything (bounded; one fresh connection per
request, chalice local serves one request at a time); a request that starts late says so in ``lag``.

At ``--interrupt-at`` minutes, the instances of ``--interruptions`` agents in one AZ get AWS's
two-minute warning in the same second: one PutEvents call to local mode's EventBridge
(``POST /_local/eventbridge``), so the events take whatever path local mode gives them to the sentinel,
and the failover state machine runs for real in the embedded AWS. The v5 agents among them also report
``termination-imminent`` five seconds later, as their IMDS check would (a duplicate the sentinel must
recognise). Local mode runs its Lambda invocations one at a time (``localmode/invoke.py``); the bench
sets ``SPOT_LOCAL_PARALLEL_LAMBDAS=1`` so that the sentinel's and the state machine's invocations run
side by side, as Lambda runs them (``--serial-lambdas`` keeps local mode's default). When an interruption is resolved the agent is started on the replacement (it registers
there, as the AMI's unit would) and the old instance's agent stops at the deadline.

Afterwards the bench reads the tables, Step Functions and EC2 of the embedded AWS and checks: every
registration, every accepted pricing report (the agent's ``last_pricing_at``, and its raw rows: one per agent-hour
plus each that stored agent prices) and every agent's last heartbeat are recorded; no 5xx and no failed request; every warning has one interruption event,
one execution, one outcome, resolved (``traffic_moved_at``) within 120 s of product time, and exactly
one replacement (one replica row, one live product-launched EC2 instance, the agent's instance). It first
gives the executions up to ``EXECUTIONS_SETTLE_S`` to finish (a resolved failover still waits for the old
instance's deadline), and reports the outcomes and the task errors in the executions' histories (timeouts
retried, fallbacks caught). The exit status is non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent"))  # this checkout's agent package

REGION = "us-east-1"
ZONES = tuple(f"{REGION}{z}" for z in "abcdef")  # the zones moto lists for the region
TYPES = ("m5.large", "c5.large", "r5.large", "m5.xlarge")
# The cadences driven: a stress above the v5 agent's defaults (120 s heartbeat, hourly prices since issue #14):
# its pre-#14 defaults, 4× the heartbeats and 12× the reports, as the results in docs/benchmarks.md were run.
HEARTBEAT_S, PRICING_S, POLL_S = 30.0, 300.0, 15.0  # v4 agents poll every 15 s
NOTICE_S = 5.0  # the v5 agent's IMDS check for a termination notice
WARNING_WINDOW_S = 120.0
ONDEMAND = {"m5.large": 0.096, "c5.large": 0.085, "r5.large": 0.126, "m5.xlarge": 0.192}
SETTLE_CAP_S = 300.0  # after the load: at most this long for failovers still running
EXECUTIONS_SETTLE_S = 240.0  # then at most this long for their executions to finish (retiring the old instance)


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---- recording ----------------------------------------------------------------------------------

class Recorder:
    """Every request: route template, status (None: no answer), latency, how late it started."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[tuple[str, int | None, float]] = []
        self.lags: list[float] = []
        self.errors: list[str] = []

    def add(self, route: str, status: int | None, seconds: float, error: str | None = None) -> None:
        with self.lock:
            self.rows.append((route, status, seconds))
            if error or status is None or status >= 400:
                self.errors.append(f"{route} → {status}: {(error or '')[:300]}")

    def lag(self, seconds: float) -> None:
        with self.lock:
            self.lags.append(seconds)

    def table(self) -> list[dict]:
        by_route: dict[str, list] = defaultdict(list)
        for route, status, seconds in self.rows:
            by_route[route].append((status, seconds))
        out = []
        for route in sorted(by_route):
            rows = by_route[route]
            ms = [s * 1000 for _, s in rows]
            statuses = Counter("none" if st is None else f"{st // 100}xx" for st, _ in rows)
            out.append({"route": route, "requests": len(rows), "2xx": statuses.get("2xx", 0),
                        "4xx": statuses.get("4xx", 0), "5xx": statuses.get("5xx", 0),
                        "no_answer": statuses.get("none", 0), "p50_ms": round(percentile(ms, 50), 1),
                        "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1)})
        return out


class RecordingSession:
    """A ``requests`` session for the real agent's ApiClient that records every attempt it makes."""

    def __init__(self, recorder: Recorder, route: str):
        import requests

        self.recorder, self.route = recorder, route
        self._session = requests.Session()
        self._session.headers["Connection"] = "close"  # chalice local is slow on keep-alive

    def request(self, method, url, **kwargs):
        started = time.perf_counter()
        try:
            response = self._session.request(method, url, **kwargs)
        except Exception as exc:
            self.recorder.add(self.route, None, time.perf_counter() - started, repr(exc))
            raise
        self.recorder.add(self.route, response.status_code, time.perf_counter() - started,
                          response.text if response.status_code >= 400 else None)
        return response


# ---- simulated agents ---------------------------------------------------------------------------

@dataclass
class SimAgent:
    """One agent process on one instance (a moved logical agent gets a new SimAgent)."""

    logical_id: str
    client: "Tenant"
    instance_id: str
    instance_type: str
    az: str
    image_id: str
    legacy: bool
    agent_id: str | None = None
    credential: str | None = None
    stopped: bool = False
    stop_at: float | None = None  # monotonic: the instance is gone (AWS terminated it)
    warned_at: datetime | None = None
    reported_notice: bool = False
    notice_done: bool = False  # the IMDS notice was reported (or its report failed): the agent may move on
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_heartbeat_time: str | None = None  # server_time of the last accepted heartbeat
    pricing_ok: int = 0
    acked: set = field(default_factory=set)
    config_version: object = None

    @property
    def version(self) -> str:
        if self.legacy:
            return "4.0.0"
        from spot_agent import __version__

        return __version__


@dataclass
class Tenant:
    client_id: str
    token: str
    legacy: bool
    agents: list[str] = field(default_factory=list)  # logical ids


class Fleet:
    """The simulated agents and the one scheduler that sends their requests (bounded concurrency)."""

    def __init__(self, api_url: str, recorder: Recorder, concurrency: int, rng: random.Random):
        self.api_url, self.recorder, self.rng = api_url, recorder, rng
        self.current: dict[str, SimAgent] = {}  # logical id → the agent on its current instance
        self.all: list[SimAgent] = []
        self.queue: list[tuple[float, int, str, SimAgent]] = []
        self.cond = threading.Condition()
        self.seq = 0
        self.commands: Counter = Counter()  # command type → acknowledged
        self.stopping = False
        self.workers = [threading.Thread(target=self._work, name=f"load-{n}", daemon=True) for n in range(concurrency)]

    # scheduling
    def schedule(self, due: float, task: str, agent: SimAgent) -> None:
        with self.cond:
            self.seq += 1
            heapq.heappush(self.queue, (due, self.seq, task, agent))
            self.cond.notify()

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for worker in self.workers:
            worker.join(timeout=120)

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and (not self.queue or self.queue[0][0] > time.monotonic()):
                    self.cond.wait(None if not self.queue else max(0.0, self.queue[0][0] - time.monotonic()))
                if self.stopping:
                    return
                due, _, task, agent = heapq.heappop(self.queue)
            self.recorder.lag(time.monotonic() - due)
            with agent.lock:
                if agent.stopped or (agent.stop_at is not None and time.monotonic() >= agent.stop_at):
                    agent.stopped = True
                    continue
                try:
                    period = getattr(self, f"_task_{task}")(agent)
                except Exception as exc:  # noqa: BLE001 - recorded; the agent tries again next period
                    self.recorder.errors.append(f"{task} of {agent.logical_id}: {exc!r}"[:400])
                    period = {"heartbeat": HEARTBEAT_S, "pricing": PRICING_S, "poll": POLL_S}.get(task)
            if period:
                self.schedule(due + period, task, agent)

    # the agent's requests
    def api(self, agent: SimAgent, route: str):
        from spot_agent.api import ApiClient

        client = ApiClient(self.api_url, agent.client.token, session=RecordingSession(self.recorder, route),
                           timeout=60.0)
        client.credential = agent.credential
        return client

    def register(self, agent: SimAgent) -> None:
        from localmode.identity_signer import signed_identity

        body = {"instance_id": agent.instance_id, "instance_type": agent.instance_type, "region": REGION,
                "az": agent.az, "ami_id": agent.image_id, "hostname": f"ip-{agent.logical_id}",
                "agent_version": agent.version, "logical_agent_id": agent.logical_id, "mode": "spot",
                "private_ip": "10.0.0.10"}
        if not agent.legacy:
            body["identity_document"], body["identity_signature"] = signed_identity(
                instance_id=agent.instance_id, instance_type=agent.instance_type, az=agent.az,
                image_id=agent.image_id)
        reply = self.api(agent, "POST /api/agents/register").register(body)
        agent.agent_id, agent.credential = reply["agent_id"], reply.get("agent_credential")
        agent.config_version = (reply.get("config") or {}).get("config_version")
        if not agent.legacy and not agent.credential:
            raise RuntimeError(f"v5 agent {agent.logical_id} registered without a credential")

    def begin(self, agent: SimAgent, offset: float) -> None:
        """Start the agent's periodic work ``offset`` seconds from now (spread over a period)."""
        now = time.monotonic()
        self.schedule(now + offset, "heartbeat", agent)
        self.schedule(now + offset + self.rng.uniform(0, PRICING_S / 10), "pricing", agent)
        if agent.legacy:
            self.schedule(now + offset + self.rng.uniform(0, POLL_S), "poll", agent)

    def _ack(self, agent: SimAgent, commands: list[dict]) -> None:
        """Report each delivered command done once (the simulated agent has nothing to run)."""
        for command in commands:
            command_id = command.get("command_id") or command.get("id")
            if not command_id or command_id in agent.acked:
                continue
            self.api(agent, "POST /api/agents/{id}/commands/{cid}/executed").command_executed(
                agent.agent_id, command_id, success=True, message="load bench: acknowledged")
            agent.acked.add(command_id)
            with self.cond:
                self.commands[str(command.get("command_type") or command.get("type"))] += 1

    def _task_heartbeat(self, agent: SimAgent) -> float:
        body = {"status": "online", "instance_id": agent.instance_id, "instance_type": agent.instance_type,
                "mode": "spot", "az": agent.az, "monitored_instances": [agent.instance_id]}
        reply = self.api(agent, "POST /api/agents/{id}/heartbeat").heartbeat(agent.agent_id, body)
        agent.last_heartbeat_time = reply.get("server_time")
        version = reply.get("config_version")
        if not agent.legacy and version is not None and version != agent.config_version:
            config = self.api(agent, "GET /api/agents/{id}/config").config(agent.agent_id)  # as the v5 agent does
            agent.config_version = config.get("config_version")
        if not agent.legacy:  # a v4 agent takes its commands from the pending-commands poll
            self._ack(agent, reply.get("commands") or [])
        return HEARTBEAT_S

    def _task_poll(self, agent: SimAgent) -> float:
        reply = self.api(agent, "GET /api/agents/{id}/pending-commands").call(
            "GET", f"/api/agents/{agent.agent_id}/pending-commands")
        self._ack(agent, reply.get("commands") or [])
        return POLL_S

    def _task_pricing(self, agent: SimAgent) -> float:
        now = utcnow()
        minute = int(now.timestamp() // 300)
        pools = []
        for n, zone in enumerate(ZONES):  # deterministic per pool and 5-minute bucket, a few % apart
            jitter = random.Random(f"{agent.instance_type}{zone}{minute}").uniform(-0.02, 0.02)
            pools.append({"pool_id": f"{agent.instance_type}.{zone}", "instance_type": agent.instance_type,
                          "az": zone, "price": round(ONDEMAND[agent.instance_type] * (0.30 + 0.03 * n + jitter), 5)})
        own = f"{agent.instance_type}.{agent.az}"
        cheapest = min(pools, key=lambda p: p["price"])
        body = {"instance": {"instance_id": agent.instance_id, "instance_type": agent.instance_type,
                             "region": REGION, "az": agent.az, "mode": "spot", "pool_id": own},
                "pricing": {"on_demand_price": ONDEMAND[agent.instance_type],
                            "current_spot_price": next(p["price"] for p in pools if p["pool_id"] == own),
                            "cheapest_pool": {"pool_id": cheapest["pool_id"], "price": cheapest["price"]},
                            "spot_pools": pools, "collected_at": iso(now)}}
        self.api(agent, "POST /api/agents/{id}/pricing-report").pricing_report(agent.agent_id, body)
        agent.pricing_ok += 1
        return PRICING_S

    def _task_notice(self, agent: SimAgent) -> float | None:
        """The v5 agent's IMDS check saw the warning: termination-imminent (the sentinel's duplicate)."""
        if agent.reported_notice or agent.warned_at is None:
            return None
        agent.notice_done = True
        body = {"instance_id": agent.instance_id, "termination_time": iso(agent.warned_at + timedelta(seconds=120)),
                "detected_at": iso(utcnow())}
        self.api(agent, "POST /api/agents/{id}/termination-imminent").termination_imminent(agent.agent_id, body)
        agent.reported_notice = True
        return None


# ---- the run ------------------------------------------------------------------------------------

class LoadRun:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.recorder = Recorder()
        self.tenants: list[Tenant] = []
        self.checks: dict[str, dict] = {}
        self.interrupted: list[dict] = []  # {"logical", "agent_id", "client_id", "instance_id", "warned_at"}

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        import requests

        response = requests.request(method, self.stack.api_url + path, json=body, timeout=60,
                                    headers={"X-Admin-Key": self.stack.admin_key, "Connection": "close"})
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text}")
        return response.json()

    # setup
    def make_tenants(self) -> None:
        per = self.args.agents_per_client
        n_clients = -(-self.args.agents // per)
        n_legacy = round(n_clients * self.args.legacy_share)
        for n in range(n_clients):
            legacy = n < n_legacy
            created = self.admin("POST", "/api/admin/clients/create",
                                 {"name": f"load-{n}-{uuid.uuid4().hex[:6]}", "legacy_agents": legacy})
            self.admin("POST", f"/api/admin/clients/{created['client_id']}/limits",
                       {"max_agents": per, "max_instances": 4 * per})
            self.tenants.append(Tenant(created["client_id"], created["client_token"], legacy))

    def launch_instances(self) -> list[SimAgent]:
        """The agents' instances, launched as spot in the embedded EC2 (the client's own instances)."""
        import boto3

        ec2 = boto3.client("ec2", region_name=REGION)
        image = ec2.describe_images()["Images"][0]["ImageId"]
        agents = []
        per, n_tenants = self.args.agents_per_client, len(self.tenants)
        for t, tenant in enumerate(self.tenants):
            count = min(per, self.args.agents - t * per)
            zones: dict[str, int] = Counter()
            for k in range(count):
                # The first --interruptions agents, taken round-robin over the clients, run in the zone that
                # drains (ZONES[0]); the others spread over the other zones.
                r = k * n_tenants + t
                zones[ZONES[0] if r < self.args.interruptions else ZONES[1 + r % (len(ZONES) - 1)]] += 1
            for zone, k in sorted(zones.items()):
                itype = TYPES[(t + ZONES.index(zone)) % len(TYPES)]
                launched = ec2.run_instances(
                    ImageId=image, InstanceType=itype, MinCount=k, MaxCount=k, Placement={"AvailabilityZone": zone},
                    InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
                )["Instances"]
                for instance in launched:
                    logical = f"load-{len(agents):04d}"
                    tenant.agents.append(logical)
                    agents.append(SimAgent(logical, tenant, instance["InstanceId"], itype, zone, image, tenant.legacy))
        return agents

    def register_all(self, fleet: Fleet, agents: list[SimAgent]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        def one(agent: SimAgent) -> None:
            try:
                fleet.register(agent)
            except Exception as exc:  # noqa: BLE001 - recorded as a failed registration
                self.recorder.errors.append(f"register {agent.logical_id}: {exc!r}"[:400])
                return
            fleet.current[agent.logical_id] = agent
            fleet.all.append(agent)

        with ThreadPoolExecutor(self.args.concurrency) as pool:
            list(pool.map(one, agents))
            # Auto-switch off: the simulated agents cannot carry out a switch (the demo exercises decisions);
            # the failover on a spot warning does not depend on it.
            list(pool.map(self.monitor_only, list(fleet.current.values())))

    def monitor_only(self, agent: SimAgent) -> None:
        import requests

        route = "POST /api/client/agents/{id}/config"
        started = time.perf_counter()
        try:
            response = requests.post(f"{self.stack.api_url}/api/client/agents/{agent.agent_id}/config",
                                     json={"auto_switch_enabled": False}, timeout=60,
                                     headers={"Authorization": f"Bearer {agent.client.token}", "Connection": "close"})
        except requests.RequestException as exc:
            self.recorder.add(route, None, time.perf_counter() - started, repr(exc))
            return
        self.recorder.add(route, response.status_code, time.perf_counter() - started,
                          response.text if response.status_code >= 400 else None)

    # the mass interruption
    def interrupt(self, fleet: Fleet) -> None:
        zone = ZONES[0]
        victims = [a for a in fleet.current.values() if a.az == zone and not a.stopped]
        self.rng.shuffle(victims)
        victims = victims[:self.args.interruptions]
        if len(victims) < self.args.interruptions:
            raise RuntimeError(f"only {len(victims)} agents in {zone}: need more agents for "
                               f"{self.args.interruptions} interruptions")
        when = utcnow().replace(microsecond=0)
        entries = [{"Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
                    "Time": iso(when), "Resources": [f"arn:aws:ec2:{REGION}:123456789012:instance/{a.instance_id}"],
                    "Detail": json.dumps({"instance-id": a.instance_id, "instance-action": "terminate"})}
                   for a in victims]
        started = time.perf_counter()
        import requests

        route = f"POST /_local/eventbridge ({len(entries)} entries)"
        try:
            response = requests.post(self.stack.api_url + "/_local/eventbridge", json={"Entries": entries},
                                     headers={"Connection": "close"}, timeout=900)
            self.recorder.add(route, response.status_code, time.perf_counter() - started,
                              response.text if response.status_code >= 400 else None)
        except requests.RequestException as exc:  # recorded; the checks then show what was lost
            self.recorder.add(route, None, time.perf_counter() - started, repr(exc))
        self.put_events_s = time.perf_counter() - started
        stop_at = time.monotonic() + WARNING_WINDOW_S  # AWS takes the instance back at the deadline
        for agent in victims:
            agent.warned_at, agent.stop_at = when, stop_at
            self.interrupted.append({"logical": agent.logical_id, "agent_id": agent.agent_id,
                                     "client_id": agent.client.client_id, "instance_id": agent.instance_id,
                                     "legacy": agent.legacy, "warned_at": when, "moved_to": None})
            if not agent.legacy:
                fleet.schedule(time.monotonic() + self.rng.uniform(0, NOTICE_S), "notice", agent)

    def follow_moves(self, fleet: Fleet) -> int:
        """Start the agent on its replacement once its interruption is resolved; returns how many wait."""
        from chalicelib.tables import InterruptionTable

        waiting = 0
        events: dict[str, list] = {}
        for item in self.interrupted:
            if item["moved_to"]:
                continue
            if item["client_id"] not in events:
                events[item["client_id"]] = list(InterruptionTable.query(item["client_id"]))
            mine = [e for e in events[item["client_id"]] if e.instance_id == item["instance_id"]]
            done = [e for e in mine if e.status in ("resolved", "failed")]
            if not done:
                waiting += 1
                continue
            event = done[0]
            old = fleet.current[item["logical"]]
            gone = old.stopped or (old.stop_at is not None and time.monotonic() >= old.stop_at)
            if not old.legacy and not old.notice_done and not gone:
                waiting += 1  # its IMDS check reports the notice first (seconds; the replacement boots for longer)
                continue
            item["moved_to"] = event.new_instance_id or "-"
            with old.lock:  # the replacement's agent registers: the old instance's agent is done (draining)
                old.stopped = True
            if event.new_instance_id and event.new_pool_id:
                itype, az = event.new_pool_id.rsplit(".", 1)
                new = SimAgent(item["logical"], old.client, event.new_instance_id, itype, az, old.image_id, old.legacy)
                try:
                    fleet.register(new)
                except Exception as exc:  # noqa: BLE001 - recorded
                    self.recorder.errors.append(f"register {new.logical_id} on its replacement: {exc!r}"[:400])
                    continue
                fleet.current[item["logical"]] = new
                fleet.all.append(new)
                fleet.begin(new, 0.0)
        return waiting

    # verification
    def verify(self, fleet: Fleet) -> None:
        import boto3

        from chalicelib.aws.ec2 import TAG_AGENT, TAG_STAGE
        from chalicelib.repositories import replicas as replica_repo
        from chalicelib.settings import get_settings
        from chalicelib.tables import AgentTable, InterruptionTable
        from chalicelib.tables.pools import PricingReportTable

        checks = self.checks
        # registrations: one agent row per logical agent, in its own client
        rows = {}
        for tenant in self.tenants:
            for row in AgentTable.query(tenant.client_id, consistent_read=True):
                rows[row.agent_id] = row
        expected_ids = {a.agent_id for a in fleet.current.values()}
        checks["agents registered"] = {"expected": self.args.agents, "found": len(expected_ids & set(rows)),
                                       "ok": len(expected_ids & set(rows)) == self.args.agents == len(fleet.current)}
        # pricing reports: every agent that had a report accepted has its raw row(s) and its last_pricing_at.
        # (The server keeps a raw row per agent-hour, plus every report that stored agent prices:
        # pools.report_worth_keeping. So between 1 and one per accepted report.)
        sent = Counter()
        for agent in fleet.all:
            sent[agent.agent_id] += agent.pricing_ok
        stored = {agent_id: PricingReportTable.count(agent_id, consistent_read=True) for agent_id in sent if sent[agent_id]}
        short = {a: (sent[a], n) for a, n in stored.items() if not 1 <= n <= sent[a]}
        unrecorded = [a for a in stored if rows.get(a) is not None and rows[a].last_pricing_at is None]
        bad = set(short) | set(unrecorded)
        checks["pricing reports recorded (agents)"] = {
            "expected": len(stored), "found": len(stored) - len(bad), "ok": not bad,
            "reports_accepted": sum(sent.values()), "raw_rows": sum(stored.values())}
        # heartbeats: the last accepted heartbeat of each agent's current instance is the row's
        stale = []
        for agent in fleet.current.values():
            row = rows.get(agent.agent_id)
            last = parse_iso(agent.last_heartbeat_time) if agent.last_heartbeat_time else None
            if row is None or row.instance_id != agent.instance_id:
                stale.append(f"{agent.logical_id}: row on {row.instance_id if row else None}, agent on {agent.instance_id}")
            elif last is not None and (row.last_heartbeat_at is None or row.last_heartbeat_at < last):
                stale.append(f"{agent.logical_id}: last heartbeat {agent.last_heartbeat_time}, row {row.last_heartbeat_at}")
            # (last None: the replacement's agent registered as the load ended and sent none yet)
        # (The status is the health monitor's verdict on the heartbeat's age, informative only: a run that
        # cannot keep the cadence shows agents degraded.)
        checks["last heartbeat recorded"] = {"expected": len(fleet.current), "found": len(fleet.current) - len(stale),
                                             "ok": not stale, "stale": stale[:10],
                                             "status": dict(Counter(rows[a.agent_id].status for a in fleet.current.values()
                                                                    if a.agent_id in rows))}
        # requests
        answered = [r for r in self.recorder.rows]
        fivexx = sum(1 for _, st, _ in answered if st is not None and st >= 500)
        failed = sum(1 for _, st, _ in answered if st is None or st >= 400)
        checks["no 5xx"] = {"expected": 0, "found": fivexx, "ok": fivexx == 0}
        checks["no failed request"] = {"expected": 0, "found": failed, "ok": failed == 0}
        if not self.interrupted:
            return
        # interruptions: one event, one execution, one outcome, one replacement per warning
        sfn = boto3.client("stepfunctions", region_name=REGION)
        paginator = sfn.get_paginator("list_executions")

        def list_executions() -> dict[str, dict]:
            return {ex["name"]: ex for page in paginator.paginate(
                stateMachineArn=os.environ["FAILOVER_STATE_MACHINE_ARN"]) for ex in page["executions"]}

        # A resolved failover's execution still waits for the old instance's deadline (+ wait) to retire it:
        # give the executions that long (bounded) to finish before judging them.
        until = time.monotonic() + EXECUTIONS_SETTLE_S
        while any(ex["status"] == "RUNNING" for ex in list_executions().values()) and time.monotonic() < until:
            time.sleep(2.0)
        listed = list_executions()
        executions = {name: ex["status"] for name, ex in listed.items()}
        # What the executions went through: task errors seen in their histories (timeouts retried, fallbacks).
        task_errors: Counter = Counter()
        for ex in listed.values():
            for event in sfn.get_execution_history(executionArn=ex["executionArn"], maxResults=1000)["events"]:
                for key, details in event.items():
                    if key.endswith("EventDetails") and isinstance(details, dict) and details.get("error") \
                            and event["type"] in ("TaskTimedOut", "TaskFailed", "LambdaFunctionTimedOut",
                                                  "LambdaFunctionFailed"):
                        task_errors[details["error"]] += 1
        self.task_errors = dict(task_errors)
        responses: Counter = Counter()
        ec2 = boto3.client("ec2", region_name=REGION)
        stage = get_settings().stage
        per_client: dict[str, list] = {}
        events_ok = executions_ok = outcomes_ok = in_window = one_replacement = 0
        failover_ms, problems = [], []
        for item in self.interrupted:
            if item["client_id"] not in per_client:
                per_client[item["client_id"]] = list(InterruptionTable.query(item["client_id"], consistent_read=True))
            mine = [e for e in per_client[item["client_id"]] if e.instance_id == item["instance_id"]
                    and e.signal_type.startswith("termination")]
            if len(mine) != 1:
                problems.append(f"{item['logical']}: {len(mine)} interruption events")
                continue
            event = mine[0]
            events_ok += 1
            responses[f"{event.status}: {event.response_action}"] += 1
            status = executions.get(event.interruption_id)
            executions_ok += status == "SUCCEEDED"
            if status != "SUCCEEDED":
                problems.append(f"{item['logical']}: execution {status}")
            if event.status == "resolved" and event.success and event.traffic_moved_at:
                outcomes_ok += 1
                seconds = (event.traffic_moved_at - item["warned_at"]).total_seconds()
                failover_ms.append(seconds * 1000)
                in_window += seconds <= WARNING_WINDOW_S
            else:
                problems.append(f"{item['logical']}: outcome {event.status} {event.error}")
            # Replica rows of this interruption that got an instance (a spot launch EC2 refused before the
            # on-demand fallback leaves a row without one: no second replacement).
            replicas = [r for r in replica_repo.for_agent(item["agent_id"])
                        if r.interruption_id == event.interruption_id and r.instance_id]
            live = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
                {"Name": f"tag:{TAG_AGENT}", "Values": [item["agent_id"]]},
                {"Name": f"tag:{TAG_STAGE}", "Values": [stage]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
                for i in r["Instances"]]
            row = AgentTable.get(item["client_id"], item["agent_id"], consistent_read=True)
            if len(replicas) == 1 and live == [replicas[0].instance_id] == [row.instance_id]:
                one_replacement += 1
            else:
                problems.append(f"{item['logical']}: {len(replicas)} launched replica rows, live launched {live}, "
                                f"agent on {row.instance_id}")
        n = len(self.interrupted)
        checks["one interruption event per warning"] = {"expected": n, "found": events_ok, "ok": events_ok == n}
        checks["one execution per warning, succeeded"] = {"expected": n, "found": executions_ok, "ok": executions_ok == n,
                                                          "executions_total": len(executions)}
        checks["outcome recorded (resolved)"] = {"expected": n, "found": outcomes_ok, "ok": outcomes_ok == n,
                                                 "responses": dict(responses)}
        checks["serving within 120 s of the warning"] = {"expected": n, "found": in_window, "ok": in_window == n}
        checks["exactly one replacement per interrupted primary"] = {"expected": n, "found": one_replacement,
                                                                     "ok": one_replacement == n}
        self.failover_ms = failover_ms
        self.problems = problems

    # main
    def run(self) -> dict:
        from localmode import embedded_aws
        from localmode.server import LocalStack

        args = self.args
        os.environ.setdefault("SPOT_LOCAL_CLOCK_SPEED", str(args.wait_speed))
        from localmode.invoke import PARALLEL_ENV

        os.environ[PARALLEL_ENV] = "0" if args.serial_lambdas else "1"
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        began = time.monotonic()
        self.stack = LocalStack(embedded_aws.free_port(), embedded_aws.free_port(), quiet=True,
                                run_jobs=not args.no_jobs)
        self.failover_ms, self.problems, self.put_events_s, self.commands = [], [], None, Counter()
        self.task_errors: dict[str, int] = {}
        with self.stack:
            import logging

            from chalicelib.observability import logger

            logger.setLevel("WARNING")
            logging.getLogger("spot_agent").setLevel(logging.CRITICAL)
            self.make_tenants()
            agents = self.launch_instances()
            fleet = Fleet(self.stack.api_url, self.recorder, args.concurrency, self.rng)
            self.say(f"local mode up ({self.stack.api_url}); {len(self.tenants)} clients; registering "
                     f"{len(agents)} agents ({time.monotonic() - began:.0f} s)")
            self.register_all(fleet, agents)
            setup_s = time.monotonic() - began
            for agent in list(fleet.current.values()):
                fleet.begin(agent, self.rng.uniform(0, HEARTBEAT_S))
            load_began = time.monotonic()
            fleet.start()
            self.say(f"  {len(fleet.current)} agents registered; load for {args.minutes} min "
                     f"({setup_s:.0f} s of setup)")
            end = load_began + args.minutes * 60
            interrupt_at = load_began + args.interrupt_at * 60 if args.interruptions else None
            settle_deadline = end + SETTLE_CAP_S
            waiting, last_report = 0, load_began
            while True:
                now = time.monotonic()
                if interrupt_at is not None and now >= interrupt_at:
                    interrupt_at = None
                    self.interrupt(fleet)
                    self.say(f"  {len(self.interrupted)} interruption warnings sent in one PutEvents call "
                             f"({self.put_events_s:.1f} s) at minute {(now - load_began) / 60:.1f}")
                if self.interrupted:
                    waiting = self.follow_moves(fleet)
                if now >= end and (interrupt_at is None and not waiting or now >= settle_deadline):
                    break
                if now - last_report >= 60:
                    last_report = now
                    self.say(f"  minute {(now - load_began) / 60:.0f}: {len(self.recorder.rows)} requests, "
                             f"{len(self.recorder.errors)} errors, lag p99 {percentile(self.recorder.lags[-2000:], 99):.1f} s"
                             + (f", {waiting} failovers pending" if self.interrupted else ""))
                time.sleep(1.0)
            load_s = time.monotonic() - load_began
            fleet.stop()
            self.stack.stop_jobs()
            self.say(f"  load stopped after {load_s:.0f} s; verifying the tables, executions and EC2")
            self.verify(fleet)
            self.commands = fleet.commands
        return self.result(setup_s, load_s)

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(text, flush=True)

    def result(self, setup_s: float, load_s: float) -> dict:
        lags = self.recorder.lags
        return {
            "command": "python -m bench.load " + " ".join(sys.argv[1:]),
            "date": utcnow().strftime("%Y-%m-%d %H:%M UTC"),
            "agents": self.args.agents, "clients": len(self.tenants),
            "legacy_clients": sum(t.legacy for t in self.tenants), "minutes": self.args.minutes,
            "concurrency": self.args.concurrency, "wait_speed": float(os.environ["SPOT_LOCAL_CLOCK_SPEED"]),
            "scheduled_jobs": not self.args.no_jobs,
            "lambdas": "serial" if self.args.serial_lambdas else "parallel",
            "setup_s": round(setup_s, 1), "load_s": round(load_s, 1),
            "requests": len(self.recorder.rows),
            "requests_per_s": round(len(self.recorder.rows) / max(load_s, 1e-9), 1),
            "offered_per_s": round(self.args.agents / HEARTBEAT_S + self.args.agents / PRICING_S
                                   + sum(len(t.agents) for t in self.tenants if t.legacy) / POLL_S, 1),
            "start_lag_s": {"p50": round(percentile(lags, 50), 2), "p99": round(percentile(lags, 99), 2),
                            "max": round(max(lags), 2) if lags else None},
            "routes": self.recorder.table(),
            "interruptions": len(self.interrupted),
            "put_events_s": round(self.put_events_s, 2) if self.put_events_s is not None else None,
            "failover_s": {"p50": round(percentile(self.failover_ms, 50) / 1000, 1),
                           "p99": round(percentile(self.failover_ms, 99) / 1000, 1),
                           "max": round(max(self.failover_ms) / 1000, 1) if self.failover_ms else None},
            "commands_acknowledged": dict(self.commands),
            "failover_task_errors": self.task_errors,
            "outcomes": self.checks.get("outcome recorded (resolved)", {}).get("responses", {}),
            "checks": self.checks, "ok": all(c["ok"] for c in self.checks.values()),
            "problems": self.problems[:50], "errors": self.recorder.errors[:50],
        }


def markdown(result: dict) -> str:
    lines = [f"{result['agents']} agents in {result['clients']} clients ({result['legacy_clients']} legacy-mode, v4 "
             f"agents), {result['minutes']} min of load ({result['load_s']:.0f} s wall), {result['requests']} requests "
             f"({result['requests_per_s']} /s answered; the agents' cadences ask for {result['offered_per_s']} /s), "
             f"concurrency {result['concurrency']}; requests started late by p50 {result['start_lag_s']['p50']} s, "
             f"p99 {result['start_lag_s']['p99']} s", "",
             "| route | requests | 2xx | 4xx | 5xx | no answer | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["routes"]:
        lines.append(f"| `{r['route']}` | {r['requests']} | {r['2xx']} | {r['4xx']} | {r['5xx']} | {r['no_answer']} "
                     f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    if result["interruptions"]:
        f = result["failover_s"]
        lines += ["", f"{result['interruptions']} interruption warnings in one PutEvents call "
                      f"({result['put_events_s']} s to deliver); warning → serving (product time) p50 {f['p50']} s, "
                      f"p99 {f['p99']} s, max {f['max']} s; outcomes {result['outcomes']}; task errors in the "
                      f"executions' histories (each retried or caught) {result['failover_task_errors'] or 'none'}"]
    lines += ["", "| check | expected | found | |", "|---|---:|---:|---|"]
    for name, c in result["checks"].items():
        lines.append(f"| {name} | {c['expected']} | {c['found']} | {'ok' if c['ok'] else '**FAILED**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration (wall = product time)")
    parser.add_argument("--interruptions", type=int, default=50,
                        help="instances warned in the same second, all in one AZ (0: none)")
    parser.add_argument("--interrupt-at", type=float, default=None, help="minute of the warnings (default: half-way)")
    parser.add_argument("--concurrency", type=int, default=8, help="threads sending the agents' requests")
    parser.add_argument("--agents-per-client", type=int, default=50, help="agents per client (the default quota)")
    parser.add_argument("--legacy-share", type=float, default=0.2, help="share of clients whose agents are v4")
    parser.add_argument("--wait-speed", type=float, default=1.0,
                        help="SPOT_LOCAL_CLOCK_SPEED: Wait states and schedules run this much faster (default 1)")
    parser.add_argument("--serial-lambdas", action="store_true",
                        help="run local mode's Lambda invocations one at a time (local mode's default; the bench "
                             "otherwise runs them side by side, as Lambda does: SPOT_LOCAL_PARALLEL_LAMBDAS)")
    parser.add_argument("--no-jobs", action="store_true", help="do not run the scheduled jobs during the load")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.interrupt_at is None:
        args.interrupt_at = args.minutes / 2
    result = LoadRun(args).run()
    print(markdown(result))
    if not result["ok"]:
        print("\nFAILED checks; problems: " + "; ".join(result["problems"][:10]) + "; errors: "
              + "; ".join(result["errors"][:10]), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
