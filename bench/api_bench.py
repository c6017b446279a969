"""API latency and DynamoDB calls per request, in-process against moto; plus app.py import time.

    python -m bench.api_bench [--requests 300] [--json build/api_bench.json]

Measures the real handlers through chalice.test.Client (no HTTP server, so the numbers are the
handler's own work plus moto's in-process DynamoDB). DynamoDB calls are counted at the botocore
client, so they are what a deployed function would send. Results go to docs/benchmarks.md by hand.

Both ways an agent authenticates are measured: a legacy (v4) agent with the client token, and a verified
agent with its own credential (registered with an identity document signed by local mode's stand-in
for AWS, which the bench trusts as the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.update(AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench",
                  AWS_SECRET_ACCESS_KEY="bench", SPOT_STAGE="dev", SPOT_TENANCY="self-hosted", POWERTOOLS_METRICS_DISABLED="true",
                  POWERTOOLS_LOG_LEVEL="WARNING")
os.environ.pop("AWS_ENDPOINT_URL", None)

from botocore.client import BaseClient  # noqa: E402
from moto import mock_aws  # noqa: E402

CALLS: Counter = Counter()
AWS_SECONDS = [0.0]
_original = BaseClient._make_api_call


def _counting(self, operation_name, api_params):
    """Count DynamoDB operations and the time spent inside AWS calls (moto here, the network in AWS)."""
    if self.meta.service_model.service_name == "dynamodb":
        CALLS[operation_name] += 1
    started = time.perf_counter()
    try:
        return _original(self, operation_name, api_params)
    finally:
        AWS_SECONDS[0] += time.perf_counter() - started


POOLS_20 = [f"{t}.eu-west-1{az}" for t in ("m5.large", "m5.xlarge", "c5.large", "c5.xlarge", "r5.large",
                                              "r5.xlarge", "t3.large") for az in "abc"][:20]


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def measure(call, n: int) -> dict:
    """Run ``call`` n times; latency percentiles (ms) and DynamoDB calls per request."""
    latencies, own, per_request = [], [], []
    for _ in range(n):
        CALLS.clear()
        AWS_SECONDS[0] = 0.0
        started = time.perf_counter()
        status = call()
        elapsed = time.perf_counter() - started
        latencies.append(elapsed * 1000)
        own.append((elapsed - AWS_SECONDS[0]) * 1000)
        per_request.append(sum(CALLS.values()))
        assert status == 200, status
    breakdown = dict(CALLS)
    return {"requests": n, "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "mean_ms": round(statistics.mean(latencies), 2),
            "own_p50_ms": round(percentile(own, 50), 2), "own_p99_ms": round(percentile(own, 99), 2),
            "dynamodb_calls": statistics.mode(per_request), "dynamodb_calls_max": max(per_request),
            "last_request_ops": breakdown}


def import_time(runs: int = 5) -> dict:
    """Median cold import of app.py in a fresh interpreter, and whether ML libraries got loaded."""
    code = ("import time,sys; t=time.perf_counter(); import app; d=time.perf_counter()-t; "
            "print(d, any(m in sys.modules for m in ('sklearn','numpy','scipy')))")
    samples, heavy = [], False
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             check=True, env={**os.environ}).stdout.split()
        samples.append(float(out[0]) * 1000)
        heavy = heavy or out[1] == "True"
    return {"median_ms": round(statistics.median(samples), 1), "runs": runs, "imports_ml_libraries": heavy}


def run(n: int) -> dict:
    with mock_aws():
        import boto3
        from chalice.test import Client

        from chalicelib.auth import hash_secret
        from chalicelib.settings import get_settings
        from chalicelib.tables.provisioning import ensure_tables

        from chalicelib import identity_documents

        # Trust local mode's signing certificate as AWS's (as tests/conftest.py's aws_signs_locally does).
        identity_documents.trusted_certificates = lambda region: [identity_documents.local_certificate()]
        ensure_tables()
        admin_key = "bench-admin"
        boto3.client("ssm").put_parameter(Name=get_settings().admin_key_parameter, Type="SecureString",
                                          Value=hash_secret(admin_key), Overwrite=True)
        from app import app

        BaseClient._make_api_call = _counting
        try:
            with Client(app, stage_name="dev") as client:
                return _scenarios(client, admin_key, n)
        finally:
            BaseClient._make_api_call = _original


def _scenarios(client, admin_key: str, n: int) -> dict:
    def post(path, body, headers):
        return client.http.post(path, headers={"Content-Type": "application/json", **headers},
                                body=json.dumps(body))

    created = json.loads(post("/api/admin/clients/create", {"name": f"bench-{uuid.uuid4().hex[:6]}",
                                                         "legacy_agents": True},
                              {"X-Admin-Key": admin_key}).body)
    auth = {"Authorization": f"Bearer {created['client_token']}"}
    # The bench sends far more than a client's default rate limit allows; the limiter's UpdateItem is
    # still measured on every request.
    post(f"/api/admin/clients/{created['client_id']}/rate-limit", {"requests_per_window": 1_000_000},
         {"X-Admin-Key": admin_key})
    # The agent declares the report's types interchangeable: an agent reports only pools it may run on.
    reg = {"instance_id": "i-0123456789abcdef0", "instance_type": "m5.large", "region": "eu-west-1",
           "az": "eu-west-1a", "logical_agent_id": "bench-agent", "mode": "spot",
           "instance_types": sorted({p.rsplit(".", 1)[0] for p in POOLS_20})}
    agent_id = json.loads(post("/api/agents/register", reg, auth).body)["agent_id"]
    from localmode.identity_signer import signed_identity

    verified_reg = {**reg, "instance_id": "i-0fedcba9876543210", "logical_agent_id": "bench-verified"}
    document, signature = signed_identity(instance_id=verified_reg["instance_id"], instance_type="m5.large",
                                          az="eu-west-1a", region="eu-west-1")
    verified = json.loads(post("/api/agents/register", {**verified_reg, "identity_document": document,
                                                        "identity_signature": signature}, auth).body)
    credential = {"Authorization": f"Bearer {verified['agent_credential']}"}
    verified_id = verified["agent_id"]
    report = {"instance": {"instance_id": reg["instance_id"], "instance_type": "m5.large",
                           "region": "eu-west-1", "az": "eu-west-1a", "mode": "spot"},
              "pricing": {"on_demand_price": 0.096, "current_spot_price": 0.036,
                          "spot_pools": [{"pool_id": p, "price": 0.03 + i / 1000}
                                         for i, p in enumerate(POOLS_20)]}}
    return {
        "heartbeat": measure(lambda: post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"},
                                          auth).status_code, n),
        "pricing_report_20_pools": measure(
            lambda: post(f"/api/agents/{agent_id}/pricing-report", report, auth).status_code, n),
        "pending_commands": measure(lambda: client.http.get(
            f"/api/agents/{agent_id}/pending-commands", headers=auth).status_code, n),
        "heartbeat_credential": measure(lambda: post(f"/api/agents/{verified_id}/heartbeat", {"status": "online"},
                                                     credential).status_code, n),
        "pending_commands_credential": measure(lambda: client.http.get(
            f"/api/agents/{verified_id}/pending-commands", headers=credential).status_code, n),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {"endpoints": run(args.requests), "import_app": import_time()}
    print(f"{'endpoint':<30}{'p50 ms':>9}{'p99 ms':>9}{'own p50':>9}{'own p99':>9}{'calls (max)':>13}")
    for name, r in results["endpoints"].items():
        print(f"{name:<30}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['own_p50_ms']:>9}{r['own_p99_ms']:>9}"
              f"{r['dynamodb_calls']:>8} ({r['dynamodb_calls_max']})   {r['last_request_ops']}")
    imp = results["import_app"]
    print(f"import app.py (fresh interpreter, median of {imp['runs']}): {imp['median_ms']} ms; "
          f"ML libraries imported: {imp['imports_ml_libraries']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
