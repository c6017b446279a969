"""Hourly (and daily at 00:15): integrate every client's instances' real cost into the savings table.

Each client's roll-up re-integrates a trailing window, from the start of the UTC day 48 h ago up to the run's
scheduled time, so a price point or switch report that arrives late (within the window) is absorbed on the
next run. Whole days are recomputed from the source rows (instances, price points), so each day row is
complete; a month row is the exact sum of its stored day rows. Rows are written by deterministic key and only
when they changed: a re-run on the same data writes nothing. A period that has ended is stored ``closed`` (the
00:15 run closes the previous day, and on the 1st the previous month, after the day's late reports).

One invocation cannot walk a large fleet (≈ 27 ms per agent: past ≈ 10,000 agents it would time out every
hour, and the clients after that point would never get savings rows), so the run fans out
(chalicelib/jobs/fanout.py, as the decision cycle):

* :func:`run`, the scheduled ``savings-rollup`` (every hour at :00) and ``savings-close`` (00:15), the
  dispatcher, pages through the clients' ids (listing index) and sends them to the stage's savings queue,
  ``CLIENTS_PER_MESSAGE`` per message naming the run's scheduled time, then stores the run and how many
  clients it sent (``savings.record_run``);
* :func:`on_sqs_batch`, the ``savings-worker``, rolls up the clients of each message as of that time and notes
  each one done for the run (``savings.mark_done``); a message older than ``STALE_AFTER`` is dropped (the next
  hourly run recomputes the same window); it starts no client with less than a quarter of its timeout left
  (``fanout.Budget``: the message comes back), and a redelivered message skips its clients done for the run and
  tries last the one an invocation died in (:func:`order_of_work`);
* the fleet rows are summed from the stored client day rows once every client of the run is done
  (chalicelib/jobs/savings_fleet.py, ``savings-fleet`` at :45).

Reads per client: one GetItem of the client, one Query of its instances (by-client index), one of its agents,
one BatchGet of the pools, two Queries of price points per spot pool used in the window; no scans.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from components.calculations import Bucket, InstanceRun, day_key, hour_key, hourly_parts, month_key, roll_up
from components.timeutil import parse_iso, to_utc

from chalicelib import catalogue, clock
from chalicelib.aws import sqs
from chalicelib.jobs.fanout import (
    NO_BUDGET,
    Budget,
    Delivery,
    batch_response,
    bodies,
    for_each,
    handle_batch,
    publish_counts,
)
from chalicelib.observability import logged_job, logger
from chalicelib.repositories import clients, pools, price_rollups, savings
from chalicelib.repositories.clients import ClientRecord
from chalicelib.settings import get_settings, savings_queue_name
from chalicelib.tables.clients import CLIENT_LISTING, ClientTable
from chalicelib.tables.instances import InstanceTable

TRAILING = timedelta(hours=48)
# Clients per message: ~0.5 KB of body; a client of the default quota (50 agents) is ≈ 2 s of a worker's time,
# so a message of 10 such clients ≈ 20 s (`python -m bench.cost`), and a message that fails and comes back
# repeats little work.
CLIENTS_PER_MESSAGE = 10
# A message is worth an hour: the next hourly run recomputes the same trailing window.
STALE_AFTER = timedelta(hours=1)


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


def _end(row: InstanceTable, now: datetime) -> datetime:
    if row.terminated_at is not None:
        return row.terminated_at
    return now if row.is_active else row.updated_at  # replaced, termination time unknown: last change


def _mode(row: InstanceTable) -> str:
    return (row.lifecycle or row.mode or "unknown").lower()


def _baseline(row: InstanceTable) -> tuple[bool, datetime | None]:
    """(in the baseline at all, from when): a standby never is (the client would run none on demand); a
    promoted standby (its replica id, role primary) from its promotion (``last_switch_at``); else from launch."""
    if row.role == "standby":
        return False, None
    if row.replica_id and row.last_switch_at is not None:
        return True, row.last_switch_at
    return True, None


def instance_runs(client_id: str, rows: list[InstanceTable], start: datetime, now: datetime) -> list[InstanceRun]:
    """Each instance with its prices: the pool's points visible to this client (AWS's, or the client's own
    agents'), the on-demand list price (catalogue, then instance, then pool), and the time it ran the workload
    (``_baseline``)."""
    pool_ids = sorted({r.pool_id for r in rows if r.pool_id})
    latest = pools.latest_prices(pool_ids) if pool_ids else {}
    spot_pools = sorted({r.pool_id for r in rows if r.pool_id and _mode(r) == "spot"})
    points = {pool_id: tuple(price_rollups.visible_history(pool_id, start, client_id, latest.get(pool_id)))
              for pool_id in spot_pools}
    runs = []
    for row in rows:
        known = latest.get(row.pool_id) if row.pool_id else None
        # AWS's list price first (the catalogue: the one the instance pages show, which no agent can set); a
        # type it does not list: the price recorded on the instance (its switch report), else the pool's
        listed = catalogue.ondemand_price(row.instance_type, row.region)
        od = Decimal(str(listed)) if listed is not None else row.ondemand_price
        if od is None and known is not None:
            od = known.ondemand_price
        seen = points.get(row.pool_id, ())
        # Before the pool's first visible point: the price recorded at launch; with no point at all, the
        # pool's latest visible price (else the run costs its baseline: no saving is claimed).
        fallback = row.spot_price
        if fallback is None and not seen and known is not None:
            fallback = known.seen_by(client_id).price
        in_baseline, baseline_from = _baseline(row)
        runs.append(InstanceRun(instance_id=row.instance_id, agent_id=row.agent_id, mode=_mode(row),
                                start=row.installed_at, end=_end(row, now), ondemand_price=od,
                                spot_points=seen, spot_fallback=fallback, in_baseline=in_baseline,
                                baseline_from=baseline_from))
    return runs


def rollup_client(client: ClientTable | ClientRecord, now: datetime) -> ClientRollup:
    """Re-integrate one client's window and store its hour, day, month, agent and instance rows."""
    start, end = window(now)
    client_id = client.client_id
    discount = Decimal(str(client.ondemand_discount_percent or 0))
    runs = instance_runs(client_id, _instances(client_id, start, end), start, now)
    parts = [p for instance_run in runs for p in hourly_parts(instance_run, start, end, discount)]
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
    if writes and _deleted_meanwhile(client_id):
        # The client's delete began after it was read here and may have removed its savings rows before these puts
        # (which create what they overwrite): they go again, so nothing of the deleted client stays (no TTL on days).
        savings.delete_client(client_id, sorted({r.agent_id for r in runs if r.agent_id}),
                              sorted({r.instance_id for r in runs}))
        return ClientRollup(client_id, {}, len(runs), writes)
    return ClientRollup(client_id, days, len(runs), writes)


