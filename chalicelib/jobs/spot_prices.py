"""Every 10 minutes: the pools' spot prices from AWS itself (issue #11), the source of truth; once a day per
(region, type), its on-demand list price (``refresh_ondemand``).

For every (region, instance type) an agent runs, ``DescribeSpotPriceHistory`` (Linux/UNIX) since the
last successful fetch (first run: the last hour; never more than ``PRICE_BACKFILL_S`` back), at most
``SPOT_PRICES_MAX_PER_RUN`` a run, the longest unasked first (:func:`this_turn`). AWS also
answers the change in effect at that start, so each run confirms the current price of every AZ that
offers the type, pools the agents never reported included. Each price passes the data valve's
plausibility check; the points are stored keyed by their AWS timestamp (a re-run writes nothing new)
and every pool is written once per run (``pools.store_server_prices``). A failing (region, type) is
logged and retried from the same start next run; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from pynamodb.exceptions import PynamoDBException

from components.data_valve import PriceOutOfRangeError, PricePoint, ValveConfig, validate_spot_price
from components.errors import InvalidPoolIdError
from components.pool_id import make_pool_id

from chalicelib import bootstrap
from chalicelib.aws import spot_market
from chalicelib.aws.spot_market import LINUX_PRODUCTS, SpotPriceRecord
from chalicelib.clock import MAX_CLOCK_SKEW
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import market
from chalicelib.repositories import pools as pool_repo
from chalicelib.settings import get_settings

FIRST_LOOKBACK = timedelta(hours=1)
ONDEMAND_REFRESH = timedelta(days=1)  # list prices change a few times a year
ONDEMAND_RETRY = timedelta(hours=1)
ONDEMAND_MAX_PER_RUN = 50  # Price List API calls a run (it is rate limited); the rest wait for the next runs

Fetch = Callable[[str, list[str], datetime], list[SpotPriceRecord]]


def _aws_fetch(region: str, instance_types: list[str], start: datetime) -> list[SpotPriceRecord]:
    return spot_market.spot_price_history(region, instance_types, start, LINUX_PRODUCTS)


def start_time(state: market.FetchState | None, now: datetime) -> datetime:
    """Where the next fetch starts: the last successful one, else an hour ago; never before the backfill."""
    floor = now - timedelta(seconds=get_settings().price_backfill_s)
    if state is None or state.last_at is None:
        return max(now - FIRST_LOOKBACK, floor)
    return max(min(state.last_at, now), floor)


def points_from(records: list[SpotPriceRecord], instance_type: str, now: datetime,
                config: ValveConfig = ValveConfig()) -> tuple[list[PricePoint], int]:
    """Plausible points of one type, one product per AZ (the first of LINUX_PRODUCTS AWS answered for
    it), at most one per AWS timestamp; returns them and how many records were dropped."""
    oldest = now - timedelta(days=config.retention_days)
    by_az: dict[str, dict[str, list[SpotPriceRecord]]] = {}
    dropped = 0
    for r in records:
        if r.instance_type != instance_type or r.product not in LINUX_PRODUCTS:
            continue
        by_az.setdefault(r.az, {}).setdefault(r.product, []).append(r)
    points: list[PricePoint] = []
    for az, by_product in sorted(by_az.items()):
        product = next(p for p in LINUX_PRODUCTS if p in by_product)
        try:
            pool_id = make_pool_id(instance_type, az)
        except InvalidPoolIdError:
            dropped += len(by_product[product])
            continue
        seen = set()
        for r in sorted(by_product[product], key=lambda r: r.ts):
            if r.ts in seen:
                continue
            if not oldest <= r.ts <= now + MAX_CLOCK_SKEW:  # moto answers 2006; the TTL would drop it anyway
                dropped += 1
                continue
            try:
                price = validate_spot_price(r.price, config)
            except PriceOutOfRangeError:
                dropped += 1
                continue
            seen.add(r.ts)
            points.append(PricePoint(pool_id=pool_id, ts=r.ts, price=price,
                                     source_agent_id=pool_repo.SERVER_SOURCE))
    return points, dropped


def refresh_ondemand(targets: list[tuple[str, str]], now: datetime, source=None) -> dict[str, int]:
    """AWS's on-demand list price of each (region, type) in use, asked once a day each (``ONDEMAND_REFRESH``), at
    most ``ONDEMAND_MAX_PER_RUN`` a run; stored for the decisions and the savings baseline (``catalogue.
    ondemand_price``). A failure keeps the stored price and is asked again in an hour; with the source off
    (``ONDEMAND_PRICES_SOURCE=off``) nothing is asked and the catalogue's us-east-1 prices serve."""
    source = source or bootstrap.ondemand_prices()
    done = {"fetched": 0, "failed": 0}
    if source is None or not targets:
        return done
    known = market.states(market.ONDEMAND, targets)
    due = [t for t in targets if (s := known.get(t)) is None or s.next_at is None or s.next_at <= now]
    for region, instance_type in due[:ONDEMAND_MAX_PER_RUN]:
        if not market.claim(market.ONDEMAND, region, instance_type, now):
            continue  # an overlapping run took it
        try:
            price = source.list_price(region, instance_type)
        except (spot_market.MarketDataError, OSError, ValueError) as exc:  # AWS, or a local price file
            logger.warning("on-demand price fetch failed", extra={"region": region, "instance_type": instance_type,
                                                                  "error": str(exc)})
            market.record_failure(market.ONDEMAND, region, instance_type, now, str(exc), next_at=now + ONDEMAND_RETRY)
            done["failed"] += 1
            continue
        market.record_success(market.ONDEMAND, region, instance_type, now, next_at=now + ONDEMAND_REFRESH,
                              price=price)
        done["fetched"] += 1
    if done["fetched"]:
        market.forget_listed()  # this container reads the new prices from now on
    return done


