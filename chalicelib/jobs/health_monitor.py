"""Every minute: expire command leases and move silent agents online → degraded → offline.

Both sweeps read sparse indexes (no scans) and change state with conditional writes, so two
overlapping runs cannot double-apply a transition.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from components.sentinel import HealthState, HealthThresholds, classify_heartbeat

from chalicelib import command_queue
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import activity, agents


def expire_leases(now: datetime) -> dict[str, int]:
    """Commands with no result before their lease deadline: retried, or timed out and notified."""
    return command_queue.sweep(now)


def update_liveness(now: datetime, thresholds: HealthThresholds = HealthThresholds()) -> dict[str, int]:
    """Degrade or take offline the live agents whose heartbeat is too old."""
    counts = {"degraded": 0, "offline": 0}
    cutoff = now - timedelta(seconds=thresholds.degraded_after_s)
    for key in agents.silent_live_agents(cutoff):
        state = classify_heartbeat(key.last_heartbeat_at, now, thresholds)
        if state is HealthState.ONLINE or state.value == key.status:
            continue
        # the offline notification is written with the move, in one transaction: a run that died between two
        # writes lost it (the next run finds the agent offline already, out of the live index)
        note = activity.notification_row(
            key.client_id, "agent_status", f"agent {key.logical_agent_id} is offline (no heartbeat)", now,
            severity="warning", agent_id=key.agent_id) if state is HealthState.OFFLINE else None
        if agents.set_liveness(key, state.value, now, notification=note):
            counts[state.value] += 1
    return counts


@logged_job("health-monitor")
def run(now: datetime) -> dict[str, dict[str, int]]:
    """One monitor cycle; returns what changed (logged and returned to the scheduler)."""
    result = {"leases": expire_leases(now), "agents": update_liveness(now)}
    logger.info("health monitor cycle", extra=result)
    for group in result.values():
        for name, count in group.items():
            metrics.add_metric(name=f"HealthMonitor.{name}", unit=MetricUnit.Count, value=count)
    publish_metrics()
    return result
