"""The trace replay (work in progress for the demo issue) runs end to end on a short window and its
summary is what the recorded rows say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_a_short_replay_runs_the_agents_and_reports_from_the_tables(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_"))}
    out, page = tmp_path / "replay.json", tmp_path / "report.html"
    result = subprocess.run([sys.executable, "-m", "localmode.replay", "--days", "0.1", "--agents", "3",
                             "--html", str(page), "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    summary, raw = data["summary"], data["raw"]
    assert summary["agents"] == 3 == len(raw["agents"])
    assert summary["instances"] == len(raw["instances"])
    warnings = [e for e in raw["interruptions"] if not e["signal_type"].startswith("rebalance")]
    assert summary["interruptions"] == len(warnings)
    assert summary["switches"] == len(raw["switches"]) and summary["decisions"] == len(raw["decisions"])
    assert summary["cost_usd"] > 0 and summary["ondemand_usd"] > 0
    assert {e["source"] for e in warnings} <= {"eventbridge"}  # the agents' IMDS reports were duplicates
    assert "<svg" in page.read_text() and "Cumulative cost" in page.read_text()
