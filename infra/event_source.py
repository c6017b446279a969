"""The sentinel's event queue after ``chalice deploy``: what Chalice 1.34 cannot set, and the redrive.

    python -m infra.event_source adopt --stage dev [--region us-east-1]     # step of `make deploy`, before chalice
    python -m infra.event_source enable --stage dev [--region us-east-1]    # step of `make deploy`, after chalice
    python -m infra.event_source redrive --stage dev [--region us-east-1]   # `make redrive STAGE=dev`
    python -m infra.event_source redrive --stage dev --forwarded-from eu-west-1,us-west-2   # + EVENT_REGIONS=...
    python -m infra.event_source redrive --stage dev --forwarded-from eu-west-1,us-east-1 \
        --client-role-arn arn:aws:iam::111122223333:role/SpotOptimizer-dev-ClientAccess --external-id so-...
    python -m infra.event_source operator-policy --stage dev   # the IAM policy of the role that runs the last one

* ``enable``: Chalice creates the SQS event source mapping of ``@app.on_sqs_message`` without
  ``FunctionResponseTypes``, and then Lambda ignores the function's partial batch response (a failed message
  would be deleted with the batch). This sets ``ReportBatchItemFailures`` on the mapping of each such function
  of the stage and its queue (``policies.SQS_EVENT_SOURCES``: the sentinel and its event queue, the
  decision-worker and the decision queue, the savings-worker and the savings queue), and fails (exit 1) when a mapping is missing. Idempotent; a later
  ``chalice deploy`` keeps it (Chalice updates the mapping's batch settings only).
* ``adopt``: records in ``.chalice/deployed/<stage>.json`` the SQS mappings a failed ``chalice deploy`` created
  without recording them (Chalice writes that file only on success); otherwise every later deploy fails on
  Lambda's one-mapping-per-function-and-queue rule (:func:`adopt_mappings`).
* ``redrive``: moves every message of the dead-letter queue back to the event queue (SQS
  ``StartMessageMoveTask``); read them first (``aws sqs receive-message --queue-url <dlq url>``) and fix what
  made them fail. The sentinel is idempotent on the event id, so a redriven event that had been handled is a
  no-op.
* ``redrive --forwarded-from r1,r2``: also (first) the forwarders' dead-letter queues in those regions
  (``forwarded_event_dead_letter_queue_name``), whose messages are the original EC2/Health events EventBridge
  could not put on the deploy region's bus. They cannot go back through that bus (PutEvents refuses a source
  ``aws.*``), nor by a message move task (another region): each message body is sent as is to the stage's
  event queue in the deploy region, where the rules would have put it, then deleted from the dead-letter queue
  (at least once: a crash between the two sends it again, which the sentinel ignores).
* ``redrive --client-role-arn ARN --external-id ID --forwarded-from r1,r2``: the same for a client account's
  stack (infra/client-account-role.yaml), whose forwarding rules dead-letter into a queue of the same name in
  each region of the client's account: assumes the client's access role with the client's ExternalId (that role
  may receive/delete on exactly that queue) and sends each region's messages to the stage's event queue with
  the caller's own credentials: only EventBridge events of the role's account (``account``), since the client
  can put anything in its own queue (a message naming another account stays there, and the command fails), each
  marked ``REDRIVEN_FROM`` (whatever the body carried): the sentinel counts it as that client's evidence only, not
  the fleet's (it still fails the client's own instance over). Every listed region is the client's (the deploy region too, if the client runs
  instances there); the stage's own dead-letter queue is left alone. The role trusts only product-account
  principals named ``spot-optimizer-<stage>-*`` with that ExternalId: run it as a role named
  ``naming.redrive_operator_role_name`` whose policy is ``operator-policy``'s (infra/README.md).
* ``operator-policy``: prints that policy (``policies.redrive_operator_statements``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.aws.accounts import role_account  # noqa: E402
from chalicelib.settings import (  # noqa: E402
    APP_NAME,
    SENTINEL_FUNCTION,
    event_dead_letter_queue_name,
    event_queue_name,
    forwarded_event_dead_letter_queue_name,
)
from chalicelib.workflows import function_name  # noqa: E402
from components.sentinel.signals import REDRIVEN_FROM  # noqa: E402
from infra.naming import redrive_operator_role_name  # noqa: E402
from infra.policies import SQS_EVENT_SOURCES, VERSION, client_role_name, redrive_operator_statements  # noqa: E402

RESPONSE_TYPES = ["ReportBatchItemFailures"]
# SQS's error codes for a call the caller's policy does not allow (JSON protocol, and the older query one).
ACCESS_DENIED = ("AccessDenied", "AccessDeniedException")


class EventSourceError(Exception):
    """The stage's queue or mapping is not there (not deployed yet)."""


