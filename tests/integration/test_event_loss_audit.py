"""Interruption event loss audit: every way AWS may deliver an interruption signal (at least once, twice, out of
order, late, after a crash, throttled, through the dead-letter queue and its redrive) must end in exactly one failover
workflow for the loss of a managed instance, or in the event knowingly answered as ignored, with its reason.

The paths walked (docs/ARCHITECTURE.md, "Durable event intake"; infra/README.md): EventBridge rule → SQS event queue
(retries 24 h, then the rule's dead-letter queue) → the ``sentinel`` function's SQS event source (partial batch
responses; 5 receives, then the dead-letter queue; ``make redrive``) → powertools idempotency on the event id →
the (instance, signal group) claim written with the interruption event → ``StartExecution`` named after the
interruption → the failover state machine (its own retries and catches) → the cleanup job, which closes what nobody
will. What already holds and is proved elsewhere is not repeated here (tests/integration/test_event_intake.py,
test_sentinel.py, test_sentinel_aws_faults.py, tests/e2e/test_failover*.py, tests/infra/test_event_intake.py).

Each test says what it tries; one that found a defect says what happened before its fix. Everything runs on the
embedded AWS (moto), the failover state machine executing for real with its tasks in this process. What the audit
found in the CDK stack (a dead-lettered event left unredriven expired without a second alarm) is asserted in
tests/infra/test_event_intake.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import sentinel
from chalicelib.aws import sqs as sqs_adapter
from chalicelib.aws import stepfunctions
from localmode.eventbridge import sqs_event
from tests.e2e.failover_support import register_agent, wait_for, warning
from tests.integration.test_event_intake import empty_event_queue, events_of, executions_named, invoke

pytestmark = pytest.mark.usefixtures("failover_machine")


# --- the sentinel's write after StartExecution ------------------------------------------------------------------


def test_a_failover_that_ends_before_the_sentinel_records_its_start_stays_resolved(api, make_tenant, monkeypatch):
    """GIVEN a warning whose failover ends (a ready standby or a quick replacement: seconds) before the sentinel's
    next write, the ``handling`` status after StartExecution, lands (that write throttled and retried by the SDK, a
    frozen or slow invocation, or a redelivery that read ``detected`` just before the execution resolved it)
    WHEN the sentinel records the start THEN the event stays ``resolved`` with its execution named.

    Found: the sentinel wrote ``status=handling`` unconditionally over the failover's ``resolved``; the event then
    read as a failover still running, and 30 minutes later the cleanup job, finding no execution running, closed it
    ``failed``/``abandoned`` with a critical notification: a failover that succeeded reported as lost."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    real_start = stepfunctions.start

    def start_and_finish(name, payload, *args, **kwargs):
        arn = real_start(name, payload, *args, **kwargs)
        assert wait_for(arn)["status"] == "SUCCEEDED"  # the execution resolved the event meanwhile
        return arn

    monkeypatch.setattr(stepfunctions, "start", start_and_finish)

    assert invoke(api, sqs_event([warning(primary)])) == {"batchItemFailures": []}

    [row] = events_of(client_id)
    assert (row.status, row.success) == ("resolved", True)
    assert row.execution_arn and len(executions_named(row.interruption_id)) == 1

    from chalicelib.jobs import cleanup
    from chalicelib.repositories import interruptions

    monkeypatch.setattr(interruptions, "stuck", lambda status, before: [
        r for r in events_of(client_id) if r.status == status and r.detected_at < before])
    assert cleanup.sweep_stuck(datetime.now(UTC) + timedelta(hours=1)) == []
    [row] = events_of(client_id)
    assert (row.status, row.success) == ("resolved", True)


# --- the sentinel's time within one invocation ------------------------------------------------------------------


class _Killed(BaseException):
    """Lambda ending an invocation at its timeout: nothing of the handler runs after it (not an Exception)."""


