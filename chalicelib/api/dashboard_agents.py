"""Client dashboard: agents (the legacy dashboard's): lists, history, decisions, enable/settings, soft delete."""

from __future__ import annotations

import re
from datetime import timedelta

from components.agent_identity import AgentStatus
from components.replica_coordinator import ReplicaStatus
from components.sentinel import health_score
from components.sentinel.health import HealthThresholds

from chalicelib import command_queue, decisions, replicas, tenancy
from chalicelib.api.common import ApiBlueprint, client_request, ok, page_params, utcnow
from chalicelib.api.csv_export import listing, wants_csv
from chalicelib.api.dashboard import own_client
from chalicelib.api.replicas import REPEAT_WINDOW, apply_config, ec2_errors
from chalicelib.api.views import agent_row, config_view, decision_view, iso
from chalicelib.errors import InvalidInputError
from chalicelib.repositories import activity, agents
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import LIVE_STATUSES
from chalicelib.schemas.clients import AgentSettingsRequest, ToggleEnabledRequest

bp = ApiBlueprint(__name__)

AGENT_COLUMNS = ["agent_id", "logical_agent_id", "hostname", "status", "enabled", "auto_switch_enabled",
                 "auto_terminate_enabled", "manual_replica_enabled", "replica_count", "terminate_wait_seconds",
                 "terminate_wait_minutes", "instance_id", "instance_type", "mode", "pool_id", "region", "az",
                 "agent_version", "last_heartbeat_at", "config_version"]
RECENT_DECISIONS = 5
_OFFSET = re.compile(r"[0-9]{1,6}", re.ASCII)


def _request():
    return bp.current_request


@bp.route("/api/client/{client_id}/agents", methods=["GET"], response="AgentRowsReply", csv=True)
def client_agents(client_id):
    """The client's agents that are not deleted, by logical id, flags flat (csv)."""
    client = own_client(_request(), client_id)
    wants_csv(_request())
    limit, token = page_params(_request())
    page = agents.page_for_client(client.client_id, limit, token)
    return listing(_request(), "agents", [agent_row(a) for a in page.items], page.next_token, AGENT_COLUMNS,
                   "agents.csv")


def _rank(status: str) -> int:
    if status in LIVE_STATUSES:
        return 0
    return 2 if status in agents.GONE_STATUSES else 1


@bp.route("/api/client/{client_id}/agents/history", methods=["GET"], response="AgentRowsReply", csv=True)
def agents_history(client_id):
    """Every agent, deleted ones too, online → offline → deleted (csv). The client's agents are read whole to
    order them: at most its agent quota of live ones, plus the deleted and terminated ones of the last
    ``AGENT_RETENTION_DAYS`` (the data cleaner removes older ones; at most ``QUOTA_MAX_DELETED_AGENTS`` deleted ones
    are kept). ``next_token`` is the position of the next page."""
    client = own_client(_request(), client_id)
    wants_csv(_request())
    limit, token = page_params(_request())
    if token is not None and not _OFFSET.fullmatch(token):
        raise InvalidInputError("next_token is not valid", field="next_token")
    start = int(token or 0)
    fleet = sorted(agents.all_for_client(client.client_id),
                   key=lambda a: (_rank(a.status), a.logical_agent_id, a.agent_id))
    rows = [agent_row(a) for a in fleet[start:start + limit]]
    more = str(start + limit) if start + limit < len(fleet) else None
    return listing(_request(), "agents", rows, more, AGENT_COLUMNS, "agents-history.csv")


@bp.route("/api/client/{client_id}/agents/decisions", methods=["GET"], response="AgentDecisionsReply")
def agents_decisions(client_id):
    """Each agent that is not deleted with its last five decisions, its health and pricing freshness."""
    client = own_client(_request(), client_id)
    limit, token = page_params(_request())
    page = agents.page_for_client(client.client_id, limit, token)
    now = utcnow()
    stale_after = timedelta(seconds=HealthThresholds().pricing_stale_s)
    rows = []
    for agent in page.items:
        health = health_score(agent.last_heartbeat_at, agent.last_pricing_at, now)
        pricing = ("never" if agent.last_pricing_at is None
                   else "fresh" if now - agent.last_pricing_at <= stale_after else "stale")
        recent = decisions.history(agent.agent_id, RECENT_DECISIONS, None).items
        rows.append({"agent_id": agent.agent_id, "logical_agent_id": agent.logical_agent_id,
                     "hostname": agent.hostname, "status": agent.status,
                     "health": {"score": health.score, "state": health.state.value,
                                "recommendation": health.recommendation},
                     "decisions": [decision_view(d) for d in recent],
                     "last_pricing_report_at": iso(agent.last_pricing_at), "pricing_health": pricing})
    return ok({"agents": rows, "next_token": page.next_token})


