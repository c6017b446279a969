"""Write what infra/policies.py and infra/throttling.py define into the files Chalice and clients use.

    python -m infra.chalice_policies            # (make policies) rewrite the files below
    python -m infra.chalice_policies --check    # exit 1 if a committed file differs from the generated one

* ``.chalice/policies/<stage>/<function>.json``: one IAM policy per Chalice function and deployed stage;
* ``.chalice/config.json``: ``stages.<stage>.lambda_functions.<function>.iam_policy_file`` (and
  ``reserved_concurrency`` where infra/throttling.py reserves some, ``lambda_timeout`` of the failover task
  functions from the ASL's TimeoutSeconds: ``chalicelib.workflows.function_timeouts``), the stage's ``xray``,
  log retention and ``api_gateway_stage``; everything else is kept;
* ``infra/client-account-role.yaml``: the CloudFormation template a client deploys in its account (the access
  role, and per region the event forwarding with its dead-letter queue and alarm).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.policies import (  # noqa: E402
    API_HANDLER,
    FUNCTIONS,
    STAGES,
    VERSION,
    client_account_statements,
    client_role_name,
    event_forwarding_statements,
    function_policy,
)
from infra.naming import alarm_name, api_gateway_stage_name, log_retention_days  # noqa: E402
from infra.throttling import RESERVED_CONCURRENCY  # noqa: E402

from chalicelib.settings import APP_NAME, forwarded_event_dead_letter_queue_name  # noqa: E402
from chalicelib.workflows import function_timeouts  # noqa: E402
from components.sentinel.rules import SENTINEL_RULES  # noqa: E402

CHALICE_DIR = ROOT / ".chalice"
CONFIG = CHALICE_DIR / "config.json"
CLIENT_ROLE_TEMPLATE = ROOT / "infra" / "client-account-role.yaml"
_STAGE_PARAMETER = "${Stage}"
# The product's sentinel rules (→ its event queue) live on its default bus in its own region; EventBridge
# delivers across regions.
PRODUCT_EVENT_BUS = "arn:${AWS::Partition}:events:${ProductRegion}:${ProductAccountId}:event-bus/default"
ROLE_CONDITION = "CreateAccessRole"
ALARM_TOPIC_CONDITION = "HasAlarmTopic"
NEXT_EXTERNAL_ID_CONDITION = "HasNextExternalId"
DEAD_LETTER_QUEUE = "ForwardDeadLetterQueue"
DEAD_LETTER_RETENTION_S = 14 * 24 * 3600  # SQS's maximum, like the product's own dead-letter queues
# EventBridge's retry policy of each forwarding rule's target (components/sentinel/rules.py names): how long it
# keeps retrying an event the product's bus refuses (throttled, that region impaired) before the dead-letter
# queue. Attempts are always EventBridge's maximum, 185, so that the age alone bounds the retries. A permission
# error (the product's bus policy does not admit the account: it is bound only after this stack is deployed) is
# never retried: such an event goes to the dead-letter queue at once, whatever the policy. Whatever arrives late
# (or is redriven from the queue) is safe: the sentinel is idempotent on the event id, claims one workflow per
# instance, and ignores an instance that is no longer the agent's primary.
FORWARD_RETRY_ATTEMPTS = 185
FORWARD_MAX_EVENT_AGE_S = {
    # The warning is worth its two minutes (TERMINATION_NOTICE_S) before the interruption; after that the
    # instance's state change (retried a day, below) carries the loss. 5 minutes ride out a short blip, and a
    # warning that still cannot be forwarded raises the alarm within minutes rather than a day later.
    "sentinel-interruption": 5 * 60,
    # A recommendation pre-warms a standby ahead of an interruption that may follow within minutes or hours: a
    # standby started more than an hour late is rarely ahead of it (and the loss itself comes as a state change).
    "sentinel-rebalance": 60 * 60,
    # A lost primary must be failed over whenever the news arrives (the health monitor may have noticed first:
    # then it is a duplicate): EventBridge's maximum, 24 h, as the product's own rules (infra/event_intake.py).
    "sentinel-state-change": 24 * 60 * 60,
    # Retirements are scheduled days or weeks ahead: a day late is still in time. Maximum too.
    "sentinel-health": 24 * 60 * 60,
}


def policy_file(stage: str, function: str) -> str:
    """Path of a function's policy, relative to ``.chalice/`` (what ``iam_policy_file`` holds)."""
    return f"policies/{stage}/{function}.json"


