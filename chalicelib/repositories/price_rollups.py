"""Price history by scope: raw points, their hourly/daily rollups and the aggregator's progress.

A pool's raw points (``price-points``) mix sources: the spot-prices job's (``source_agent_id`` "aws",
everyone's) and agents' reports (``client_id`` set, that client's only; market data trust). Each source
is a *scope* (``aws`` or ``c:<client_id>``) and is bucketed on its own; a client reads ``aws`` and its
own scope, never another tenant's. Points without a client that are not AWS's (stored before points
carried one) are visible to nobody and never rolled up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from components.price_buckets import DAY, HOUR, Bucket, floor_to, merged_buckets, price_buckets

from chalicelib import clock
from chalicelib.repositories.pools import SERVER_SOURCE, PoolPrice
from chalicelib.settings import get_settings
from chalicelib.tables.jobs import JobStateTable
from chalicelib.tables.pools import PricePointTable, PriceRollupTable

AWS_SCOPE = "aws"
INTERVALS = {HOUR: "hour", DAY: "day"}
_PREFIX = {HOUR: "h", DAY: "d"}
# Each scope's price in force before a window (its "head") is read backwards from the window's start: first one
# page of HEAD_LOOKBACK_ROWS rows (one Query; it holds every head in most pools). Rows of a pool are shared by its
# scopes, so another tenant's many points can push a scope's head further back: then at most HEAD_SEARCH_PAGES more
# pages follow, each evaluating HEAD_SEARCH_ROWS rows and returning only the missing scopes' (a filter), until
# every head sought is found or the partition ends. Bounded: at most 50 + 4 × 1,000 rows, five Queries, a pool.
HEAD_LOOKBACK_ROWS = 50
HEAD_SEARCH_ROWS = 1000
HEAD_SEARCH_PAGES = 4


def client_scope(client_id: str) -> str:
    return f"c:{client_id}"


def visible_scopes(client_id: str) -> tuple[str, str]:
    """The scopes a client may see: AWS's prices and its own agents'."""
    return AWS_SCOPE, client_scope(client_id)


def scope_of(row: PricePointTable) -> str | None:
    """Whose point it is; None for a point nobody may see."""
    if row.source_agent_id == SERVER_SOURCE:
        return AWS_SCOPE
    return client_scope(row.client_id) if row.client_id else None


def known_scopes(pool: PoolPrice | None) -> frozenset[str] | None:
    """The scopes that may have points in the pool, from its row: AWS's when the spot-prices job prices it, each
    client's whose agents reported there (``agent_prices``); None when the row is not known (any scope may)."""
    if pool is None:
        return None
    scopes = {client_scope(client_id) for client_id in pool.agent_prices}
    if pool.server_priced_at is not None or pool.price_source == SERVER_SOURCE:
        scopes.add(AWS_SCOPE)
    return frozenset(scopes)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def bucket_key(seconds: int, start: datetime, scope: str) -> str:
    return f"{_PREFIX[seconds]}#{iso(start)}#{scope}"


def _live(row, now: datetime) -> bool:
    return row.expires_at is None or row.expires_at > now


# --- raw points -----------------------------------------------------------------------------------

def _searched(scopes: set[str]):
    """A filter on the points of ``scopes`` (a condition DynamoDB applies after reading the rows)."""
    clients = sorted(scope.removeprefix("c:") for scope in scopes if scope != AWS_SCOPE)
    condition = PricePointTable.client_id.is_in(*clients) if clients else None
    if AWS_SCOPE in scopes:
        aws = PricePointTable.source_agent_id == SERVER_SOURCE
        condition = aws if condition is None else condition | aws
    return condition