class _Context:
    """A Lambda context whose clock the test moves: ``timeout_ms`` at the start, ``cost_ms`` per event handled."""

    def __init__(self, timeout_ms: int, cost_ms: int) -> None:
        self.left, self.cost = timeout_ms, cost_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left


def _slow_batch(make_tenant, monkeypatch):
    """Three warnings of three tenants and an invocation whose events are slow (12 s each of the sentinel's 30 s:
    an EC2 DescribeInstances in a client's account, StartExecution retried by the SDK); the visibility changes the
    sentinel asks for are collected."""
    tenants = [register_agent(make_tenant) for _ in range(3)]
    batch = sqs_event([warning(primary) for _, _, _, primary, _ in tenants])
    real_on_event = sentinel.on_event

    def slow_on_event(event, ctx):
        ctx.left -= ctx.cost
        if ctx.left <= 0:
            raise _Killed("Task timed out after 30.00 seconds")
        return real_on_event(event)

    monkeypatch.setattr(sentinel, "on_event", slow_on_event)
    visibility: list[dict] = []
    monkeypatch.setattr(sqs_adapter, "retry_after", lambda queue, delays: visibility.append(delays) or len(delays))
    return tenants, batch, visibility


def _handled_once(tenant) -> None:
    [row] = events_of(tenant[0])
    assert len(executions_named(row.interruption_id)) == 1
    assert row.execution_arn and wait_for(row.execution_arn)["status"] == "SUCCEEDED"


def test_a_batch_the_invocation_has_no_time_for_sends_its_unstarted_events_again_as_new_messages(
        api, make_tenant, monkeypatch):
    """GIVEN a batch of three slow warnings WHEN the sentinel runs it THEN it starts no event with less than a quarter
    of its time left: the first two are handled, and the third is sent to the event queue again as a new message
    (its first receive) and answered done, so its original is deleted; that copy, received, starts its one failover.

    Found: the sentinel started every message whatever time was left, so the third ran into the timeout: Lambda
    ended the invocation, the whole batch (the two handled warnings too) came back only after the queue's 180 s
    visibility timeout, past the third warning's two minutes, and a batch that always runs out of time went to the
    dead-letter queue after 5 receives, its last warning never handled. Then (2026-12-07) the unstarted event came
    back at once but with its receive count: in a long burst of slow batches one that kept landing last could reach
    the dead-letter queue never tried."""
    client, url = empty_event_queue()
    tenants, batch, visibility = _slow_batch(make_tenant, monkeypatch)

    assert sentinel.on_sqs_batch(batch, _Context(timeout_ms=30_000, cost_ms=12_000)) == {"batchItemFailures": []}

    assert visibility == []
    for tenant in tenants[:2]:
        _handled_once(tenant)
    assert events_of(tenants[2][0]) == []
    [copy] = client.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    assert copy["Body"] == batch["Records"][2]["body"] and copy["Attributes"]["ApproximateReceiveCount"] == "1"
    client.delete_message(QueueUrl=url, ReceiptHandle=copy["ReceiptHandle"])  # received: handled below
    assert sentinel.on_sqs_batch(sqs_event([json.loads(copy["Body"])]),
                                 _Context(30_000, 12_000)) == {"batchItemFailures": []}
    _handled_once(tenants[2])


def test_an_unstarted_event_sqs_will_not_take_again_comes_back_at_once_instead(api, make_tenant, monkeypatch):
    """GIVEN a batch of three slow warnings and SQS refusing the copy of the unstarted third WHEN the sentinel runs it
    THEN the third is a batch item failure, visible again at once (``ChangeMessageVisibility`` 0), and its
    redelivery starts its one failover: nothing is lost when the copy cannot be sent."""
    empty_event_queue()
    tenants, batch, visibility = _slow_batch(make_tenant, monkeypatch)

    def refused(queue, bodies, **kwargs):
        raise sqs_adapter.SendError("1 message(s) not sent (ThrottlingException); 0 sent")

    monkeypatch.setattr(sqs_adapter, "send_all", refused)

    response = sentinel.on_sqs_batch(batch, _Context(timeout_ms=30_000, cost_ms=12_000))

    last = batch["Records"][2]
    assert response == {"batchItemFailures": [{"itemIdentifier": last["messageId"]}]}
    assert visibility == [{last["receiptHandle"]: 0}]
    assert events_of(tenants[2][0]) == []
    assert sentinel.on_sqs_batch(sqs_event([json.loads(last["body"])], receive_count=2),
                                 _Context(30_000, 12_000)) == {"batchItemFailures": []}
    _handled_once(tenants[2])


