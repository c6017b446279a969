"""Interruption signals from the agent (IMDS) and the interruption history.

The agent's reports go through the same sentinel intake as EventBridge's events, so whichever
arrives first starts the workflow and the other is answered as a duplicate.
"""

from __future__ import annotations

from datetime import timedelta

from components.replica_coordinator import ReplicaStatus, ReplicaType
from components.sentinel import (
    TERMINATION_NOTICE_S,
    Signal,
    SignalKind,
    SignalSource,
    signal_group,
    signal_key,
)

from chalicelib import auth, replicas, sentinel
from chalicelib.api.common import ApiBlueprint, agent_request, client_request, ok, page_params, utcnow
from chalicelib.api.views import iso
from chalicelib.clock import MAX_CLOCK_SKEW, believable
from chalicelib.errors import ConflictError, ForbiddenError, NotFoundError
from chalicelib.repositories import agents, interruptions
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.replicas import SlotTakenError
from chalicelib.schemas.interruptions import EmergencyReplicaRequest, RebalanceRequest, TerminationImminentRequest
from chalicelib.settings import get_settings

bp = ApiBlueprint(__name__)


def _request():
    return bp.current_request


def _agent_and_instance(client_id: str, agent, instance_id: str | None):
    """The caller's agent and one of its instances (default: the current primary); 404 otherwise."""
    instance_id = instance_id or agent.instance_id
    instance = agents.get_instance(client_id, instance_id) if instance_id else None
    if instance is None or instance.agent_id != agent.agent_id:
        raise NotFoundError("instance not found", field="instance_id")
    return agent, instance_id


# How old a signal the agent saw may be when it reports it (IMDS keeps a notice until the instance goes, and the agent
# retries a failed report); how far ahead of ours its clock may be is ``MAX_CLOCK_SKEW``. Past either bound the time
# is the receive time: the event, its id, its audit day, its capacity observation and the failover's timing are keyed on it.
MAX_SIGNAL_AGE = timedelta(minutes=15)


def _signal_time(reported, now):
    """The agent's detection time when it is plausible (not older than ``MAX_SIGNAL_AGE``, not in the future beyond
    ``MAX_CLOCK_SKEW``, then at most ``now``), else ``now``."""
    if reported is None or not believable(reported, now, MAX_SIGNAL_AGE):
        return now
    return min(reported, now)


def _deadline(reported, detected, now):
    """The termination time of a notice: the agent's when it lies within the notice's two minutes (plus skew) of
    now (an instance-action time already past is kept: the instance is going), else the notice's own."""
    notice = detected + timedelta(seconds=TERMINATION_NOTICE_S)
    if reported is None or not now - MAX_SIGNAL_AGE <= reported <= now + timedelta(seconds=TERMINATION_NOTICE_S) \
            + MAX_CLOCK_SKEW:
        return notice
    return reported


def interruption_view(row) -> dict:
    """One interruption event with its timings (ISO UTC) and the failover's result."""
    return {
        "interruption_id": row.interruption_id, "agent_id": row.agent_id, "instance_id": row.instance_id,
        "pool_id": row.pool_id, "signal_type": row.signal_type, "source": row.source, "status": row.status,
        "response_action": row.response_action, "replica_id": row.replica_id,
        "new_instance_id": row.new_instance_id, "new_pool_id": row.new_pool_id,
        "new_lifecycle": row.new_lifecycle, "handover": row.handover, "success": row.success,
        "failover_time_ms": None if row.failover_time_ms is None else int(row.failover_time_ms),
        "error": row.error, "detected_at": iso(row.detected_at), "termination_time": iso(row.termination_time),
        "decided_at": iso(row.decided_at), "replacement_ready_at": iso(row.replacement_ready_at),
        "traffic_moved_at": iso(row.traffic_moved_at), "completed_at": iso(row.completed_at),
        "old_terminated_at": iso(row.old_terminated_at),
        "step_ms": _step_ms(row),
    }


def _step_ms(row) -> dict:
    """Milliseconds from the signal's detection to each recorded step of the failover (None: not reached)."""
    def since_detected(at):
        if at is None or row.detected_at is None:
            return None
        return int((at - row.detected_at).total_seconds() * 1000)

    return {"decide": since_detected(row.decided_at), "replacement_ready": since_detected(row.replacement_ready_at),
            "traffic_moved": since_detected(row.traffic_moved_at), "completed": since_detected(row.completed_at)}


@bp.route("/api/agents/{agent_id}/termination-imminent", methods=["POST"], response="SignalReply", status=202,
          responses={200: "SignalReply"})
