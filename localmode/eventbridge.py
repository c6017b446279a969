"""EventBridge's PutEvents for the embedded AWS (served by ``localmode/routes.py`` in local mode only).

Takes one PutEvents entry (``{"Source", "DetailType", "Detail", "Resources"?, "Time"?}``) or
``{"Entries": [...]}``, turns each into the event EventBridge would deliver and, when a sentinel rule
(components/sentinel/rules.py, moto's pattern matcher) matches, hands it to the sentinel function the way
production does: as a message of the stage's event queue, in the SQS batch shape Lambda's event source
mapping sends (:func:`sqs_event`, the one helper local mode, the demo, the bench and the tests use), through
``@app.on_sqs_message``'s handler. Never deployed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from components.sentinel.rules import SENTINEL_RULES

from localmode.invoke import invoke
from localmode.queues import ACCOUNT, drain
from localmode.queues import sqs_event as queue_event


def rules() -> dict[str, dict]:
    """Rule name → event pattern of every rule that targets the sentinel's queue."""
    return dict(SENTINEL_RULES)


def to_event(entry: dict, region: str) -> dict:
    """The event EventBridge delivers for one PutEvents entry."""
    detail = entry.get("Detail", "{}")
    detail = json.loads(detail) if isinstance(detail, str) else detail
    # EventBridge stamps whole seconds; local mode keeps milliseconds so measured timings are not rounded.
    when = entry.get("Time") or datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"version": "0", "id": entry.get("Id") or str(uuid.uuid4()), "detail-type": entry["DetailType"],
            "source": entry["Source"], "account": ACCOUNT, "time": when, "region": region,
            "resources": entry.get("Resources", []), "detail": detail}


def matching_rules(event: dict) -> list[str]:
    """The sentinel rules whose pattern matches ``event`` (what EventBridge would send to the queue)."""
    from moto.events.models import EventPattern

    return [name for name, pattern in rules().items() if EventPattern.load(json.dumps(pattern)).matches_event(event)]


def sqs_event(events: list[dict], *, receive_count: int = 1) -> dict:
    """The Lambda event the sentinel's SQS event source mapping sends for these EventBridge events: one
    record per event, its body the whole event as JSON (what an SQS rule target enqueues)."""
    from chalicelib.settings import event_queue_name, get_settings

    return queue_event([json.dumps(event) for event in events], event_queue_name(get_settings().stage),
                       receive_count=receive_count, sender="AIDAEVENTBRIDGE")


def through_queue(events: list[dict], call: Callable[[str, dict], dict] | None = None) -> list[dict]:
    """Run ``events`` through the sentinel function as one queue batch; per event, what the sentinel did.

    ``call(name, payload)`` invokes a handler (default: local mode's in-process Lambda). What was done is
    read back from the sentinel's idempotency record of the event id (the Lambda itself answers only the
    batch item failures): the read runs nothing again. A failed message answers
    ``{"action": "failed", "batch_item_failure": <messageId>}`` (in production SQS would deliver it again;
    when every message fails the function raises and the whole batch comes back, the same thing).
    """
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from chalicelib import sentinel
    from chalicelib.settings import SENTINEL_FUNCTION

    call = call or invoke
    batch = sqs_event(events)
    try:
        response = call(SENTINEL_FUNCTION, batch) or {}
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    except BatchProcessingError:
        failed = {record["messageId"] for record in batch["Records"]}
    results = []
    for record, event in zip(batch["Records"], events, strict=True):
        if record["messageId"] in failed:
            results.append({"action": "failed", "batch_item_failure": record["messageId"]})
        else:
            results.append(sentinel.on_event(event))
    if any(result.get("action") == "split" for result in results):
        _drain_event_queue(call)
    return results


def _drain_event_queue(call: Callable[[str, dict], dict]) -> int:
    """Deliver what the sentinel itself put on the stage's event queue (the parts of an AWS Health event naming more
    instances than one invocation handles) to the sentinel, as the queue's event source mapping would."""
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from chalicelib.settings import SENTINEL_FUNCTION, event_queue_name, get_settings

    def deliver(batch: dict) -> dict:
        try:
            return call(SENTINEL_FUNCTION, batch) or {}
        except BatchProcessingError:  # every message failed: all come back, as from SQS
            return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in batch["Records"]]}

    return drain(event_queue_name(get_settings().stage), deliver)


def deliver(event: dict) -> list[dict]:
    """Send ``event`` to the sentinel's queue if a rule matches; returns [{rule, handler, result}]."""
    from chalicelib.settings import SENTINEL_FUNCTION

    matched = matching_rules(event)
    if not matched:
        return []
    (result,) = through_queue([event])
    # One message per event however many rules match (the rules' patterns do not overlap).
    return [{"rule": matched[0], "handler": SENTINEL_FUNCTION, "result": result}]


def deliver_all(events: list[dict]) -> list[list[dict]]:
    """``deliver`` for each event: one after another, or side by side (as EventBridge invokes its targets)
    with ``SPOT_LOCAL_PARALLEL_LAMBDAS=1`` (``localmode.invoke``)."""
    import os

    from localmode.invoke import PARALLEL_ENV

    if os.environ.get(PARALLEL_ENV) != "1" or len(events) < 2:
        return [deliver(event) for event in events]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, len(events)), thread_name_prefix="eventbridge") as pool:
        return list(pool.map(deliver, events))
