"""The command queue as the handlers use it: the component's use cases over the DynamoDB store,
plus the one reaction every path shares — a command that runs out of attempts notifies its client.

Delivery (heartbeat, pending-commands), results (executed) and the health monitor's sweep can each be
the one that moves a command to ``timed_out``; all three go through here, so the client is told once,
whichever path it was.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta

from components.aws_regions import is_zone_of_region
from components.capacity import CapacityObservation, ObservationKind, refusal_kind
from components.command_tracker import (
    SWITCH_TYPES,
    Command,
    CommandConflictError,
    CommandPriority,
    CommandStatus,
    CommandType,
    ResultOutcome,
    cancel,
    deliver,
    extend_lease,
    new_command,
    report_result,
    sweep_expired,
    transition,
)
from components.errors import InvalidPoolIdError
from components.pool_id import parse_pool_id

from chalicelib import bootstrap, quotas
from chalicelib.clock import MAX_REPORT_AGE
from chalicelib.errors import ConflictError, InvalidInputError
from chalicelib.repositories import activity, agents, interruptions, observations, switches
from chalicelib.repositories.commands import AgentDisabled, ForceSwitchRaced
from chalicelib.settings import get_settings

# A client's force-switch (the console's form), as its commands record it.
FORCE_SWITCH_TRIGGER = "manual_ui"

# Commands whose failure can be EC2 refusing a spot launch in the command's target pool.
LAUNCH_TYPES = frozenset({CommandType.SWITCH, CommandType.EMERGENCY_SWITCH, CommandType.CREATE_REPLICA})


class _TimeoutWatch:
    """The command store, noting each command a use case moves to ``timed_out``; the client's notification of a
    timeout is written in the command's own transaction, at ``now`` (the delivery's, the result's or the sweep's
    time): a Lambda that died between the two writes lost it, since nothing finds the command leased again."""

    def __init__(self, store, now: datetime) -> None:
        self._store, self._now, self.timed_out, self.queue_seen_empty = store, now, [], False

    def __getattr__(self, name):
        return getattr(self._store, name)

    def active_for_agent(self, agent_id: str, limit: int) -> list[Command]:
        found = self._store.active_for_agent(agent_id, limit)
        self.queue_seen_empty = not found
        return found

    def replace(self, before: Command, after: Command) -> None:
        if after.status is CommandStatus.TIMED_OUT:
            self._store.replace(before, after, written_with=(activity.notification_row(
                after.client_id, "command_timed_out", _timed_out_message(after), self._now, severity="warning",
                agent_id=after.agent_id),))
            self.timed_out.append(after)
        else:
            self._store.replace(before, after)


def _timed_out_message(cmd: Command) -> str:
    return f"command {cmd.command_id} ({cmd.command_type.value}) got no result after {cmd.attempts} attempts"


# A decision's switch not delivered this long after it was queued was decided for an agent that went silent
# (decisions are made for live agents only, which poll every 15 s / heartbeat every 120 s; an agent is offline after
# 15 minutes): on prices and risks of then. It is cancelled at its next delivery and the next cycle decides again.
STALE_DECISION_AGE = timedelta(minutes=15)
DECISION_ENGINE = "decision-engine"  # ``created_by`` of the decision cycle's commands (chalicelib/decisions.py)


class _DeliveryWatch(_TimeoutWatch):
    """A delivery's view of the store: also drops (and cancels) a decision's switch gone stale while its agent was
    away (a network outage, a stopped host): a legacy agent runs whatever it is given, so a switch decided hours ago
    on the prices of then would run on its return. A client's own (force-switch) and a retried one are delivered."""

    def __init__(self, store, now: datetime) -> None:
        super().__init__(store, now)

    def active_for_agent(self, agent_id: str, limit: int) -> list[Command]:
        kept = []
        for cmd in super().active_for_agent(agent_id, limit):
            if cmd.status is CommandStatus.PENDING and cmd.attempts == 0 and cmd.created_by == DECISION_ENGINE \
                    and self._now - cmd.created_at > STALE_DECISION_AGE:
                try:
                    self.replace(cmd, cancel(cmd, self._now, f"stale: decided at {cmd.created_at.isoformat()} and "
                                                             "never delivered (the agent was away); decided again"))
                except CommandConflictError:
                    pass  # another poller took it first: its delivery stands
                else:
                    continue
            kept.append(cmd)
        if any(_held_in_hand_over(cmd) for cmd in kept) and interruptions.open_for_agent(agent_id) is not None:
            kept = [cmd for cmd in kept if not _held_in_hand_over(cmd)]
        return kept


