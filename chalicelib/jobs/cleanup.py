"""Every 10 minutes: reconcile EC2 with the tables and terminate what nobody owns.

An instance tagged ``ManagedBy=SpotOptimizer`` is kept while the instances table knows it as active,
or while its replica row is active and (still) points at it. Otherwise it is an orphan (launched,
never attached; or left behind by a closed replica) and is terminated once it is older than the grace
period, which covers the launch → attach gap. An old primary is kept while its agent has
auto-terminate off (the customer keeps it), and one a recorded switch left while the agent that ran the switch may
still be terminating it itself after its terminate wait (``_left_to_its_switch``). Pre-warmed standbys past their
expiry are closed too, and interruptions stuck in ``detected`` (no execution running, and their signal's claim
over: no redelivery can finish them) are resolved as ``abandoned``, and the sparse indexes of a stage upgraded in
place are backfilled a slice a run (``chalicelib.repositories.sparse_indexes``).
Every action is written to the audit log.

Only this stage's instances are looked at (``SpotOptimizerStage`` tag), in every account they may be in:
the home account when self-hosted, and each client's bound accounts through their roles (each client's pass
sees only instances tagged with its id, and terminates only those).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from components.replica_coordinator import ReplicaStatus
from components.sentinel import recorded_group, signal_key

from chalicelib import replicas
from chalicelib.aws import accounts, ec2, stepfunctions
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import activity, agents, clients, interruptions, sparse_indexes, switches
from chalicelib.repositories import replicas as replica_repo
from chalicelib.settings import get_settings
from chalicelib.tables import SPARSE_INDEXES
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.clients import ClientTable
from chalicelib.tables.instances import InstanceTable


STUCK_DETECTED_S = 15 * 60  # an event "detected" this long with no execution running was never handled
# An event still "handling" this long after its signal whose execution is no longer running ended without an
# outcome (e.g. the failure recorder itself exhausted its retries): a failover's Tasks and retries finish well
# inside 15 minutes, so 30 leaves no doubt.
STUCK_HANDLING_S = 30 * 60
ABANDONED = "abandoned"
# Interruptions this run found stuck (resolved as abandoned): the StuckInterruptions alarm (infra/monitoring.py).
STUCK_INTERRUPTIONS_METRIC = "Cleanup.abandoned"


def managed_regions() -> list[str]:
    """Regions with agents (or MANAGED_REGIONS): the cleanup job's batch scan, never a request path."""
    configured = [r.strip() for r in os.environ.get("MANAGED_REGIONS", "").split(",") if r.strip()]
    if configured:
        return configured
    regions = {row.region for row in AgentTable.scan(attributes_to_get=["region"]) if row.region}
    return sorted(regions or {get_settings().region})


def _owned(info: ec2.InstanceInfo, now: datetime) -> bool:
    try:
        row = InstanceTable.get(info.instance_id, consistent_read=True)
        if row.is_active or row.released_at is not None or _kept_old_primary(row, now):
            return True  # released: its agent's deletion left it running as the client's own (``soft_delete``)
    except InstanceTable.DoesNotExist:
        pass
    replica_id, agent_id = info.tags.get(ec2.TAG_REPLICA), info.tags.get(ec2.TAG_AGENT)
    if replica_id and agent_id:
        replica = replica_repo.get(agent_id, replica_id)
        return replica is not None and replica.active and replica.instance_id in (None, info.instance_id)
    return False


def _kept_old_primary(row: InstanceTable, now: datetime) -> bool:
    """A replaced primary (never retired by us) whose agent has auto-terminate off: the customer's call; or one its
    agent's switch left, for as long as that agent may still be terminating it itself (``_left_to_its_switch``)."""
    if row.role != "primary":
        return False
    agent = agents.get(row.client_id, row.agent_id)
    if agent is None or agent.deleted:
        return False
    keeps = not agent.config.get("auto_terminate_enabled")
    if keeps and row.terminated_at is None:
        return True
    return _left_to_its_switch(row, agent, now, for_good=keeps)


def _left_to_its_switch(row: InstanceTable, agent, now: datetime, *, for_good: bool = False) -> bool:
    """The old instance of a switch the agent recorded (its report, or the switch inferred at the replacement's
    registration, ``api.agents._unreported_switch``: the failover's hand-over records none), within the time the agent
    that ran the switch may still be terminating it after its terminate wait: the wait drains the customer's
    connections, and the instance is that agent's to end. A legacy v4 agent (and v3.2, by its own
    TERMINATE_WAIT_TIME) runs the switch to its end on its command thread: the replacement's agent registers while it
    still waits for ``running`` or sleeps the wait, and that registration closes the row (``terminated_at`` its own
    time) before the instance is gone; a switch report may also come before the termination, without its time.
    Before this, a cleanup run in that window terminated the instance as an orphan, cutting the drain.

    The time is ``AgentTimings.host_gone_s`` of the agent's wait (the configured one: v3.2 and the early 4.0.0 builds
    wait by their own setting whatever the command's, 300 s by default as ours) counted from the switch's record,
    which comes after the replacement was launched: the launch's and the termination's own allowances (a minute of
    slack each) are the margin. Past it the instance is an orphan again: the backstop for an agent that never ended
    it (a product-launched instance never runs on forever unowned). ``for_good`` (the agent has auto-terminate off):
    the instance its switch left is the customer's to keep, however long — the registration that closed its row first
    only guessed a termination time (before, it was reaped at the end of the wait, or at once before the wait was
    kept)."""
    gone = timedelta(seconds=agent.timings.host_gone_s(int(agent.config.get("terminate_wait_seconds") or 0)))
    since = (row.installed_at or now) - gone  # a switch from it began after it was installed (slack: a skewed clock)
    return any(s.old_instance_id == row.instance_id and s.recorded_at is not None
               and (for_good or now < s.recorded_at + gone)
               for s in switches.of_instance_since(agent.agent_id, row.instance_id, since))


