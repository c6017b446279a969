"""The replay loop: local mode, the real agents on their instances, the real schedules, in replay time.

Every step (``--step-minutes``, 120 by default) the clock of the API process and of this process (where
the scheduled jobs and the state machine's tasks run) moves to the replay time; then:
1. instances whose pool lost capacity during the step get AWS's two-minute warning, both in their fake
   IMDS and as an EventBridge event to ``POST /_local/eventbridge`` (standbys too);
2. every agent does what is due (heartbeat with its commands, price report from the trace, IMDS
   notices → ``termination-imminent``, which the sentinel recognises as a duplicate);
3. the demo waits for the failover workflows to finish; a logical agent that got a new instance
   (failover or switch) gets its agent started there;
4. the scheduled handlers whose period has elapsed run with the replay time (health monitor,
   replica coordinator, decision cycle, risk scorer, cleanup);
5. when the decision cycle queued commands or a switched-from instance awaits termination, a minute later
   the agents pick the commands up (their next heartbeat) and, a minute after that, old agents terminate
   their instances; while the cycle queues commands it runs again 5 minutes later (a few times at most),
   so a refused switch is retried elsewhere within minutes, as in production (``Replay.follow_up``).

At the end the summary puts the product's measured cost next to the backtest's policies on the same
window and pools (``compare.py``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import requests

from components.sentinel import TERMINATION_NOTICE_S
from localmode import embedded_aws
from localmode.demo import compare, report
from localmode.demo.fleet import Fleet
from localmode.demo.world import INSTANCE_TYPE, TraceWorld
from localmode.server import LocalStack

# Six instances in six different pools, two of them in manual-replica mode (standby kept ready).
LAYOUT = (("train-1", "us-east-1c", "auto-switch"), ("serve-1", "us-east-2a", "manual-replica"),
          ("train-2", "us-east-1f", "auto-switch"), ("train-3", "us-west-2a", "auto-switch"),
          ("serve-2", "us-west-2b", "manual-replica"), ("train-4", "us-east-2b", "auto-switch"))

# Replay-time offsets of the follow-up phase of a step (``Replay.follow_up``): the agents' next heartbeat
# after the decision cycle (30 s cadence), then the switch's terminate wait (the demo's 60 s) plus a second.
PICKUP = timedelta(seconds=60)
# The step's scheduled handlers run this long after the step's time (``Replay.schedule_time``).
SCHEDULES_AFTER = timedelta(seconds=60)
RETIRE = timedelta(seconds=61)
FOLLOW_UP_CYCLES = 3  # further decision cycles (5 min apart) after one that queued commands
TERMINATION_NOTICE = timedelta(seconds=TERMINATION_NOTICE_S)  # AWS's warning → the instance is reclaimed


class Api:
    """Minimal HTTP client; one fresh connection per call (chalice local is slow on keep-alive)."""

    def __init__(self, base: str, token: str | None = None, admin_key: str | None = None):
        self.base, self.token, self.admin_key = base, token, admin_key

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.admin_key:
            headers["X-Admin-Key"] = self.admin_key
        response = requests.request(method, self.base + path, json=body, headers=headers, timeout=60)
        if response.status_code >= 500:  # one retry: the embedded AWS can stall under a loaded machine
            time.sleep(0.5)
            response = requests.request(method, self.base + path, json=body, headers=headers, timeout=60)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text}")
        return response.json()


def _period_s(expression) -> float:
    from localmode.schedules import period_seconds

    return period_seconds(expression)


class Replay:
    """One demo run."""

    def __init__(self, stack: LocalStack, world: TraceWorld, start: datetime, agents: int):
        from chalicelib import clock

        self.stack, self.world, self.start, self.clock = stack, world, start, clock
        self.api = Api(stack.api_url)
        self.open_zones: list[str] | None = None
        self.reclaims: dict[str, tuple[datetime, str]] = {}  # warned spot instance → (AWS's deadline, region)
        self.set_time(start)
        admin = self.admin = Api(stack.api_url, admin_key=stack.admin_key)
        self.model_version: str | None = None
        created = admin.call("POST", "/api/admin/clients/create", {"name": f"demo-{uuid.uuid4().hex[:6]}"})
        self.client_id = created["client_id"]
        # The replayed trace is a GPU pool (p3.2xlarge): the operator allows that family for the demo client,
        # as one would for a real GPU tenant (the default policy refuses accelerated types), with room for
        # every agent's standby (docs/ARCHITECTURE.md, "Tenancy and ownership").
        admin.call("POST", f"/api/admin/clients/{self.client_id}/limits",
                   {"allowed_instance_families": [INSTANCE_TYPE.split(".")[0]], "max_agents": max(50, agents),
                    "max_instances": max(20, 4 * agents), "max_standby_usd_per_hour": 1000})
        self.client_token = created["client_token"]
        self.client = Api(stack.api_url, token=self.client_token)
        self.fleet = Fleet(world, stack.api_url, created["client_token"], clock.now)
        self.layout = [LAYOUT[i % len(LAYOUT)] for i in range(agents)]
        self.booted: list[dict] = []  # {"logical", "mode", "az"}: where each agent started (for the backtest)
        self.standby_warned: set[str] = set()
        self.last_run: dict[str, datetime] = {}
        self.timings: dict[str, float] = {}  # wall seconds per phase of a step (printed at the end)
        self.pool = ThreadPoolExecutor(max_workers=max(1, agents), thread_name_prefix="agent")

    def set_time(self, when: datetime) -> None:
        """Replay time in both processes, and the spot capacity the trace has then for the product's own
        launches (failover, replica coordinator: ``localmode.capacity``), as the agents' EC2 has."""
        from localmode import capacity

        self.clock.set_replay_time(when)
        self.api.call("POST", "/_local/clock", {"now": when.isoformat()})
        open_now = [z for z in self.world.zones if self.world.available(z, when)]
        if open_now != self.open_zones:
            self.api.call("POST", "/_local/capacity", {"offered": self.world.zones, "open": open_now})
            capacity.install()
            capacity.STATE.set(self.world.zones, open_now)
            self.open_zones = open_now
        self.reclaim(when)

    def reclaim(self, now: datetime) -> None:
        """AWS terminates a warned spot instance at the end of its two minutes, whatever the product does; the
        embedded EC2 has no such reclaim, so the replay does it. (Without it every warned standby stayed
        running there, and after a few days the client's instance quota refused the failovers' launches.)"""
        due = [(iid, region) for iid, (deadline, region) in self.reclaims.items() if deadline <= now]
        for region in {region for _, region in due}:
            ids = [iid for iid, r in due if r == region]
            self.fleet.ec2(region).terminate_instances(InstanceIds=ids)
            for iid in ids:
                del self.reclaims[iid]

    def boot(self) -> None:
        for n, (name, az, mode) in enumerate(self.layout):
            logical = name if n < len(LAYOUT) else f"{name}-{n}"
            zones = sorted(self.world.zones, key=lambda z: (z != az, self.world.region_of(z) != self.world.region_of(az)))
            usable = [z for z in zones if self.world.available(z, self.start)]
            self.fleet.boot(logical, (usable or zones)[0])  # where capacity exists at the start
            self.booted.append({"logical": logical, "mode": mode, "az": (usable or zones)[0]})
            config = {"auto_terminate_enabled": True, "terminate_wait_seconds": 60}
            config["manual_replica_enabled" if mode == "manual-replica" else "auto_switch_enabled"] = True
            self.client.call("POST", f"/api/client/agents/{self.fleet.agent_ids[logical]}/config", config)

    def upload_model(self) -> None:
        """The committed risk model, through the admin API; the risk scorer validates it, then it is
        activated (the model lifecycle), so the decisions use the model rather than the prior."""
        import base64

        root = Path(__file__).resolve().parents[2] / "ml" / "artifacts"
        uploaded = self.admin.call("POST", "/api/admin/ml-models", {
            "artifact_base64": base64.b64encode((root / "risk-model.joblib").read_bytes()).decode(),
            "manifest": json.loads((root / "risk-model.json").read_text())})
        self.model_version = uploaded["version"]

    def _eventbridge(self, instance_id: str, when: datetime) -> None:
        self.api.call("POST", "/_local/eventbridge", {
            "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
            "Time": when.isoformat().replace("+00:00", "Z"),
            "Detail": json.dumps({"instance-id": instance_id, "instance-action": "terminate"})})

    def warn_lost(self, begin: datetime, end: datetime) -> int:
        """Warnings for every spot instance (primary or standby) whose pool lost capacity in the step."""
        from chalicelib.repositories import replicas as replica_repo

        sent = 0
        for member in list(self.fleet.members.values()):
            if member.lifecycle == "spot" and not member.warned and self.world.lost_between(member.az, begin, end):
                deadline = self.fleet.warn(member, end)
                self._eventbridge(member.instance_id, end)
                self.reclaims[member.instance_id] = (deadline, self.world.region_of(member.az))
                sent += 1
        for agent_id in self.fleet.agent_ids.values():
            for replica in replica_repo.for_agent(agent_id, include_final=False):
                if (replica.instance_id and replica.lifecycle == "spot" and replica.az in self.world.zones
                        and replica.instance_id not in self.standby_warned
                        and self.world.lost_between(replica.az, begin, end)):
                    self.standby_warned.add(replica.instance_id)
                    self._eventbridge(replica.instance_id, end)
                    self.reclaims[replica.instance_id] = (end + TERMINATION_NOTICE, self.world.region_of(replica.az))
                    sent += 1
        return sent

    def wait_for_failovers(self, timeout: float = 120) -> None:
        from chalicelib.tables import InterruptionTable

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [e for e in InterruptionTable.query(self.client_id, scan_index_forward=False, limit=20)
                    if e.status in ("detected", "handling")]
            if not busy:
                return
            time.sleep(0.25)  # each look is a query the busy embedded AWS has to serve
        raise RuntimeError("failover workflows did not finish in time")

    def follow_moves(self) -> int:
        """Start the agent on every logical agent's new instance (after a failover or a switch)."""
        from chalicelib.tables import AgentTable

        moved = 0
        for logical, agent_id in self.fleet.agent_ids.items():
            row = AgentTable.get(self.client_id, agent_id, consistent_read=True)
            if row.instance_id and row.instance_id != self.fleet.members[logical].instance_id:
                self.fleet.adopt(logical, row.instance_id)
                moved += 1
        return moved

    def schedule_time(self, end: datetime) -> datetime:
        """When the step's scheduled handlers run: ``SCHEDULES_AFTER`` past the step's time ``end`` (later, in
        whole seconds, only if the step's own work took longer). The rows the step's agents and failovers wrote
        carry the step's time plus the real seconds they took; a run at the step's bare time would see a launch
        refused half a second later as in its future, and choose that pool again. A fixed time, rather than
        the clock when the work is done, keeps runs of the same code close: windows that start or end at a run
        (a capacity back-off, a price's freshness, the risk scorer's day of observations) cut the same rows
        however loaded the machine is (the clock's time cut a day-old warning in or out, ≈ 3 % of the bill;
        what is left, the agents' threads' order, moved the total ≈ 1 % between two runs)."""
        now = self.clock.now()
        return max(end + SCHEDULES_AFTER, now.replace(microsecond=0) + timedelta(seconds=1 if now.microsecond else 0))

    def run_schedules(self, now: datetime) -> int:
        """Every handler whose period has elapsed; returns how many commands the decision cycle queued."""
        from localmode.invoke import invoke_schedule, scheduled_handlers

        queued = 0
        for name, expression in scheduled_handlers().items():
            last = self.last_run.get(name)
            if last is None or (now - last).total_seconds() >= _period_s(expression) - 1:
                self.last_run[name] = now
                result = invoke_schedule(name, now)
                if name == "decision-cycle" and isinstance(result, dict):
                    queued += int(result.get("commands_queued", 0))
                if name == "risk-scorer" and self.model_version:
                    self.admin.call("POST", f"/api/admin/ml-models/{self.model_version}/activate")
                    self.model_version = None
        return queued

    def follow_up(self, cycle: datetime, queued: bool) -> int:
        """What the product does within minutes rather than at the next step: the agents pick up the
        commands the decision cycle just queued at their next heartbeat (``PICKUP``), and the old agent
        of a switch terminates its instance ``terminate_wait_seconds`` later (``RETIRE``). When that
        cycle queued commands (a launch may have been refused: the pool is now in back-off), the decision
        cycle runs again one period later, and so on while it queues commands, ``FOLLOW_UP_CYCLES`` times
        at most: a refused switch is retried elsewhere five minutes later, as in production, not at the
        next step. Without this a switch would wait a whole step for its agent, its old instance another
        step for its termination, and a refused one a whole step for the next try (demo artefacts, not
        the product's behaviour)."""
        from chalicelib.jobs.decision_cycle import CYCLE_S
        from localmode.invoke import invoke_schedule

        moved = 0
        for rounds in range(FOLLOW_UP_CYCLES + 1):
            if rounds:
                cycle += timedelta(seconds=CYCLE_S)
                self.set_time(cycle)
                result = invoke_schedule("decision-cycle", cycle)
                queued = bool(isinstance(result, dict) and result.get("commands_queued"))
                self.last_run["decision-cycle"] = cycle
            if not (queued or self.fleet.retiring):
                break
            pickup = cycle + PICKUP
            self.set_time(pickup)
            members = list(self.fleet.members.values())
            list(self.pool.map(lambda m, at=pickup: m.agent.run_due(at), members))
            moved += self.follow_moves()
            self.set_time(pickup + RETIRE)
            self.fleet.run_retiring(pickup + RETIRE)
            if not queued:
                break
        return moved

    def step(self, begin: datetime, end: datetime) -> dict:
        timings = self.timings
        t0 = time.perf_counter()
        self.set_time(end)
        warned = self.warn_lost(begin, end)
        t1 = time.perf_counter()
        members = list(self.fleet.members.values())
        # Each agent is its own machine: they run side by side (the API serves them in parallel).
        for member, done in zip(members, self.pool.map(lambda m: m.agent.run_due(self.clock.now()), members)):
            if os.environ.get("SPOT_DEMO_DEBUG"):
                print(f"    {end:%d %H:%M} {member.logical_id} {member.instance_id}: {done}", flush=True)
        self.fleet.run_retiring(self.clock.now())
        t2 = time.perf_counter()
        if warned:
            self.wait_for_failovers()
        moved = self.follow_moves()
        t3 = time.perf_counter()
        scheduled = self.schedule_time(end)
        self.set_time(scheduled)
        queued = self.run_schedules(scheduled)
        if self.follow_moves():
            moved += 1
        if queued or self.fleet.retiring:
            moved += self.follow_up(scheduled, bool(queued))
        t4 = time.perf_counter()
        for name, dt in (("signals", t1 - t0), ("agents", t2 - t1), ("failovers", t3 - t2), ("schedules", t4 - t3)):
            timings[name] = timings.get(name, 0.0) + dt
        return {"warned": warned, "moved": moved}