def queue_arn(sqs, name: str) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist as exc:
        raise EventSourceError(f"no queue {name!r}: deploy the infra stack first") from exc
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def enable_batch_item_failures(lambda_client, sqs, stage: str, consumer: str = SENTINEL_FUNCTION) -> dict:
    """Set ReportBatchItemFailures on ``consumer``'s mapping of its queue in the stage (``SQS_EVENT_SOURCES``);
    returns the mapping."""
    function, source = function_name(consumer, stage), queue_arn(sqs, SQS_EVENT_SOURCES[consumer](stage))
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


def chalice_resource_name(consumer: str) -> str:
    """The name Chalice records an ``@app.on_sqs_message`` function's mapping under (chalice/deploy/appgraph.py)."""
    return f"{consumer}-sqs-event-source"


def adopt_mappings(lambda_client, stage: str, project: Path = ROOT) -> list[str]:
    """Record in ``.chalice/deployed/<stage>.json`` each SQS mapping of ``SQS_EVENT_SOURCES`` that exists in AWS
    but not (or under another UUID) in that file; returns the consumers adopted.

    Chalice records what it deployed only when a deploy succeeds. A ``chalice deploy`` that failed after creating a
    mapping (a later step refused, the network dropped) leaves it unrecorded, and every following deploy asks Lambda
    for a new one: ``ResourceConflictException`` (one mapping per function and queue), so ``make deploy`` could
    never succeed again. Adopted, the next deploy updates the mapping (and keeps its ReportBatchItemFailures).
    Run after ``deploy_state.py pull``, before ``chalice deploy``."""
    path = project / ".chalice" / "deployed" / f"{stage}.json"
    state = json.loads(path.read_text()) if path.exists() else {"resources": [], "schema_version": "2.0",
                                                                  "backend": "api"}
    by_name = {resource.get("name"): resource for resource in state["resources"]}
    adopted = []
    for consumer, queue_name in SQS_EVENT_SOURCES.items():
        queue = queue_name(stage)
        try:
            mappings = lambda_client.list_event_source_mappings(FunctionName=function_name(consumer, stage))
        except lambda_client.exceptions.ResourceNotFoundException:  # the function is not deployed yet
            continue
        found = [m for m in mappings.get("EventSourceMappings", [])
                 if m.get("EventSourceArn", "").rsplit(":", 1)[-1] == queue]
        if not found:
            continue
        (mapping,) = found  # Lambda allows one per function and queue
        record = by_name.get(chalice_resource_name(consumer))
        if record is not None and record.get("event_uuid") == mapping["UUID"]:
            continue
        values = {"queue_arn": mapping["EventSourceArn"], "event_uuid": mapping["UUID"], "queue": queue,
                  "lambda_arn": mapping["FunctionArn"]}
        if record is None:
            state["resources"].append({"name": chalice_resource_name(consumer), "resource_type": "sqs_event",
                                       **values})
        else:
            record.update(values)
        adopted.append(consumer)
    if adopted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2) + "\n")
    return adopted


def redrive(sqs, stage: str) -> str:
    """Start moving the dead-letter queue's messages back to the event queue; returns the task handle."""
    source = queue_arn(sqs, event_dead_letter_queue_name(stage))
    destination = queue_arn(sqs, event_queue_name(stage))
    return sqs.start_message_move_task(SourceArn=source, DestinationArn=destination)["TaskHandle"]


