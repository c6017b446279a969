"""What every fan-out job shares (the decision cycle, the savings roll-up): a scheduled dispatcher sends keys to a
stage queue in messages of a few, and an ``@app.on_sqs_message`` worker handles each message's keys.

* :func:`bodies`: the messages of one run, ``{**header, field: [key, ...]}``, made as the keys are read;
* :func:`for_each`: the worker's work on each key of a message; one key's failure never stops the others, a
  transient one (:func:`retryable`) makes the message come back (:class:`RetryableError`), and so does running
  out of time (:class:`OutOfTime`: the keys not started when the invocation's :class:`Budget` ran low);
* :func:`handle_batch`: one SQS batch; a malformed message (ValueError) is logged and dropped (it would fail the
  same way forever), a message raising RetryableError is a batch item failure, a message not started because the
  budget ran low is one too (unread), the rest are done; the messages the budget did not finish are made visible
  again at once (a fresh invocation has the time; the queue's visibility timeout, 6 × the worker's timeout, is
  for failures), a transient failure waits the timeout;
* :class:`Budget`: the invocation's time (the Lambda context's ``get_remaining_time_in_millis``): no key or
  message is started once less than ``START_MARGIN`` of the function's timeout remains, so the invocation answers
  its partial batch response instead of timing out (a time-out returns the whole batch, done keys and all, and a
  batch that always times out would come back until the dead-letter queue);
* :func:`publish_counts`: a run's counts as metrics;
* :func:`batch_response`: the partial batch response Lambda reads (infra/event_source.py enables it).

Delivery is at least once: each worker must be idempotent on its message.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib.errors import THROTTLING_CODES, transient_cancellation
from chalicelib.observability import MetricUnit, logger, metrics, publish_metrics

# A key's processing failed in a way that may pass (DynamoDB throttling, a 5xx, the network, a transaction
# cancelled for a concurrent write or throttling): its message is reported as a batch item failure so that SQS
# delivers it again.
RETRYABLE_CODES = THROTTLING_CODES | {"InternalServerError", "ServiceUnavailable", "RequestTimeout"}


# The share of the function's timeout kept in reserve: no key (nor message) is started with less left. A worker's
# key is short next to it (a decision ≈ 43 ms of the decision-worker's 30 s; a client of the default 50-agent quota
# ≈ 2 s of the savings-worker's 120 s, one of 1,000 agents ≈ 28 s: the 30 s kept cover it, `python -m bench.cost`),
# so the key started last still ends before the time-out; what is left answers the partial batch response.
START_MARGIN = 0.25


class RetryableError(Exception):
    """Some keys of a message hit a transient error: the message comes back from the queue."""


class OutOfTime(RetryableError):
    """The invocation's budget ran low before every key of a message was started: the message comes back."""


class Budget:
    """An invocation's time: :meth:`low` once less than ``START_MARGIN`` of the function's timeout remains.

    The timeout is what the context had left when the budget was made, at the handler's start (Lambda's context
    does not carry the timeout itself). Without a Lambda context (tests, local mode, the bench) there is no
    budget: never low. Chalice's local ``LambdaContext`` counts down from its own 3 s default, not the function's
    timeout, so it is no budget either."""

    def __init__(self, context=None, margin: float = START_MARGIN) -> None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None or type(context).__module__ == "chalice.local":
            self._remaining, self.margin_ms = None, 0.0
        else:
            self._remaining, self.margin_ms = remaining, remaining() * margin

    def remaining_ms(self) -> float | None:
        """Milliseconds left (None: no budget)."""
        return None if self._remaining is None else self._remaining()

    def low(self) -> bool:
        """True once less than the margin is left: start nothing new."""
        left = self.remaining_ms()
        return left is not None and left < self.margin_ms


NO_BUDGET = Budget()


@dataclass(frozen=True)
class Delivery:
    """One SQS record as a worker's message handler sees it."""

    body: str
    receives: int  # SQS's ApproximateReceiveCount: 1 the first time, more for a message that came back
    budget: Budget = NO_BUDGET


