"""Every minute: exactly one ready standby per manual-replica agent; pre-warmed standbys expire.

The plan comes from ``components.replica_coordinator.plan_standbys`` over the tables and what EC2
says about each standby. Creation claims the agent's standby slot in a transaction and every status
change is compare-and-set, so two overlapping runs (or a run and a failover) never duplicate a
standby: the loser's write fails its condition and it moves on. Pools in capacity back-off
(``repositories.observations.backoff``) are skipped: a standby still to be launched in one is given up
and its replacement placed elsewhere; every spot launch's outcome is recorded as an observation, and so
is a spot standby EC2 took away without the sentinel hearing of it (``aws_stopped``), so a pool that
keeps losing standbys backs off (``DEFAULT_BACKOFF``: longer with every loss of the day). A standby whose agent's
account is no longer bound to the client (a forced unbinding could not retire it) is abandoned once
(``replicas.abandon``: closed, the client told to end its instance itself) rather than retried every run for ever:
there is no role to act there with, now or later; no standby is created there either. An agent whose reconcile fails
otherwise (its client's account refusing the product's role, a throttle) is logged and counted (``failed``): the run
goes on to the next agent, and the next run tries it again.

The coordinator owns manual-replica agents (the decision cycle only sees auto-switch ones, and the
modes exclude each other), so it also brings them back from on-demand: a primary on on-demand with a
READY spot standby is handed over to it through the failover workflow (a planned signal through the
sentinel: claimed like a manual promotion, so two runs start one execution) when the decision engine's
expected-cost arithmetic says the standby's pool repays leaving on-demand
(``components.replica_coordinator.plan_return``). The move is recorded as a decision with its reason.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from components.capacity import CapacityObservation, ObservationKind
from components.command_tracker import SWITCH_TYPES
from components.replica_coordinator import (
    ReplicaStatus,
    ReplicaType,
    StandbyView,
    StepKind,
    plan_return,
    plan_standbys,
)
from components.replica_coordinator.planning import GONE_STATES
from components.sentinel import Signal, SignalKind, SignalSource, ended_by_client, signal_group, signal_key

from chalicelib import bootstrap, decisions, replicas, sentinel, tenancy
from chalicelib.aws import ec2
from chalicelib.errors import ConflictError
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import agents, clients, interruptions, observations
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.replicas import ReplicaRecord
from chalicelib.settings import get_settings



def reconcile_agent(agent: AgentRecord, now: datetime) -> Counter:
    """Apply the plan for one agent; returns what was done by step kind."""
    done: Counter = Counter()
    active = replica_repo.open_for_agent(agent.client_id, agent.agent_id, fresh=True)
    # A suspended client's agent keeps the standbys it has (watched: failed, expired) but gets no new one and no
    # planned return: the service no longer optimises for that client (its running instances still fail over).
    served = agent.manual_replica and agent.config.get("enabled", True) and not agent.client_suspended
    # read once for the account check and the describe; an agent with nothing to watch or create needs neither
    client = clients.get(agent.client_id) if active or served else None
    lost = tenancy.lost_account(client, agent)  # its account unbound: nothing can be done there, now or later
    described = ec2.describe(agent.region, [r.instance_id for r in active if r.instance_id],
                             account=tenancy.for_agent(agent, client=client)) if active and not lost else {}
    views = [r.view(described[r.instance_id].state if r.instance_id in described else None) for r in active]
    by_id = {r.replica_id: r for r in active}
    if agent.current_replica_id and agent.current_replica_id not in by_id:
        held = replica_repo.get(agent.agent_id, agent.current_replica_id)
        if held is not None and not held.active:  # closed by a run that died before it freed the slot
            account = tenancy.lost_account(client or clients.get(agent.client_id), agent) \
                if replicas.abandoned(held) else None
            if account:  # an abandon that died after its status write: its notification and event too, once
                replicas.abandon(held, account, now)
            else:
                _finish_close(agent, client, held, now)
            done["slot_freed"] += 1
    unlaunched = [r.pool_id for r in active if not r.instance_id and r.lifecycle == "spot" and r.pool_id]
    blocked = observations.backoff(unlaunched, now, viewer=agent.client_id) if unlaunched and not lost else {}
    if lost:
        done["account_lost"] += 1  # its standbys abandoned (below, once), none created: the run counts it
    for step in plan_standbys(views, keep_one=served, now=now, blocked_pools=blocked, lost_account=lost):
        replica = by_id.get(step.replica_id)
        if step.kind is StepKind.LAUNCH and agent.client_suspended:
            continue  # left unlaunched: given up (failed) after the launch timeout
        try:
            if step.kind is StepKind.ABANDON:
                _abandon(replica, lost, now, step.reason)
            elif step.kind is StepKind.LAUNCH:
                # what a run that died after the slot's claim did not record, read first: this repeats every run
                # while the launch fails, and the records are nearly always there (no failed write each time)
                replicas.record_creation(agent, replica, read_first=True)
                by_id[replica.replica_id] = replicas.launch(agent, replica, now)
            elif step.kind is StepKind.MARK_READY:
                replicas.observe_launched(replica)  # a launch that died before its observation: written now
                by_id[replica.replica_id] = replica_repo.transition(replica, ReplicaStatus.READY, now)
            elif step.kind is StepKind.MARK_FAILED:
                seen = described.get(replica.instance_id) if replica.instance_id else None
                view = next(v for v in views if v.replica_id == replica.replica_id)
                replicas.retire(replica, ReplicaStatus.FAILED, now, step.reason,
                                observe=lambda closed, view=view, seen=seen: _observe_lost(
                                    closed, view, seen.state_reason if seen else None))
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
            # no pool for a standby (all refused or in back-off) is capacity, not a fault: it holds for as long as
            # the shortage, so every run would repeat a warning; the run's result still counts it as skipped
            log = logger.info if getattr(exc, "code", None) == "no_pool" else logger.warning
            log("coordinator step skipped", extra={"agent_id": agent.agent_id, "step": step.kind.value,
                                                   "error": str(exc)})
            done["skipped"] += 1
    if served and not lost:
        try:
            done.update(return_to_spot(agent, views, by_id, now))
        except Exception as exc:  # noqa: BLE001 - one agent's failed hand-over start never stops the others
            logger.exception("planned return not started", extra={"agent_id": agent.agent_id, "error": str(exc)})
            done["return_errors"] += 1
    return done


def _finish_close(agent: AgentRecord, client, held: ReplicaRecord, now: datetime) -> None:
    """A close that died before its end (its replica closed, still holding the agent's slot: ``replicas.retire``
    releases it last): finished, each part once — the instance row closed, the audit event, a lost spot standby's
    ``aws_stopped`` observation (EC2 asked once more for its state), the slot. A promotion's replica is the
    failover's: only its slot and rows (``finish_closing``)."""
    if held.status is ReplicaStatus.PROMOTED:
        replica_repo.finish_closing(held, now)
        return
    observe = None
    if held.status is ReplicaStatus.FAILED and held.instance_id and held.lifecycle == "spot" and held.region:
        try:
            seen = ec2.describe(held.region, [held.instance_id],
                                account=tenancy.for_agent(agent, client=client)).get(held.instance_id)
        except ec2.Ec2Error as exc:
            logger.warning("closed standby's state unknown: no observation", extra={
                "agent_id": agent.agent_id, "replica_id": held.replica_id, "error": str(exc)})
        else:
            view = held.view(seen.state if seen else None)
            observe = lambda closed: _observe_lost(closed, view, seen.state_reason if seen else None)  # noqa: E731
    replicas.retire(held, held.status, now, held.error_message or "", observe=observe)


