"""The failover benchmark runs all three paths end to end and reports what the tables recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_failover_bench_measures_each_path_from_the_recorded_timings(tmp_path):
    out = tmp_path / "failover.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_"))}
    result = subprocess.run([sys.executable, "-m", "bench.failover_bench", "--runs", "1", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {r["scenario"]: r for r in json.loads(out.read_text())}
    assert [r["action"] for r in rows.values()] == [
        "promoted-existing-replica", "emergency-spot-replacement", "on-demand-fallback"]
    for r in rows.values():
        assert 0 < r["decided_ms_p50"] <= r["ready_ms_p50"] <= r["serving_ms_p50"] <= r["completed_ms_p50"]
        assert r["aws_calls_to_serving"] > 0 and r["calls_to_serving_by_service"]["ec2"] >= 1
        assert r["calls_to_serving_by_service"]["stepfunctions"] == 1  # one StartExecution per warning