def _held_in_hand_over(cmd: Command) -> bool:
    """A switch not delivered yet, held while a failover or hand-over of its agent may still run (an open interruption
    event): a legacy agent runs a switch it is handed to its end, whatever the workflow does meanwhile, so the two
    would move the agent twice, the workflow retiring the host the switch runs on. Once the workflow closed, the
    switch of the instance it replaced is superseded at the next delivery (``deliver``), and one of the instance the
    agent is still on is delivered. A decision's switch held past ``STALE_DECISION_AGE`` is decided again."""
    return cmd.status is CommandStatus.PENDING and cmd.command_type in SWITCH_TYPES


def deliver_to(agent, now: datetime, instance_id: str | None = None) -> list[Command]:
    """Lease the agent's due commands (highest priority first) to a caller on ``instance_id`` (the
    agent's current instance when the caller does not say), with leases sized for this agent's kind.

    An agent row that counts no active command (``active_commands`` 0) has none: the queue is not read. A
    row from before the counter starts counting once its queue is read empty. An agent that runs no commands
    (spot_agent.py) is delivered none. A decision's switch gone stale undelivered is cancelled
    (``STALE_DECISION_AGE``)."""
    if agent.active_commands == 0 or not agent.runs_commands:
        return []
    watch = _DeliveryWatch(bootstrap.command_store(), now)
    delivered = deliver(watch, agent.agent_id, now=now, policy=bootstrap.lease_policy(agent.agent_version),
                        instance_id=instance_id or agent.instance_id, current_instance_id=agent.instance_id)
    if agent.active_commands is None and watch.queue_seen_empty:
        agents.start_counting_commands(agent)
    return delivered


def record_result(agent_id: str, command_id: str, *, success: bool, message: str | None,
                  now: datetime, error_code: str | None = None) -> ResultOutcome:
    """Accept an agent's result for a delivered command (idempotent; a late result is recorded).

    A failed launch command whose ``error_code`` (EC2's) says the target pool had no capacity is
    recorded as a capacity observation of that pool.
    """
    outcome = report_result(_TimeoutWatch(bootstrap.command_store(), now), agent_id, command_id, success=success,
                            message=message, now=now)
    if not success and refusal_kind(error_code):
        observe_refusal(outcome.command, error_code, now)
    if outcome.late:
        cmd = outcome.command
        activity.record_event("command_result_late",
                              f"command {command_id} ({cmd.command_type.value}) reported "
                              f"{'success' if success else 'failure'} after its lease ran out; recorded",
                              now, severity="warning", client_id=cmd.client_id, agent_id=agent_id,
                              metadata={"lease_expires_at": cmd.lease_expires_at.isoformat()
                                        if cmd.lease_expires_at else None, "attempts": cmd.attempts})
    return outcome


