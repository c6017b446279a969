"""Hourly (and daily at 00:15): integrate every instance's real cost into the savings table.

Each run re-integrates a trailing window, from the start of the UTC day 48 h ago up to ``now``, so a price
point or switch report that arrives late (within the window) is absorbed on the next run. Whole days are
recomputed from the source rows (instances, price points), so each day row is complete; a month row is the
exact sum of its stored day rows. Rows are written by deterministic key and only when they changed: a
re-run on the same data writes nothing. A period that has ended is stored ``closed`` (the 00:15 run
closes the previous day, and on the 1st the previous month, after the day's late reports).

Reads per client: one Query of the client's instances (by-client index), one of its agents, one BatchGet of
the pools, two Queries of price points per spot pool used in the window; no scans.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from components.calculations import Bucket, InstanceRun, day_key, hour_key, hourly_parts, month_key, roll_up
from components.timeutil import to_utc

from chalicelib import catalogue
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import pools, savings
from chalicelib.repositories.clients import ClientRecord
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.clients import CLIENT_LISTING, ClientTable
from chalicelib.tables.instances import InstanceTable

TRAILING = timedelta(hours=48)


def window(now: datetime) -> tuple[datetime, datetime]:
    """``[start of the UTC day 48 h before now, now)``: whole days, late data of the last 48 h included."""
    now = to_utc(now)
    start = (now - TRAILING).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, now


@dataclass(frozen=True)
class ClientRollup:
    """One client's result: its day buckets in the window (the fleet sums them) and the writes done."""

    client_id: str
    days: dict[str, Bucket]
    instances: int
    writes: int


def _clients() -> Iterable[ClientTable]:
    """Every client, through the listing index (no scan)."""
    return ClientTable.by_created.query(CLIENT_LISTING)


def _instances(client_id: str, start: datetime, end: datetime) -> list[InstanceTable]:
    """The client's instances that may have run within ``[start, end)`` (by-client index)."""
    alive = InstanceTable.terminated_at.does_not_exist() | (InstanceTable.terminated_at >= start)
    return list(InstanceTable.by_client.query(client_id, InstanceTable.installed_at < end, filter_condition=alive))


def _agent_ids(client_id: str) -> set[str]:
    return {a.agent_id for a in AgentTable.query(client_id, attributes_to_get=["agent_id"])}


def _end(row: InstanceTable, now: datetime) -> datetime:
    if row.terminated_at is not None:
        return row.terminated_at
    return now if row.is_active else row.updated_at  # replaced, termination time unknown: last change


def _mode(row: InstanceTable) -> str:
    return (row.lifecycle or row.mode or "unknown").lower()


def instance_runs(client_id: str, rows: list[InstanceTable], start: datetime, now: datetime) -> list[InstanceRun]:
    """Each instance with its prices: the pool's points visible to this client (AWS's, or the client's own
    agents'), the on-demand list price (instance, pool, then catalogue)."""
    pool_ids = sorted({r.pool_id for r in rows if r.pool_id})
    latest = pools.latest_prices(pool_ids) if pool_ids else {}
    spot_pools = sorted({r.pool_id for r in rows if r.pool_id and _mode(r) == "spot"})
    own_agents = _agent_ids(client_id) if spot_pools else set()
    points = {}
    for pool_id in spot_pools:
        points[pool_id] = tuple((p.ts, p.price) for p in pools.history_with_price_in_force(pool_id, start)
                                if p.source_agent_id is None or p.source_agent_id in own_agents)
    runs = []
    for row in rows:
        known = latest.get(row.pool_id) if row.pool_id else None
        od = row.ondemand_price
        if od is None and known is not None:
            od = known.ondemand_price
        if od is None:
            listed = catalogue.ondemand_price(row.instance_type)
            od = None if listed is None else Decimal(str(listed))
        seen = points.get(row.pool_id, ())
        # Before the pool's first visible point: the price recorded at launch; with no point at all, the
        # pool's latest visible price (else the run costs its baseline: no saving is claimed).
        fallback = row.spot_price
        if fallback is None and not seen and known is not None and known.price_visible_to(client_id):
            fallback = known.price
        runs.append(InstanceRun(instance_id=row.instance_id, agent_id=row.agent_id, mode=_mode(row),
                                start=row.installed_at, end=_end(row, now), ondemand_price=od,
                                spot_points=seen, spot_fallback=fallback))
    return runs


