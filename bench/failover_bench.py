"""Failover path: time from the interruption warning to "replacement serving", and AWS calls on it.

    python -m bench.failover_bench [--runs 10] [--json build/failover_bench.json]

In-process against moto (DynamoDB, EC2, Step Functions with execution on), through the real sentinel
handler, the real state machine from chalicelib/workflows/failover.asl.json and the real task
handlers (dispatched in-process, as local mode does). Three scenarios: a manual-replica agent with a
ready standby and an Elastic IP (promote), an auto-switch agent without standby (emergency spot
replacement), and no spot capacity (on-demand fallback).

"Serving" is ``traffic_moved_at`` on the interruption event. moto's instances are ``running`` at once,
so the times are the product's own processing (the 120 s budget minus EC2 boot); the Wait between
readiness checks is 5 s in AWS and skipped here. AWS calls are counted at botocore by the step that
made them (the Step Functions → Lambda task invocations are counted as ``states→lambda``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.update(AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench",
                  AWS_SECRET_ACCESS_KEY="bench", SPOT_STAGE="dev", SPOT_TENANCY="self-hosted", POWERTOOLS_METRICS_DISABLED="true",
                  POWERTOOLS_LOG_LEVEL="WARNING")
os.environ.pop("AWS_ENDPOINT_URL", None)

from botocore.client import BaseClient  # noqa: E402
from moto import mock_aws  # noqa: E402

from localmode.embedded_aws import image_id  # noqa: E402

REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d")
SERVING_STEPS = ("sentinel", "plan", "launch", "check_ready", "handover", "states→lambda")
_label = threading.local()
CALLS: dict[str, Counter] = defaultdict(Counter)
_original = BaseClient._make_api_call


def _counting(self, operation_name, api_params):
    service = self.meta.service_model.service_name
    label = getattr(_label, "step", None) or ("states→lambda" if service == "lambda" else "other")
    CALLS[label][f"{service}:{operation_name}"] += 1
    return _original(self, operation_name, api_params)


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Harness:
    """One tenant, the state machine, and helpers to stage each scenario."""

    def __init__(self):
        import boto3
        from chalice.test import Client

        from app import app
        from chalicelib import failover
        from chalicelib.auth import hash_secret
        from chalicelib.settings import get_settings
        from chalicelib.tables.provisioning import ensure_tables
        from localmode.workflows import compress_time, ensure_failover_state_machine, install_lambda_bridge

        ensure_tables()
        install_lambda_bridge("dev")
        compress_time(None)
        ensure_failover_state_machine("dev")
        self.admin_key = "bench-admin"
        boto3.client("ssm").put_parameter(Name=get_settings().admin_key_parameter, Type="SecureString",
                                          Value=hash_secret(self.admin_key), Overwrite=True)
        self.client = Client(app, stage_name="dev")
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.image = image_id(self.ec2)
        real_run_step = failover.run_step

        def labelled(step, state):
            _label.step = step.__name__
            try:
                return real_run_step(step, state)
            finally:
                _label.step = None

        failover.run_step = labelled

    def call(self, method, path, body=None, token=None, admin=False):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if admin:
            headers["X-Admin-Key"] = self.admin_key
        response = getattr(self.client.http, method.lower())(path, headers=headers,
                                                             body=json.dumps(body) if body is not None else None)
        return json.loads(response.body)

    def agent(self, *, manual: bool, eip: bool) -> dict:
        from chalicelib.tables import AgentTable

        token = self.call("POST", "/api/admin/clients/create", {"name": f"b-{uuid.uuid4().hex[:8]}", "legacy_agents": True},
                          admin=True)["client_token"]
        itype = f"m5.b{uuid.uuid4().hex[:8]}xl"
        instance = self.ec2.run_instances(ImageId=self.image, InstanceType=itype, MinCount=1, MaxCount=1,
                                          Placement={"AvailabilityZone": ZONES[0]})["Instances"][0]["InstanceId"]
        reply = self.call("POST", "/api/agents/register", {
            "instance_id": instance, "instance_type": itype, "region": REGION, "az": ZONES[0],
            "ami_id": self.image, "logical_agent_id": f"bench-{uuid.uuid4().hex[:6]}", "mode": "spot"}, token)
        agent_id, client_id = reply["agent_id"], reply["client_id"]
        self.call("POST", f"/api/agents/{agent_id}/pricing-report", {
            "instance": {"instance_type": itype, "region": REGION},
            "pricing": {"on_demand_price": 0.192, "spot_pools": [
                {"pool_id": f"{itype}.{z}", "price": 0.03 + 0.004 * i} for i, z in enumerate(ZONES)]}}, token)
        config = {"terminate_wait_seconds": 0}
        if manual:
            config.update(manual_replica_enabled=True, auto_switch_enabled=False)
        if eip:
            alloc = self.ec2.allocate_address(Domain="vpc")["AllocationId"]
            self.ec2.associate_address(AllocationId=alloc, InstanceId=instance)
            config.update(handover="eip", eip_allocation_id=alloc)
        AgentTable(client_id, agent_id).update(actions=[getattr(AgentTable.config, k).set(v) for k, v in config.items()])
        if manual:
            for _ in range(2):  # create the standby, then see it running
                self.schedule("replica-coordinator")
        return {"client_id": client_id, "agent_id": agent_id, "instance_id": instance}

    def schedule(self, name):
        event = self.client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                     detail={}, resources=[])
        event["time"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.client.lambda_.invoke(name, event).payload

    def interrupt(self, target: dict) -> dict:
        """Send the warning; returns the interruption's timings once its execution has finished."""
        import boto3

        from chalicelib.repositories import interruptions
        from localmode.eventbridge import through_queue

        sent = datetime.now(timezone.utc)
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "EC2 Spot Instance Interruption Warning",
                 "source": "aws.ec2", "account": "123456789012", "region": REGION,
                 "time": sent.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "resources": [],
                 "detail": {"instance-id": target["instance_id"], "instance-action": "terminate"}}
        _label.step = "sentinel"
        try:
            (result,) = through_queue([event], lambda name, payload: self.client.lambda_.invoke(name, payload).payload)
        finally:
            _label.step = None
        sfn = boto3.client("stepfunctions", region_name=REGION)
        while sfn.describe_execution(executionArn=result["execution_arn"])["status"] == "RUNNING":
            time.sleep(0.002)
        row = interruptions.get(target["client_id"], result["interruption_id"])

        def ms(at):
            return None if at is None else (at - row.detected_at).total_seconds() * 1000

        return {"action": row.response_action, "decided_ms": ms(row.decided_at),
                "ready_ms": ms(row.replacement_ready_at), "serving_ms": ms(row.traffic_moved_at),
                "completed_ms": ms(row.completed_at)}