def v3_outcome(agent_id: str, command_id: str) -> tuple[bool, str | None]:
    """The outcome of a v3.2 ``mark-command-executed``, which names no outcome: v3.2 posts it after every command
    it took, done or not. It executes only switches (a command without a target mode it marks unexecuted), and
    posts the switch report of each switch it completes before this call, so the command succeeded exactly when
    its switch was reported: it is completed already (the report completes the open switch of its instance), or
    a switch from its instance was recorded since it was queued (a report that came after its lease ran out).
    Otherwise it failed: a launch refused, an instance that never ran, a command v3.2 cannot run."""
    cmd = bootstrap.command_store().get(agent_id, command_id)
    if cmd is None or cmd.status is CommandStatus.COMPLETED:
        return True, None  # unknown: 404 as before; completed: a replay
    if cmd.command_type in SWITCH_TYPES and cmd.instance_id and any(
            row.old_instance_id == cmd.instance_id for row in switches.recent_for_agent(agent_id, cmd.created_at, 0)):
        return True, "switch reported"
    if cmd.command_type not in SWITCH_TYPES or not cmd.target_mode:
        return False, "not executed: the v3.2 agent runs only switches (it marks any other command executed unrun)"
    return False, "no switch report: the v3.2 agent marks a switch executed whether or not it succeeded"


def observe_refusal(command: Command, error_code: str, now: datetime) -> bool:
    """LAUNCH_REFUSED for the pool a failed switch / create_replica command targeted. Keyed by the
    command and its (set-once) finish time, so a replayed result adds nothing."""
    if (command.command_type not in LAUNCH_TYPES or command.success is not False or not command.target_pool_id
            or (command.target_mode or "spot") != "spot"):
        return False
    at = command.finished_at or now
    return observations.record(
        CapacityObservation(command.target_pool_id, ObservationKind.LAUNCH_REFUSED, at.timestamp(),
                            code=error_code, source="agent"),
        event_id=f"command:{command.agent_id}:{command.command_id}", client_id=command.client_id,
        agent_id=command.agent_id, instance_id=command.instance_id, reported=True)


def extend(agent, command_id: str, now: datetime) -> Command:
    """Renew the lease of a command the agent is still working on."""
    return extend_lease(bootstrap.command_store(), agent.agent_id, command_id, now=now,
                        policy=bootstrap.lease_policy(agent.agent_version))


def complete_switches_of(agent_id: str, instance_id: str, *, message: str, now: datetime) -> list[Command]:
    """A switch report proves the switch of ``instance_id`` happened: every open switch command of the
    agent for that instance is completed (legacy agents name no command in their report), so none is
    retried and a late ``executed`` is a replay."""
    done = []
    for cmd in bootstrap.command_store().active_for_agent(agent_id, 50):
        if cmd.command_type in SWITCH_TYPES and cmd.instance_id == instance_id and cmd.attempts >= 1:
            done.append(record_result(agent_id, cmd.command_id, success=True, message=message, now=now).command)
    return done


# How many of an agent's newest commands a switch report refused at the daily bound reads for its ended command.
_ENDED_SWITCH_LOOKBACK = 5


def delivered_switch_of(agent_id: str, instance_id: str) -> bool:
    """Whether the agent was handed a switch command of ``instance_id`` that no switch from ``instance_id`` recorded
    since it was queued answers: a switch report of that instance then reports the service's own switch (what
    ``complete_switches_of`` completes). A command answers for one switch: a report that leaves it open (``success:
    false``) is its switch all the same, and a next report from that instance is not the service's (before security
    walk 22 each was recorded past the daily bound: a client's own delivered command bought any number).

    The command is an open one, or one delivered that ended without a result while the agent may still have been
    running it: its lease ran out and the sweep took it back (pending again), then it was cancelled (superseded once
    the replacement's agent registered, the agent disabled) or timed out. A legacy agent runs a switch to its end
    whatever the service does meanwhile (it holds no lease), and never sends a refused report again: the switch would
    go unrecorded (legacy audit 07d)."""
    store = bootstrap.command_store()

    def of_instance(cmd: Command) -> bool:
        return cmd.command_type in SWITCH_TYPES and cmd.instance_id == instance_id and cmd.attempts >= 1

    queued = [cmd.created_at for cmd in store.active_for_agent(agent_id, 50) if of_instance(cmd)]
    if not queued:
        queued = [cmd.created_at for cmd in store.history(agent_id, _ENDED_SWITCH_LOOKBACK, consistent=True)
                  if of_instance(cmd) and cmd.status in (CommandStatus.CANCELLED, CommandStatus.TIMED_OUT)][:1]
    if not queued:
        return False
    newest = max(queued)  # some command is unanswered exactly when the newest is
    # a switch recorded at t began no earlier than t - MAX_REPORT_AGE (its times are placed there)
    return not any(row.old_instance_id == instance_id and row.recorded_at >= newest
                   for row in switches.recent_for_agent(agent_id, newest - MAX_REPORT_AGE, 0))


