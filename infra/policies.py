"""Least privilege: the IAM permissions of every Lambda function, written once, per stage.

Each Chalice function gets its own role (``.chalice/config.json`` → ``stages.<stage>.lambda_functions.<name>.
iam_policy_file``) whose policy is :func:`function_policy`. ``python -m infra.chalice_policies`` writes
them to ``.chalice/policies/<stage>/<function>.json``; a test checks the committed files equal the output.

Rules kept here (and checked by tests/infra/test_policies.py):

* product-account resources are named for the stage (``spot-optimizer-<stage>-*`` tables, bucket, topic,
  state machine, admin-key parameter) and must be in the caller's own account (``aws:ResourceAccount``);
* destructive EC2 actions only touch instances tagged ``ManagedBy=SpotOptimizer`` and
  ``SpotOptimizerStage=<stage>``; launches must carry both tags; never ``Resource: "*"`` on them;
* ``iam:PassRole`` only for roles under the ``/spot-optimizer/`` path, only to EC2;
* ``sts:AssumeRole`` only on the client-account role of this stage (:func:`client_role_name`).

The EC2 statements are the same for the product account (self-hosting) and for the client-account role
template (infra/chalice_policies.py writes infra/client-account-role.yaml), whose role may also empty that
stack's dead-letter queue (:func:`forwarded_event_redrive`). Importable without aws_cdk.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from chalicelib.aws.ec2 import MANAGED_BY, TAG_MANAGED_BY, TAG_RETIRE, TAG_STAGE
from chalicelib.settings import (
    APP_NAME,
    DECISION_WORKER_FUNCTION,
    SAVINGS_WORKER_FUNCTION,
    SENTINEL_FUNCTION,
    admin_key_parameter_name,
    decision_queue_name,
    event_queue_name,
    forwarded_event_dead_letter_queue_name,
    model_bucket_name,
    savings_queue_name,
)
from chalicelib.workflows import FAILOVER_TASKS, function_name, state_machine_name
from infra.naming import check_stage_name, notification_topic_name

# The stages generated (naming.STAGE_NAME: no '-', so no stage's ``spot-optimizer-<stage>-*`` covers another's).
STAGES = tuple(check_stage_name(stage) for stage in ("dev", "prod"))
VERSION = "2012-10-17"
# Roles the product may hand to the instances it launches (IamInstanceProfile of a cloned primary).
PASSABLE_ROLE_PATH = "/spot-optimizer/"
# The product account's own resources: a same-named resource in another account never matches.
SAME_ACCOUNT = {"StringEquals": {"aws:ResourceAccount": "${aws:PrincipalAccount}"}}

# Actions that change or destroy something a client runs: each needs a scoped resource (tested).
DESTRUCTIVE_ACTIONS = frozenset({
    "ec2:RunInstances", "ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances",
    "ec2:RebootInstances", "ec2:CreateTags", "ec2:DeleteTags", "ec2:ModifyInstanceAttribute",
    "ec2:AssociateAddress", "ec2:DisassociateAddress", "elasticloadbalancing:RegisterTargets",
    "elasticloadbalancing:DeregisterTargets", "iam:PassRole", "sts:AssumeRole",
    "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
    "s3:PutObject", "sns:Publish", "states:StartExecution", "events:PutEvents",
})
# The product account's default event bus, in any region (same-account condition below): bound client
# accounts are allowed to send their EC2 events there (chalicelib/aws/event_bus.py).
DEFAULT_EVENT_BUS = "arn:aws:events:*:*:event-bus/default"

# The CDK context file: ``context.kms_key_arns.<stage>`` lists the customer managed keys (full key ARNs) that
# encrypt the volumes/AMIs the product launches from; empty = no KMS permission at all.
CDK_JSON = Path(__file__).resolve().parent / "cdk.json"
KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$|^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/mrk-[0-9a-f]{32}$")
# EC2's service-linked role for spot: created on an account's first spot launch, by the caller's credentials.
SPOT_SERVICE = "spot.amazonaws.com"
SPOT_SERVICE_LINKED_ROLE = "arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"

DYNAMODB_ACTIONS = (
    "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem",
    "dynamodb:Query", "dynamodb:Scan", "dynamodb:UpdateItem",
)


def client_role_name(stage: str) -> str:
    """Name of the role a client creates in its account (infra/client-account-role.yaml)."""
    return f"SpotOptimizer-{stage}-ClientAccess"


def kms_key_arns(stage: str) -> list[str]:
    """The stage's configured customer managed keys (``infra/cdk.json`` → ``context.kms_key_arns.<stage>``)."""
    configured = json.loads(CDK_JSON.read_text()).get("context", {}).get("kms_key_arns", {}).get(stage) or []
    if isinstance(configured, str):
        configured = [configured]
    bad = [arn for arn in configured if not KMS_KEY_ARN.match(arn)]
    if bad:
        raise ValueError(f"infra/cdk.json kms_key_arns.{stage}: not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>): {bad}")
    return sorted(set(configured))


