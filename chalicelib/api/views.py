"""Response shapes shared by several blueprints (one place per resource)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from components.command_tracker import Command
from components.errors import ValidationError
from components.pool_id import parse_pool_id

from chalicelib import rate_limit
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.clients import ClientRecord
from chalicelib.repositories.replicas import ReplicaRecord


def iso(value: datetime | None) -> str | None:
    """ISO-8601 UTC text, or None."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def command_view(cmd: Command) -> dict[str, Any]:
    """The command shape agents expect (legacy fields plus lease information)."""
    return {
        "id": cmd.command_id,
        "command_id": cmd.command_id,
        "command_type": cmd.command_type.value,
        "instance_id": cmd.instance_id,
        "target_mode": cmd.target_mode,
        "target_pool_id": cmd.target_pool_id,
        # The pool's instance type (another of the agent's interchangeable types, or its own); None for
        # on-demand, which launches the type the agent runs on. Agents read it from target_pool_id.
        "target_instance_type": _type_of(cmd.target_pool_id),
        "priority": cmd.priority,
        "terminate_wait_seconds": cmd.terminate_wait_seconds,
        "status": cmd.status.value,
        "attempts": cmd.attempts,
        "created_at": iso(cmd.created_at),
        "lease_expires_at": iso(cmd.lease_expires_at),
        "trigger": cmd.trigger,
        "success": cmd.success,
        "message": cmd.message,
    }


def _type_of(pool_id: str | None) -> str | None:
    try:
        return parse_pool_id(pool_id)[0] if pool_id else None
    except ValidationError:
        return None


def config_view(agent: AgentRecord) -> dict[str, Any]:
    """Flat agent configuration (legacy GET config shape) plus its version."""
    return {"agent_id": agent.agent_id, **agent.config, "config_version": agent.config_version}


def agent_view(agent: AgentRecord) -> dict[str, Any]:
    """An agent for dashboards."""
    return {
        "agent_id": agent.agent_id, "logical_agent_id": agent.logical_agent_id,
        "status": agent.status, "instance_id": agent.instance_id,
        "instance_type": agent.instance_type, "region": agent.region, "az": agent.az,
        "current_mode": agent.current_mode, "current_pool_id": agent.current_pool_id,
        "hostname": agent.hostname, "agent_version": agent.agent_version,
        "last_heartbeat_at": iso(agent.last_heartbeat_at), "registered_at": iso(agent.registered_at),
        "config": config_view(agent),
    }


def instance_view(row) -> dict[str, Any]:
    """An instance row with the prices stored on it (the admin fleet list; the client list resolves live
    prices and calls ``instance_row`` itself)."""
    return instance_row(row, current_price=row.spot_price if row.mode == "spot" else row.ondemand_price,
                        on_demand_price=row.ondemand_price)


def client_view(client: ClientRecord) -> dict[str, Any]:
    """A client for admins: never the token or its hash."""
    return {
        "client_id": client.client_id, "name": client.name, "email": client.email,
        "status": client.status, "created_at": iso(client.created_at),
        "token_expires_at": iso(client.token_expires_at),
        "ondemand_discount_percent": client.ondemand_discount_percent,
        "legacy_agents": client.legacy_agents,
        "rate_limit_per_window": client.rate_limit_per_window,
        "effective_rate_limit": rate_limit.limit_for(client),
        "aws_accounts": [b["account_id"] for b in client.aws_accounts],
    }


def accounts_view(client: ClientRecord) -> dict[str, Any]:
    """The client's AWS account bindings and the ExternalId its roles must require (not a secret to the
    client: it is what the client puts in its role's trust policy)."""
    return {"client_id": client.client_id, "external_id": client.external_id,
            "pending_external_id": client.pending_external_id,
            "pending_external_id_since": iso(client.pending_external_id_at),
            "accounts": [{"account_id": b["account_id"], "role_arn": b["role_arn"],
                          "external_id": b["external_id"], "bound_at": iso(b["bound_at"])}
                         for b in client.aws_accounts]}


