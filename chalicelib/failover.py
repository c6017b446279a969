"""The failover workflow's Task steps (Step Functions → ``@app.lambda_function`` → here).

Each step takes the execution state and returns it with its additions, and is idempotent: a retried
step finds its own earlier writes (deterministic replica and command ids, set-once timings,
compare-and-set promotions) and does not repeat them. AWS errors worth retrying are raised as
``TransientAwsError`` (the ASL retries it with backoff). The launch step tries the plan's ranked spot
pools (none in capacity back-off) one after the other, recording each refusal as a capacity
observation; only when every one refused does ``CapacityUnavailable`` leave it (caught into the
on-demand path). Timings on the interruption event: detected → decided → replacement
ready → traffic moved → completed.

A *planned* execution (``state["planned"]``: the replica coordinator returning an on-demand primary to
its ready spot standby) runs the same steps with nothing at stake: it only ever promotes that standby;
when it cannot (no live standby, the primary moved, a step failed) it is abandoned (``abandon``) and the
on-demand primary keeps serving, never replaced by another launch. The old instance is retired only
after the hand-over, at least ``TERMINATION_NOTICE_S`` later (make-before-break).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBConnectionError, PynamoDBException

from components.command_tracker import CommandConflictError, CommandPriority, CommandType, enqueue, new_command
from components.replica_coordinator import (
    FailoverRoute,
    ReplicaStatus,
    ReplicaType,
    not_listed_yet,
    retire_at,
    route_failover,
)
from components.sentinel import TERMINATION_NOTICE_S
from components.timeutil import parse_iso

from chalicelib import bootstrap, clock, quotas, replicas, tenancy
from chalicelib.api.views import iso
from chalicelib.aws import ec2, sns
from chalicelib.errors import ConflictError, public_cause, transient_cancellation
from chalicelib.observability import MetricUnit, get_tracer, logger, metrics, publish_metrics
from chalicelib.repositories import activity, agents, interruptions
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import AgentRecord

MAX_READY_CHECKS = 36  # × 5 s Wait in the ASL = 3 minutes for a replacement to reach "running"
State = dict[str, Any]
RESPONSE = {FailoverRoute.PROMOTE: "promoted-existing-replica", "spot": "emergency-spot-replacement",
            "ondemand": "on-demand-fallback"}
PLANNED_RESPONSE = "returned-to-spot"
HANDOVER_FAILED = "handover-failed"
TRANSIENT_CODES = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ProvisionedThroughputExceededException",
                   "InternalError", "InternalServerError", "ServiceUnavailable", "RequestTimeout"}
# The failover tasks are the traced path: the powertools Tracer (X-Ray, AWS calls patched when tracing is
# active) is created when this module is first imported, i.e. only in the failover task functions (app.py
# imports this module inside their handlers), never at the API function's cold start.
tracer = get_tracer()


class FailoverSuperseded(Exception):
    """A launch step found nothing left to launch for: the event is closed, or the agent is deleted or runs on an
    instance this failover did not give it. Its own error name: the ASL ends the execution (NothingToDo)."""


class TrafficNotMoved(Exception):
    """The replacement is the agent's primary but the EIP / target group could not be moved to it (refused:
    gone, not permitted; throttling is a ``TransientAwsError``, retried with the transient backoff).

    Its own error name: the ASL retries it, then records ``handover-failed`` instead of going on-demand."""


def _now() -> datetime:
    return clock.now()


def _publish(subject: str, payload: State) -> bool:
    """The operators' SNS topic, best effort: a notification failure never changes a failover's outcome
    nor skips its later steps (logged instead)."""
    try:
        return sns.publish(subject, payload)
    except Exception as exc:  # noqa: BLE001 - best effort by design
        logger.warning("failover notification not sent", extra={
            "interruption_id": payload.get("interruption_id"), "error": f"{type(exc).__name__}: {exc}"})
        return False


def run_step(step: Callable[[State], State], state: State) -> State:
    """Run one step; AWS hiccups surface as TransientAwsError so the state machine retries them: throttling and
    5xx codes, the network, and a DynamoDB transaction cancelled only for a concurrent write or throttling
    (``TransactionConflict``: an agent heartbeats every 10 s during a warning, and the launch's and hand-over's
    transactions write its row). Any other error keeps its own name (the ASL catches it)."""
    try:
        return step(state)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES or transient_cancellation(exc):
            raise ec2.TransientAwsError(str(exc)) from exc
        raise
    except (BotoCoreError, PynamoDBConnectionError) as exc:
        raise ec2.TransientAwsError(str(exc)) from exc
    except PynamoDBException as exc:  # TransactWriteError / TransactGetError are not connection errors
        if exc.cause_response_code in TRANSIENT_CODES or transient_cancellation(exc):
            raise ec2.TransientAwsError(str(exc)) from exc
        raise


def _agent(state: State) -> AgentRecord | None:
    return agents.get(state["client_id"], state["agent_id"])


def plan(state: State) -> State:
    """Choose the route: promote a live standby, else spot in the safest other pool, else on-demand."""
    now = _now()
    event = interruptions.require(state["client_id"], state["interruption_id"])
    agent = _agent(state)
    why = None
    if event.status in ("resolved", "failed"):
        # closed with nothing done (by this step's first attempt, whose answer was lost, or another path): its reason
        why = (event.error if event.response_action == "no-action" and event.error
               else f"interruption already {event.status}")
    elif agent is None or agent.deleted:
        why = "agent deleted"
    elif agent.instance_id != state["instance_id"]:
        why = "the agent already moved to another instance"
    if why:
        # A plan that outlived its timeout (the workflow went on without it) must not rewrite the outcome
        # the rest of the execution recorded: only an open event not yet handled here says no-action.
        if event.status not in ("resolved", "failed") and _serving_replacement(state, agent) is None:
            _close_no_action(state, why, now)
        return {**state, "action": FailoverRoute.NOTHING.value, "reason": why}
    standby_id = state.get("replica_id") or agent.current_replica_id
    standby = replica_repo.get(agent.agent_id, standby_id) if standby_id else None
    view = None
    if standby is not None and standby.active and standby.instance_id:
        info = ec2.describe(agent.region, [standby.instance_id],
                            account=tenancy.for_agent(agent)).get(standby.instance_id)
        view = standby.view(info.state if info else None)
    if state.get("planned"):
        return _plan_return(state, agent, standby_id, view, now)
    spots = replicas.candidates(agent, now, exclude=(standby.pool_id,) if standby and standby.pool_id
                                and view is None else ())
    spot = spots[0] if spots else None
    route = route_failover(view, spot.pool_id if spot else None, agent.spot_pool_id)
    interruptions.set_once(state["client_id"], state["interruption_id"], "decided_at", now)
    reason = {FailoverRoute.PROMOTE: f"promote standby {standby_id}",
              FailoverRoute.LAUNCH: f"no live standby: spot replacement in {spot.pool_id if spot else None}"
                                    f" ({spot.reason if spot else ''})"
                                    + (f", then {', '.join(s.pool_id for s in spots[1:])}" if len(spots) > 1 else ""),
              FailoverRoute.ONDEMAND: "no live standby and no other spot pool (or all in capacity back-off): "
                                      "on-demand"}[route]
    logger.info("failover plan", extra={"interruption_id": state["interruption_id"], "route": route.value,
                                        "reason": reason})
    return {**state, "action": route.value, "reason": reason, "region": agent.region,
            "replica_id": standby_id if route is FailoverRoute.PROMOTE else None,
            "spot_pool_id": spot.pool_id if spot else None, "spot_az": spot.az if spot else None,
            "spot_price": str(spot.price) if spot and spot.price is not None else None,
            "spot_candidates": [{"pool_id": s.pool_id, "az": s.az,
                                 "price": str(s.price) if s.price is not None else None} for s in spots],
            "lifecycle": "spot", "checks": 0}


def _plan_return(state: State, agent: AgentRecord, standby_id: str | None, view, now: datetime) -> State:
    """A planned return promotes its standby or does nothing: the on-demand primary is not at risk."""
    route = route_failover(view, None, agent.spot_pool_id)
    why = None
    if agent.current_mode == "spot":
        why = "planned return abandoned: the primary already runs on spot"
    elif route is not FailoverRoute.PROMOTE:
        why = f"planned return abandoned: standby {standby_id} is not live"
    interruptions.set_once(state["client_id"], state["interruption_id"], "decided_at", now)
    if why:
        interruptions.update(state["client_id"], state["interruption_id"], status="resolved",
                             response_action="no-action", error=why, completed_at=now)
        return {**state, "action": FailoverRoute.NOTHING.value, "reason": why}
    return {**state, "action": route.value, "reason": f"planned return: promote standby {standby_id}",
            "region": agent.region, "replica_id": standby_id, "spot_candidates": [], "lifecycle": "spot",
            "checks": 0}


def _spot_candidates(state: State) -> list[dict[str, Any]]:
    """The plan's ranked spot pools (an execution planned before they existed has just the first)."""
    found = state.get("spot_candidates")
    if found:
        return list(found)
    if state.get("spot_pool_id"):
        return [{"pool_id": state["spot_pool_id"], "az": state.get("spot_az"), "price": state.get("spot_price")}]
    return []