@bp.route("/api/client/agents/{agent_id}/toggle-enabled", methods=["POST"], response="ToggleEnabledReply")
def toggle_enabled(agent_id):
    """Enable or disable an agent (``enabled``; an empty body flips it). A disabled agent gets no commands."""
    client, body = client_request(_request(), ToggleEnabledRequest)
    agent = agents.require(client.client_id, agent_id)
    enabled = (not agent.config.get("enabled", True)) if body.enabled is None else body.enabled
    # the value it holds writes nothing (apply_config): a retry finishes what a first run that died left undone
    updated, _, _ = apply_config(agent, {"enabled": enabled}, utcnow())
    return ok({"success": True, "enabled": bool(updated.config.get("enabled", True)),
               "config_version": updated.config_version})


@bp.route("/api/client/agents/{agent_id}/settings", methods=["POST"], response="AgentSettingsReply")
def settings(agent_id):
    """Auto-switch, auto-terminate and the legacy replica flags (auto-switch on turns manual-replica off,
    terminating its standby, as the config route does)."""
    client, body = client_request(_request(), AgentSettingsRequest)
    agent = agents.require(client.client_id, agent_id)
    updated, terminated, _ = apply_config(agent, body.changes(), utcnow())
    return ok({"success": True, "config": config_view(updated), "terminated_replicas": terminated})


_DELETED = "agent deleted"  # the reason its standbys are closed with


@bp.route("/api/client/agents/{agent_id}", methods=["DELETE"], response="DeletedAgentReply")
def delete_agent(agent_id):
    """Soft delete: every standby terminated (EC2 included), the agent ``deleted`` with its modes off, its
    instance inactive, its pending commands cancelled (a revived agent must not run a switch queued before the
    delete). The agent's own instance keeps running (it is the client's workload). Idempotent. A standby whose
    account is no longer bound (a forced unbinding could not retire it) cannot be terminated by the product: it is
    closed instead (``replicas.abandon``), listed in ``not_terminated_replicas`` with what the client must do."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id, allow_deleted=True)
    now = utcnow()
    terminated, not_terminated = [], []
    found = replica_repo.for_agent(agent.agent_id, include_final=False)
    # A repeat of a delete that died while closing them: the standbys it closed lately (their reason) are finished
    # (``replicas.retire`` on a closed one does what the close left undone) and named as the first run would have.
    found += [r for r in replica_repo.closed_since(agent.agent_id, ReplicaStatus.TERMINATED, now - REPEAT_WINDOW)
              if r.error_message == _DELETED]
    with ec2_errors():  # EC2 first: a failure leaves the agent as it was, and a retry finishes the job
        for replica in found:
            unreachable = tenancy.unreachable_account(replica) if replica.instance_id else None
            if unreachable:  # its account unbound: closed, the client told to end it (``replicas.abandon``)
                closed = replicas.abandon(replica, unreachable, now)
                not_terminated.append({"replica_id": closed.replica_id, "instance_id": closed.instance_id,
                                       "message": closed.error_message})
                continue
            replicas.retire(replica, ReplicaStatus.TERMINATED, now, _DELETED)
            terminated.append(replica.replica_id)
    repeat = agent.status == AgentStatus.DELETED.value  # the same delete again (its first run may have died)
    deleted = agents.soft_delete(agent, now)
    # What follows the delete is keyed on its time (``deleted_at``, the same on a repeat): a repeat of a request
    # that died after the agent's write finishes it, once; a delete repeated later than that does nothing again.
    at = deleted.deleted_at or now
    if now - at <= REPEAT_WINDOW:
        command_queue.cancel_pending(deleted, at, "the agent was deleted", repeat=repeat)
        activity.notify(client.client_id, "agent_deleted", f"agent {agent.logical_agent_id} deleted", at,
                        agent_id=agent.agent_id, once=f"agent_deleted:{agent.agent_id}")
        activity.record_event("agent_deleted", f"agent {agent.logical_agent_id} deleted", at,
                              client_id=client.client_id, agent_id=agent.agent_id, instance_id=agent.instance_id,
                              metadata={"terminated_replicas": terminated}, once=f"agent_deleted:{agent.agent_id}")
    reply = {"success": True, "agent_id": deleted.agent_id, "status": deleted.status,
             "terminated_replicas": terminated}
    if not_terminated:
        reply["not_terminated_replicas"] = not_terminated
    return ok(reply)