def termination_imminent(agent_id):
    """Two-minute notice seen by the agent: start (or join) the failover workflow. 202, or 200 for spot_agent.py
    (``X-Client-Token``), which reads any other status as a failed failover, as the legacy server answered it."""
    request = _request()
    client_id, agent, body = agent_request(request, agent_id, TerminationImminentRequest)
    agent, instance_id = _agent_and_instance(client_id, agent, body.instance_id)
    now = utcnow()
    detected = _signal_time(body.detected_at, now)
    deadline = _deadline(body.termination_time, detected, now)
    result = sentinel.handle(Signal(SignalKind.TERMINATION, instance_id, detected, SignalSource.AGENT,
                                    region=agent.region, deadline=deadline), now, on_behalf_of=agent)
    status = 200 if auth.speaks_client_token_header(request.headers) else 202
    return ok({"success": result["action"] != "ignored", **sentinel.answer(result)}, status=status)


@bp.route("/api/agents/{agent_id}/rebalance-recommendation", methods=["POST"], response="SignalReply")
def rebalance_recommendation(agent_id):
    """Rebalance recommendation seen by the agent: pre-warm a standby if the pool is risky."""
    client_id, agent, body = agent_request(_request(), agent_id, RebalanceRequest)
    agent, instance_id = _agent_and_instance(client_id, agent, body.instance_id)
    now = utcnow()
    detected = _signal_time(body.detected_at, now)
    result = sentinel.handle(Signal(SignalKind.REBALANCE, instance_id, detected, SignalSource.AGENT,
                                    region=agent.region), now, on_behalf_of=agent)
    return ok({"success": True, **sentinel.answer(result)})


@bp.route("/api/agents/{agent_id}/create-emergency-replica", methods=["POST"], response="EmergencyReplicaReply")
def create_emergency_replica(agent_id):
    """Legacy: a replica for an interruption signal (auto-switch agents only; 403 otherwise).

    Never a second one (legacy defect): an existing standby is returned (200). A termination notice
    also goes through the sentinel, so the workflow promotes this replica. A rebalance recommendation
    (which the v4 agent reports here first, then to rebalance-recommendation) is the sentinel's signal
    too: it pre-warms a standby only when the pool is risky, as for EventBridge's copy of the signal.
    """
    client_id, agent, body = agent_request(_request(), agent_id, EmergencyReplicaRequest)
    agent, instance_id = _agent_and_instance(client_id, agent, body.instance_id)
    if not agent.config.get("auto_switch_enabled"):
        raise ForbiddenError("auto-switch is off for this agent", code="auto_switch_disabled")
    now = utcnow()
    termination = body.signal_type == "termination-notice"
    if termination and (handled := _failover_of(client_id, instance_id, now)) is not None:
        # EventBridge (or this route, earlier) delivered the warning first: the workflow already replaces this
        # instance, so a standby launched now would only be a second instance to pay for. The sentinel is given the
        # signal all the same: a first handling that died after its claim is finished there, each part once (the
        # workflow's start, its audit event, the agent's count), as for any redelivery.
        sentinel.handle(_termination_signal(agent, instance_id, body, now), now, on_behalf_of=agent)
        handled = interruptions.get(client_id, handled.interruption_id) or handled
        return ok({"success": True, "created": False, "replica_id": handled.replica_id, "instance_id": None,
                   "status": handled.status, "pool": _pool(None), "hourly_cost": None, "urgency": "critical",
                   "workflow": {"action": "duplicate", "interruption_id": handled.interruption_id,
                                "status": handled.status}})
    if instance_id != agent.instance_id:
        # The agent left that instance (a switch that kept it: auto-terminate off, its v4 agent runs on): a
        # standby would replace nothing, and the sentinel ignores the signal too.
        return ok({"success": False, "created": False, "replica_id": None, "instance_id": None, "status": None,
                   "pool": _pool(None), "hourly_cost": None, "urgency": "critical" if termination else "high",
                   "workflow": None, "error": "instance is no longer the agent's primary"})
    if termination:
        replica, created = _standby_for(agent, now, termination)
        workflow = sentinel.handle(_termination_signal(agent, instance_id, body, now), now, on_behalf_of=agent)
        answer = _replica_answer(replica, created, "critical", sentinel.answer(workflow))
    else:
        answer, created = _rebalance_standby(agent, instance_id, now)
    return ok(answer, status=201 if created else 200)


def _termination_signal(agent, instance_id: str, body, now) -> Signal:
    return Signal(SignalKind.TERMINATION, instance_id, now, SignalSource.AGENT, region=agent.region,
                  deadline=_deadline(body.termination_time, now, now))