def _stage_tags(stage: str, key: str) -> dict:
    return {"StringEquals": {f"{key}/{TAG_MANAGED_BY}": MANAGED_BY, f"{key}/{TAG_STAGE}": stage}}


def _deny(sid: str, actions, resources, condition: dict) -> dict:
    return {**_statement(sid, actions, resources, condition), "Effect": "Deny"}


def _statement(sid: str, actions, resources, condition: dict | None = None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions),
                 "Resource": resources if isinstance(resources, str) else list(resources)}
    if condition:
        statement["Condition"] = condition
    return statement


# --- the EC2 / ELBv2 capabilities (also the client-account role) ----------------------------------

def ec2_describe(stage: str) -> list[dict]:
    # Describe* and the market-data calls have no resource-level permissions in IAM: "*" is the only form.
    return [_statement("Ec2DescribeInstances", ["ec2:DescribeInstances"], "*")]


def ec2_zones(stage: str) -> list[dict]:
    return [_statement("Ec2DescribeZones", ["ec2:DescribeAvailabilityZones"], "*")]


def ec2_spot_prices(stage: str) -> list[dict]:
    return [_statement("Ec2SpotPrices", ["ec2:DescribeSpotPriceHistory"], "*")]


def ondemand_list_prices(stage: str) -> list[dict]:
    """The Price List API (chalicelib/aws/ondemand_prices.py), with the product's own credentials: it has no
    resources, and a client account's role needs none of it."""
    return [_statement("OnDemandListPrices", ["pricing:GetProducts"], "*")]


def ec2_placement_scores(stage: str) -> list[dict]:
    return [_statement("Ec2PlacementScores", ["ec2:DescribeAvailabilityZones", "ec2:GetSpotPlacementScores"], "*")]


