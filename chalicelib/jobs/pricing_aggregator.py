"""Every 15 minutes: hourly and daily buckets of the pools' prices (issue #13).

For each pool agents run or may run on (``pools.priced_page``: priced in the last day, at most
``PRICE_ROLLUP_MAX_POOLS`` a run, in turns past that: ``chalicelib.jobs.pool_walk``; the pools table, no agent
read, so a run grows with the pools, not the fleet), per scope (AWS's prices; each client's agent prices), the raw
points of the whole UTC days back to
``PRICE_ROLLUP_LOOKBACK_HOURS`` are bucketed again (``components.price_buckets``): every complete hour
with a known price (time-weighted average, min, max, last; an hour without a point of its own carries
the last price and is marked ``filled``) and every complete day. Only buckets that differ from the stored
ones are written, so a re-run writes nothing and a late point rewrites only the hours it changed. A pool
the aggregator has not seen starts ``PRICE_ROLLUP_BACKFILL_HOURS`` back; one whose rollups lag (the job
stopped) catches up from where it stopped, at most that far. At most ``PRICE_ROLLUP_MAX_POINTS`` raw points
per pool per run: a longer history is finished on the next runs.

How far a price carries is ``price_rollups.carry_rules``: AWS's while the spot-prices job confirms it,
an agent's at most ``PRICE_AGENT_CARRY_S`` past its last point.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from components.price_buckets import DAY, HOUR, changes, floor_to, merged_buckets, price_buckets

from chalicelib.jobs import pool_walk
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import price_rollups as rollups
from chalicelib.repositories.pools import PoolPrice
from chalicelib.settings import get_settings


ROLLUP_WALK = "pricing-aggregator#pools"  # job-state key of its turns past the cap (chalicelib.jobs.pool_walk)
# 1 in a run that could not roll up every priced pool (more than ``PRICE_ROLLUP_MAX_POOLS``): runs take the pools in
# turns, so roll-ups lag (the stage's "PriceRollupPoolCap" alarm, infra/monitoring.py).
POOL_CAP_METRIC = "PricingAggregator.poolCapReached"


def window_start(previous: datetime | None, complete_end: datetime) -> datetime:
    """Where this run re-aggregates from (a UTC day start, so whole days are recomputed)."""
    settings = get_settings()
    lookback = complete_end - timedelta(hours=settings.price_rollup_lookback_hours)
    backfill = complete_end - timedelta(hours=settings.price_rollup_backfill_hours)
    start = lookback if previous is not None and previous >= lookback else max(previous or backfill, backfill)
    return floor_to(start, DAY)


def aggregate_pool(pool: PoolPrice, previous: datetime | None, now: datetime) -> dict:
    """Re-aggregate one pool's window; returns counts of what it wrote."""
    settings = get_settings()
    complete_end = floor_to(now, HOUR)
    start = window_start(previous, complete_end)
    series, cut = rollups.raw_series(pool.pool_id, start, limit=settings.price_rollup_max_points,
                                     known=rollups.known_scopes(pool))
    end = min(complete_end, floor_to(cut, HOUR)) if cut is not None else complete_end
    retention = {HOUR: settings.price_hourly_retention_days, DAY: settings.price_daily_retention_days}
    days_end = floor_to(end, DAY)
    stored_hours = rollups.stored(pool.pool_id, HOUR, start, end)
    stored_days = rollups.stored(pool.pool_id, DAY, start, days_end) if days_end > start else {}
    counts = {"hours_written": 0, "days_written": 0, "deleted": 0}
    for scope, points in sorted(series.items()):
        carry, known_until = rollups.carry_rules(scope, pool, points, now)
        hourly = price_buckets(points, start, end, max_carry=carry, known_until=known_until)
        daily = merged_buckets(hourly, start, days_end, DAY)
        put_h, del_h = changes(stored_hours.get(scope, {}), {b.start: b for b in hourly}, (start, end))
        put_d, del_d = changes(stored_days.get(scope, {}), {b.start: b for b in daily}, (start, days_end))
        if put_h or put_d or del_h or del_d:
            rollups.write(pool.pool_id, scope, put_h + put_d,
                          [(HOUR, t) for t in del_h] + [(DAY, t) for t in del_d], retention)
        counts["hours_written"] += len(put_h)
        counts["days_written"] += len(put_d)
        counts["deleted"] += len(del_h) + len(del_d)
    if previous is None:
        rollups.mark_rolled(pool.pool_id, end, now, since=start)
    elif end != previous:
        rollups.mark_rolled(pool.pool_id, end, now)
    return counts


@logged_job("pricing-aggregator")
def run(now: datetime, *, pools: list[PoolPrice] | None = None) -> dict:
    """One run over ``pools`` (default: the pools of every (region, type) agents run or may run on)."""
    settings = get_settings()
    capped = False
    if pools is None:
        pools, capped, _ = pool_walk.next_pools(ROLLUP_WALK, now, settings.price_rollup_max_pools)
    if capped:
        logger.warning("pricing aggregator pool cap reached: each run rolls up the next pools (raise "
                       "PRICE_ROLLUP_MAX_POOLS)", extra={"cap": settings.price_rollup_max_pools})
    states = rollups.rollup_states([p.pool_id for p in pools]) if pools else {}
    result = {"pools": len(pools), "hours_written": 0, "days_written": 0, "deleted": 0, "failed": [],
              "capped": capped}
    for pool in pools:
        try:
            state = states.get(pool.pool_id)
            counts = aggregate_pool(pool, state.through if state else None, now)
        except Exception as exc:  # noqa: BLE001 - one pool's failure never stops the others
            logger.exception("price rollup failed", extra={"pool_id": pool.pool_id, "error": str(exc)})
            result["failed"].append(pool.pool_id)
            continue
        for key, value in counts.items():
            result[key] += value
    logger.info("pricing aggregator", extra=result)
    metrics.add_metric(name="PricingAggregator.pools", unit=MetricUnit.Count, value=result["pools"])
    metrics.add_metric(name="PricingAggregator.bucketsWritten", unit=MetricUnit.Count,
                       value=result["hours_written"] + result["days_written"])
    metrics.add_metric(name="PricingAggregator.failed", unit=MetricUnit.Count, value=len(result["failed"]))
    metrics.add_metric(name=POOL_CAP_METRIC, unit=MetricUnit.Count, value=int(capped))
    publish_metrics()
    return result
