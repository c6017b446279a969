"""Pools, price points and pricing reports: the write side of the data valve.

Two writers price a pool. The spot-prices job (``store_server_prices``, source ``aws``) sets the pool's
shared price, the source of truth: AWS's own price history. Agents' pricing reports (``admit_points``) set
their own client's entry of the pool (``agent_prices``: read by that client only, never replaced by another
tenant's report), only for pools the job does not cover: never priced by the job, or not confirmed by it for longer than
``SERVER_PRICE_FRESH_S`` (the job stopped). For a pool the job covers, an agent's point is counted
(outcome ``server_priced``) and not written to the pool's history, so the risk model's features and the
data valve's window see one source; such a report costs one BatchGetItem and no pool write. The raw
report (``pricing-reports``, 30 days) is kept when it stored agent prices, else once per agent-hour.
The agent's on-demand price is still taken (the job does not fetch on-demand prices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pynamodb.exceptions import UpdateError

from components.data_valve import Admission, PointQuality, PricePoint, ValveConfig, admit, expires_at
from components.pool_id import parse_pool_id, region_of_az

from chalicelib import clock
from chalicelib.repositories.dynamo import condition_failed, delete_each, save_if, set_or_remove
from chalicelib.tables.pools import PoolTable, PricePointTable, PricingReportTable, RecentPointMap
from chalicelib.tables.risk import RiskScoreTable


@dataclass(frozen=True)
class PoolPrice:
    """The latest known price of a pool: ``price``/``at`` are the shared (AWS's) one, ``agent_prices`` each client's
    own agents' reports; a reader takes what its client sees (``seen_by``)."""

    pool_id: str
    instance_type: str
    az: str
    region: str
    price: Decimal | None
    at: datetime | None
    ondemand_price: Decimal | None
    risk: float | None = None
    risk_at: datetime | None = None
    risk_source: str | None = None
    price_source: str | None = None  # "aws" (spot-prices job) or "agent"
    server_priced_at: datetime | None = None  # when the job last confirmed the price
    price_client_id: str | None = None  # the reporting client of an agent price
    client_risk: Mapping[str, float] = dataclasses.field(default_factory=dict)  # {client_id: its own score}
    agent_prices: Mapping[str, tuple[Decimal, datetime]] = dataclasses.field(default_factory=dict)  # {client: (price, at)}

    def risk_for(self, client_id: str | None) -> float | None:
        """The risk ``client_id``'s placements and views read: the pool's score with that client's own agents'
        reports when the risk scorer made one, else the fleet's (another tenant's reports never count)."""
        return self.client_risk.get(client_id, self.risk) if client_id else self.risk

    def seen_by(self, client_id: str | None) -> PoolPrice:
        """The pool with the price ``client_id`` may use: AWS's, or its own agents' latest report when newer (the
        job does not cover the pool); never another tenant's (then no price at all)."""
        own = self.agent_prices.get(client_id) if client_id else None
        shared = self.price is not None and self.price_source != AGENT_SOURCE
        if own is not None and not (shared and self.at is not None and self.at >= own[1]):
            return dataclasses.replace(self, price=own[0], at=own[1], price_source=AGENT_SOURCE,
                                       price_client_id=client_id)
        return self if shared else dataclasses.replace(self, price=None, at=None)


SERVER_SOURCE = "aws"
AGENT_SOURCE = "agent"
SERVER_PRICED = "server_priced"  # admission outcome of an agent point for a pool the job covers


def _point(pool_id: str, m: RecentPointMap) -> PricePoint:
    return PricePoint(pool_id=pool_id, ts=m.ts, price=Decimal(str(m.price)),
                      quality=PointQuality(m.quality), source_agent_id=m.source,
                      sources=int(m.sources or 1))


def _map(p: PricePoint) -> RecentPointMap:
    return RecentPointMap(ts=p.ts, price=p.price, quality=p.quality.value, source=p.source_agent_id,
                          sources=p.sources)


def _new_pool(pool_id: str, now: datetime) -> PoolTable:
    instance_type, az = parse_pool_id(pool_id)
    region = region_of_az(az)
    return PoolTable(pool_id, instance_type=instance_type, az=az, region=region,
                     region_type=f"{region}#{instance_type}", updated_at=now, recent=[])


def server_covers(row: PoolTable | None, now: datetime, window: timedelta) -> bool:
    """True while the spot-prices job's price of this pool is fresh: agent reports do not replace it."""
    return (row is not None and row.price_source == SERVER_SOURCE and row.server_priced_at is not None
            and now - row.server_priced_at <= window)


def _point_row(p: PricePoint, config: ValveConfig, now: datetime, client_id: str | None = None) -> PricePointTable:
    return PricePointTable(
        p.pool_id, p.ts, price=p.price, quality=p.quality.value, source_agent_id=p.source_agent_id,
        sources=p.sources, client_id=client_id,
        expires_at=datetime.fromtimestamp(expires_at(p.ts, config), tz=now.tzinfo))


def _save_point(batch, p: PricePoint, config: ValveConfig, now: datetime, client_id: str | None = None) -> None:
    batch.save(_point_row(p, config, now, client_id))


def _own(client_id: str):
    """The condition of a client's write to a price point: the key is new, or the point is already the client's.
    A point is keyed by (pool, ts) and an agent chooses its ``collected_at``: without it, a report could replace
    another tenant's point, or AWS's point of a pool the job stopped covering, at the same time (or delete one)."""
    return PricePointTable.pool_id.does_not_exist() | (PricePointTable.client_id == client_id)


def _save_own_point(p: PricePoint, config: ValveConfig, now: datetime, client_id: str) -> bool:
    """One PutItem of the client's point unless the key holds someone else's (False: nothing written). Agent points
    are stored only for pools the job does not cover, a rare path: one conditional write a point, not a batch."""
    return save_if(_point_row(p, config, now, client_id), _own(client_id))


def _delete_own_point(p: PricePoint, client_id: str) -> None:
    """Delete a stale point of the client's window, if the key still holds the client's point."""
    delete_each([PricePointTable(p.pool_id, p.ts)], PricePointTable.client_id == client_id, budget=1)


def admit_points(points: list[PricePoint], now: datetime, config: ValveConfig = ValveConfig(), *,
                 client_id: str, server_window: timedelta | None = None) -> dict[str, Admission]:
    """Run every agent point of ``client_id`` through the data valve and persist the result (one
    BatchGetItem, then one conditional write a point (``_own``: never another tenant's or AWS's point), and one write of each pool whose client entry changed
    (``_write_agent_prices``), only when any did). The price is kept in the client's own entry of the pool
    (``agent_prices``): its window holds its own points only, another tenant's decisions never read it, and
    another tenant's report never replaces it. Agents never set on-demand prices (AWS's list price is used).

    With ``server_window``, a pool the spot-prices job covers (``server_covers``) keeps its price: its
    admission is outcome ``server_priced`` with nothing written.
    """
    pool_ids = sorted({p.pool_id for p in points})
    pools = {row.pool_id: row for row in PoolTable.batch_get(pool_ids)}
    known = set(pools)
    admissions: dict[str, Admission] = {}
    deferred = {pid for pid in pool_ids
                if server_window is not None and server_covers(pools.get(pid), now, server_window)}
    for pool_id in deferred:
        row = pools[pool_id]
        recent = tuple(_point(pool_id, m) for m in row.recent or [])
        admissions[pool_id] = Admission((), (), recent, SERVER_PRICED, 0, None)
    windows: dict[str, list[PricePoint]] = {}
    for point in sorted(points, key=lambda p: (p.pool_id, p.ts)):
        if point.pool_id in deferred:
            continue
        row = pools.setdefault(point.pool_id, _new_pool(point.pool_id, now))
        recent = windows.setdefault(point.pool_id, _agent_window(row, client_id))
        admission = admit(recent, point, config)
        admissions[point.pool_id] = admission
        for stale in admission.deletes:
            _delete_own_point(stale, client_id)
        for p in admission.upserts:
            _save_own_point(p, config, now, client_id)
        windows[point.pool_id] = list(admission.recent)
    _write_agent_prices({pid: (pools[pid], windows[pid]) for pid in pool_ids
                         if pid not in deferred and changed(admissions[pid]) and windows[pid]},
                        client_id, known, now)
    return admissions


def _agent_map(row: PoolTable) -> dict:
    value = row.agent_prices
    return value.as_dict() if hasattr(value, "as_dict") else dict(value or {})


def _agent_window(row: PoolTable, client_id: str) -> list[PricePoint]:
    """The client's own recent points of the pool (a row written before per-client entries: its agent window, when
    it was this client's)."""
    entry = _agent_map(row).get(client_id)
    if entry is not None:
        return [PricePoint(pool_id=row.pool_id, ts=datetime.fromisoformat(m["ts"]), price=Decimal(m["price"]),
                           quality=PointQuality(m["quality"]), source_agent_id=m.get("source") or None,
                           sources=int(m.get("sources") or 1)) for m in entry.get("recent") or []]
    if row.price_source == AGENT_SOURCE and row.price_client_id == client_id:
        return [_point(row.pool_id, m) for m in row.recent or []]
    return []


def _entry(recent: list[PricePoint]) -> dict:
    """A client's entry of ``agent_prices``: its newest point's price and time, and its window (text: exact)."""
    newest = max(recent, key=lambda p: p.ts)
    return {"price": str(newest.price), "at": newest.ts.isoformat(),
            "recent": [{"ts": p.ts.isoformat(), "price": str(p.price), "quality": p.quality.value,
                        "source": p.source_agent_id or "", "sources": p.sources} for p in recent]}


def _created(row: PoolTable) -> bool:
    """Put a pool new to the table whole, unless another writer created it since it was read (another tenant's
    first report of it, the spot-prices job): False then, nothing written, and the caller writes only its own fields,
    as for a known pool. An unconditional put (the BatchWriteItem before) replaced that writer's row: the other
    tenant's entry, or AWS's price, was lost."""
    return save_if(row, PoolTable.pool_id.does_not_exist())


def _write_agent_prices(changed_pools: dict[str, tuple[PoolTable, list[PricePoint]]], client_id: str,
                        known: set[str], now: datetime) -> None:
    """Each changed pool's entry of ``client_id``: a pool new to the table whole (``_created``), a known one by an
    UpdateItem of that one entry (and ``reported_at``), so neither another tenant's entry nor a risk score written
    since the read is put back. A known pool without entries yet gets the map first (a second, conditional write)."""
    for pool_id, (row, recent) in changed_pools.items():
        entry = _entry(recent)
        if pool_id not in known:
            row.agent_prices, row.reported_at, row.updated_at = {client_id: entry}, now, now
            if _created(row):
                continue
        _set_entry(row, client_id, entry, now)


# A client's entry of a pool no report of it has refreshed for this long is removed by the next report of the pool
# (``_set_entry``): a price that old is read by nothing, and the entries of clients gone (deleted, or no longer on that
# pool) would otherwise grow a popular pool's item towards DynamoDB's 400 KB without end. At most PRUNED_PER_WRITE a
# write (an update expression's size is bounded too).
AGENT_ENTRY_KEPT = timedelta(days=14)
PRUNED_PER_WRITE = 20


def _stale_entries(row: PoolTable, client_id: str, now: datetime) -> list[tuple[str, object]]:
    """Other clients' entries of the pool not refreshed within ``AGENT_ENTRY_KEPT`` (at most ``PRUNED_PER_WRITE``),
    each with its ``at`` as read (what ``_unchanged`` checks)."""
    stale = []
    for other, entry in _agent_map(row).items():
        raw = entry.get("at") if isinstance(entry, Mapping) else None
        try:
            at = datetime.fromisoformat(raw)
            old = at < now - AGENT_ENTRY_KEPT
        except (TypeError, ValueError):  # no time, not text, not a time, or one without its zone
            old = True
        if other != client_id and old and (raw is None or isinstance(raw, str)):
            stale.append((other, raw))
    return sorted(stale)[:PRUNED_PER_WRITE]


def _unchanged(stale: list[tuple[str, object]]):
    """The condition of a pruning: each entry it removes still has the ``at`` it was read with. Another client's
    report may refresh its entry between this report's read and its write: an unconditional remove erased that
    client's fresh price (security walk 21)."""
    condition = PoolTable.agent_prices.exists()
    for other, raw in stale:
        at = PoolTable.agent_prices[other]["at"]
        condition &= at.does_not_exist() if raw is None else at == raw
    return condition


def _set_entry(row: PoolTable, client_id: str, entry: dict, now: datetime) -> None:
    """Write ``client_id``'s entry (and ``reported_at``), pruning the stale entries of others as read
    (``_stale_entries``) on the condition that they are still those (``_unchanged``); when one was refreshed
    meanwhile, the entry is written without the pruning (the next report prunes what is still stale)."""
    stamps = [PoolTable.reported_at.set(now), PoolTable.updated_at.set(now)]
    stale = _stale_entries(row, client_id, now)
    own = PoolTable.agent_prices[client_id].set(entry)
    attempts = [((own, *stamps, *(PoolTable.agent_prices[other].remove() for other, _ in stale)), _unchanged(stale))
                ] if stale else []
    attempts += [((own, *stamps), PoolTable.agent_prices.exists()),
                 ((PoolTable.agent_prices.set({client_id: entry}), *stamps), PoolTable.agent_prices.does_not_exist())
                 ] * 2  # the map created by another report in between: its entry after all
    for actions, condition in attempts:
        try:
            row.update(actions=list(actions), condition=condition)
            return
        except UpdateError as exc:
            if not condition_failed(exc):
                raise


def _write_prices(rows: list[PoolTable], known: set[str], *, server: bool = False) -> None:
    """Write the pools' price fields: a pool new to the table whole (``_created``), a known one (or one created
    since it was read) by an UpdateItem of its price fields only. A put replaces the whole item, so a risk score the
    risk scorer wrote since this caller read the pool would be put back to the one read (the spot-prices job, every
    10 min, and the scorer, every 15, start together every 30 minutes)."""
    for row in rows:
        if row.pool_id in known or not _created(row):
            actions = [PoolTable.recent.set(row.recent or []), set_or_remove(PoolTable.latest_price, row.latest_price),
                       set_or_remove(PoolTable.latest_at, row.latest_at),
                       set_or_remove(PoolTable.price_source, row.price_source),
                       set_or_remove(PoolTable.price_client_id, row.price_client_id),
                       PoolTable.updated_at.set(row.updated_at)]
            if server:
                actions.append(PoolTable.server_priced_at.set(row.server_priced_at))
            row.update(actions=actions)


def changed(admission: Admission) -> bool:
    """True when the admission stored or removed a point: only then is the pool item written (a
    re-sent report, an exact duplicate, costs its read and nothing else)."""
    return bool(admission.upserts or admission.deletes)


@dataclass(frozen=True)
class ServerPriceResult:
    """What one spot-prices run did to one pool."""

    pool_id: str
    price: Decimal  # the price in effect now (AWS's newest change)
    changed_at: datetime  # when AWS last changed it
    written: int  # price points written (0 on a re-run: same timestamps are the same points)
    duplicates: int


def store_server_prices(points: list[PricePoint], now: datetime, config: ValveConfig = ValveConfig(),
                        source: str = SERVER_SOURCE) -> dict[str, ServerPriceResult]:
    """Store AWS price points (already plausible) as the pools' source of truth; one pool write each.

    Each point goes through the data valve's window without gap fill (AWS prices are a step function:
    a price holds until the next change, so interpolating would invent prices) and keyed by
    ``(pool, AWS timestamp)``, so a re-run writes nothing new. The pool's latest price becomes the
    price of AWS's newest change, ``latest_at`` = ``now`` (the time it was last known to be in effect,
    as for an agent's report), ``price_source`` = ``aws`` and ``server_priced_at`` = ``now``.
    """
    step = dataclasses.replace(config, gap_max_points=0, dedup_window_s=0)
    by_pool: dict[str, list[PricePoint]] = {}
    for p in points:
        by_pool.setdefault(p.pool_id, []).append(p)
    pools = {row.pool_id: row for row in PoolTable.batch_get(sorted(by_pool))}
    known = set(pools)
    results: dict[str, ServerPriceResult] = {}
    with PricePointTable.batch_write() as point_batch:
        for pool_id, pool_points in sorted(by_pool.items()):
            row = pools.setdefault(pool_id, _new_pool(pool_id, now))
            recent = [_point(pool_id, m) for m in row.recent or []]
            written = duplicates = 0
            for point in sorted(pool_points, key=lambda p: p.ts):
                admission = admit(recent, point, step)
                for p in admission.upserts:
                    _save_point(point_batch, p, config, now)
                written += len(admission.upserts)
                duplicates += admission.outcome == "exact_duplicate"
                recent = list(admission.recent)
            newest = max(pool_points, key=lambda p: p.ts)
            row.recent = [_map(p) for p in recent]
            row.latest_price, row.latest_at = newest.price, now
            row.price_source, row.server_priced_at, row.updated_at = source, now, now
            row.price_client_id = None
            results[pool_id] = ServerPriceResult(pool_id, newest.price, newest.ts, written, duplicates)
    _write_prices([pools[pid] for pid in sorted(by_pool)], known, server=True)
    return results


def report_worth_keeping(last_report_at: datetime | None, now: datetime, pools_stored: int) -> bool:
    """Whether a pricing report's raw item is written: always when agent prices entered the market
    data (``pools_stored``: the audit of what an agent put there), else the first report of each
    clock hour per agent. The job prices the pools the agent runs, so a legacy agent's reports in
    between add only a time (``AgentTable.last_pricing_at``) and an on-demand price that an hourly
    sample keeps (``reported_ondemand``): one write an hour instead of twelve."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    return pools_stored > 0 or last_report_at is None or last_report_at < hour


def report_kept(agent_id: str, collected_at: datetime) -> bool:
    """Whether the agent's newest raw report is the one collected at ``collected_at`` (one Query of one item).
    Asked only of a report whose points are all exact duplicates: a retry of a report whose first attempt
    stored the points and died before its raw report was written must still write it."""
    for row in PricingReportTable.query(agent_id, scan_index_forward=False, limit=1, consistent_read=True):
        return row.collected_at == collected_at
    return False


def save_report(row: PricingReportTable, now: datetime, retention_days: int) -> None:
    """Keep the raw report for its retention period (TTL)."""
    row.expires_at = now + timedelta(days=retention_days)
    row.save()


def reported_ondemand(agent_id: str, instance_type: str | None, lookback: int = 5) -> Decimal | None:
    """The on-demand price the agent itself last reported for its type (its raw reports; one Query):
    the fallback for a type the catalogue does not list, used for this agent's decisions only."""
    for row in PricingReportTable.query(agent_id, scan_index_forward=False, limit=lookback):
        if row.on_demand_price is not None and row.instance_type == instance_type:
            return Decimal(str(row.on_demand_price))
    return None


def latest_prices(pool_ids: list[str]) -> dict[str, PoolPrice]:
    """Latest price of each known pool (one BatchGet per 100 pools)."""
    return {row.pool_id: _price(row) for row in PoolTable.batch_get(sorted(set(pool_ids)))}


MAX_POOLS_PER_TYPE = 32  # a region has at most ~10 zones; more is junk that must not slow anyone down


def pools_of_type(region: str, instance_type: str, limit: int = MAX_POOLS_PER_TYPE) -> list[PoolPrice]:
    """The known pools of a type in a region, by AZ, at most ``limit`` (one GSI query, paged)."""
    return [_price(row) for row in PoolTable.by_type.query(f"{region}#{instance_type}", limit=limit)]


# A pool someone priced within this window is in use: the spot-prices job prices every (region, type) agents run
# or may run on every 10 minutes, and agents report their own pools hourly; a pool nobody runs or may run on any
# more drops out a day after its last price.
PRICED_WITHIN = timedelta(hours=24)


@dataclass(frozen=True)
class PricedPage:
    """Up to a cap of priced pools (by id) from one point of the pools table's scan order on; ``resume_after`` is
    the pool to continue after on the next call, None when the scan reached the table's end."""

    pools: list[PoolPrice]
    resume_after: str | None


def priced_page(now: datetime, cap: int, after: str | None = None) -> PricedPage:
    """The pools with a price newer than ``PRICED_WITHIN`` (what agents run or may run on), at most ``cap``, by id,
    from just after the pool ``after`` in the table's scan order (None: from its start): the batch jobs' pools (risk
    scorer, pricing aggregator, data cleaner; ``chalicelib.jobs.pool_walk`` takes them in turns past a cap). A
    filtered scan of the pools table, whose size is the market's (region × type × zone, junk rows without a price
    skipped), never the fleet's: no agent is read. Reads one pool past the cap, so a page that ends exactly at the
    table's end says so."""
    fresh = (PoolTable.latest_at >= now - PRICED_WITHIN) | (PoolTable.reported_at >= now - PRICED_WITHIN)
    start = {"last_evaluated_key": {"pool_id": {"S": after}}} if after else {}
    found, resume = [], None
    for row in PoolTable.scan(filter_condition=fresh, **start):
        if len(found) >= cap:
            resume = found[-1].pool_id
            break
        found.append(_price(row))
    return PricedPage(sorted(found, key=lambda p: p.pool_id), resume)


def history(pool_id: str, since: datetime, limit: int = 1000) -> list[PricePoint]:
    """Stored points of a pool since a time, oldest first (expired-but-not-yet-deleted excluded)."""
    rows = PricePointTable.query(pool_id, PricePointTable.ts >= since, limit=limit)
    now = clock.now()
    return [_stored_point(r) for r in rows if r.expires_at is None or r.expires_at > now]


def _stored_point(r: PricePointTable) -> PricePoint:
    return PricePoint(pool_id=r.pool_id, ts=r.ts, price=Decimal(str(r.price)), quality=PointQuality(r.quality),
                      source_agent_id=r.source_agent_id, sources=int(r.sources or 1))


def _agent_prices(row: PoolTable) -> dict[str, tuple[Decimal, datetime]]:
    """{client: (price, at)} of the row's client entries (a row's agent price from before them: its client's)."""
    prices = {client: (Decimal(e["price"]), datetime.fromisoformat(e["at"])) for client, e in _agent_map(row).items()}
    if row.price_source == AGENT_SOURCE and row.price_client_id and row.latest_price is not None \
            and row.latest_at is not None and row.price_client_id not in prices:
        prices[row.price_client_id] = (Decimal(str(row.latest_price)), row.latest_at)
    return prices


def _price(row: PoolTable) -> PoolPrice:
    agent_priced = row.price_source == AGENT_SOURCE
    return PoolPrice(pool_id=row.pool_id, instance_type=row.instance_type, az=row.az,
                     region=row.region,
                     price=None if row.latest_price is None or agent_priced else Decimal(str(row.latest_price)),
                     at=None if agent_priced else row.latest_at, agent_prices=_agent_prices(row),
                     ondemand_price=None if row.ondemand_price is None else Decimal(str(row.ondemand_price)),
                     risk=None if row.risk is None else float(row.risk), risk_at=row.risk_at,
                     risk_source=row.risk_source, price_source=row.price_source,
                     server_priced_at=row.server_priced_at, price_client_id=row.price_client_id,
                     client_risk={c: float(r) for c, r in (row.client_risk or {}).items()})


def save_risk(scores: list[tuple[str, float, str, str | None]], horizon_s: int, now: datetime,
              retention_days: int = 30, client_scores: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Write (pool, risk, source, model version) on each pool item and into the score history.

    ``client_scores`` (``{pool_id: {client_id: risk}}``) replace each scored pool's client scores: a client whose
    reports aged out of the evidence window falls back to the fleet's score (only the fleet's has a history)."""
    client_scores = client_scores or {}
    expires = now + timedelta(days=retention_days)
    with RiskScoreTable.batch_write() as history:
        for pool_id, risk, source, version in scores:
            history.save(RiskScoreTable(pool_id, now, risk=risk, source=source, model_version=version,
                                        horizon_s=horizon_s, expires_at=expires))
    for pool_id, risk, source, version in scores:
        PoolTable(pool_id).update(actions=[PoolTable.risk.set(risk), PoolTable.risk_at.set(now),
                                           PoolTable.risk_source.set(source),
                                           PoolTable.risk_model_version.set(version) if version
                                           else PoolTable.risk_model_version.remove(),
                                           PoolTable.client_risk.set(dict(client_scores[pool_id]))
                                           if client_scores.get(pool_id) else PoolTable.client_risk.remove()],
                                  condition=PoolTable.pool_id.exists())
