"""``make demo``: local mode driven by simulated agents replaying real eu-west-1 spot prices.

    python -m localmode.demo [--agents 3] [--cycles 24] [--start 2022-03-01T00:00:00Z]

Each simulated agent runs on a real instance in the embedded EC2 and speaks the real agent protocol
over HTTP to ``chalice local``: register, heartbeats (which deliver leased commands), a pricing report
per 5-minute cycle with the prices the trace had at that moment, and, when the client forces a switch,
the command result and the switch report. Half-way, spot interruption warnings arrive through
``POST /_local/eventbridge`` for two instances: one auto-switch agent without a standby (emergency
replacement) and one manual-replica agent whose standby the replica coordinator keeps ready
(promotion); the real sentinel and the real failover state machine handle them. The summary at the
end is read back from the tables, not computed on the side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import requests

from localmode import embedded_aws
from ml import price_series as traces
from localmode.server import LocalStack

CYCLE = timedelta(minutes=5)
FLEET = (("web-1", "m5.large", "eu-west-1a"), ("batch-1", "c5.xlarge", "eu-west-1b"),
         ("cache-1", "r5.large", "eu-west-1c"))
AZS = ("eu-west-1a", "eu-west-1b", "eu-west-1c")


class Api:
    """Minimal HTTP client; one fresh connection per call (see TOOLCHAIN_NOTES §7)."""

    def __init__(self, base: str, token: str | None = None, admin_key: str | None = None):
        self.base, self.token, self.admin_key = base, token, admin_key

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.admin_key:
            headers["X-Admin-Key"] = self.admin_key
        response = requests.request(method, self.base + path, json=body, headers=headers, timeout=30)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text}")
        return response.json()


def new_instance_id() -> str:
    return "i-" + uuid.uuid4().hex[:17]


@dataclass
class SimulatedAgent:
    """One managed instance and its agent, with prices taken from the trace."""

    api: Api
    name: str
    instance_type: str
    az: str
    prices: dict[tuple[str, str], traces.PriceSeries]
    ondemand: Decimal
    instance_id: str = ""
    agent_id: str = ""

    def register(self, ec2) -> None:
        """Boot the instance in the embedded EC2 (spot), then register its agent."""
        image = ec2.describe_images()["Images"][0]["ImageId"]
        self.instance_id = ec2.run_instances(
            ImageId=image, InstanceType=self.instance_type, MinCount=1, MaxCount=1,
            Placement={"AvailabilityZone": self.az},
            InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
        )["Instances"][0]["InstanceId"]
        reply = self.api.call("POST", "/api/agents/register", {
            "logical_agent_id": self.name, "instance_id": self.instance_id,
            "instance_type": self.instance_type, "region": "eu-west-1", "az": self.az,
            "ami_id": image, "hostname": self.name, "agent_version": "demo", "mode": "spot"})
        self.agent_id = reply["agent_id"]

    def interrupt(self, stack) -> dict:
        """AWS's two-minute warning for this instance, through EventBridge; waits for the failover."""
        import json

        self.api.call("POST", "/_local/eventbridge", {
            "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
            "Detail": json.dumps({"instance-id": self.instance_id, "instance-action": "terminate"})})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = self.api.call("GET", f"/api/agents/{self.agent_id}/interruptions?limit=1")["interruptions"]
            if events and events[0]["instance_id"] == self.instance_id and events[0]["status"] in ("resolved",
                                                                                                   "failed"):
                event = events[0]
                if event["new_instance_id"]:
                    self.instance_id = event["new_instance_id"]
                    self.az = event["new_pool_id"].rsplit(".", 1)[1] if event["new_pool_id"] else self.az
                return event
            time.sleep(0.1)
        raise RuntimeError(f"failover of {self.name} did not finish within 60 s")

    def price(self, az: str, when: datetime) -> Decimal | None:
        series = self.prices.get((self.instance_type, az))
        return series.at(when) if series else None

    def heartbeat(self) -> list[dict]:
        reply = self.api.call("POST", f"/api/agents/{self.agent_id}/heartbeat", {
            "status": "online", "instance_id": self.instance_id, "instance_type": self.instance_type,
            "az": self.az, "mode": "spot"})
        return reply["commands"]

    def report_prices(self, when: datetime) -> None:
        pools = [{"instance_type": self.instance_type, "az": az, "price": float(p)}
                 for az in AZS if (p := self.price(az, when)) is not None]
        self.api.call("POST", f"/api/agents/{self.agent_id}/pricing-report", {
            "instance": {"instance_id": self.instance_id, "instance_type": self.instance_type,
                         "region": "eu-west-1", "az": self.az, "mode": "spot"},
            "pricing": {"on_demand_price": float(self.ondemand),
                        "current_spot_price": float(self.price(self.az, when) or 0) or None,
                        "spot_pools": pools}})

    def execute(self, command: dict, when: datetime, started: datetime) -> str:
        """Carry out a switch command as the real agent would, then report it."""
        target_az = command["target_pool_id"].rsplit(".", 1)[1] if command["target_pool_id"] else self.az
        old_id, old_az, new_id = self.instance_id, self.az, new_instance_id()
        self.api.call("POST", f"/api/agents/{self.agent_id}/commands/{command['id']}/executed",
                      {"success": True, "message": f"launched {new_id} in {target_az}"})
        self.api.call("POST", f"/api/agents/{self.agent_id}/switch-report", {
            "command_id": command["id"], "trigger": "manual",
            "old_instance": {"instance_id": old_id, "instance_type": self.instance_type,
                             "region": "eu-west-1", "az": old_az, "mode": "spot"},
            "new_instance": {"instance_id": new_id, "instance_type": self.instance_type,
                             "region": "eu-west-1", "az": target_az, "mode": command["target_mode"],
                             "ami_id": "ami-0abcdef1234567890"},
            "prices": {"on_demand": float(self.ondemand),
                       "old_spot": float(self.price(old_az, when)),
                       "new_spot": float(self.price(target_az, when))},
            "timing": {"switch_initiated_at": started.isoformat(),
                       "new_instance_launched_at": (started + timedelta(seconds=20)).isoformat(),
                       "new_instance_ready_at": (started + timedelta(seconds=95)).isoformat(),
                       "traffic_switched_at": (started + timedelta(seconds=97)).isoformat(),
                       "old_instance_terminated_at": (started + timedelta(seconds=120)).isoformat()}})
        self.instance_id, self.az = new_id, target_az
        return new_id