def heads(pool_id: str, since: datetime, wanted: set[str] | None, sought: set[str],
          now: datetime) -> dict[str, tuple[datetime, Decimal]]:
    """Each scope's newest live point before ``since`` (``wanted`` scopes only; None: every scope): those in the
    first ``HEAD_LOOKBACK_ROWS`` rows read backwards, then, while a scope of ``sought`` has none, the further
    pages of the ``HEAD_SEARCH_PAGES`` bound (module comment)."""
    found: dict[str, tuple[datetime, Decimal]] = {}

    def take(rows) -> None:
        for row in rows:
            scope = scope_of(row)
            if scope and (wanted is None or scope in wanted) and scope not in found and _live(row, now):
                found[scope] = (row.ts, Decimal(str(row.price)))

    first = list(PricePointTable.query(pool_id, PricePointTable.ts < since, scan_index_forward=False,
                                       limit=HEAD_LOOKBACK_ROWS))
    take(first)
    if len(first) < HEAD_LOOKBACK_ROWS:
        return found  # the whole partition before ``since`` was read
    start_key = {"pool_id": {"S": pool_id}, "ts": {"S": PricePointTable.ts.serialize(first[-1].ts)}}
    for _ in range(HEAD_SEARCH_PAGES):
        missing = sought - set(found)
        if not missing or start_key is None:
            break
        pages = PricePointTable.query(pool_id, PricePointTable.ts < since, scan_index_forward=False,
                                      filter_condition=_searched(missing), page_size=HEAD_SEARCH_ROWS,
                                      last_evaluated_key=start_key).page_iter
        page = next(pages, None)
        if page is None:
            break
        take(PricePointTable.from_raw_data(item) for item in page.get("Items", []))
        start_key = pages.last_evaluated_key
    return found


def raw_series(pool_id: str, since: datetime, *, scopes: Iterable[str] | None = None,
               limit: int | None = None, known: Iterable[str] | None = None,
               ) -> tuple[dict[str, list[tuple[datetime, Decimal]]], datetime | None]:
    """The pool's raw points from ``since`` on, per scope, each preceded by that scope's point in force
    at ``since`` (:func:`heads`). The heads sought past the first page: the ``scopes`` asked for (every scope:
    those with points from ``since`` on, and ``known``), narrowed to ``known`` when given (:func:`known_scopes`:
    a scope with no point in the pool is not sought through it). With ``limit``, at most that many points are
    read from ``since``; the second value is then the time of the last one read when the limit cut the read
    short (None when everything was read)."""
    wanted = None if scopes is None else set(scopes)
    known_set = None if known is None else set(known)
    now = clock.now()
    rows = list(PricePointTable.query(pool_id, PricePointTable.ts >= since,
                                      limit=None if limit is None else limit + 1))
    cut = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        cut = rows[-1].ts if rows else since
    if wanted is not None:
        sought = wanted if known_set is None else wanted & known_set
    else:
        sought = {scope for row in rows if (scope := scope_of(row))} | (known_set or set())
    series: dict[str, list[tuple[datetime, Decimal]]] = {
        scope: [head] for scope, head in heads(pool_id, since, wanted, sought, now).items()}
    for row in rows:
        scope = scope_of(row)
        if scope and (wanted is None or scope in wanted) and _live(row, now):
            series.setdefault(scope, []).append((row.ts, Decimal(str(row.price))))
    return series, cut


def visible_history(pool_id: str, since: datetime, viewer: str | None = None,
                    pool: PoolPrice | None = None) -> list[tuple[datetime, Decimal]]:
    """The pool's prices from ``since`` on, oldest first, preceded by the one in force at ``since``, as ``viewer``
    may see them: AWS's points, and its own agents' when a client is named (None: the fleet's, AWS's only). The
    savings roll-up and the risk scorer read this, so another tenant's reports never price or score for anyone.
    ``pool`` (its row, when the caller has it) spares looking for a scope that has no point there."""
    scopes = (AWS_SCOPE,) if viewer is None else visible_scopes(viewer)
    series, _ = raw_series(pool_id, since, scopes=scopes, known=known_scopes(pool))
    merged = sorted(p for points in series.values() for p in points)
    before = [p for p in merged if p[0] < since]
    return before[-1:] + [p for p in merged if p[0] >= since]


# --- rollups -------------------------------------------------------------------------------------

def _bucket(row: PriceRollupTable) -> Bucket:
    seconds = HOUR if row.interval == "hour" else DAY
    return Bucket(row.start, seconds, Decimal(str(row.avg)), Decimal(str(row.low)), Decimal(str(row.high)),
                  Decimal(str(row.last)), int(row.points), int(row.covered_s), bool(row.filled))


