from datetime import UTC, datetime, timedelta

import pytest

from components.command_tracker import (
    Command,
    CommandConflictError,
    CommandNotFoundError,
    CommandPriority,
    CommandStatus,
    CommandType,
    IllegalTransitionError,
    LeasePolicy,
    cancel,
    deliver,
    enqueue,
    lease,
    new_command,
    report_result,
    sweep_expired,
)
from tests.fakes.command_store import InMemoryCommandStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = LeasePolicy(base_lease_seconds=60, max_attempts=2)
AGENT = "ag-1"


def make(command_id="cmd-1", priority=CommandPriority.SCHEDULED, agent_id=AGENT, now=T0) -> Command:
    return new_command(
        command_id=command_id,
        client_id="client-1",
        agent_id=agent_id,
        command_type=CommandType.HEALTH_CHECK,
        priority=priority,
        now=now,
        policy=POLICY,
    )


@pytest.fixture
def store():
    return InMemoryCommandStore()


def test_enqueue_rejects_duplicate_ids(store):
    enqueue(store, make())
    with pytest.raises(CommandConflictError):
        enqueue(store, make())


def test_deliver_leases_pending_in_queue_order(store):
    # GIVEN two pending commands for the agent and one for another agent
    enqueue(store, make("low", CommandPriority.SCHEDULED))
    enqueue(store, make("urgent", CommandPriority.EMERGENCY, now=T0 + timedelta(seconds=1)))
    enqueue(store, make("other", agent_id="ag-2"))
    # WHEN the agent polls
    got = deliver(store, AGENT, now=T0 + timedelta(seconds=2), policy=POLICY)
    # THEN it gets its own commands, highest priority first, leased and stored as executing
    assert [c.command_id for c in got] == ["urgent", "low"]
    assert all(c.status is CommandStatus.EXECUTING and c.attempts == 1 for c in got)
    assert store.get(AGENT, "low") == got[1]
    assert store.get("ag-2", "other").status is CommandStatus.PENDING


def test_deliver_again_within_lease_returns_same_commands_without_writes(store):
    enqueue(store, make())
    first = deliver(store, AGENT, now=T0, policy=POLICY)
    writes = store.writes
    again = deliver(store, AGENT, now=T0 + timedelta(seconds=30), policy=POLICY)
    assert again == first
    assert store.writes == writes


def test_deliver_retries_expired_lease_on_the_same_poll(store):
    enqueue(store, make())
    first = deliver(store, AGENT, now=T0, policy=POLICY)[0]
    later = first.lease_expires_at + timedelta(seconds=1)
    # WHEN the agent polls after its lease ran out
    got = deliver(store, AGENT, now=later, policy=POLICY)
    # THEN the command is re-leased at once as attempt 2
    assert [(c.command_id, c.attempts, c.leased_at) for c in got] == [("cmd-1", 2, later)]


def test_deliver_times_out_after_last_attempt(store):
    enqueue(store, make())
    now = T0
    for _ in range(POLICY.max_attempts):
        leased = deliver(store, AGENT, now=now, policy=POLICY)[0]
        now = leased.lease_expires_at + timedelta(seconds=1)
    # WHEN the last lease has expired and the agent polls again
    assert deliver(store, AGENT, now=now, policy=POLICY) == []
    # THEN the command is timed out, not pending
    stored = store.get(AGENT, "cmd-1")
    assert stored.status is CommandStatus.TIMED_OUT
    assert stored.attempts == POLICY.max_attempts


def test_deliver_respects_limit(store):
    for i in range(5):
        enqueue(store, make(f"c{i}", now=T0 + timedelta(seconds=i)))
    got = deliver(store, AGENT, now=T0, policy=POLICY, limit=2)
    assert [c.command_id for c in got] == ["c0", "c1"]
    assert store.get(AGENT, "c2").status is CommandStatus.PENDING


class RacingStore(InMemoryCommandStore):
    """Another poller leases the command between our read and our write."""

    def __init__(self, rival_now: datetime) -> None:
        super().__init__()
        self.rival_now = rival_now
        self.raced = False

    def replace(self, before: Command, after: Command) -> None:
        if not self.raced:
            self.raced = True
            super().replace(before, lease(before, self.rival_now, POLICY))
        super().replace(before, after)