def summarize(client_id: str) -> dict:
    """What the tables recorded for the demo client (admin-side reads, not a request path)."""
    from chalicelib.tables import (AgentTable, CommandTable, InstanceTable, InterruptionTable, PoolTable,
                                   PricePointTable, PricingReportTable, ReplicaTable, SwitchTable)

    agents = list(AgentTable.query(client_id))
    reports = sum(PricingReportTable.count(a.agent_id) for a in agents)
    commands = Counter(c.status for a in agents for c in CommandTable.query(a.agent_id))
    switches = list(SwitchTable.query(client_id))
    instances = list(InstanceTable.by_client.query(client_id))
    pools = {p.pool_id: p for p in PoolTable.scan()}
    points = sum(PricePointTable.count(pid) for pid in pools)
    on_spot = [a for a in agents if a.current_pool_id in pools]
    spot_now = sum((pools[a.current_pool_id].latest_price or 0) for a in on_spot)
    ondemand = sum((pools[a.current_pool_id].ondemand_price or 0) for a in on_spot)
    events = sorted(InterruptionTable.query(client_id), key=lambda e: e.detected_at)
    replicas = [r for a in agents for r in ReplicaTable.query(a.agent_id)]
    return {
        "agents": len(agents), "agents_online": sum(a.status == "online" for a in agents),
        "instances_active": sum(i.is_active for i in instances), "instances_total": len(instances),
        "pricing_reports": reports, "price_points": points, "pools": len(pools),
        "commands": dict(commands), "switches": len(switches),
        "switch_hourly_savings": sum((s.hourly_savings or 0) for s in switches),
        "fleet_spot_per_hour": spot_now, "fleet_ondemand_per_hour": ondemand,
        "interruptions": [{
            "agent": next((a.logical_agent_id for a in agents if a.agent_id == e.agent_id), e.agent_id),
            "signal": e.signal_type, "source": e.source, "status": e.status, "action": e.response_action,
            "old": f"{e.instance_id} ({e.pool_id})", "new": f"{e.new_instance_id} ({e.new_pool_id or e.new_lifecycle})",
            "decided_s": _secs(e.detected_at, e.decided_at), "ready_s": _secs(e.detected_at, e.replacement_ready_at),
            "traffic_s": _secs(e.detected_at, e.traffic_moved_at), "old_terminated": e.old_terminated_at is not None,
        } for e in events],
        "standbys": Counter(r.status for r in replicas),
    }