def _replacement_id(state: State, lifecycle: str, rank: int = 0) -> str:
    """Deterministic per (interruption, lifecycle, candidate rank): a retried task finds its rows and the
    instance tagged with them instead of launching again."""
    stem = f"emg-{state['interruption_id'][4:]}-{lifecycle}"
    return stem if rank == 0 else f"{stem}{rank + 1}"


def launch(state: State) -> State:
    """Launch the emergency replacement: spot in the plan's ranked pools, one after the other within this
    task (a capacity refusal is recorded and the next pool tried, so one refusal never costs a Step
    Functions retry); when every one refused, CapacityUnavailable sends the workflow on to on-demand.
    On the fallback path (``lifecycle`` ondemand) one on-demand launch in the agent's AZ."""
    now = _now()
    agent = _agent(state)
    if agent is None:
        raise ec2.LaunchError("agent vanished during failover")
    serving = _still_needed(state)
    if serving is not None:
        return _launched(state, serving)
    state = {**state, "region": state.get("region") or agent.region}  # a plan that timed out set none
    lifecycle = state.get("lifecycle") or "spot"
    if lifecycle != "spot":
        replica = _launch_one(agent, state, _replacement_id(state, lifecycle), lifecycle, None, agent.az, None, now)
        return _launched(state, replica)
    refusals: list[str] = []
    for rank, candidate in enumerate(_spot_candidates(state)):
        replica_id = _replacement_id(state, "spot", rank)
        try:
            replica = _launch_one(agent, state, replica_id, "spot", candidate["pool_id"],
                                  candidate.get("az") or agent.az, candidate.get("price"), now)
        except ec2.CapacityUnavailable as exc:
            refusals.append(f"{candidate['pool_id']}: {exc}")
            logger.info("failover spot launch refused, next pool", extra={
                "interruption_id": state["interruption_id"], "pool_id": candidate["pool_id"], "error": str(exc)})
            continue
        return _launched(state, replica)
    raise ec2.CapacityUnavailable("no spot capacity in any planned pool: " + "; ".join(refusals or ["none planned"]))