def receive_count(record: dict) -> int:
    """How many times SQS has delivered ``record`` (its ``ApproximateReceiveCount``; 1 when unreadable)."""
    value = str((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
    return int(value) if value.isdigit() and int(value) > 0 else 1


def retryable(exc: BaseException) -> bool:
    """Throttling, a 5xx, the network or a transaction cancelled only for a conflict or throttling (also behind
    pynamodb's wrapper): the same work may pass later."""
    for _ in range(5):  # the exception and what it wraps
        if exc is None:
            return False
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return True
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else (
            exc.cause_response_code if isinstance(exc, PynamoDBException) else None)
        if code in RETRYABLE_CODES or transient_cancellation(exc):
            return True
        exc = exc.__cause__ or getattr(exc, "cause", None)
    return False


def bodies(keys: Iterable, header: dict, field: str, per_message: int, counted: Counter) -> Iterator[str]:
    """The JSON bodies ``{**header, field: [up to per_message keys]}``; counts the keys in ``counted[field]``."""
    chunk: list = []
    for key in keys:
        counted[field] += 1
        chunk.append(key)
        if len(chunk) == per_message:
            yield json.dumps({**header, field: chunk})
            chunk = []
    if chunk:
        yield json.dumps({**header, field: chunk})


def for_each(keys: list, work: Callable, outcomes: Counter, *, what: str, name: Callable[..., str],
             budget: Budget = NO_BUDGET) -> None:
    """``work(key)`` for every key, in order; a failure is logged and counted (``failed``), a transient one
    (``transient``) raises RetryableError once the other keys are done. When ``budget`` runs low, the keys not
    started yet are counted (``deferred``) and OutOfTime is raised. ``name(key)`` identifies a key in the log."""
    transient = []
    for done, key in enumerate(keys):
        if budget.low():
            outcomes["deferred"] += len(keys) - done
            logger.warning(f"{what}: out of time, the message comes back", extra={
                "deferred": len(keys) - done, "next_key": name(key), "remaining_ms": budget.remaining_ms()})
            raise OutOfTime(f"out of time after {done} of {len(keys)} keys"
                            + (f"; {len(transient)} hit a transient error" if transient else ""))
        try:
            work(key)
        except Exception as exc:  # noqa: BLE001 - one key's failure never aborts the others
            if retryable(exc):
                logger.warning(f"{what} deferred: transient error", extra={
                    "key": name(key), "error": f"{type(exc).__name__}: {exc}"})
                transient.append(name(key))
                outcomes["transient"] += 1
            else:
                logger.exception(f"{what} failed", extra={"key": name(key)})
                outcomes["failed"] += 1
    if transient:
        raise RetryableError(f"{len(transient)} of {len(keys)} keys hit a transient error: {transient[:3]}")


def handle_batch(event: dict, handle: Callable[[Delivery, Counter], None], *, what: str,
                 budget: Budget = NO_BUDGET) -> tuple[list[str], dict[str, int]]:
    """``handle(delivery, outcomes)`` for each record: (ids of the messages SQS must deliver again, counts by
    outcome). A record met once ``budget`` is low is not handled: it comes back (``unstarted``)."""
    outcomes: Counter = Counter()
    failures, out_of_time = [], []
    for record in event.get("Records", []):
        if budget.low():
            outcomes["unstarted"] += 1
            failures.append(record["messageId"])
            out_of_time.append(record)
            continue
        try:
            handle(Delivery(record["body"], receive_count(record), budget), outcomes)
        except ValueError as exc:
            logger.error(f"malformed {what} message dropped",
                         extra={"message_id": record.get("messageId"), "reason": str(exc)})
            outcomes["malformed"] += 1
        except RetryableError as exc:
            logger.warning(f"{what} message comes back from the queue",
                           extra={"message_id": record["messageId"], "reason": str(exc)})
            failures.append(record["messageId"])
            if isinstance(exc, OutOfTime):
                out_of_time.append(record)
    if out_of_time:
        outcomes["returned_now"] = return_now(out_of_time)
    result = dict(outcomes)
    logger.info(f"{what} batch", extra={"outcomes": result, "messages": len(event.get("Records", [])),
                                        "retried": len(failures)})
    return failures, result


def return_now(records: list[dict]) -> int:
    """Make these received messages visible again now (they were not failing: the invocation ran out of time);
    returns how many SQS accepted. Best effort: a message SQS refuses, or all of them when SQS is out of reach,
    comes back after the queue's visibility timeout, as any batch item failure."""
    from chalicelib.aws import sqs

    by_queue: dict[str, dict[str, int]] = {}
    for record in records:
        queue = str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1]
        if queue and record.get("receiptHandle"):
            by_queue.setdefault(queue, {})[record["receiptHandle"]] = 0
    accepted = 0
    for queue, handles in by_queue.items():
        try:
            accepted += sqs.retry_after(queue, handles)
        except Exception as exc:  # noqa: BLE001 - the visibility timeout still brings them back
            logger.warning("out-of-time messages keep the queue's visibility timeout",
                           extra={"queue": queue, "messages": len(handles), "reason": str(exc)})
    return accepted


def publish_counts(prefix: str, outcomes: dict[str, int]) -> None:
    """Each count of a dispatch or a batch as the metric ``<prefix>.<outcome>``, flushed now."""
    for name, value in outcomes.items():
        metrics.add_metric(name=f"{prefix}.{name}", unit=MetricUnit.Count, value=value)
    publish_metrics()


def batch_response(failures: list[str]) -> dict:
    """The partial batch response naming the messages SQS must deliver again."""
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
