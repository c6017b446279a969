"""Savings: the one place savings figures are read from (API, console, admin statistics, demo report),
and the writer the roll-up job (chalicelib/jobs/savings_rollup.py) and the snapshot job use.

Every read is a Query on one partition of the savings table (chalicelib/tables/savings.py); nothing here
computes savings: the job integrates them (components.calculations.rollup) and stores exact Decimals.
Answers carry money as floats rounded to 4 dp and percents to 2 dp (the API contract).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal

from components.calculations import Bucket, day_key, hour_key, month_key, to_money, to_percent
from components.timeutil import parse_iso, to_utc

from chalicelib.repositories.dynamo import save_if
from chalicelib.tables.savings import SavingsTable

CURRENCY = "USD"
HOURLY_RETENTION_DAYS = 100
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_SECONDS_PER_HOUR = Decimal(3600)
_MONEY_FIELDS = ("actual_cost", "baseline_cost")


# --- keys -----------------------------------------------------------------------------------------

def client_key(client_id: str, granularity: str) -> str:
    """Partition of a client's ``hour``/``day``/``month`` rows."""
    return f"client#{client_id}#{granularity}"


def agent_key(client_id: str, agent_id: str) -> str:
    """Partition of an agent's day rows (the client id in the key keeps tenants apart)."""
    return f"agent#{client_id}#{agent_id}#day"


def instance_key(client_id: str, instance_id: str) -> str:
    """Partition of an instance's day rows."""
    return f"instance#{client_id}#{instance_id}#day"


def fleet_key(granularity: str) -> str:
    """Partition of the fleet's ``day``/``month`` rows (every client together)."""
    return f"fleet#{granularity}"


GROWTH_KEY = "growth#day"
# The savings roll-up's runs (chalicelib/jobs/savings_rollup.py): one row per dispatched run (period = its
# scheduled time, ``clients_total`` = clients dispatched), and per run one row per client rolled up.
RUNS_KEY = "rollup#runs"
RUN_RETENTION_DAYS = 7


def run_done_key(run: str) -> str:
    """Partition of the clients the savings workers rolled up for ``run`` (period = client id)."""
    return f"rollup#{run}#done"


def run_started_key(run: str) -> str:
    """Partition of the clients a redelivered savings message started for ``run`` (period = client id): a client
    started and never done is one an invocation died in (its time-out), left for last by the next delivery."""
    return f"rollup#{run}#started"


def run_period(scheduled: datetime) -> str:
    """A run's key: its scheduled time, ``YYYY-MM-DDTHH:MM:SSZ`` (sorts as time)."""
    return to_utc(scheduled).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reads ----------------------------------------------------------------------------------------

def _rows(scope_key: str, lo: str | None = None, hi: str | None = None) -> list[SavingsTable]:
    """The partition's rows with ``lo <= period <= hi`` (either bound optional), oldest first."""
    condition = None
    if lo is not None and hi is not None:
        condition = SavingsTable.period.between(lo, hi)
    elif lo is not None:
        condition = SavingsTable.period >= lo
    elif hi is not None:
        condition = SavingsTable.period <= hi
    return list(SavingsTable.query(scope_key, condition))


def _money(value: Decimal | None) -> float:
    return float(to_money(value or _ZERO))


def _percent(savings: Decimal, baseline: Decimal) -> float:
    return float(to_percent(savings / baseline * _HUNDRED if baseline > 0 else _ZERO))


def _sum(rows: Iterable[SavingsTable]) -> tuple[Decimal, Decimal]:
    actual = baseline = _ZERO
    for row in rows:
        actual += row.actual_cost or _ZERO
        baseline += row.baseline_cost or _ZERO
    return actual, baseline


def _day(now: datetime, back: int = 0) -> str:
    return day_key(now.date() - timedelta(days=back))


