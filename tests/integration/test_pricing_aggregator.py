"""The pricing aggregator (chalicelib/jobs/pricing_aggregator.py) under moto: hourly/daily rollups of the
raw pool prices, gap fill, idempotent re-runs, late points, per-tenant scopes.

The moto is shared by the session: every test prices its own never-seen instance type, and passes its own
pools to the job, so no other test's rows are touched. Times are relative to the wall clock (raw points
expire by TTL after 90 days and reads leave expired rows out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.jobs import pricing_aggregator as job
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import price_rollups as rollups
from chalicelib.repositories.pools import PoolPrice
from chalicelib.tables.pools import PricePointTable, PriceRollupTable
from components.data_valve import PricePoint
from components.price_buckets import DAY, HOUR, floor_to
from tests.api._support import random_instance_type


@pytest.fixture
def pool_id(aws_tables):
    return f"{random_instance_type()}.eu-west-1a"


def _now() -> datetime:
    return floor_to(datetime.now(UTC), HOUR) + timedelta(minutes=7)


def _aws(pool_id: str, *points: tuple[datetime, str], at: datetime) -> None:
    pool_repo.store_server_prices([PricePoint(pool_id, ts, Decimal(p), source_agent_id=pool_repo.SERVER_SOURCE)
                                   for ts, p in points], at)


def _run(pool_id: str, now: datetime) -> dict:
    pools = list(pool_repo.latest_prices([pool_id]).values())
    return job.run(now, pools=pools)


def _items(pool_id: str) -> dict[str, dict]:
    return {row.bucket_key: row.attribute_values for row in PriceRollupTable.query(pool_id)}


def test_hourly_and_daily_buckets_with_gap_fill(pool_id):
    """GIVEN AWS prices 0.05 from yesterday 04:00 and 0.03 from 10:30 WHEN the aggregator runs THEN the
    10:00 hour averages them by time, every later hour without a point carries 0.03 marked filled, and
    yesterday's daily bucket weighs 6.5 h at 0.05 against 13.5 h at 0.03; today (incomplete) has no day."""
    now = _now()
    yesterday = floor_to(now, DAY) - timedelta(days=1)
    _aws(pool_id, (yesterday + timedelta(hours=4), "0.05"), (yesterday + timedelta(hours=10, minutes=30), "0.03"),
         at=now - timedelta(minutes=5))
    result = _run(pool_id, now)
    assert result["failed"] == [] and result["hours_written"] > 0 and result["days_written"] == 1
    stored = rollups.stored(pool_id, HOUR, yesterday, now)["aws"]
    assert min(stored) == yesterday + timedelta(hours=4)  # nothing known before the first point
    mixed = stored[yesterday + timedelta(hours=10)]
    assert (mixed.avg, mixed.low, mixed.high, mixed.last, mixed.filled, mixed.points) == (
        Decimal("0.04"), Decimal("0.03"), Decimal("0.05"), Decimal("0.03"), False, 1)
    later = stored[yesterday + timedelta(hours=15)]
    assert later.filled and later.points == 0 and later.avg == later.last == Decimal("0.03")
    assert max(stored) == floor_to(now, HOUR) - timedelta(hours=1)  # complete hours only
    [day] = rollups.stored(pool_id, DAY, yesterday, now)["aws"].values()
    expected = (Decimal("0.05") * Decimal("6.5") + Decimal("0.03") * Decimal("13.5")) / 20
    assert day.start == yesterday and day.covered_s == 20 * 3600 and day.points == 2 and not day.filled
    assert abs(day.avg - expected) < Decimal("1e-9")
    assert (day.low, day.high, day.last) == (Decimal("0.03"), Decimal("0.05"), Decimal("0.03"))


def test_rerun_writes_nothing(pool_id):
    """GIVEN a rolled-up pool WHEN the aggregator runs again (same time, or 15 minutes later in the same
    hour) THEN no bucket is written and the stored items are unchanged (deterministic keys and TTLs)."""
    now = _now()
    _aws(pool_id, (now - timedelta(hours=30), "0.05"), (now - timedelta(hours=3), "0.04"),
         at=now - timedelta(minutes=5))
    _run(pool_id, now)
    before = _items(pool_id)
    for later in (now, now + timedelta(minutes=15)):
        result = _run(pool_id, later)
        assert (result["hours_written"], result["days_written"], result["deleted"]) == (0, 0, 0)
    assert _items(pool_id) == before


def test_late_point_rewrites_only_the_affected_hours(pool_id):
    """GIVEN a rolled-up pool WHEN a point arrives late, 5 h 15 min back between two known points THEN the
    next run rewrites the hours from the late point's hour to the next point's hour and no other bucket
    (plus the day they belong to when it is complete)."""
    now = _now()
    _aws(pool_id, (now - timedelta(hours=8), "0.05"), (now - timedelta(hours=3), "0.04"),
         at=now - timedelta(minutes=5))
    _run(pool_id, now)
    before = _items(pool_id)
    late = now - timedelta(hours=5, minutes=15)
    _aws(pool_id, (late, "0.09"), at=now - timedelta(minutes=4))
    result = _run(pool_id, now)
    after = _items(pool_id)
    changed = sorted(k for k in after if after[k] != before.get(k))
    hours = [k for k in changed if k.startswith("h#")]
    first, last = floor_to(late, HOUR), floor_to(now - timedelta(hours=3), HOUR)
    expected = [rollups.bucket_key(HOUR, first + timedelta(hours=i), "aws")
                for i in range(int((last - first) / timedelta(hours=1)) + 1)]
    # the 3 h-back point's hour opens at 0.09 now only if it did not start exactly on the hour
    assert set(hours) <= set(expected) and rollups.bucket_key(HOUR, first, "aws") in hours
    assert result["hours_written"] == len(hours)
    assert all(k.startswith("d#") and k[2:12] == late.strftime("%Y-%m-%d") for k in changed if k not in hours)
    assert after[rollups.bucket_key(HOUR, first, "aws")]["high"] == Decimal("0.09")


