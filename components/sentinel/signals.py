"""Interruption signals: what EventBridge and the agent tell us, reduced to one value.

A termination warning (EventBridge or the agent's ``spot/instance-action``) and a state change of a
primary to shutting-down/terminated/stopping/stopped are the same *group*: whichever arrives first
starts the failover, the others are duplicates within the window. Rebalance recommendations are their
own group. A promotion asked for (a client's manual promotion, the coordinator's planned return from
on-demand) is one group of its own, whoever asked: one hand-over per instance within the window.
Nothing here sleeps: a burst is many independent invocations (LEGACY §9.1 defect).
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
    "LOST_STATES",
    "PROMOTIONS",
    "TERMINATION_NOTICE_S",
    "Signal",
    "SignalKind",
    "SignalSource",
    "capacity_kind",
    "claim_is_stale",
    "parse_event",
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
    """
    if kind is SignalKind.TERMINATION or (kind is SignalKind.STATE_CHANGE and state in LOST_STATES):
        return "termination"
    if kind in PROMOTIONS:
        return SignalKind.MANUAL.value
    if kind is SignalKind.STATE_CHANGE:
        return f"state-{state}"
    return kind.value


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
    >>> capacity_kind(SignalKind.PLANNED) is None
    True
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
    return state in STOP_STATES and bool(reason_code) and reason_code.startswith("Client.")


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
                  account=event["account"] if isinstance(event.get("account"), str) else None)