def rollup_client(client: ClientTable | ClientRecord, now: datetime) -> ClientRollup:
    """Re-integrate one client's window and store its hour, day, month, agent and instance rows."""
    start, end = window(now)
    client_id = client.client_id
    discount = Decimal(str(client.ondemand_discount_percent or 0))
    runs = instance_runs(client_id, _instances(client_id, start, end), start, now)
    parts = [p for run in runs for p in hourly_parts(run, start, end, discount)]
    hours = roll_up(parts, lambda p: hour_key(p.hour))
    days = roll_up(parts, lambda p: day_key(p.hour))
    lo_day, hi_day, today = day_key(start), day_key(end), day_key(now)
    writes = savings.sync_rows(savings.client_key(client_id, "hour"), hours, hour_key(start), hour_key(end),
                               client_id=client_id, now=now, closed_before=hour_key(now),
                               expires=savings.hourly_expiry(now))
    writes += savings.sync_rows(savings.client_key(client_id, "day"), days, lo_day, hi_day, client_id=client_id,
                                now=now, closed_before=today)
    per_instance = roll_up(parts, lambda p: (p.instance_id, day_key(p.hour)))
    per_agent = roll_up(parts, lambda p: (p.agent_id, day_key(p.hour)))
    for make_key, grouped in ((lambda i: savings.instance_key(client_id, i), per_instance),
                              (lambda a: savings.agent_key(client_id, a), per_agent)):
        by_entity: dict[str, dict[str, Bucket]] = {}
        for (entity, day), bucket in grouped.items():
            by_entity.setdefault(entity, {})[day] = bucket
        for entity, entity_days in sorted(by_entity.items()):
            writes += savings.sync_rows(make_key(entity), entity_days, lo_day, hi_day, client_id=client_id,
                                        now=now, closed_before=today)
    for month in _months(start, end):
        writes += savings.month_from_days(savings.client_key(client_id, "day"), savings.client_key(client_id, "month"),
                                          month, client_id=client_id, now=now, closed=month < month_key(now))
    return ClientRollup(client_id, days, len(runs), writes)


def _months(start: datetime, end: datetime) -> list[str]:
    months, day = [], start
    while day <= end:
        if month_key(day) not in months:
            months.append(month_key(day))
        day += timedelta(days=1)
    if month_key(end) not in months:
        months.append(month_key(end))
    return months


def rollup_fleet(results: list[ClientRollup], now: datetime) -> int:
    """Fleet day rows = sums of every client's day rows in the window; months = sums of fleet days."""
    start, end = window(now)
    days: dict[str, Bucket] = {}
    for result in results:
        for day, bucket in result.days.items():
            days.setdefault(day, Bucket()).merge(bucket)
    writes = savings.sync_rows(savings.fleet_key("day"), days, day_key(start), day_key(end), client_id=None,
                               now=now, closed_before=day_key(now))
    for month in _months(start, end):
        writes += savings.month_from_days(savings.fleet_key("day"), savings.fleet_key("month"), month,
                                          client_id=None, now=now, closed=month < month_key(now))
    return writes


@logged_job("savings-rollup")
def run(now: datetime) -> dict[str, int]:
    """One roll-up of every client, then the fleet."""
    results = []
    failed = 0
    for client in _clients():
        try:
            results.append(rollup_client(client, now))
        except Exception:  # noqa: BLE001 - one client's bad row must not stop the others; retried next hour
            logger.exception("savings roll-up failed for a client", extra={"client_id": client.client_id})
            failed += 1
    # A client that failed would be missing from the fleet's sums: keep the fleet rows until a clean run.
    fleet_writes = 0 if failed else rollup_fleet(results, now)
    summary = {"clients": len(results), "failed": failed, "instances": sum(r.instances for r in results),
               "writes": sum(r.writes for r in results) + fleet_writes}
    logger.info("savings roll-up", extra=summary)
    for name, value in summary.items():
        metrics.add_metric(name=f"SavingsRollup.{name}", unit=MetricUnit.Count, value=value)
    publish_metrics()
    return summary
