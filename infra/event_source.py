"""The sentinel's event queue after ``chalice deploy``: what Chalice 1.34 cannot set, and the redrive.

    python -m infra.event_source enable --stage dev [--region us-east-1]    # step of `make deploy`
    python -m infra.event_source redrive --stage dev [--region us-east-1]   # `make redrive STAGE=dev`

* ``enable``: Chalice creates the SQS event source mapping of ``@app.on_sqs_message`` without
  ``FunctionResponseTypes``, and then Lambda ignores the sentinel's partial batch response (a failed message
  would be deleted with the batch). This sets ``ReportBatchItemFailures`` on the mapping of the stage's
  sentinel function and its event queue, and fails (exit 1) when the mapping is missing. Idempotent; a later
  ``chalice deploy`` keeps it (Chalice updates the mapping's batch settings only).
* ``redrive``: moves every message of the dead-letter queue back to the event queue (SQS
  ``StartMessageMoveTask``); read them first (``aws sqs receive-message --queue-url <dlq url>``) and fix what
  made them fail. The sentinel is idempotent on the event id, so a redriven event that had been handled is a
  no-op.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.settings import SENTINEL_FUNCTION, event_dead_letter_queue_name, event_queue_name  # noqa: E402
from chalicelib.workflows import function_name  # noqa: E402

RESPONSE_TYPES = ["ReportBatchItemFailures"]


class EventSourceError(Exception):
    """The stage's queue or mapping is not there (not deployed yet)."""


def queue_arn(sqs, name: str) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist as exc:
        raise EventSourceError(f"no queue {name!r}: deploy the infra stack first") from exc
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def enable_batch_item_failures(lambda_client, sqs, stage: str) -> dict:
    """Set ReportBatchItemFailures on the sentinel's mapping of the stage's event queue; returns the mapping."""
    function, source = function_name(SENTINEL_FUNCTION, stage), queue_arn(sqs, event_queue_name(stage))
    mappings = lambda_client.list_event_source_mappings(FunctionName=function, EventSourceArn=source)
    mappings = mappings.get("EventSourceMappings", [])
    if not mappings:
        raise EventSourceError(f"{function} has no event source mapping for {source}: run "
                               f"`chalice deploy --stage {stage}` first")
    (mapping,) = mappings
    if mapping.get("FunctionResponseTypes") != RESPONSE_TYPES:
        mapping = lambda_client.update_event_source_mapping(UUID=mapping["UUID"], FunctionResponseTypes=RESPONSE_TYPES)
    if mapping.get("FunctionResponseTypes") != RESPONSE_TYPES:
        raise EventSourceError(f"mapping {mapping['UUID']} still reports {mapping.get('FunctionResponseTypes')}")
    return mapping


def redrive(sqs, stage: str) -> str:
    """Start moving the dead-letter queue's messages back to the event queue; returns the task handle."""
    source = queue_arn(sqs, event_dead_letter_queue_name(stage))
    destination = queue_arn(sqs, event_queue_name(stage))
    return sqs.start_message_move_task(SourceArn=source, DestinationArn=destination)["TaskHandle"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("enable", "redrive"))
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region", help="defaults to AWS_REGION / AWS_DEFAULT_REGION")
    args = parser.parse_args(argv)
    import boto3

    sqs = boto3.client("sqs", region_name=args.region)
    try:
        if args.command == "enable":
            mapping = enable_batch_item_failures(boto3.client("lambda", region_name=args.region), sqs, args.stage)
            print(f"{mapping['FunctionArn']} ← {mapping['EventSourceArn']}: {mapping['FunctionResponseTypes']}")
        else:
            handle = redrive(sqs, args.stage)
            print(f"redrive started ({event_dead_letter_queue_name(args.stage)} → {event_queue_name(args.stage)}): "
                  f"{handle}\nprogress: aws sqs list-message-move-tasks --source-arn "
                  f"{queue_arn(sqs, event_dead_letter_queue_name(args.stage))}")
    except EventSourceError as exc:
        print(f"event_source: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