def _launch_one(agent: AgentRecord, state: State, replica_id: str, lifecycle: str, pool_id: str | None, az: str,
                price: str | None, now: datetime):
    """One replacement row and its instance (both idempotent on ``replica_id``). A row that already
    failed (an earlier attempt of this task was refused there) counts as refused again without asking EC2.

    The row is written before the failover is checked to be still wanted (``_still_needed``), and the
    instance is attached only to a row still open (``replica_repo.attach_instance``): a late attempt (one
    Step Functions stopped waiting for) launches nothing once the hand-over or the failure path ran, and an
    instance it launched just before they closed its row is terminated by one of the two."""
    replica = replica_repo.create(
        agent, replica_id=replica_id, replica_type=ReplicaType.TERMINATION.value, lifecycle=lifecycle,
        pool_id=pool_id, az=az, created_by="failover", now=now, take_slot=False,
        interruption_id=state["interruption_id"], hourly_cost=price)
    try:
        serving = _still_needed(state)
    except FailoverSuperseded as exc:
        _close_unneeded(replica, now, str(exc))
        raise
    if serving is not None:
        _close_unneeded(replica, now, f"{serving.replica_id} already serves the agent")
        return serving
    if not replica.active:
        failure = replicas.launch_failure(replica)  # an earlier attempt of this step launched it and was refused
        if failure is not None:
            raise failure
        message = f"replacement {replica.replica_id} already {replica.status.value}: {replica.error_message or ''}"
        if lifecycle == "spot" and replica.status is ReplicaStatus.FAILED:
            raise ec2.CapacityUnavailable(message)
        raise ec2.LaunchError(message)
    return replicas.launch(agent, replica, now, source_instance_id=state["instance_id"])


def _still_needed(state: State):
    """None while the failover still has to launch; the promoted replacement of this interruption the agent
    already runs on (adopted: a later step of this execution put it there, the rest of the path finishes
    the hand-over); FailoverSuperseded when the event is closed or the agent runs elsewhere (recorded
    no-action while the event is open, as the plan does)."""
    event = interruptions.get(state["client_id"], state["interruption_id"])
    if event is None or event.status in ("resolved", "failed"):
        raise FailoverSuperseded(f"interruption already {event.status if event else 'gone'}")
    agent = _agent(state)
    why = "agent deleted" if agent is None or agent.deleted else None
    if why is None:
        if agent.instance_id == state["instance_id"]:
            return None
        serving = _serving_replacement(state, agent)
        if serving is not None:
            return serving
        why = "the agent already moved to another instance"
    _close_no_action(state, why, _now())
    raise FailoverSuperseded(why)


def _close_no_action(state: State, why: str, now: datetime) -> None:
    """Close the open event ``resolved``/``no-action`` with ``why``: the execution ends at ``NothingToDo``, and an
    event left ``handling`` (or ``detected``) with no execution running would be closed by the cleanup job as a
    failover lost (critical). Conditional on the open status: an outcome recorded meanwhile stands."""
    for status in ("handling", "detected"):
        if interruptions.update_if(state["client_id"], state["interruption_id"], status, status="resolved",
                                   response_action="no-action", error=why, completed_at=now):
            return


