"""The sentinel: one intake for interruption signals from EventBridge, the agent and the client.

Every source becomes a ``components.sentinel.Signal``; the instance is mapped to its agent through the
instances table (unmanaged instances are ignored); the (instance, signal group) claim makes one
workflow per signal within the window, whichever source came first; termination signals start the
failover state machine (execution name = interruption id, so a redelivery never starts a second);
rebalance recommendations pre-warm a standby when the pool's risk is high. The replica coordinator's
planned return from on-demand (``SignalKind.PLANNED``) comes through here too, so it is claimed like a
manual promotion and runs the same workflow. No sleeping anywhere: a burst for one pool is many
parallel invocations, each doing a few writes and one StartExecution.

EventBridge delivers through the stage's event queue (infra/event_intake.py): :func:`on_sqs_batch` is the
Lambda entry point. Delivery is at least once: the event id is the idempotency key (a redelivered event
returns the stored result, nothing runs twice), and a message whose handling raised is reported as a batch
item failure (only it comes back; after ``maxReceiveCount`` receives it waits in the dead-letter queue).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from components.replica_coordinator import ReplicaStatus, ReplicaType
from components.risk_model import DEFAULT_ADVISOR_BAND, advisor_prior
from components.capacity import CapacityObservation, ObservationKind
from components.errors import InvalidPoolIdError
from components.pool_id import make_pool_id
from components.sentinel import (
    MAX_AFFECTED_INSTANCES,
    STOP_STATES,
    Signal,
    SignalKind,
    SignalSource,
    capacity_kind,
    ended_by_client,
    health_event_parts,
    parse_signals,
    recorded_type,
    signal_group,
    signal_key,
    stopped_by_user,
)
from components.sentinel.errors import InvalidSignalError

from chalicelib import clock, quotas, replicas, tenancy
from chalicelib.api.views import iso
from chalicelib.aws import ec2, stepfunctions
from chalicelib.errors import ConflictError
from chalicelib.observability import MetricUnit, logger, metrics, publish_metrics
from chalicelib.repositories import activity, agents, interruptions, observations, pools
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.replicas import SlotTakenError
from chalicelib.settings import get_settings
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.interruptions import InterruptionTable


def on_sqs_batch(event: dict, context=None) -> dict:
    """Lambda entry point: a batch of EventBridge events from the stage's event queue.

    Each message body is one event (the rule's SQS target sends the whole event). Returns the partial batch
    response ``{"batchItemFailures": [{"itemIdentifier": <messageId>}]}`` (powertools BatchProcessor): a
    message that raised is retried alone, the others are deleted. The event source mapping must report
    batch item failures (``ReportBatchItemFailures``; chalice 1.34 cannot set it: infra/event_source.py
    does, in `make deploy`). When every message of the batch fails, BatchProcessor raises: the whole batch
    is retried, which is the same thing. No message is started with less than a quarter of the invocation's time
    left (``fanout.Budget``): those are batch item failures made visible again at once, not run into the timeout.
    """
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from chalicelib.jobs.fanout import Budget, OutOfTime

    budget, unstarted = Budget(context), set()

    def record_handler(record) -> dict:
        if budget.low():  # started now, it could run into the timeout, which returns the whole batch in 180 s
            unstarted.add(record.message_id)
            logger.warning("out of time: the event comes back at once", extra={
                "message_id": record.message_id, "remaining_ms": budget.remaining_ms()})
            raise OutOfTime("the invocation's time ran low before this event was started")
        try:
            queued = queued_event(record.body)
            result = on_event(queued, context)
        except Exception:  # reported as a batch item failure: logged here, where the cause is known
            logger.exception("event failed: it comes back from the queue (then the dead-letter queue)",
                             extra={"message_id": record.message_id,
                                    "receive_count": record.attributes.approximate_receive_count})
            raise
        _log_outcome(queued, result, record.message_id)
        return result

    try:
        response = process_partial_response(event=event, record_handler=record_handler,
                                            processor=BatchProcessor(event_type=EventType.SQS))
    except BatchProcessingError:
        _retry_soon(event, {record.get("messageId") for record in event.get("Records", [])}, unstarted)
        raise
    if requeued := _requeue(event, unstarted):
        response = {"batchItemFailures": [item for item in response.get("batchItemFailures", [])
                                          if item["itemIdentifier"] not in requeued]}
    _retry_soon(event, {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}, unstarted)
    return response


def _requeue(event: dict, unstarted: set[str]) -> set[str]:
    """Send the events the invocation had no time to start to the event queue again as new messages; returns the
    message ids sent (the batch answers them done: deleted). A message made visible again keeps its receive count,
    so in a long burst (a mass interruption, DynamoDB throttled) one that kept landing at the end of slow batches
    would reach the dead-letter queue never having been tried. A copy starts at one receive; a copy and its
    original both handled are one event (idempotent on the event id). Best effort: if SQS refuses, they stay batch
    item failures, visible again at once (:func:`_retry_soon`)."""
    from chalicelib.aws import sqs
    from chalicelib.settings import event_queue_name

    queue = event_queue_name(get_settings().stage)
    records = [record for record in event.get("Records", []) if record.get("messageId") in unstarted
               and _from_queue(record, queue) and record.get("body")]
    if not records:
        return set()
    try:
        sqs.send_all(queue, [record["body"] for record in records], backoff_s=0.05)
    except Exception as exc:  # noqa: BLE001 - they come back as batch item failures instead
        logger.warning("unstarted events not sent again: they come back with their receive count",
                       extra={"reason": str(exc), "messages": len(records)})
        return set()
    return {record["messageId"] for record in records}


def _from_queue(record: dict, queue: str) -> bool:
    """Did this record come from the queue named ``queue`` (its event source's ARN ends with the name)? Only such a
    record's message is made visible again, or replaced by a copy, on that queue."""
    return str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1] == queue


def _log_outcome(event: dict, result: dict, message_id: str) -> None:
    """One line per instance of an event the queue lets go (deleted after this answer) with what was done and why:
    an event ignored (unmanaged instance, no longer the agent's primary, another account, ...) or rejected is
    known to have been, with its reason, beyond the idempotency record's 24 hours."""
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    for outcome in result.get("results") or [result]:
        logger.info("event handled", extra={
            "message_id": message_id, "event_id": event.get("id"), "detail_type": event.get("detail-type"),
            "instance_id": outcome.get("instance_id") or detail.get("instance-id"), "action": outcome.get("action"),
            "reason": outcome.get("reason"), "interruption_id": outcome.get("interruption_id")})


# A failed event's first receives come back after these delays (s) instead of the event queue's 180 s visibility
# timeout (infra/event_intake.py): a spot warning gives two minutes, so a passing fault (a throttle, a conflict)
# is retried inside them. Later receives keep the queue's timeout, so a longer outage still has its ≈ 10 minutes
# before the dead-letter queue.
RETRY_DELAYS_S = (10, 30)


def _retry_soon(event: dict, failed: set[str], unstarted: set[str] = frozenset()) -> None:
    """Shorten the visibility of the failed messages of the stage's event queue (best effort: if SQS refuses,
    they come back after the queue's timeout, as before); the ``unstarted`` ones (the invocation's time ran low
    before them: nothing failed) come back at once, whatever their receive count."""
    from chalicelib.aws import sqs
    from chalicelib.settings import event_queue_name

    queue = event_queue_name(get_settings().stage)
    delays = {}
    for record in event.get("Records", []):
        receives = str((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
        if (record.get("messageId") not in failed or not record.get("receiptHandle")
                or not _from_queue(record, queue)):
            continue
        if record["messageId"] in unstarted:
            delays[record["receiptHandle"]] = 0
        elif receives.isdigit() and 0 < int(receives) <= len(RETRY_DELAYS_S):
            delays[record["receiptHandle"]] = RETRY_DELAYS_S[int(receives) - 1]
    if not delays:
        return
    try:
        sqs.retry_after(queue, delays)
    except Exception as exc:  # noqa: BLE001 - the queue's own timeout still brings them back
        logger.warning("failed events keep the queue's visibility timeout", extra={"reason": str(exc)})


def queued_event(body: str) -> dict:
    """The EventBridge event of one queue message; ValueError (a batch item failure, then the dead-letter
    queue) when the body is not one."""
    event = json.loads(body)
    if not isinstance(event, dict):
        raise ValueError("the message body is not an EventBridge event (a JSON object)")
    return event


def on_event(event: dict, context=None) -> dict:
    """One EventBridge event, idempotent on its account and id (powertools Idempotency): a redelivered event
    returns the result stored the first time and does nothing. An event whose id is not a non-blank string (EventBridge
    always sets one: such a body is a client's own, redriven from its dead-letter queue) is rejected unread: powertools
    would run it with no idempotency record at all (every delivery handled afresh), and a split event's parts are
    named after its id (``None#part-1-of-2`` would be every id-less event's, whichever tenant's)."""
    event_id = event.get("id") if isinstance(event, dict) else None
    if not isinstance(event_id, str) or not event_id.strip():
        logger.warning("rejected event", extra={"reason": "no event id", "event_id": repr(event_id)[:100]})
        return {"action": "rejected", "reason": "the event has no id (a string): it could not be handled once"}
    intake, config = _idempotent_intake()
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)
    return intake(event=event)


@cache
def _idempotent_intake():
    """Built on first use: the persistence layer's client must see the runtime endpoint (local mode, moto)."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    from chalicelib.tables.idempotency import IdempotencyTable

    persistence = DynamoDBPersistenceLayer(table_name=IdempotencyTable.Meta.table_name)
    # Keyed on the sending account and the event id: an event id is unique per sender only as far as the product can
    # tell (a client's own dead-letter queue redrives bodies it wrote), so one account's event never gets the stored
    # answer of another account's event that carries the same id.
    config = IdempotencyConfig(event_key_jmespath="[account, id]", expires_after_seconds=24 * 3600)

    @idempotent_function(data_keyword_argument="event", persistence_store=persistence, config=config)
    def intake(event: dict) -> dict:
        try:
            signals = parse_signals(event)
        except InvalidSignalError as exc:  # not retried: it would fail the same way again
            logger.warning("rejected event", extra={"reason": str(exc), "event_id": event.get("id")})
            return {"action": "rejected", "reason": str(exc)}
        if len(signals) > MAX_AFFECTED_INSTANCES:
            return _split(event)
        now = clock.now()
        if len(signals) == 1:
            return handle(received(signals[0], now), now)
        # An AWS Health event names every instance it affects; each is claimed on its own, and each is tried whatever
        # happened to the ones before it (one tenant's trouble must not hold another's failover): the first failure
        # is raised once all were tried, and the redelivery finishes it (the others are duplicates of their claims).
        results, failure = [], None
        for signal in signals:
            try:
                results.append(handle(received(signal, now), now))
            except Exception as exc:  # noqa: BLE001 - raised below, after the other instances
                logger.warning("affected instance failed: the event comes back for it", extra={
                    "event_id": event.get("id"), "instance_id": signal.instance_id, "error": str(exc)})
                failure = failure or exc
        if failure is not None:
            raise failure
        return {"action": "per_instance", "results": [{"instance_id": signal.instance_id, **result}
                                                      for signal, result in zip(signals, results)]}

    return intake, config


def _split(event: dict) -> dict:
    """An AWS Health event naming more instances than one invocation handles goes back to the event queue as its
    parts (``health_event_parts``), each handled on its own like any event; this event's answer names how many.
    If SQS refuses a part the event fails and comes back (parts already sent are duplicates of themselves then)."""
    from chalicelib.aws import sqs
    from chalicelib.settings import event_queue_name

    parts = health_event_parts(event)
    sqs.send_all(event_queue_name(get_settings().stage), [json.dumps(part) for part in parts], backoff_s=0.05)
    logger.info("AWS Health event split into parts", extra={"event_id": event.get("id"), "parts": len(parts)})
    return {"action": "split", "reason": f"{len(parts)} parts of at most {MAX_AFFECTED_INSTANCES} instances",
            "parts": len(parts)}


# The oldest an EventBridge event can truly be when it reaches the sentinel: EventBridge retries a rule's target for
# up to a day (the client stack's forwarding rules: MaximumEventAgeInSeconds ≤ 86400), then a dead-letter queue keeps
# it 14 days (infra/event_intake.py RETENTION, the client stack's queue) until the operator's redrive.
MAX_EVENT_AGE = timedelta(days=15)


def received(signal: Signal, now: datetime) -> Signal:
    """An EventBridge signal whose ``time`` is believable (``clock.believable``: at most ``MAX_CLOCK_SKEW`` ahead of
    ``now``, the receive time, and at most :data:`MAX_EVENT_AGE` old) as it is; otherwise the same signal at ``now``
    (logged), its deadline as far after it as the event's was. The event did happen, only its time cannot be true: a
    warning dated a year ahead would get its failover deadline and its observation then (read as recent by every risk
    score until that date), one long ago an observation back there."""
    if clock.believable(signal.detected_at, now, MAX_EVENT_AGE):
        return signal
    logger.warning("event time not believable: the receive time instead",
                   extra={"event_id": signal.event_id, "event_time": iso(signal.detected_at), "received": iso(now),
                          "instance_id": signal.instance_id, "event_account": signal.account})
    deadline = None if signal.deadline is None else now + (signal.deadline - signal.detected_at)
    return replace(signal, detected_at=now, deadline=deadline)


def answer(result: dict[str, Any]) -> dict[str, Any]:
    """What a tenant may see of :func:`handle`'s result: all of it but the workflow's ``execution_arn``, which
    names the service's own AWS account, region and state machine. The execution's name is the
    ``interruption_id`` the answer keeps (the tenant's interruption event). ``message`` says it in a sentence for
    the agent's log (spot_agent.py logs it after a termination notice)."""
    reply = {key: value for key, value in result.items() if key != "execution_arn"}
    reply.setdefault("message", _message(result))
    return reply


def _message(result: dict[str, Any]) -> str:
    action = result.get("action")
    if action == "failover_started":
        return (f"failover {result['interruption_id']} started: a ready standby is promoted, else a replacement is "
                "launched, before the deadline")
    if action == "duplicate":
        return f"already handled as {result.get('interruption_id')} ({result.get('status') or 'starting'})"
    reason = result.get("reason")
    return f"{action}: {reason}" if reason else str(action)


def handle(signal: Signal, now: datetime, *, replica_id: str | None = None,
           on_behalf_of: AgentRecord | None = None) -> dict[str, Any]:
    """Route one signal; returns what was done (the routes answer it through :func:`answer`).

    ``replica_id`` names the standby to promote (manual promotion); otherwise the workflow picks.
    ``on_behalf_of`` is the agent a client, an agent or the coordinator speaks for: the signal is ignored unless
    the instances table gives the instance to that agent (an agent row may name an instance another agent, of
    this tenant or another, registered since: a legacy heartbeat names any instance).
    """
    instance = _instance(signal.instance_id)
    if instance is None:
        return {"action": "ignored", "reason": "unmanaged instance"}
    if on_behalf_of is not None and (instance.client_id, instance.agent_id) != (on_behalf_of.client_id,
                                                                                 on_behalf_of.agent_id):
        return {"action": "ignored", "reason": "the instance is not this agent's"}
    agent = agents.get(instance.client_id, instance.agent_id)
    if agent is None or agent.deleted:
        return {"action": "ignored", "reason": "agent deleted"}
    if signal.source is SignalSource.EVENTBRIDGE and not _from_instance_account(agent, signal):
        return {"action": "ignored", "reason": "the event's account is not the instance's account"}
    if dropped := _from_unbound_account(agent, signal):
        return dropped
    if instance.role == "standby":
        return _standby_signal(agent, instance, signal, now)
    if signal.kind is not SignalKind.MANUAL and agent.instance_id != signal.instance_id:
        return _replaced_by_failover(agent, signal, now) or {
            "action": "ignored", "reason": "instance is no longer the agent's primary"}
    if signal.kind is SignalKind.STATE_CHANGE and not signal.starts_failover:
        return {"action": "ignored", "reason": f"state {signal.state}"}
    view = _Ec2View(agent, signal)
    stop_reason = _stop_reason(view, signal)
    if stop_reason is not None and _user_stop(agent, signal, stop_reason, now):
        return {"action": "ignored", "reason": "stopped by the user: no failover"}
    row = InterruptionTable(
        agent.client_id, interruptions.new_interruption_id(signal.detected_at), agent_id=agent.agent_id,
        instance_id=signal.instance_id, pool_id=agent.spot_pool_id,
        signal_type=recorded_type(signal.kind, signal.state),
        source=signal.source.value, event_id=signal.event_id, status="detected",
        detected_at=signal.detected_at, termination_time=signal.deadline, replica_id=replica_id)
    claimed, interruption_id = interruptions.claim_and_record(
        row, signal_key(signal.instance_id, signal.group), now, get_settings().signal_window_s)
    reported = _clients_evidence(view, signal, stop_reason) or not _runs_in(view, instance, row.pool_id)
    if not claimed:
        return _duplicate(agent, instance, interruption_id, reported=reported)
    _observe(instance, row.pool_id, row.signal_type, row.detected_at, row.interruption_id, reported=reported)
    if signal.starts_failover:
        started = _start_failover(agent, row, now)
        _count(row, now)  # after the start: bookkeeping never delays a failover
        return started
    return _rebalance(agent, row, now)


def _from_instance_account(agent: AgentRecord, signal: Signal) -> bool:
    """Did EventBridge receive the event from the account the agent's instances live in?

    Bound client accounts forward their EC2 events to our bus (infra/client-account-role.yaml), so an event
    may come from any of them: only the instance's own account (the agent's verified account, else the one
    chalicelib.tenancy picks: home when self-hosted, the client's single binding otherwise) may start work."""
    expected = agent.account_id
    if not expected:
        try:
            expected = tenancy.for_agent(agent).account_id
        except tenancy.AccountNotBound:
            expected = None
    if signal.account and signal.account == expected:
        return True
    logger.warning("event from another account ignored",
                   extra={"event_id": signal.event_id, "event_account": signal.account, "expected_account": expected,
                          "client_id": agent.client_id, "agent_id": agent.agent_id, "instance_id": signal.instance_id})
    return False


UNBOUND_ACCOUNT = "the instance's account is no longer bound to its client"


def _from_unbound_account(agent: AgentRecord, signal: Signal) -> dict[str, Any] | None:
    """The ignored answer for an event from the agent's verified (or pinned) account once its client has unbound it,
    else None.

    The account may still forward events for a while (its stack's rules, a queued event, another client binding it
    keeps the bus open), but the product can no longer act there: a failover would only fail ``account_not_bound``.
    Dropped before any claim, recorded once per event (the audit event is keyed on the event id and its detection
    time; the powertools idempotency returns the stored answer to a redelivery anyway) and counted. The agent's own
    signals (its routes: a termination notice, a rebalance) and its client's are of the agent's account: dropped
    alike (an agent a forced unbinding cut off could otherwise still start a failover there)."""
    account = signal.account if signal.source is SignalSource.EVENTBRIDGE else agent.account_id
    if not agent.account_id or account != agent.account_id:
        return None
    try:
        tenancy.for_agent(agent)
    except tenancy.AccountNotBound:
        pass
    else:
        return None
    logger.warning("event from an unbound account ignored",
                   extra={"event_id": signal.event_id, "event_account": account, "source": signal.source.value,
                          "client_id": agent.client_id, "agent_id": agent.agent_id, "instance_id": signal.instance_id})
    activity.record_event("event_ignored", f"{signal.kind.value} for {signal.instance_id} ignored: account "
                          f"{account} is no longer bound", signal.detected_at, severity="warning",
                          client_id=agent.client_id, agent_id=agent.agent_id, instance_id=signal.instance_id,
                          metadata={"event_id": signal.event_id, "reason": "account_not_bound"},
                          once=f"event_ignored:{signal.event_id or signal.instance_id}")
    metrics.add_metric(name="EventsFromUnboundAccounts", unit=MetricUnit.Count, value=1)
    publish_metrics()
    return {"action": "ignored", "reason": UNBOUND_ACCOUNT}


class _Ec2View:
    """EC2's view of a signal's instance, asked once (one DescribeInstances) however many questions the signal's
    handling puts to it: a stop's reason, then where the instance runs. An error is raised to each asker. (Its
    methods' names are found nowhere else: infra/boto_calls.py, which derives each function's IAM policy, resolves a
    method call by its name, so a ``.info()`` here would give every caller of ``logger.info`` DescribeInstances.)"""

    def __init__(self, agent: AgentRecord, signal: Signal) -> None:
        self.region, self.instance_id, self.agent = signal.region or agent.region, signal.instance_id, agent
        self._asked, self._info = False, None

    def described_instance(self) -> ec2.InstanceInfo | None:
        """The instance as EC2 shows it (None: EC2 does not know it, or no region to ask in)."""
        if not self._asked and self.region:
            self._info = ec2.describe(self.region, [self.instance_id],
                                      account=tenancy.for_agent(self.agent)).get(self.instance_id)
        self._asked = True
        return self._info

    def described_state_reason(self) -> str | None:
        """EC2's ``StateReason`` code of the instance's last state change (None when EC2 gives none)."""
        info = self.described_instance()
        return info.state_reason if info is not None else None


def _stop_reason(view: _Ec2View, signal: Signal) -> str | None:
    """EC2's reason for a stop of the instance ("" when EC2 gives none); None for any other signal. An EC2 error
    propagates (EventBridge retries): a stop may be the customer's, which is never failed over."""
    if signal.kind is not SignalKind.STATE_CHANGE or signal.state not in STOP_STATES:
        return None
    return view.described_state_reason() or ""


def _user_stop(agent: AgentRecord, signal: Signal, reason: str, now: datetime) -> bool:
    """Did the customer stop their primary (EC2's state ``reason``)? Then it is theirs to restart: no failover,
    no termination, no capacity observation; audited."""
    if not stopped_by_user(signal.state, reason):
        return False
    activity.record_event("instance_stopped_by_user", f"{signal.instance_id} {signal.state} ({reason}): no failover",
                          now, client_id=agent.client_id, agent_id=agent.agent_id, instance_id=signal.instance_id)
    return True


# What an EC2 instance id is (the registration routes' pattern): only such an id can name an instance row. An event's
# id is the sender's text: one over DynamoDB's 2,048-byte key, or not text it stores, makes the read a
# ValidationException, and the event would come back until the dead-letter queue.
_EC2_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")


def _instance(instance_id: str) -> InstanceTable | None:
    """The instance row of ``instance_id`` (None: unmanaged; never read for an id that is no EC2 instance id)."""
    if not isinstance(instance_id, str) or not _EC2_INSTANCE_ID.fullmatch(instance_id):
        return None
    try:
        return InstanceTable.get(instance_id, consistent_read=True)
    except InstanceTable.DoesNotExist:
        return None


def _replaced_by_failover(agent: AgentRecord, signal: Signal, now: datetime) -> dict[str, Any] | None:
    """The failover this instance's loss already started, when it has already made another instance the agent's
    primary: a later report of the same loss joins it (``duplicate``), as one made while it runs does.

    EventBridge's warning usually comes first, and with a standby to promote the hand-over can end within the
    seconds the v4 agent takes to see the notice in IMDS (every 5 s). v4 reads a ``termination-imminent`` answer
    without ``success`` as a failed failover and keeps running; the failover did replace its instance."""
    if signal.group != signal_group(SignalKind.TERMINATION):
        return None
    held = interruptions.held_claim(signal_key(signal.instance_id, signal.group), now, get_settings().signal_window_s)
    existing = interruptions.get(agent.client_id, held) if held else None
    if existing is None or existing.instance_id != signal.instance_id:
        return None
    if not existing.execution_arn and _name_started_execution(existing):  # its first handling died after the start
        _record_started(agent, existing)
    return {"action": "duplicate", "interruption_id": existing.interruption_id, "status": existing.status,
            "new_instance_id": existing.new_instance_id or agent.instance_id}


def _duplicate(agent: AgentRecord, instance: InstanceTable, interruption_id: str, *,
               reported: bool) -> dict[str, Any]:
    existing = interruptions.get(agent.client_id, interruption_id)
    # A redelivery after a crash that came before the observation: same key again. AWS's copy of a signal the
    # agent reported first is the fleet's observation now; the agent's copy of one AWS sent adds nothing.
    if existing is not None and not (reported and existing.source == SignalSource.EVENTBRIDGE.value):
        _observe(instance, existing.pool_id, existing.signal_type, existing.detected_at, existing.interruption_id,
                 reported=reported)
    if existing is not None and _is_failover(existing):
        # A first handling that failed after its claim (a throttle) is finished now, each part once: the start
        # (crashed before it), the audit event of the start, the agent's count.
        if existing.status == "detected":
            _start_failover(agent, existing, clock.now())
        elif existing.execution_arn or _name_started_execution(existing):
            _record_started(agent, existing)
        _count(existing, clock.now())
    elif existing is not None and existing.status == "detected":
        _rebalance(agent, existing, clock.now())  # failed after its claim (a throttle): finish it now, once
        existing = interruptions.get(agent.client_id, interruption_id) or existing
    reply: dict[str, Any] = {"action": "duplicate", "interruption_id": interruption_id,
                             "status": None if existing is None else existing.status}
    if existing is not None and not _is_failover(existing):
        # A recommendation reported again (the v4 agent reports each one twice; EventBridge too): what the
        # first report decided, with the pool's risk, as a first answer carries them.
        reply.update(risk_score=round(_pool_risk(agent), 4), replica_id=existing.replica_id,
                     reason=f"recommendation already handled: {existing.response_action or existing.status}")
    return reply


def _clients_evidence(view: _Ec2View, signal: Signal, reason: str | None = None) -> bool:
    """True for a signal that is its client's evidence only, no more than a report
    (``observations.record(reported=True)``): one only the client vouches for (its agent's IMDS notice, its own
    request, an event its account's owner re-sent, ``Signal.replayed``: an archive replay, a redrive of its own
    dead-letter queue, any event as often as it likes), and a lost state EC2 says its owner caused (a ``Client.*`` state reason: a console or API
    terminate in an account the client holds, its instance's OS shutting down). EventBridge's warnings and
    recommendations come from AWS, account-checked; only a lost state needs EC2's reason (one DescribeInstances),
    and when EC2 cannot say (an error) it counts for the client alone: the loss still fails over, and a real
    reclaim is the fleet's through its warning. ``reason``: the one already read (a stop's), if any."""
    if signal.source is not SignalSource.EVENTBRIDGE or signal.replayed:
        return True
    if capacity_kind(signal.kind, signal.state) is not ObservationKind.AWS_STOPPED:
        return False
    if reason is not None:
        return ended_by_client(reason)
    try:
        reason = view.described_state_reason()
    except ec2.Ec2Error as exc:  # a client account not bound (AccountNotBound) too
        logger.warning("state reason unknown: the loss is its client's evidence only",
                       extra={"instance_id": signal.instance_id, "error": str(exc)})
        return True
    return ended_by_client(reason)


def _runs_in(view: _Ec2View, instance: InstanceTable, pool_id: str | None) -> bool:
    """Does the primary run on spot in ``pool_id`` (the agent's pool, what its signal is filed under), by more than
    its client's word? A legacy registration, a heartbeat and a switch report name a type and zone nobody checks,
    so AWS's warning for the instance would put a pool it never ran in into every tenant's back-off and risk.
    Confirmed by a signed identity document (``proven_account_id``: the row's type and zone are the document's), by
    the product's own launch (a promoted standby it launched), or else by EC2's view of the instance (one
    DescribeInstances, EventBridge's signals of unproven primaries only). EC2 trouble: not confirmed (the signal
    counts for its client alone; the failover does not wait on this)."""
    if pool_id is None:
        return True  # nothing is filed
    if instance.proven_account_id and instance.pool_id == pool_id:
        return True
    if instance.replica_id:
        replica = replica_repo.get(instance.agent_id, instance.replica_id)
        if replica is not None and replica.own_launch and replica.pool_id == pool_id:
            return True
    try:
        info = view.described_instance()
    except ec2.Ec2Error as exc:  # a client account not bound (AccountNotBound) too
        logger.warning("placement unknown: the signal is its client's evidence only",
                       extra={"instance_id": instance.instance_id, "error": str(exc)})
        return False
    return info is not None and info.lifecycle == "spot" and info.pool_id == pool_id


def _observe(instance: InstanceTable, pool_id: str | None, signal_type: str, at: datetime, event_id: str, *,
             reported: bool) -> None:
    """The signal as a capacity observation of the instance's spot pool (warning, rebalance, AWS stop).

    ``reported``: the signal came from the client's agent (or the client), not from AWS: it is that client's
    evidence only (its placements' back-off, its own risk score), never the fleet's, so no tenant can put a pool
    in back-off for the others or raise the fleet's risk of it with made-up notices. EventBridge's copy of the
    same signal, when it comes, is recorded for the fleet under the same event id.

    Only signals about an instance the product still runs get here (a primary that is still the agent's,
    an active standby), so a stop we caused ourselves is never counted. ``event_id`` and ``at`` come from
    the claim's interruption event (or the EventBridge event for a standby): one observation per signal
    whichever source reported it first, and none more on redelivery.
    """
    kind_name, _, state = signal_type.partition(":")
    kind = capacity_kind(kind_name, state or None)
    pool_id = pool_id or _spot_pool(instance)
    if kind is None or pool_id is None:
        return
    observations.record(CapacityObservation(pool_id, kind, at.timestamp(), source="sentinel"),
                        event_id=event_id, client_id=instance.client_id, agent_id=instance.agent_id,
                        instance_id=instance.instance_id, reported=reported)


def _spot_pool(instance: InstanceTable) -> str | None:
    """The instance's pool when it runs on spot (an on-demand instance says nothing about spot capacity)."""
    if (instance.lifecycle or instance.mode) != "spot":
        return None
    if instance.pool_id:
        return instance.pool_id
    try:
        return make_pool_id(instance.instance_type or "", instance.az or "")
    except InvalidPoolIdError:
        return None


def _is_failover(row: InterruptionTable) -> bool:
    return not row.signal_type.startswith(SignalKind.REBALANCE.value)


def workflow_input(row: InterruptionTable, replica_id: str | None = None) -> dict[str, Any]:
    """The execution input, derived only from the stored event (a restart sends the same input)."""
    return {"interruption_id": row.interruption_id, "client_id": row.client_id, "agent_id": row.agent_id,
            "instance_id": row.instance_id, "signal_type": row.signal_type, "detected_at": iso(row.detected_at),
            "deadline": iso(row.termination_time), "replica_id": replica_id or row.replica_id,
            "planned": row.signal_type == SignalKind.PLANNED.value}


def _start_failover(agent: AgentRecord, row: InterruptionTable, now: datetime) -> dict[str, Any]:
    execution = stepfunctions.start(row.interruption_id, workflow_input(row))
    # ``handling`` only over ``detected``: an execution that already ended (a quick hand-over, this write slow or
    # redelivered) recorded its outcome, which must stand (the cleanup job would close a ``handling`` event whose
    # execution no longer runs as lost); the execution is named either way.
    if not interruptions.update_if(row.client_id, row.interruption_id, "detected", status="handling",
                                   execution_arn=execution):
        interruptions.update(row.client_id, row.interruption_id, execution_arn=execution)
    _record_started(agent, row)
    return {"action": "failover_started", "interruption_id": row.interruption_id, "execution_arn": execution}


def _name_started_execution(row: InterruptionTable) -> bool:
    """A failover event past ``detected`` without its execution named: the first handling started the execution,
    which ran to its end before that handling's write (it died, or the write failed). The execution is named after
    the event (one DescribeExecution, on this redelivery only) and, if it exists, recorded; True then. An event the
    cleanup job closed before any execution started has none: False, and nothing is started now."""
    arn = stepfunctions.existing_execution(row.interruption_id)
    if arn is not None:
        interruptions.set_once(row.client_id, row.interruption_id, "execution_arn", arn)
    return arn is not None


def _record_started(agent: AgentRecord, row: InterruptionTable) -> None:
    """The audit event of the start, once per interruption: its key derives from the event's detection time and
    id (not the handling time), so the redelivery of a signal whose first handling failed around it writes it
    if it is missing and nothing if it is there."""
    planned = row.signal_type == SignalKind.PLANNED.value
    activity.record_event("planned_return" if planned else "interruption",
                          f"{row.signal_type} for {row.instance_id} ({row.source}): "
                          + ("hand-over to the standby started" if planned else "failover started"), row.detected_at,
                          severity="info" if planned else "critical", client_id=agent.client_id,
                          agent_id=agent.agent_id, instance_id=row.instance_id,
                          metadata={"interruption_id": row.interruption_id}, once=f"{row.interruption_id}:started")


def _pool_risk(agent: AgentRecord) -> float:
    pool = pools.latest_prices([agent.current_pool_id]).get(agent.current_pool_id) if agent.current_pool_id else None
    risk = pool.risk_for(agent.client_id) if pool is not None else None
    if risk is not None:
        return risk
    return advisor_prior(DEFAULT_ADVISOR_BAND, get_settings().risk_horizon_s)


def _own_standby(agent: AgentRecord, replica_id: str | None, row: InterruptionTable):
    """The standby ``replica_id`` when this rebalance event pre-warmed it (an earlier delivery, or the same signal
    from another source at the same moment), else None."""
    replica = replica_repo.get(agent.agent_id, replica_id) if replica_id else None
    return replica if replica is not None and replica.interruption_id == row.interruption_id else None


def _rebalance(agent: AgentRecord, row: InterruptionTable, now: datetime) -> dict[str, Any]:
    """Pre-warm a standby in another pool when the current pool looks risky; it expires unused. Not for an instance
    whose termination is already claimed (its failover is replacing it).

    Also run again for an event still ``detected`` (its first delivery failed after the claim, e.g. throttled):
    a standby this event already pre-warmed is kept as its answer, never a second one, and only the first
    resolution of the event is written."""
    settings = get_settings()
    risk = _pool_risk(agent)
    result: dict[str, Any] = {"interruption_id": row.interruption_id, "risk_score": round(risk, 4)}
    standby = _own_standby(agent, agent.current_replica_id, row)
    if standby is not None:
        action = "prewarm"
        reason = f"standby {standby.replica_id} in {standby.pool_id} pre-warmed for this recommendation"
        result.update(replica_id=standby.replica_id, target_pool_id=standby.pool_id)
    elif failing_over := interruptions.held_claim(signal_key(row.instance_id, signal_group(SignalKind.TERMINATION)),
                                                  now, settings.signal_window_s):
        # AWS may send the recommendation with or after the two-minute warning: the instance is being replaced
        action, reason = "monitor", f"a failover of the instance is under way ({failing_over})"
    elif agent.current_mode != "spot":
        action, reason = "monitor", "the instance is not on spot"
    elif agent.current_replica_id:
        action, reason = "monitor", f"standby {agent.current_replica_id} already exists"
    elif risk < settings.prewarm_risk_threshold:
        action, reason = "monitor", f"pool risk {risk:.2f} is below {settings.prewarm_risk_threshold:.2f}"
    else:
        try:
            standby = replicas.start_standby(agent, now, replica_type=ReplicaType.REBALANCE, created_by="sentinel",
                                             expires_at=now + timedelta(seconds=settings.prewarm_ttl_s),
                                             interruption_id=row.interruption_id)
        except SlotTakenError as exc:
            standby = _own_standby(agent, exc.current_replica_id, row)
            action, reason = ("prewarm", f"standby {standby.replica_id} in {standby.pool_id} pre-warmed for this "
                              "recommendation") if standby else ("monitor", "a standby already exists")
            if standby is not None:
                result.update(replica_id=standby.replica_id, target_pool_id=standby.pool_id)
        except (quotas.QuotaExceeded, quotas.TypeNotAllowed, tenancy.AccountNotBound) as exc:
            action, reason = "monitor", f"no pre-warmed standby: {exc}"
        except ConflictError as exc:
            if exc.code != "no_pool":  # no other pool outside capacity back-off: like a quota, no standby now
                raise
            action, reason = "monitor", f"no pre-warmed standby: {exc.message}"
        else:
            action = "prewarm"
            reason = (f"pool risk {risk:.2f} ≥ {settings.prewarm_risk_threshold:.2f}: standby "
                      f"{standby.replica_id} in {standby.pool_id}, expires in {settings.prewarm_ttl_s} s "
                      "unless a termination follows")
            result.update(replica_id=standby.replica_id, target_pool_id=standby.pool_id)
    # Logged before the event is resolved, once per event (at its detection): a delivery that died between the two
    # is delivered again to a still ``detected`` event and logs nothing twice; one that died after both finds it done.
    activity.record_event("rebalance_recommendation", f"{agent.logical_agent_id}: {reason}", row.detected_at,
                          severity="warning", client_id=agent.client_id, agent_id=agent.agent_id,
                          instance_id=row.instance_id, once=f"rebalance_recommendation:{row.interruption_id}")
    interruptions.update_if(
        row.client_id, row.interruption_id, "detected", status="resolved",
        response_action="prewarmed-standby" if action == "prewarm" else "no-action", completed_at=now, success=True,
        **({"replica_id": result["replica_id"]} if action == "prewarm" else {}))
    return {"action": action, "reason": reason, **result}  # another delivery's resolution, if first, stands


def _standby_signal(agent: AgentRecord, instance: InstanceTable, signal: Signal, now: datetime) -> dict[str, Any]:
    """A standby is going away (replace it) or came up (ready)."""
    replica = replica_repo.get(agent.agent_id, instance.replica_id) if instance.replica_id else None
    if replica is None or not replica.active:
        return {"action": "ignored", "reason": "standby no longer active"}
    signal_type = signal.kind.value if signal.state is None else f"{signal.kind.value}:{signal.state}"
    if capacity_kind(signal.kind, signal.state) is not None:
        # a standby the product did not launch sits in the pool its client named (never checked against the
        # instance): even AWS's word about it is filed under the client's claim, so it is that client's evidence only
        _observe(instance, replica.pool_id if replica.lifecycle == "spot" else None, signal_type, signal.detected_at,
                 _standby_event_id(agent, signal, now),
                 reported=not replica.own_launch or _clients_evidence(_Ec2View(agent, signal), signal))
    if signal.starts_failover and signal.kind is not SignalKind.MANUAL:
        replica_repo.transition(replica, ReplicaStatus.FAILED, now, error_message=f"{signal.kind.value} on the standby")
        return {"action": "standby_lost", "replica_id": replica.replica_id}
    if signal.kind is SignalKind.STATE_CHANGE and signal.state == "running" and replica.status is ReplicaStatus.LAUNCHING:
        replica_repo.transition(replica, ReplicaStatus.READY, now)
        return {"action": "standby_ready", "replica_id": replica.replica_id}
    return {"action": "ignored", "reason": f"{signal.kind.value} on a standby"}


def _standby_event_id(agent: AgentRecord, signal: Signal, now: datetime) -> str:
    """The id a standby's signal is observed under: the first copy of it in the signal window (the agent's and
    EventBridge's have ids of their own) claims its id for both, so the client's view counts it once. Best
    effort, like the observation itself: if the claim cannot be written, the copy keeps its own id."""
    own = signal.event_id or f"{signal.source.value}:{signal.instance_id}:{signal.group}:{iso(signal.detected_at)}"
    try:
        return interruptions.claim_signal(signal_key(signal.instance_id, f"standby-{signal.group}"), own,
                                          agent.client_id, signal.source.value, now, get_settings().signal_window_s)
    except Exception as exc:  # noqa: BLE001 - a throttle here must not keep a lost standby from being replaced
        logger.warning("standby signal not claimed: observed under its own id",
                       extra={"instance_id": signal.instance_id, "error": str(exc)})
        return own


def _count(row: InterruptionTable, now: datetime) -> None:
    """A termination signal (not a planned return) counts on its agent, once per event (``count_once``)."""
    if row.signal_type != SignalKind.PLANNED.value:
        interruptions.count_once(row, now)
