"""Durable event intake in the synthesised templates: rule → queue (→ the sentinel's event source mapping,
which is Chalice's) and queue → dead-letter queue; the queue policy; the alarms; the other regions' forwarders.

The infra stack is synthesised once for this module (dev stage, without the ML layer); expected values come
from components/sentinel/rules.py, chalicelib.settings and .chalice/config.json, not from infra/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chalice.config import Config
from moto.events.models import EventPattern

from chalicelib.settings import (
    decision_queue_name,
    event_dead_letter_queue_name,
    event_queue_name,
    forwarded_event_dead_letter_queue_name,
    savings_queue_name,
)
from components.sentinel.rules import SENTINEL_RULES
from tests.infra._support import of_type

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"
EMAIL = "oncall@example.com"


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """(infra stack template, {region: forwarder template}) of the dev stage, deploy region us-east-1."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.main import add_event_forwarders
    from infra.stack import SpotOptimizerStack

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = SpotOptimizerStack(app, "spot-optimizer-dev-infra", stage=STAGE, skip_layer=True)
    forwarders = add_event_forwarders(app, STAGE, "eu-west-1, us-east-1,ap-southeast-2,eu-west-1", "us-east-1",
                                      alarm_email=EMAIL)
    return (Template.from_stack(stack).to_json(),
            {f.region: Template.from_stack(f).to_json() for f in forwarders})


@pytest.fixture(scope="module")
def infra(templates):
    return templates[0]


def _queues(template):
    by_name = {r["Properties"]["QueueName"]: (logical, r["Properties"]) for logical, r in
               of_type(template, "AWS::SQS::Queue").items()}
    return by_name[event_queue_name(STAGE)], by_name[event_dead_letter_queue_name(STAGE)]


