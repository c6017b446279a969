"""API-test fixtures: a fixed-figure savings repository for the dashboard routes' own tests (the real
roll-up is tested in tests/api/test_savings.py), and one rate-limit window for tests that read its count."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest


class FakeSavings:
    """The savings repository's interface (issue #13 contract) with fixed figures; records its calls."""

    def __init__(self):
        self.calls: list[tuple] = []

    def client_summary(self, client_id, now):
        self.calls.append(("client_summary", client_id))
        return {"total_savings": 12.5, "total_actual_cost": 7.5, "total_baseline_cost": 20.0,
                "savings_percent": 62.5, "month_to_date_savings": 3.25, "last_30d_savings": 4.0,
                "currency": "USD", "as_of": None}

    def daily(self, client_id, days, now):
        self.calls.append(("daily", client_id, days))
        return [{"date": f"2026-01-{d:02d}", "baseline_cost": 2.0, "actual_cost": 0.5, "savings": 1.5,
                 "spot_hours": 24, "ondemand_hours": 0} for d in range(1, 3)]

    def instance_summary(self, client_id, instance_id, now):
        self.calls.append(("instance_summary", client_id, instance_id))
        return {"total_savings": 9.75, "last_30d_savings": 1.25, "total_actual_cost": 1.0,
                "total_baseline_cost": 10.75}

    def agent_summary(self, client_id, agent_id, now):
        self.calls.append(("agent_summary", client_id, agent_id))
        return self.instance_summary(client_id, agent_id, now)


@pytest.fixture
def fake_savings(monkeypatch):
    """The dashboard's savings figures from ``FakeSavings`` (the routes never compute savings themselves)."""
    from chalicelib.api import dashboard

    fake = FakeSavings()
    monkeypatch.setattr(dashboard, "_savings", lambda: fake)
    return fake


@pytest.fixture
def keep_the_active_model():
    """The active-model pointer is global: put it back as it was after a test that activates or rolls back
    models, so later tests (the scorer's, the isolation walk's ``rollback``) see the state they expect."""
    from chalicelib import model_store
    from chalicelib.tables import ModelRegistryTable

    before = model_store.pointer()
    yield
    if before is None:
        ModelRegistryTable(model_store.MODEL_NAME, model_store.POINTER).delete()
    else:
        before.save()


@pytest.fixture
def one_rate_window(monkeypatch):
    """The rate limiter's wall clock held inside one window: a test comparing a client's count before and after
    a request would otherwise fail when the request lands in the next window (a fixed 60 s window rolls over)."""
    from chalicelib import rate_limit

    monkeypatch.setattr(rate_limit, "wall_clock", lambda: datetime(2026, 3, 2, 9, 0, 15, tzinfo=timezone.utc))


@pytest.fixture
def handlers_now(monkeypatch):
    """The handlers' clock (``chalicelib.clock.now``) held at the moment this fixture is set up; returns it. A test
    that checks what a route dated by its clock (today's chart day, this month) against its own reading of the wall
    clock would otherwise fail when midnight, or the end of a month, passes between the two."""
    from chalicelib import clock

    now = datetime.now(timezone.utc)
    monkeypatch.setattr(clock, "now", lambda: now)
    return now


@pytest.fixture
def started(monkeypatch):
    """StartExecution recorded instead of run: [(execution name, input)] (the security walks of the event side: the
    workflow itself is tested in tests/e2e)."""
    from chalicelib.aws import stepfunctions
    from tests.e2e.failover_support import ACCOUNT, REGION

    calls: list[tuple[str, dict]] = []

    def start(name, payload, state_machine_arn=None):
        calls.append((name, payload))
        return f"arn:aws:states:{REGION}:{ACCOUNT}:execution:failover:{name}"

    monkeypatch.setattr(stepfunctions, "start", start)
    return calls