def this_turn(targets: list[tuple[str, str]], known: dict[tuple[str, str], market.FetchState],
              cap: int) -> list[tuple[str, str]]:
    """The (region, type) this run asks, at most ``cap``: never asked first, then the longest since their last
    attempt (successful or not). The targets are every tenant's declared types, and a tenant declares up to its
    agent quota × ``MAX_INSTANCE_TYPES`` in any region: in name order, one tenant's many would be asked first
    every run and the job's time would run out before the same others every time. In turns, none waits long."""
    def last_attempt(target: tuple[str, str]) -> float:
        state = known.get(target)
        when = state.updated_at or state.last_at if state is not None else None
        return when.timestamp() if when is not None else float("-inf")

    return sorted(targets, key=lambda t: (last_attempt(t), t))[:max(cap, 0)]


@logged_job("spot-prices")
def run(now: datetime, *, fetch: Fetch | None = None, targets: list[tuple[str, str]] | None = None) -> dict:
    """One run over ``targets`` (default: every (region, type) agents run); returns what it did."""
    fetch = fetch or _aws_fetch
    targets = sorted(set(targets if targets is not None else agent_repo.types_in_use()))
    known = market.states(market.PRICES, targets) if targets else {}
    turn = this_turn(targets, known, get_settings().spot_prices_max_per_run)
    result = {"targets": len(targets), "pools": 0, "points_written": 0, "duplicates": 0, "dropped": 0,
              "failed": [], "deferred": len(targets) - len(turn)}
    if result["deferred"]:
        logger.warning("spot-prices cap reached: the longest unasked (region, type) go first, the others next run "
                       "(raise SPOT_PRICES_MAX_PER_RUN)", extra={"cap": len(turn), "deferred": result["deferred"]})
    for region, instance_type in turn:
        start = start_time(known.get((region, instance_type)), now)
        try:
            records = fetch(region, [instance_type], start)
        except spot_market.MarketDataError as exc:
            logger.warning("spot price fetch failed", extra={"region": region, "instance_type": instance_type,
                                                             "error": str(exc)})
            market.record_failure(market.PRICES, region, instance_type, now, str(exc))
            result["failed"].append(f"{region}#{instance_type}")
            continue
        points, dropped = points_from(records, instance_type, now)
        stored = pool_repo.store_server_prices(points, now) if points else {}
        market.record_success(market.PRICES, region, instance_type, now)
        result["pools"] += len(stored)
        result["points_written"] += sum(s.written for s in stored.values())
        result["duplicates"] += sum(s.duplicates for s in stored.values())
        result["dropped"] += dropped
    try:
        result["ondemand"] = refresh_ondemand(targets, now)
    except (PynamoDBException, OSError) as exc:  # the spot prices are stored: this run's on-demand part waits
        logger.warning("on-demand list prices not refreshed", extra={"error": str(exc)})
        result["ondemand"] = {"fetched": 0, "failed": 0, "error": str(exc)}
    logger.info("spot prices", extra=result)
    metrics.add_metric(name="SpotPrices.pools", unit=MetricUnit.Count, value=result["pools"])
    metrics.add_metric(name="SpotPrices.points", unit=MetricUnit.Count, value=result["points_written"])
    metrics.add_metric(name="SpotPrices.failed", unit=MetricUnit.Count, value=len(result["failed"]))
    publish_metrics()
    return result