def _secs(start, end) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 2)


def print_summary(s: dict, window: str) -> None:
    saving = (1 - s["fleet_spot_per_hour"] / s["fleet_ondemand_per_hour"]) * 100 if s[
        "fleet_ondemand_per_hour"] else 0
    commands = ", ".join(f"{n} {status}" for status, n in sorted(s["commands"].items())) or "none"
    print(f"""
Summary (read back from the tables)
  replayed window           {window}
  agents                    {s['agents']} registered, {s['agents_online']} online
  instances                 {s['instances_active']} active of {s['instances_total']} recorded
  pricing reports stored    {s['pricing_reports']}
  price points stored       {s['price_points']} across {s['pools']} pools
  commands                  {commands}
  switches recorded         {s['switches']}, savings impact {s['switch_hourly_savings']:+.4f} $/h
  fleet now                 {s['fleet_spot_per_hour']:.4f} $/h on spot vs {s['fleet_ondemand_per_hour']:.4f} $/h on-demand ({saving:.1f}% saved)
  standby replicas          {', '.join(f"{n} {st}" for st, n in sorted(s['standbys'].items())) or 'none'}
  interruptions handled     {len(s['interruptions'])}""")
    for e in s["interruptions"]:
        print(f"""    {e['agent']}: {e['signal']} via {e['source']} → {e['action']} [{e['status']}]
      {e['old']} → {e['new']}
      seconds after the warning: decided {e['decided_s']}, replacement running {e['ready_s']}, traffic moved \
{e['traffic_s']}; old instance terminated: {'yes' if e['old_terminated'] else 'not yet'}""")
    print()


