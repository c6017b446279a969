"""The data cleaner (chalicelib/jobs/data_cleaner.py) under moto: retention beyond TTL, bounded, idempotent."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.jobs import data_cleaner
from chalicelib.repositories import clients, commands, job_state
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import price_rollups as rollups
from chalicelib.settings import get_settings
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.commands import CommandTable
from chalicelib.tables.notifications import NotificationTable
from chalicelib.tables.pools import PricePointTable
from components.data_valve import PricePoint
from components.price_buckets import HOUR, floor_to
from tests.api._support import random_instance_type
from tests.conftest import invoke_schedule, registration
from tests.integration.test_risk_scorer_scale import dynamodb_calls


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


def _walk_from(client_id: str, now: datetime) -> None:
    """Point the cleaner's walk at the client: its saved position is the listing position just before it (the
    shared moto holds every earlier test's clients, which the walk would otherwise go through first)."""
    token, before = None, None
    while True:
        page = clients.list_page(50, token)
        for client in page.items:
            if client.client_id == client_id:
                job_state.set_position(data_cleaner.CLIENT_WALK, {"next_token": before, "after_agent": None}, now)
                return
            before = clients.token_after(client)
        token = page.next_token
        assert token, f"{client_id} is not listed"


def _agents_with_commands(caller, client_id: str, n: int, old: datetime) -> tuple[list[str], set[str], set[str]]:
    """``n`` registered agents, each with a command that finished at ``old`` and a pending one; returns the
    agents in id order, the old finished commands and the pending ones."""
    ids, gone, kept = [], set(), set()
    for i in range(n):
        status, reply = caller.post("/api/agents/register", registration())
        assert status == 200, reply
        agent_id = reply["agent_id"]
        ids.append(agent_id)
        gone.add((agent_id, _command(agent_id, client_id, "completed", old, old, f"done{i}")))
        kept.add((agent_id, _command(agent_id, client_id, "pending", old, None, f"pending{i}")))
    return sorted(ids), gone, kept


def _commands_left(agent_ids: list[str]) -> set[tuple[str, str]]:
    return {(a, r.command_id) for a in agent_ids for r in CommandTable.query(a, consistent_read=True)}


@pytest.fixture
def queried(monkeypatch) -> list[str]:
    """The agents whose commands the cleaner queries (``commands.delete_finished_before`` calls), in order."""
    seen: list[str] = []
    real_delete = commands.delete_finished_before

    def spy(agent_id, cutoff, budget):
        seen.append(agent_id)
        return real_delete(agent_id, cutoff, budget)

    monkeypatch.setattr(commands, "delete_finished_before", spy)
    return seen


def test_a_client_larger_than_a_run_is_finished_over_runs_then_the_walk_wraps(make_tenant, monkeypatch, queried):
    """GIVEN a client with 7 agents, a client after it with 1, and a cap of 3 agents a run WHEN the cleaner runs
    from the first client's position THEN each run queries the commands of at most 3 agents, continuing after
    the last agent done (3, 3, then the last one and the next client's), every old finished command goes and
    the pending ones stay, no agent is queried twice; the walk is then complete and the next run starts from
    the first client of the listing."""
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    big_id, big = make_tenant()
    small_id, small = make_tenant()
    big_agents, gone, kept = _agents_with_commands(big, big_id, 7, old)
    small_agents, small_gone, small_kept = _agents_with_commands(small, small_id, 1, old)
    capped = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_agents=3,
                                 cleaner_max_deletes=1_000_000)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: capped)
    _walk_from(big_id, now)

    runs = []
    for _ in range(3):
        queried.clear()
        result = data_cleaner.run(now)
        runs.append(list(queried))
        assert len(queried) <= 3 and result["agents"] == len(queried)

    assert runs == [big_agents[:3], big_agents[3:6], big_agents[6:] + small_agents]
    assert _commands_left(big_agents + small_agents) == kept | small_kept
    assert not (gone | small_gone) & _commands_left(big_agents + small_agents)
    assert job_state.position(data_cleaner.CLIENT_WALK) == {"next_token": None, "after_agent": None}

    listed: list[str | None] = []
    real_page = clients.list_page
    monkeypatch.setattr(clients, "list_page", lambda limit, token: listed.append(token) or real_page(limit, token))
    queried.clear()
    data_cleaner.run(now)
    assert listed[0] is None  # wrapped: from the first client
    assert len(queried) <= 3


def test_a_run_resumes_at_the_agent_that_used_up_the_delete_budget(make_tenant, monkeypatch, queried):
    """GIVEN a client's agents a0, a1, a2 (id order) with 1, 3 and 1 old finished commands and a budget of 3
    deletes a run WHEN the cleaner runs twice from the client THEN the first run queries a0 and a1 and stops at
    the budget; the second resumes at a1 (not counted done: it may have had more), never re-queries a0, and
    every old finished command is gone."""
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    client_id, caller = make_tenant()
    agent_ids, _, _ = _agents_with_commands(caller, client_id, 3, old)
    for i in range(2):
        _command(agent_ids[1], client_id, "completed", old, old, f"more{i}")
    tight = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_agents=100_000,
                                cleaner_max_deletes=3)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: tight)
    _walk_from(client_id, now)

    assert data_cleaner.run(now)["commands"] == 3
    assert queried == agent_ids[:2]
    queried.clear()
    assert data_cleaner.run(now)["commands"] == 2
    assert queried == agent_ids[1:]
    assert {r.status for a in agent_ids for r in CommandTable.query(a, consistent_read=True)} == {"pending"}


def test_raw_points_of_a_priced_pool_go_without_reading_an_agent(make_tenant, monkeypatch):
    """GIVEN a pool priced in the last day that no agent runs on (as the pricing aggregator sees it: it rolls
    up ``pools.priced_page``), rolled up from 18 days back WHEN the cleaner runs THEN its raw points past 14
    days go, and the agents table is never scanned (the walk reads agents by Query only)."""
    client_id, _ = make_tenant()
    pool_id = f"{random_instance_type()}.eu-west-1b"
    now = datetime.now(UTC)
    stamps = [now - timedelta(days=20) + timedelta(hours=12 * i) for i in range(40)]
    pool_repo.store_server_prices([PricePoint(pool_id, t, Decimal("0.03"), source_agent_id="aws") for t in stamps],
                                  now)
    rollups.mark_rolled(pool_id, floor_to(now, HOUR), now, since=floor_to(now - timedelta(days=18), HOUR))
    wide = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_deletes=1_000_000)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: wide)
    _walk_from(client_id, now)

    with dynamodb_calls() as calls:
        result = data_cleaner.run(now)

    on_agents = [c for c in calls if c[1] == AgentTable.Meta.table_name]
    assert not [c for c in on_agents if c[0] == "Scan"], on_agents
    assert result["price_points"] > 0
    assert len([r for r in PricePointTable.query(pool_id) if r.ts < now - timedelta(days=14)]) < len(
        [t for t in stamps if t < now - timedelta(days=14)])


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
