"""The attacker walk of issue #12 in local mode (localmode/attack_walk.py), in a child process: local mode
needs a fresh interpreter (the test process has moto's in-process mock active)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_an_attacker_with_a_valid_client_token_changes_nothing_it_does_not_own():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_", "MOTO_"))}
    done = subprocess.run([sys.executable, "-m", "localmode.attack_walk", "--fuzz-per-route", "2"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, "\n".join([line for line in lines if line.startswith("FAIL")] or lines[-40:]) \
        + done.stderr[-3000:]
    assert any(line.startswith("PASS  fuzz:") for line in lines)
    assert sum(line.startswith("PASS") for line in lines) >= 30