# --- a late event, the cleanup job and the claim window -----------------------------------------------------------


def test_a_late_warning_still_retried_in_its_claim_window_is_not_abandoned_by_the_cleanup_job(api, make_tenant,
                                                                                             monkeypatch):
    """GIVEN a warning that reaches the sentinel 10 minutes after its time (EventBridge retrying its target, a queue
    backed up behind a throttled sentinel: the ``events-waiting`` alarm), its StartExecution throttled, so the event
    is claimed and left ``detected`` WHEN the cleanup job runs 6 minutes later (16 after the signal: "stuck") and SQS
    then delivers the warning again (its fifth receive, inside the claim's 15 minutes)
    THEN the cleanup job leaves the event alone while its claim is held, and the redelivery starts its one failover.

    Found: the cleanup job measured "stuck" from the signal's time, the claim from its receive, so it closed the event
    ``abandoned`` (the client told it was never handled) while the claim still made every copy of the signal a
    duplicate of it: the redelivery answered ``duplicate`` and was deleted, and no failover ever ran."""
    from chalicelib import clock
    from chalicelib.jobs import cleanup
    from chalicelib.repositories import interruptions
    from tests.faults import inject

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    received = datetime.now(UTC)
    event = {**warning(primary), "time": (received - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    inject(monkeypatch, "StartExecution", "ThrottlingException", times=1)
    with pytest.raises(Exception):  # noqa: B017 - its only message failed: the whole batch comes back
        invoke(api, sqs_event([event]))
    [row] = events_of(client_id)
    assert row.status == "detected" and executions_named(row.interruption_id) == []

    monkeypatch.setattr(interruptions, "stuck", lambda status, before: [
        r for r in events_of(client_id) if r.status == status and r.detected_at < before])
    assert cleanup.sweep_stuck(received + timedelta(minutes=6)) == []
    assert events_of(client_id)[0].status == "detected"

    monkeypatch.setattr(clock, "now", lambda: received + timedelta(minutes=7))
    assert invoke(api, sqs_event([event], receive_count=5)) == {"batchItemFailures": []}
    [row] = events_of(client_id)
    assert len(executions_named(row.interruption_id)) == 1
    assert wait_for(row.execution_arn)["status"] == "SUCCEEDED"
    [row] = events_of(client_id)
    assert (row.status, row.success) == ("resolved", True)


# --- holds: a crash mid-event, the dead-letter queue and its redrive -------------------------------------------


def _dies_in_start_execution(monkeypatch, event: dict, *, execution_ends_first: bool) -> None:
    """The sentinel's invocation (1.5 s) handles ``event`` and dies inside StartExecution (Lambda's timeout or a
    crash: no handler code runs after it, the idempotency record is left in progress): before the execution started,
    or once it had started and run to its end (a quick hand-over). Later starts are the real one."""
    real_start = stepfunctions.start

    def dies(name, payload, *args, **kwargs):
        monkeypatch.setattr(stepfunctions, "start", real_start)
        if execution_ends_first:
            assert wait_for(real_start(name, payload, *args, **kwargs))["status"] == "SUCCEEDED"
        raise _Killed("Task timed out")

    monkeypatch.setattr(stepfunctions, "start", dies)
    monkeypatch.setattr(sqs_adapter, "retry_after", lambda queue, delays: len(delays))
    with pytest.raises(_Killed):
        sentinel.on_sqs_batch(sqs_event([event]), _Context(timeout_ms=1500, cost_ms=0))


def test_an_invocation_that_dies_mid_event_neither_loses_it_nor_runs_it_twice(api, make_tenant, monkeypatch):
    """GIVEN a warning whose invocation dies after the claim, inside StartExecution (Lambda's timeout or a crash: no
    handler code runs after it, the idempotency record is left in progress) WHEN SQS delivers the warning again while
    that invocation's time is not over THEN it is a batch item failure (the first may still be running: nothing runs
    twice); delivered again once it is over, it starts the one failover (the duplicate of its own claim). Holds:
    powertools bounds an in-progress record by the invocation's remaining time (``register_lambda_context``)."""

    client_id, _, _, primary, _ = register_agent(make_tenant)
    event = warning(primary)
    _dies_in_start_execution(monkeypatch, event, execution_ends_first=False)
    [row] = events_of(client_id)
    assert row.status == "detected" and executions_named(row.interruption_id) == []

    _redelivered_in_progress_then_after(client_id, event, row, executions_before=0)


def test_an_invocation_that_dies_after_its_failover_ended_names_the_execution_on_redelivery(api, make_tenant,
                                                                                           monkeypatch):
    """GIVEN a warning whose invocation starts the failover, which ends (a quick hand-over) before the invocation
    dies (its timeout, before it could name the execution on the event and write the "failover started" audit
    entry) WHEN SQS delivers the warning again after that invocation's time THEN the event, ``resolved`` by the
    execution, names its one execution and the audit log has its start, once.

    Found: the redelivery saw the event past ``detected`` without an execution ARN and did nothing, so the event
    never named its execution (the admin's link to the workflow's history) and the audit log had the failover's
    completion without its start."""
    import time

    from chalicelib.repositories import activity

    client_id, _, _, primary, _ = register_agent(make_tenant)
    event = warning(primary)
    _dies_in_start_execution(monkeypatch, event, execution_ends_first=True)
    [row] = events_of(client_id)
    started = f"{row.interruption_id}:started"
    assert (row.status, row.execution_arn) == ("resolved", None)
    assert not activity.event_recorded(row.detected_at, started)

    time.sleep(1.6)  # the first invocation's time is over
    assert sentinel.on_sqs_batch(sqs_event([event], receive_count=2),
                                 _Context(timeout_ms=30_000, cost_ms=0)) == {"batchItemFailures": []}
    [again] = events_of(client_id)
    assert (again.status, again.success) == ("resolved", True)
    assert again.execution_arn == executions_named(row.interruption_id)[0]["executionArn"]
    assert activity.event_recorded(row.detected_at, started)


def test_a_handled_warning_whose_stored_result_is_throttled_comes_back_as_a_duplicate_of_itself(api, make_tenant,
                                                                                              monkeypatch):
    """GIVEN a warning handled to the end (its failover started), then the idempotency record's success write
    throttled (DynamoDB, after the SDK's retries) WHEN SQS delivers it again, first while the invocation's time is
    not over, then after THEN the first redelivery fails (in progress: nothing runs twice) and the second is a
    duplicate of its own claim: one interruption, one execution. Holds."""

    from tests.faults import inject

    client_id, _, _, primary, _ = register_agent(make_tenant)
    event = warning(primary)
    fault = inject(monkeypatch, "UpdateItem", "ProvisionedThroughputExceededException",
                   when=lambda params: "idempotency" in params["TableName"])
    monkeypatch.setattr(sqs_adapter, "retry_after", lambda queue, delays: len(delays))

    with pytest.raises(Exception):  # noqa: B017 - its only message failed: the batch comes back
        sentinel.on_sqs_batch(sqs_event([event]), _Context(timeout_ms=1500, cost_ms=0))
    assert len(fault.hits) == 1
    [row] = events_of(client_id)
    assert len(executions_named(row.interruption_id)) == 1

    _redelivered_in_progress_then_after(client_id, event, row, executions_before=1)


def test_a_dead_lettered_warning_redriven_after_its_event_was_abandoned_fails_the_agent_over_once(api, make_tenant,
                                                                                               monkeypatch):
    """GIVEN a warning whose StartExecution fails on all 5 receives (Step Functions impaired ≈ 7 minutes): the
    message goes to the dead-letter queue (alarm), and once its claim is over the cleanup job closes the event
    ``abandoned`` (client told) WHEN the operator redrives it (``make redrive``: the same body on the event queue)
    THEN the agent, still on the lost instance, is failed over exactly once. Holds: no stored idempotency result for
    a failed event, a claim past its window is taken again, and the execution is named after the new event."""
    from chalicelib import clock
    from chalicelib.jobs import cleanup
    from chalicelib.repositories import interruptions
    from tests.faults import inject

    client_id, _, _, primary, _ = register_agent(make_tenant)
    start = datetime.now(UTC)
    event = warning(primary)
    inject(monkeypatch, "StartExecution", "ThrottlingException", times=5)
    for receive in range(1, 6):
        with pytest.raises(Exception):  # noqa: B017 - its only message failed: the batch comes back
            invoke(api, sqs_event([event], receive_count=receive))
    [stuck] = events_of(client_id)
    assert stuck.status == "detected"

    monkeypatch.setattr(interruptions, "stuck", lambda status, before: [
        r for r in events_of(client_id) if r.status == status and r.detected_at < before])
    assert cleanup.sweep_stuck(start + timedelta(minutes=16)) == [stuck.interruption_id]

    monkeypatch.setattr(clock, "now", lambda: start + timedelta(minutes=20))
    assert invoke(api, sqs_event([event])) == {"batchItemFailures": []}  # the redriven copy
    rows = {r.interruption_id: r for r in events_of(client_id)}
    assert rows[stuck.interruption_id].response_action == "abandoned"
    [handled] = [r for r in rows.values() if r.interruption_id != stuck.interruption_id]
    assert executions_named(stuck.interruption_id) == [] and len(executions_named(handled.interruption_id)) == 1
    assert wait_for(handled.execution_arn)["status"] == "SUCCEEDED"
    assert invoke(api, sqs_event([event], receive_count=2)) == {"batchItemFailures": []}  # redriven twice: stored
    assert len(events_of(client_id)) == 2


# --- one AWS Health event, several instances ----------------------------------------------------------------------


def test_a_retirement_naming_several_instances_fails_each_over_whatever_happens_to_the_first(api, make_tenant,
                                                                                             monkeypatch):
    """GIVEN one AWS Health scheduled retirement naming two managed primaries (two tenants of one account), the first
    one's handling failing (its StartExecution throttled on every receive: a hot partition, a tenant's own trouble)
    WHEN the sentinel receives the event THEN the second primary is failed over on that same receive, the message
    comes back for the first alone to finish, and once it can, each has exactly one failover.

    Found: the instances were handled in order and the first failure ended the event's handling, so the second was
    not even tried: while the first kept failing, the second waited, and after 5 receives the whole event was in
    the dead-letter queue, the second tenant's retirement never failed over (one tenant's trouble stopped another's)."""
    from tests.faults import inject
    from tests.integration.test_event_intake import retirement

    (first_client, _, _, first, _), (second_client, _, _, second, _) = (register_agent(make_tenant),
                                                                        register_agent(make_tenant))
    fault = inject(monkeypatch, "StartExecution", "ThrottlingException", times=5,
                   when=lambda params: json.loads(params["input"])["instance_id"] == first)
    event = retirement(first, second)

    with pytest.raises(Exception):  # noqa: B017 - its only message failed: the batch comes back
        invoke(api, sqs_event([event]))
    assert len(fault.hits) == 1
    [started] = events_of(second_client)
    assert len(executions_named(started.interruption_id)) == 1
    [waiting] = events_of(first_client)
    assert waiting.status == "detected" and executions_named(waiting.interruption_id) == []

    fault.times = len(fault.hits)  # the first tenant's trouble is over
    assert invoke(api, sqs_event([event], receive_count=2)) == {"batchItemFailures": []}
    for client_id in (first_client, second_client):
        [row] = events_of(client_id)
        assert len(executions_named(row.interruption_id)) == 1
        assert wait_for(row.execution_arn)["status"] == "SUCCEEDED"


# --- an event let go is let go knowingly --------------------------------------------------------------------------


def test_every_event_the_queue_lets_go_is_logged_with_what_was_done_and_why(api, make_tenant, caplog):
    """GIVEN a batch of a warning for a managed primary, one for an instance nobody manages and a late copy (another
    event id) of a warning whose failover already replaced its instance WHEN the sentinel handles it (every message
    deleted) THEN one log line per event names its id, instance, action and reason: an event let go on purpose is
    known to have been, and why.

    Found: only failures, rejections and a few account checks were logged; an ignored event (unmanaged instance, a
    replaced primary, a deleted agent, a user's stop ...) left no trace but the idempotency record, gone in 24 h."""
    from tests.conftest import new_instance_id

    client_id, _, _, primary, _ = register_agent(make_tenant)
    replaced_client, _, _, replaced, _ = register_agent(make_tenant)
    assert invoke(api, sqs_event([warning(replaced)])) == {"batchItemFailures": []}
    [done] = events_of(replaced_client)
    assert wait_for(done.execution_arn)["status"] == "SUCCEEDED"  # another instance is the agent's primary now
    events = [warning(primary), warning(new_instance_id()), warning(replaced)]

    caplog.clear()
    assert invoke(api, sqs_event(events)) == {"batchItemFailures": []}

    lines = {r.event_id: r for r in caplog.records if r.getMessage() == "event handled"}
    assert [(lines[e["id"]].instance_id, lines[e["id"]].action) for e in events] == [
        (primary, "failover_started"), (events[1]["detail"]["instance-id"], "ignored"), (replaced, "duplicate")]
    assert lines[events[1]["id"]].reason == "unmanaged instance"
    assert lines[events[2]["id"]].interruption_id == done.interruption_id
    [row] = events_of(client_id)
    wait_for(row.execution_arn)


# --- the state machine's own "nothing to do" ------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["plan", "launch"])
def test_a_failover_with_nothing_left_to_do_closes_its_event_as_no_action(api, make_tenant, monkeypatch, step):
    """GIVEN a warning whose failover finds, at its plan or at its launch, the agent already on another instance (a
    switch of its own, a client's promotion: another signal group, so another execution) WHEN the execution ends
    (``NothingToDo``, Succeed) THEN the event is closed ``resolved``/``no-action`` with the reason, and the cleanup
    job, 30 minutes on, has nothing to close.

    Found: those two exits wrote ``no-action`` and the reason but left the event ``handling``; the execution having
    ended, the cleanup job closed it ``failed``/``abandoned`` 30 minutes later with a critical notification ("the
    failover stopped without recording an outcome") and the StuckInterruptions alarm: a signal knowingly ignored
    reported as a failover lost."""
    from chalicelib import failover
    from chalicelib.jobs import cleanup
    from chalicelib.repositories import interruptions
    from chalicelib.tables import AgentTable
    from tests.e2e.failover_support import ZONES, launch_primary

    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    elsewhere = launch_primary(itype, ZONES[2])
    real_step = getattr(failover, step)

    def moved_meanwhile(state):
        AgentTable(client_id, agent_id).update(actions=[AgentTable.instance_id.set(elsewhere)])
        return real_step(state)

    monkeypatch.setattr(failover, step, moved_meanwhile)
    assert invoke(api, sqs_event([warning(primary)])) == {"batchItemFailures": []}
    [row] = events_of(client_id)
    assert wait_for(row.execution_arn)["status"] == "SUCCEEDED"

    [row] = events_of(client_id)
    assert (row.status, row.response_action) == ("resolved", "no-action")
    assert "moved to another instance" in row.error and row.completed_at is not None
    monkeypatch.setattr(interruptions, "stuck", lambda status, before: [
        r for r in events_of(client_id) if r.status == status and r.detected_at < before])
    assert cleanup.sweep_stuck(datetime.now(UTC) + timedelta(minutes=31)) == []


# --- out of order: a rebalance recommendation after the interruption warning -----------------------------------


def test_a_rebalance_recommendation_after_the_warning_prewarms_nothing_for_an_instance_being_failed_over(
        api, make_tenant, monkeypatch):
    """GIVEN a warning for a primary on a risky pool, its failover claimed and on its way (here its StartExecution
    throttled: the redelivery starts it) WHEN the pool's rebalance recommendation arrives after it (AWS documents that
    it can come at the same time as or after the two-minute notice) THEN it pre-warms no standby: the event is
    resolved ``no-action`` saying a failover is under way, and the redelivered warning starts the one failover.

    Found: the recommendation, in its own de-duplication group, pre-warmed a standby for an instance the failover was
    already replacing: a second reaction to the same loss, one more instance launched and paid for (until its hour's
    expiry), and a standby the failover's plan could take as ready to promote while it was still booting."""
    from chalicelib.repositories import pools as pool_repo
    from chalicelib.repositories import replicas as replica_repo
    from tests.e2e.failover_support import ZONES, rebalance
    from tests.faults import inject

    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    pool_repo.save_risk([(f"{itype}.{ZONES[0]}", 0.9, "model", "test")], 3600, datetime.now(UTC))
    inject(monkeypatch, "StartExecution", "ThrottlingException", times=1)
    warned = warning(primary)
    with pytest.raises(Exception):  # noqa: B017 - its only message failed: the batch comes back
        invoke(api, sqs_event([warned]))

    assert invoke(api, sqs_event([rebalance(primary)])) == {"batchItemFailures": []}
    assert replica_repo.for_agent(agent_id) == []
    recommendation = next(r for r in events_of(client_id) if r.signal_type == "rebalance-recommendation")
    assert (recommendation.status, recommendation.response_action) == ("resolved", "no-action")

    assert invoke(api, sqs_event([warned], receive_count=2)) == {"batchItemFailures": []}
    [failover] = [r for r in events_of(client_id) if r.signal_type == "termination-warning"]
    assert len(executions_named(failover.interruption_id)) == 1
    assert wait_for(failover.execution_arn)["status"] == "SUCCEEDED"


def _redelivered_in_progress_then_after(client_id, event, row, executions_before):
    """SQS delivers ``event`` again while the first invocation's time (1.5 s) is not over: the batch fails (the
    idempotency record is in progress) and the event's executions stay ``executions_before`` in number; then after it: the event is
    handled once more, as a duplicate of its own claim — one interruption, one execution, which succeeds."""
    import time

    with pytest.raises(Exception):  # noqa: B017 - its only message failed (in progress): the batch comes back
        sentinel.on_sqs_batch(sqs_event([event], receive_count=2), _Context(timeout_ms=30_000, cost_ms=0))
    assert len(executions_named(row.interruption_id)) == executions_before
    time.sleep(1.6)  # the first invocation's time is over
    assert sentinel.on_sqs_batch(sqs_event([event], receive_count=3),
                                 _Context(timeout_ms=30_000, cost_ms=0)) == {"batchItemFailures": []}
    [again] = events_of(client_id)
    assert again.interruption_id == row.interruption_id and len(executions_named(row.interruption_id)) == 1
    assert wait_for(again.execution_arn)["status"] == "SUCCEEDED"