def _replace_each(agent_id: str, picked, ended, told=None) -> list[Command]:
    """Each active command of the agent that ``picked`` selects, replaced by ``ended(command)``; one a concurrent
    write changed first (delivered, its result, the sweep) is left as that write made it. ``told(after)``: the
    client's notification of that one replacement, written in its transaction. Returns the replaced."""
    store, done = bootstrap.command_store(), []
    for cmd in store.active_for_agent(agent_id, 50):
        if not picked(cmd):
            continue
        after = ended(cmd)
        try:
            store.replace(cmd, after, written_with=(told(after),) if told else ())
        except CommandConflictError:
            continue
        done.append(after)
    return done


def cancel_pending(agent, now: datetime, reason: str, *, repeat: bool = False) -> list[Command]:
    """Cancel the agent's commands still waiting for delivery (its disabling: a disabled agent is delivered
    nothing, so they would stay pending, counted against its queue, for ever), each with ``reason``, and tell
    the client. A command already delivered runs on (it cannot be pulled back; its result is still recorded).

    ``now`` is the change's own time (the same on a repeat of its request): the client is told of every command
    cancelled then, once. ``repeat``: the caller found its change already made (the same request again, its first run
    maybe dead between the cancellations and the notification): the commands cancelled then are read back and told
    (nothing twice); a first run tells what it cancelled."""
    done = []
    if agent.active_commands != 0:
        done = _replace_each(agent.agent_id, lambda cmd: cmd.status is CommandStatus.PENDING,
                             lambda cmd: cancel(cmd, now, reason))
    told = _cancelled_at(agent.agent_id, now, reason) if repeat else done
    if told:
        activity.notify(agent.client_id, "commands_cancelled",
                        f"{len(told)} pending command(s) of {agent.logical_agent_id} cancelled: {reason}", now,
                        severity="warning", agent_id=agent.agent_id, once=f"commands_cancelled:{agent.agent_id}")
    return done


def _cancelled_at(agent_id: str, at: datetime, reason: str) -> list[Command]:
    """The agent's commands cancelled at ``at`` for ``reason`` (one change's): among its newest, read consistently.
    Pending commands are the newest (command ids start with their time); 50, as many as the active lookups read."""
    return [cmd for cmd in bootstrap.command_store().history(agent_id, 50, consistent=True)
            if cmd.status is CommandStatus.CANCELLED and cmd.finished_at == at and cmd.message == reason]


def abandon_on_restart(agent, instance_id: str, now: datetime) -> list[Command]:
    """A legacy agent registering again on the same instance is a new process (systemd restarted it, the host
    rebooted): whatever it was running died with the old process, which may already have launched a replacement.
    v4 and v3.2 run every command a poll returns, executing or not, so a switch of that instance still leased would
    run a second time, launching a second replacement. Such commands are timed out now (a late result is still
    recorded) and the client told in the same transaction (a registration that died between the two would lose the
    notice: its retry no longer finds the command executing); the product's agent resumes its own commands (it keeps
    them across restarts)."""
    if not agent.timings.reports_after_terminating:
        return []
    return _replace_each(
        agent.agent_id, lambda cmd: cmd.status is CommandStatus.EXECUTING and cmd.instance_id == instance_id,
        lambda cmd: transition(cmd, CommandStatus.TIMED_OUT, finished_at=now,
                               message="the agent restarted while it held this command; not delivered again (it may "
                                       "have launched an instance before it restarted)"),
        told=lambda cmd: activity.notification_row(
            cmd.client_id, "command_abandoned",
            f"command {cmd.command_id} ({cmd.command_type.value}) was running when the agent on {instance_id} "
            "restarted: it is not run again; check for an instance it may have launched",
            now, severity="warning", agent_id=cmd.agent_id))


