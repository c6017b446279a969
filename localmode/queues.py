"""SQS event sources without Lambda: what an ``@app.on_sqs_message`` function receives, built here (local mode,
the demo, the bench and the tests). Never deployed.

* :func:`sqs_event`: the Lambda event an SQS event source mapping sends for some message bodies (the sentinel's
  EventBridge events, ``localmode.eventbridge``);
* :func:`drain`: the messages waiting in a queue of the embedded AWS, delivered in that shape a batch at a time
  and deleted unless the answer reports them as batch item failures, as the mapping does (one batch after
  another, so that local mode stays deterministic);
* :func:`decide_dispatched`: the decision queue drained through the decision-worker right after the
  decision cycle's dispatcher ran (``localmode.invoke.invoke_schedule``).
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


def ensure_decision_queue() -> str:
    """The stage's decision queue in the embedded AWS (infra/ creates it in AWS); returns its URL."""
    from chalicelib.aws.sqs import ensure_queue
    from chalicelib.settings import decision_queue_name, get_settings

    return ensure_queue(decision_queue_name(get_settings().stage))


def decide_dispatched(stage: str = "local") -> dict[str, int]:
    """What the decision-worker does with the messages the dispatcher just sent: the decision queue drained
    through it, ``DECISION_WORKER_BATCH_SIZE`` messages per invocation; returns the outcomes summed over the
    invocations (the Lambda itself answers only its batch item failures, so each batch is run by
    ``decide_batch``, with the function's environment, to count them) and ``worker_invocations``."""
    from chalicelib import clock
    from chalicelib.jobs import decision_cycle
    from chalicelib.settings import DECISION_WORKER_BATCH_SIZE, DECISION_WORKER_FUNCTION, decision_queue_name

    from localmode.invoke import run_as

    totals: Counter = Counter()

    def deliver(event: dict) -> dict:
        failures, outcomes = run_as(DECISION_WORKER_FUNCTION,
                                    lambda: decision_cycle.decide_batch(event, clock.now()), stage)
        totals.update(outcomes)
        totals["worker_invocations"] += 1
        return decision_cycle.batch_response(failures)

    drain(decision_queue_name(stage), deliver, batch_size=DECISION_WORKER_BATCH_SIZE)
    return dict(totals)