def _serving_replacement(state: State, agent: AgentRecord | None):
    """The replacement of this interruption the agent was moved to (promoted), if any."""
    if agent is None or agent.instance_id == state["instance_id"]:
        return None
    for replica in replica_repo.for_agent(agent.agent_id):
        if (replica.interruption_id == state["interruption_id"] and replica.status is ReplicaStatus.PROMOTED
                and replica.instance_id == agent.instance_id):
            return replica
    return None


def _close_unneeded(replica, now: datetime, reason: str) -> None:
    """Close a replacement row this attempt wrote but will not launch (nor keep: its instance, if a parallel
    attempt attached one, is terminated)."""
    if replica.active:
        try:
            replicas.retire(replica, ReplicaStatus.FAILED if replica.status is ReplicaStatus.LAUNCHING
                            else ReplicaStatus.TERMINATED, now, f"not needed: {reason}")
        except ConflictError:
            pass  # closed concurrently: by the hand-over or the failure path


def _launched(state: State, replica) -> State:
    return {**state, "replica_id": replica.replica_id, "new_instance_id": replica.instance_id, "checks": 0,
            "ready": False, "gave_up": False}


def check_ready(state: State) -> State:
    """Is the replacement running? After MAX_READY_CHECKS the workflow gives up on it."""
    now = _now()
    agent = _agent(state)
    replica = replica_repo.get(state["agent_id"], state["replica_id"]) if state.get("replica_id") else None
    if agent is None or replica is None or not replica.instance_id:
        return {**state, "ready": False, "gave_up": True}
    info = ec2.describe(agent.region, [replica.instance_id], account=tenancy.for_agent(agent)).get(replica.instance_id)
    checks = int(state.get("checks", 0)) + 1
    if info is not None and info.state == "running":
        if replica.status is ReplicaStatus.LAUNCHING or replica.status is ReplicaStatus.SYNCING:
            replica_repo.transition(replica, ReplicaStatus.READY, now)
        interruptions.set_once(state["client_id"], state["interruption_id"], "replacement_ready_at", now)
        return {**state, "new_instance_id": replica.instance_id, "ready": True, "gave_up": False, "checks": checks}
    ec2_state = info.state if info else None
    # Not listed moments after RunInstances is EC2's eventual consistency, not a lost instance.
    lost = ec2_state not in ("pending", "running") and not not_listed_yet(ec2_state, replica.launched_at, now)
    gave_up = lost or checks >= MAX_READY_CHECKS
    # Terminated too: a late boot must not run on unrecorded. A row already failed is this step's own close whose
    # Lambda died after the row's status write: ``replicas.retire`` finishes what followed it (the instance row, the
    # slot, the audit event), once.
    if gave_up and (replica.active or replica.status is ReplicaStatus.FAILED):
        replicas.retire(replica, ReplicaStatus.FAILED, now,
                        f"instance {info.state if info else 'missing'} after {checks} checks")
    return {**state, "ready": False, "gave_up": gave_up, "checks": checks}


def handover(state: State) -> State:
    """Promote in the tables, move the traffic, and tell both instances' agents what happened."""
    now = _now()
    agent = _agent(state)
    replica = replica_repo.get(state["agent_id"], state["replica_id"])
    new_mode = replica.lifecycle
    try:
        replica_repo.promote(agent, replica, old_instance_id=state["instance_id"], new_az=replica.az,
                             new_pool_id=replica.pool_id if new_mode == "spot" else None, new_mode=new_mode, now=now)
    except ConflictError:
        current = agents.get(agent.client_id, agent.agent_id)
        if current.instance_id == replica.instance_id:
            pass  # a retried step: already promoted
        elif current.instance_id != state["instance_id"]:
            return _superseded(state, replica, now)
        else:
            raise
    config = agent.config
    close_replacements(state, now, keep=replica.replica_id,
                       reason="another replacement of the same interruption took over")
    kind = _move_traffic(agent, state, replica.instance_id)
    interruptions.set_once(state["client_id"], state["interruption_id"], "traffic_moved_at", now)
    _tell_agents(agent, state, replica.instance_id, now)
    action = (PLANNED_RESPONSE if state.get("planned")
              else RESPONSE[FailoverRoute.PROMOTE] if state.get("action") == FailoverRoute.PROMOTE.value
              else RESPONSE[new_mode])
    interruptions.update(state["client_id"], state["interruption_id"], response_action=action,
                         replica_id=replica.replica_id, new_instance_id=replica.instance_id,
                         new_pool_id=replica.pool_id, new_lifecycle=new_mode, handover=kind)
    when = _retire_when(state, config, now)
    return {**state, "new_instance_id": replica.instance_id, "handover": kind, "response_action": action,
            "retire_old": when is not None, "retire_at": iso(when) if when else None}


