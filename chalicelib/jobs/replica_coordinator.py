"""Every minute: exactly one ready standby per manual-replica agent; pre-warmed standbys expire.

The plan comes from ``components.replica_coordinator.plan_standbys`` over the tables and what EC2
says about each standby. Creation claims the agent's standby slot in a transaction and every status
change is compare-and-set, so two overlapping runs (or a run and a failover) never duplicate a
standby: the loser's write fails its condition and it moves on. Pools in capacity back-off
(``repositories.observations.backoff``) are skipped: a standby still to be launched in one is given up
and its replacement placed elsewhere; every spot launch's outcome is recorded as an observation.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from components.replica_coordinator import ReplicaStatus, StepKind, plan_standbys

from chalicelib import replicas
from chalicelib.aws import ec2
from chalicelib.errors import ConflictError
from chalicelib.observability import MetricUnit, logger, metrics, publish_metrics
from chalicelib.repositories import agents, observations
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import AgentRecord


def reconcile_agent(agent: AgentRecord, now: datetime) -> Counter:
    """Apply the plan for one agent; returns what was done by step kind."""
    done: Counter = Counter()
    active = replica_repo.for_agent(agent.agent_id, include_final=False)
    described = ec2.describe(agent.region, [r.instance_id for r in active if r.instance_id]) if active else {}
    views = [r.view(described[r.instance_id].state if r.instance_id in described else None) for r in active]
    by_id = {r.replica_id: r for r in active}
    unlaunched = [r.pool_id for r in active if not r.instance_id and r.lifecycle == "spot" and r.pool_id]
    blocked = observations.backoff(unlaunched, now) if unlaunched else {}
    for step in plan_standbys(views, keep_one=agent.manual_replica and agent.config.get("enabled", True), now=now,
                              blocked_pools=blocked):
        replica = by_id.get(step.replica_id)
        try:
            if step.kind is StepKind.LAUNCH:
                by_id[replica.replica_id] = replicas.launch(agent, replica, now)
            elif step.kind is StepKind.MARK_READY:
                by_id[replica.replica_id] = replica_repo.transition(replica, ReplicaStatus.READY, now)
            elif step.kind is StepKind.MARK_FAILED:
                replicas.retire(replica, ReplicaStatus.FAILED, now, step.reason)
            elif step.kind is StepKind.EXPIRE:
                replicas.retire(replica, ReplicaStatus.EXPIRED, now, step.reason)
            elif step.kind is StepKind.RETIRE_EXTRA:
                replicas.retire(replica, ReplicaStatus.TERMINATED, now, step.reason)
            elif step.kind is StepKind.CREATE:
                fresh = agents.get(agent.client_id, agent.agent_id)
                if fresh is None or fresh.current_replica_id:
                    continue  # another run (or the failover) got there first
                replicas.ensure_standby(fresh, now, created_by="replica-coordinator")
            done[step.kind.value] += 1
        except (ConflictError, ec2.Ec2Error) as exc:
            logger.warning("coordinator step skipped", extra={"agent_id": agent.agent_id, "step": step.kind.value,
                                                               "error": str(exc)})
            done["skipped"] += 1
    return done


def run(now: datetime) -> dict[str, int]:
    """One coordinator cycle over every agent that wants or holds a standby."""
    logger.append_keys(job="replica-coordinator")
    totals: Counter = Counter()
    for agent in agents.agents_with_standbys():
        totals["agents"] += 1
        totals.update(reconcile_agent(agent, now))
    result = dict(totals)
    logger.info("replica coordinator cycle", extra=result)
    for name, count in result.items():
        metrics.add_metric(name=f"ReplicaCoordinator.{name}", unit=MetricUnit.Count, value=count)
    publish_metrics()
    return result
