"""Interruption signals: EventBridge events parsed into one value, their de-duplication group and claim age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from components.errors import ValidationError
from components.sentinel import (
    LOST_STATES,
    TERMINATION_NOTICE_S,
    InvalidSignalError,
    Signal,
    SignalKind,
    SignalSource,
    claim_is_stale,
    parse_event,
    parse_signals,
    signal_group,
    signal_key,
)

WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(detail_type: str = WARNING, **detail) -> dict:
    """An EventBridge EC2 event as AWS sends it."""
    return {"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": detail_type,
            "source": "aws.ec2", "account": "123456789012", "time": "2026-03-01T12:00:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc1234"],
            "detail": {"instance-id": "i-0abc1234", **detail}}


# --- parse_event: the three detail types ---------------------------------------------------------------------


def test_a_termination_warning_has_a_deadline_two_minutes_after_the_event_time():
    """GIVEN a spot interruption warning WHEN parsed THEN it is a termination with time + 120 s as deadline."""
    signal = parse_event(event(WARNING, **{"instance-action": "terminate"}))
    assert signal.kind is SignalKind.TERMINATION
    assert signal.instance_id == "i-0abc1234"
    assert signal.detected_at == T0
    assert signal.deadline == T0 + timedelta(seconds=TERMINATION_NOTICE_S) == T0 + timedelta(seconds=120)
    assert signal.action == "terminate" and signal.state is None
    assert signal.source is SignalSource.EVENTBRIDGE
    assert signal.region == "eu-west-1" and signal.event_id == "7bf73129-1428-4cd3-a780-95db273d1602"
    assert signal.account == "123456789012"  # the sentinel compares it with the instance's account
    assert signal.starts_failover


@pytest.mark.parametrize("account", [None, 123456789012, ["123456789012"]])
def test_an_account_that_is_not_a_string_is_no_account(account):
    raw = event(WARNING)
    raw["account"] = account
    assert parse_event(raw).account is None


def test_a_rebalance_recommendation_has_no_deadline_and_does_not_start_a_failover():
    """GIVEN a rebalance recommendation WHEN parsed THEN no deadline, its own kind, no failover."""
    signal = parse_event(event(REBALANCE))
    assert signal.kind is SignalKind.REBALANCE
    assert signal.detected_at == T0
    assert signal.deadline is None
    assert not signal.starts_failover


@pytest.mark.parametrize("state", ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"])
def test_a_state_change_carries_the_state_from_the_detail_and_no_deadline(state):
    """GIVEN a state-change notification WHEN parsed THEN the state comes from detail.state, no deadline."""
    signal = parse_event(event(STATE_CHANGE, state=state))
    assert signal.kind is SignalKind.STATE_CHANGE
    assert signal.state == state
    assert signal.deadline is None
    assert signal.starts_failover is (state in LOST_STATES)


def test_event_time_with_an_offset_is_normalised_to_utc_and_the_deadline_follows_it():
    """GIVEN a warning whose time has a +02:00 offset WHEN parsed THEN times are the same instant in UTC."""
    raw = {**event(WARNING), "time": "2026-03-01T14:00:00+02:00"}
    signal = parse_event(raw)
    assert signal.detected_at == T0 and signal.detected_at.utcoffset() == timedelta(0)
    assert signal.deadline == T0 + timedelta(seconds=120)


# --- parse_event: rejects -------------------------------------------------------------------------------------


def rejected(raw) -> InvalidSignalError:
    with pytest.raises(InvalidSignalError) as caught:
        parse_event(raw)
    assert isinstance(caught.value, ValidationError)  # the edge maps it like any other bad input
    return caught.value


@pytest.mark.parametrize("raw", [None, "an event", 42, ["detail-type"], ("a", "b")])
def test_a_non_object_event_is_rejected_on_the_event_field(raw):
    """GIVEN something that is not a JSON object WHEN parsed THEN InvalidSignalError on 'event'."""
    assert rejected(raw).field == "event"


@pytest.mark.parametrize("detail_type", ["AWS API Call via CloudTrail", "Scheduled Event", "", None,
                                         "ec2 spot instance interruption warning"])
def test_an_unsupported_detail_type_is_rejected_on_the_detail_type_field(detail_type):
    """GIVEN an event that is not one of the three EC2 detail types WHEN parsed THEN rejected on detail-type."""
    assert rejected(event(detail_type)).field == "detail-type"


def test_an_event_without_detail_type_is_rejected_on_the_detail_type_field():
    raw = event()
    del raw["detail-type"]
    assert rejected(raw).field == "detail-type"


@pytest.mark.parametrize("instance_id", [None, "", "0abc1234", "ami-0abc1234", "I-0ABC", 1234, ["i-0abc"]])
def test_a_missing_or_malformed_instance_id_is_rejected_on_the_instance_id_field(instance_id):
    """GIVEN detail.instance-id absent, not a string or not an instance id WHEN parsed THEN rejected."""
    raw = event()
    raw["detail"]["instance-id"] = instance_id
    assert rejected(raw).field == "detail.instance-id"


@pytest.mark.parametrize("detail", [None, {}])
def test_an_empty_or_missing_detail_is_rejected_on_the_instance_id_field(detail):
    raw = {**event(), "detail": detail}
    assert rejected(raw).field == "detail.instance-id"


@pytest.mark.parametrize("detail", ["i-0abc1234", ["i-0abc1234"], 7, True])
def test_a_non_object_detail_is_rejected_on_the_detail_field(detail):
    """GIVEN an EC2 event whose detail is not an object WHEN parsed THEN InvalidSignalError (not a crash)."""
    raw = {**event(), "detail": detail}
    assert rejected(raw).field == "detail"


@pytest.mark.parametrize("detail_type", [["EC2 Spot Instance Interruption Warning"], {"a": 1}, 7])
def test_a_non_string_detail_type_is_rejected_on_the_detail_type_field(detail_type):
    assert rejected(event(detail_type)).field == "detail-type"


@pytest.mark.parametrize("time", [None, "", "yesterday", "2026-13-01T00:00:00Z", 1767225600, ["2026-03-01"]])
def test_a_missing_or_non_iso_time_is_rejected_on_the_time_field(time):
    """GIVEN an event whose time is absent, not a string or not ISO-8601 WHEN parsed THEN rejected on time."""
    raw = {**event(), "time": time}
    assert rejected(raw).field == "time"


def test_an_event_without_time_is_rejected_on_the_time_field():
    raw = event()
    del raw["time"]
    assert rejected(raw).field == "time"


# --- signal groups and keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "state", "group"),
    [
        (SignalKind.TERMINATION, None, "termination"),
        (SignalKind.TERMINATION, "running", "termination"),
        (SignalKind.STATE_CHANGE, "shutting-down", "termination"),
        (SignalKind.STATE_CHANGE, "terminated", "termination"),
        (SignalKind.STATE_CHANGE, "stopping", "termination"),
        (SignalKind.STATE_CHANGE, "stopped", "termination"),
        (SignalKind.STATE_CHANGE, "running", "state-running"),
        (SignalKind.STATE_CHANGE, "pending", "state-pending"),
        (SignalKind.REBALANCE, None, "rebalance-recommendation"),
        (SignalKind.REBALANCE, "terminated", "rebalance-recommendation"),
        (SignalKind.MANUAL, None, "manual-promotion"),
    ],
)
def test_signal_group_table(kind, state, group):
    """A warning and a lost-state change of the same instance share one group; everything else has its own."""
    assert signal_group(kind, state) == group
    signal = Signal(kind, "i-0abc1234", T0, SignalSource.EVENTBRIDGE, state=state)
    assert signal.group == group


@pytest.mark.parametrize(
    ("kind", "state", "starts"),
    [
        (SignalKind.TERMINATION, None, True),
        (SignalKind.STATE_CHANGE, "terminated", True),
        (SignalKind.STATE_CHANGE, "stopped", True),
        (SignalKind.STATE_CHANGE, "running", False),
        (SignalKind.STATE_CHANGE, "pending", False),
        (SignalKind.REBALANCE, None, False),
        (SignalKind.MANUAL, None, True),
    ],
)
def test_starts_failover_for_termination_group_and_manual_promotion_only(kind, state, starts):
    assert Signal(kind, "i-0abc1234", T0, SignalSource.CLIENT, state=state).starts_failover is starts


def test_a_warning_and_a_terminated_state_change_of_one_instance_share_one_claim_key():
    """GIVEN the warning and the 'terminated' notification of one instance THEN one key (whichever comes first)."""
    warning = parse_event(event(WARNING))
    terminated = parse_event(event(STATE_CHANGE, state="terminated"))
    rebalance = parse_event(event(REBALANCE))
    assert signal_key(warning.instance_id, warning.group) == signal_key(terminated.instance_id, terminated.group)
    assert signal_key(warning.instance_id, warning.group) == "i-0abc1234#termination"
    assert signal_key(rebalance.instance_id, rebalance.group) != signal_key(warning.instance_id, warning.group)
    assert signal_key("i-0other", "termination") != signal_key("i-0abc1234", "termination")


# --- claim age ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "stale"),
    [
        (timedelta(0), False),
        (timedelta(seconds=899), False),
        (timedelta(seconds=900) - timedelta(microseconds=1), False),
        (timedelta(seconds=900), True),  # exactly one window later: a new signal starts a new workflow
        (timedelta(seconds=901), True),
        (timedelta(days=2), True),
        (-timedelta(seconds=30), False),  # a claim "from the future" (clock skew) is fresh
    ],
)
def test_claim_is_stale_from_exactly_one_window(age, stale):
    assert claim_is_stale(T0, T0 + age, 900) is stale


def test_claim_is_stale_with_a_zero_window_is_always_stale_for_the_same_instant():
    assert claim_is_stale(T0, T0, 0) is True


# --- parse_signals: AWS Health scheduled retirements ----------------------------------------------------------


def health(code: str = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", entities=("i-0abc1234",), **changes) -> dict:
    """An AWS Health scheduled-change event as EventBridge delivers it."""
    event = {"version": "0", "id": "h-1", "detail-type": "AWS Health Event", "source": "aws.health",
             "account": "123456789012", "time": "2026-03-01T12:00:00Z", "region": "eu-west-1",
             "resources": list(entities),
             "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": code,
                        "startTime": "Mon, 16 Mar 2026 01:00:00 GMT",
                        "affectedEntities": [{"entityValue": e} for e in entities]}}
    event.update(changes)
    return event


def test_a_scheduled_retirement_is_a_termination_group_signal_without_a_deadline_per_instance():
    signals = parse_signals(health(entities=("i-0abc1234", "i-0def5678", "i-0abc1234")))
    assert [s.instance_id for s in signals] == ["i-0abc1234", "i-0def5678"]
    for s in signals:
        assert s.kind is SignalKind.RETIREMENT and s.group == "termination" and s.starts_failover
        assert s.deadline is None and not s.planned and s.detected_at == T0
        assert (s.source, s.account, s.region, s.event_id) == (SignalSource.EVENTBRIDGE, "123456789012", "eu-west-1", "h-1")


def test_an_ec2_event_is_one_signal_through_parse_signals():
    assert parse_signals(event()) == [parse_event(event())]


@pytest.mark.parametrize("bad", [
    health(code="AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED"),
    health(entities=()),
    health(entities=("vol-0abc",)),
    health(**{"detail-type": "AWS Health Abuse Event"}),
    health(time="soon"),
    health(detail="retire"),
])
def test_a_health_event_that_retires_no_instance_is_invalid(bad):
    with pytest.raises(InvalidSignalError):
        parse_signals(bad)