def replica_view(replica: ReplicaRecord) -> dict[str, Any]:
    """A replica, flat (legacy agents poll for top-level ``id``, ``pool_id`` and ``az``, which the legacy server nested)."""
    return {
        "id": replica.replica_id, "replica_id": replica.replica_id, "agent_id": replica.agent_id,
        "pool_id": replica.pool_id, "az": replica.az, "instance_type": replica.instance_type,
        "region": replica.region, "instance_id": replica.instance_id,
        "parent_instance_id": replica.parent_instance_id, "status": replica.status.value,
        "replica_type": replica.replica_type, "lifecycle": replica.lifecycle,
        "hourly_cost": None if replica.hourly_cost is None else float(replica.hourly_cost),
        "sync_status": replica.sync_status, "sync_latency_ms": replica.sync_latency_ms,
        "state_transfer_progress": (None if replica.state_transfer_progress is None
                                    else float(replica.state_transfer_progress)),
        "error_message": replica.error_message, "created_by": replica.created_by,
        "interruption_id": replica.interruption_id, "created_at": iso(replica.created_at),
        "updated_at": iso(replica.updated_at), "launched_at": iso(replica.launched_at),
        "ready_at": iso(replica.ready_at), "promoted_at": iso(replica.promoted_at),
        "terminated_at": iso(replica.terminated_at), "expires_at": iso(replica.expires_at),
    }


def money(value) -> float | None:
    """A price or amount as a float in USD, 4 decimal places (None stays None)."""
    return None if value is None else round(float(value), 4)


def wait_minutes(seconds: int) -> int | float:
    """The auto-terminate wait in minutes (the legacy dashboard's unit)."""
    minutes = round(seconds / 60, 2)
    return int(minutes) if float(minutes).is_integer() else minutes


def agent_row(agent: AgentRecord) -> dict[str, Any]:
    """An agent as a dashboard table row: identity, flags (flat) and where it runs."""
    c = agent.config
    wait = int(c.get("terminate_wait_seconds") or 0)
    return {
        "agent_id": agent.agent_id, "logical_agent_id": agent.logical_agent_id, "hostname": agent.hostname,
        "status": agent.status, "enabled": bool(c.get("enabled", True)),
        "auto_switch_enabled": bool(c.get("auto_switch_enabled")),
        "auto_terminate_enabled": bool(c.get("auto_terminate_enabled")),
        "manual_replica_enabled": bool(c.get("manual_replica_enabled")),
        "replica_enabled": bool(c.get("replica_enabled")), "replica_count": int(c.get("replica_count") or 0),
        "terminate_wait_seconds": wait, "terminate_wait_minutes": wait_minutes(wait),
        "instance_id": agent.instance_id, "instance_type": agent.instance_type, "mode": agent.current_mode,
        "pool_id": agent.current_pool_id, "region": agent.region, "az": agent.az,
        "agent_version": agent.agent_version, "last_heartbeat_at": iso(agent.last_heartbeat_at),
        "registered_at": iso(agent.registered_at), "last_switch_at": iso(agent.last_switch_at),
        "config_version": agent.config_version,
    }


def instance_row(row, *, current_price=None, on_demand_price=None) -> dict[str, Any]:
    """An instance (``InstanceTable`` row) as a dashboard table row, with the prices the caller resolved."""
    return {
        "instance_id": row.instance_id, "agent_id": row.agent_id, "instance_type": row.instance_type,
        "region": row.region, "az": row.az, "pool_id": row.pool_id, "mode": row.mode,
        "status": "active" if row.is_active else "terminated", "role": row.role,
        "launched_at": iso(row.installed_at), "terminated_at": iso(row.terminated_at),
        "current_price": money(current_price), "on_demand_price": money(on_demand_price),
    }


def switch_row(row) -> dict[str, Any]:
    """A recorded switch (``SwitchTable`` row) as a history row; ``hourly_impact`` is its recorded $/h
    saving (negative when the switch costs more), ``downtime_seconds`` initiated → new instance ready."""
    return {
        "switch_id": row.switch_id, "agent_id": row.agent_id, "old_instance_id": row.old_instance_id,
        "new_instance_id": row.new_instance_id, "from_pool_id": row.old_pool_id, "to_pool_id": row.new_pool_id,
        "from_mode": row.old_mode, "to_mode": row.new_mode, "trigger": row.trigger,
        "old_price": money(row.old_price), "new_price": money(row.new_price),
        "on_demand_price": money(row.on_demand_price), "hourly_impact": money(row.hourly_savings),
        "initiated_at": iso(row.initiated_at), "completed_at": iso(row.ready_at or row.traffic_switched_at),
        "downtime_seconds": None if row.total_duration_seconds is None else float(row.total_duration_seconds),
        "success": bool(row.success),
    }


def decision_view(d) -> dict[str, Any]:
    """A recorded decision (``DecisionTable`` row) with its reason."""
    return {"decided_at": iso(d.decided_at), "source": d.source, "current": d.current, "action": d.action,
            "target": d.target, "standby": d.standby, "risk": d.risk, "reason": d.reason,
            "expected_cost": d.expected_cost, "command_id": d.command_id}
