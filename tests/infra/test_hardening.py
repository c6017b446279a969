"""The synthesised stack as an operator runs it: unique names, the stage on every tag, alarms to the topic,
the dashboard, the e-mail subscription, and cdk-nag's AwsSolutions pack with nothing unsuppressed.

Synthesised ONCE for the module (dev, as tests/conftest.py sets SPOT_STAGE=dev), with cdk-nag applied the
way infra/main.py applies it, and a tiny stand-in layer directory.
"""

from __future__ import annotations

import pytest

from chalicelib.jobs.cleanup import STUCK_INTERRUPTIONS_METRIC
from chalicelib.observability import METRICS_NAMESPACE, STAGE_DIMENSION
from chalicelib.workflows import FAILOVER_TASKS
from infra.naming import alarm_name, audit_template
from infra.policies import API_HANDLER, FUNCTIONS, deployed_function_name
from infra.stack import NAG_SUPPRESSIONS
from tests.infra._support import stand_in_layer

pytestmark = pytest.mark.slow

STAGE = "dev"
EMAIL = "oncall@example.com"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.stack import SpotOptimizerStack, apply_nag

    layer_dir = stand_in_layer(tmp_path_factory)
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = SpotOptimizerStack(app, "spot-optimizer-dev-infra", stage=STAGE, layer_dir=layer_dir, alarm_email=EMAIL)
    apply_nag(app)
    assembly = app.synth()
    messages = assembly.get_stack_by_name(stack.stack_name).messages
    return stack, Template.from_stack(stack).to_json(), messages


@pytest.fixture(scope="module")
def resources(synth):
    return synth[1]["Resources"]


def _of_type(resources, cfn_type):
    return {name: r for name, r in resources.items() if r["Type"] == cfn_type}


def _topic_id(resources):
    (topic_id,) = _of_type(resources, "AWS::SNS::Topic")
    return topic_id


# --- names and tags ---------------------------------------------------------------------------------------

def test_no_global_name_without_account_region_and_no_stage_less_tag(synth):
    assert audit_template(synth[1], STAGE) == []


def test_the_audit_sees_the_tagged_resources(resources):
    tagged = {r["Type"] for r in resources.values() if "Tags" in r.get("Properties", {})}
    assert {"AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::SNS::Topic", "AWS::StepFunctions::StateMachine",
            "AWS::IAM::Role", "AWS::Logs::LogGroup", "AWS::CloudWatch::Alarm"} <= tagged


def test_the_bucket_name_carries_account_and_region(resources):
    (bucket,) = _of_type(resources, "AWS::S3::Bucket").values()
    parts = bucket["Properties"]["BucketName"]["Fn::Join"][1]
    assert parts[0] == f"spot-optimizer-{STAGE}-models-"
    assert {"Ref": "AWS::AccountId"} in parts and {"Ref": "AWS::Region"} in parts


# --- alarms, dashboard, subscription ----------------------------------------------------------------------

EXPECTED_ALARMS = ("FailedExecutions", "Api5xx", "ApiThrottles", "FailoverTasksErrors", "FailoverTasksThrottles",
                   "StuckInterruptions", "SentinelErrors", "SentinelThrottles", "events-dead-lettered", "events-waiting",
                   "events-dead-letters-expiring",
                   "DecisionWorkerErrors", "DecisionWorkerThrottles", "decisions-dead-lettered", "decisions-waiting",
                   "SavingsWorkerErrors", "SavingsWorkerThrottles", "savings-dead-lettered", "savings-waiting",
                   "RiskPoolCap", "PriceRollupPoolCap", "Jobs1Errors", "Jobs1Throttles", "Jobs2Errors", "Jobs2Throttles")


def _alarms(resources) -> dict[str, dict]:
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in _of_type(resources, "AWS::CloudWatch::Alarm").values()}


def _metrics(alarm: dict) -> list[dict]:
    if "MetricName" in alarm:
        return [{"Namespace": alarm["Namespace"], "MetricName": alarm["MetricName"],
                 "Dimensions": alarm.get("Dimensions", [])}]
    return [q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q]


def test_every_alarm_exists_and_notifies_the_topic(resources):
    alarms = _alarms(resources)
    assert set(alarms) == {alarm_name(STAGE, what) for what in EXPECTED_ALARMS}
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": _topic_id(resources)}], name
        assert alarm["OKActions"] == [{"Ref": _topic_id(resources)}], name
        assert alarm["TreatMissingData"] == "notBreaching"


