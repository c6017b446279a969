"""Interruption signals: what EventBridge and the agent tell us, reduced to one value.

A termination warning (EventBridge or the agent's ``spot/instance-action``) and a state change of a
primary to shutting-down/terminated/stopping/stopped are the same *group*: whichever arrives first
starts the failover, the others are duplicates within the window. Rebalance recommendations are their
own group. A promotion asked for (a client's manual promotion, the coordinator's planned return from
on-demand) is one group of its own, whoever asked: one hand-over per instance within the window.
An AWS Health scheduled retirement of an instance (``aws.health``, :data:`RETIREMENT_EVENT_CODES`) is in the
termination group too: it is failed over ahead of time (see :data:`SignalKind.RETIREMENT`).
Nothing here sleeps: a burst is many independent invocations (the legacy sentinel slept inside the request).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from components.capacity import ObservationKind
from components.sentinel.errors import InvalidSignalError
from components.timeutil import parse_iso

__all__ = [
    "DETAIL_TYPES",
    "HEALTH_DETAIL_TYPE",
    "HEALTH_SOURCE",
    "LOST_STATES",
    "MAX_AFFECTED_INSTANCES",
    "PROMOTIONS",
    "REDRIVEN_FROM",
    "RETIREMENT_EVENT_CODES",
    "TERMINATION_NOTICE_S",
    "Signal",
    "SignalKind",
    "STOP_STATES",
    "SignalSource",
    "capacity_kind",
    "claim_is_stale",
    "ended_by_client",
    "health_event_parts",
    "parse_event",
    "parse_signals",
    "signal_group",
    "signal_key",
    "stopped_by_user",
]

TERMINATION_NOTICE_S = 120  # AWS gives two minutes between the warning and the interruption
LOST_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
STOP_STATES = frozenset({"stopping", "stopped"})


class SignalKind(str, Enum):
    """What happened to an instance."""

    TERMINATION = "termination-warning"
    REBALANCE = "rebalance-recommendation"
    STATE_CHANGE = "state-change"
    MANUAL = "manual-promotion"
    PLANNED = "planned-return"  # the coordinator moves an on-demand primary back to its ready spot standby
    # AWS Health scheduled an instance's retirement (days ahead). Failed over *now*, ahead of time, rather
    # than pre-warmed like a rebalance: the loss is certain (a rebalance only says the risk went up), and a
    # pre-warmed standby would expire unused (PREWARM_TTL_S, 1 h) long before the retirement date. The
    # failover is the same workflow as for a warning, without the two-minute deadline, at a time we choose.
    RETIREMENT = "scheduled-retirement"


class SignalSource(str, Enum):
    """Who told us."""

    EVENTBRIDGE = "eventbridge"
    AGENT = "agent"
    CLIENT = "client"
    COORDINATOR = "replica-coordinator"


DETAIL_TYPES = {
    "EC2 Spot Instance Interruption Warning": SignalKind.TERMINATION,
    "EC2 Instance Rebalance Recommendation": SignalKind.REBALANCE,
    "EC2 Instance State-change Notification": SignalKind.STATE_CHANGE,
}
HEALTH_SOURCE = "aws.health"
HEALTH_DETAIL_TYPE = "AWS Health Event"
# AWS Health EC2 scheduled changes that take the instance away (retirement, or a stop for degraded hardware).
# Reboots for maintenance keep the instance: not a signal.
RETIREMENT_EVENT_CODES = (
    "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
    "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED",
    "AWS_EC2_INSTANCE_STOP_SCHEDULED",
)

# The field the operator's redrive of a client account's dead-letter queue (infra/event_source.py
# ``redrive_forwarded``) sets on every event it moves, to the client's account. That queue is the client's: it writes
# any body there, so such an event is the client's word, not AWS's. Its presence alone marks the event (whatever its
# value: the redrive overwrites any the client wrote); EventBridge never sets it, and on the live path nobody but
# EventBridge writes the events' envelope.
REDRIVEN_FROM = "spot-optimizer-redriven-from"

# Instances one invocation handles of one AWS Health event: each named instance is looked up and may start a failover
# (a read, a few writes and a StartExecution, ≈ 0.1 s), and the answer stored for the event id lists each. AWS names
# every instance a retirement affects in one event (paginated only past EventBridge's 256 KB, ≈ 10,000 ids), so an
# event naming more is split into parts of this many (:func:`health_event_parts`), each its own event on the queue:
# no invocation runs into the sentinel's 8 s, and no other client's warning in its batch waits behind it.
MAX_AFFECTED_INSTANCES = 25


@dataclass(frozen=True)
class Signal:
    """One signal about one instance; ``deadline`` is when AWS takes the instance (warnings only)."""

    kind: SignalKind
    instance_id: str
    detected_at: datetime
    source: SignalSource
    region: str | None = None
    event_id: str | None = None
    deadline: datetime | None = None
    state: str | None = None
    action: str | None = None
    account: str | None = None  # the AWS account EventBridge says the event came from
    # The account's owner re-sent it, whenever it likes and as often, so it is that client's word, no longer AWS's
    # (sentinel: its client's evidence only): EventBridge replayed it from an archive (``replay-name``), or the
    # operator redrove it from the client's own dead-letter queue (:data:`REDRIVEN_FROM`), which holds any body.
    replayed: bool = False

    @property
    def group(self) -> str:
        return signal_group(self.kind, self.state)

    @property
    def starts_failover(self) -> bool:
        """Termination warnings and a primary that is going away need a replacement now; a promotion
        asked for (manual, planned) runs the same workflow."""
        return self.group == "termination" or self.kind in PROMOTIONS

    @property
    def planned(self) -> bool:
        """A hand-over nobody was forced into: nothing is lost if it is abandoned."""
        return self.kind is SignalKind.PLANNED


PROMOTIONS = frozenset({SignalKind.MANUAL, SignalKind.PLANNED})


def signal_group(kind: SignalKind, state: str | None = None) -> str:
    """The de-duplication group of a signal.

    >>> signal_group(SignalKind.STATE_CHANGE, "terminated")
    'termination'
    >>> signal_group(SignalKind.STATE_CHANGE, "running")
    'state-running'
    >>> signal_group(SignalKind.PLANNED) == signal_group(SignalKind.MANUAL) == 'manual-promotion'
    True
    >>> signal_group(SignalKind.RETIREMENT)
    'termination'
    """
    if kind in (SignalKind.TERMINATION, SignalKind.RETIREMENT) or (
            kind is SignalKind.STATE_CHANGE and state in LOST_STATES):
        return "termination"
    if kind in PROMOTIONS:
        return SignalKind.MANUAL.value
    if kind is SignalKind.STATE_CHANGE:
        return f"state-{state}"
    return kind.value


def recorded_type(kind: SignalKind, state: str | None = None) -> str:
    """How an interruption row names its signal: the kind, with a state change's state.

    >>> recorded_type(SignalKind.STATE_CHANGE, "stopped"), recorded_type(SignalKind.TERMINATION)
    ('state-change:stopped', 'termination-warning')
    """
    return kind.value if state is None else f"{kind.value}:{state}"


def recorded_group(recorded: str) -> str | None:
    """The de-duplication group of the signal an interruption row names (``recorded_type``); None for no kind.

    >>> recorded_group("state-change:terminated"), recorded_group("rebalance-recommendation"), recorded_group("x")
    ('termination', 'rebalance-recommendation', None)
    """
    kind, _, state = recorded.partition(":")
    try:
        return signal_group(SignalKind(kind), state or None)
    except ValueError:
        return None


def signal_key(instance_id: str, group: str) -> str:
    """Key of the claim that makes one workflow per (instance, group) within the window."""
    return f"{instance_id}#{group}"


def capacity_kind(kind: SignalKind | str, state: str | None = None) -> ObservationKind | None:
    """What a signal says about its pool's capacity: a warning, a rebalance recommendation, or an
    instance taken away (a lost state of an instance the product did not retire); None otherwise.

    >>> capacity_kind(SignalKind.STATE_CHANGE, "stopped").value, capacity_kind("rebalance-recommendation").value
    ('aws_stopped', 'rebalance_recommendation')
    >>> capacity_kind(SignalKind.MANUAL) is None, capacity_kind(SignalKind.STATE_CHANGE, "running") is None
    (True, True)
    >>> capacity_kind(SignalKind.PLANNED) is None, capacity_kind(SignalKind.RETIREMENT) is None
    (True, True)
    """
    kind = SignalKind(kind)
    if kind is SignalKind.TERMINATION:
        return ObservationKind.INTERRUPTION_WARNING
    if kind is SignalKind.REBALANCE:
        return ObservationKind.REBALANCE
    if kind is SignalKind.STATE_CHANGE and state in LOST_STATES:
        return ObservationKind.AWS_STOPPED
    return None


def stopped_by_user(state: str | None, reason_code: str | None) -> bool:
    """A stop the customer initiated (console/API, or their OS shutting down): EC2's ``StateReason`` code
    is a ``Client.*`` one. Such an instance is not failed over nor terminated. A ``Server.*`` reason (spot
    interruption, scheduled stop, hardware) or an unknown one is AWS taking the instance: failover.

    >>> stopped_by_user("stopped", "Client.UserInitiatedShutdown"), stopped_by_user("stopping", "Server.SpotInstanceShutdown")
    (True, False)
    >>> stopped_by_user("stopped", None), stopped_by_user("terminated", "Client.UserInitiatedShutdown")
    (False, False)
    """
    return state in STOP_STATES and ended_by_client(reason_code)


def ended_by_client(reason_code: str | None) -> bool:
    """EC2's ``StateReason`` code of an instance's last state change names its owner (``Client.*``: a console or
    API stop/terminate, the instance's own OS shutting down), not AWS (``Server.*``: a spot interruption, a
    scheduled retirement). Such a loss says nothing about the pool's capacity to anyone but that client.

    >>> ended_by_client("Client.InstanceInitiatedShutdown"), ended_by_client("Server.SpotInstanceTermination")
    (True, False)
    >>> ended_by_client(None)
    False
    """
    return bool(reason_code) and reason_code.startswith("Client.")


def claim_is_stale(claimed_at: datetime, now: datetime, window_s: int) -> bool:
    """True when an earlier claim is older than the window, so a new signal starts a new workflow."""
    return now - claimed_at >= timedelta(seconds=window_s)


def parse_event(event: dict) -> Signal:
    """An EventBridge EC2 event as a Signal; InvalidSignalError for anything else.

    >>> s = parse_event({"id": "e1", "detail-type": "EC2 Spot Instance Interruption Warning",
    ...                  "source": "aws.ec2", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
    ...                  "detail": {"instance-id": "i-0abc", "instance-action": "terminate"}})
    >>> (s.kind.value, s.instance_id, s.deadline.isoformat())
    ('termination-warning', 'i-0abc', '2026-01-01T00:02:00+00:00')
    """
    if not isinstance(event, dict):
        raise InvalidSignalError("event must be an object", "event")
    detail_type = event.get("detail-type")
    kind = DETAIL_TYPES.get(detail_type) if isinstance(detail_type, str) else None
    if kind is None:
        raise InvalidSignalError(f"unsupported detail-type {event.get('detail-type')!r}", "detail-type")
    detail = event.get("detail") or {}
    if not isinstance(detail, dict):
        raise InvalidSignalError("detail must be an object", "detail")
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str) or not instance_id.startswith("i-"):
        raise InvalidSignalError("detail.instance-id missing or malformed", "detail.instance-id")
    try:
        detected = parse_iso(event["time"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidSignalError("time missing or not ISO-8601", "time") from exc
    deadline = detected + timedelta(seconds=TERMINATION_NOTICE_S) if kind is SignalKind.TERMINATION else None
    return Signal(kind=kind, instance_id=instance_id, detected_at=detected, source=SignalSource.EVENTBRIDGE,
                  region=event.get("region"), event_id=event.get("id"), deadline=deadline,
                  state=detail.get("state"), action=detail.get("instance-action"),
                  account=event["account"] if isinstance(event.get("account"), str) else None,
                  replayed=_resent(event))


def _resent(event: dict) -> bool:
    """Did the account's owner re-send the event (an archive replay, a redrive of its own dead-letter queue)?

    >>> _resent({"replay-name": "r"}), _resent({REDRIVEN_FROM: None}), _resent({"id": "e1"})
    (True, True, False)
    """
    return "replay-name" in event or REDRIVEN_FROM in event


def parse_signals(event: dict) -> list[Signal]:
    """Every signal of one event the sentinel's rules deliver: one for an EC2 event (:func:`parse_event`),
    one per affected instance of an AWS Health scheduled retirement; InvalidSignalError for anything else.

    >>> [(s.kind.value, s.instance_id, s.deadline) for s in parse_signals({
    ...     "id": "h1", "source": "aws.health", "detail-type": "AWS Health Event", "time": "2026-01-01T00:00:00Z",
    ...     "region": "us-east-1", "account": "123456789012", "resources": ["i-0abc", "i-0def"],
    ...     "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange",
    ...                "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
    ...                "affectedEntities": [{"entityValue": "i-0abc"}, {"entityValue": "i-0def"}]}})]
    [('scheduled-retirement', 'i-0abc', None), ('scheduled-retirement', 'i-0def', None)]
    """
    if isinstance(event, dict) and event.get("source") == HEALTH_SOURCE:
        return _health_signals(event)
    return [parse_event(event)]


def _health_signals(event: dict) -> list[Signal]:
    """No deadline: the failover is not racing the two-minute notice (the retirement is days away), and the
    old instance is retired after the hand-over as the agent's auto-terminate setting says."""
    if event.get("detail-type") != HEALTH_DETAIL_TYPE:
        raise InvalidSignalError(f"unsupported detail-type {event.get('detail-type')!r}", "detail-type")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise InvalidSignalError("detail must be an object", "detail")
    if detail.get("service") != "EC2" or detail.get("eventTypeCode") not in RETIREMENT_EVENT_CODES:
        raise InvalidSignalError(f"unsupported AWS Health event {detail.get('eventTypeCode')!r}", "detail.eventTypeCode")
    instance_ids = _affected_instances(event)
    if not instance_ids:
        raise InvalidSignalError("no affected instance", "detail.affectedEntities")
    try:
        detected = parse_iso(event["time"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidSignalError("time missing or not ISO-8601", "time") from exc
    account = event["account"] if isinstance(event.get("account"), str) else None
    return [Signal(kind=SignalKind.RETIREMENT, instance_id=instance_id, detected_at=detected,
                   source=SignalSource.EVENTBRIDGE, region=event.get("region"), event_id=event.get("id"),
                   action=detail["eventTypeCode"], account=account, replayed=_resent(event))
            for instance_id in instance_ids]


def _affected_instances(event: dict) -> list[str]:
    """The instance ids a Health event names, once each, in order: its ``affectedEntities``, else its ``resources``."""
    detail = event["detail"]
    entities = detail.get("affectedEntities")
    values = [e.get("entityValue") for e in entities if isinstance(e, dict)] if isinstance(entities, list) else []
    if not values and isinstance(event.get("resources"), list):
        values = list(event["resources"])
    return list(dict.fromkeys(v for v in values if isinstance(v, str) and v.startswith("i-")))


def health_event_parts(event: dict, size: int = MAX_AFFECTED_INSTANCES) -> list[dict]:
    """The AWS Health event ``event`` (one :func:`parse_signals` accepts) as events naming at most ``size`` of its
    instances each: copies of it whose ``affectedEntities`` and ``resources`` keep only their part's instances, with
    the id ``<id>#part-<k>-of-<n>`` (each part is handled, and deduplicated, on its own). One part, the event
    itself, when it names no more than ``size``.

    >>> event = {"id": "h1", "source": "aws.health", "detail-type": "AWS Health Event", "resources": ["i-1", "i-2", "i-3"],
    ...          "detail": {"affectedEntities": [{"entityValue": i} for i in ("i-1", "i-2", "i-3")]}}
    >>> [(p["id"], p["resources"], [e["entityValue"] for e in p["detail"]["affectedEntities"]])
    ...  for p in health_event_parts(event, size=2)]
    [('h1#part-1-of-2', ['i-1', 'i-2'], ['i-1', 'i-2']), ('h1#part-2-of-2', ['i-3'], ['i-3'])]
    """
    instance_ids = _affected_instances(event)
    if len(instance_ids) <= size:
        return [event]
    chunks = [instance_ids[i:i + size] for i in range(0, len(instance_ids), size)]
    return [{**event, "id": f"{event.get('id')}#part-{number}-of-{len(chunks)}", "resources": chunk,
             "detail": {**event["detail"], "affectedEntities": [{"entityValue": i} for i in chunk]}}
            for number, chunk in enumerate(chunks, start=1)]
