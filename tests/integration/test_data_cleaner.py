"""The data cleaner (chalicelib/jobs/data_cleaner.py) under moto: retention beyond TTL, bounded, idempotent."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.jobs import data_cleaner
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import price_rollups as rollups
from chalicelib.settings import get_settings
from chalicelib.tables.commands import CommandTable
from chalicelib.tables.notifications import NotificationTable
from chalicelib.tables.pools import PricePointTable
from components.data_valve import PricePoint
from components.price_buckets import HOUR, floor_to
from tests.api._support import random_instance_type
from tests.conftest import invoke_schedule, registration


@pytest.fixture
def unbounded(monkeypatch):
    """Every client of the shared moto fits in one run (other tests leave clients behind)."""
    wide = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_deletes=1_000_000)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: wide)
    return wide


def _stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%S%fZ")


def _notification(client_id: str, created: datetime, read: bool, tag: str) -> str:
    nid = f"{_stamp(created)}-{tag}"
    NotificationTable(client_id, nid, kind="test", message="m", is_read=read, created_at=created,
                      expires_at=created + timedelta(days=30)).save()
    return nid


def _command(agent_id: str, client_id: str, status: str, created: datetime, finished: datetime | None,
             tag: str) -> str:
    cid = f"cmd-{_stamp(created)}-{tag}"
    CommandTable(agent_id, cid, client_id=client_id, command_type="switch", priority=25, status=status,
                 created_at=created, finished_at=finished).save()
    return cid


def test_old_read_notifications_and_finished_commands_go(make_tenant, unbounded):
    """GIVEN a client's notifications and commands of every age and state WHEN the cleaner runs THEN read
    notifications older than 7 days and commands that finished more than 7 days ago (TTL not yet applied,
    or a final row without TTL) are deleted; unread, recent and active ones stay; a second run deletes
    nothing more."""
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration())
    assert status == 200, reply
    agent_id = reply["agent_id"]
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=10), now - timedelta(days=2)
    gone_n = _notification(client_id, old, True, "old-read")
    kept_n = [_notification(client_id, old, False, "old-unread"), _notification(client_id, recent, True, "new-read")]
    gone_c = [_command(agent_id, client_id, "completed", old, old, "done"),
              _command(agent_id, client_id, "timed_out", old, None, "no-finish")]
    kept_c = [_command(agent_id, client_id, "pending", old, None, "pending"),
              _command(agent_id, client_id, "failed", old, recent, "new-finish")]
    first = data_cleaner.run(now)
    assert first["notifications"] >= 1 and first["commands"] >= 2
    left_n = {r.notification_id for r in NotificationTable.query(client_id)}
    left_c = {r.command_id for r in CommandTable.query(agent_id)}
    assert gone_n not in left_n and set(kept_n) <= left_n
    assert not set(gone_c) & left_c and set(kept_c) <= left_c
    again = data_cleaner.run(now)
    assert again["notifications"] == 0 and again["commands"] == 0
    assert {r.command_id for r in CommandTable.query(agent_id)} == left_c


def test_deletes_are_bounded_and_the_walk_resumes(make_tenant, monkeypatch):
    """GIVEN more deletable rows than one run may delete WHEN the cleaner runs THEN it stops at its budget,
    and later runs finish the work."""
    client_id, _ = make_tenant()
    now = datetime.now(UTC)
    for i in range(5):
        _notification(client_id, now - timedelta(days=20, minutes=i), True, f"r{i}")
    tight = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_deletes=2)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: tight)
    runs = 0
    while any(r.is_read for r in NotificationTable.query(client_id)):
        result = data_cleaner.run(now)
        assert result["notifications"] + result["commands"] + result["price_points"] <= 2
        runs += 1
        assert runs < 500
    assert runs >= 3


def test_raw_points_go_once_rolled_up_keeping_the_price_in_force(make_tenant, unbounded):
    """GIVEN a pool agents run, with AWS points over 20 days, rolled up from 18 days back WHEN the cleaner
    runs THEN the raw points older than 14 days inside the rolled-up span are deleted except the newest one
    before the cutoff (the price still in force), the rollups stay, and points before the rolled-up span
    are left to TTL."""
    itype = random_instance_type()
    _, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(instance_type=itype))
    assert status == 200, reply
    pool_id = f"{itype}.eu-west-1a"
    now = datetime.now(UTC)
    stamps = [now - timedelta(days=20) + timedelta(hours=12 * i) for i in range(40)]
    pool_repo.store_server_prices([PricePoint(pool_id, t, Decimal("0.03") + Decimal(i % 3) / 1000,
                                              source_agent_id="aws") for i, t in enumerate(stamps)], now)
    since = floor_to(now - timedelta(days=18), HOUR)
    rollups.mark_rolled(pool_id, floor_to(now, HOUR), now, since=since)
    cutoff = now - timedelta(days=14)
    result = data_cleaner.run(now)
    assert result["price_points"] > 0
    left = [r.ts for r in PricePointTable.query(pool_id)]
    before_cutoff_in_span = [t for t in stamps if since <= t < cutoff]
    assert max(before_cutoff_in_span) in left  # the price in force at the cutoff
    assert not set(before_cutoff_in_span[:-1]) & set(left)
    assert [t for t in stamps if t < since] == [t for t in left if t < since]  # never rolled up: TTL's
    assert [t for t in stamps if t >= cutoff] == [t for t in left if t >= cutoff]
    assert data_cleaner.run(now)["price_points"] == 0
    # what the aggregator reads at its window start is still right
    series, _ = rollups.raw_series(pool_id, cutoff)
    assert series["aws"][0][0] == max(before_cutoff_in_span)


def test_scheduled_handlers_run(api, unbounded):
    """Both jobs are wired in app.py and answer a scheduled event."""
    assert "hours_written" in invoke_schedule(api, "pricing-aggregator")
    assert "notifications" in invoke_schedule(api, "data-cleaner")


def test_local_mode_runs_both_jobs_on_their_schedule(aws_tables):
    """Local mode (server and demo) reads the schedules from the app: the aggregator every 15 minutes, the
    cleaner daily."""
    from localmode.invoke import scheduled_handlers
    from localmode.schedules import period_seconds

    handlers = scheduled_handlers()
    assert period_seconds(handlers["pricing-aggregator"]) == 900
    assert period_seconds(handlers["data-cleaner"]) == 86400