def _deleted_meanwhile(client_id: str) -> bool:
    """The client's hard delete has started (or is done) since the roll-up read it: its row marked ``deleting`` (set
    with the token's revocation, before any row goes) or gone. Read after the writes, so a delete that began later
    removes them itself."""
    client = clients.get(client_id)
    return client is None or client.deleting


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


# --- the dispatcher ---------------------------------------------------------------------------------

@logged_job("savings-rollup")
def run(now: datetime) -> dict[str, int]:
    """Dispatch one roll-up: every client's id to the savings queue; returns how many clients, messages."""
    counted: Counter = Counter()
    header = {"scheduled_at": savings.run_period(now)}
    ids = (client.client_id for client in _clients())
    sent = sqs.send_all(savings_queue_name(get_settings().stage),
                        bodies(ids, header, "clients", CLIENTS_PER_MESSAGE, counted))
    savings.record_run(now, counted["clients"], now)
    result = {"clients": counted["clients"], "messages": sent}
    logger.info("savings roll-up dispatched", extra=result)
    publish_counts("SavingsRollup", result)
    return result


# --- the worker --------------------------------------------------------------------------------------

def parse_message(body: str) -> tuple[datetime, list[str]]:
    """(scheduled time, client ids) of one message; ValueError when it is not one."""
    try:
        data = json.loads(body)
        scheduled, ids = parse_iso(data["scheduled_at"]), data["clients"]
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not a savings message: {type(exc).__name__}: {exc}") from exc
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("not a savings message: clients must be a list of client ids")
    return scheduled, ids


