"""Client dashboard routes (the legacy dashboard's): overview, replicas, switch history, charts.

Agents and instances are in ``dashboard_agents`` / ``dashboard_instances``. Every route is the token's
client only: a ``{client_id}`` in the path that is not the caller's is 404. Savings figures come from
the savings repository (``_savings``), never computed here.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from chalicelib.api.common import ApiBlueprint, client_request, ok, page_params, utcnow
from chalicelib.api.route_doc import Query
from chalicelib.api.csv_export import listing, wants_csv
from chalicelib.api.views import iso, replica_view, switch_row
from chalicelib.errors import InvalidInputError, NotFoundError
from chalicelib.repositories import agents, switches
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import LIVE_STATUSES
from chalicelib.repositories.clients import ClientRecord
from chalicelib.schemas.base import INSTANCE_ID_PATTERN

bp = ApiBlueprint(__name__)

CHART_DAYS = 30
INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
SWITCH_COLUMNS = ["switch_id", "agent_id", "old_instance_id", "new_instance_id", "from_pool_id", "to_pool_id",
                  "from_mode", "to_mode", "trigger", "old_price", "new_price", "on_demand_price", "hourly_impact",
                  "initiated_at", "completed_at", "downtime_seconds"]


def _savings():
    """The savings repository (chalicelib.repositories.savings), imported when a route needs it."""
    from chalicelib.repositories import savings

    return savings


def _request():
    return bp.current_request


def own_client(request, client_id: str) -> ClientRecord:
    """Authenticate a client call whose path names ``client_id``: another client's id is 404."""
    client, _ = client_request(request)
    if client_id != client.client_id:
        raise NotFoundError("client not found", field="client_id")
    return client


def choice(request, name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    """A query parameter among ``allowed`` (400 otherwise)."""
    value = (request.query_params or {}).get(name, default)
    if value is not None and value not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(allowed)}", field=name)
    return value


@bp.route("/api/client/{client_id}", methods=["GET"], response="ClientOverviewReply")
def overview(client_id):
    """Agents online/total, active instances and standbys, savings, the last heartbeat (last sync)."""
    client = own_client(_request(), client_id)
    now = utcnow()
    fleet = [a for a in agents.all_for_client(client.client_id) if not a.deleted]
    active = agents.active_instances(client.client_id)
    heartbeats = [a.last_heartbeat_at for a in fleet if a.last_heartbeat_at]
    return ok({"client_id": client.client_id, "name": client.name, "status": client.status,
               "agents_online": sum(a.status in LIVE_STATUSES for a in fleet), "agents_total": len(fleet),
               "instances_active": sum(i.role == "primary" for i in active),
               "replicas_active": replica_repo.active_count(client.client_id),
               "savings": _savings().client_summary(client.client_id, now),
               "last_sync": iso(max(heartbeats)) if heartbeats else None})


@bp.route("/api/client/{client_id}/replicas", methods=["GET"], response="ClientReplicasReply",
          query=[Query("status", enum=("active", "all"), description="active (default) or all")])
def client_replicas(client_id):
    """The client's standbys (``status=active``, the default, or ``all``), each with its primary."""
    client = own_client(_request(), client_id)
    status = choice(_request(), "status", ("active", "all"), "active")
    limit, token = page_params(_request())
    page = replica_repo.page_for_client(client.client_id, limit, token, active_only=status == "active")
    owners = agents.get_many(client.client_id, [replica.agent_id for replica in page.items])
    rows = []
    for replica in page.items:
        agent = owners.get(replica.agent_id)
        primary = None if agent is None else {
            "instance_id": agent.instance_id, "pool_id": agent.current_pool_id,
            "instance_type": agent.instance_type, "mode": agent.current_mode, "agent_id": agent.agent_id,
            "hostname": agent.hostname}
        rows.append({**replica_view(replica), "primary": primary})
    return ok({"replicas": rows, "next_token": page.next_token})


@bp.route("/api/client/{client_id}/switch-history", methods=["GET"], response="SwitchHistoryReply", csv=True,
          query=[Query("instance_id", pattern=INSTANCE_ID_PATTERN, description="Switches from or to it")])
def switch_history(client_id):
    """Switches, newest first, with prices and their hourly impact (``instance_id`` from or to; csv)."""
    client = own_client(_request(), client_id)
    instance_id = (_request().query_params or {}).get("instance_id")
    if instance_id is not None and not INSTANCE_ID.fullmatch(instance_id):
        raise InvalidInputError("instance_id is not an EC2 instance id", field="instance_id")
    wants_csv(_request())  # a bad format is a 400 before anything is read
    limit, token = page_params(_request())
    page = switches.page_for_client(client.client_id, limit, token, instance_id=instance_id)
    return listing(_request(), "switches", [switch_row(s) for s in page.items], page.next_token, SWITCH_COLUMNS,
                   "switch-history.csv")


@bp.route("/api/client/{client_id}/stats/charts", methods=["GET"], response="ChartsReply")
def charts(client_id):
    """The last 30 days: savings trend, cost vs on-demand, mode of the active primaries, switches per day."""
    client = own_client(_request(), client_id)
    now = utcnow()
    daily = _savings().daily(client.client_id, CHART_DAYS, now)
    modes = Counter(i.mode for i in agents.active_instances(client.client_id) if i.role == "primary")
    start = (now - timedelta(days=CHART_DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_day = Counter(s.initiated_at.strftime("%Y-%m-%d") for s in switches.for_client_since(client.client_id, start))
    days = [(start + timedelta(days=n)).strftime("%Y-%m-%d") for n in range(CHART_DAYS)]
    return ok({"savings_trend": daily,
               "cost_vs_on_demand": [{"date": d["date"], "actual_cost": d["actual_cost"],
                                      "baseline_cost": d["baseline_cost"]} for d in daily],
               "mode_distribution": {"spot": modes.get("spot", 0), "ondemand": modes.get("ondemand", 0)},
               "switches_per_day": [{"date": day, "count": per_day.get(day, 0)} for day in days]})