def orphans(region: str, now: datetime, *, account: accounts.AwsAccount | None = None,
            client_id: str | None = None) -> list[ec2.InstanceInfo]:
    """This stage's tagged instances (of ``client_id`` if given) in ``account`` nobody owns, past the grace."""
    grace = timedelta(seconds=get_settings().orphan_grace_s)
    return [i for i in ec2.managed_instances(region, account=account, client_id=client_id)
            if (i.launch_time is None or now - i.launch_time >= grace) and not _owned(i, now)]


def scopes() -> list[tuple[accounts.AwsAccount | None, str | None]]:
    """(account, client) passes: the home account for every client when self-hosted, and every client's bound
    accounts (a batch scan of the clients table: the cleanup job only)."""
    found: list[tuple[accounts.AwsAccount | None, str | None]] = []
    if accounts.self_hosted():
        found.append((None, None))
    for row in ClientTable.scan():
        client = clients.get(row.client_id)
        for account in accounts.all_for(client) if client else ():
            if not account.home:
                found.append((account, client.client_id))
    return found


def expire_standbys(now: datetime) -> list[str]:
    """Close every pre-warmed standby past its expiry (no termination followed the rebalance); returns those
    expired. One that cannot be (its client's account no longer lets the product terminate there: a role
    removed, a policy changed) is logged and left active for the next run: it never stops the run, whose later
    steps (the sweeps, every account's orphans) are every other tenant's."""
    expired = []
    for replica in replica_repo.active_with_expiry():
        if replica.expires_at and now >= replica.expires_at:
            try:
                replicas.retire(replica, ReplicaStatus.EXPIRED, now,
                                "pre-warmed standby expired: no termination followed")
            except Exception as exc:  # noqa: BLE001 - one client's standby never stops the run for the others
                logger.warning("pre-warmed standby not expired: retried next run", extra={
                    "replica_id": replica.replica_id, "client_id": replica.client_id, "error": str(exc)})
                continue
            expired.append(replica.replica_id)
    return expired


@dataclass(frozen=True)
class _Stuck:
    """How an event left in one status is closed by the sweeper."""

    status: str  # the status it is stuck in
    after_s: int  # since the signal
    closed_as: str  # the status it is given
    reason: str  # why, with {minutes}
    advice: str
    severity: str


_STUCK = (
    _Stuck("detected", STUCK_DETECTED_S, "resolved",
           "never handled: still detected {minutes} min after the signal, with no failover running",
           "check the instance", "warning"),
    _Stuck("handling", STUCK_HANDLING_S, "failed",
           "the failover stopped without recording an outcome ({minutes} min after the signal)",
           "check the instance and its replacement", "critical"),
)