def sweep(now: datetime) -> dict[str, int]:
    """Expire every lease past its deadline: retried, or timed out and notified."""
    store = bootstrap.command_store()
    watch = _TimeoutWatch(store, now)
    changed = sweep_expired(watch, list(store.expired_leases(now)), now=now)
    return {"requeued": len(changed) - len(watch.timed_out), "timed_out": len(watch.timed_out)}


def new_command_id(now: datetime) -> str:
    """Command ids start with their creation time, so an agent's commands sort by age."""
    return f"cmd-{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


def queue_client_switch(agent, *, target_mode: str, target_pool_id: str | None, now: datetime,
                        trigger: str = FORCE_SWITCH_TRIGGER,
                        priority: CommandPriority = CommandPriority.MANUAL_OVERRIDE) -> tuple[Command, bool]:
    """A client's switch of its agent's current instance (its force-switch; a legacy client's
    issue-switch-command, ``trigger`` ``ml_recommendation``): (the command, whether it was already queued).

    The open one of that trigger to the same target when there is one (``open_client_switch``); else a new one,
    written on the condition that no other client switch of the agent was queued since the agent row was read (its
    ``last_force_switch_id``, read before the queue): two identical requests racing queue one, the loser reads the
    queue again and answers the winner's command."""
    instance_id = agent.instance_id
    for attempt in range(3):
        if attempt:
            agent = agents.require(agent.client_id, agent.agent_id)
            if agent.instance_id != instance_id:
                raise ConflictError(f"agent {agent.logical_agent_id} moved to {agent.instance_id} meanwhile: only "
                                    "its current primary can be switched", field="instance_id",
                                    code="not_current_primary")
        command = open_client_switch(agent, target_mode=target_mode, target_pool_id=target_pool_id, trigger=trigger)
        if command is not None:
            return _raised_to(command, priority), True
        command = switch_command(agent, target_mode=target_mode, target_pool_id=target_pool_id,
                                 priority=priority, trigger=trigger, created_by="client", now=now)
        within_daily_switches(agent, now)
        try:
            bootstrap.command_store().add(command, max_active=get_settings().quota_max_queued_commands,
                                          force_switch_after=agent.last_force_switch_id)
        except ForceSwitchRaced:
            continue
        return command, False
    raise ConflictError("switches of this agent raced each other, retry")


def within_daily_switches(agent, now: datetime) -> None:
    """A client's new switch is refused (429 ``switch_limit_exceeded``, nothing queued) once the agent recorded its
    day's switches (``max_switches_per_agent_per_day``): the switch the service delivers is recorded past that bound
    (``switches.record``'s ``commanded``), so the bound of the rows a client's switches write is checked here,
    before the switch, not after it has happened (force-switch, issue-switch-command with a target or without:
    ``decisions.command_for``'s ``requested``)."""
    cap = int(quotas.limits(agent.client_id)["max_switches_per_agent_per_day"])
    if switches.today_count(agent.client_id, agent.agent_id, now) >= cap:
        raise switches.SwitchLimitExceeded(cap, now, field="agent_id")


