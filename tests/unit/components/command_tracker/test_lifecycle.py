from datetime import UTC, datetime, timedelta, timezone

import pytest

from components.command_tracker import (
    FINAL_STATUSES,
    LEGAL_TRANSITIONS,
    TIMED_OUT_MESSAGE,
    Command,
    CommandError,
    CommandPriority,
    CommandStatus,
    CommandType,
    IllegalTransitionError,
    InvalidCommandError,
    LEGACY_AGENT,
    LEGACY_V3_AGENT,
    SPOT_AGENT,
    LeasePolicy,
    timings_for_agent_version,
    cancel,
    expire,
    extend,
    is_lease_expired,
    lease,
    new_command,
    queue_key,
    record_result,
    sort_queue,
    transition,
)
from components.errors import ValidationError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = LeasePolicy(base_lease_seconds=300, max_attempts=3)


def make(**overrides) -> Command:
    fields = dict(
        command_id="cmd-1",
        client_id="client-1",
        agent_id="ag-1",
        command_type=CommandType.HEALTH_CHECK,
        priority=CommandPriority.SCHEDULED,
        now=T0,
        policy=POLICY,
    )
    fields.update(overrides)
    return new_command(**fields)


# --- creation -------------------------------------------------------------------------------


def test_new_command_is_pending_with_policy_attempts():
    cmd = make(policy=LeasePolicy(max_attempts=5))
    assert cmd.status is CommandStatus.PENDING
    assert (cmd.attempts, cmd.max_attempts, cmd.created_at) == (0, 5, T0)
    assert cmd.lease_expires_at is None and not cmd.is_final


def test_new_command_accepts_type_as_string():
    cmd = make(command_type="switch", target_mode="spot", target_pool_id="m5.large.us-east-1a")
    assert cmd.command_type is CommandType.SWITCH


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": True}, "priority"),
        ({"command_type": "reboot"}, "command_type"),
        ({"target_mode": "reserved"}, "target_mode"),
        ({"command_type": CommandType.SWITCH}, "target_mode"),
        ({"command_type": CommandType.EMERGENCY_SWITCH}, "target_mode"),
        ({"command_type": CommandType.SWITCH, "target_mode": "spot"}, "target_pool_id"),
        (
            {"command_type": CommandType.SWITCH_TO_ONDEMAND, "target_mode": "spot", "target_pool_id": "p"},
            "target_mode",
        ),
        ({"terminate_wait_seconds": 3601}, "terminate_wait_seconds"),
        ({"terminate_wait_seconds": -1}, "terminate_wait_seconds"),
        ({"command_id": ""}, "command_id"),
        ({"agent_id": "  "}, "agent_id"),
        ({"now": datetime(2024, 1, 1)}, "now"),
    ],
)
def test_new_command_validation_names_the_field(overrides, field):
    # GIVEN one invalid input  WHEN creating  THEN InvalidCommandError points at it
    with pytest.raises(InvalidCommandError) as info:
        make(**overrides)
    assert info.value.field == field
    assert isinstance(info.value, ValidationError)


def test_switch_to_ondemand_needs_no_pool():
    cmd = make(command_type=CommandType.SWITCH, target_mode="ondemand", terminate_wait_seconds=3600)
    assert cmd.target_pool_id is None and cmd.terminate_wait_seconds == 3600


def test_executing_command_without_deadline_cannot_exist():
    with pytest.raises(InvalidCommandError):
        transition(make(), CommandStatus.EXECUTING)


# --- transitions table ----------------------------------------------------------------------


def test_final_states_are_never_delivered_again_and_only_take_a_late_result():
    results = {CommandStatus.COMPLETED, CommandStatus.FAILED}
    for status in FINAL_STATUSES:
        assert CommandStatus.EXECUTING not in LEGAL_TRANSITIONS[status]
        assert LEGAL_TRANSITIONS[status] <= results
    assert LEGAL_TRANSITIONS[CommandStatus.COMPLETED] == LEGAL_TRANSITIONS[CommandStatus.FAILED] == frozenset()
    assert LEGAL_TRANSITIONS[CommandStatus.PENDING] == {CommandStatus.EXECUTING, CommandStatus.CANCELLED} | results


def test_transition_refuses_illegal_moves():
    done = cancel(make(), T0)
    with pytest.raises(IllegalTransitionError) as info:
        transition(done, CommandStatus.PENDING)
    assert (info.value.frm, info.value.to) == (CommandStatus.CANCELLED, CommandStatus.PENDING)


# --- lease ----------------------------------------------------------------------------------