def sweep_stuck(now: datetime) -> list[str]:
    """Close events nobody will close: stuck in ``detected`` (never handled) or ``handling`` (the workflow
    ended without recording an outcome) with no execution running. Conditional on the status: a late
    workflow or a second sweeper wins or changes nothing. Both count in the StuckInterruptions alarm."""
    swept = []
    for kind in _STUCK:
        for row in interruptions.stuck(kind.status, now - timedelta(seconds=kind.after_s)):
            if stepfunctions.is_running(row.interruption_id) or (kind.status == "detected" and _claim_held(row, now)):
                continue
            reason = kind.reason.format(minutes=int((now - row.detected_at).total_seconds() // 60))
            message = f"{row.signal_type} for {row.instance_id}: {reason}; {kind.advice}"
            # the client's notification and the audit event in the close's transaction: written after it, a run
            # that died between them lost both (the next run no longer finds the event stuck)
            told = (activity.notification_row(row.client_id, "interruption_abandoned", message, now,
                                              severity=kind.severity, agent_id=row.agent_id),
                    activity.event_row("interruption_abandoned", message, now, severity=kind.severity,
                                       client_id=row.client_id, agent_id=row.agent_id, instance_id=row.instance_id,
                                       metadata={"interruption_id": row.interruption_id}))
            if not interruptions.update_if(row.client_id, row.interruption_id, kind.status, written_with=told,
                                           status=kind.closed_as, success=False, response_action=ABANDONED,
                                           error=reason, completed_at=now):
                continue
            swept.append(row.interruption_id)
    return swept


def _claim_held(row, now: datetime) -> bool:
    """Does the event still hold its signal's claim? Then a redelivery of the signal (SQS retrying it, the other
    source's copy) is a duplicate of it that finishes it (``sentinel._duplicate``): abandoning it now would make that
    copy do nothing. The claim runs from the signal's receive, which may be long after its time (a late event)."""
    group = recorded_group(row.signal_type)
    if group is None:
        return False
    return interruptions.held_claim(signal_key(row.instance_id, group), now,
                                    get_settings().signal_window_s) == row.interruption_id


@logged_job("cleanup")
def run(now: datetime) -> dict:
    """One reconciliation; returns (and records) what was terminated and expired."""
    expired = expire_standbys(now)
    abandoned = sweep_stuck(now)
    backfilled, backfill_failed = _backfill(now)
    terminated: list[str] = []
    for region in managed_regions():
        for account, client_id in scopes():
            try:
                terminated += _reap(region, now, account, client_id)
            except ec2.Ec2Error as exc:  # one client's role gone or throttled: the other passes still run
                logger.warning("cleanup pass failed", extra={"region": region, "client_id": client_id,
                                                              "error": str(exc)})
    result = {"expired": expired, "terminated": terminated, "abandoned": abandoned, "backfilled": backfilled,
              "backfill_failed": backfill_failed}
    if expired or terminated:
        activity.record_event("cleanup", f"cleanup expired {len(expired)} standbys, terminated {len(terminated)} "
                              "orphans", now, metadata=result)
    logger.info("cleanup cycle", extra=result)
    metrics.add_metric(name="Cleanup.terminated", unit=MetricUnit.Count, value=len(terminated))
    metrics.add_metric(name="Cleanup.expired", unit=MetricUnit.Count, value=len(expired))
    metrics.add_metric(name=STUCK_INTERRUPTIONS_METRIC, unit=MetricUnit.Count, value=len(abandoned))
    publish_metrics()
    return result


def _backfill(now: datetime) -> tuple[dict[str, int], list[str]]:
    """Each sparse index's backfill slice (``sparse_indexes.backfill``), each on its own: one that fails (DynamoDB
    throttling its table, a row it refuses) is logged and named, the next run resumes it where it stopped, and the
    other indexes and the run's orphan pass for every tenant still run (its error ended the run before them)."""
    backfilled: dict[str, int] = {}
    failed: list[str] = []
    for index in SPARSE_INDEXES:
        try:
            if not sparse_indexes.ready(index):
                backfilled[index.name] = sparse_indexes.backfill(index, now)
        except Exception as exc:  # noqa: BLE001 - the rest of the run is every tenant's
            logger.warning("sparse index backfill failed: the next run resumes it",
                           extra={"index": index.name, "error": str(exc)})
            failed.append(index.name)
    return backfilled, failed


def _reap(region: str, now: datetime, account: accounts.AwsAccount | None, client_id: str | None) -> list[str]:
    """Terminate the orphans of one (account, client) pass, each under its own client tag; audited."""
    terminated: list[str] = []
    found = orphans(region, now, account=account, client_id=client_id)
    by_client: dict[str, list[ec2.InstanceInfo]] = {}
    for info in found:
        by_client.setdefault(info.tags.get(ec2.TAG_CLIENT, ""), []).append(info)
    for owner, infos in by_client.items():
        # The record before the effect: each orphan tagged with the time it was found (once: a run that died after
        # the tag finds it), its audit event written at that time, keyed on the instance, then the termination. A
        # run that died between any two of them is finished by the next, which finds the orphan still running and
        # writes no second event; the event written after the termination was lost by a run that died between them
        # (the next no longer lists a terminated instance).
        untagged = [i.instance_id for i in infos if ec2.TAG_ORPHANED not in i.tags]
        if untagged:
            ec2.mark_orphaned(region, untagged, _stamp(now), account=account)
        for info in infos:
            tags = {k: v for k, v in info.tags.items() if k != ec2.TAG_ORPHANED}
            activity.record_event("orphan_terminated", f"terminated orphan {info.instance_id} "
                                  f"(replica {info.tags.get(ec2.TAG_REPLICA)})",
                                  _found_at(info.tags.get(ec2.TAG_ORPHANED), now), severity="warning",
                                  client_id=info.tags.get(ec2.TAG_CLIENT), agent_id=info.tags.get(ec2.TAG_AGENT),
                                  instance_id=info.instance_id, metadata={"tags": tags},
                                  once=f"orphan_terminated:{info.instance_id}")
        terminated += ec2.terminate(region, [i.instance_id for i in infos], client_id=owner, account=account)
    return terminated


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _found_at(tagged: str | None, now: datetime) -> datetime:
    """The time an earlier run tagged the orphan with (``ec2.TAG_ORPHANED``), else now."""
    try:
        return datetime.strptime(tagged, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=now.tzinfo) if tagged else now
    except ValueError:
        return now
