"""Admin fleet routes: stats, every agent and instance, system health, the client list with its counts,
the hard delete of a client and the paginated activity feed. Every route needs ``X-Admin-Key``.

Fleet-wide agent/instance listings are bounded paginated scans (no index lists every client's rows; see
chalicelib/repositories/fleet.py); everything else reads by key or index. Savings figures come from the
savings repository through ``_savings()`` only: nothing here computes money.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import timedelta

from components.sentinel import HealthThresholds

from chalicelib import model_store, tenancy
from chalicelib.api.admin import release_bus_access
from chalicelib.api.common import ApiBlueprint, admin_request, ok, page_params, rows_within_budget, utcnow
from chalicelib.api.csv_export import listing
from chalicelib.api.route_doc import Query
from chalicelib.api.views import agent_view, client_view, instance_view, iso
from chalicelib.aws import ec2
from chalicelib.errors import InvalidInputError, ServiceUnavailableError
from chalicelib.observability import logger
from chalicelib.repositories import activity, agents, clients, fleet

bp = ApiBlueprint(__name__)

AGENT_STATUSES = ("online", "degraded", "offline", "disabled", "switching", "error", "deleted", "terminated")
INSTANCE_STATUSES = ("active", "terminated", "all")
MODES = ("spot", "ondemand")
# What the document offers for ?region= (a subset of what the route accepts: <= 32 letters, digits, "-")
REGION_PATTERN = r"^[a-z]{2}(-[a-z0-9]{1,9}){1,3}$"
_REGION = re.compile(REGION_PATTERN)
# ?format=csv columns of the fleet lists (the JSON rows' scalar fields).
FLEET_AGENT_COLUMNS = ["client_id", "agent_id", "logical_agent_id", "hostname", "status", "instance_id",
                       "instance_type", "region", "az", "current_mode", "current_pool_id", "agent_version",
                       "last_heartbeat_at", "registered_at"]
FLEET_INSTANCE_COLUMNS = ["client_id", "instance_id", "agent_id", "instance_type", "region", "az", "pool_id", "mode",
                          "status", "role", "launched_at", "terminated_at", "current_price", "on_demand_price"]
CLIENT_COLUMNS = ["client_id", "name", "email", "status", "created_at", "agents_total", "agents_online",
                  "instances_active", "total_savings", "ondemand_discount_percent", "legacy_agents"]


def _savings():
    """The savings repository (chalicelib/repositories/savings.py), imported lazily; tests replace it."""
    from chalicelib.repositories import savings  # noqa: PLC0415 - wired at merge, faked in tests

    return savings


def _request():
    return bp.current_request


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = (_request().query_params or {}).get(name)
    if value is not None and value not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(allowed)}", field=name)
    return value


def _active_model() -> dict:
    current = model_store.pointer()
    version = current.active_version if current else None
    return {"version": version, "source": "model" if version else "prior",
            "previous_version": current.previous_version if current else None}


def event_view(e) -> dict:
    """One audit-log event for the admin feed."""
    return {"event_id": e.event_key, "event_type": e.event_type, "severity": e.severity, "message": e.message,
            "client_id": e.client_id, "agent_id": e.agent_id, "instance_id": e.instance_id,
            "metadata": e.metadata, "created_at": iso(e.created_at)}


@bp.route("/api/admin/stats", methods=["GET"], response="FleetStatsReply")
def fleet_stats():
    """Fleet totals as the growth snapshot last counted them (every 15 minutes; ``counted_at``), the fleet's savings
    (savings repository) and the active risk model."""
    admin_request(_request())
    now = utcnow()
    counts, counted_at = fleet.latest_counts(now)
    return ok({**counts, "counted_at": iso(counted_at), "savings": _savings().fleet_summary(now),
               "active_model": _active_model()})


@bp.route("/api/admin/agents", methods=["GET"], response="FleetAgentsReply", csv=True, query=[Query("status", enum=AGENT_STATUSES)])
def all_agents():
    """Every client's agents (``?status=``), one bounded scan page per call."""
    admin_request(_request())
    status = _choice("status", AGENT_STATUSES)
    limit, token = page_params(_request())
    page = fleet.agents_page(limit, token, status)
    rows = [{**agent_view(a), "client_id": a.client_id} for a in page.items]
    return listing(_request(), "agents", rows, page.next_token, FLEET_AGENT_COLUMNS, "fleet-agents.csv")


@bp.route("/api/admin/instances", methods=["GET"], response="FleetInstancesReply", csv=True, query=[
    Query("status", enum=INSTANCE_STATUSES), Query("mode", enum=MODES),
    Query("region", pattern=REGION_PATTERN, description="e.g. us-east-1")])
def all_instances():
    """Every client's instances (``?status=active|terminated|all&mode=&region=``), one bounded scan page."""
    admin_request(_request())
    status, mode = _choice("status", INSTANCE_STATUSES), _choice("mode", MODES)
    region = (_request().query_params or {}).get("region")
    if region is not None and not _REGION.fullmatch(region):  # the documented pattern: ASCII only
        raise InvalidInputError("region is not a region name", field="region")
    limit, token = page_params(_request())
    page = fleet.instances_page(limit, token, status=status, mode=mode, region=region)
    rows = [{**instance_view(i), "client_id": i.client_id} for i in page.items]
    return listing(_request(), "instances", rows, page.next_token, FLEET_INSTANCE_COLUMNS, "fleet-instances.csv")