def _raised_to(cmd: Command, priority: int) -> Command:
    """The queued switch a repeat found, at the repeat's priority when that is higher and the switch still waits
    (an urgent issue-switch-command for the same switch queued as normal: delivered first among the agent's
    pending commands, as the urgent request asked). One delivered meanwhile, or already as high, is as it is."""
    if priority <= cmd.priority or cmd.status is not CommandStatus.PENDING:
        return cmd
    raised = dataclasses.replace(cmd, priority=int(priority))
    try:
        bootstrap.command_store().replace(cmd, raised)
    except CommandConflictError:
        return bootstrap.command_store().get(cmd.agent_id, cmd.command_id) or cmd
    return raised


def open_client_switch(agent, *, target_mode: str, target_pool_id: str | None,
                       trigger: str = FORCE_SWITCH_TRIGGER) -> Command | None:
    """The client's switch (of ``trigger``) of the agent's current instance to the same target still waiting or
    running: a switch sent again (the console's retry of a request whose answer was lost, or whose Lambda died
    after the command's write) is that command, never a second switch of the instance (both would be delivered in
    one poll, and a legacy agent runs each). The queue is read only when the agent row counts active commands."""
    if agent.active_commands == 0:
        return None
    pool = None if target_mode == "ondemand" else target_pool_id
    for cmd in bootstrap.command_store().active_for_agent(agent.agent_id, 50):
        if (cmd.command_type in SWITCH_TYPES and cmd.created_by == "client" and cmd.trigger == trigger
                and cmd.instance_id == agent.instance_id and cmd.target_mode == target_mode
                and cmd.target_pool_id == pool):
            return cmd
    return None


def check_switch_target(agent, pool_id: str, *, field: str) -> None:
    """A pool a client names for its agent's switch: the agent launches whatever the command says, so only one
    of the agent's own instance types in its own region, within the client's type policy (409
    ``instance_type_not_allowed``; 400 otherwise; a legacy agent launches only the type it runs on:
    ``switch_types``). Nothing is written before."""
    try:
        instance_type, az = parse_pool_id(pool_id)
    except InvalidPoolIdError as exc:
        raise InvalidInputError(exc.message, field=field) from exc
    quotas.check_types(agent.client_id, [instance_type])
    if instance_type not in agent.switch_types or not is_zone_of_region(az, agent.region):
        raise InvalidInputError(f"{pool_id} is not a pool of the agent's instance types in {agent.region}",
                                field=field)


def switch_command(agent, *, target_mode: str, target_pool_id: str | None, priority: int, trigger: str,
                   created_by: str, now: datetime, command_id: str | None = None) -> Command:
    """A switch command for an agent's current instance (validated by the component, not stored).

    The old instance is terminated after the agent's wait only under auto-terminate (otherwise,
    as in the legacy server's fix, the wait is 0 and the agent keeps it). 409 ``agent_runs_no_commands`` for an agent that cannot
    run one (spot_agent.py, whose switch only sleeps and reports success): nothing is queued.
    """
    if not agent.runs_commands:
        raise ConflictError(f"agent {agent.logical_agent_id} runs spot_agent.py, which cannot switch an instance "
                            f"(it reports a switch it never makes): no switch is queued for it",
                            field="agent_id", code="agent_runs_no_commands")
    if not agent.config.get("enabled", True):
        raise AgentDisabled(agent.logical_agent_id)
    config = agent.config
    wait = int(config.get("terminate_wait_seconds", 0)) if config.get("auto_terminate_enabled") else 0
    return new_command(
        command_id=command_id or new_command_id(now), client_id=agent.client_id, agent_id=agent.agent_id,
        command_type=CommandType.SWITCH_TO_ONDEMAND if target_mode == "ondemand" else CommandType.SWITCH,
        priority=priority, now=now, target_mode=target_mode,
        target_pool_id=None if target_mode == "ondemand" else target_pool_id,
        instance_id=agent.instance_id, terminate_wait_seconds=wait, trigger=trigger, created_by=created_by,
        policy=bootstrap.lease_policy())