def test_lease_sets_deadline_including_terminate_wait():
    # GIVEN a switch that waits 120 s before terminating the old instance
    cmd = make(command_type=CommandType.SWITCH, target_mode="ondemand", terminate_wait_seconds=120)
    # WHEN leased
    leased = lease(cmd, T0 + timedelta(seconds=5), POLICY)
    # THEN a legacy agent (the default) gets base lease + image wait + launch wait + the wait + termination
    # wait, and one attempt is used
    assert leased.status is CommandStatus.EXECUTING
    assert leased.attempts == 1
    assert leased.leased_at == T0 + timedelta(seconds=5)
    assert leased.lease_expires_at == T0 + timedelta(seconds=5 + 300 + 660 + 360 + 120 + 360)


def test_lease_only_from_pending():
    leased = lease(make(), T0, POLICY)
    with pytest.raises(IllegalTransitionError):
        lease(leased, T0, POLICY)


def test_lease_refuses_pending_command_without_attempts_left():
    # GIVEN a (corrupt) pending command that already used every attempt
    cmd = Command(**{**make().__dict__, "attempts": 3})
    with pytest.raises(IllegalTransitionError):
        lease(cmd, T0, POLICY)


def test_is_lease_expired_boundary():
    leased = lease(make(), T0, POLICY)
    deadline = leased.lease_expires_at
    assert not is_lease_expired(leased, deadline)
    assert is_lease_expired(leased, deadline + timedelta(microseconds=1))
    assert not is_lease_expired(make(), T0 + timedelta(days=1))  # pending: no lease to expire


# --- expire ---------------------------------------------------------------------------------


def test_expire_with_attempts_left_returns_to_pending_without_lease():
    leased = lease(make(), T0, POLICY)
    retried = expire(leased, leased.lease_expires_at + timedelta(seconds=1))
    assert retried.status is CommandStatus.PENDING
    assert retried.attempts == 1
    assert retried.leased_at is None and retried.lease_expires_at is None
    assert retried.finished_at is None


def test_expire_on_last_attempt_times_out():
    # GIVEN a command leased and expired until its last attempt
    cmd, now = make(), T0
    for _ in range(POLICY.max_attempts - 1):
        cmd = lease(cmd, now, POLICY)
        now = cmd.lease_expires_at + timedelta(seconds=1)
        cmd = expire(cmd, now)
    cmd = lease(cmd, now, POLICY)
    now = cmd.lease_expires_at + timedelta(seconds=1)
    # WHEN the last lease expires
    final = expire(cmd, now)
    # THEN it is timed out for good
    assert final.status is CommandStatus.TIMED_OUT
    assert final.attempts == POLICY.max_attempts
    assert final.finished_at == now
    assert final.message == TIMED_OUT_MESSAGE
    assert final.is_final


def test_expire_refuses_live_lease_and_non_executing():
    leased = lease(make(), T0, POLICY)
    with pytest.raises(CommandError) as info:
        expire(leased, leased.lease_expires_at)
    assert not isinstance(info.value, IllegalTransitionError)
    with pytest.raises(IllegalTransitionError):
        expire(make(), T0 + timedelta(days=1))


# --- record_result --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "status"), [(True, CommandStatus.COMPLETED), (False, CommandStatus.FAILED)]
)
def test_record_result_within_lease(success, status):
    leased = lease(make(), T0, POLICY)
    now = leased.lease_expires_at  # the deadline itself still counts
    outcome = record_result(leased, success=success, message="done", now=now)
    assert outcome.replay is False
    assert outcome.command.status is status
    done = outcome.command
    assert (done.success, done.message, done.finished_at) == (success, "done", now)


def test_record_result_replay_is_idempotent():
    leased = lease(make(), T0, POLICY)
    first = record_result(leased, success=True, message="ok", now=T0).command
    # WHEN the agent resends the same result later (even after the deadline)
    again = record_result(first, success=True, message="ok (retry)", now=T0 + timedelta(days=1))
    # THEN nothing changes and it is flagged as a replay
    assert again.replay is True
    assert again.command == first


def test_record_result_contradicting_a_final_result_is_illegal():
    leased = lease(make(), T0, POLICY)
    done = record_result(leased, success=True, message=None, now=T0).command
    with pytest.raises(IllegalTransitionError):
        record_result(done, success=False, message=None, now=T0)


def test_record_result_after_deadline_is_recorded_as_late():
    """GIVEN a lease that ran out WHEN the agent's result arrives THEN it is recorded (never a retry)."""
    leased = lease(make(), T0, POLICY)
    outcome = record_result(leased, success=True, message="done", now=leased.lease_expires_at + timedelta(seconds=1))
    assert outcome.command.status is CommandStatus.COMPLETED and outcome.late and not outcome.replay
    on_time = record_result(leased, success=True, message="done", now=leased.lease_expires_at)
    assert not on_time.late  # a result exactly at the deadline still counts as on time


