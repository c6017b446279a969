"""Client dashboard: instances (the legacy dashboard's): list, pool prices, metrics, switch options.

Prices: a pool's latest price only where this client may see it (``PoolPrice.seen_by``); the
on-demand price is AWS's list price (the catalogue), else what the instance row recorded. The savings
figures of the metrics come from the savings repository (``dashboard._savings``).
"""

from __future__ import annotations

import re
from datetime import timedelta

from components.calculations.savings import savings_percent
from components.instance_types import allowed_types

from chalicelib import catalogue
from chalicelib.api import dashboard
from chalicelib.api.common import ApiBlueprint, client_request, ok, page_params, utcnow
from chalicelib.api.route_doc import Query
from chalicelib.api.csv_export import listing, wants_csv
from chalicelib.api.dashboard import choice, own_client
from chalicelib.api.views import instance_row, iso, money
from chalicelib.errors import InvalidInputError, NotFoundError
from chalicelib.repositories import agents, switches
from chalicelib.repositories import pools as pool_repo

bp = ApiBlueprint(__name__)

INSTANCE_COLUMNS = ["instance_id", "agent_id", "instance_type", "region", "az", "pool_id", "mode", "status", "role",
                    "launched_at", "terminated_at", "current_price", "on_demand_price"]
_SEARCH = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_STATUS = {"active": True, "terminated": False, "all": None}


def _request():
    return bp.current_request


def _ondemand(instance_type: str | None, region: str | None, recorded=None):
    listed = catalogue.ondemand_price(instance_type, region) if instance_type else None
    return listed if listed is not None else recorded


def _current_price(row, pool, client_id: str, ondemand):
    """What the instance costs per hour now: its pool's price (spot) or the on-demand price."""
    if row.mode == "spot":
        price = pool.seen_by(client_id).price if pool is not None else None
        if price is not None:
            return price
        return row.spot_price
    return ondemand if row.mode == "ondemand" else None


@bp.route("/api/client/{client_id}/instances", methods=["GET"], response="InstanceRowsReply", csv=True, query=[
    Query("status", enum=tuple(_STATUS), description="active (default), terminated or all"),
    Query("mode", enum=("spot", "ondemand")),
    Query("search", pattern=f"^{_SEARCH.pattern}$", description="Part of the instance id or type")])
def client_instances(client_id):
    """Instances, newest first: ``status`` active (default) / terminated / all, ``mode`` spot / ondemand,
    ``search`` (part of the instance id or type); csv."""
    client = own_client(_request(), client_id)
    status = choice(_request(), "status", tuple(_STATUS), "active")
    mode = choice(_request(), "mode", ("spot", "ondemand"))
    search = (_request().query_params or {}).get("search")
    if search is not None and not _SEARCH.fullmatch(search):
        raise InvalidInputError("search must be 1-64 letters, digits, '.', '_' or '-'", field="search")
    wants_csv(_request())
    limit, token = page_params(_request())
    page = agents.instances_page(client.client_id, limit, token, active=_STATUS[status], mode=mode, search=search)
    prices = pool_repo.latest_prices([r.pool_id for r in page.items if r.pool_id and r.mode == "spot"])
    rows = []
    for row in page.items:
        ondemand = _ondemand(row.instance_type, row.region, row.ondemand_price)
        rows.append(instance_row(row, on_demand_price=ondemand,
                                 current_price=_current_price(row, prices.get(row.pool_id), client.client_id,
                                                              ondemand)))
    return listing(_request(), "instances", rows, page.next_token, INSTANCE_COLUMNS, "instances.csv")


def _instance(client_id: str, instance_id: str):
    row = agents.get_instance(client_id, instance_id)
    if row is None:
        raise NotFoundError("instance not found", field="instance_id")
    return row


def _pools(row, client_id: str, agent) -> tuple[list[dict], list[str]]:
    """Every known pool of the types the instance's agent may run on (its declared interchangeable types;
    the instance's own type for an instance without its agent), in its region, and those types."""
    declared = agent.config.get("allowed_instance_types") if agent is not None else None
    types = list(allowed_types(row.instance_type, declared)) if row.instance_type else []
    found = []
    for instance_type in types:
        ondemand = _ondemand(instance_type, row.region)
        for pool in (p.seen_by(client_id) for p in pool_repo.pools_of_type(row.region or "", instance_type)):
            price = pool.price
            found.append({"pool_id": pool.pool_id, "instance_type": pool.instance_type, "az": pool.az,
                          "price": money(price),
                          "savings_percent": (float(savings_percent(ondemand, price))
                                              if price is not None and ondemand else None),
                          "risk_score": pool.risk_for(client_id), "observed_at": iso(pool.at) if price is not None else None,
                          "is_current": row.mode == "spot" and pool.pool_id == row.pool_id})
    return found, types


@bp.route("/api/client/instances/{instance_id}/pricing", methods=["GET"], response="InstancePricingReply")
def instance_pricing(instance_id):
    """The instance's mode and pool, its on-demand and current price, every pool it could run in, and whether it is
    its agent's current primary (the only instance a force-switch acts on)."""
    client, _ = client_request(_request())
    row = _instance(client.client_id, instance_id)
    agent = agents.get(client.client_id, row.agent_id)
    found, _ = _pools(row, client.client_id, agent)
    ondemand = _ondemand(row.instance_type, row.region, row.ondemand_price)
    current = next((p for p in found if p["is_current"]), None)
    price = current["price"] if current and current["price"] is not None else (
        row.spot_price if row.mode == "spot" else ondemand if row.mode == "ondemand" else None)
    return ok({"instance_id": row.instance_id, "instance_type": row.instance_type, "mode": row.mode,
               "pool_id": row.pool_id, "on_demand_price": money(ondemand), "current_price": money(price),
               "pools": found,
               "current_primary": bool(agent and row.is_active and agent.instance_id == row.instance_id)})


@bp.route("/api/client/instances/{instance_id}/metrics", methods=["GET"], response="InstanceMetricsReply")
def instance_metrics(instance_id):
    """Uptime, switches from or to the instance in 7 and 30 days, its savings (savings repository)."""
    client, _ = client_request(_request())
    row = _instance(client.client_id, instance_id)
    now = utcnow()
    recent = switches.of_instance_since(row.agent_id, row.instance_id, now - timedelta(days=30))
    week = now - timedelta(days=7)
    end = row.terminated_at or now
    summary = dashboard._savings().instance_summary(client.client_id, row.instance_id, now)
    return ok({"instance_id": row.instance_id, "status": "active" if row.is_active else "terminated",
               "uptime_seconds": max(0, int((end - row.installed_at).total_seconds())),
               "switches_7d": sum(s.initiated_at >= week for s in recent), "switches_30d": len(recent),
               "savings_30d": summary["last_30d_savings"], "savings_total": summary["total_savings"]})


@bp.route("/api/client/instances/{instance_id}/available-options", methods=["GET"], response="AvailableOptionsReply")
def available_options(instance_id):
    """Where a manual switch could go: the priced pools other than the current one, cheapest first, and
    the instance types the agent may run on (its own first)."""
    client, _ = client_request(_request())
    row = _instance(client.client_id, instance_id)
    found, types = _pools(row, client.client_id, agents.get(client.client_id, row.agent_id))
    options = sorted((p for p in found if p["price"] is not None and not p["is_current"]),
                     key=lambda p: (p["price"], p["pool_id"]))
    return ok({"instance_id": row.instance_id,
               "pools": [{k: p[k] for k in ("pool_id", "instance_type", "az", "price", "risk_score",
                                             "savings_percent")} for p in options],
               "instance_types": types})
