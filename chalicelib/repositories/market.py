"""The market-data jobs' bookkeeping: last fetch and next allowed query per (job, region, type)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pynamodb.exceptions import UpdateError

from chalicelib.repositories.dynamo import condition_failed
from chalicelib.tables.market import MarketFetchTable

PRICES = "prices"
PLACEMENT = "placement"


@dataclass(frozen=True)
class FetchState:
    """What a job knows about one (region, type)."""

    kind: str
    region: str
    instance_type: str
    last_at: datetime | None
    next_at: datetime | None
    last_error: str | None


def _key(kind: str, region: str, instance_type: str) -> str:
    return f"{kind}#{region}#{instance_type}"


def _state(row: MarketFetchTable) -> FetchState:
    return FetchState(row.kind, row.region, row.instance_type, row.last_at, row.next_at, row.last_error)


def states(kind: str, targets: list[tuple[str, str]]) -> dict[tuple[str, str], FetchState]:
    """The stored state of each (region, type) of one job (one BatchGet per 100); absent = never run."""
    keys = sorted({_key(kind, r, t) for r, t in targets})
    return {(row.region, row.instance_type): _state(row) for row in MarketFetchTable.batch_get(keys)}


def record_success(kind: str, region: str, instance_type: str, at: datetime,
                   next_at: datetime | None = None) -> None:
    """A fetch at ``at`` succeeded: it is the next run's StartTime (prices) / the rate limit's clock."""
    MarketFetchTable(_key(kind, region, instance_type), kind=kind, region=region, instance_type=instance_type,
                     last_at=at, next_at=next_at, last_error=None, updated_at=at).save()


def record_failure(kind: str, region: str, instance_type: str, at: datetime, error: str,
                   next_at: datetime | None = None) -> None:
    """A fetch failed: keep ``last_at`` (the next run asks from there again), note why and when next."""
    actions = [MarketFetchTable.kind.set(kind), MarketFetchTable.region.set(region),
               MarketFetchTable.instance_type.set(instance_type), MarketFetchTable.last_error.set(error[:500]),
               MarketFetchTable.updated_at.set(at)]
    if next_at is not None:
        actions.append(MarketFetchTable.next_at.set(next_at))
    MarketFetchTable(_key(kind, region, instance_type)).update(actions=actions)


def claim(kind: str, region: str, instance_type: str, now: datetime, next_at: datetime) -> bool:
    """Take the right to query (region, type) now: sets ``next_at`` only if it is due (absent or past),
    so two overlapping runs never both spend a query of a rate-limited API. False if not due."""
    row = MarketFetchTable(_key(kind, region, instance_type))
    due = MarketFetchTable.next_at.does_not_exist() | (MarketFetchTable.next_at <= now)
    try:
        row.update(actions=[MarketFetchTable.kind.set(kind), MarketFetchTable.region.set(region),
                            MarketFetchTable.instance_type.set(instance_type),
                            MarketFetchTable.next_at.set(next_at), MarketFetchTable.updated_at.set(now)],
                   condition=due)
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True
