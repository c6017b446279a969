"""SQS event sources without Lambda: what an ``@app.on_sqs_message`` function receives, built here (local mode,
the demo, the bench and the tests). Never deployed.

* :func:`sqs_event`: the Lambda event an SQS event source mapping sends for some message bodies (the sentinel's
  EventBridge events, ``localmode.eventbridge``);
* :func:`drain`: the messages waiting in a queue of the embedded AWS, delivered in that shape a batch at a time
  and deleted unless the answer reports them as batch item failures, as the mapping does (one batch after
  another, so that local mode stays deterministic);
* :func:`after_dispatch`: what follows a fan-out dispatcher in local mode and the tests
  (``localmode.invoke.invoke_schedule``, the tests' ``invoke_schedule``): after ``decision-cycle`` the decision
  queue drained through the decision-worker (:func:`decide_dispatched`); after ``savings-rollup`` or
  ``savings-close`` the savings queue drained through the savings-worker, then ``savings-fleet`` as of the same
  time (:func:`roll_up_dispatched`).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from functools import cache

ACCOUNT = "123456789012"
# A message the consumer reported as failed comes back after this long (real seconds), as after a visibility
# timeout: not within the same drain.
FAILED_VISIBILITY_S = 30


def _attributes(receive_count: int = 1, sender: str = "AIDALOCALMODE") -> dict:
    """The message attributes a record carries (SQS's own, as the mapping passes them on)."""
    now_ms = str(int(time.time() * 1000))
    return {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": now_ms, "SenderId": sender,
            "ApproximateFirstReceiveTimestamp": now_ms}


def _record(body: str, queue_name: str, *, message_id: str | None = None, receipt_handle: str | None = None,
            attributes: dict | None = None) -> dict:
    from chalicelib.settings import get_settings

    region = get_settings().region
    return {"messageId": message_id or str(uuid.uuid4()), "receiptHandle": receipt_handle or uuid.uuid4().hex,
            "body": body, "attributes": attributes or _attributes(),
            "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's own digest
            "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{region}:{ACCOUNT}:{queue_name}",
            "awsRegion": region}


def sqs_event(bodies: list[str], queue_name: str, *, receive_count: int = 1, sender: str = "AIDALOCALMODE") -> dict:
    """The Lambda event of an SQS event source mapping on ``queue_name`` for these message bodies (one record each)."""
    return {"Records": [_record(body, queue_name, attributes=_attributes(receive_count, sender)) for body in bodies]}


@cache
def _sqs():
    import boto3

    return boto3.client("sqs")


def drain(queue_name: str, deliver: Callable[[dict], dict | None], *, batch_size: int = 10) -> int:
    """Deliver every message waiting in ``queue_name`` to ``deliver(event)``, ``batch_size`` at a time, in the
    Lambda SQS event shape; delete each one its answer does not name in ``batchItemFailures`` (those come back
    after ``FAILED_VISIBILITY_S``). Returns how many messages were delivered."""
    client = _sqs()
    url = client.get_queue_url(QueueName=queue_name)["QueueUrl"]
    delivered = 0
    while messages := client.receive_message(QueueUrl=url, MaxNumberOfMessages=batch_size, AttributeNames=["All"],
                                             VisibilityTimeout=FAILED_VISIBILITY_S).get("Messages", []):
        event = {"Records": [_record(m["Body"], queue_name, message_id=m["MessageId"],
                                     receipt_handle=m["ReceiptHandle"], attributes=m.get("Attributes"))
                             for m in messages]}
        answer = deliver(event) or {}
        failed = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        delivered += len(messages)
    return delivered


def ensure_queues() -> None:
    """The stage's fan-out queues (decision, savings) and its event queue in the embedded AWS; infra/ creates them
    in AWS."""
    from chalicelib.aws.sqs import ensure_queue
    from chalicelib.settings import (
        EVENT_QUEUE_VISIBILITY_S,
        decision_queue_name,
        event_queue_name,
        get_settings,
        savings_queue_name,
    )

    stage = get_settings().stage
    for name in (decision_queue_name, savings_queue_name):
        ensure_queue(name(stage))
    ensure_queue(event_queue_name(stage), EVENT_QUEUE_VISIBILITY_S)


def _work_off(queue_name: str, function: str, handle_batch, respond, batch_size: int, stage: str,
              at=None) -> dict[str, int]:
    """The queue drained through a worker, ``batch_size`` messages per invocation; returns the outcomes summed
    over the invocations (the Lambda itself answers only its batch item failures, so each batch is run by
    ``handle_batch(event, now)``, with the function's environment, to count them) and ``worker_invocations``.
    The worker's clock is ``at`` (right after a dispatch at a replayed time), else ``chalicelib.clock``."""
    from chalicelib import clock

    from localmode.invoke import run_as

    totals: Counter = Counter()

    def deliver(event: dict) -> dict:
        failures, outcomes = run_as(function, lambda: handle_batch(event, at or clock.now()), stage)
        totals.update(outcomes)
        totals["worker_invocations"] += 1
        return respond(failures)

    drain(queue_name, deliver, batch_size=batch_size)
    return dict(totals)


def decide_dispatched(stage: str = "local") -> dict[str, int]:
    """What the decision-worker does with the messages the dispatcher just sent."""
    from chalicelib.jobs import decision_cycle
    from chalicelib.settings import DECISION_WORKER_BATCH_SIZE, DECISION_WORKER_FUNCTION, decision_queue_name

    return _work_off(decision_queue_name(stage), DECISION_WORKER_FUNCTION, decision_cycle.decide_batch,
                     decision_cycle.batch_response, DECISION_WORKER_BATCH_SIZE, stage)


SAVINGS_FLEET = "savings-fleet"


def roll_up_dispatched(now, stage: str = "local") -> dict:
    """What the savings-worker does with the messages the dispatcher just sent (right after it: at ``now``, the
    dispatch's time, which local mode may replay), then the fleet job as of that time (in AWS it runs at :45);
    its result under ``fleet``."""
    from chalicelib.jobs import fanout, savings_rollup
    from chalicelib.settings import SAVINGS_WORKER_BATCH_SIZE, SAVINGS_WORKER_FUNCTION, savings_queue_name

    from localmode.invoke import invoke_schedule

    totals = _work_off(savings_queue_name(stage), SAVINGS_WORKER_FUNCTION, savings_rollup.rollup_batch,
                       fanout.batch_response, SAVINGS_WORKER_BATCH_SIZE, stage, at=now)
    return {**totals, "fleet": invoke_schedule(SAVINGS_FLEET, now, stage)}


def after_dispatch(name: str, now, stage: str = "local") -> dict:
    """What follows the scheduled handler ``name`` here (its workers, the fleet job); {} for other handlers."""
    if name == "decision-cycle":
        return decide_dispatched(stage)
    if name in ("savings-rollup", "savings-close"):
        return roll_up_dispatched(now, stage)
    return {}