def test_failed_executions_watch_this_stages_state_machine(resources):
    alarm = _alarms(resources)[alarm_name(STAGE, "FailedExecutions")]
    (machine_id,) = _of_type(resources, "AWS::StepFunctions::StateMachine")
    metrics = _metrics(alarm)
    assert {m["MetricName"] for m in metrics} == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    assert all(m["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": machine_id}}] for m in metrics)


@pytest.mark.parametrize("kind", ["Errors", "Throttles"])
def test_failover_function_alarms_cover_every_task_of_this_stage(resources, kind):
    alarm = _alarms(resources)[alarm_name(STAGE, f"FailoverTasks{kind}")]
    watched = {d["Value"] for m in _metrics(alarm) for d in m["Dimensions"] if d["Name"] == "FunctionName"}
    assert watched == {deployed_function_name(task, STAGE) for task in FAILOVER_TASKS.values()}
    assert {m["MetricName"] for m in _metrics(alarm)} == {kind}


def _watched_functions(alarms: dict[str, dict], kind: str) -> set[str]:
    return {d["Value"] for alarm in alarms.values() for m in _metrics(alarm)
            if (m["Namespace"], m["MetricName"]) == ("AWS/Lambda", kind) for d in m["Dimensions"]
            if d["Name"] == "FunctionName"}


def test_every_function_chalice_deploys_has_its_errors_and_throttles_watched(resources):
    """The scheduled jobs too (health monitor, replica coordinator, cleanup, decision cycle, ...): a schedule
    invokes its function asynchronously, so a job raising on every run would otherwise fail unseen. The API
    handler's errors are the API's 5xx (Api5xx)."""
    alarms = _alarms(resources)
    deployed = {deployed_function_name(function, STAGE) for function in FUNCTIONS}
    assert _watched_functions(alarms, "Throttles") == deployed
    assert _watched_functions(alarms, "Errors") == deployed - {deployed_function_name(API_HANDLER, STAGE)}
    assert all(len(_metrics(alarm)) <= 10 for alarm in alarms.values())  # CloudWatch's limit for metric math


def test_api_5xx_and_stuck_interruptions(resources):
    alarms = _alarms(resources)
    (api,) = _metrics(alarms[alarm_name(STAGE, "Api5xx")])
    assert (api["Namespace"], api["MetricName"]) == ("AWS/ApiGateway", "5XXError")
    assert {"Name": "ApiName", "Value": "spot-optimizer"} in api["Dimensions"]
    (stuck,) = _metrics(alarms[alarm_name(STAGE, "StuckInterruptions")])
    assert (stuck["Namespace"], stuck["MetricName"]) == (METRICS_NAMESPACE, STUCK_INTERRUPTIONS_METRIC)
    assert {"Name": STAGE_DIMENSION, "Value": STAGE} in stuck["Dimensions"]


@pytest.mark.parametrize("job, alarm", [("risk_scorer", "RiskPoolCap"), ("pricing_aggregator", "PriceRollupPoolCap")])
def test_a_pool_cap_has_an_alarm_on_the_metric_its_job_publishes(resources, job, alarm):
    import importlib

    metric = importlib.import_module(f"chalicelib.jobs.{job}").POOL_CAP_METRIC
    (capped,) = _metrics(_alarms(resources)[alarm_name(STAGE, alarm)])
    assert (capped["Namespace"], capped["MetricName"]) == (METRICS_NAMESPACE, metric)
    assert {"Name": STAGE_DIMENSION, "Value": STAGE} in capped["Dimensions"]


def test_the_api_5xx_alarm_sees_only_this_stages_api_gateway_stage(resources):
    """Chalice names every stage's REST API after the app and REST metrics have no API id: without the Stage
    dimension (or with one API Gateway stage name for two stages), dev's 5xx would raise prod's alarm."""
    from infra.policies import STAGES
    from infra.chalice_deployment import api_gateway_stage

    (api,) = _metrics(_alarms(resources)[alarm_name(STAGE, "Api5xx")])
    assert sorted(api["Dimensions"], key=lambda d: d["Name"]) == [
        {"Name": "ApiName", "Value": "spot-optimizer"}, {"Name": "Stage", "Value": api_gateway_stage(STAGE)}]
    # ... the stage Chalice deploys this stage's API to (.chalice/config.json), no other deployed stage's
    assert len({api_gateway_stage(stage) for stage in STAGES}) == len(STAGES)