def scenario(harness: Harness, name: str, runs: int, *, manual=False, eip=False, no_spot=False) -> dict:
    from botocore.exceptions import ClientError

    from chalicelib.aws import ec2 as adapter

    client = adapter._client("ec2", REGION)
    real_run = client.run_instances
    if no_spot:
        def refuse_spot(**kwargs):
            if "InstanceMarketOptions" in kwargs:
                raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}},
                                  "RunInstances")
            return real_run(**kwargs)
        client.run_instances = refuse_spot
    try:
        samples, calls = [], []
        for _ in range(runs):
            target = harness.agent(manual=manual, eip=eip)
            CALLS.clear()
            BaseClient._make_api_call = _counting
            try:
                samples.append(harness.interrupt(target))
            finally:
                BaseClient._make_api_call = _original
            calls.append({label: dict(c) for label, c in CALLS.items()})
    finally:
        client.run_instances = real_run
    serving = [s["serving_ms"] for s in samples]
    path_calls = [sum(sum(c.get(label, {}).values()) for label in SERVING_STEPS) for c in calls]
    all_calls = [sum(sum(v.values()) for label, v in c.items() if label != "other") for c in calls]  # other = this harness
    by_service: Counter = Counter()
    for c in calls[-1:]:
        for label in SERVING_STEPS:
            for op, n in c.get(label, {}).items():
                by_service[op.split(":")[0]] += n
    return {
        "scenario": name, "runs": runs, "action": samples[-1]["action"],
        "serving_ms_p50": round(statistics.median(serving), 1), "serving_ms_p95": round(percentile(serving, 95), 1),
        "decided_ms_p50": round(statistics.median(s["decided_ms"] for s in samples), 1),
        "ready_ms_p50": round(statistics.median(s["ready_ms"] for s in samples), 1),
        "completed_ms_p50": round(statistics.median(s["completed_ms"] for s in samples), 1),
        "aws_calls_to_serving": round(statistics.median(path_calls)), "aws_calls_total": round(statistics.median(all_calls)),
        "calls_to_serving_by_service": dict(by_service), "calls_by_step": calls[-1],
    }


def run(runs: int) -> list[dict]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        sys.path.insert(0, str(ROOT))
        harness = Harness()
        harness.interrupt(harness.agent(manual=False, eip=False))  # warm-up: imports, first clients
        return [scenario(harness, "promote ready standby + EIP", runs, manual=True, eip=True),
                scenario(harness, "emergency spot replacement", runs),
                scenario(harness, "no spot capacity → on-demand", runs, no_spot=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = run(args.runs)
    print(f"{'scenario':34} {'action':28} {'serving p50':>11} {'p95':>8} {'decided':>8} {'ready':>8} "
          f"{'AWS calls→serving':>18} {'total':>6}")
    for r in results:
        print(f"{r['scenario']:34} {r['action']:28} {r['serving_ms_p50']:>9.1f}ms {r['serving_ms_p95']:>6.1f}ms "
              f"{r['decided_ms_p50']:>6.1f}ms {r['ready_ms_p50']:>6.1f}ms {r['aws_calls_to_serving']:>18} "
              f"{r['aws_calls_total']:>6}")
        print(f"{'':34} calls to serving by service: {r['calls_to_serving_by_service']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