def run(agents: int, cycles: int, start: datetime, switch_cycle: int, interrupt_cycle: int | None = None) -> dict:
    fleet = [FLEET[i % len(FLEET)] for i in range(agents)]
    types = {t for _, t, _ in fleet}
    print(f"Loading eu-west-1 spot prices for {', '.join(sorted(types))} ...", flush=True)
    prices = traces.load_spot_prices(traces.EU_WEST_1_PRICES, types)
    ondemand = traces.load_ondemand(traces.ONDEMAND_US_EAST_1)
    os.environ.setdefault("SPOT_LOCAL_CLOCK_SPEED", "600")  # the workflow's Wait states pass 600× faster
    interrupt_cycle = cycles // 2 if interrupt_cycle is None else interrupt_cycle
    stack = LocalStack(embedded_aws.free_port(), embedded_aws.free_port(), quiet=True, run_jobs=False)
    with stack:
        print(f"Local mode up: API {stack.api_url}, embedded AWS {stack.aws.endpoint}", flush=True)
        admin = Api(stack.api_url, admin_key=stack.admin_key)
        created = admin.call("POST", "/api/admin/clients/create", {"name": f"demo-{uuid.uuid4().hex[:6]}"})
        api = Api(stack.api_url, token=created["client_token"])
        sims = [SimulatedAgent(api, f"{name}-{i}" if i >= len(FLEET) else name, itype, az, prices,
                               ondemand[itype]) for i, (name, itype, az) in enumerate(fleet)]
        import boto3

        from chalicelib.observability import logger
        from localmode.invoke import invoke_schedule

        logger.setLevel("WARNING")  # keep the demo's output to its own lines and the summary
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        for sim in sims:
            sim.register(ec2)
        print(f"Client {created['client_id']} created; {len(sims)} agents registered on their instances",
              flush=True)
        standby_sim = sims[2] if len(sims) > 2 else None
        if standby_sim is not None:
            api.call("POST", f"/api/client/agents/{standby_sim.agent_id}/config",
                     {"manual_replica_enabled": True, "auto_terminate_enabled": True, "terminate_wait_seconds": 0})
            print(f"  {standby_sim.name} switched to manual-replica mode", flush=True)
        for cycle in range(cycles):
            when = start + cycle * CYCLE
            for sim in sims:
                for command in sim.heartbeat():
                    if command.get("command_type") in ("prepare_shutdown", "promote"):
                        api.call("POST", f"/api/agents/{sim.agent_id}/commands/{command['id']}/executed",
                                 {"success": True, "message": f"{command['command_type']} done"})
                        continue
                    new_id = sim.execute(command, when, datetime.now(timezone.utc))
                    print(f"  cycle {cycle:>3}: {sim.name} executed command {command['id']} "
                          f"→ now {new_id} in {sim.az}", flush=True)
                sim.report_prices(when)
            if cycle == switch_cycle:
                _force_cheapest_switch(api, sims[0], when)
            invoke_schedule("replica-coordinator", datetime.now(timezone.utc))
            if cycle == interrupt_cycle:
                for sim in [s for s in (sims[1] if len(sims) > 1 else None, standby_sim) if s is not None]:
                    event = sim.interrupt(stack)
                    print(f"  cycle {cycle:>3}: interruption warning for {sim.name} → {event['response_action']}, "
                          f"{event['new_instance_id']} serving {event['failover_time_ms'] / 1000:.1f} s after "
                          "the warning", flush=True)
            if cycle % 6 == 5 or cycle == cycles - 1:
                print(f"  cycle {cycle + 1:>3}/{cycles} replayed ({when:%Y-%m-%d %H:%M} UTC)", flush=True)
        invoke_schedule("health-monitor", datetime.now(timezone.utc))
        time.sleep(1.5)  # let the workflows finish retiring the old instances (Wait states at 600×)
        summary = summarize(created["client_id"])
    window = f"{start:%Y-%m-%d %H:%M} → {start + cycles * CYCLE:%Y-%m-%d %H:%M} UTC ({cycles} × 5 min)"
    print_summary(summary, window)
    return summary


def _force_cheapest_switch(api: Api, sim: SimulatedAgent, when: datetime) -> None:
    """The client asks to move the first agent to the cheapest other pool of its type."""
    options = [(p, az) for az in AZS if az != sim.az and (p := sim.price(az, when)) is not None]
    if not options:
        return
    price, az = min(options)
    pool = f"{sim.instance_type}.{az}"
    api.call("POST", f"/api/client/instances/{sim.instance_id}/force-switch",
             {"target": "pool", "pool_id": pool})
    print(f"  client forced a switch of {sim.name}: {sim.instance_type}.{sim.az} → {pool} "
          f"(spot {sim.price(sim.az, when)} → {price} $/h)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=24)
    parser.add_argument("--start", default="2022-03-01T00:00:00Z", type=traces.parse_ts)
    parser.add_argument("--switch-cycle", type=int, default=6)
    parser.add_argument("--interrupt-cycle", type=int, default=None, help="default: half-way")
    args = parser.parse_args(argv)
    run(args.agents, args.cycles, args.start, args.switch_cycle, args.interrupt_cycle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