def _abandon(replica: ReplicaRecord, account_id: str, now: datetime, reason: str) -> None:
    """Close a standby in an account no longer bound to its client, once: nothing there is reachable (no role),
    so every later run would fail the same way for ever. One with an instance is abandoned as its DELETE would
    (``replicas.abandon``: ``failed``, a notification and an event telling the client to terminate instance X in
    account Y itself, each written once); one never launched is failed (no instance to end, no EC2 call)."""
    if replica.instance_id:
        replicas.abandon(replica, account_id, now)
    else:
        replicas.retire(replica, ReplicaStatus.FAILED, now, f"{reason}: never launched")


def _observe_lost(replica: ReplicaRecord, view: StandbyView, state_reason: str | None) -> None:
    """A launched spot standby whose instance EC2 no longer runs, and that nobody retired (its row was
    still active): EC2 took it (``aws_stopped``). The time is the row's set-once ``terminated_at``, so a
    retried run writes the same key; a warning the sentinel saw already failed the row, so it is never
    counted twice.

    A standby the product did not launch (``own_launch`` unset: an instance the client's agent launched and
    recorded, in a pool the client named) is the client's word, and the client can end it itself: its loss is
    that client's evidence only (``observations.record(reported=True)``), never the fleet's back-off or risk; so
    is one EC2 gives a ``Client.*`` ``state_reason`` for (its owner terminated it: in an account the client
    holds, or its OS shut it down)."""
    if replica.lifecycle != "spot" or not replica.pool_id or not view.instance_id:
        return
    if view.ec2_state is not None and view.ec2_state not in GONE_STATES:
        return
    observations.record(CapacityObservation(replica.pool_id, ObservationKind.AWS_STOPPED,
                                            (replica.terminated_at or replica.updated_at).timestamp(),
                                            source="replica-coordinator"),
                        event_id=f"standby-lost:{replica.agent_id}:{replica.replica_id}",
                        client_id=replica.client_id, agent_id=replica.agent_id, instance_id=replica.instance_id,
                        reported=not replica.own_launch or ended_by_client(state_reason))