def stored(pool_id: str, seconds: int, start: datetime, end: datetime, *,
           scopes: Iterable[str] | None = None) -> dict[str, dict[datetime, Bucket]]:
    """The stored buckets of a pool starting in ``[start, end)``, per scope (one Query; expired rows
    that TTL has not removed yet are left out)."""
    prefix = _PREFIX[seconds]
    condition = PriceRollupTable.bucket_key.between(f"{prefix}#{iso(start)}", f"{prefix}#{iso(end)}")
    wanted = None if scopes is None else tuple(scopes)
    now = clock.now()
    out: dict[str, dict[datetime, Bucket]] = {}
    for row in PriceRollupTable.query(pool_id, condition, filter_condition=None if wanted is None
                                      else PriceRollupTable.scope.is_in(*wanted)):
        if row.start < end and _live(row, now):
            out.setdefault(row.scope, {})[row.start] = _bucket(row)
    return out


def write(pool_id: str, scope: str, puts: list[Bucket], deletes: list[tuple[int, datetime]],
          retention_days: dict[int, int]) -> None:
    """Put the given buckets (their TTL from their start: the same item on every run) and delete the
    given (interval, start) keys, in batches."""
    with PriceRollupTable.batch_write() as batch:
        for b in puts:
            batch.save(PriceRollupTable(
                pool_id, bucket_key(b.seconds, b.start, scope), scope=scope, interval=INTERVALS[b.seconds],
                start=b.start, avg=b.avg, low=b.low, high=b.high, last=b.last, points=b.points,
                covered_s=b.covered_s, filled=b.filled,
                expires_at=b.start + timedelta(days=retention_days[b.seconds])))
        for seconds, start in deletes:
            batch.delete(PriceRollupTable(pool_id, bucket_key(seconds, start, scope)))


# --- progress ------------------------------------------------------------------------------------

def _state_key(pool_id: str) -> str:
    return f"rollup#{pool_id}"


@dataclass(frozen=True)
class RollupState:
    """How far a pool is rolled up: every hour in ``[since, through)`` has been aggregated."""

    since: datetime | None
    through: datetime


def rollup_states(pool_ids: Iterable[str]) -> dict[str, RollupState]:
    """Each pool's rollup progress (one BatchGet per 100 pools)."""
    keys = sorted({_state_key(p) for p in pool_ids})
    found = {}
    for row in JobStateTable.batch_get(keys):
        if row.at:
            since = (row.cursor or {}).get("since")
            found[row.job_key.removeprefix("rollup#")] = RollupState(
                datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None, row.at)
    return found


def mark_rolled(pool_id: str, through: datetime, now: datetime, since: datetime | None = None) -> None:
    """Record that the pool is rolled up to ``through``; ``since`` (the first run's window start) only
    when first recorded."""
    actions = [JobStateTable.at.set(through), JobStateTable.updated_at.set(now)]
    if since is not None:
        actions.append(JobStateTable.cursor.set({"since": iso(since)}))
    JobStateTable(_state_key(pool_id)).update(actions=actions)


def delete_raw_before(pool_id: str, since: datetime, cutoff: datetime, budget: int) -> int:
    """Delete the pool's raw points in ``[since, cutoff)`` except each scope's newest one before
    ``cutoff`` (the price still in force there: the aggregator and the risk features read it), at most
    ``budget``, newest first. Returns how many were deleted."""
    keep: set[str] = set()
    deleted = 0
    with PricePointTable.batch_write() as batch:
        for row in PricePointTable.query(pool_id, PricePointTable.ts < cutoff, scan_index_forward=False,
                                         attributes_to_get=["pool_id", "ts", "source_agent_id", "client_id"]):
            scope = scope_of(row) or "-"
            if scope not in keep:
                keep.add(scope)
                continue
            if row.ts < since or deleted >= budget:
                break
            batch.delete(PricePointTable(row.pool_id, row.ts))
            deleted += 1
    return deleted


# --- reading a client's history ------------------------------------------------------------------

