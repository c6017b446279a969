"""Least privilege: one policy per function, generated, linted, scoped, and covering every boto3 call."""

from __future__ import annotations

import json
import re
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml
from chalice.config import Config

from chalicelib.aws.ec2 import MANAGED_BY, TAG_MANAGED_BY, TAG_RETIRE, TAG_STAGE
from infra import boto_calls, chalice_policies, policies
from components.sentinel.rules import SENTINEL_RULES
from infra.policies import DESTRUCTIVE_ACTIONS, FUNCTIONS, STAGES, function_policy

ROOT = Path(__file__).resolve().parents[2]
EC2_ON_INSTANCES = {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances", "ec2:RebootInstances",
                    "ec2:ModifyInstanceAttribute", "ec2:CreateTags", "ec2:DeleteTags", "ec2:AssociateAddress"}
# Granted with another capability's action, never called by name: RunInstances implies these (tags, the
# instance role, a fresh account's spot service-linked role, grants on a configured CMK).
# GetObject implies s3:ListBucket: without it S3 answers a missing key with AccessDenied, not NoSuchKey.
IMPLIED = {"ec2:CreateTags", "iam:PassRole", "iam:CreateServiceLinkedRole", "kms:CreateGrant", "kms:Decrypt",
           "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo",
           "s3:ListBucket"}
# ... and what Lambda's SQS event source mapping does with the function's role (no code calls it).
ALWAYS = ("logs:", "xray:", "sts:AssumeRole", *policies.EVENT_SOURCE_ACTIONS)


def _parliament_findings(document: dict) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports pkg_resources
        import parliament
    findings = parliament.analyze_policy_string(json.dumps(document)).findings
    for finding in findings:
        parliament.enhance_finding(finding)
    return findings


def _above_low(document: dict) -> list[str]:
    return [f"{f.issue} ({f.severity}): {f.detail}" for f in _parliament_findings(document)
            if f.severity not in ("LOW", "INFO")]


def _statements(policy: dict, effect: str = "Allow"):
    for statement in policy["Statement"]:
        if statement["Effect"] == effect:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            yield statement, actions, resources


def destructive_on_star(policy: dict) -> list[str]:
    """Destructive actions (or action wildcards) allowed on ``Resource: "*"``."""
    bad = []
    for _statement, actions, resources in _statements(policy):
        if "*" in resources:
            bad += [a for a in actions if a in DESTRUCTIVE_ACTIONS or "*" in a]
    return bad


ALL_POLICIES = [(stage, function) for stage in STAGES for function in FUNCTIONS]


# --- generated, wired, complete ------------------------------------------------------------------

def test_committed_files_equal_the_generated_ones():
    assert chalice_policies.stale() == [], "run `make policies`"


def test_every_chalice_function_has_its_policy_and_nothing_else_has_one():
    assert set(boto_calls.roots()) == set(FUNCTIONS)
    assert not (ROOT / ".chalice" / "policy.json").exists()


@pytest.mark.parametrize("stage, function", ALL_POLICIES)
def test_chalice_resolves_each_function_to_its_own_policy_file(stage, function):
    config = Config(chalice_stage=stage, function_name=function,
                    config_from_disk=json.loads((ROOT / ".chalice" / "config.json").read_text()))
    assert config.autogen_policy is False
    assert config.iam_policy_file == f"policies/{stage}/{function}.json"
    assert json.loads((ROOT / ".chalice" / config.iam_policy_file).read_text()) == function_policy(stage, function)


# --- the linter --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, function", ALL_POLICIES)
def test_parliament_finds_nothing_above_low(stage, function):
    assert _above_low(function_policy(stage, function)) == []


@pytest.mark.parametrize("stage", STAGES)
def test_parliament_finds_nothing_above_low_in_the_client_role(stage):
    # CloudFormation fills in the client's partition and account; parliament needs real ones.
    statements = policies.client_account_statements(stage, partition="aws", account="111122223333")
    assert _above_low({"Version": policies.VERSION, "Statement": statements}) == []


