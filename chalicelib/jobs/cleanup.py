"""Every 10 minutes: reconcile EC2 with the tables and terminate what nobody owns.

An instance tagged ``ManagedBy=SpotOptimizer`` is kept while the instances table knows it as active,
or while its replica row is active and (still) points at it. Otherwise it is an orphan (launched,
never attached; or left behind by a closed replica) and is terminated once it is older than the grace
period, which covers the launch → attach gap. Pre-warmed standbys past their expiry are closed too.
Every action is written to the audit log.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from components.replica_coordinator import ReplicaStatus

from chalicelib import replicas
from chalicelib.aws import ec2
from chalicelib.observability import MetricUnit, logger, metrics, publish_metrics
from chalicelib.repositories import activity
from chalicelib.repositories import replicas as replica_repo
from chalicelib.settings import get_settings
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.instances import InstanceTable


def managed_regions() -> list[str]:
    """Regions with agents (or MANAGED_REGIONS): the cleanup job's batch scan, never a request path."""
    configured = [r.strip() for r in os.environ.get("MANAGED_REGIONS", "").split(",") if r.strip()]
    if configured:
        return configured
    regions = {row.region for row in AgentTable.scan(attributes_to_get=["region"]) if row.region}
    return sorted(regions or {get_settings().region})


def _owned(info: ec2.InstanceInfo) -> bool:
    try:
        row = InstanceTable.get(info.instance_id, consistent_read=True)
        if row.is_active:
            return True
    except InstanceTable.DoesNotExist:
        pass
    replica_id, agent_id = info.tags.get(ec2.TAG_REPLICA), info.tags.get(ec2.TAG_AGENT)
    if replica_id and agent_id:
        replica = replica_repo.get(agent_id, replica_id)
        return replica is not None and replica.active and replica.instance_id in (None, info.instance_id)
    return False


def orphans(region: str, now: datetime) -> list[ec2.InstanceInfo]:
    """Tagged instances nobody owns, older than the grace period."""
    grace = timedelta(seconds=get_settings().orphan_grace_s)
    return [i for i in ec2.managed_instances(region)
            if (i.launch_time is None or now - i.launch_time >= grace) and not _owned(i)]


def expire_standbys(now: datetime) -> list[str]:
    """Close every pre-warmed standby past its expiry (no termination followed the rebalance)."""
    expired = []
    for replica in replica_repo.active_with_expiry():
        if replica.expires_at and now >= replica.expires_at:
            replicas.retire(replica, ReplicaStatus.EXPIRED, now, "pre-warmed standby expired: no termination followed")
            expired.append(replica.replica_id)
    return expired


def run(now: datetime) -> dict:
    """One reconciliation; returns (and records) what was terminated and expired."""
    logger.append_keys(job="cleanup")
    expired = expire_standbys(now)
    terminated: list[str] = []
    for region in managed_regions():
        found = orphans(region, now)
        if found:
            terminated += ec2.terminate(region, [i.instance_id for i in found])
            for info in found:
                activity.record_event("orphan_terminated", f"terminated orphan {info.instance_id} "
                                      f"(replica {info.tags.get(ec2.TAG_REPLICA)})", now, severity="warning",
                                      client_id=info.tags.get(ec2.TAG_CLIENT), agent_id=info.tags.get(ec2.TAG_AGENT),
                                      instance_id=info.instance_id, metadata={"tags": info.tags})
    result = {"expired": expired, "terminated": terminated}
    if expired or terminated:
        activity.record_event("cleanup", f"cleanup expired {len(expired)} standbys, terminated {len(terminated)} "
                              "orphans", now, metadata=result)
    logger.info("cleanup cycle", extra=result)
    metrics.add_metric(name="Cleanup.terminated", unit=MetricUnit.Count, value=len(terminated))
    metrics.add_metric(name="Cleanup.expired", unit=MetricUnit.Count, value=len(expired))
    publish_metrics()
    return result
