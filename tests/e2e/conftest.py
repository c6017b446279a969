"""Fixtures of the end-to-end tests (the root conftest's embedded AWS and API are theirs too)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from chalicelib import clock
from tests.e2e.legacy_v4 import Sim


@pytest.fixture
def sim(monkeypatch):
    """The legacy v4 replays' simulated clock, starting now; every handler reads it (tests/e2e/legacy_v4.py)."""
    simulation = Sim(datetime.now(timezone.utc))
    monkeypatch.setattr(clock, "now", lambda: simulation.now)
    return simulation