def _pool(replica) -> dict:
    """The replica's pool as the legacy answer names it (``id``, ``name``, ``az``); nulls without a replica."""
    pool_id = replica.pool_id if replica is not None else None
    return {"id": pool_id, "name": pool_id, "az": replica.az if replica is not None else None}


def _replica_answer(replica, created: bool, urgency: str, workflow) -> dict:
    return {"success": True, "created": created, "replica_id": replica.replica_id,
            "instance_id": replica.instance_id, "status": replica.status.value, "pool": _pool(replica),
            "hourly_cost": None if replica.hourly_cost is None else float(replica.hourly_cost),
            "urgency": urgency, "workflow": workflow}


def _rebalance_standby(agent, instance_id: str, now) -> tuple[dict, bool]:
    """A rebalance recommendation reported here goes through the sentinel, like EventBridge's copy and the
    agent's own rebalance-recommendation call that follows: one claim, one interruption event, and a
    standby pre-warmed only when the pool's risk calls for one (the legacy route launched one for every
    recommendation). The answer is the standby the agent then has (201 when this call pre-warmed it, 200
    for one that already existed), else ``success`` false with the sentinel's reason: (answer, created)."""
    handled = sentinel.answer(sentinel.handle(Signal(SignalKind.REBALANCE, instance_id, now, SignalSource.AGENT,
                                                     region=agent.region), now, on_behalf_of=agent))
    current = agents.get(agent.client_id, agent.agent_id)
    holder = current.current_replica_id if current is not None else None
    replica = replica_repo.get(agent.agent_id, holder) if holder else None
    if replica is None or not replica.active:
        return {"success": False, "created": False, "replica_id": None, "instance_id": None, "status": None,
                "pool": _pool(None), "hourly_cost": None, "urgency": "high", "workflow": handled,
                "error": f"no standby: {handled.get('reason') or handled['action']}"}, False
    # Pre-warmed by this call: the first report of the signal, or a retry that finished a throttled first one.
    created = holder != agent.current_replica_id
    return _replica_answer(replica, created, "high", handled), created


def _standby_for(agent, now, termination: bool):
    """(replica, created): a new standby, or the one already holding the agent's slot. The slot can be
    freed between our refused claim and the read of its holder (a standby closed meanwhile): then the
    claim is tried once more; a slot that keeps changing hands is a 409, never a 500."""
    for _ in range(2):
        try:
            return replicas.start_standby(
                agent, now, created_by="agent",
                replica_type=ReplicaType.TERMINATION if termination else ReplicaType.REBALANCE,
                expires_at=None if termination else now + timedelta(seconds=get_settings().prewarm_ttl_s)), True
        except SlotTakenError as exc:
            holder = replica_repo.get(agent.agent_id, exc.current_replica_id) if exc.current_replica_id else None
            if holder is not None and holder.created_by == "agent" and holder.status is ReplicaStatus.LAUNCHING:
                # this route's standby whose create died before its launch or its observation (its repeat, or the
                # agent's next signal): finished now, each part once (event, decision, launch, observation)
                return replicas.finish_launch(agent, holder, now), False
            if holder is not None:
                return holder, False
    raise ConflictError("the agent's standby slot changed while this request ran; retry", code="standby_slot_busy")


def _failover_of(client_id: str, instance_id: str, now):
    """The failover the sentinel already started for this instance's loss (its live claim), if any."""
    held = interruptions.held_claim(signal_key(instance_id, signal_group(SignalKind.TERMINATION)), now,
                                    get_settings().signal_window_s)
    return None if held is None else interruptions.get(client_id, held)


@bp.route("/api/agents/{agent_id}/interruptions", methods=["GET"], response="InterruptionsReply")
def agent_interruptions(agent_id):
    """An agent's interruption events with their timings, newest first."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id, allow_deleted=True)
    limit, next_token = page_params(_request())
    page = interruptions.page_for_agent(agent.agent_id, limit, next_token)
    return ok({"interruptions": [interruption_view(r) for r in page.items], "next_token": page.next_token})


@bp.route("/api/client/interruptions", methods=["GET"], response="ClientInterruptionsReply")
def client_interruptions():
    """The caller's interruption events, newest first (paginated)."""
    client, _ = client_request(_request())
    limit, next_token = page_params(_request())
    page = interruptions.page_for_client(client.client_id, limit, next_token)
    return ok({"interruptions": [interruption_view(r) for r in page.items], "next_token": page.next_token,
               "generated_at": iso(utcnow())})