def _json(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


def chalice_config(config: dict) -> dict:
    """``config`` with every deployed stage's functions pointing at their own policy file."""
    config = json.loads(json.dumps(config))
    config.pop("iam_policy_file", None)
    config["autogen_policy"] = False
    for stage in STAGES:
        stage_config = config["stages"][stage]
        # Every function of the stage: X-Ray active tracing (Chalice also turns it on for the API Gateway
        # stage). Memory sizes are left as they are.
        stage_config["xray"] = True
        # An API Gateway stage of its own: the API metrics (and the Api5xx alarm) of two stages in one
        # account are told apart only by it (naming.api_gateway_stage_name).
        stage_config["api_gateway_stage"] = api_gateway_stage_name(stage)
        # Logs kept log_retention_days, not forever: set per function because Chalice 1.34 gets the API
        # handler's log group wrong (it names it <app>-<stage>-api_handler, the function is <app>-<stage>;
        # `chalice package` even emits a dangling ${ApiHandler}); the API handler's retention is set after
        # `chalice deploy` by `infra/deploy_state.py api-log-retention` (make deploy).
        stage_config.pop("log_retention_in_days", None)
        functions = stage_config.setdefault("lambda_functions", {})
        timeouts = function_timeouts()  # a failover task's Lambda ends no later than its Task's timeout
        for function in FUNCTIONS:
            entry = functions.setdefault(function, {})
            entry["iam_policy_file"] = policy_file(stage, function)
            if function == API_HANDLER:
                entry.pop("log_retention_in_days", None)
            else:
                entry["log_retention_in_days"] = log_retention_days(stage)
            if function in timeouts:
                entry["lambda_timeout"] = timeouts[function]
            if function in RESERVED_CONCURRENCY:
                entry["reserved_concurrency"] = RESERVED_CONCURRENCY[function]
            else:
                entry.pop("reserved_concurrency", None)
    return config


def _sub_stage(value):
    """Strings naming the stage parameter become ``Fn::Sub`` (CloudFormation fills in ``Stage``)."""
    if isinstance(value, dict):
        return {k: _sub_stage(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub_stage(v) for v in value]
    if isinstance(value, str) and (_STAGE_PARAMETER in value or "${AWS::" in value):
        return {"Fn::Sub": value}
    return value


def client_role_template() -> dict:
    """The client-account role: trusted by the product's function roles of one stage (any product role named
    ``spot-optimizer-<stage>-*``), with the client's ExternalId; allowed exactly the EC2/ELBv2 statements the
    product's functions hold (same conditions) and the redrive of :func:`event_forwarding_resources`' dead-letter
    queue in any region of the account (``policies.client_account_statements``). Plus the event forwarding."""
    trust = {"Version": VERSION, "Statement": [{
        "Sid": "SpotOptimizerFunctions",
        "Effect": "Allow",
        "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${ProductAccountId}:root"}},
        "Action": "sts:AssumeRole",
        "Condition": {
            # During an ExternalId rotation the role accepts the pending id too (NextExternalId), so the product can
            # verify it before it stops using the current one (POST /api/admin/clients/{id}/external-id/confirm).
            "StringEquals": {"sts:ExternalId": {"Fn::If": [NEXT_EXTERNAL_ID_CONDITION,
                                                           [{"Ref": "ExternalId"}, {"Ref": "NextExternalId"}],
                                                           {"Ref": "ExternalId"}]}},
            # Only the product's Lambda roles of this stage (Chalice names them <app>-<stage>-<function>).
            "ArnLike": {"aws:PrincipalArn": {"Fn::Sub": (
                f"arn:${{AWS::Partition}}:iam::${{ProductAccountId}}:role/{APP_NAME}-{_STAGE_PARAMETER}-*")}},
        },
    }]}
    access_role = {
        "Type": "AWS::IAM::Role",
        "Condition": ROLE_CONDITION,
        "Properties": {
            "RoleName": {"Fn::Sub": client_role_name(_STAGE_PARAMETER)},
            "Description": "Spot Optimizer acts on the instances it launched here (tags ManagedBy, SpotOptimizerStage).",
            "MaxSessionDuration": 3600,
            "AssumeRolePolicyDocument": trust,
            "Policies": [{
                "PolicyName": "spot-optimizer-ec2",
                "PolicyDocument": {"Version": VERSION,
                                   "Statement": _sub_stage(client_account_statements(_STAGE_PARAMETER))},
            }],
        },
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": ("Spot Optimizer client-account access: lets the Spot Optimizer product account launch, "
                        "terminate and re-route only the EC2 instances it tags as its own, and forwards this "
                        "region's EC2 interruption, rebalance and state-change events and AWS Health scheduled "
                        "retirements to it, keeping what cannot be delivered in a dead-letter queue that alarms "
                        "(generated by infra/chalice_policies.py from infra/policies.py; do not edit by hand)."),
        "Parameters": {
            "ProductAccountId": {"Type": "String", "AllowedPattern": "^[0-9]{12}$",
                                 "Description": "The AWS account id Spot Optimizer runs in (given to you by the operator)."},
            "ProductRegion": {"Type": "String", "AllowedPattern": "^[a-z]{2}(-[a-z]+)+-[0-9]$",
                              "Description": "The AWS region Spot Optimizer runs in (given to you by the operator)."},
            "ExternalId": {"Type": "String", "MinLength": 16, "MaxLength": 1224,
                           "AllowedPattern": "^[A-Za-z0-9+=,.@:/_-]+$",
                           "Description": "The external id Spot Optimizer issued to your client account."},
            "NextExternalId": {"Type": "String", "Default": "", "MaxLength": 1224,
                               "AllowedPattern": "^([A-Za-z0-9+=,.@:/_-]{16,})?$",
                               "Description": ("During an ExternalId rotation only: the pending id Spot Optimizer "
                                               "shows you (accepted next to ExternalId until the operator confirms "
                                               "the change; then set ExternalId to it and empty this).")},
            "Stage": {"Type": "String", "Default": "prod", "AllowedValues": list(STAGES),
                      "Description": "The Spot Optimizer stage that may act in this account."},
            "CreateAccessRole": {"Type": "String", "Default": "true", "AllowedValues": ["true", "false"],
                                 "Description": ("IAM roles are global: 'true' in exactly one region of the account, "
                                                 "'false' in every other region (which then only forwards events).")},
            "AlarmTopicArn": {"Type": "String", "Default": "",
                              "AllowedPattern": "^(arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256})?$",
                              "Description": ("An SNS topic of THIS region to notify when an event could not be "
                                              "forwarded (dead-letter queue not empty), and when it is empty again. "
                                              "Empty: the alarm has no action (watch it in CloudWatch).")},
        },
        "Conditions": {ROLE_CONDITION: {"Fn::Equals": [{"Ref": "CreateAccessRole"}, "true"]},
                       ALARM_TOPIC_CONDITION: {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]},
                       NEXT_EXTERNAL_ID_CONDITION: {"Fn::Not": [{"Fn::Equals": [{"Ref": "NextExternalId"}, ""]}]}},
        "Resources": {"ClientAccessRole": access_role, **event_forwarding_resources()},
        "Outputs": {"RoleArn": {"Condition": ROLE_CONDITION,
                                "Description": "Give this ARN to Spot Optimizer (client account registration).",
                                "Value": {"Fn::GetAtt": ["ClientAccessRole", "Arn"]}},
                    "ForwardDeadLetterQueueUrl": {
                        "Description": ("Events EventBridge could not forward to Spot Optimizer (14 days); the "
                                        "operator redrives them through the access role."),
                        "Value": {"Ref": DEAD_LETTER_QUEUE}}},
    }