def test_parliament_does_flag_a_bad_policy():
    # The check above can fail: a launch statement without the resources RunInstances needs is MEDIUM.
    bad = {"Version": policies.VERSION, "Statement": [
        {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:*:instance/*"}]}
    assert any("RESOURCE_MISMATCH" in finding for finding in _above_low(bad))


# --- scope -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, function", ALL_POLICIES)
def test_no_destructive_action_on_every_resource(stage, function):
    assert destructive_on_star(function_policy(stage, function)) == []


def test_the_star_check_catches_a_destructive_action():
    policy = {"Statement": [{"Effect": "Allow", "Action": ["ec2:DescribeInstances", "ec2:TerminateInstances"],
                             "Resource": "*"}]}
    assert destructive_on_star(policy) == ["ec2:TerminateInstances"]


def _tag_condition(statement: dict, stage: str) -> bool:
    equals = statement.get("Condition", {}).get("StringEquals", {})
    return (equals.get(f"ec2:ResourceTag/{TAG_MANAGED_BY}") == MANAGED_BY
            and equals.get(f"ec2:ResourceTag/{TAG_STAGE}") == stage)


def _retire_condition(statement: dict, stage: str) -> bool:
    """The one other way onto an instance: the client's own, which it tagged for this stage to retire."""
    return statement.get("Condition") == {"StringEquals": {f"ec2:ResourceTag/{TAG_RETIRE}": stage}}


@pytest.mark.parametrize("stage, function", ALL_POLICIES)
def test_destructive_ec2_actions_on_instances_need_our_stage_tags(stage, function):
    policy = function_policy(stage, function)
    for statement, actions, resources in _statements(policy):
        on_instances = [r for r in resources if ":instance/" in r or r == "*"]
        for action in set(actions) & EC2_ON_INSTANCES:
            if not on_instances:
                continue
            launch_tagging = statement.get("Condition", {}).get("StringEquals", {}).get(
                "ec2:CreateAction") == "RunInstances"
            retire = action == "ec2:TerminateInstances" and function == "failover-retire"
            assert (_tag_condition(statement, stage) or (action == "ec2:CreateTags" and launch_tagging)
                    or (retire and _retire_condition(statement, stage))), (
                f"{function}: {statement['Sid']} allows {action} on instances without the stage tag condition")
    if any("ec2:RunInstances" in actions for _, actions, _ in _statements(policy)):
        denied = {json.dumps(s["Condition"], sort_keys=True) for s, actions, resources in _statements(policy, "Deny")
                  if "ec2:RunInstances" in actions and resources == ["arn:aws:ec2:*:*:instance/*"]}
        assert denied == {json.dumps({"StringNotEquals": {f"aws:RequestTag/{TAG_MANAGED_BY}": MANAGED_BY}}),
                          json.dumps({"StringNotEquals": {f"aws:RequestTag/{TAG_STAGE}": stage}})}


def test_pass_role_and_assume_role_are_narrow():
    for stage, function in ALL_POLICIES:
        for statement, actions, resources in _statements(function_policy(stage, function)):
            if "iam:PassRole" in actions:
                assert resources == ["arn:aws:iam::*:role/spot-optimizer/*"]
                assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
            if "sts:AssumeRole" in actions:
                assert resources == [f"arn:aws:iam::*:role/SpotOptimizer-{stage}-ClientAccess"]


@pytest.mark.parametrize("stage, function", ALL_POLICIES)
def test_a_stage_names_only_its_own_product_resources(stage, function):
    text = json.dumps(function_policy(stage, function))
    for other in STAGES:
        if other != stage:
            assert f"-{other}-" not in text and f"/{other}/" not in text and f'"{other}"' not in text
    for statement, _actions, resources in _statements(function_policy(stage, function)):
        for resource in resources:
            service = resource.split(":")[2] if resource.startswith("arn:") else None
            if service in ("dynamodb", "s3", "sns", "states", "ssm", "logs"):
                assert re.search(f"spot-optimizer-{stage}([-:]|$)|/spot-optimizer/{stage}/", resource), resource
                if service != "logs":
                    assert statement["Condition"] == policies.SAME_ACCOUNT


# --- every boto3 call is allowed; nothing is granted that no code calls ------------------------------

def test_no_boto3_client_escapes_the_analysis():
    assert boto_calls.unmodelled_clients() == []


@pytest.mark.parametrize("stage, function", ALL_POLICIES)
def test_every_aws_call_of_a_function_is_allowed_by_its_policy(stage, function):
    missing = boto_calls.missing_permissions(function, function_policy(stage, function))
    assert missing == {}, f"{function} calls, without permission: {missing} (add a capability in infra/policies.py)"


def test_the_analysis_sees_the_calls_we_know_about():
    assert {"ec2:TerminateInstances", "ec2:DescribeInstances", "states:DescribeExecution", "dynamodb:Scan"} <= set(
        boto_calls.actions("cleanup"))
    assert {"ec2:AssociateAddress", "elasticloadbalancing:RegisterTargets"} <= set(
        boto_calls.actions("failover-handover"))
    assert {"ssm:GetParameter", "s3:PutObject", "ec2:CreateTags"} <= set(boto_calls.actions("api_handler"))
    assert "ec2:RunInstances" not in boto_calls.actions("spot-prices")
    # a presigned S3 POST is an s3:PutObject of the signer; the fleet's scans and the client delete are seen
    api = boto_calls.actions("api_handler")
    assert "chalicelib.aws.s3:presigned_upload" in api["s3:PutObject"]
    assert "chalicelib.repositories.fleet:agents_page" in api["dynamodb:Scan"]
    assert "chalicelib.repositories.fleet:_delete_all" in api["dynamodb:DeleteItem"]


@pytest.mark.parametrize("stage, function", ALL_POLICIES)
def test_a_function_that_reads_the_model_bucket_may_list_it_so_a_missing_object_is_not_found(stage, function):
    """S3 answers a GetObject of a missing key with 404 NoSuchKey only to a caller that may s3:ListBucket the
    bucket; anyone else gets 403 AccessDenied. chalicelib/aws/s3.py reads "no such upload" from NoSuchKey
    (model registration: 404 upload_not_found); without the grant the API would answer 500 (Api5xx alarm)."""
    policy = function_policy(stage, function)
    objects = [r for _, actions, resources in _statements(policy) if "s3:GetObject" in actions for r in resources]
    buckets = {r for _, actions, resources in _statements(policy) if "s3:ListBucket" in actions for r in resources}
    assert {r.split("/", 1)[0] for r in objects} <= buckets
    assert all(s["Condition"] == policies.SAME_ACCOUNT for s, actions, _ in _statements(policy)
               if "s3:ListBucket" in actions)


def test_a_missing_permission_is_detected(monkeypatch):
    without_terminate = tuple(c for c in FUNCTIONS["cleanup"] if c is not policies.ec2_terminate)
    monkeypatch.setitem(FUNCTIONS, "cleanup", without_terminate)
    missing = boto_calls.missing_permissions("cleanup", function_policy("dev", "cleanup"))
    assert set(missing) == {"ec2:TerminateInstances"}
    assert "chalicelib.aws.ec2:terminate" in missing["ec2:TerminateInstances"]


def test_a_new_boto3_call_is_detected(tmp_path, monkeypatch):
    """A handler that grows a new EC2 call (through a helper module and a client variable) needs a grant."""
    (tmp_path / "chalicelib" / "aws").mkdir(parents=True)
    (tmp_path / "chalicelib" / "__init__.py").write_text("")
    (tmp_path / "chalicelib" / "aws" / "__init__.py").write_text("")
    (tmp_path / "chalicelib" / "aws" / "ec2.py").write_text(textwrap.dedent('''
        import boto3
        def _client(service, region):
            return boto3.session.Session().client(service, region_name=region)
        def stop(region, ids):
            client = _client("ec2", region)
            client.stop_instances(InstanceIds=ids)
        def find(region):
            return _client("ec2", region).get_paginator("describe_instances").paginate()
    '''))
    (tmp_path / "chalicelib" / "jobs.py").write_text(textwrap.dedent('''
        from chalicelib.aws import ec2
        def run():
            ec2.find("us-east-1")
            return ec2.stop("us-east-1", ["i-1"])
    '''))
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        from chalice import Chalice, Rate
        from chalicelib import jobs
        app = Chalice(app_name="x")
        @app.schedule(Rate(1, unit=Rate.MINUTES), name="cleanup")
        def cleanup(event):
            return jobs.run()
    '''))
    monkeypatch.setattr(boto_calls, "ROOT", tmp_path)
    boto_calls.reset()
    try:
        assert set(boto_calls.actions("cleanup")) == {"ec2:StopInstances", "ec2:DescribeInstances"}
        assert set(boto_calls.missing_permissions("cleanup", function_policy("dev", "cleanup"))) == {
            "ec2:StopInstances"}
    finally:
        monkeypatch.undo()
        boto_calls.reset()


def test_iam_action_names_come_from_botocore():
    assert boto_calls.iam_action("elbv2", "register_targets") == "elasticloadbalancing:RegisterTargets"
    assert boto_calls.iam_action("stepfunctions", "start_execution") == "states:StartExecution"
    with pytest.raises(KeyError):
        boto_calls.iam_action("ec2", "terminate_everything")


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_action_a_function_is_granted_is_called_by_its_code(function):
    """Beyond DynamoDB (granted per stage as one set), logs, X-Ray and the client-role hop."""
    granted = {a for _, actions, _ in _statements(function_policy("dev", function)) for a in actions}
    unused = {a for a in granted - IMPLIED - set(boto_calls.actions(function))
              if not a.startswith(("dynamodb:", *ALWAYS))}
    assert unused == set(), f"{function} is granted {unused} but no code of it calls them"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_capability_a_function_holds_is_used_by_its_code(function):
    needed = set(boto_calls.actions(function))
    for capability in FUNCTIONS[function]:
        granted = {a for statement, actions, _ in _statements({"Statement": capability("dev")}) for a in actions}
        assert (granted - IMPLIED or granted) & needed, f"{function} holds {capability.__name__} but its code calls none of it"


# --- the client-account role -------------------------------------------------------------------------

def _unsub(value):
    if isinstance(value, dict):
        return value["Fn::Sub"] if set(value) == {"Fn::Sub"} else {k: _unsub(v) for k, v in value.items()}
    return [_unsub(v) for v in value] if isinstance(value, list) else value


def test_client_role_template_is_yaml_with_the_product_statements():
    template = yaml.safe_load(chalice_policies.CLIENT_ROLE_TEMPLATE.read_text())
    assert set(template["Parameters"]) == {"ProductAccountId", "ProductRegion", "ExternalId", "NextExternalId", "Stage",
                                           "CreateAccessRole", "AlarmTopicArn"}
    role = template["Resources"]["ClientAccessRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRole"
    # the current ExternalId, and during a rotation the pending one too (NextExternalId, empty otherwise)
    assert trust["Condition"]["StringEquals"] == {"sts:ExternalId": {"Fn::If": [
        "HasNextExternalId", [{"Ref": "ExternalId"}, {"Ref": "NextExternalId"}], {"Ref": "ExternalId"}]}}
    assert template["Conditions"]["HasNextExternalId"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "NextExternalId"}, ""]}]}
    assert template["Parameters"]["NextExternalId"]["Default"] == ""
    assert trust["Principal"]["AWS"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::${ProductAccountId}:root"}
    # Only this stage's function roles (Chalice names them <app>-<stage>-<function>); parliament cannot
    # read trust policies, so this is checked here.
    assert trust["Condition"]["ArnLike"] == {"aws:PrincipalArn": {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${ProductAccountId}:role/spot-optimizer-${Stage}-*"}}
    assert role["RoleName"] == {"Fn::Sub": policies.client_role_name("${Stage}")}
    # With the stage filled in, the role's permissions are the product's EC2 statements, unchanged.
    filled = _unsub(role["Policies"][0]["PolicyDocument"]["Statement"])
    for stage in STAGES:
        rendered = json.loads(json.dumps(filled).replace("${Stage}", stage))
        assert rendered == policies.client_account_statements(stage)
        assert destructive_on_star({"Statement": rendered}) == []


def test_client_template_forwards_exactly_the_sentinel_events_to_the_product_bus():
    """Each sentinel rule (the product's rules → its event queue) has its twin in the client's account, same
    pattern, targeting the product's default bus (in the product's region) through a role that may only
    PutEvents there."""
    template = yaml.safe_load(chalice_policies.CLIENT_ROLE_TEMPLATE.read_text())
    resources = template["Resources"]
    rules = {r["Properties"]["Name"]["Fn::Sub"]: r["Properties"] for r in resources.values()
             if r["Type"] == "AWS::Events::Rule"}
    assert len(SENTINEL_RULES) == 4
    assert {name: rule["EventPattern"] for name, rule in rules.items()} == {
        f"SpotOptimizer-${{Stage}}-{name}": pattern for name, pattern in SENTINEL_RULES.items()}
    bus = {"Fn::Sub": "arn:${AWS::Partition}:events:${ProductRegion}:${ProductAccountId}:event-bus/default"}
    for rule in rules.values():
        (target,) = rule["Targets"]
        assert {key: target[key] for key in ("Id", "Arn", "RoleArn")} == {
            "Id": "SpotOptimizer", "Arn": bus, "RoleArn": {"Fn::GetAtt": ["EventForwardingRole", "Arn"]}}
    role = resources["EventForwardingRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    (statement,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["events:PutEvents"] and statement["Resource"] == [bus]
    # The IAM role is global: only the region that says so creates it; every region forwards.
    assert resources["ClientAccessRole"]["Condition"] == "CreateAccessRole"
    assert "Condition" not in resources["EventForwardingRole"]


# --- the client stack's dead-letter queue, its alarm, and the redrive through the access role ------------------

CLIENT_DLQ = "ForwardDeadLetterQueue"
DLQ_ARN = {"Fn::GetAtt": [CLIENT_DLQ, "Arn"]}


def _client_template() -> dict:
    return yaml.safe_load(chalice_policies.CLIENT_ROLE_TEMPLATE.read_text())


def _of_type(template: dict, cfn_type: str) -> dict:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == cfn_type}


def test_client_template_has_one_encrypted_dead_letter_queue_per_region_named_like_the_product_forwarders():
    """Every region's stack (not only the access role's): what EventBridge cannot forward is kept 14 days."""
    from chalicelib.settings import forwarded_event_dead_letter_queue_name

    template = _client_template()
    assert list(_of_type(template, "AWS::SQS::Queue")) == [CLIENT_DLQ]
    queue = template["Resources"][CLIENT_DLQ]
    assert "Condition" not in queue
    # The product's naming function with the stage parameter: the redrive finds either queue by that name.
    assert queue["Properties"] == {"QueueName": {"Fn::Sub": forwarded_event_dead_letter_queue_name("${Stage}")},
                                   "MessageRetentionPeriod": 14 * 24 * 3600, "SqsManagedSseEnabled": True}
    assert template["Outputs"]["ForwardDeadLetterQueueUrl"]["Value"] == {"Ref": CLIENT_DLQ}
    assert "Condition" not in template["Outputs"]["ForwardDeadLetterQueueUrl"]


def test_only_this_stacks_forwarding_rules_may_send_to_the_client_dead_letter_queue_and_only_over_tls():
    template = _client_template()
    (policy,) = _of_type(template, "AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["Queues"] == [{"Ref": CLIENT_DLQ}]
    allow, deny = policy["Properties"]["PolicyDocument"]["Statement"]
    rules = _of_type(template, "AWS::Events::Rule")
    assert len(rules) == len(SENTINEL_RULES)
    # EventBridge only, and only for this stack's four forwarding rules (aws:SourceArn: the rules' ARNs).
    assert {k: v for k, v in allow.items() if k != "Sid"} == {
        "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": DLQ_ARN,
        "Condition": {"ArnEquals": {"aws:SourceArn": [{"Fn::GetAtt": [rule, "Arn"]} for rule in rules]}}}
    assert {k: v for k, v in deny.items() if k != "Sid"} == {
        "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": DLQ_ARN,
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


# How long EventBridge retries each forwarded event before the dead-letter queue (infra/chalice_policies.py
# FORWARD_MAX_EVENT_AGE_S gives the reasons): a warning only through its two-minute notice and a little more,
# a rebalance recommendation an hour, a lost instance and a scheduled retirement EventBridge's maximum day.
RETRY_AGES = {"sentinel-interruption": 300, "sentinel-rebalance": 3600, "sentinel-state-change": 86400,
              "sentinel-health": 86400}


def test_each_forwarding_target_dead_letters_into_the_queue_after_an_explicit_retry_policy():
    from components.sentinel.signals import TERMINATION_NOTICE_S

    template = _client_template()
    assert set(RETRY_AGES) == set(SENTINEL_RULES)
    for rule in _of_type(template, "AWS::Events::Rule").values():
        name = rule["Properties"]["Name"]["Fn::Sub"].removeprefix("SpotOptimizer-${Stage}-")
        (target,) = rule["Properties"]["Targets"]
        assert target["DeadLetterConfig"] == {"Arn": DLQ_ARN}, name
        policy = target["RetryPolicy"]
        assert policy == {"MaximumEventAgeInSeconds": RETRY_AGES[name], "MaximumRetryAttempts": 185}, name
        assert 60 <= policy["MaximumEventAgeInSeconds"] <= 86400  # EventBridge's bounds
    assert RETRY_AGES["sentinel-interruption"] > TERMINATION_NOTICE_S


def test_a_client_dead_letter_alarms_in_the_clients_account_and_notifies_an_optional_topic():
    template = _client_template()
    parameter = template["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""
    for good in ("", "arn:aws:sns:eu-west-1:111122223333:ops-alarms", "arn:aws-us-gov:sns:us-gov-west-1:111122223333:a_b"):
        assert re.fullmatch(parameter["AllowedPattern"], good), good
    for bad in ("ops-alarms", "arn:aws:sqs:eu-west-1:111122223333:q", "arn:aws:sns:eu-west-1:1111:t"):
        assert not re.fullmatch(parameter["AllowedPattern"], bad), bad
    assert template["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    (alarm,) = _of_type(template, "AWS::CloudWatch::Alarm").values()
    assert "Condition" not in alarm  # the alarm exists in every region, with or without a topic
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [CLIENT_DLQ, "QueueName"]}}]
    # One message, seen in a one-minute period, is enough.
    assert (props["Statistic"], props["Period"], props["EvaluationPeriods"]) == ("Maximum", 60, 1)
    assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0)
    assert props["TreatMissingData"] == "notBreaching"
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert props["AlarmActions"] == props["OKActions"] == topic


def test_the_access_role_may_redrive_exactly_the_client_dead_letter_queue_of_its_account():
    """Receive, delete, find and inspect: on that queue name, in any region of the client's own account only."""
    from chalicelib.settings import forwarded_event_dead_letter_queue_name

    role = _client_template()["Resources"]["ClientAccessRole"]["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    sqs = [s for s in statements if any(a.startswith("sqs:") or "*" in a for a in s["Action"])]
    assert sqs == [{"Sid": "RedriveForwardedEvents", "Effect": "Allow",
                    "Action": ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                    "Resource": [{"Fn::Sub": "arn:${AWS::Partition}:sqs:*:${AWS::AccountId}:"
                                             + forwarded_event_dead_letter_queue_name("${Stage}")}]}]
    # ... and the statement comes from the one place the client role's statements do.
    assert sqs[0]["Resource"] == [{"Fn::Sub": r} for r in policies.forwarded_event_redrive("${Stage}")[0]["Resource"]]


@pytest.mark.parametrize("stage", STAGES)
def test_the_redrive_operator_role_is_trusted_by_the_client_role_and_may_do_only_the_redrive(stage, capsys):
    """The access role trusts only product roles named spot-optimizer-<stage>-*: the operator's redrive role is
    one (no Chalice function role), allowed to assume client roles and send to the event queue, nothing else."""
    import fnmatch

    from chalicelib.settings import event_queue_name
    from infra import event_source
    from infra.naming import redrive_operator_role_name

    (trust,) = _client_template()["Resources"]["ClientAccessRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    pattern = trust["Condition"]["ArnLike"]["aws:PrincipalArn"]["Fn::Sub"]
    pattern = pattern.replace("${AWS::Partition}", "aws").replace("${ProductAccountId}", "111122223333")
    pattern = pattern.replace("${Stage}", stage)
    operator = redrive_operator_role_name(stage)
    assert fnmatch.fnmatchcase(f"arn:aws:iam::111122223333:role/{operator}", pattern)
    assert operator not in {policies.deployed_function_name(f, s) for f in FUNCTIONS for s in STAGES}
    statements = policies.redrive_operator_statements(stage)
    assert {(a, r) for s in statements for a in s["Action"] for r in s["Resource"]} == {
        ("sts:AssumeRole", f"arn:aws:iam::*:role/{policies.client_role_name(stage)}"),
        ("sqs:GetQueueUrl", f"arn:aws:sqs:*:*:{event_queue_name(stage)}"),
        ("sqs:SendMessage", f"arn:aws:sqs:*:*:{event_queue_name(stage)}")}
    assert _above_low({"Version": policies.VERSION, "Statement": statements}) == []
    assert event_source.main(["operator-policy", "--stage", stage]) == 0
    assert json.loads(capsys.readouterr().out) == {"Version": policies.VERSION, "Statement": statements}


def test_a_client_template_without_the_dead_letter_queue_is_stale(tmp_path, monkeypatch):
    """The file as it was before the dead-letter queue (a hand edit, or not regenerated) fails `--check`."""
    template = _client_template()
    for logical_id in (CLIENT_DLQ, "ForwardDeadLetterQueuePolicy", "ForwardDeadLetterAlarm"):
        del template["Resources"][logical_id]
    for rule in _of_type(template, "AWS::Events::Rule").values():
        for target in rule["Properties"]["Targets"]:
            del target["DeadLetterConfig"], target["RetryPolicy"]
    old = tmp_path / "client-account-role.yaml"
    old.write_text(chalice_policies.CLIENT_ROLE_TEMPLATE.read_text().splitlines(keepends=True)[0]
                   + yaml.safe_dump(template, sort_keys=False, width=120))
    monkeypatch.setattr(chalice_policies, "CLIENT_ROLE_TEMPLATE", old)
    assert chalice_policies.stale() == [old]
    old.write_text(chalice_policies.rendered()[old])
    assert chalice_policies.stale() == []


def test_parliament_finds_nothing_above_low_in_the_forwarding_role():
    statements = policies.event_forwarding_statements("arn:aws:events:us-east-1:111122223333:event-bus/default")
    assert _above_low({"Version": policies.VERSION, "Statement": statements}) == []


def test_client_role_template_passes_cfn_lint():
    from cfnlint.api import lint_file

    assert [str(m) for m in lint_file(chalice_policies.CLIENT_ROLE_TEMPLATE)] == []


def test_the_analysis_starts_from_what_chalice_deploys(chalice_app):
    """Its entry points are Chalice's own: every route's view, every event source and pure Lambda."""
    roots = boto_calls.roots()
    views = {f"{route.view_function.__module__}:{route.view_function.__qualname__}"
             for methods in chalice_app.routes.values() for route in methods.values()}
    assert views <= set(roots["api_handler"])
    functions = {source.name for source in chalice_app.event_sources} | {
        function.name for function in chalice_app.pure_lambda_functions}
    assert functions == set(roots) - {"api_handler"}
    assert "chalicelib.observability:http_middleware" in roots["api_handler"]


def test_each_function_writes_only_its_own_log_group():
    def groups(function):
        return [r for s, _, resources in _statements(function_policy("prod", function)) for r in resources
                if r.startswith("arn:aws:logs:")]

    assert groups("api_handler") == ["arn:aws:logs:*:*:log-group:/aws/lambda/spot-optimizer-prod",
                                     "arn:aws:logs:*:*:log-group:/aws/lambda/spot-optimizer-prod:log-stream:*"]
    assert groups("cleanup")[0] == "arn:aws:logs:*:*:log-group:/aws/lambda/spot-optimizer-prod-cleanup"


@pytest.mark.parametrize("stage", STAGES)
def test_each_queue_consumer_may_consume_exactly_the_queue_app_py_names(chalice_app, stage):
    """The SQS permissions come from app.py's ``@app.on_sqs_message`` (its queue, for the stage), nothing else;
    chalice package/deploy import app.py with the stage's SPOT_STAGE (its environment_variables)."""
    from chalicelib.settings import decision_queue_name, event_queue_name, savings_queue_name

    sources = {s.name: s.queue for s in chalice_app.event_sources if type(s).__name__ == "SQSEventConfig"}
    assert sources == {"sentinel": event_queue_name("dev"), "decision-worker": decision_queue_name("dev"),
                       "savings-worker": savings_queue_name("dev")}  # the tests' stage
    assert {f: queue("dev") for f, queue in policies.SQS_EVENT_SOURCES.items()} == sources
    config = Config(chalice_stage=stage, config_from_disk=json.loads((ROOT / ".chalice" / "config.json").read_text()))
    assert config.environment_variables["SPOT_STAGE"] == stage
    for function, queue in (("sentinel", event_queue_name(stage)), ("decision-worker", decision_queue_name(stage)),
                            ("savings-worker", savings_queue_name(stage))):
        sqs = [(s, resources) for s, actions, resources in _statements(function_policy(stage, function))
               if any(a.startswith("sqs:") for a in actions)]
        # each also reads its own queue's URL, to bring messages back sooner (a failed event; a message the
        # invocation ran out of time for); the sentinel sends an event it had no time to start back to its queue
        sent_back = [("SendToEventQueue", [f"arn:aws:sqs:*:*:{queue}"])] if function == "sentinel" else []
        assert sorted((s["Sid"], r) for s, r in sqs) == sorted([("ConsumeEventQueue", [f"arn:aws:sqs:*:*:{queue}"]),
                                                                ("OwnQueueUrl", [f"arn:aws:sqs:*:*:{queue}"]),
                                                                *sent_back])
        actions = {s["Sid"]: sorted(s["Action"]) for s, _ in sqs}
        assert actions["ConsumeEventQueue"] == sorted(policies.EVENT_SOURCE_ACTIONS)
        assert actions["OwnQueueUrl"] == ["sqs:GetQueueUrl"]
        assert actions.get("SendToEventQueue", ["sqs:GetQueueUrl", "sqs:SendMessage"]) == ["sqs:GetQueueUrl",
                                                                                            "sqs:SendMessage"]


DISPATCHERS = {"decision-cycle": ("decision-worker", "decisions"), "savings-rollup": ("savings-worker", "savings"),
               "savings-close": ("savings-worker", "savings")}


@pytest.mark.parametrize("stage", STAGES)
def test_each_dispatcher_may_only_send_to_its_queue_and_nothing_else_touches_sqs(stage):
    from chalicelib.settings import APP_NAME

    for dispatcher, (worker_name, queue) in DISPATCHERS.items():
        sqs = [(sorted(actions), resources, s.get("Condition"))
               for s, actions, resources in _statements(function_policy(stage, dispatcher))
               if any(a.startswith("sqs:") for a in actions)]
        assert sqs == [(["sqs:GetQueueUrl", "sqs:SendMessage"], [f"arn:aws:sqs:*:*:{APP_NAME}-{stage}-{queue}"],
                        policies.SAME_ACCOUNT)], dispatcher
        # the worker cannot send (only its event source mapping's actions and its own queue's URL)
        worker = {a for _, actions, _ in _statements(function_policy(stage, worker_name)) for a in actions}
        assert {a for a in worker if a.startswith("sqs:")} == {*policies.EVENT_SOURCE_ACTIONS, "sqs:GetQueueUrl"}
    # no other function has an SQS action (the fleet job included: it reads only the table)
    consumers = {"sentinel", "decision-worker", "savings-worker"}
    others = [f for f in FUNCTIONS if f not in consumers | set(DISPATCHERS)
              and any(a.startswith("sqs:") for _, actions, _ in _statements(function_policy(stage, f)) for a in actions)]
    assert others == []


def test_sqs_batch_calls_need_their_single_message_action():
    """IAM has no sqs:SendMessageBatch: the analysis asks for what SQS authorises the batch as."""
    assert boto_calls.iam_action("sqs", "send_message_batch") == "sqs:SendMessage"
    for dispatcher, (worker, _) in DISPATCHERS.items():
        assert "chalicelib.aws.sqs:send_all" in boto_calls.actions(dispatcher)["sqs:SendMessage"]
        assert "sqs:SendMessage" not in boto_calls.actions(worker)


def test_only_the_retire_step_may_terminate_a_clients_own_instance_and_only_one_tagged_for_this_stage():
    for stage, function in ALL_POLICIES:
        retiring = [(s, actions) for s, actions, _ in _statements(function_policy(stage, function))
                    if f"ec2:ResourceTag/{TAG_RETIRE}" in json.dumps(s.get("Condition", {}))]
        if function != "failover-retire":
            assert not retiring, function
            continue
        assert [actions for _, actions in retiring] == [["ec2:TerminateInstances"]]
        assert _retire_condition(retiring[0][0], stage)