def test_dashboard_and_email_subscription(resources):
    (dashboard,) = _of_type(resources, "AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == {"Fn::Join": ["", [f"spot-optimizer-{STAGE}-",
                                                                          {"Ref": "AWS::Region"}]]}
    (subscription,) = _of_type(resources, "AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == EMAIL
    assert subscription["Properties"]["TopicArn"] == {"Ref": _topic_id(resources)}


def test_a_bad_alarm_email_is_refused():
    import aws_cdk as cdk

    from infra.stack import SpotOptimizerStack

    with pytest.raises(ValueError, match="e-mail"):
        SpotOptimizerStack(cdk.App(), "x", stage=STAGE, skip_layer=True, alarm_email="not-an-address")


# --- cdk-nag ------------------------------------------------------------------------------------------------

def test_cdk_nag_finds_nothing_unsuppressed(synth):
    from aws_cdk.cx_api import SynthesisMessageLevel

    findings = [f"{m.id}: {m.entry.data}" for m in synth[2]
                if m.level in (SynthesisMessageLevel.ERROR, SynthesisMessageLevel.WARNING)
                and "AwsSolutions-" in str(m.entry.data)]
    assert findings == []


def test_every_suppression_is_justified_and_used(resources):
    """Every suppression in the template is one of NAG_SUPPRESSIONS (with its reason), and each of those is used."""
    in_template = {(entry["id"], entry["reason"]) for r in resources.values()
                   for entry in r.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])}
    listed = {(rule, reason) for _path, rule, reason, _applies_to in NAG_SUPPRESSIONS}
    assert in_template == listed
    for _path, rule, reason, _applies_to in NAG_SUPPRESSIONS:
        assert rule.startswith("AwsSolutions-") and len(reason) >= 80, rule


@pytest.fixture(scope="module")
def forwarder(tmp_path_factory):
    """A forwarder stack (another region) synthesised with cdk-nag applied: (template, messages)."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.main import add_event_forwarders
    from infra.stack import apply_nag

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    (stack,) = add_event_forwarders(app, STAGE, "eu-west-1", "us-east-1", alarm_email=EMAIL)
    apply_nag(app)
    assembly = app.synth()
    return Template.from_stack(stack).to_json(), assembly.get_stack_by_name(stack.stack_name).messages


def test_cdk_nag_finds_nothing_unsuppressed_in_a_forwarder_and_every_suppression_is_justified(forwarder):
    from aws_cdk.cx_api import SynthesisMessageLevel

    from infra.event_intake import FORWARDER_NAG_SUPPRESSIONS

    template, messages = forwarder
    findings = [f"{m.id}: {m.entry.data}" for m in messages
                if m.level in (SynthesisMessageLevel.ERROR, SynthesisMessageLevel.WARNING)
                and "AwsSolutions-" in str(m.entry.data)]
    assert findings == []
    in_template = {(entry["id"], entry["reason"]) for r in template["Resources"].values()
                   for entry in r.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])}
    assert in_template == {(rule, reason) for _path, rule, reason, _applies_to in FORWARDER_NAG_SUPPRESSIONS}
    for _path, rule, reason, _applies_to in FORWARDER_NAG_SUPPRESSIONS:
        assert rule.startswith("AwsSolutions-") and len(reason) >= 80, rule
    assert audit_template(template, STAGE) == []


def test_cdk_nag_does_flag_an_unsuppressed_finding(tmp_path):
    """The check can fail: a bucket without the stack's suppression is reported (AwsSolutions-S1)."""
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    from infra.stack import apply_nag

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "probe")
    s3.Bucket(stack, "Plain", enforce_ssl=True)
    apply_nag(app)
    messages = app.synth().get_stack_by_name("probe").messages
    from aws_cdk.cx_api import SynthesisMessageLevel

    assert any("AwsSolutions-S1" in str(m.entry.data) and m.level == SynthesisMessageLevel.ERROR for m in messages)


def test_the_synth_of_make_infra_fails_on_an_unsuppressed_finding(tmp_path, monkeypatch, capsys):
    """infra/main.py (make infra, cdk deploy) exits 1 and names the rule when a suppression goes missing."""
    from infra import main, stack

    monkeypatch.setenv("CDK_OUTDIR", str(tmp_path))
    monkeypatch.setattr(stack, "NAG_SUPPRESSIONS", tuple(s for s in NAG_SUPPRESSIONS if s[1] != "AwsSolutions-S1"))
    assert main.main(["-c", f"stage={STAGE}", "-c", "skip_layer=true"]) == 1
    assert "AwsSolutions-S1" in capsys.readouterr().err