def test_the_event_queue_dead_letters_after_five_receives_and_both_keep_messages_14_days_encrypted(infra):
    (queue_id, queue), (dlq_id, dlq) = _queues(infra)
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 5}
    for props in (queue, dlq):
        assert props["MessageRetentionPeriod"] == 14 * 24 * 3600
        assert props["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in dlq


def test_a_message_stays_invisible_at_least_six_sentinel_timeouts(infra):
    """AWS's advice for Lambda event sources: otherwise a batch still running comes back to another poller."""
    (_, queue), _ = _queues(infra)
    timeout = Config(chalice_stage=STAGE, function_name="sentinel", config_from_disk=json.loads(
        (ROOT / ".chalice" / "config.json").read_text())).lambda_timeout
    assert queue["VisibilityTimeout"] >= 6 * timeout


def test_each_sentinel_pattern_is_one_rule_targeting_the_queue_with_the_dlq_for_failed_deliveries(infra):
    (queue_id, _), (dlq_id, _) = _queues(infra)
    rules = {r["Properties"]["Name"]: r["Properties"] for r in of_type(infra, "AWS::Events::Rule").values()}
    assert {name: props["EventPattern"] for name, props in rules.items()} == {
        f"spot-optimizer-{STAGE}-{name}": pattern for name, pattern in SENTINEL_RULES.items()}
    for props in rules.values():
        assert "EventBusName" not in props  # the default bus (where cross-region and client events arrive)
        (target,) = props["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 24 * 3600


def test_only_the_sentinel_rules_may_send_to_the_queues(infra):
    (queue_id, _), (dlq_id, _) = _queues(infra)
    rule_ids = sorted(of_type(infra, "AWS::Events::Rule"))
    policies = {p["Properties"]["Queues"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
                for p in of_type(infra, "AWS::SQS::QueuePolicy").values()
                if p["Properties"]["Queues"][0]["Ref"] in (queue_id, dlq_id)}  # (the decision queues': TLS only)
    assert set(policies) == {queue_id, dlq_id}
    for statements in policies.values():
        allows = [s for s in statements if s["Effect"] == "Allow"]
        assert all(s["Principal"] == {"Service": "events.amazonaws.com"} for s in allows)
        for statement in allows:  # CDK's grantSendMessages: send (and look the queue up), nothing else
            actions = {statement["Action"]} if isinstance(statement["Action"], str) else set(statement["Action"])
            assert "sqs:SendMessage" in actions <= {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
        assert sorted(s["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::GetAtt"][0] for s in allows) == rule_ids
        (deny,) = [s for s in statements if s["Effect"] == "Deny"]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_a_dead_lettered_event_alarms_on_the_stacks_topic(infra):
    (queue_id, _), (dlq_id, _) = _queues(infra)
    (topic_id,) = of_type(infra, "AWS::SNS::Topic")
    alarms = {(a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0], a["Properties"]["MetricName"]):
              a["Properties"] for a in of_type(infra, "AWS::CloudWatch::Alarm").values()
              if a["Properties"].get("Namespace") == "AWS/SQS"
              and a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0] in (queue_id, dlq_id)}
    dlq = alarms[dlq_id, "ApproximateNumberOfMessagesVisible"]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    assert dlq["Threshold"] == 1 and dlq["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert dlq["AlarmActions"] == [{"Ref": topic_id}]
    waiting = alarms[queue_id, "ApproximateAgeOfOldestMessage"]
    assert waiting["Threshold"] == 120 and waiting["AlarmActions"] == [{"Ref": topic_id}]


def test_a_dead_lettered_event_left_unredriven_alarms_again_before_sqs_deletes_it(infra):
    """GIVEN a sentinel event in the dead-letter queue that nobody redrives WHEN it has waited half its retention
    THEN a second alarm notifies the stack's topic, before SQS deletes it (14 days after its first enqueue).

    Found (event loss audit, tests/integration/test_event_loss_audit.py): the only DLQ alarm was on its depth, which
    notifies once, when the first event arrives, and then stays in ALARM for every later one; an event left there
    was deleted by SQS at 14 days without another word: lost for good."""
    (_, queue), (dlq_id, dlq) = _queues(infra)
    (topic_id,) = of_type(infra, "AWS::SNS::Topic")
    retention = dlq["MessageRetentionPeriod"]
    [age] = [a["Properties"] for a in of_type(infra, "AWS::CloudWatch::Alarm").values()
             if a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
             and a["Properties"]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]]
    assert age["ComparisonOperator"] == "GreaterThanThreshold" and 0 < age["Threshold"] <= retention / 2
    assert age["Threshold"] >= 24 * 3600  # not while the operator is still on the first alarm
    assert age["AlarmActions"] == age["OKActions"] == [{"Ref": topic_id}]
    assert retention >= queue["MessageRetentionPeriod"]  # an event's expiry counts from its first enqueue


def test_the_queue_app_py_consumes_is_the_one_the_stack_creates(infra, chalice_app):
    (source,) = [s for s in chalice_app.event_sources if type(s).__name__ == "SQSEventConfig" and s.name == "sentinel"]
    assert source.queue == event_queue_name(STAGE) and source.batch_size == 10
    assert infra["Outputs"]["EventQueueUrl"]["Value"] == {"Ref": _queues(infra)[0][0]}


def test_the_package_merge_names_chalices_sqs_event_sources():
    """Chalice names the SAM resource and its SQS event after the function; the merge adds what it cannot."""
    from chalice.utils import to_cfn_resource_name

    from infra.policies import SQS_EVENT_SOURCES

    merge = json.loads((ROOT / "infra" / "chalice-package-merge.json").read_text())
    assert set(merge["Resources"]) == {to_cfn_resource_name(f) for f in SQS_EVENT_SOURCES}
    for function in SQS_EVENT_SOURCES:
        resource = to_cfn_resource_name(function)
        events = merge["Resources"][resource]["Properties"]["Events"]
        assert events == {f"{resource}SqsEventSource": {"Properties": {"FunctionResponseTypes": ["ReportBatchItemFailures"]}}}


# --- other regions ---------------------------------------------------------------------------------------


def test_each_other_region_forwards_the_same_patterns_to_the_deploy_regions_default_bus(templates):
    _, forwarders = templates
    assert sorted(forwarders) == ["ap-southeast-2", "eu-west-1"]  # not the deploy region, each once
    bus = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":events:us-east-1:", {"Ref": "AWS::AccountId"},
                             ":event-bus/default"]]}
    for template in forwarders.values():
        (role_id,) = of_type(template, "AWS::IAM::Role")
        rules = {r["Properties"]["Name"]: r["Properties"] for r in of_type(template, "AWS::Events::Rule").values()}
        assert {name: props["EventPattern"] for name, props in rules.items()} == {
            f"spot-optimizer-{STAGE}-{name}": pattern for name, pattern in SENTINEL_RULES.items()}
        (dlq_id,) = of_type(template, "AWS::SQS::Queue")
        for props in rules.values():
            assert props["Targets"] == [{"Arn": bus, "Id": "Target0", "RoleArn": {"Fn::GetAtt": [role_id, "Arn"]},
                                         "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}}]
        role = template["Resources"][role_id]["Properties"]
        (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "events.amazonaws.com"}
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
        (policy,) = of_type(template, "AWS::IAM::Policy").values()
        assert policy["Properties"]["PolicyDocument"]["Statement"] == [
            {"Action": "events:PutEvents", "Effect": "Allow", "Resource": bus}]


def test_a_forwarded_event_eventbridge_cannot_deliver_lands_in_a_dead_letter_queue_of_its_region(templates):
    """Nothing lost silently: the rules' own dead-letter queue, named for the stage (SQS names are regional),
    kept 14 days, encrypted, TLS only, writable by EventBridge for these rules only."""
    _, forwarders = templates
    for template in forwarders.values():
        (dlq_id, dlq), = of_type(template, "AWS::SQS::Queue").items()
        props = dlq["Properties"]
        assert props["QueueName"] == forwarded_event_dead_letter_queue_name(STAGE)
        assert props["MessageRetentionPeriod"] == 14 * 24 * 3600 and props["SqsManagedSseEnabled"] is True
        assert {"Key": "stage", "Value": STAGE} in props["Tags"]
        (policy,) = of_type(template, "AWS::SQS::QueuePolicy").values()
        assert policy["Properties"]["Queues"] == [{"Ref": dlq_id}]
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        allows = [s for s in statements if s["Effect"] == "Allow"]
        assert all(s["Principal"] == {"Service": "events.amazonaws.com"} and s["Action"] == "sqs:SendMessage"
                   for s in allows)
        assert sorted(s["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::GetAtt"][0] for s in allows) == sorted(
            of_type(template, "AWS::Events::Rule"))
        (deny,) = [s for s in statements if s["Effect"] == "Deny"]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_forwarder_retries_are_eventbridges_default_which_the_deploy_region_sets_explicitly(templates):
    """CDK's EventBus target takes no retry policy; EventBridge's default (24 h, 185 attempts) is what the
    deploy region's rules set, so a forwarded event is retried as long before it is dead-lettered."""
    from infra.event_intake import MAX_EVENT_AGE, RETRY_ATTEMPTS

    infra, forwarders = templates
    intake = {r["Properties"]["Targets"][0]["RetryPolicy"]["MaximumEventAgeInSeconds"]
              for r in of_type(infra, "AWS::Events::Rule").values()}
    attempts = {r["Properties"]["Targets"][0]["RetryPolicy"]["MaximumRetryAttempts"]
                for r in of_type(infra, "AWS::Events::Rule").values()}
    assert intake == {MAX_EVENT_AGE.to_seconds()} == {24 * 3600} and attempts == {RETRY_ATTEMPTS} == {185}
    for template in forwarders.values():
        assert all("RetryPolicy" not in r["Properties"]["Targets"][0]
                   for r in of_type(template, "AWS::Events::Rule").values())


def test_a_forwarder_dead_letter_alarms_a_topic_of_its_region_that_mails_the_alarm_address(templates):
    """A CloudWatch alarm notifies only an SNS topic of its own region: each forwarder has one, subscribed
    to the address the stage's topic gets; its dead-letter queue alarms when a message arrives and again when one has
    waited 7 of its 14 days (the event loss audit: before, an unredriven event expired without another word)."""
    from infra.naming import alarm_name, forwarder_topic_name

    _, forwarders = templates
    for template in forwarders.values():
        (dlq_id,) = of_type(template, "AWS::SQS::Queue")
        (topic_id, topic), = of_type(template, "AWS::SNS::Topic").items()
        assert topic["Properties"]["TopicName"] == forwarder_topic_name(STAGE)
        alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in of_type(template, "AWS::CloudWatch::Alarm").values()}
        assert set(alarms) == {alarm_name(STAGE, "events-forward-dead-lettered"),
                               alarm_name(STAGE, "events-forward-dead-letters-expiring")}
        expiring = alarms[alarm_name(STAGE, "events-forward-dead-letters-expiring")]
        assert (expiring["MetricName"], expiring["Threshold"]) == ("ApproximateAgeOfOldestMessage", 7 * 24 * 3600)
        assert expiring["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
        assert expiring["AlarmActions"] == expiring["OKActions"] == [{"Ref": topic_id}]
        alarm = alarms[alarm_name(STAGE, "events-forward-dead-lettered")]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]
        (subscription,) = [s["Properties"] for s in of_type(template, "AWS::SNS::Subscription").values()]
        assert subscription == {"Endpoint": EMAIL, "Protocol": "email", "TopicArn": {"Ref": topic_id}}


def _resolve(value, region: str) -> str:
    """A synthesised ARN as text, the pseudo parameters replaced by stand-ins (the stack's own region)."""
    pseudo = {"AWS::Partition": "aws", "AWS::AccountId": "111122223333", "AWS::Region": region}
    if isinstance(value, str):
        return value
    if set(value) == {"Ref"}:
        return pseudo[value["Ref"]]
    separator, parts = value["Fn::Join"]
    return separator.join(_resolve(part, region) for part in parts)


def test_every_alarm_may_publish_to_the_topic_it_notifies(templates):
    """A topic policy replaces SNS's default one (which lets the account's alarms publish): the TLS-only
    policy must also let CloudWatch publish for this stage's alarms of this account and region, or every
    alarm action fails with 'no resource-based policy allows the SNS:Publish action' and nobody is told."""
    from fnmatch import fnmatch

    infra, forwarders = templates
    for region, template in [("deploy-region", infra), *forwarders.items()]:
        policies = {p["Properties"]["Topics"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
                    for p in of_type(template, "AWS::SNS::TopicPolicy").values()}
        alarms = [a["Properties"] for a in of_type(template, "AWS::CloudWatch::Alarm").values()]
        assert alarms
        for alarm in alarms:
            arn = f"arn:aws:cloudwatch:{region}:111122223333:alarm:{alarm['AlarmName']}"
            for action in alarm["AlarmActions"] + alarm["OKActions"]:
                allowed = [s for s in policies.get(action["Ref"], []) if s["Effect"] == "Allow"
                           and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
                           and s["Action"] == "sns:Publish"
                           and _resolve(s["Condition"]["StringEquals"]["aws:SourceAccount"], region) == "111122223333"
                           and fnmatch(arn, _resolve(s["Condition"]["ArnLike"]["aws:SourceArn"], region))]
                assert allowed, f"{alarm['AlarmName']} ({region}) cannot publish to {action['Ref']}"
            other_stage = arn.replace(f"alarm:spot-optimizer-{STAGE}-", "alarm:spot-optimizer-prod-")
            assert not any(fnmatch(other_stage, _resolve(s["Condition"]["ArnLike"]["aws:SourceArn"], region))
                           for s in policies[alarm["AlarmActions"][0]["Ref"]] if s["Effect"] == "Allow")


def test_forwarder_names_carry_the_stage_and_every_tag_set_the_stage(templates):
    from infra.naming import audit_template

    _, forwarders = templates
    for template in forwarders.values():
        assert audit_template(template, STAGE) == []
        tagged = {r["Type"] for r in template["Resources"].values() if "Tags" in r.get("Properties", {})}
        assert {"AWS::SQS::Queue", "AWS::SNS::Topic", "AWS::IAM::Role", "AWS::CloudWatch::Alarm"} <= tagged


def test_forwarders_need_a_deploy_region_and_real_region_names():
    from infra.main import event_regions

    assert event_regions("", None) == []
    assert event_regions("eu-west-1,us-east-1", "us-east-1") == ["eu-west-1"]
    with pytest.raises(ValueError, match="deploy region"):
        event_regions("eu-west-1", None)
    with pytest.raises(ValueError, match="not region names"):
        event_regions("eu-west-1,europe", "us-east-1")


# --- the patterns (one source for the CDK rules, the forwarders, the client template and local mode) ------

HEALTH_RETIREMENT = {
    "version": "0", "id": "7fb65329-1628-4cf3-a740-95fg457h1402", "detail-type": "AWS Health Event",
    "source": "aws.health", "account": "123456789012", "time": "2026-03-01T01:27:31Z", "region": "us-east-1",
    "resources": ["i-0abcd1111"],
    "detail": {"eventArn": "arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/"
                           "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED_ABC123",
               "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
               "eventTypeCategory": "scheduledChange", "eventScopeCode": "ACCOUNT_SPECIFIC",
               "startTime": "Mon, 16 Mar 2026 01:00:00 GMT",
               "eventDescription": [{"language": "en_US", "latestDescription": "EC2 has detected degradation ..."}],
               "affectedEntities": [{"entityValue": "i-0abcd1111"}]}}


def _matching(event: dict) -> list[str]:
    return [name for name, pattern in SENTINEL_RULES.items()
            if EventPattern.load(json.dumps(pattern)).matches_event(event)]


def test_the_health_rule_matches_a_scheduled_retirement_and_nothing_else_matches_it():
    assert _matching(HEALTH_RETIREMENT) == ["sentinel-health"]


@pytest.mark.parametrize("change", [
    {"eventTypeCode": "AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED"},  # the instance stays
    {"eventTypeCategory": "issue"},
    {"service": "RDS"},
])
def test_the_health_rule_ignores_what_does_not_take_an_instance_away(change):
    event = {**HEALTH_RETIREMENT, "detail": {**HEALTH_RETIREMENT["detail"], **change}}
    assert _matching(event) == []


def test_each_ec2_event_matches_exactly_one_rule():
    """One queue message per event: the patterns do not overlap."""
    base = {"version": "0", "id": "x", "source": "aws.ec2", "account": "123456789012", "time": "2026-03-01T00:00:00Z",
            "region": "us-east-1", "resources": []}
    assert _matching({**base, "detail-type": "EC2 Spot Instance Interruption Warning",
                      "detail": {"instance-id": "i-1", "instance-action": "terminate"}}) == ["sentinel-interruption"]
    assert _matching({**base, "detail-type": "EC2 Instance Rebalance Recommendation",
                      "detail": {"instance-id": "i-1"}}) == ["sentinel-rebalance"]
    assert _matching({**base, "detail-type": "EC2 Instance State-change Notification",
                      "detail": {"instance-id": "i-1", "state": "terminated"}}) == ["sentinel-state-change"]
    assert _matching({**base, "detail-type": "EC2 Instance State-change Notification",
                      "detail": {"instance-id": "i-1", "state": "pending"}}) == []


# --- after `chalice deploy`: partial batch responses on the mapping, and the redrive ----------------------


def _zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def sentinel(event, context):\n    return {}\n")
    return buffer.getvalue()


@pytest.mark.parametrize("consumer, queue_name", [("sentinel", event_queue_name),
                                                   ("decision-worker", decision_queue_name),
                                                   ("savings-worker", savings_queue_name)])
def test_enable_sets_report_batch_item_failures_on_each_consumers_mapping_of_its_stage_queue(aws_tables, consumer,
                                                                                            queue_name):
    """Chalice 1.34 creates the mapping without it, and then Lambda ignores the partial batch response."""
    import uuid

    from chalicelib.workflows import function_name
    from infra import event_source
    from tests.conftest import aws_client

    assert set(event_source.SQS_EVENT_SOURCES) == {"sentinel", "decision-worker", "savings-worker"}  # what `enable` walks
    stage = f"t{uuid.uuid4().hex[:8]}"  # the session's moto is shared
    sqs, lambda_client, iam = aws_client("sqs"), aws_client("lambda"), aws_client("iam")
    url = sqs.create_queue(QueueName=queue_name(stage))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    role = iam.create_role(RoleName=f"{stage}-{consumer}", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    function = function_name(consumer, stage)
    lambda_client.create_function(FunctionName=function, Runtime="python3.12", Role=role, Handler="app.sentinel",
                                  Code={"ZipFile": _zip()})
    with pytest.raises(event_source.EventSourceError, match="chalice deploy"):
        event_source.enable_batch_item_failures(lambda_client, sqs, stage, consumer)
    lambda_client.create_event_source_mapping(EventSourceArn=arn, FunctionName=function, BatchSize=10)

    mapping = event_source.enable_batch_item_failures(lambda_client, sqs, stage, consumer)
    again = event_source.enable_batch_item_failures(lambda_client, sqs, stage, consumer)

    (stored,) = lambda_client.list_event_source_mappings(FunctionName=function)["EventSourceMappings"]
    assert stored["FunctionResponseTypes"] == ["ReportBatchItemFailures"] == mapping["FunctionResponseTypes"]
    assert again["UUID"] == mapping["UUID"] == stored["UUID"] and stored["BatchSize"] == 10


def test_a_mapping_a_failed_chalice_deploy_left_unrecorded_is_adopted_so_the_next_deploy_updates_it(tmp_path):
    """Chalice writes .chalice/deployed/<stage>.json only when a deploy succeeds: after one that failed past the
    mappings, its planner would create them again, which Lambda refuses (one per function and queue)."""
    import uuid

    import botocore.session
    from chalice.awsclient import TypedAWSClient
    from chalice.config import DeployedResources
    from chalice.deploy import models
    from chalice.deploy.planner import RemoteState

    from chalicelib.workflows import function_name
    from infra import event_source
    from tests.conftest import aws_client

    stage = f"t{uuid.uuid4().hex[:8]}"
    sqs, lambda_client, iam = aws_client("sqs"), aws_client("lambda"), aws_client("iam")
    role = iam.create_role(RoleName=f"{stage}-sentinel", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    for consumer, queue_name in event_source.SQS_EVENT_SOURCES.items():
        url = sqs.create_queue(QueueName=queue_name(stage))["QueueUrl"]
        lambda_client.create_function(FunctionName=function_name(consumer, stage), Runtime="python3.12", Role=role,
                                      Handler="app.sentinel", Code={"ZipFile": _zip()})
        if consumer != "savings-worker":  # the failed deploy got this far
            lambda_client.create_event_source_mapping(EventSourceArn=sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
                FunctionName=function_name(consumer, stage), BatchSize=10)
    state = tmp_path / ".chalice" / "deployed" / f"{stage}.json"

    def chalice_sees(consumer: str) -> bool:
        remote = RemoteState(TypedAWSClient(botocore.session.get_session()),
                             DeployedResources(json.loads(state.read_text())))
        function = models.LambdaFunction(
            resource_name=consumer, function_name=function_name(consumer, stage), deployment_package=None,
            environment_variables={}, runtime="python3.12", handler="app.sentinel", tags={}, timeout=30,
            memory_size=512, role=None, security_group_ids=[], subnet_ids=[], layers=[], reserved_concurrency=None,
            xray=False)
        return remote.resource_exists(models.SQSEventSource(
            resource_name=event_source.chalice_resource_name(consumer),
            queue=event_source.SQS_EVENT_SOURCES[consumer](stage), batch_size=10,
            maximum_batching_window_in_seconds=0, lambda_function=function))

    assert event_source.adopt_mappings(lambda_client, stage, tmp_path) == ["sentinel", "decision-worker"]
    assert chalice_sees("sentinel") and chalice_sees("decision-worker")  # → update_lambda_event_source, no conflict
    assert not chalice_sees("savings-worker")  # nothing to adopt: Chalice creates it
    assert event_source.adopt_mappings(lambda_client, stage, tmp_path) == []  # nothing new the second time

    shared = json.loads(state.read_text())  # a record of another mapping UUID (the bucket's copy was older)
    shared["resources"][0]["event_uuid"] = str(uuid.uuid4())
    state.write_text(json.dumps(shared))
    assert not chalice_sees("sentinel")
    assert event_source.adopt_mappings(lambda_client, stage, tmp_path) == ["sentinel"]
    assert chalice_sees("sentinel")


def test_redrive_moves_the_dead_letter_queue_back_to_the_event_queue():
    import boto3
    from botocore.stub import Stubber

    from infra import event_source

    sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    queue = {name: f"arn:aws:sqs:us-east-1:111122223333:{name}"
             for name in (event_queue_name("prod"), event_dead_letter_queue_name("prod"))}
    with Stubber(sqs) as stub:
        for name in (event_dead_letter_queue_name("prod"), event_queue_name("prod")):
            url = f"https://sqs.us-east-1.amazonaws.com/111122223333/{name}"
            stub.add_response("get_queue_url", {"QueueUrl": url}, {"QueueName": name})
            stub.add_response("get_queue_attributes", {"Attributes": {"QueueArn": queue[name]}},
                              {"QueueUrl": url, "AttributeNames": ["QueueArn"]})
        stub.add_response("start_message_move_task", {"TaskHandle": "handle-1"},
                          {"SourceArn": queue[event_dead_letter_queue_name("prod")],
                           "DestinationArn": queue[event_queue_name("prod")]})
        assert event_source.redrive(sqs, "prod") == "handle-1"
        stub.assert_no_pending_responses()


def _dead_letter(sqs, stage: str, region_sqs) -> tuple[str, str]:
    source = region_sqs.create_queue(QueueName=forwarded_event_dead_letter_queue_name(stage))["QueueUrl"]
    destination = sqs.create_queue(QueueName=event_queue_name(stage))["QueueUrl"]
    return source, destination


def test_redrive_sends_the_forwarded_events_of_another_region_to_the_event_queue_and_empties_the_dlq():
    """EventBridge puts the original event in a forwarder's dead-letter queue; the redrive sends it to the
    deploy region's event queue as the deploy region's rule would have (PutEvents refuses aws.* sources)."""
    import uuid

    from infra import event_source
    from tests.conftest import aws_client

    stage = f"t{uuid.uuid4().hex[:8]}"  # the session's moto is shared
    sqs, eu = aws_client("sqs", "us-east-1"), aws_client("sqs", "eu-west-1")
    source, destination = _dead_letter(sqs, stage, eu)
    bodies = [json.dumps({**HEALTH_RETIREMENT, "id": f"event-{i}", "region": "eu-west-1"}) for i in range(13)]
    for body in bodies:
        eu.send_message(QueueUrl=source, MessageBody=body, MessageAttributes={
            "ERROR_CODE": {"DataType": "String", "StringValue": "SDK_CLIENT_ERROR"}})

    assert event_source.redrive_forwarded(eu, sqs, stage, wait_s=0) == 13

    received = []
    while batch := sqs.receive_message(QueueUrl=destination, MaxNumberOfMessages=10).get("Messages", []):
        received += [m["Body"] for m in batch]
        sqs.delete_message_batch(QueueUrl=destination, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    assert sorted(received) == sorted(bodies)  # the events themselves, unchanged
    attributes = eu.get_queue_attributes(QueueUrl=source, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert event_source.redrive_forwarded(eu, sqs, stage, wait_s=0) == 0


def test_redrive_keeps_what_it_could_not_send_and_says_so():
    import uuid

    from infra import event_source
    from tests.conftest import aws_client

    stage = f"t{uuid.uuid4().hex[:8]}"
    sqs, eu = aws_client("sqs", "us-east-1"), aws_client("sqs", "eu-west-1")
    source, _ = _dead_letter(sqs, stage, eu)
    eu.send_message(QueueUrl=source, MessageBody=json.dumps(HEALTH_RETIREMENT))

    class Refusing:
        exceptions = sqs.exceptions

        def get_queue_url(self, **kwargs):
            return sqs.get_queue_url(**kwargs)

        def send_message_batch(self, QueueUrl, Entries):
            return {"Failed": [{"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in Entries]}

    with pytest.raises(event_source.EventSourceError, match="not sent"):
        event_source.redrive_forwarded(eu, Refusing(), stage, wait_s=0)
    attributes = eu.get_queue_attributes(QueueUrl=source, AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 1


def test_redrive_of_a_region_without_a_forwarder_fails_clearly():
    from infra import event_source
    from tests.conftest import aws_client

    with pytest.raises(event_source.EventSourceError, match="no forwarder deployed there"):
        event_source.redrive_forwarded(aws_client("sqs", "ap-south-1"), aws_client("sqs", "us-east-1"), "nowhere",
                                       wait_s=0)


def test_the_redrive_command_moves_the_forwarders_queues_before_the_stages_own(monkeypatch, capsys):
    from infra import event_source

    calls = []
    monkeypatch.setattr(event_source, "redrive_forwarded",
                        lambda source, sqs, stage: calls.append(("forwarded", source.meta.region_name, stage)) or 2)
    monkeypatch.setattr(event_source, "redrive", lambda sqs, stage: calls.append(("dlq", sqs.meta.region_name, stage)))
    monkeypatch.setattr(event_source, "queue_arn", lambda sqs, name: f"arn:{name}")
    assert event_source.main(["redrive", "--stage", "prod", "--region", "us-east-1",
                              "--forwarded-from", "eu-west-1, us-east-1,us-west-2"]) == 0
    assert calls == [("forwarded", "eu-west-1", "prod"), ("forwarded", "us-west-2", "prod"), ("dlq", "us-east-1", "prod")]
    assert "2 event(s) moved" in capsys.readouterr().out


# --- a client account's stack: its dead-letter queues redriven through the client's access role --------------

CLIENT_ACCOUNT = "210987654321"
EXTERNAL_ID = "so-test-external-id-0123456789"


def _client_role(stage: str) -> str:
    from infra.policies import client_role_name

    return f"arn:aws:iam::{CLIENT_ACCOUNT}:role/{client_role_name(stage)}"


def _client_dead_letters(stage: str, regions: dict[str, int]) -> dict[str, tuple]:
    """The client stack's dead-letter queue in each region of the client's account (moto keeps accounts apart),
    holding that many events: {region: (sqs client in the client's account, queue url, bodies)}."""
    import boto3

    from tests.conftest import aws_client

    credentials = aws_client("sts").assume_role(RoleArn=_client_role(stage), RoleSessionName="client-setup")
    session = boto3.Session(aws_access_key_id=credentials["Credentials"]["AccessKeyId"],
                            aws_secret_access_key=credentials["Credentials"]["SecretAccessKey"],
                            aws_session_token=credentials["Credentials"]["SessionToken"])
    queues = {}
    for region, count in regions.items():
        client_sqs = session.client("sqs", region_name=region)
        url = client_sqs.create_queue(QueueName=forwarded_event_dead_letter_queue_name(stage))["QueueUrl"]
        assert f"/{CLIENT_ACCOUNT}/" in url
        bodies = [json.dumps({**HEALTH_RETIREMENT, "id": f"{region}-{i}", "account": CLIENT_ACCOUNT,
                              "region": region}) for i in range(count)]
        for body in bodies:
            client_sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
                "ERROR_CODE": {"DataType": "String", "StringValue": "NO_PERMISSIONS"}})
        queues[region] = (client_sqs, url, bodies)
    return queues


def _drain(sqs, url: str) -> list[str]:
    received = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        received += [m["Body"] for m in batch]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return received


def test_a_client_redrive_assumes_the_clients_access_role_with_its_external_id():
    import uuid

    import boto3

    from infra import event_source

    stage = f"t{uuid.uuid4().hex[:8]}"
    sts = boto3.client("sts", region_name="us-east-1")  # its own client: the spy stays on it
    calls = []
    sts.meta.events.register("provide-client-params.sts.AssumeRole", lambda params, **_: calls.append(dict(params)))

    session = event_source.client_account_session(sts, _client_role(stage), EXTERNAL_ID, stage)

    assert calls == [{"RoleArn": _client_role(stage), "ExternalId": EXTERNAL_ID,
                      "RoleSessionName": f"spot-optimizer-{stage}-redrive"}]
    identity = session.client("sts", region_name="us-east-1").get_caller_identity()
    assert identity["Account"] == CLIENT_ACCOUNT
    assert identity["Arn"].endswith(f":assumed-role/{_client_role(stage).rsplit('/', 1)[1]}/spot-optimizer-{stage}-redrive")


def test_the_redrive_command_with_a_client_role_moves_each_client_regions_dead_letters_to_the_event_queue(
        monkeypatch, capsys):
    """The client's stacks dead-letter in the client's account (the deploy region is one of the client's too); the
    redrive reads them through the access role and sends them to the stage's event queue in the product's account,
    deleting each once sent, and leaves the stage's own dead-letter queue alone."""
    import functools
    import uuid

    from infra import event_source
    from tests.conftest import aws_client

    stage = f"t{uuid.uuid4().hex[:8]}"
    queues = _client_dead_letters(stage, {"eu-west-1": 12, "us-east-1": 3})
    sqs = aws_client("sqs", "us-east-1")
    destination = sqs.create_queue(QueueName=event_queue_name(stage))["QueueUrl"]
    monkeypatch.setattr(event_source, "redrive_forwarded",
                        functools.partial(event_source.redrive_forwarded, wait_s=0))  # no long polling at the end
    monkeypatch.setattr(event_source, "redrive", lambda *a: pytest.fail("the stage's own DLQ is not the client's"))

    assert event_source.main(["redrive", "--stage", stage, "--region", "us-east-1", "--client-role-arn",
                              _client_role(stage), "--external-id", EXTERNAL_ID,
                              "--forwarded-from", "eu-west-1, us-east-1"]) == 0

    from components.sentinel.signals import REDRIVEN_FROM

    marked = [{**json.loads(body), REDRIVEN_FROM: CLIENT_ACCOUNT}
              for body in queues["eu-west-1"][2] + queues["us-east-1"][2]]
    assert sorted(map(json.loads, _drain(sqs, destination)), key=lambda e: e["id"]) == sorted(
        marked, key=lambda e: e["id"])  # each event, marked as the client's (the sentinel: its evidence only)
    for client_sqs, url, _ in queues.values():
        attributes = client_sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    out = capsys.readouterr().out
    assert f"(account {CLIENT_ACCOUNT}, eu-west-1)" in out and "12 event(s) moved" in out
    assert f"(account {CLIENT_ACCOUNT}, us-east-1)" in out and "3 event(s) moved" in out


def test_a_client_redrive_marks_every_event_it_moves_whatever_mark_the_client_wrote():
    """The client writes any body and any attributes into its own dead-letter queue, so an event moved from it is the
    client's word, not AWS's: the redrive marks each (``REDRIVEN_FROM``: the client's account) and the sentinel counts
    a marked event as that client's evidence only. The mark is the redrive's own: a mark the body already carries
    (any value, e.g. ``null`` or ``false`` to pass for unmarked) is overwritten, message attributes are never
    copied, and the event is otherwise sent as it was (its id, the idempotency key, unchanged)."""
    import uuid

    from components.sentinel.signals import REDRIVEN_FROM
    from infra import event_source
    from tests.conftest import aws_client

    stage = f"t{uuid.uuid4().hex[:8]}"
    [(client_sqs, url, bodies)] = _client_dead_letters(stage, {"eu-west-1": 1}).values()
    forged = [{**HEALTH_RETIREMENT, "id": f"forged-{i}", "account": CLIENT_ACCOUNT, REDRIVEN_FROM: mark}
              for i, mark in enumerate([None, False, "", 0, [], "123456789012", {"trusted": True}])]
    for event in forged:
        client_sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event), MessageAttributes={
            REDRIVEN_FROM: {"DataType": "String", "StringValue": "no"}})
    sqs = aws_client("sqs", "us-east-1")
    destination = sqs.create_queue(QueueName=event_queue_name(stage))["QueueUrl"]

    assert event_source.redrive_forwarded(client_sqs, sqs, stage, wait_s=0, account=CLIENT_ACCOUNT) == 8

    received = []
    while batch := sqs.receive_message(QueueUrl=destination, MaxNumberOfMessages=10,
                                       MessageAttributeNames=["All"]).get("Messages", []):
        received += batch
        sqs.delete_message_batch(QueueUrl=destination, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    assert all(not m.get("MessageAttributes") for m in received)
    events = sorted((json.loads(m["Body"]) for m in received), key=lambda e: e["id"])
    expected = [{**event, REDRIVEN_FROM: CLIENT_ACCOUNT} for event in [*map(json.loads, bodies), *forged]]
    assert events == sorted(expected, key=lambda e: e["id"])


def test_the_products_own_forwarder_redrive_leaves_the_events_unmarked():
    """A forwarder of the product's own account dead-letters what EventBridge could not put on the bus: nobody but
    the product writes there, so those events stay AWS's word (unmarked), as the stage's own dead-letter queue's do."""
    import uuid

    from infra import event_source
    from tests.conftest import aws_client

    stage = f"t{uuid.uuid4().hex[:8]}"
    sqs, eu = aws_client("sqs", "us-east-1"), aws_client("sqs", "eu-west-1")
    source, destination = _dead_letter(sqs, stage, eu)
    eu.send_message(QueueUrl=source, MessageBody=json.dumps(HEALTH_RETIREMENT))

    assert event_source.redrive_forwarded(eu, sqs, stage, wait_s=0) == 1
    assert _drain(sqs, destination) == [json.dumps(HEALTH_RETIREMENT)]


def test_a_client_redrive_the_access_role_refuses_says_who_it_trusts():
    import boto3
    from botocore.stub import Stubber

    from infra import event_source

    sts = boto3.client("sts", region_name="us-east-1")
    with Stubber(sts) as stub:
        stub.add_client_error("assume_role", "AccessDenied", "not authorized to perform: sts:AssumeRole")
        with pytest.raises(event_source.EventSourceError) as error:
            event_source.client_account_session(sts, _client_role("prod"), EXTERNAL_ID, "prod")
    assert "roles named spot-optimizer-prod-* (no path)" in str(error.value)
    assert "spot-optimizer-prod-redrive-operator" in str(error.value)


@pytest.mark.parametrize("arguments, error", [
    (["--client-role-arn", "arn:aws:iam::210987654321:role/SpotOptimizer-prod-ClientAccess",
      "--forwarded-from", "eu-west-1"], "needs --external-id and --forwarded-from"),
    (["--client-role-arn", "arn:aws:iam::210987654321:role/SpotOptimizer-prod-ClientAccess",
      "--external-id", EXTERNAL_ID], "needs --external-id and --forwarded-from"),
    (["--client-role-arn", "SpotOptimizer-prod-ClientAccess", "--external-id", EXTERNAL_ID,
      "--forwarded-from", "eu-west-1"], "is not an IAM role ARN"),
    (["--external-id", EXTERNAL_ID, "--forwarded-from", "eu-west-1"], "--external-id goes with --client-role-arn"),
])
def test_a_client_redrive_needs_a_role_arn_its_external_id_and_the_clients_regions(arguments, error, capsys):
    from infra import event_source

    with pytest.raises(SystemExit) as exit_:
        event_source.main(["redrive", "--stage", "prod", *arguments])
    assert exit_.value.code == 2 and error in capsys.readouterr().err