def _busy(agent: AgentRecord) -> str | None:
    """An interruption event of the agent whose workflow may still be running (failover or hand-over), or a switch
    command of its primary still open (queued or running: a legacy agent runs a switch it was handed to its end,
    whatever the service does meanwhile, so a hand-over beside it would move the agent twice and terminate the host
    its switch runs on)."""
    event = interruptions.open_for_agent(agent.agent_id)
    if event is not None:
        return f"{event.signal_type} {event.interruption_id} is {event.status}"
    if agent.active_commands != 0:
        for cmd in bootstrap.command_store().active_for_agent(agent.agent_id, 50):
            if cmd.command_type in SWITCH_TYPES and cmd.instance_id == agent.instance_id:
                return f"switch command {cmd.command_id} of {agent.instance_id} is {cmd.status.value}"
    return None


def return_to_spot(agent: AgentRecord, views: list[StandbyView], by_id: dict[str, ReplicaRecord],
                   now: datetime) -> Counter:
    """Hand an on-demand primary over to its ready spot standby when the engine says it repays."""
    done: Counter = Counter()
    fresh = agents.get(agent.client_id, agent.agent_id)  # the steps above may have changed the slot
    if fresh is None or fresh.current_mode != "ondemand" or not fresh.instance_id or not fresh.current_replica_id:
        return done  # on spot already, or a mode the agent never reported: nothing to return from
    seen = next((v for v in views if v.replica_id == fresh.current_replica_id), None)
    replica = by_id.get(fresh.current_replica_id)
    if seen is None or replica is None or replica.status is not ReplicaStatus.READY:
        return done
    view = replica.view(seen.ec2_state)  # its status after this run's steps, EC2's state as described
    try:
        evaluation = decisions.evaluate(fresh, now)
    except decisions.NoMarketDataError:
        return done
    unfinished = _unfinished_return(fresh, replica, now)
    if unfinished is not None:
        return _resume_return(fresh, view, evaluation, unfinished, now)
    plan = plan_return(view, evaluation.decision, on_demand=True, busy=_busy(fresh))
    if not plan.go:
        logger.info("staying on on-demand", extra={"agent_id": agent.agent_id, "reason": plan.reason})
        done["ondemand_stays"] += 1
        if plan.replace_in and not observations.backoff([replica.pool_id], now, viewer=fresh.client_id):
            done.update(_replace_standby(fresh, replica, plan, now))  # a back-off passes: that one waits
        return done
    result = sentinel.handle(Signal(kind=SignalKind.PLANNED, instance_id=fresh.instance_id, detected_at=now,
                                    source=SignalSource.COORDINATOR, region=fresh.region), now,
                             replica_id=view.replica_id, on_behalf_of=fresh)
    if result.get("action") != "failover_started":
        logger.info("planned return not started", extra={"agent_id": agent.agent_id, "result": result})
        done["returns_skipped"] += 1
        return done
    _record_return(fresh, view, evaluation, plan, result["interruption_id"], now)
    done["returns_started"] += 1
    return done


def _record_return(agent: AgentRecord, view: StandbyView, evaluation, plan, interruption_id: str,
                   detected_at: datetime) -> None:
    """The return's ``to_spot`` decision, keyed on its event and the event's detection time (the run's time that
    started it), once: a run that resumes a return its predecessor died in writes it if it is missing."""
    d = evaluation.decision
    target = plan.pool_id or view.pool_id
    decisions.record_move(agent, move_id=interruption_id, at=detected_at, source="replica-coordinator",
                          action=d.action.value, target=target, standby=None, reason=plan.reason,
                          risk=next((o.risk for o in evaluation.options if o.pool_id == target), None),
                          expected_cost=d.expected_cost, once=True,
                          inputs={"ondemand_price": evaluation.ondemand_price, "replica_id": view.replica_id,
                                  "interruption_id": interruption_id,
                                  **decisions.recorded_pools(evaluation,
                                                             get_settings().decision_record_max_pools),
                                  "engine_reason": d.reason})


