"""``bench/load.py`` on a small fleet: the same code path as the 500-agent run (local mode in child
processes, the real agent's HTTP client, one PutEvents call with every warning, the real state
machine), asserted from the tables it checks: nothing lost, no 5xx, one replacement per interruption.

Runs in a fresh interpreter because this test process has moto's in-process mock active.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_a_small_fleet_loses_nothing_and_each_interrupted_primary_gets_exactly_one_replacement(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_"))}
    env["PYTHONPATH"] = str(ROOT / "agent")  # this checkout's agent (the venv's install may be another's)
    out = tmp_path / "load.json"
    # 6 agents in 2 clients (one legacy-mode: v4 agents polling pending-commands), 1 minute, 3 warnings at
    # once after 15 s; Wait states 60× shorter so the workflows finish within the minute.
    result = subprocess.run([sys.executable, "-m", "bench.load", "--agents", "6", "--agents-per-client", "3",
                             "--legacy-share", "0.5", "--minutes", "1", "--interruptions", "3", "--interrupt-at", "0.25",
                             "--wait-speed", "60", "--concurrency", "4", "--quiet", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert result.returncode == (0 if data["ok"] else 1)
    checks = data["checks"]
    failed = {name: c for name, c in checks.items() if not c["ok"]}
    assert not failed, (failed, data["problems"], data["errors"])
    routes = {r["route"]: r for r in data["routes"]}
    # every route an agent uses was exercised, and every request was answered 2xx
    for route in ("POST /api/agents/register", "POST /api/agents/{id}/heartbeat",
                  "POST /api/agents/{id}/pricing-report", "GET /api/agents/{id}/pending-commands",
                  "POST /api/agents/{id}/termination-imminent"):
        assert routes[route]["requests"] > 0, route
    assert all(r["2xx"] == r["requests"] for r in data["routes"]), data["routes"]
    assert sum(r["5xx"] for r in data["routes"]) == 0
    # nothing lost: what the agents sent is what the tables hold
    assert checks["agents registered"]["found"] == 6
    reports = checks["pricing reports recorded (agents)"]
    assert reports["found"] == reports["expected"] >= 6 and reports["reports_accepted"] >= reports["raw_rows"] >= 6
    assert checks["last heartbeat recorded"]["found"] == 6
    # the mass interruption: 3 events, 3 executions, 3 outcomes, exactly one replacement each
    assert data["interruptions"] == 3
    for name in ("one interruption event per warning", "one execution per warning, succeeded",
                 "outcome recorded (resolved)", "exactly one replacement per interrupted primary"):
        assert checks[name]["found"] == 3, name
    assert checks["one execution per warning, succeeded"]["executions_total"] == 3  # the agents' notices were duplicates
