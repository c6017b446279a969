"""The market-data jobs' bookkeeping: last fetch and next allowed query per (job, region, type)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pynamodb.exceptions import PynamoDBException, UpdateError

from chalicelib.observability import logger
from chalicelib.repositories.dynamo import condition_failed
from chalicelib.tables.market import MarketFetchTable

PRICES = "prices"
PLACEMENT = "placement"
ONDEMAND = "ondemand"
# How long a claim holds a (region, type) (``claim``): longer than the spot-prices and placement-scores functions
# may run (120 s: .chalice/config.json), so an overlapping run never asks again, and shorter than the time between
# their runs (10 min, 1 h), so a run that died after its claim leaves it to the next run, not for the whole rate
# limit window (before, the claim set that window: a run dying after it left the on-demand price unasked for an
# hour, and the placement scores of the configuration unrecorded for 6 h).
CLAIM_LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class FetchState:
    """What a job knows about one (region, type)."""

    kind: str
    region: str
    instance_type: str
    last_at: datetime | None
    next_at: datetime | None
    last_error: str | None
    price: Decimal | None = None  # ONDEMAND rows: the stored list price
    updated_at: datetime | None = None  # the last attempt, successful or not
    claimed_at: datetime | None = None  # a claim that neither succeeded nor failed (its run died)


def _key(kind: str, region: str, instance_type: str) -> str:
    return f"{kind}#{region}#{instance_type}"


def _state(row: MarketFetchTable) -> FetchState:
    return FetchState(row.kind, row.region, row.instance_type, row.last_at, row.next_at, row.last_error, row.price,
                      row.updated_at, row.claimed_at)


def states(kind: str, targets: list[tuple[str, str]]) -> dict[tuple[str, str], FetchState]:
    """The stored state of each (region, type) of one job (one BatchGet per 100); absent = never run."""
    keys = sorted({_key(kind, r, t) for r, t in targets})
    return {(row.region, row.instance_type): _state(row) for row in MarketFetchTable.batch_get(keys)}


def record_success(kind: str, region: str, instance_type: str, at: datetime,
                   next_at: datetime | None = None, price: Decimal | None = None) -> None:
    """A fetch at ``at`` succeeded: it is the next run's StartTime (prices) / the rate limit's clock; ``price``:
    the on-demand list price it found (ONDEMAND; None: AWS lists none there)."""
    MarketFetchTable(_key(kind, region, instance_type), kind=kind, region=region, instance_type=instance_type,
                     last_at=at, next_at=next_at, last_error=None, price=price, updated_at=at).save()


def record_failure(kind: str, region: str, instance_type: str, at: datetime, error: str,
                   next_at: datetime | None = None) -> None:
    """A fetch failed: keep ``last_at`` (the next run asks from there again), note why and when next (the claim's
    ``claimed_at`` ends; ``record_success`` writes the whole row)."""
    actions = [MarketFetchTable.kind.set(kind), MarketFetchTable.region.set(region),
               MarketFetchTable.instance_type.set(instance_type), MarketFetchTable.last_error.set(error[:500]),
               MarketFetchTable.updated_at.set(at), MarketFetchTable.claimed_at.remove()]
    if next_at is not None:
        actions.append(MarketFetchTable.next_at.set(next_at))
    MarketFetchTable(_key(kind, region, instance_type)).update(actions=actions)


def claim(kind: str, region: str, instance_type: str, now: datetime, claimed_at: datetime | None = None) -> bool:
    """Take the right to query (region, type) now: sets ``next_at`` to ``now + CLAIM_LEASE`` only if it is due
    (absent or past), so two overlapping runs never both spend a query of a rate-limited API; the run's
    ``record_success`` / ``record_failure`` then set when it is due again, and a run that died after its claim leaves
    it due to the next run. ``claimed_at`` (default ``now``) stays on the row until then: a run finishing the claim
    of one that died passes that claim's time (``FetchState.claimed_at``). False if not due."""
    row = MarketFetchTable(_key(kind, region, instance_type))
    due = MarketFetchTable.next_at.does_not_exist() | (MarketFetchTable.next_at <= now)
    try:
        row.update(actions=[MarketFetchTable.kind.set(kind), MarketFetchTable.region.set(region),
                            MarketFetchTable.instance_type.set(instance_type),
                            MarketFetchTable.next_at.set(now + CLAIM_LEASE), MarketFetchTable.updated_at.set(now),
                            MarketFetchTable.claimed_at.set(claimed_at or now)],
                   condition=due)
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


LISTED_TTL_S = 3600  # a container re-reads a stored on-demand price at most hourly (the job refreshes it daily)
# (region, type) pairs a container remembers: a client chooses the type it asks about (GET /api/client/pools),
# so without a bound every made-up type would stay in memory for the hour.
LISTED_CACHED = 4096
_listed: dict[tuple[str, str], tuple[float, Decimal | None]] = {}


def listed_ondemand(region: str, instance_type: str) -> Decimal | None:
    """The on-demand list price of ``instance_type`` in ``region`` as the spot-prices job stored it (cached per
    container for ``LISTED_TTL_S``); None when it has none (never fetched, AWS lists none, the read failed)."""
    key = (region, instance_type)
    hit = _listed.get(key)
    if hit is not None and time.monotonic() - hit[0] < LISTED_TTL_S:
        return hit[1]
    try:
        price = MarketFetchTable.get(_key(ONDEMAND, region, instance_type)).price
    except MarketFetchTable.DoesNotExist:
        price = None
    except (PynamoDBException, OSError) as exc:  # the catalogue's price serves; asked again next time
        logger.warning("on-demand list price not read", extra={"region": region, "instance_type": instance_type,
                                                                "error": str(exc)})
        return None
    if len(_listed) >= LISTED_CACHED:
        _listed.clear()
    _listed[key] = (time.monotonic(), price)
    return price


def forget_listed() -> None:
    """Drop the container's cached on-demand prices (tests, and a job that just stored new ones)."""
    _listed.clear()
