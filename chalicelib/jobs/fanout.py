"""What every fan-out job shares (the decision cycle, the savings roll-up): a scheduled dispatcher sends keys to a
stage queue in messages of a few, and an ``@app.on_sqs_message`` worker handles each message's keys.

* :func:`bodies`: the messages of one run, ``{**header, field: [key, ...]}``, made as the keys are read;
* :func:`for_each`: the worker's work on each key of a message; one key's failure never stops the others, a
  transient one (:func:`retryable`) makes the message come back (:class:`RetryableError`);
* :func:`handle_batch`: one SQS batch; a malformed message (ValueError) is logged and dropped (it would fail the
  same way forever), a message raising RetryableError is a batch item failure, the rest are done;
* :func:`publish_counts`: a run's counts as metrics;
* :func:`batch_response`: the partial batch response Lambda reads (infra/event_source.py enables it).

Delivery is at least once: each worker must be idempotent on its message.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib.errors import THROTTLING_CODES, transient_cancellation
from chalicelib.observability import MetricUnit, logger, metrics, publish_metrics

# A key's processing failed in a way that may pass (DynamoDB throttling, a 5xx, the network, a transaction
# cancelled for a concurrent write or throttling): its message is reported as a batch item failure so that SQS
# delivers it again.
RETRYABLE_CODES = THROTTLING_CODES | {"InternalServerError", "ServiceUnavailable", "RequestTimeout"}


class RetryableError(Exception):
    """Some keys of a message hit a transient error: the message comes back from the queue."""


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


def for_each(keys: list, work: Callable, outcomes: Counter, *, what: str, name: Callable[..., str]) -> None:
    """``work(key)`` for every key; a failure is logged and counted (``failed``), a transient one (``transient``)
    raises RetryableError once the other keys are done. ``name(key)`` identifies a key in the log."""
    transient = []
    for key in keys:
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


def handle_batch(event: dict, handle: Callable[[str, Counter], None], *, what: str) -> tuple[list[str], dict[str, int]]:
    """``handle(body, outcomes)`` for each record: (ids of the messages SQS must deliver again, counts by outcome)."""
    outcomes: Counter = Counter()
    failures = []
    for record in event.get("Records", []):
        try:
            handle(record["body"], outcomes)
        except ValueError as exc:
            logger.error(f"malformed {what} message dropped",
                         extra={"message_id": record.get("messageId"), "reason": str(exc)})
            outcomes["malformed"] += 1
        except RetryableError as exc:
            logger.warning(f"{what} message comes back from the queue",
                           extra={"message_id": record["messageId"], "reason": str(exc)})
            failures.append(record["messageId"])
    result = dict(outcomes)
    logger.info(f"{what} batch", extra={"outcomes": result, "messages": len(event.get("Records", [])),
                                        "retried": len(failures)})
    return failures, result


def publish_counts(prefix: str, outcomes: dict[str, int]) -> None:
    """Each count of a dispatch or a batch as the metric ``<prefix>.<outcome>``, flushed now."""
    for name, value in outcomes.items():
        metrics.add_metric(name=f"{prefix}.{name}", unit=MetricUnit.Count, value=value)
    publish_metrics()


def batch_response(failures: list[str]) -> dict:
    """The partial batch response naming the messages SQS must deliver again."""
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