def redrive_forwarded(source_sqs, sqs, stage: str, *, wait_s: int = 2, account: str | None = None) -> int:
    """Send every message of the forwarder's dead-letter queue (``source_sqs``' region) to the stage's event
    queue (``sqs``' region), deleting each one only once it is sent; returns how many were moved. Stops at the
    first receive that finds nothing (long polling asks every SQS server).

    ``account``: the queue is a client account's (its stack's). The client owns that queue and can put any message
    in it, and the sentinel believes an event's ``account`` (EventBridge sets it; the instance's account must match
    it): only events of that account are sent on, each marked as redriven from it (:func:`client_event_body`: the
    sentinel counts it as that client's evidence only, since the client may have written it). Any other message
    (another account named, not an event) stays in the queue, and the redrive fails saying how many, once the rest
    is moved. Without ``account`` (a forwarder of the product's own account, where only EventBridge writes) each
    body is sent as it is, unmarked."""
    try:
        source = source_sqs.get_queue_url(QueueName=forwarded_event_dead_letter_queue_name(stage))["QueueUrl"]
    except source_sqs.exceptions.QueueDoesNotExist as exc:
        raise EventSourceError(f"no queue {forwarded_event_dead_letter_queue_name(stage)!r} in "
                               f"{source_sqs.meta.region_name}: no forwarder deployed there (the product's "
                               "forwarder stack, or for a client account its stack)") from exc
    try:
        destination = sqs.get_queue_url(QueueName=event_queue_name(stage))["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist as exc:
        raise EventSourceError(f"no queue {event_queue_name(stage)!r}: deploy the infra stack first") from exc
    moved, refused = 0, set()
    while messages := source_sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s,
                                                 VisibilityTimeout=60).get("Messages", []):
        bodies = {m["MessageId"]: m["Body"] for m in messages}
        if account is not None:
            bodies = {message_id: client_event_body(body, account) for message_id, body in bodies.items()}
            refused |= {message_id for message_id, body in bodies.items() if body is None}
            messages = [m for m in messages if m["MessageId"] not in refused]
            if not messages:  # visible again in 60 s: by then this loop has stopped
                continue
        by_id = {str(i): message for i, message in enumerate(messages)}
        sent = sqs.send_message_batch(QueueUrl=destination, Entries=[  # the body only: never the source's attributes
            {"Id": i, "MessageBody": bodies[message["MessageId"]]} for i, message in by_id.items()])
        done = [entry["Id"] for entry in sent.get("Successful", [])]
        if done:
            source_sqs.delete_message_batch(QueueUrl=source, Entries=[
                {"Id": i, "ReceiptHandle": by_id[i]["ReceiptHandle"]} for i in done])
        moved += len(done)
        if sent.get("Failed"):  # left in the dead-letter queue, visible again in 60 s
            raise EventSourceError(f"{len(sent['Failed'])} message(s) not sent to {event_queue_name(stage)} "
                                   f"({sent['Failed'][0].get('Code')}); {moved} moved: run the redrive again")
    if refused:
        raise EventSourceError(f"{len(refused)} message(s) of {forwarded_event_dead_letter_queue_name(stage)} "
                               f"({source_sqs.meta.region_name}) are not EC2/Health events of account {account}: left "
                               f"there, not sent (the client's queue: read them, then delete them); {moved} moved")
    return moved


def client_event_body(body: str, account: str) -> str | None:
    """The body to send on for a message of ``account``'s own dead-letter queue: the EventBridge event (a JSON
    object) of that account, marked as redriven from it (``REDRIVEN_FROM``: the sentinel counts it as that client's
    evidence only, never AWS's word for the fleet); None for anything else (not an event, another account).

    The client writes any body (and attributes) into its queue: the mark is always set here, overwriting whatever
    value of it the body carried, so no event leaves a client's queue unmarked."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("account") != account:
        return None
    return json.dumps({**event, REDRIVEN_FROM: account})


def redrive_session_name(stage: str) -> str:
    """RoleSessionName of a client redrive: CloudTrail in the client's account shows what it was."""
    return f"{APP_NAME}-{stage}-redrive"