def test_agent_prices_roll_up_in_their_client_scope(pool_id):
    """GIVEN a pool priced only by one tenant's agent WHEN rolled up THEN its buckets are that client's
    scope (never AWS's, so no other tenant reads them), and the agent's price is carried at most
    PRICE_AGENT_CARRY_S past its last point."""
    now = _now()
    ts = now - timedelta(hours=10)
    pool_repo.admit_points([PricePoint(pool_id, ts, Decimal("0.07"), source_agent_id="ag-x")], ts,
                           client_id="client-a")
    _run(pool_id, now)
    stored = rollups.stored(pool_id, HOUR, now - timedelta(days=1), now)
    assert set(stored) == {"c:client-a"}
    hours = sorted(stored["c:client-a"])
    assert hours[0] == floor_to(ts, HOUR) and hours[-1] == floor_to(ts + timedelta(hours=6), HOUR)
    assert rollups.client_history(None, pool_id, "client-b", HOUR, now - timedelta(days=1), now) == []
    mine = rollups.client_history(None, pool_id, "client-a", HOUR, now - timedelta(days=1), now)
    assert [b.start for b in mine] == hours and all(b.avg == Decimal("0.07") for b in mine)


def test_first_run_backfills_and_then_tracks_progress(pool_id):
    """GIVEN prices from 60 h ago WHEN the pool is rolled up for the first time THEN its hours are built
    back to the backfill horizon, and the progress (since, through) is recorded for the next runs and the
    data cleaner."""
    now = _now()
    _aws(pool_id, (now - timedelta(hours=60), "0.02"), at=now - timedelta(minutes=5))
    _run(pool_id, now)
    state = rollups.rollup_states([pool_id])[pool_id]
    assert state.through == floor_to(now, HOUR)
    assert state.since == floor_to(floor_to(now, HOUR) - timedelta(hours=72), DAY)
    stored = rollups.stored(pool_id, HOUR, now - timedelta(days=4), now)["aws"]
    assert min(stored) == floor_to(now - timedelta(hours=60), HOUR)


def test_aws_price_is_carried_only_while_the_job_confirms_it(pool_id):
    """GIVEN an AWS price last confirmed by the spot-prices job 5 h ago (the job stopped) WHEN rolled up THEN
    hours are filled up to the confirmation plus its freshness window (30 min), not to now."""
    now = _now()
    confirmed = now - timedelta(hours=5)
    _aws(pool_id, (now - timedelta(hours=9), "0.04"), at=confirmed)
    _run(pool_id, now)
    hours = rollups.stored(pool_id, HOUR, now - timedelta(days=1), now)["aws"]
    assert max(hours) == floor_to(confirmed + timedelta(minutes=30), HOUR)
    until = confirmed + timedelta(minutes=30)
    edge = hours[max(hours)]
    assert edge.filled and edge.covered_s == int((until - floor_to(until, HOUR)).total_seconds())


def _agent_point(pool_id: str, ts: datetime, price: str, client_id: str) -> None:
    PricePointTable(pool_id, ts, price=Decimal(price), source_agent_id=f"ag-{client_id}", client_id=client_id,
                    expires_at=ts + timedelta(days=7)).save()


def test_each_scopes_price_in_force_is_found_behind_another_tenants_many_points(pool_id):
    """GIVEN a pool AWS does not price, client a's agent reported 0.07 at 02:00 and client b's agents 120 points
    between then and the window's start (more than one page read backwards) WHEN a's price history, its
    savings' prices and the aggregator read from the window's start THEN a's 0.07 is still in force there: its
    first hour is priced, as b's many points never crowd another scope's head out."""
    now = _now()
    since = floor_to(now - timedelta(hours=3), HOUR)
    head = since - timedelta(hours=2)
    _agent_point(pool_id, head, "0.07", "client-a")
    for i in range(120):
        _agent_point(pool_id, head + timedelta(seconds=30 * (i + 1)), "0.09", "client-b")
    _agent_point(pool_id, since + timedelta(minutes=90), "0.08", "client-a")
    _agent_point(pool_id, since + timedelta(minutes=95), "0.09", "client-b")
    pool = PoolPrice(pool_id, "x", "eu-west-1a", "eu-west-1", None, None, None,
                     agent_prices={"client-a": (Decimal("0.08"), since + timedelta(minutes=90)),
                                   "client-b": (Decimal("0.09"), since + timedelta(minutes=95))})

    series, _ = rollups.raw_series(pool_id, since, scopes=rollups.visible_scopes("client-a"))
    assert series["c:client-a"][0] == (head, Decimal("0.07"))
    assert rollups.visible_history(pool_id, since, "client-a")[0] == (head, Decimal("0.07"))
    first = rollups.client_history(pool, pool_id, "client-a", HOUR, since, now)[0]
    assert (first.start, first.avg) == (since, Decimal("0.07"))

    every, _ = rollups.raw_series(pool_id, since, known=rollups.known_scopes(pool))  # the aggregator's read
    assert every["c:client-a"][0] == (head, Decimal("0.07"))
    job.aggregate_pool(pool, None, now)
    stored = rollups.stored(pool_id, HOUR, since, now, scopes=["c:client-a"])["c:client-a"]
    assert stored[since].avg == Decimal("0.07")