def test_deliver_on_conflict_leaves_the_command_to_the_winner():
    store = RacingStore(rival_now=T0 - timedelta(seconds=1))
    enqueue(store, make())
    got = deliver(store, AGENT, now=T0, policy=POLICY)
    # THEN our write lost: the rival's claim stands and the command is not handed to this poller too
    assert got == []
    assert store.get(AGENT, "cmd-1").leased_at == T0 - timedelta(seconds=1)


def test_deliver_on_conflict_skips_command_cancelled_meanwhile():
    class CancellingStore(InMemoryCommandStore):
        def replace(self, before, after):
            if after.status is CommandStatus.EXECUTING and before.status is CommandStatus.PENDING:
                super().replace(before, cancel(before, T0))
            super().replace(before, after)

    store = CancellingStore()
    enqueue(store, make())
    assert deliver(store, AGENT, now=T0, policy=POLICY) == []
    assert store.get(AGENT, "cmd-1").status is CommandStatus.CANCELLED


def test_report_result_completes_and_replays(store):
    enqueue(store, make())
    deliver(store, AGENT, now=T0, policy=POLICY)
    outcome = report_result(store, AGENT, "cmd-1", success=True, message="ok", now=T0 + timedelta(seconds=10))
    assert outcome.replay is False
    assert store.get(AGENT, "cmd-1").status is CommandStatus.COMPLETED
    writes = store.writes
    again = report_result(store, AGENT, "cmd-1", success=True, message="ok", now=T0 + timedelta(hours=1))
    assert again.replay is True and store.writes == writes


def test_report_result_unknown_command(store):
    with pytest.raises(CommandNotFoundError):
        report_result(store, AGENT, "nope", success=True, message=None, now=T0)


def test_report_result_after_deadline_is_recorded_late(store):
    enqueue(store, make())
    leased = deliver(store, AGENT, now=T0, policy=POLICY)[0]
    # WHEN the result arrives after the lease deadline (and after a sweep re-queued it)
    late = leased.lease_expires_at + timedelta(seconds=1)
    sweep_expired(store, [leased], now=late)
    assert store.get(AGENT, "cmd-1").status is CommandStatus.PENDING
    outcome = report_result(store, AGENT, "cmd-1", success=True, message=None, now=late)
    # THEN it is the command's outcome: completed, never retried
    assert outcome.late and store.get(AGENT, "cmd-1").status is CommandStatus.COMPLETED
    assert deliver(store, AGENT, now=late, policy=POLICY) == []


def _switch(command_id, instance_id):
    return new_command(command_id=command_id, client_id="client-1", agent_id=AGENT,
                       command_type=CommandType.SWITCH, priority=CommandPriority.MANUAL_OVERRIDE, now=T0,
                       target_mode="ondemand", instance_id=instance_id, policy=POLICY)


def test_a_command_for_another_instance_is_never_delivered_to_this_one(store):
    """GIVEN a switch of instance A WHEN a caller on instance B polls THEN it gets nothing, and the
    command waits for A (a retried switch never runs on another instance)."""
    enqueue(store, _switch("sw-a", "i-aaaaaaaa"))
    assert deliver(store, AGENT, now=T0, policy=POLICY, instance_id="i-bbbbbbbb",
                   current_instance_id="i-aaaaaaaa") == []
    assert store.get(AGENT, "sw-a").status is CommandStatus.PENDING
    [cmd] = deliver(store, AGENT, now=T0, policy=POLICY, instance_id="i-aaaaaaaa", current_instance_id="i-aaaaaaaa")
    assert cmd.command_id == "sw-a" and cmd.status is CommandStatus.EXECUTING


def test_a_pending_switch_of_an_instance_the_agent_left_is_superseded(store):
    enqueue(store, _switch("sw-a", "i-aaaaaaaa"))
    assert deliver(store, AGENT, now=T0, policy=POLICY, instance_id="i-bbbbbbbb",
                   current_instance_id="i-bbbbbbbb") == []
    cancelled = store.get(AGENT, "sw-a")
    assert cancelled.status is CommandStatus.CANCELLED and "superseded" in cancelled.message


def test_report_result_on_pending_command_is_illegal(store):
    enqueue(store, make())
    with pytest.raises(IllegalTransitionError):
        report_result(store, AGENT, "cmd-1", success=True, message=None, now=T0)
    assert store.get(AGENT, "cmd-1").status is CommandStatus.PENDING