RAW_FALLBACK = timedelta(hours=3)  # the newest hours the aggregator (every 15 min) may not have rolled up yet
MAX_FALLBACK_POINTS = 5000


def carry_rules(scope: str, pool: PoolPrice | None, points: list[tuple[datetime, Decimal]],
                now: datetime) -> tuple[timedelta | None, datetime | None]:
    """How far a scope's price carries: ``(max_carry, known_until)``. AWS's price holds until the next
    change and is known while the spot-prices job confirms it (its freshness window after the last
    confirmation); an agent's price carries ``PRICE_AGENT_CARRY_S`` past its last point. Never past ``now``."""
    settings = get_settings()
    if scope == AWS_SCOPE:
        confirmed = pool.server_priced_at if pool is not None and pool.server_priced_at else None
        last = max(t for t, _ in points) if points else now
        until = (confirmed + timedelta(seconds=settings.server_price_fresh_s)) if confirmed else last
        return None, min(max(until, last), now)
    return timedelta(seconds=settings.price_agent_carry_s), now


def buckets_from_raw(pool: PoolPrice | None, pool_id: str, scopes: Iterable[str], start: datetime,
                     end: datetime, now: datetime, seconds: int = HOUR,
                     limit: int | None = None) -> dict[str, list[Bucket]]:
    """Buckets of ``[start, end)`` computed from the raw points, per scope (what the aggregator would store)."""
    series, cut = raw_series(pool_id, start, scopes=scopes, limit=limit, known=known_scopes(pool))
    if cut is not None:
        end = min(end, floor_to(cut, seconds))
    out = {}
    for scope, points in series.items():
        carry, until = carry_rules(scope, pool, points, now)
        out[scope] = price_buckets(points, start, end, seconds=seconds, max_carry=carry, known_until=until)
    return out


def _hourly_for(pool: PoolPrice | None, pool_id: str, scopes: tuple[str, ...], start: datetime,
                now: datetime) -> dict[str, dict[datetime, Bucket]]:
    """Stored hourly buckets from ``start`` to now, then the hours not rolled up yet (the current one
    included, up to now) from the raw points, at most ``RAW_FALLBACK`` back."""
    found = stored(pool_id, HOUR, start, now, scopes=scopes)
    rolled_end = max((b.end for per in found.values() for b in per.values()), default=start)
    fallback_from = floor_to(max(start, rolled_end, now - RAW_FALLBACK), HOUR)
    for scope, buckets in buckets_from_raw(pool, pool_id, scopes, fallback_from, now, now,
                                           limit=MAX_FALLBACK_POINTS).items():
        per = found.setdefault(scope, {})
        for b in buckets:
            per[b.start] = b
    return found


def _prefer_aws(per_scope: dict[str, dict[datetime, Bucket]], scopes: tuple[str, ...]) -> list[Bucket]:
    merged: dict[datetime, Bucket] = {}
    for scope in reversed(scopes):  # the client's own first, AWS's over it where both exist
        merged.update(per_scope.get(scope, {}))
    return [merged[t] for t in sorted(merged)]


def client_history(pool: PoolPrice | None, pool_id: str, client_id: str, seconds: int, start: datetime,
                   now: datetime) -> list[Bucket]:
    """A pool's buckets from ``start`` to now as ``client_id`` may see them: AWS's prices, and its own
    agents' where AWS has none; stored rollups, the newest hours (and the current day) from raw points."""
    scopes = visible_scopes(client_id)
    start = floor_to(start, seconds)
    if seconds == HOUR:
        return [b for b in _prefer_aws(_hourly_for(pool, pool_id, scopes, start, now), scopes) if b.start >= start]
    days = stored(pool_id, DAY, start, now, scopes=scopes)
    days_end = max((b.end for per in days.values() for b in per.values()), default=start)
    partial_from = max(days_end, floor_to(now - RAW_FALLBACK, DAY), start)
    hourly = _hourly_for(pool, pool_id, scopes, partial_from, now)
    for scope, per in hourly.items():
        for b in merged_buckets(per.values(), partial_from, now, DAY):
            days.setdefault(scope, {})[b.start] = b
    return [b for b in _prefer_aws(days, scopes) if b.start >= start]