def _unfinished_return(agent: AgentRecord, standby: ReplicaRecord, now: datetime):
    """This coordinator's planned return to ``standby`` that a run died in (the Lambda ended between its writes):
    its event still ``detected`` (no execution started: the cleanup job would abandon it, the client told a
    hand-over was never handled) or its ``to_spot`` decision missing, while its signal's claim is still its own (a
    redelivery of the signal finishes it: ``sentinel._duplicate``). None otherwise: the usual case reads the claim
    and the decision only while a return of this standby is open."""
    for event in interruptions.for_agent(agent.agent_id, limit=5):
        if (event.status not in interruptions.OPEN_STATUSES or event.signal_type != SignalKind.PLANNED.value
                or event.source != SignalSource.COORDINATOR.value or event.replica_id != standby.replica_id
                or event.instance_id != agent.instance_id):
            continue
        held = interruptions.held_claim(signal_key(event.instance_id, signal_group(SignalKind.PLANNED)), now,
                                        get_settings().signal_window_s)
        if held == event.interruption_id and (event.status == "detected" or not decisions.move_recorded(
                agent.agent_id, event.interruption_id, event.detected_at)):
            return event
    return None


def _resume_return(agent: AgentRecord, view: StandbyView, evaluation, event, now: datetime) -> Counter:
    """Finish a planned return a run died in: the same signal again (a duplicate of the event's claim: the sentinel
    starts the execution if it was not, under the event's name, and writes the start's audit event once), then the
    return's decision, once. Before, the next run found the event open (``_busy``) and stayed: an execution never
    started (the event abandoned 15 min later, the client told) or the move never recorded."""
    done: Counter = Counter()
    result = sentinel.handle(Signal(kind=SignalKind.PLANNED, instance_id=event.instance_id,
                                    detected_at=event.detected_at, source=SignalSource.COORDINATOR,
                                    region=agent.region), now, replica_id=event.replica_id, on_behalf_of=agent)
    if result.get("interruption_id") != event.interruption_id:
        logger.info("planned return not resumed", extra={"agent_id": agent.agent_id, "result": result})
        done["returns_skipped"] += 1
        return done
    plan = plan_return(view, evaluation.decision, on_demand=True)
    _record_return(agent, view, evaluation, plan, event.interruption_id, event.detected_at)
    done["returns_resumed"] += 1
    return done


def _replace_standby(agent: AgentRecord, standby: ReplicaRecord, plan, now: datetime) -> Counter:
    """The ready standby sits in a pool the primary cannot return to while ``plan.replace_in`` can take
    it: retire it and launch the next one there (the next run returns once it is ready). Compare-and-set
    on the standby and the slot claim make a concurrent run's attempt a no-op."""
    done: Counter = Counter()
    why = f"re-placed from {standby.pool_id}: {plan.reason}"
    try:
        replicas.retire(standby, ReplicaStatus.TERMINATED, now, why)
        current = agents.get(agent.client_id, agent.agent_id)
        if current is None or current.current_replica_id:
            return done
        replicas.start_standby(current, now, replica_type=ReplicaType.MANUAL, created_by="replica-coordinator",
                               pool_id=plan.replace_in, why=f"the engine would return to spot there; {why}")
    except (ConflictError, ec2.Ec2Error) as exc:
        logger.warning("standby not re-placed", extra={"agent_id": agent.agent_id, "error": str(exc)})
        return done
    done["standbys_replaced"] += 1
    return done


@logged_job("replica-coordinator")
def run(now: datetime) -> dict[str, int]:
    """One coordinator cycle over every agent that wants or holds a standby."""
    totals: Counter = Counter()
    for agent in agents.agents_with_standbys():
        totals["agents"] += 1
        try:
            totals.update(reconcile_agent(agent, now))
        except tenancy.AccountNotBound as exc:  # this client has no account to act in: the others still run
            logger.warning("agent skipped", extra={"agent_id": agent.agent_id, "error": str(exc)})
            totals["skipped_no_account"] += 1
        except Exception as exc:  # noqa: BLE001 - one agent (its client's account refusing the role...) never stops the others
            logger.exception("agent not reconciled", extra={"agent_id": agent.agent_id, "error": str(exc)})
            totals["failed"] += 1
    result = dict(totals)
    logger.info("replica coordinator cycle", extra=result)
    for name, count in result.items():
        metrics.add_metric(name=f"ReplicaCoordinator.{name}", unit=MetricUnit.Count, value=count)
    publish_metrics()
    return result
