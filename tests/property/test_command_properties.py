"""Properties of the command lifecycle under arbitrary operation sequences."""

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from components.command_tracker import (
    FINAL_STATUSES,
    Command,
    CommandError,
    CommandStatus,
    CommandType,
    LeasePolicy,
    cancel,
    deliver,
    expire,
    lease,
    new_command,
    record_result,
    report_result,
    sort_queue,
    sweep_expired,
)
from tests.fakes.command_store import InMemoryCommandStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)

policies = st.builds(
    LeasePolicy, base_lease_seconds=st.integers(1, 600), max_attempts=st.integers(1, 4)
)
# Times are absolute offsets, so they may also go backwards (clock skew between callers).
moments = st.integers(0, 5000).map(lambda s: T0 + timedelta(seconds=s))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("lease"), moments),
        st.tuples(st.just("expire"), moments),
        st.tuples(st.just("result"), moments, st.booleans()),
        st.tuples(st.just("cancel"), moments),
    ),
    max_size=30,
)


def apply(cmd: Command, op: tuple, policy: LeasePolicy) -> Command:
    kind, now = op[0], op[1]
    if kind == "lease":
        return lease(cmd, now, policy)
    if kind == "expire":
        return expire(cmd, now)
    if kind == "result":
        return record_result(cmd, success=op[2], message=None, now=now).command
    return cancel(cmd, now)


def check_invariants(cmd: Command) -> None:
    assert 0 <= cmd.attempts <= cmd.max_attempts
    if cmd.status is CommandStatus.EXECUTING:
        assert cmd.lease_expires_at is not None and cmd.leased_at is not None
        assert cmd.lease_expires_at > cmd.leased_at
    if cmd.status is CommandStatus.PENDING:
        assert cmd.lease_expires_at is None


RESULTS = (CommandStatus.COMPLETED, CommandStatus.FAILED)


def check_progress(before: Command | None, after: Command) -> None:
    """A result is forever; any other final status is never left again except for a late result."""
    if before is None:
        return
    if before.status in RESULTS:
        assert after == before  # a replay returns it as is
    elif before.is_final:
        assert after == before or (after.status in RESULTS and after.attempts == before.attempts >= 1)


@settings(max_examples=200, deadline=None)
@given(policy=policies, wait=st.integers(0, 600), ops=operations)
def test_final_is_forever_and_invariants_hold(policy, wait, ops):
    cmd = new_command(
        command_id="c", client_id="cl", agent_id="ag", command_type=CommandType.SWITCH,
        priority=50, now=T0, target_mode="ondemand", terminate_wait_seconds=wait, policy=policy,
    )
    final: Command | None = None
    for op in ops:
        try:
            after = apply(cmd, op, policy)
        except CommandError:
            after = cmd  # a refused operation changes nothing
        check_invariants(after)
        check_progress(final, after)
        if after.is_final:
            final = after
            assert after.finished_at is not None
        cmd = after
    if final is not None:
        assert cmd.status in FINAL_STATUSES and cmd.status is not CommandStatus.PENDING


agents_ops = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), moments),
        st.tuples(st.just("report"), moments, st.booleans()),
        st.tuples(st.just("sweep"), moments),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(policy=policies, ops=agents_ops)
def test_service_keeps_store_consistent(policy, ops):
    # GIVEN one command in the fake store, driven by polls, reports and sweeps in any order
    store = InMemoryCommandStore()
    store.add(new_command(command_id="c", client_id="cl", agent_id="ag",
                          command_type=CommandType.HEALTH_CHECK, priority=10, now=T0, policy=policy))
    seen_final = None
    for op in ops:
        try:
            if op[0] == "deliver":
                for cmd in deliver(store, "ag", now=op[1], policy=policy):
                    assert cmd.status is CommandStatus.EXECUTING
            elif op[0] == "report":
                report_result(store, "ag", "c", success=op[2], message=None, now=op[1])
            else:
                sweep_expired(store, store.all(), now=op[1])
        except CommandError:
            pass
        stored = store.get("ag", "c")
        check_invariants(stored)
        check_progress(seen_final, stored)
        if stored.is_final:
            seen_final = stored


priorities = st.integers(0, 100)
created = st.builds(
    lambda s, offset: (T0 + timedelta(microseconds=s)).astimezone(timezone(timedelta(minutes=offset))),
    st.integers(0, 10**10),
    st.integers(-12 * 60, 14 * 60),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(priorities, created), max_size=20))
def test_queue_order_is_priority_desc_then_oldest(specs):
    cmds = [
        new_command(command_id=f"c{i}", client_id="cl", agent_id="ag", command_type="health_check",
                    priority=p, now=t)
        for i, (p, t) in enumerate(specs)
    ]
    ordered = sort_queue(cmds)
    assert sorted(ordered, key=lambda c: c.command_id) == sorted(cmds, key=lambda c: c.command_id)
    for a, b in zip(ordered, ordered[1:]):
        assert a.priority >= b.priority
        if a.priority == b.priority:
            assert a.created_at <= b.created_at


@settings(max_examples=100, deadline=None)
@given(policy=policies, delays=st.lists(st.integers(1, 10_000), min_size=1, max_size=8))
def test_attempts_are_bounded_by_repeated_expiry(policy, delays):
    # GIVEN an agent that never answers
    cmd = new_command(command_id="c", client_id="cl", agent_id="ag", command_type="health_check",
                      priority=10, now=T0, policy=policy)
    now = T0
    for delay in delays * policy.max_attempts:
        if cmd.is_final:
            break
        cmd = lease(cmd, now, policy)
        now = cmd.lease_expires_at + timedelta(seconds=delay)
        cmd = expire(cmd, now)
    # THEN it ends timed out after exactly max_attempts leases, never more
    assert cmd.status is CommandStatus.TIMED_OUT
    assert cmd.attempts == policy.max_attempts
    assert cmd.finished_at is not None