def ec2_launch(stage: str) -> list[dict]:
    instance = "arn:aws:ec2:*:*:instance/*"
    return [
        # The launch copies the source instance's AMI, subnet, security groups and key pair: resources of
        # the client's own that IAM cannot tell apart (ownership of the source is checked in code).
        _statement("Ec2Launch", ["ec2:RunInstances"], [
            instance, "arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:security-group/*",
            "arn:aws:ec2:*:*:network-interface/*", "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:key-pair/*",
            "arn:aws:ec2:*:*:spot-instances-request/*"]),
        # ... and only instances tagged as ours, of this stage (a missing tag is "not equal": denied).
        _deny(f"Ec2LaunchOnlyTagged{TAG_MANAGED_BY}", ["ec2:RunInstances"], [instance],
              {"StringNotEquals": {f"aws:RequestTag/{TAG_MANAGED_BY}": MANAGED_BY}}),
        _deny(f"Ec2LaunchOnlyTagged{TAG_STAGE}", ["ec2:RunInstances"], [instance],
              {"StringNotEquals": {f"aws:RequestTag/{TAG_STAGE}": stage}}),
        _statement("Ec2LaunchSubnet", ["ec2:DescribeSubnets"], "*"),
        _statement("Ec2TagOnLaunch", ["ec2:CreateTags"], [
            instance, "arn:aws:ec2:*:*:spot-instances-request/*", "arn:aws:ec2:*:*:volume/*"],
            {"StringEquals": {"ec2:CreateAction": "RunInstances"}}),
        _statement("PassInstanceRoleToEc2", ["iam:PassRole"], [f"arn:aws:iam::*:role{PASSABLE_ROLE_PATH}*"],
                   {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
        # A fresh account has no spot service-linked role: the first spot launch creates it with the caller's
        # permissions, and without this one it fails (and the product falls back to on-demand).
        _statement("SpotServiceLinkedRole", ["iam:CreateServiceLinkedRole"], [SPOT_SERVICE_LINKED_ROLE],
                   {"StringEquals": {"iam:AWSServiceName": SPOT_SERVICE}}),
        *kms_for_launch(stage),
    ]


def kms_for_launch(stage: str) -> list[dict]:
    """Launching from a CMK-encrypted AMI/snapshot: EC2 decrypts and re-encrypts through grants it creates with
    the caller's permissions. Only when the stage configures keys, only on those keys, only through EC2."""
    keys = kms_key_arns(stage)  # the client-account template's "${Stage}" has none
    if not keys:
        return []
    return [
        _statement("KmsGrantForEc2", ["kms:CreateGrant"], keys,
                   {"Bool": {"kms:GrantIsForAWSResource": "true"}}),
        _statement("KmsUseThroughEc2", ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext",
                                        "kms:ReEncryptFrom", "kms:ReEncryptTo"], keys,
                   {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}),
    ]


def ec2_terminate(stage: str) -> list[dict]:
    return [_statement("Ec2TerminateOwnInstances", ["ec2:TerminateInstances"], ["arn:aws:ec2:*:*:instance/*"],
                       _stage_tags(stage, "ec2:ResourceTag"))]


def ec2_retire(stage: str) -> list[dict]:
    """Auto-terminate of a client's *own* old primary after a failover (``failover.retire`` only): IAM cannot tell
    a registered instance from any other, so the client opts each one in with the tag ``TAG_RETIRE`` = stage;
    an untagged one is left running and the client told (``chalicelib.aws.ec2.NotPermitted``)."""
    return [_statement("Ec2RetireClientTaggedInstances", ["ec2:TerminateInstances"], ["arn:aws:ec2:*:*:instance/*"],
                       {"StringEquals": {f"ec2:ResourceTag/{TAG_RETIRE}": stage}})]


def ec2_tag(stage: str) -> list[dict]:
    condition = _stage_tags(stage, "ec2:ResourceTag")
    # Client tags on our instances; our own keys cannot be rewritten (no moving an instance to another stage).
    condition["ForAllValues:StringNotEquals"] = {"aws:TagKeys": [TAG_MANAGED_BY, TAG_STAGE]}
    return [_statement("Ec2TagOwnInstances", ["ec2:CreateTags"], ["arn:aws:ec2:*:*:instance/*"], condition)]


def handover_check(stage: str) -> list[dict]:
    # Before a hand-over EIP or target group is used, code checks it is the client's (describe has no
    # resource-level permissions).
    return [_statement("HandoverDescribe", ["ec2:DescribeAddresses", "elasticloadbalancing:DescribeTargetGroups",
                                           "elasticloadbalancing:DescribeTargetHealth"],
                       "*")]


def ec2_move_eip(stage: str) -> list[dict]:
    return [
        *handover_check(stage),
        # The address is the client's (IAM cannot tie it to a client: checked in code); the instance it
        # moves to must be one of ours, of this stage.
        _statement("Ec2MoveElasticIpFrom", ["ec2:AssociateAddress"], [
            "arn:aws:ec2:*:*:elastic-ip/*", "arn:aws:ec2:*:*:network-interface/*"]),
        _statement("Ec2MoveElasticIpToOwnInstance", ["ec2:AssociateAddress"], ["arn:aws:ec2:*:*:instance/*"],
                   _stage_tags(stage, "ec2:ResourceTag")),
    ]


def target_group_handover(stage: str) -> list[dict]:
    # ELBv2 cannot condition on the target (an instance id): any target group of the account remains
    # reachable; code checks the group belongs to the client's account and the target is ours.
    return [*handover_check(stage),
            _statement("TargetGroupHandover", ["elasticloadbalancing:RegisterTargets",
                                               "elasticloadbalancing:DeregisterTargets"],
                       ["arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"])]


# --- product-account capabilities ------------------------------------------------------------------

def tables(stage: str) -> list[dict]:
    prefix = f"arn:aws:dynamodb:*:*:table/{APP_NAME}-{stage}-"
    return [_statement("Tables", DYNAMODB_ACTIONS, [f"{prefix}*", f"{prefix}*/index/*"], SAME_ACCOUNT)]


def admin_key(stage: str) -> list[dict]:
    return [_statement("AdminKey", ["ssm:GetParameter"],
                       [f"arn:aws:ssm:*:*:parameter{admin_key_parameter_name(stage)}"], SAME_ACCOUNT)]


def models_read(stage: str) -> list[dict]:
    bucket = f"arn:aws:s3:::{model_bucket_name(stage, '*', '*')}"
    # Without s3:ListBucket S3 answers a missing key with AccessDenied instead of NoSuchKey, which
    # chalicelib/aws/s3.py reads as "not uploaded" (a 404, not a 500). It lists key names, nothing else.
    return [_statement("ModelArtifactsRead", ["s3:GetObject"], [f"{bucket}/models/*"], SAME_ACCOUNT),
            _statement("ModelArtifactsMissingIsNotFound", ["s3:ListBucket"], [bucket], SAME_ACCOUNT)]


def models_write(stage: str) -> list[dict]:
    return [_statement("ModelArtifactsWrite", ["s3:PutObject"],
                       [f"arn:aws:s3:::{model_bucket_name(stage, '*', '*')}/models/*"], SAME_ACCOUNT)]


def notify(stage: str) -> list[dict]:
    return [_statement("Notifications", ["sns:Publish"],
                       [f"arn:aws:sns:*:*:{notification_topic_name(stage)}"], SAME_ACCOUNT)]


def start_failover(stage: str) -> list[dict]:
    return [_statement("FailoverWorkflow", ["states:StartExecution"],
                       [f"arn:aws:states:*:*:stateMachine:{state_machine_name(stage)}"], SAME_ACCOUNT)]


def failover_status(stage: str) -> list[dict]:
    return [_statement("FailoverExecutions", ["states:DescribeExecution"],
                       [f"arn:aws:states:*:*:execution:{state_machine_name(stage)}:*",
                        f"arn:aws:states:*:*:express:{state_machine_name(stage)}:*:*"], SAME_ACCOUNT)]


def _dispatch(name: str, sid: str, queue_name):
    # A fan-out dispatcher: its queue's URL (by name, once per container) and sending to it (SendMessageBatch is
    # authorised as sqs:SendMessage); no other queue, no other SQS action.
    def statements(stage: str) -> list[dict]:
        return [_statement(sid, ["sqs:GetQueueUrl", "sqs:SendMessage"], [f"arn:aws:sqs:*:*:{queue_name(stage)}"],
                           SAME_ACCOUNT)]

    statements.__name__ = statements.__qualname__ = name
    return statements


decision_dispatch = _dispatch("decision_dispatch", "SendToDecisionQueue", decision_queue_name)
savings_dispatch = _dispatch("savings_dispatch", "SendToSavingsQueue", savings_queue_name)
# The sentinel sends an event it had no time to start back to its own queue as a new message (chalicelib.sentinel).
event_requeue = _dispatch("event_requeue", "SendToEventQueue", event_queue_name)


def event_bus_access(stage: str) -> list[dict]:
    # Binding a client account lets it PutEvents on our default bus (a resource-policy statement per account).
    # PutPermission/RemovePermission have no resource-level permissions in IAM ("*" is the only form): they
    # can only edit the caller's own account's bus policy, and the sentinel still checks each event's account.
    return [_statement("ReadOwnEventBus", ["events:DescribeEventBus"], [DEFAULT_EVENT_BUS], SAME_ACCOUNT),
            _statement("ClientAccountsOnEventBus", ["events:PutPermission", "events:RemovePermission"], "*")]


def event_forwarding_statements(bus_arn) -> list[dict]:
    """What the client account's EventBridge role may do: put events on exactly the product's bus."""
    return [_statement("ForwardToSpotOptimizer", ["events:PutEvents"], [bus_arn])]


def assume_client_role(stage: str) -> list[dict]:
    # Clients' accounts are not known in advance: any account, but only this stage's role name. The
    # product's own account id (self-hosted tenancy) comes from GetCallerIdentity, which has no resource.
    return [_statement("AssumeClientAccountRole", ["sts:AssumeRole"],
                       [f"arn:aws:iam::*:role/{client_role_name(stage)}"]),
            _statement("OwnAccountId", ["sts:GetCallerIdentity"], "*")]


API_HANDLER = "api_handler"


def deployed_function_name(function: str, stage: str) -> str:
    """The Lambda name Chalice deploys: ``<app>-<stage>-<name>``, except the API handler's ``<app>-<stage>``
    (Chalice keeps that for backwards compatibility, chalice/deploy/appgraph.py)."""
    return f"{APP_NAME}-{stage}" if function == API_HANDLER else function_name(function, stage)


def _logs(stage: str, function: str) -> list[dict]:
    group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{deployed_function_name(function, stage)}"
    return [_statement("OwnLogGroup", ["logs:CreateLogGroup"], [group]),
            _statement("OwnLogStreams", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{group}:log-stream:*"])]


# What Lambda's SQS event source mapping does with the function's role (app.py ``@app.on_sqs_message``);
# no code of the function calls these.
EVENT_SOURCE_ACTIONS = ("sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                        "sqs:ReceiveMessage")
# Chalice function → the queue its ``@app.on_sqs_message`` consumes (tests/infra/test_policies.py checks app.py;
# infra/event_source.py sets ReportBatchItemFailures on each mapping).
SQS_EVENT_SOURCES = {SENTINEL_FUNCTION: event_queue_name, DECISION_WORKER_FUNCTION: decision_queue_name,
                     SAVINGS_WORKER_FUNCTION: savings_queue_name}


def _event_source(stage: str, function: str) -> list[dict]:
    # A consumer also reads its queue's URL, to make messages visible again sooner than the visibility timeout
    # (ChangeMessageVisibility is the event source's): the sentinel a failed event (chalicelib.sentinel
    # RETRY_DELAYS_S), the fan-out workers a message their invocation ran out of time for (jobs.fanout.return_now).
    if function not in SQS_EVENT_SOURCES:
        return []
    queue = f"arn:aws:sqs:*:*:{SQS_EVENT_SOURCES[function](stage)}"
    return [_statement("ConsumeEventQueue", EVENT_SOURCE_ACTIONS, [queue], SAME_ACCOUNT),
            _statement("OwnQueueUrl", ["sqs:GetQueueUrl"], [queue], SAME_ACCOUNT)]


def _tracing(stage: str) -> list[dict]:
    # X-Ray has no resource-level permissions.
    return [_statement("Tracing", ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "*")]


# Everything that acts on EC2 in a client account; the client-account role grants exactly this.
EC2_CAPABILITIES = (ec2_describe, ec2_zones, ec2_spot_prices, ec2_placement_scores, ec2_launch, ec2_terminate, ec2_retire,
                    ec2_tag, handover_check, ec2_move_eip, target_group_handover)
# What acts on a client's instances, in the client's account (through its role; market data is read with the
# product's own credentials).
_IN_CLIENT_ACCOUNTS = frozenset({ec2_describe, ec2_launch, ec2_terminate, ec2_retire, ec2_tag, handover_check,
                                 ec2_move_eip, target_group_handover})
# ec2_terminate with every launch: a launcher whose replica row was closed (or took another instance) while
# it launched terminates the instance it started (chalicelib.replicas._lost_attach).
_SENTINEL = (tables, ec2_describe, ec2_zones, ec2_launch, ec2_terminate, start_failover, failover_status,
             event_requeue)

# Chalice function name → its capabilities: what its code path calls (infra/boto_calls.py; tested both
# ways: nothing missing, nothing granted that no code calls). Every function of app.py is here (tested).
FUNCTIONS: dict[str, tuple] = {
    API_HANDLER: (tables, admin_key, models_read, models_write, ec2_describe, ec2_zones, ec2_launch, ec2_terminate, ec2_tag,
                  handover_check, start_failover, failover_status, event_bus_access),
    "health-monitor": (tables,),
    "risk-scorer": (tables, models_read),
    "decision-cycle": (tables, decision_dispatch),
    DECISION_WORKER_FUNCTION: (tables,),
    "replica-coordinator": (tables, ec2_describe, ec2_zones, ec2_launch, ec2_terminate, start_failover,
                            failover_status),
    "cleanup": (tables, ec2_describe, ec2_terminate, ec2_tag, failover_status),
    "spot-prices": (tables, ec2_spot_prices, ondemand_list_prices),
    "placement-scores": (tables, ec2_placement_scores),
    "pricing-aggregator": (tables,),
    "data-cleaner": (tables,),
    "savings-rollup": (tables, savings_dispatch),
    "savings-close": (tables, savings_dispatch),
    SAVINGS_WORKER_FUNCTION: (tables,),
    "savings-fleet": (tables,),
    "growth-snapshot": (tables,),
    SENTINEL_FUNCTION: _SENTINEL,
    "failover-plan": (tables, ec2_describe, ec2_zones),
    "failover-launch": (tables, ec2_describe, ec2_launch, ec2_terminate),
    "failover-check-ready": (tables, ec2_describe, ec2_terminate),
    "failover-handover": (tables, ec2_describe, ec2_move_eip, target_group_handover, ec2_terminate),
    "failover-record": (tables, notify),
    "failover-retire": (tables, ec2_describe, ec2_terminate, ec2_retire),
    "failover-next-standby": (tables, ec2_describe, ec2_zones, ec2_launch, ec2_terminate),
    "failover-failed": (tables, ec2_describe, ec2_terminate, notify),
}
assert set(FAILOVER_TASKS.values()) <= set(FUNCTIONS)


def _merge(statements: list[dict]) -> list[dict]:
    """One statement per Sid (two capabilities may share one, e.g. DescribeAvailabilityZones)."""
    by_sid: dict[str, dict] = {}
    for statement in statements:
        if statement["Sid"] in by_sid:
            kept = by_sid[statement["Sid"]]
            if kept != statement:
                raise ValueError(f"two different statements named {statement['Sid']}")
            continue
        by_sid[statement["Sid"]] = statement
    return list(by_sid.values())


def function_policy(stage: str, function: str) -> dict:
    """The IAM policy document of one Chalice function in one stage."""
    capabilities = FUNCTIONS[function]
    statements = _logs(stage, function) + _tracing(stage) + _event_source(stage, function)
    for capability in capabilities:
        statements += capability(stage)
    if _IN_CLIENT_ACCOUNTS & set(capabilities):
        statements += assume_client_role(stage)
    return {"Version": VERSION, "Statement": _merge(statements)}


# The client-account role exists only in infra/client-account-role.yaml: CloudFormation fills in the client's
# account and partition there (Fn::Sub, with the stage).
CLIENT_ACCOUNT, CLIENT_PARTITION = "${AWS::AccountId}", "${AWS::Partition}"
# What `python -m infra.event_source redrive --client-role-arn` does with the client-account role
# (``redrive_forwarded``): find the client stack's dead-letter queue, receive its messages, delete each one once
# sent on; GetQueueAttributes lets the operator look at its depth first. Never SendMessage (EventBridge's) nor
# PurgeQueue.
CLIENT_REDRIVE_ACTIONS = ("sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage")


def forwarded_event_redrive(stage: str, *, partition: str = CLIENT_PARTITION, account: str = CLIENT_ACCOUNT) -> list[dict]:
    """The client stack's dead-letter queue of forwarded events (same name as the product's forwarders':
    ``forwarded_event_dead_letter_queue_name``), in any region of the client's own account, and nothing else."""
    queue = f"arn:{partition}:sqs:*:{account}:{forwarded_event_dead_letter_queue_name(stage)}"
    return [_statement("RedriveForwardedEvents", CLIENT_REDRIVE_ACTIONS, [queue])]


def client_account_statements(stage: str, *, partition: str = CLIENT_PARTITION,
                              account: str = CLIENT_ACCOUNT) -> list[dict]:
    """What the client-account role allows: every EC2/ELBv2 capability, same conditions, and emptying the
    client stack's dead-letter queue (:func:`forwarded_event_redrive`). ``partition``/``account`` default to
    the CloudFormation pseudo parameters of the template; give real ones to analyse the policy."""
    return _merge([s for capability in EC2_CAPABILITIES for s in capability(stage)]
                  + forwarded_event_redrive(stage, partition=partition, account=account))


def redrive_operator_statements(stage: str) -> list[dict]:
    """What the product-account role an operator runs ``redrive --client-role-arn`` as needs, and nothing more:
    assume the stage's client-account roles (their trust admits only roles named ``spot-optimizer-<stage>-*``,
    ``naming.redrive_operator_role_name``) and send to the stage's event queue (own account)."""
    assume = [s for s in assume_client_role(stage) if "sts:AssumeRole" in s["Action"]]
    send = _statement("SendToEventQueue", ["sqs:GetQueueUrl", "sqs:SendMessage"],
                      [f"arn:aws:sqs:*:*:{event_queue_name(stage)}"], SAME_ACCOUNT)
    return _merge(assume + [send])