def _move_traffic(agent: AgentRecord, state: State, new_instance_id: str) -> str:
    """Point the EIP or target group at the new primary; the hand-over kind done. Throttling, a 5xx or the
    network (``TransientAwsError``) is raised as such: the ASL retries it with the backoff of every transient
    AWS error. Any other failure (after the promotion: the address or group gone, permission denied) is
    TrafficNotMoved: retried twice by the ASL, then recorded as ``handover-failed``."""
    config = agent.config
    kind = config.get("handover") or "none"
    try:
        if kind == "eip" and config.get("eip_allocation_id"):
            ec2.move_eip(agent.region, config["eip_allocation_id"], new_instance_id, client_id=agent.client_id,
                         account=tenancy.for_agent(agent), own=(state["instance_id"],),
                         known=tenancy.registered_to(agent.client_id))
        elif kind == "target-group" and config.get("target_group_arn"):
            ec2.swap_target(agent.region, config["target_group_arn"], state["instance_id"], new_instance_id,
                            config.get("target_port"), client_id=agent.client_id, account=tenancy.for_agent(agent),
                            known=tenancy.registered_to(agent.client_id))
        else:
            kind = "none"
    except ec2.TransientAwsError:
        raise
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES:
            raise ec2.TransientAwsError(str(exc)) from exc
        raise _not_moved(state, kind, new_instance_id, exc) from exc
    except (ec2.Ec2Error, BotoCoreError) as exc:
        raise _not_moved(state, kind, new_instance_id, exc) from exc
    return kind


def _not_moved(state: State, kind: str, new_instance_id: str, exc: Exception) -> TrafficNotMoved:
    logger.warning("traffic not moved", extra={"interruption_id": state["interruption_id"], "handover": kind,
                                               "error": str(exc)})
    return TrafficNotMoved(f"{kind} hand-over to {new_instance_id} failed: {exc}")


def close_replacements(state: State, now: datetime, *, keep: str | None, reason: str) -> list[str]:
    """Terminate every replacement this interruption launched that is not serving (except ``keep``),
    attached to its row or only tagged with it, and close the active rows: nothing we launched for the
    event keeps running unrecorded. A promoted replacement and the agent's instance are never touched.
    An instance a row recorded from our own RunInstances (``own_launch``) is terminated by its id, also when
    EC2 does not list it yet (launched seconds ago) and also when its row was closed before (by a path that
    then could not see it). Returns the instance ids terminated."""
    agent = _agent(state)
    serving = agent.instance_id if agent else None
    region = state.get("region") or (agent.region if agent else None)
    mine = [r for r in replica_repo.for_agent(state["agent_id"])
            if r.interruption_id == state["interruption_id"] and r.replica_type == ReplicaType.TERMINATION.value
            and r.replica_id != keep]
    spared = {serving} | {r.instance_id for r in mine if r.status is ReplicaStatus.PROMOTED}
    for replica in mine:
        if replica.active and replica.instance_id not in spared:
            replicas.retire(replica, ReplicaStatus.FAILED if replica.status is ReplicaStatus.LAUNCHING
                            else ReplicaStatus.TERMINATED, now, reason)
    if not region or not mine:
        return []
    account = tenancy.for_client(state["client_id"], getattr(agent, "account_id", None))
    live = [i.instance_id for i in ec2.replica_instances(region, [r.replica_id for r in mine], account=account,
                                                         client_id=state["client_id"])
            if i.instance_id not in spared]
    recorded = tuple(r.instance_id for r in mine if r.own_launch and r.instance_id and r.instance_id not in spared
                     and r.instance_id not in live)
    wanted = live + list(recorded)
    terminated = ec2.terminate(region, wanted, client_id=state["client_id"], account=account,
                               launched=recorded) if wanted else []
    for instance_id in terminated:
        replica_repo.deactivate_instance(instance_id, state["client_id"], now)
    return terminated


def _retire_when(state: State, config: dict, now: datetime) -> datetime | None:
    """When the old instance goes: the agent's auto-terminate setting and wait, after the deadline.

    A planned return drains the old primary at least as long as a spot warning would
    (``TERMINATION_NOTICE_S``), and retires an on-demand fallback we launched ourselves even with
    auto-terminate off (the cleanup job would terminate that unowned instance anyway, without a drain)."""
    deadline = parse_iso(state["deadline"]) if state.get("deadline") else None
    wait = int(config.get("terminate_wait_seconds") or 0)
    auto = bool(config.get("auto_terminate_enabled"))
    if state.get("planned"):
        wait = max(wait, TERMINATION_NOTICE_S)
        row = agents.instance_row(state["instance_id"])
        auto = auto or bool(row is not None and row.replica_id)
    return retire_at(now, deadline, auto_terminate=auto, wait_s=wait)