def _summary(month_partition: str, day_partition: str, now: datetime) -> dict:
    months = _rows(month_partition, hi=month_key(now))
    actual, baseline = _sum(months)
    mtd_actual, mtd_baseline = _sum(r for r in months if r.period == month_key(now))
    last_actual, last_baseline = _sum(_rows(day_partition, _day(now, 29), _day(now)))
    as_of = max((r.computed_at for r in months), default=None)
    return {
        "total_savings": _money(baseline - actual),
        "total_actual_cost": _money(actual),
        "total_baseline_cost": _money(baseline),
        "savings_percent": _percent(baseline - actual, baseline),
        "month_to_date_savings": _money(mtd_baseline - mtd_actual),
        "last_30d_savings": _money(last_baseline - last_actual),
        "currency": CURRENCY,
        "as_of": None if as_of is None else as_of.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def client_summary(client_id: str, now: datetime) -> dict:
    """A client's savings to date, this month and over the last 30 days (two Queries)."""
    return _summary(client_key(client_id, "month"), client_key(client_id, "day"), now)


def fleet_summary(now: datetime) -> dict:
    """:func:`client_summary` for every client together (admin statistics)."""
    return _summary(fleet_key("month"), fleet_key("day"), now)


def _months_back(now: datetime, months: int) -> list[str]:
    year, month = now.year, now.month
    found = []
    for _ in range(months):
        found.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return found[::-1]


def monthly(client_id: str, months: int, now: datetime) -> list[dict]:
    """The last ``months`` calendar months up to now's, oldest first (a month without data is zeros)."""
    wanted = _months_back(now, months)
    stored = {r.period: r for r in _rows(client_key(client_id, "month"), wanted[0], wanted[-1])}
    answer = []
    for month in wanted:
        actual, baseline = _sum([stored[month]] if month in stored else [])
        answer.append({"month": month, "baseline_cost": _money(baseline), "actual_cost": _money(actual),
                       "savings": _money(baseline - actual), "savings_percent": _percent(baseline - actual, baseline)})
    return answer


def _hours(seconds: Decimal | None) -> float:
    return float(((seconds or _ZERO) / _SECONDS_PER_HOUR).quantize(Decimal("0.01")))


def daily(client_id: str, days: int, now: datetime) -> list[dict]:
    """The last ``days`` days up to today, oldest first (a day without data is zeros)."""
    wanted = [_day(now, back) for back in range(days - 1, -1, -1)]
    stored = {r.period: r for r in _rows(client_key(client_id, "day"), wanted[0], wanted[-1])}
    answer = []
    for day in wanted:
        row = stored.get(day)
        actual, baseline = _sum([row] if row else [])
        answer.append({"date": day, "baseline_cost": _money(baseline), "actual_cost": _money(actual),
                       "savings": _money(baseline - actual),
                       "spot_hours": _hours(row.spot_seconds if row else None),
                       "ondemand_hours": _hours(row.ondemand_seconds if row else None)})
    return answer


def hourly(client_id: str, start: datetime, end: datetime) -> list[dict]:
    """A client's stored hours from ``start``'s hour to ``end``'s, oldest first (hours without an instance
    are absent): ``{"hour": "YYYY-MM-DDTHH", "actual_cost", "baseline_cost"}`` (cumulative cost charts)."""
    return [{"hour": r.period, "actual_cost": _money(r.actual_cost), "baseline_cost": _money(r.baseline_cost)}
            for r in _rows(client_key(client_id, "hour"), hour_key(start), hour_key(end))]


def client_days(client_id: str, lo: str, hi: str) -> dict[str, Bucket]:
    """A client's stored day rows with ``lo <= day <= hi`` as buckets (one Query): what the fleet sums. A row's
    instances are distinct from every other client's (the fleet's count is the sum of the clients')."""
    return {row.period: _bucket(row, ids=(client_id, row.period))
            for row in _rows(client_key(client_id, "day"), lo, hi)}


def _entity_summary(partition: str, now: datetime) -> dict:
    rows = _rows(partition, hi=_day(now))
    actual, baseline = _sum(rows)
    last_actual, last_baseline = _sum(r for r in rows if r.period >= _day(now, 29))
    return {"total_savings": _money(baseline - actual), "last_30d_savings": _money(last_baseline - last_actual),
            "total_actual_cost": _money(actual), "total_baseline_cost": _money(baseline)}


def instance_summary(client_id: str, instance_id: str, now: datetime) -> dict:
    """One instance's savings over its life and the last 30 days (one Query; another client's: zeros)."""
    return _entity_summary(instance_key(client_id, instance_id), now)


def agent_summary(client_id: str, agent_id: str, now: datetime) -> dict:
    """One agent's savings over every instance it ran (one Query)."""
    return _entity_summary(agent_key(client_id, agent_id), now)


def growth(days: int, now: datetime) -> list[dict]:
    """The daily growth snapshots of the last ``days`` days, oldest first (days never snapshotted are absent)."""
    answer = []
    for row in _rows(GROWTH_KEY, _day(now, days - 1), _day(now)):
        answer.append({"date": row.period, "clients_total": int(row.clients_total or 0),
                       "clients_active": int(row.clients_active or 0), "agents_total": int(row.agents_total or 0),
                       "agents_online": int(row.agents_online or 0),
                       "instances_active": int(row.instances_active or 0),
                       "total_savings": _money(row.total_savings)})
    return answer


# --- writes (the jobs) ----------------------------------------------------------------------------

def _same(row: SavingsTable, bucket: Bucket, closed: bool) -> bool:
    return (row.actual_cost == bucket.actual and row.baseline_cost == bucket.baseline
            and row.spot_seconds == bucket.spot_seconds and row.ondemand_seconds == bucket.ondemand_seconds
            and int(row.instances or 0) == len(bucket.instances) and bool(row.closed) == closed)


def _item(scope_key: str, period: str, bucket: Bucket, *, client_id: str | None, closed: bool,
          now: datetime, expires: datetime | None) -> SavingsTable:
    return SavingsTable(scope_key, period, client_id=client_id, actual_cost=bucket.actual,
                        baseline_cost=bucket.baseline, spot_seconds=bucket.spot_seconds,
                        ondemand_seconds=bucket.ondemand_seconds, instances=len(bucket.instances),
                        closed=closed or None, computed_at=now, expires_at=expires)


def sync_rows(scope_key: str, buckets: Mapping[str, Bucket], lo: str, hi: str, *, client_id: str | None,
              now: datetime, closed_before: str | None = None, expires: datetime | None = None) -> int:
    """Make the partition's rows with ``lo <= period <= hi`` exactly ``buckets``: a changed or new row is
    put (deterministic key: overwrite), a row no longer backed by data is deleted, an unchanged row is not
    written. Periods before ``closed_before`` are marked closed. Returns the number of writes.

    One Query plus one batch write: re-running on the same input writes nothing.
    """
    existing = {r.period: r for r in _rows(scope_key, lo, hi)}
    writes = 0
    with SavingsTable.batch_write() as batch:
        for period, bucket in sorted(buckets.items()):
            closed = closed_before is not None and period < closed_before
            row = existing.pop(period, None)
            if row is not None and _same(row, bucket, closed):
                continue
            batch.save(_item(scope_key, period, bucket, client_id=client_id, closed=closed, now=now,
                             expires=expires))
            writes += 1
        for row in existing.values():
            batch.delete(row)
            writes += 1
    return writes


def month_from_days(day_partition: str, month_partition: str, month: str, *, client_id: str | None,
                    now: datetime, closed: bool) -> int:
    """Rebuild one month row as the exact sum of its stored day rows (conservation by construction)."""
    rows = _rows(day_partition, f"{month}-01", f"{month}-31")
    bucket = Bucket()
    for row in rows:
        bucket.merge(_bucket(row))
    count = max((int(r.instances or 0) for r in rows), default=0)
    buckets = {month: bucket} if rows else {}
    if rows:
        bucket.instances = set(range(count))  # a month's instance count: the busiest day's
    return sync_rows(month_partition, buckets, month, month, client_id=client_id, now=now,
                     closed_before=(month + "~") if closed else None)


def _bucket(row: SavingsTable, ids: tuple | None = None) -> Bucket:
    """A stored row as a bucket; with ``ids``, ``row.instances`` stand-in instances named after them."""
    bucket = Bucket(row.actual_cost or _ZERO, row.baseline_cost or _ZERO, row.spot_seconds or _ZERO,
                    row.ondemand_seconds or _ZERO)
    if ids is not None:
        bucket.instances = {(*ids, i) for i in range(int(row.instances or 0))}
    return bucket


def delete_days(scope_key: str, budget: int) -> int | None:
    """Delete an agent's or an instance's day rows (``agent_key``/``instance_key``: the data cleaner, when the
    entity's retention ends), all of them or none: None, nothing deleted, when they are more than ``budget``.
    Returns how many went. The client's own rows (hour, day, month) and the fleet's are never in such a partition:
    they are integrated from the instances, not summed from these rows, so the client's totals do not change."""
    if not scope_key.startswith(("agent#", "instance#")):
        raise ValueError(f"not an entity's day partition: {scope_key}")
    rows = _rows(scope_key)
    if len(rows) > budget:
        return None
    with SavingsTable.batch_write() as batch:
        for row in rows:
            batch.delete(row)
    return len(rows)


def delete_client(client_id: str, agent_ids: Iterable[str], instance_ids: Iterable[str]) -> int:
    """Delete every savings row of a client being deleted: its hour, day and month totals and the day rows of the
    given agents and instances. The fleet's rows stay: they are the service's history, summed when they were
    written, and name no client. Returns how many rows went."""
    partitions = [client_key(client_id, granularity) for granularity in ("hour", "day", "month")]
    partitions += [agent_key(client_id, agent_id) for agent_id in agent_ids]
    partitions += [instance_key(client_id, instance_id) for instance_id in instance_ids]
    count = 0
    with SavingsTable.batch_write() as batch:
        for partition in partitions:
            for row in SavingsTable.query(partition, attributes_to_get=["scope_key", "period"]):
                batch.delete(row)
                count += 1
    return count


def record_run(scheduled: datetime, clients: int, now: datetime) -> None:
    """Store one dispatched run (overwrite: a retried dispatch of the same run counts the same clients)."""
    SavingsTable(RUNS_KEY, run_period(scheduled), clients_total=clients, computed_at=now,
                 expires_at=now + timedelta(days=RUN_RETENTION_DAYS)).save()


def latest_run(now: datetime) -> tuple[datetime, int] | None:
    """The last run dispatched at or before ``now``: (its scheduled time, clients dispatched); None if none."""
    for row in SavingsTable.query(RUNS_KEY, SavingsTable.period <= run_period(now), scan_index_forward=False,
                                  limit=1):
        return parse_iso(row.period), int(row.clients_total or 0)
    return None


def mark_done(run: str, client_id: str, now: datetime) -> int:
    """Note that ``client_id`` was rolled up for ``run``; returns the writes (0: already noted, a redelivery)."""
    row = SavingsTable(run_done_key(run), client_id, client_id=client_id, computed_at=now,
                       expires_at=now + timedelta(days=RUN_RETENTION_DAYS))
    return int(save_if(row, SavingsTable.period.does_not_exist()))


def mark_started(run: str, client_id: str, now: datetime) -> None:
    """Note that a redelivered message starts ``client_id``'s roll-up for ``run`` (one PutItem)."""
    SavingsTable(run_started_key(run), client_id, client_id=client_id, computed_at=now,
                 expires_at=now + timedelta(days=RUN_RETENTION_DAYS)).save()


def progress(run: str, client_ids: Iterable[str]) -> tuple[set[str], set[str]]:
    """(done, started) among ``client_ids`` for ``run``: one BatchGetItem per 50 clients (a message has 10)."""
    ids = list(dict.fromkeys(client_ids))
    keys = [(key(run), client_id) for client_id in ids for key in (run_done_key, run_started_key)]
    done: set[str] = set()
    started: set[str] = set()
    for row in SavingsTable.batch_get(keys, attributes_to_get=["scope_key", "period"]):
        (done if row.scope_key == run_done_key(run) else started).add(row.period)
    return done, started


def done_clients(run: str) -> list[str]:
    """The clients rolled up for ``run`` (one Query, keys only)."""
    return [row.period for row in SavingsTable.query(run_done_key(run), attributes_to_get=["period"])]


def hourly_expiry(now: datetime) -> datetime:
    """When an hourly row expires (days and months are kept)."""
    return now + timedelta(days=HOURLY_RETENTION_DAYS)


def put_growth(day: date, counts: Mapping[str, int], total_savings: Decimal, now: datetime) -> None:
    """Write (overwrite) one day's growth snapshot."""
    SavingsTable(GROWTH_KEY, day_key(day), computed_at=now, total_savings=total_savings,
                 **{name: int(counts[name]) for name in ("clients_total", "clients_active", "agents_total",
                                                         "agents_online", "instances_active")}).save()


def fleet_total_savings(now: datetime) -> Decimal:
    """Exact savings of every client to date (sum of the fleet's month rows)."""
    actual, baseline = _sum(_rows(fleet_key("month"), hi=month_key(now)))
    return baseline - actual