@pytest.mark.parametrize("state", ["requeued", "timed_out", "superseded"])
@pytest.mark.parametrize("success", [True, False])
def test_a_late_result_of_a_delivered_command_is_recorded_whatever_the_server_did_meanwhile(state, success):
    """GIVEN a command that was delivered and then re-queued, timed out or cancelled as superseded
    WHEN the agent that ran it reports THEN its result is the command's outcome, marked late."""
    cmd = lease(make(policy=LeasePolicy(max_attempts=2 if state != "timed_out" else 1)), T0, POLICY)
    cmd = expire(cmd, cmd.lease_expires_at + timedelta(seconds=1))
    if state == "superseded":
        cmd = cancel(cmd, T0 + timedelta(hours=1), "superseded")
    outcome = record_result(cmd, success=success, message="late", now=T0 + timedelta(hours=2))
    assert outcome.late and outcome.command.success is success
    assert outcome.command.status is (CommandStatus.COMPLETED if success else CommandStatus.FAILED)


def test_lease_covers_what_a_legacy_switch_makes_its_agent_wait():
    """A legacy v4 switch: image wait (the early 4.0.0 builds' AMI, v3.2's snapshot) + launch wait + terminate
    wait + termination wait, on top of the base lease; without a terminate wait, until the new instance runs."""
    switch = make(command_type=CommandType.SWITCH, target_mode="ondemand", terminate_wait_seconds=300)
    legacy = lease(switch, T0, LeasePolicy(base_lease_seconds=300, agent=LEGACY_AGENT))
    assert legacy.lease_expires_at - T0 == timedelta(seconds=300 + 660 + 360 + 300 + 360)
    ours = lease(switch, T0, LeasePolicy(base_lease_seconds=300, agent=SPOT_AGENT))
    assert ours.lease_expires_at - T0 == timedelta(seconds=300 + 360)  # ours reports before terminating
    no_wait = make(command_type=CommandType.SWITCH, target_mode="ondemand", terminate_wait_seconds=0)
    assert lease(no_wait, T0, LeasePolicy(agent=LEGACY_AGENT)).lease_expires_at - T0 == timedelta(seconds=1320)
    assert lease(no_wait, T0, LeasePolicy(agent=LEGACY_V3_AGENT)).lease_expires_at - T0 == timedelta(seconds=1320)
    assert lease(make(), T0, LeasePolicy(agent=LEGACY_AGENT)).lease_expires_at - T0 == timedelta(seconds=300)


@pytest.mark.parametrize("version,kind", [("4.0.0", LEGACY_AGENT), ("3.2.0", LEGACY_V3_AGENT), (None, LEGACY_AGENT),
                                          ("garbage", LEGACY_AGENT), ("5.0.0", SPOT_AGENT), ("v6.1", SPOT_AGENT)])
def test_agent_kind_from_its_version(version, kind):
    assert timings_for_agent_version(version) is kind


def test_extend_renews_an_executing_lease_and_never_shortens_it():
    leased = lease(make(), T0, POLICY)
    later = extend(leased, T0 + timedelta(seconds=200), POLICY)
    assert later.lease_expires_at == T0 + timedelta(seconds=500) and later.attempts == leased.attempts
    assert extend(later, T0, POLICY).lease_expires_at == later.lease_expires_at
    with pytest.raises(IllegalTransitionError):
        extend(make(), T0, POLICY)  # pending: nothing to extend


@pytest.mark.parametrize("state", ["pending", "cancelled"])
def test_record_result_on_a_command_never_delivered_is_illegal(state):
    cmd = make(policy=LeasePolicy(max_attempts=1))
    if state == "cancelled":
        cmd = cancel(cmd, T0)
    with pytest.raises(IllegalTransitionError):
        record_result(cmd, success=True, message=None, now=T0)


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_only_pending():
    cancelled = cancel(make(), T0, reason="operator")
    assert cancelled.status is CommandStatus.CANCELLED
    assert cancelled.finished_at == T0 and cancelled.message == "operator"
    with pytest.raises(IllegalTransitionError):
        cancel(lease(make(), T0, POLICY), T0)


# --- queue order ----------------------------------------------------------------------------


def test_queue_order_priority_desc_then_oldest_then_id():
    low_old = make(command_id="a", priority=10, now=T0)
    high_new = make(command_id="b", priority=100, now=T0 + timedelta(minutes=5))
    mid_new = make(command_id="c", priority=50, now=T0 + timedelta(minutes=1))
    mid_old = make(command_id="d", priority=50, now=T0)
    mid_old_tie = make(command_id="c2", priority=50, now=T0)
    ordered = sort_queue([low_old, mid_new, high_new, mid_old, mid_old_tie])
    assert [c.command_id for c in ordered] == ["b", "c2", "d", "c", "a"]


def test_queue_key_normalises_timezone_and_keeps_microseconds():
    # GIVEN the same instant expressed in another offset
    other_tz = (T0 + timedelta(microseconds=7)).astimezone(timezone(timedelta(hours=2)))
    cmd = make(priority=0, now=other_tz)
    assert queue_key(cmd) == "100#2024-05-01T12:00:00.000007+00:00#cmd-1"
    earlier = make(priority=0, now=T0)
    assert queue_key(earlier) < queue_key(cmd)