def _superseded(state: State, replica, now: datetime) -> State:
    """The agent moved to another instance while the failover ran (a switch it was executing): the
    replacement is not needed — terminate it, and record that no hand-over was done."""
    replicas.retire(replica, ReplicaStatus.TERMINATED, now, "the agent moved to another instance during the failover")
    interruptions.update(state["client_id"], state["interruption_id"], response_action="no-action",
                         error="the agent had already moved to another instance")
    return {**state, "handover": "none", "response_action": "no-action", "retire_old": False, "retire_at": None,
            "new_instance_id": None}


def _tell_agents(agent: AgentRecord, state: State, new_instance_id: str, now: datetime) -> None:
    """prepare_shutdown for the old instance, promote for the new one (ids derived: enqueued once), for
    agents that run them; a legacy agent would skip them and leave them to time out."""
    if not agent.timings.runs_hooks:
        return
    store, stem = bootstrap.command_store(), f"cmd-{state['interruption_id'][4:]}"
    for suffix, kind, instance in (("shutdown", CommandType.PREPARE_SHUTDOWN, state["instance_id"]),
                                   ("promote", CommandType.PROMOTE, new_instance_id)):
        command = new_command(command_id=f"{stem}-{suffix}", client_id=agent.client_id, agent_id=agent.agent_id,
                              command_type=kind, priority=CommandPriority.EMERGENCY, now=now, instance_id=instance,
                              trigger="planned-return" if state.get("planned") else "interruption",
                              created_by="failover",
                              policy=bootstrap.lease_policy(agent.agent_version))
        try:
            enqueue(store, command)
        except CommandConflictError:
            pass


def record(state: State) -> State:
    """Close the event with its timings and tell the client (and the operators' topic)."""
    now = _completed_at(state)
    event = interruptions.require(state["client_id"], state["interruption_id"])
    moved = event.traffic_moved_at or now
    elapsed_ms = int((moved - event.detected_at).total_seconds() * 1000)
    interruptions.update(state["client_id"], state["interruption_id"], status="resolved", success=True,
                         failover_time_ms=elapsed_ms)
    agent = _agent(state)
    name = agent.logical_agent_id if agent else state["agent_id"]
    if state.get("planned"):
        return _record_return(state, name, now)
    message = (f"{name}: {event.signal_type} on {state['instance_id']} handled by {state.get('response_action')}; "
               f"{state.get('new_instance_id')} serving after {elapsed_ms / 1000:.1f} s")
    once = f"{state['interruption_id']}:completed"
    new = activity.notify(state["client_id"], "interruption", message, now, severity="warning",
                          agent_id=state["agent_id"], once=once) is not None
    activity.record_event("failover_completed", message, now, severity="warning", client_id=state["client_id"],
                          agent_id=state["agent_id"], instance_id=state["instance_id"], once=once,
                          metadata={"interruption_id": state["interruption_id"], "failover_time_ms": elapsed_ms})
    if new:  # a retried step (its first answer lost) neither pages nor counts twice
        _publish(f"Spot Optimizer failover: {name}", {**state, "failover_time_ms": elapsed_ms})
        metrics.add_metric(name="FailoverTime", unit=MetricUnit.Milliseconds, value=elapsed_ms)
        publish_metrics()
    return {**state, "failover_time_ms": elapsed_ms}


def _completed_at(state: State) -> datetime:
    """The event's completion time, set once: a retried closing step records and notifies with the same time
    (and so the same derived keys, ``activity``'s ``once``). One write; a retried step also reads the first time."""
    now = _now()
    if interruptions.set_once(state["client_id"], state["interruption_id"], "completed_at", now):
        return now
    event = interruptions.get(state["client_id"], state["interruption_id"])
    return event.completed_at if event is not None and event.completed_at else now


def _record_return(state: State, name: str, now: datetime) -> State:
    """A planned return is news, not an alarm: an info notification and audit event, no SNS."""
    message = (f"{name}: returned to spot: standby {state.get('replica_id')} ({state.get('new_instance_id')}) "
               f"serves instead of the on-demand {state['instance_id']}")
    once = f"{state['interruption_id']}:returned"
    activity.notify(state["client_id"], "returned_to_spot", message, now, agent_id=state["agent_id"], once=once)
    activity.record_event("planned_return_completed", message, now, client_id=state["client_id"], once=once,
                          agent_id=state["agent_id"], instance_id=state["instance_id"],
                          metadata={"interruption_id": state["interruption_id"], "replica_id": state.get("replica_id")})
    return state