def order_of_work(ids: list[str], done: set[str], started: set[str]) -> list[str]:
    """The clients a redelivered message still has to roll up, in the order to try them: those done are left out;
    the suspects go last: a client started by an earlier delivery and never done (an invocation died in it), and
    the first not done in the message's order (where the first delivery, which notes no start, stopped: died in
    it, or ran out of time before it). So a client whose roll-up outlasts the function never keeps the others of
    its message from being done."""
    todo = [client_id for client_id in ids if client_id not in done]
    suspects = started | set(todo[:1])
    return [c for c in todo if c not in suspects] + [c for c in todo if c in suspects]


def rollup_message(body: str, now: datetime, outcomes: Counter, *, receives: int = 1,
                   budget: Budget = NO_BUDGET) -> None:
    """Roll up the clients of one message as of its scheduled time. ValueError: not a savings message;
    RetryableError: some clients hit a transient error (the others are rolled up and noted done), or (OutOfTime)
    ``budget`` ran low before every client was started.

    A message delivered again (``receives`` > 1) skips the clients already done for the run (``already_done``,
    one BatchGetItem) and takes the suspects last (:func:`order_of_work`), noting each client it starts
    (``savings.mark_started``); the first delivery reads and writes nothing more than before."""
    scheduled, ids = parse_message(body)
    if scheduled + STALE_AFTER < now:
        outcomes["stale"] += len(ids)  # the next hourly run recomputes their window
        return
    run_key = savings.run_period(scheduled)
    redelivered = receives > 1
    if redelivered:
        done, started = savings.progress(run_key, ids)
        todo = order_of_work(ids, done, started)
        outcomes["already_done"] += len(ids) - len(todo)
        ids = todo

    def roll(client_id: str) -> None:
        if redelivered:
            savings.mark_started(run_key, client_id, now)
        client = clients.get(client_id)
        if client is None:
            outcomes["skipped"] += 1  # deleted since the dispatch: nothing to roll up
        else:
            result = rollup_client(client, scheduled)
            outcomes["rolled_up"] += 1
            outcomes["instances"] += result.instances
            outcomes["writes"] += result.writes
        outcomes["writes"] += savings.mark_done(run_key, client_id, scheduled)

    for_each(ids, roll, outcomes, what="savings roll-up", name=str, budget=budget)


@logged_job("savings-worker")
def rollup_batch(event: dict, now: datetime, context=None) -> tuple[list[str], dict[str, int]]:
    """One SQS batch of savings messages: (ids of the messages SQS must deliver again, counts by outcome). With
    the Lambda ``context``, no client (nor message) is started once too little of the invocation's time is left
    (fanout.Budget): the messages not finished come back, their done clients skipped on the redelivery."""

    def handle(delivery: Delivery, outcomes: Counter) -> None:
        rollup_message(delivery.body, now, outcomes, receives=delivery.receives, budget=delivery.budget)

    failures, result = handle_batch(event, handle, what="savings", budget=Budget(context))
    publish_counts("SavingsWorker", result)
    return failures, result


def on_sqs_batch(event: dict, context=None) -> dict:
    """Lambda entry point (``savings-worker``): the partial batch response (infra/event_source.py)."""
    failures, _ = rollup_batch(event, clock.now(), context)
    return batch_response(failures)