def _logical_id(rule_name: str) -> str:
    return "Forward" + "".join(part.capitalize() for part in rule_name.split("-"))


def event_forwarding_resources() -> dict:
    """One rule per sentinel rule (components/sentinel/rules.py), sending matching events of this region to
    the product's default bus through a role that may put events on that bus only. What EventBridge cannot
    deliver there (after ``FORWARD_MAX_EVENT_AGE_S`` of retries, or at once on a permission error) goes to this
    region's dead-letter queue (the product forwarders' name, ``forwarded_event_dead_letter_queue_name``: the
    redrive finds either by it), which only these rules may send to; its alarm fires on one message."""
    role = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": ("EventBridge forwards EC2 interruption/rebalance/state-change events and AWS Health "
                            "scheduled retirements to Spot Optimizer."),
            "AssumeRolePolicyDocument": {"Version": VERSION, "Statement": [{
                "Sid": "EventBridgeOfThisAccount",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
            }]},
            "Policies": [{
                "PolicyName": "spot-optimizer-forward-events",
                "PolicyDocument": {"Version": VERSION,
                                   "Statement": event_forwarding_statements({"Fn::Sub": PRODUCT_EVENT_BUS})},
            }],
        },
    }
    resources = {"EventForwardingRole": role, **_dead_letter_resources()}
    for name, pattern in SENTINEL_RULES.items():
        resources[_logical_id(name)] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": {"Fn::Sub": f"SpotOptimizer-{_STAGE_PARAMETER}-{name}"},
                "Description": f"Spot Optimizer {name}: forward to the product account's event bus.",
                "State": "ENABLED",
                "EventPattern": pattern,
                "Targets": [{"Id": "SpotOptimizer", "Arn": {"Fn::Sub": PRODUCT_EVENT_BUS},
                             "RoleArn": {"Fn::GetAtt": ["EventForwardingRole", "Arn"]},
                             "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "Arn"]}},
                             "RetryPolicy": {"MaximumEventAgeInSeconds": FORWARD_MAX_EVENT_AGE_S[name],
                                             "MaximumRetryAttempts": FORWARD_RETRY_ATTEMPTS}}],
            },
        }
    return resources