def retire(state: State) -> State:
    """Terminate the old instance after its deadline (this step runs only under auto-terminate, or for a
    planned return's on-demand fallback). Never the instance the agent runs on (make-before-break)."""
    now = _now()
    agent = _agent(state)
    if agent is not None and agent.instance_id == state["instance_id"]:
        logger.warning("old instance is still the primary: not terminated", extra={
            "interruption_id": state["interruption_id"], "instance_id": state["instance_id"]})
        return {**state, "old_terminated": False}
    # The old primary: ours (tags) or the client's own registered instance it asked us to retire (auto-terminate).
    try:
        ec2.terminate(state["region"], [state["instance_id"]], client_id=state["client_id"],
                      account=tenancy.for_client(state["client_id"], getattr(agent, "account_id", None)),
                      registered=(state["instance_id"],))
    except ec2.NotPermitted as exc:
        return _left_running(state, str(exc))
    replica_repo.deactivate_instance(state["instance_id"], state["client_id"], now)
    interruptions.set_once(state["client_id"], state["interruption_id"], "old_terminated_at", now)
    return {**state, "old_terminated": True}


def _left_running(state: State, cause: str) -> State:
    """IAM would not let us retire the client's own old instance (not tagged ``ec2.TAG_RETIRE``): the failover
    stands and the next standby still comes; the instance keeps running and billing, so the client is told how
    to end it. Notified at the event's first retire attempt's time, so a retried step tells once."""
    at = parse_iso(state["retire_at"]) if state.get("retire_at") else _now()
    instance_id = state["instance_id"]
    logger.warning("old instance not terminated: not permitted", extra={
        "interruption_id": state["interruption_id"], "instance_id": instance_id, "error": cause})
    interruptions.update(state["client_id"], state["interruption_id"],
                         error=f"after the hand-over: {instance_id} was not terminated (not permitted)")
    message = (f"{instance_id} was not terminated after the failover: Spot Optimizer may terminate only the "
               f"instances it launched, or yours tagged {ec2.TAG_RETIRE}={ec2.stage()}. It is still running (and "
               f"billed): terminate it, or tag your instances so that auto-terminate can retire them.")
    once = f"{state['interruption_id']}:left-running"
    activity.notify(state["client_id"], "interruption", message, at, severity="warning", agent_id=state["agent_id"],
                    once=once)
    activity.record_event("old_instance_left_running", message, at, severity="warning", client_id=state["client_id"],
                          agent_id=state["agent_id"], instance_id=instance_id, once=once,
                          metadata={"interruption_id": state["interruption_id"]})
    return {**state, "old_terminated": False}


def next_standby(state: State) -> State:
    """Manual-replica agents get their next standby now (in a pool other than the new primary's)."""
    agent = _agent(state)
    if agent is None or not agent.manual_replica:
        return {**state, "next_replica_id": None}
    now = _now()
    # The standby an earlier attempt of this step created (named after the interruption): finished, never a second
    mine = next((r for r in replica_repo.for_agent(agent.agent_id) if r.interruption_id == state["interruption_id"]
                 and r.replica_type == ReplicaType.MANUAL.value), None)
    try:
        standby = (replicas.finish_standby(agent, mine, now) if mine is not None
                   else replicas.ensure_standby(agent, now, created_by="failover",
                                                interruption_id=state["interruption_id"]))
    except quotas.QuotaExceeded as exc:  # the failover is done; only the next standby waits for room
        logger.warning("next standby not started", extra={"agent_id": agent.agent_id, "error": str(exc)})
        standby = None
    return {**state, "next_replica_id": standby.replica_id if standby else None}


def abandon(state: State) -> State:
    """A planned return that could not finish: the on-demand primary keeps serving (nothing was lost),
    the event says why, and the coordinator may try again with a ready standby after the claim window."""
    error = state.get("error") or {}
    cause = f"planned return abandoned: {public_cause(error)}"
    event = interruptions.get(state["client_id"], state["interruption_id"])
    if event is not None and event.traffic_moved_at is not None:  # handed over: only a later step failed
        interruptions.update(state["client_id"], state["interruption_id"], error=cause)
        return state
    at = _completed_at(state)  # set once: a retried step logs the abandon once, at the first attempt's time
    interruptions.update(state["client_id"], state["interruption_id"], status="resolved", success=False,
                         response_action="no-action", error=cause)
    activity.record_event("planned_return_abandoned", f"{state['instance_id']}: {cause}", at, severity="warning",
                          client_id=state["client_id"], agent_id=state["agent_id"],
                          instance_id=state["instance_id"], metadata={"interruption_id": state["interruption_id"]},
                          once=f"{state['interruption_id']}:abandoned")
    return state