def test_report_result_conflict_with_identical_concurrent_report_is_a_replay():
    class DuplicateReportStore(InMemoryCommandStore):
        def replace(self, before, after):
            if after.status is CommandStatus.COMPLETED and before.status is CommandStatus.EXECUTING:
                super().replace(before, after)  # the other request's identical write lands first
            super().replace(before, after)

    store = DuplicateReportStore()
    enqueue(store, make())
    deliver(store, AGENT, now=T0, policy=POLICY)
    outcome = report_result(store, AGENT, "cmd-1", success=True, message="ok", now=T0)
    assert outcome.replay is True
    assert outcome.command.status is CommandStatus.COMPLETED


def test_report_result_conflict_with_contradicting_report_raises():
    class ContradictingStore(InMemoryCommandStore):
        def replace(self, before, after):
            if after.status is CommandStatus.COMPLETED:
                from dataclasses import replace

                super().replace(before, replace(after, status=CommandStatus.FAILED, success=False))
            super().replace(before, after)

    store = ContradictingStore()
    enqueue(store, make())
    deliver(store, AGENT, now=T0, policy=POLICY)
    with pytest.raises(IllegalTransitionError):  # re-read: the command already failed
        report_result(store, AGENT, "cmd-1", success=True, message="ok", now=T0)
    assert store.get(AGENT, "cmd-1").status is CommandStatus.FAILED


def test_sweep_expired_only_touches_expired_executing(store):
    enqueue(store, make("expired"))
    enqueue(store, make("fresh", now=T0 + timedelta(minutes=5)))
    enqueue(store, make("waiting"))
    expired = lease(store.get(AGENT, "expired"), T0, POLICY)
    store.replace(store.get(AGENT, "expired"), expired)
    fresh = lease(store.get(AGENT, "fresh"), T0 + timedelta(minutes=5), POLICY)
    store.replace(store.get(AGENT, "fresh"), fresh)
    now = T0 + timedelta(minutes=5, seconds=30)
    # WHEN sweeping every stored command
    changed = sweep_expired(store, store.all(), now=now)
    # THEN only the expired lease is taken back
    assert [c.command_id for c in changed] == ["expired"]
    assert store.get(AGENT, "expired").status is CommandStatus.PENDING
    assert store.get(AGENT, "fresh").status is CommandStatus.EXECUTING
    assert store.get(AGENT, "waiting").status is CommandStatus.PENDING


def test_sweep_skips_commands_changed_since_they_were_read(store):
    enqueue(store, make())
    leased = lease(store.get(AGENT, "cmd-1"), T0, POLICY)
    store.replace(store.get(AGENT, "cmd-1"), leased)
    stale_view = [leased]
    # GIVEN the agent reported in the meantime
    report_result(store, AGENT, "cmd-1", success=True, message=None, now=T0)
    # WHEN a sweep runs on its stale snapshot
    changed = sweep_expired(store, stale_view, now=T0 + timedelta(hours=1))
    # THEN the completed command is left alone
    assert changed == []
    assert store.get(AGENT, "cmd-1").status is CommandStatus.COMPLETED


def test_another_command_for_a_departed_instance_waits_one_base_lease_then_is_superseded(store):
    """GIVEN a prepare_shutdown for the interrupted instance after the agent moved on WHEN nobody on that
    instance picks it up within a base lease THEN it is cancelled, so it never blocks the agent's queue."""
    enqueue(store, new_command(command_id="ps", client_id="client-1", agent_id=AGENT,
                               command_type=CommandType.PREPARE_SHUTDOWN, priority=CommandPriority.EMERGENCY,
                               now=T0, instance_id="i-aaaaaaaa", policy=POLICY))
    assert deliver(store, AGENT, now=T0 + timedelta(seconds=30), policy=POLICY, instance_id="i-bbbbbbbb",
                   current_instance_id="i-bbbbbbbb") == []
    assert store.get(AGENT, "ps").status is CommandStatus.PENDING  # the old instance's agent may still ask
    deliver(store, AGENT, now=T0 + timedelta(seconds=POLICY.base_lease_seconds + 1), policy=POLICY,
            instance_id="i-bbbbbbbb", current_instance_id="i-bbbbbbbb")
    assert store.get(AGENT, "ps").status is CommandStatus.CANCELLED