def versus_backtest(world: TraceWorld, start: datetime, end: datetime, booted: list[dict], summary: dict) -> dict:
    """The backtest's policies on this window and these agents' pools, next to the measured costs
    (``compare``'s docstring says how)."""
    runs = compare.agent_runs(world.trace, start, end, booted)
    return compare.table(runs, summary["agent_cost_usd"], {a["logical"]: a["mode"] for a in booted},
                         (end - start).total_seconds() / 3600)


def run(*, start: datetime | None, days: float, agents: int, step_minutes: int, html_path: Path,
        json_path: Path | None, quiet: bool = False, charts_dir: Path | None = None, serve: bool = False,
        port: int | None = None) -> dict:
    world = TraceWorld.load()
    start = start or world.default_week()
    end = start + timedelta(days=days)
    os.environ.setdefault("SPOT_LOCAL_CLOCK_SPEED", "1000")  # the workflow's Wait states, compressed
    stack = LocalStack(port or embedded_aws.free_port(), embedded_aws.free_port(), quiet=True, run_jobs=False)
    began = time.monotonic()
    with stack:
        from chalicelib.observability import logger

        logger.setLevel("WARNING")
        import logging

        logging.getLogger("spot_agent").setLevel(logging.CRITICAL)  # their outcomes are in the summary
        replay = Replay(stack, world, start, agents)
        replay.upload_model()
        replay.boot()
        print(f"Local mode up ({stack.api_url}); {agents} agents on p3.2xlarge instances; replaying "
              f"{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC in {step_minutes}-minute steps", flush=True)
        step = timedelta(minutes=step_minutes)
        t, steps, warnings = start, 0, 0
        total_steps = int((end - start) / step)
        while t + step <= end:
            outcome = replay.step(t, t + step)
            warnings += outcome["warned"]
            t += step
            steps += 1
            if not quiet and (steps % max(1, total_steps // 20) == 0 or steps == total_steps):
                print(f"  {100 * steps // total_steps:>3}%  {t:%a %d %b %H:%M}  two-minute warnings sent so far "
                      f"{warnings} (to primaries and standbys)  ({time.monotonic() - began:.0f} s)", flush=True)
        replay.set_time(end)
        replay.reclaim(end + TERMINATION_NOTICE)  # the last step's warned instances go two minutes later
        from localmode.invoke import invoke_schedule

        invoke_schedule("savings-rollup", end)  # the savings roll-up up to the end: the report's figures
        print("  wall time per phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in replay.timings.items()), flush=True)
        raw = report.collect(replay.client_id, start, end)
        summary = report.summarize(raw)
        summary["versus_backtest"] = versus_backtest(world, start, end, replay.booted, summary)
        html_path.write_text(report.html(raw, summary))
        if charts_dir:
            charts_dir.mkdir(parents=True, exist_ok=True)
            for name, svg in zip(("demo-prices.svg", "demo-cost.svg"), report.charts(raw)):
                (charts_dir / name).write_text(svg)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"summary": summary, "raw": {k: v for k, v in raw.items()
                                                                           if not k.startswith("_")}}, indent=1))
        replay.fleet.stop()
        replay.pool.shutdown()
        report.print_summary(summary)
        print(f"Report written to {html_path} ({time.monotonic() - began:.0f} s)")
        print(console_banner(stack.api_url, replay.client_token, stack.admin_key, serving=serve,
                             aws_endpoint=stack.aws.endpoint), flush=True)
        if serve:
            serve_until_stopped(stack)
    return summary


def console_banner(api_url: str, client_token: str, admin_key: str, *, serving: bool, aws_endpoint: str) -> str:
    """How to open the web console on the demo's data (local mode only: these secrets are the demo's own)."""
    lines = ["", f"Web console: {api_url}/",
             f"  sign in as the demo client with its token: {client_token}",
             f"  or as the operator with the admin key:     {admin_key}"]
    if serving:
        lines.append(f"  embedded AWS: {aws_endpoint}  (aws --endpoint-url {aws_endpoint} ...)")
        lines.append("  serving until Ctrl-C (the replay clock stays at the end of the window)")
    else:
        lines.append("  the demo stops local mode now: `make demo DEMO_ARGS=--serve` keeps the console up")
    return "\n".join(lines)


def serve_until_stopped(stack: LocalStack) -> None:
    """Keep local mode up (``--serve``) until Ctrl-C or SIGTERM, or until chalice local exits."""
    import signal
    import threading

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(0.5):
            if stack.api is None or stack.api.poll() is not None:
                print("chalice local exited", flush=True)
                return
    except KeyboardInterrupt:
        pass
    print("local mode stopped", flush=True)