def failed(state: State) -> State:
    """Every path failed, or the hand-over could not move the traffic: the event says what is true, the
    client is told (no internals), and no replacement is left running unrecorded — never silent."""
    now = _now()
    if state.get("planned"):
        return abandon(state)
    error = state.get("error") or {}
    cause = public_cause(error)
    logger.error("failover failed", extra={"interruption_id": state["interruption_id"], "error": error})
    if error.get("Error") == TrafficNotMoved.__name__:
        return _traffic_not_moved(state, cause)
    event = interruptions.get(state["client_id"], state["interruption_id"])
    if event is not None and event.traffic_moved_at is not None:
        return _failed_after_handover(state, cause, now)
    if _serving_replacement(state, _agent(state)) is not None:
        # Promoted, but the traffic never moved (a hand-over throttled past every retry): handover-failed too.
        return _traffic_not_moved(state, cause)
    # Closed first: a launch attempt still running (Step Functions stopped waiting for it) then launches
    # nothing (failover._still_needed), and what it launched before is closed and terminated here.
    at = _completed_at(state)
    interruptions.update(state["client_id"], state["interruption_id"], status="failed", success=False, error=cause)
    terminated = close_replacements(state, now, keep=None, reason="failover failed: replacement not serving")
    message = f"failover for {state['instance_id']} FAILED: {cause}"
    once = f"{state['interruption_id']}:failed"
    new = activity.notify(state["client_id"], "interruption_failed", message, at, severity="critical",
                          agent_id=state["agent_id"], once=once) is not None
    activity.record_event("failover_failed", message, at, severity="critical", client_id=state["client_id"],
                          agent_id=state["agent_id"], instance_id=state["instance_id"], once=once,
                          metadata={"interruption_id": state["interruption_id"], "terminated": terminated})
    if new:  # a retried step (its first answer lost) neither pages nor counts twice
        _publish("Spot Optimizer failover FAILED", {**state, "cause": cause, "terminated": terminated})
        metrics.add_metric(name="FailoverFailed", unit=MetricUnit.Count, value=1)
        publish_metrics()
    return {**state, "terminated_replacements": terminated}


def _traffic_not_moved(state: State, cause: str) -> State:
    """The replacement is the primary (recorded, serving the agent) but the EIP/target group still points
    at the old instance: ``handover-failed``, the old instance kept, the client asked to move it."""
    replica = replica_repo.get(state["agent_id"], state["replica_id"]) if state.get("replica_id") else None
    new_instance = replica.instance_id if replica else state.get("new_instance_id")
    agent = _agent(state)
    kind = (agent.config.get("handover") if agent else None) or "none"
    at = _completed_at(state)
    interruptions.update(state["client_id"], state["interruption_id"], status="failed", success=False,
                         completed_at=at, response_action=HANDOVER_FAILED, handover=kind, error=cause,
                         replica_id=replica.replica_id if replica else None, new_instance_id=new_instance)
    message = (f"failover for {state['instance_id']}: the replacement {new_instance} is running and registered "
               f"as the primary, but the {kind} could not be moved to it ({cause}); move it manually. "
               f"{state['instance_id']} was not terminated.")
    once = f"{state['interruption_id']}:handover-failed"
    new = activity.notify(state["client_id"], "interruption_failed", message, at, severity="critical",
                          agent_id=state["agent_id"], once=once) is not None
    activity.record_event("failover_handover_failed", message, at, severity="critical",
                          client_id=state["client_id"], agent_id=state["agent_id"], instance_id=state["instance_id"],
                          once=once, metadata={"interruption_id": state["interruption_id"]})
    if new:  # a retried step (its first answer lost) neither pages nor counts twice
        _publish("Spot Optimizer failover: traffic NOT moved", {**state, "cause": cause})
        metrics.add_metric(name="FailoverFailed", unit=MetricUnit.Count, value=1)
        publish_metrics()
    return {**state, "response_action": HANDOVER_FAILED}


def _failed_after_handover(state: State, cause: str, now: datetime) -> State:
    """A step after the hand-over failed (retiring the old instance, the next standby): the failover
    itself stands (event unchanged but for the note); the client hears what was left undone, once: a retried
    step (its first attempt died after a write) tells at the first attempt's time (``followup_failed_at``)."""
    event = interruptions.require(state["client_id"], state["interruption_id"])
    at = event.followup_failed_at
    if at is None:
        if interruptions.set_once(state["client_id"], state["interruption_id"], "followup_failed_at", now):
            at = now
        else:  # stamped meanwhile
            at = interruptions.require(state["client_id"], state["interruption_id"]).followup_failed_at or now
    fields = {} if event.status == "resolved" else {"status": "resolved", "success": True, "completed_at": at}
    interruptions.update(state["client_id"], state["interruption_id"], error=f"after the hand-over: {cause}",
                         **fields)
    message = (f"failover for {state['instance_id']} completed, but a later step failed ({cause}); "
               f"{state['instance_id']} may still be running")
    once = f"{state['interruption_id']}:followup-failed"
    activity.notify(state["client_id"], "interruption", message, at, severity="warning", agent_id=state["agent_id"],
                    once=once)
    activity.record_event("failover_followup_failed", message, at, severity="warning", client_id=state["client_id"],
                          agent_id=state["agent_id"], instance_id=state["instance_id"], once=once,
                          metadata={"interruption_id": state["interruption_id"]})
    return state