@bp.route("/api/admin/system-health", methods=["GET"], response="SystemHealthReply")
def system_health():
    """Storage reachable, agents the health monitor should have moved (stale), standbys that failed and
    critical events in the last 24 h, and the active model. ``degraded`` when any of them is not clean."""
    admin_request(_request())
    now = utcnow()
    day_ago = now - timedelta(hours=24)
    checks = {}
    try:
        model = _active_model()
        checks["dynamodb"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported as the check's result, never a 500
        logger.warning("system-health: the registry read failed", extra={"error": repr(exc)})
        model, checks["dynamodb"] = None, "unreachable"
    # live agents silent past the offline threshold by more than two monitor runs (every minute): the monitor
    # should have taken them offline (a degraded agent is live, so the degraded threshold says nothing here)
    stale_cutoff = now - timedelta(seconds=HealthThresholds().offline_after_s + 120)
    stale = sum(1 for _ in agents.silent_live_agents(stale_cutoff))
    failures, errors = activity.events_since_of_each(now, day_ago, event_types=("standby_failed",), types_limit=200,
                                                     severities=("critical", "error"), severities_limit=20)
    failed = len(failures)
    checks["health_monitor"] = "ok" if stale == 0 else "behind"
    checks["risk_model"] = "prior" if model is None or model["version"] is None else "model"
    degraded = checks["dynamodb"] != "ok" or stale > 0 or failed > 0 or bool(errors)
    return ok({"status": "degraded" if degraded else "ok", "checks": checks, "stale_agents": stale,
               "failed_replicas": failed, "recent_errors": [event_view(e) for e in errors],
               "active_model": model, "checked_at": iso(now)})


@bp.route("/api/admin/clients", methods=["GET"], response="AdminClientsReply", csv=True)
def list_clients():
    """Clients in creation order, paginated, with their agent/instance counts and total savings."""
    admin_request(_request())
    limit, token = page_params(_request())
    page = clients.list_page(limit, token)
    now, savings = utcnow(), _savings()
    rows = []
    for client in page.items:
        counts = fleet.client_counts(client.client_id)
        rows.append({**client_view(client), "agents_total": counts.agents_total,
                     "agents_online": counts.agents_online, "instances_active": counts.instances_active,
                     "total_savings": savings.client_summary(client.client_id, now)["total_savings"]})
    return listing(_request(), "clients", rows, page.next_token, CLIENT_COLUMNS, "clients.csv")


@bp.route("/api/admin/clients/{client_id}", methods=["DELETE"], response="DeletedClientReply")
def delete_client(client_id):
    """Hard delete: the token (and the agents' credentials) stop working first, then the standbys and instances the product launched for
    the client are terminated, the event bus is closed to the client's accounts no other client binds, then every
    row of the client is deleted (client row last, so a failed call can be repeated). A second call is 404.

    The ``client_deleted`` audit event is written before the client row goes, keyed on when the delete first started:
    a repeat after a call that died writes it once (its counts are the run's that finished the rows)."""
    admin_request(_request())
    client = clients.require(client_id)
    now = utcnow()
    clients.revoke_token(client_id, client.token_hash, now)
    agents.set_client_suspended(client_id, True)  # agent credentials stop too, while the rows are deleted
    terminated = _terminate_launched(client_id)
    for binding in client.aws_accounts:  # before the rows: a bus failure is a 503 this DELETE can repeat
        release_bus_access(binding["account_id"], client_id)
    deleted = fleet.delete_client_rows(client_id)
    activity.record_event("client_deleted", f"client {client.name} deleted", client.deleting_at or now,
                          severity="warning", client_id=client_id, metadata={"deleted": deleted, "terminated": terminated},
                          once=f"client_deleted:{client_id}")
    fleet.delete_client_row(client_id, client.name)
    return ok({"success": True, "client_id": client_id, "deleted": {**deleted, "ec2_terminated": len(terminated)},
               "terminated_instances": terminated})


def _terminate_launched(client_id: str) -> list[str]:
    """Terminate the client's live instances and standbys that the product launched (the EC2 adapter
    terminates only instances tagged as ours for this client and stage; the client's own primaries stay)."""
    account_of = {a.agent_id: a.account_id for a in agents.all_for_client(client_id)}
    targets: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for row in agents.active_instances(client_id):
        if row.region:
            targets[(row.region, account_of.get(row.agent_id))].add(row.instance_id)
    for row in fleet.live_standbys(client_id):
        if row.region:
            targets[(row.region, account_of.get(row.agent_id))].add(row.instance_id)
    done: list[str] = []
    for (region, account_id), ids in sorted(targets.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        try:
            account = tenancy.for_client(client_id, account_id)
        except tenancy.AccountNotBound:
            continue  # no account to act in: nothing can have been launched there by the product
        try:
            done += ec2.terminate(region, sorted(ids), client_id=client_id, account=account)
        except ec2.Ec2Error as exc:
            raise ServiceUnavailableError("the client's instances could not be terminated; its token is revoked "
                                          "and nothing else was deleted: retry", code="ec2_unavailable",
                                          headers={"Retry-After": "5"}) from exc
    return sorted(done)


@bp.route("/api/admin/activity", methods=["GET"], response="AuditEventsReply")
def recent_activity():
    """The audit log newest first, paginated back to the retention horizon (``limit``, ``next_token``). Events carry
    what agents report (up to ``METADATA_MAX_BYTES`` each): a page also stops at ``ANSWER_BUDGET_BYTES``, so a
    tenant's big reports never make it too big for a Lambda to answer, and after ``EVENT_DAYS_PER_PAGE`` days
    read (a quiet stretch of the log: the page is short, its ``next_token`` goes on from the day before)."""
    admin_request(_request())
    limit, token = page_params(_request())
    page = activity.events_page(utcnow(), limit, token)
    views = [event_view(e) for e in page.items]
    kept = rows_within_budget(views)
    next_token = page.next_token if kept == len(views) else activity.event_token(page.items[kept - 1])
    return ok({"events": views[:kept], "next_token": next_token})
