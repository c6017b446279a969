"""The fan-out workers' time budget (chalicelib/jobs/fanout.py ``Budget``): no key or message is started once less
than ``START_MARGIN`` of the function's timeout is left; without a Lambda context there is no budget."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from chalicelib.jobs import fanout
from localmode.queues import sqs_event


class _Context:
    def __init__(self, timeout_ms: int) -> None:
        self.left = timeout_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left


def test_no_context_or_chalice_locals_is_no_budget():
    from chalice.local import LambdaContext

    assert not fanout.Budget(None).low() and fanout.Budget(None).remaining_ms() is None
    local = fanout.Budget(LambdaContext("savings-worker", memory_size=512))  # counts down from its own 3 s
    assert local.remaining_ms() is None and not local.low()


def test_the_margin_is_a_share_of_the_time_left_at_the_start():
    context = _Context(120_000)
    budget = fanout.Budget(context)
    assert budget.margin_ms == 120_000 * fanout.START_MARGIN == 30_000
    context.left = 30_000
    assert not budget.low()
    context.left = 29_999
    assert budget.low()


def test_for_each_starts_no_key_once_the_budget_is_low():
    context = _Context(30_000)
    budget = fanout.Budget(context)
    seen = []

    def work(key):
        seen.append(key)
        context.left -= 10_000

    outcomes: Counter = Counter()
    with pytest.raises(fanout.OutOfTime):
        fanout.for_each(["a", "b", "c", "d"], work, outcomes, what="test", name=str, budget=budget)
    assert seen == ["a", "b", "c"] and outcomes == {"deferred": 1}
    assert issubclass(fanout.OutOfTime, fanout.RetryableError)  # a batch item failure, as a transient error


def test_handle_batch_returns_the_messages_it_did_not_start():
    context = _Context(30_000)
    handled = []

    def handle(delivery, outcomes):
        handled.append((json.loads(delivery.body), delivery.receives))
        context.left -= 25_000

    event = sqs_event([json.dumps(i) for i in range(3)], "q", receive_count=2)
    failures, outcomes = fanout.handle_batch(event, handle, what="test", budget=fanout.Budget(context))
    assert handled == [(0, 2)]
    assert failures == [r["messageId"] for r in event["Records"][1:]]
    assert outcomes == {"unstarted": 2, "returned_now": 0}  # queue "q" does not exist: they wait their timeout


def test_messages_the_budget_did_not_finish_come_back_at_once_failures_wait_their_timeout():
    """GIVEN three messages received from a queue (visibility 300 s) WHEN the first hits a transient error, the
    second runs out of time after its first key and the third is never started THEN the second and third are
    visible again at once (a fresh invocation has the time), the first only after the queue's timeout."""
    import boto3

    from localmode.queues import _record

    client = boto3.client("sqs")
    url = client.create_queue(QueueName="fanout-return-now", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    for body in ("transient", "long", "never"):
        client.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=3, AttributeNames=["All"])["Messages"]
    assert len(received) == 3
    event = {"Records": [_record(m["Body"], "fanout-return-now", message_id=m["MessageId"],
                                 receipt_handle=m["ReceiptHandle"], attributes=m["Attributes"]) for m in received]}
    context = _Context(30_000)

    def handle(delivery, outcomes):
        body = json.loads(delivery.body)
        if body == "transient":
            raise fanout.RetryableError("throttled")

        def work(key):
            context.left -= 25_000

        fanout.for_each([1, 2], work, outcomes, what="test", name=str, budget=delivery.budget)

    failures, outcomes = fanout.handle_batch(event, handle, what="test", budget=fanout.Budget(context))
    assert len(failures) == 3 and outcomes["returned_now"] == 2
    again = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    by_id = {m["MessageId"]: json.loads(m["Body"]) for m in received}
    assert sorted(by_id[m["MessageId"]] for m in again) == ["long", "never"]