def _dead_letter_resources() -> dict:
    """The forwarding rules' dead-letter queue (SSE-SQS: EventBridge needs no key policy), its policy (only
    EventBridge, only for this stack's forwarding rules, only over TLS) and the alarm on its depth."""
    # Fresh dicts each time: yaml.safe_dump writes a shared one as an alias, which CloudFormation rejects.
    def queue_arn():
        return {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "Arn"]}

    def topic():
        return {"Fn::If": [ALARM_TOPIC_CONDITION, [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}

    rules = [{"Fn::GetAtt": [_logical_id(name), "Arn"]} for name in SENTINEL_RULES]
    dlq = forwarded_event_dead_letter_queue_name(_STAGE_PARAMETER)
    return {
        DEAD_LETTER_QUEUE: {
            "Type": "AWS::SQS::Queue",
            "Properties": {"QueueName": {"Fn::Sub": dlq}, "MessageRetentionPeriod": DEAD_LETTER_RETENTION_S,
                           "SqsManagedSseEnabled": True},
        },
        "ForwardDeadLetterQueuePolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {"Queues": [{"Ref": DEAD_LETTER_QUEUE}], "PolicyDocument": {"Version": VERSION, "Statement": [
                {"Sid": "ForwardingRulesDeadLetters", "Effect": "Allow",
                 "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": queue_arn(),
                 "Condition": {"ArnEquals": {"aws:SourceArn": rules}}},
                {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue_arn(),
                 "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            ]}},
        },
        "ForwardDeadLetterAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": {"Fn::Sub": alarm_name(_STAGE_PARAMETER, "events-forward-dead-lettered")},
                "AlarmDescription": {"Fn::Sub": (
                    f"EC2/AWS Health events in {dlq} of ${{AWS::Region}}: EventBridge could not forward them to "
                    "Spot Optimizer (its message attributes ERROR_CODE/ERROR_MESSAGE say why). They are kept 14 "
                    "days: tell the Spot Optimizer operator (account and region), who redrives them.")},
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "QueueName"]}}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": topic(),
                "OKActions": topic(),
            },
        },
    }


def rendered() -> dict[Path, str]:
    """Every generated file and its exact text."""
    files = {CHALICE_DIR / policy_file(stage, function): _json(function_policy(stage, function))
             for stage in STAGES for function in FUNCTIONS}
    files[CONFIG] = _json(chalice_config(json.loads(CONFIG.read_text())))
    files[CLIENT_ROLE_TEMPLATE] = ("# Generated by `make policies` (infra/chalice_policies.py): do not edit.\n"
                                   + yaml.safe_dump(client_role_template(), sort_keys=False, width=120))
    return files


def stale() -> list[Path]:
    """Generated files missing or different on disk, plus policy files no function owns."""
    files = rendered()
    wrong = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    extra = [path for path in (CHALICE_DIR / "policies").rglob("*.json") if path not in files]
    return wrong + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for path in problems:
            print(f"out of date: {path.relative_to(ROOT)} (run `make policies`)", file=sys.stderr)
        return 1 if problems else 0
    for path in (CHALICE_DIR / "policies").rglob("*.json"):
        path.unlink()
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(FUNCTIONS) * len(STAGES)} function policies, {CONFIG.relative_to(ROOT)}, "
          f"{CLIENT_ROLE_TEMPLATE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