def client_account_session(sts, role_arn: str, external_id: str, stage: str):
    """A boto3 session in the client's account through its access role, assumed with the client's ExternalId
    (the binding's: ``POST /api/admin/clients/{id}/accounts`` answers it)."""
    import boto3
    from botocore.exceptions import ClientError

    try:
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=redrive_session_name(stage),
                                      ExternalId=external_id)["Credentials"]
    except ClientError as exc:
        raise EventSourceError(
            f"cannot assume {role_arn} ({exc.response['Error'].get('Code')}): it trusts only the product account's "
            f"roles named {APP_NAME}-{stage}-* (no path) with the client's ExternalId. Run this as "
            f"{redrive_operator_role_name(stage)} (infra/README.md); check the ExternalId, and that the role is "
            f"{client_role_name(stage)} (stage {stage})") from exc
    return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])


def _regions(value: str) -> list[str]:
    return list(dict.fromkeys(r.strip() for r in value.split(",") if r.strip()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("adopt", "enable", "redrive", "operator-policy"))
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region", help="the deploy region; defaults to AWS_REGION / AWS_DEFAULT_REGION")
    parser.add_argument("--forwarded-from", default="", metavar="R1,R2",
                        help="redrive: also the forwarders' dead-letter queues of these regions (EVENT_REGIONS); "
                             "with --client-role-arn: the regions of the client's stacks")
    parser.add_argument("--client-role-arn", metavar="ARN",
                        help="redrive only the dead-letter queues of a client account's stacks, through this role")
    parser.add_argument("--external-id", metavar="ID", help="the client's ExternalId (with --client-role-arn)")
    args = parser.parse_args(argv)
    if args.command == "operator-policy":
        print(json.dumps({"Version": VERSION, "Statement": redrive_operator_statements(args.stage)}, indent=2))
        return 0
    client_account = role_account(args.client_role_arn) if args.client_role_arn else None
    if args.client_role_arn and not client_account:
        parser.error(f"--client-role-arn {args.client_role_arn!r} is not an IAM role ARN")
    if args.client_role_arn and not (args.external_id and _regions(args.forwarded_from)):
        parser.error("--client-role-arn needs --external-id and --forwarded-from (the client's regions)")
    if args.external_id and not args.client_role_arn:
        parser.error("--external-id goes with --client-role-arn")
    if args.client_role_arn and args.command != "redrive":
        parser.error("--client-role-arn goes with redrive")
    import boto3
    from botocore.exceptions import ClientError

    sqs = boto3.client("sqs", region_name=args.region)
    try:
        if args.command == "adopt":
            adopted = adopt_mappings(boto3.client("lambda", region_name=args.region), args.stage)
            print(f"SQS mappings Chalice had not recorded, adopted: {', '.join(adopted) or 'none'}")
        elif args.command == "enable":
            lambda_client = boto3.client("lambda", region_name=args.region)
            for consumer in SQS_EVENT_SOURCES:
                mapping = enable_batch_item_failures(lambda_client, sqs, args.stage, consumer)
                print(f"{mapping['FunctionArn']} ← {mapping['EventSourceArn']}: {mapping['FunctionResponseTypes']}")
        elif args.client_role_arn:
            session = client_account_session(boto3.client("sts", region_name=args.region), args.client_role_arn,
                                             args.external_id, args.stage)
            for region in _regions(args.forwarded_from):  # the deploy region too: the client's own stack
                try:
                    moved = redrive_forwarded(session.client("sqs", region_name=region), sqs, args.stage,
                                              account=client_account)
                except ClientError as exc:
                    if exc.response["Error"].get("Code") not in ACCESS_DENIED:
                        raise
                    raise EventSourceError(
                        f"{region}: {exc}. Refused to the client's access role: it predates the redrive permission, "
                        "the client updates its stack where CreateAccessRole=true; refused to you (the event queue): "
                        "your role lacks `operator-policy`'s statements") from exc
                print(f"{forwarded_event_dead_letter_queue_name(args.stage)} (account {client_account}, {region}) → "
                      f"{event_queue_name(args.stage)} ({sqs.meta.region_name}): {moved} event(s) moved")
        else:
            deploy_region = sqs.meta.region_name
            for region in [r for r in _regions(args.forwarded_from) if r != deploy_region]:
                moved = redrive_forwarded(boto3.client("sqs", region_name=region), sqs, args.stage)
                print(f"{forwarded_event_dead_letter_queue_name(args.stage)} ({region}) → "
                      f"{event_queue_name(args.stage)} ({deploy_region}): {moved} event(s) moved")
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
