"""Price history routes (issue #13): a client's view of pool prices over time, from the hourly/daily
rollups of the pricing aggregator (the newest hours from raw points). Only prices the client may see:
AWS's, and its own agents' reports (market data trust, chalicelib/reported_pools.py)."""

from __future__ import annotations

from datetime import timedelta

from components.pool_id import make_pool_id
from components.price_buckets import DAY, HOUR, Bucket

from chalicelib import catalogue
from chalicelib.api.common import ApiBlueprint, client_request, ok, utcnow
from chalicelib.api.inputs import PATH_PARAM, check_path_params, int_param
from chalicelib.api.route_doc import Query
from chalicelib.api.views import iso
from chalicelib.errors import InvalidInputError, NotFoundError
from chalicelib.repositories import agents
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import price_rollups

bp = ApiBlueprint(__name__)

INTERVALS = {"hour": HOUR, "day": DAY}
MAX_SERIES = 32  # pools in one answer (each costs a few Queries; a region has at most ~6 zones per type)
MAX_POINTS = 20_000  # points in one answer (~2 MB of JSON; Lambda answers at most 6 MB): fewer series when long


def _request():
    return bp.current_request


def _interval(params: dict, days: int) -> tuple[str, int]:
    """``?interval=hour|day``; by default hourly up to 7 days, daily beyond."""
    name = params.get("interval", "hour" if days <= 7 else "day")
    if name not in INTERVALS:
        raise InvalidInputError("interval must be 'hour' or 'day'", field="interval")
    return name, INTERVALS[name]


def _money(value) -> float | None:
    return None if value is None else round(float(value), 4)


def _point(b: Bucket) -> dict:
    return {"t": iso(b.start), "price": _money(b.avg), "min": _money(b.low), "max": _money(b.high),
            "last": _money(b.last), "filled": b.filled, "points": b.points}


def _series(pool_ids: list[str], client_id: str, seconds: int, days: int, *, keep: set[str] = frozenset()) -> list:
    """One series per pool with visible prices (pools in ``keep`` are listed even when empty)."""
    now = utcnow()
    start = now - timedelta(days=days)
    series_cap = min(MAX_SERIES, max(1, MAX_POINTS // ((days + 1) * DAY // seconds)))
    pool_ids = pool_ids[:series_cap]
    known = pool_repo.latest_prices(pool_ids)
    out = []
    for pool_id in pool_ids:
        buckets = price_rollups.client_history(known.get(pool_id), pool_id, client_id, seconds, start, now)
        if buckets or pool_id in keep:
            out.append({"pool_id": pool_id, "points": [_point(b) for b in buckets]})
    return out


def _pools_of(region: str | None, instance_type: str | None, first: str | None = None) -> list[str]:
    """The known pools of a type in a region (one index query), ``first`` leading."""
    ids = [p.pool_id for p in pool_repo.pools_of_type(region, instance_type)] if region and instance_type else []
    return ([first] if first else []) + sorted(p for p in ids if p != first)


@bp.route("/api/client/instances/{instance_id}/price-history", methods=["GET"], response="InstancePriceHistoryReply",
          query=[Query("interval", enum=tuple(INTERVALS), description="hour up to 7 days, else day (default)")])
def instance_price_history(instance_id):
    """The prices of the instance's pool and of the other pools of its type in its region."""
    client, _ = client_request(_request())
    params = _request().query_params or {}
    days = int_param(params, "days", default=7, low=1, high=90)
    interval, seconds = _interval(params, days)
    instance = agents.get_instance(client.client_id, instance_id)
    if instance is None:
        raise NotFoundError("instance not found", field="instance_id")
    own = instance.pool_id
    if own is None and instance.instance_type and instance.az:
        own = make_pool_id(instance.instance_type, instance.az)
    pool_ids = _pools_of(instance.region, instance.instance_type, own)
    ondemand = catalogue.ondemand_price(instance.instance_type, instance.region)
    if ondemand is None and instance.ondemand_price is not None:
        ondemand = instance.ondemand_price
    return ok({"instance_id": instance_id, "instance_type": instance.instance_type, "pool_id": own,
               "interval": interval, "days": days, "on_demand_price": _money(ondemand),
               "series": _series(pool_ids, client.client_id, seconds, days, keep={own} if own else set())})


@bp.route("/api/client/pricing-history", methods=["GET"], response="PricingHistoryReply", query=[
    Query("interval", enum=tuple(INTERVALS), description="hour up to 7 days, else day (default)"),
    Query("agent_id", pattern=f"^{PATH_PARAM.pattern}$", description="One agent only")])
def pricing_history():
    """The prices of the pools the client's agents run or may run on (one agent with ``?agent_id=``)."""
    client, _ = client_request(_request())
    params = _request().query_params or {}
    days = int_param(params, "days", default=7, low=1, high=30)
    interval, seconds = _interval(params, days)
    agent_id = params.get("agent_id")
    if agent_id is not None:
        check_path_params({"agent_id": agent_id})
        chosen = [agents.require(client.client_id, agent_id)]  # another tenant's agent: 404
    else:
        chosen = [a for a in agents.all_for_client(client.client_id) if not a.deleted]
    pool_ids: list[str] = []
    seen_types: set[tuple[str | None, str]] = set()
    for agent in chosen:
        if agent.current_pool_id and agent.current_pool_id not in pool_ids:
            pool_ids.append(agent.current_pool_id)
        for instance_type in agent.runnable_types:
            if len(pool_ids) >= MAX_SERIES or (agent.region, instance_type) in seen_types:
                continue
            seen_types.add((agent.region, instance_type))
            pool_ids += [p for p in _pools_of(agent.region, instance_type) if p not in pool_ids]
    return ok({"interval": interval, "days": days, "agent_id": agent_id,
               "series": _series(pool_ids, client.client_id, seconds, days)})
