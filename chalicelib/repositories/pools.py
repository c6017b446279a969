"""Pools, price points and pricing reports: the write side of the data valve."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from components.data_valve import Admission, PointQuality, PricePoint, ValveConfig, admit, expires_at
from components.pool_id import parse_pool_id, region_of_az

from chalicelib import clock
from chalicelib.tables.pools import PoolTable, PricePointTable, PricingReportTable, RecentPointMap
from chalicelib.tables.risk import RiskScoreTable


@dataclass(frozen=True)
class PoolPrice:
    """The latest known price of a pool."""

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


def admit_points(points: list[PricePoint], ondemand: dict[str, Decimal | None], now: datetime,
                 config: ValveConfig = ValveConfig()) -> dict[str, Admission]:
    """Run every point through the data valve and persist the result (3 batched calls).

    ``ondemand`` maps pool id → the reporter's on-demand price for that pool's type.
    """
    pool_ids = sorted({p.pool_id for p in points})
    pools = {row.pool_id: row for row in PoolTable.batch_get(pool_ids)}
    admissions: dict[str, Admission] = {}
    with PricePointTable.batch_write() as point_batch:
        for point in sorted(points, key=lambda p: (p.pool_id, p.ts)):
            row = pools.setdefault(point.pool_id, _new_pool(point.pool_id, now))
            recent = [_point(row.pool_id, m) for m in row.recent or []]
            admission = admit(recent, point, config)
            admissions[point.pool_id] = admission
            for stale in admission.deletes:
                point_batch.delete(PricePointTable(stale.pool_id, stale.ts))
            for p in admission.upserts:
                point_batch.save(PricePointTable(
                    p.pool_id, p.ts, price=p.price, quality=p.quality.value,
                    source_agent_id=p.source_agent_id, sources=p.sources,
                    expires_at=datetime.fromtimestamp(expires_at(p.ts, config), tz=now.tzinfo)))
            row.recent = [_map(p) for p in admission.recent]
            newest = max(admission.recent, key=lambda p: p.ts) if admission.recent else None
            if newest is not None:
                row.latest_price, row.latest_at = newest.price, newest.ts
            if ondemand.get(point.pool_id) is not None:
                row.ondemand_price = ondemand[point.pool_id]
            row.updated_at = now
    with PoolTable.batch_write() as pool_batch:
        for pool_id in pool_ids:
            pool_batch.save(pools[pool_id])
    return admissions


def save_report(row: PricingReportTable, now: datetime, retention_days: int) -> None:
    """Keep the raw report for its retention period (TTL)."""
    row.expires_at = now + timedelta(days=retention_days)
    row.save()


def latest_prices(pool_ids: list[str]) -> dict[str, PoolPrice]:
    """Latest price of each known pool (one BatchGet per 100 pools)."""
    return {row.pool_id: _price(row) for row in PoolTable.batch_get(sorted(set(pool_ids)))}


def pools_of_type(region: str, instance_type: str) -> list[PoolPrice]:
    """Every known pool of a type in a region, by AZ (GSI query)."""
    return [_price(row) for row in PoolTable.by_type.query(f"{region}#{instance_type}")]


def history(pool_id: str, since: datetime, limit: int = 1000) -> list[PricePoint]:
    """Stored points of a pool since a time, oldest first (expired-but-not-yet-deleted excluded)."""
    rows = PricePointTable.query(pool_id, PricePointTable.ts >= since, limit=limit)
    now = clock.now()
    return [PricePoint(pool_id=r.pool_id, ts=r.ts, price=Decimal(str(r.price)),
                       quality=PointQuality(r.quality), source_agent_id=r.source_agent_id,
                       sources=int(r.sources or 1))
            for r in rows if r.expires_at is None or r.expires_at > now]


def _price(row: PoolTable) -> PoolPrice:
    return PoolPrice(pool_id=row.pool_id, instance_type=row.instance_type, az=row.az,
                     region=row.region,
                     price=None if row.latest_price is None else Decimal(str(row.latest_price)),
                     at=row.latest_at,
                     ondemand_price=None if row.ondemand_price is None else Decimal(str(row.ondemand_price)),
                     risk=None if row.risk is None else float(row.risk), risk_at=row.risk_at,
                     risk_source=row.risk_source)


def all_pools():
    """Every known pool (the risk scorer's batch job; never a request path)."""
    return [_price(row) for row in PoolTable.scan()]


def save_risk(scores: list[tuple[str, float, str, str | None]], horizon_s: int, now: datetime,
              retention_days: int = 30) -> None:
    """Write (pool, risk, source, model version) on each pool item and into the score history."""
    expires = now + timedelta(days=retention_days)
    with RiskScoreTable.batch_write() as history:
        for pool_id, risk, source, version in scores:
            history.save(RiskScoreTable(pool_id, now, risk=risk, source=source, model_version=version,
                                        horizon_s=horizon_s, expires_at=expires))
    for pool_id, risk, source, version in scores:
        PoolTable(pool_id).update(actions=[PoolTable.risk.set(risk), PoolTable.risk_at.set(now),
                                           PoolTable.risk_source.set(source),
                                           PoolTable.risk_model_version.set(version) if version
                                           else PoolTable.risk_model_version.remove()],
                                  condition=PoolTable.pool_id.exists())
