"""Names, tags and IAM patterns of a stage (no synth): global names carry account/region, tags and IAM
patterns carry the stage, the deploy-time Lambda settings are generated for every stage."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from chalicelib.aws.ec2 import TAG_RETIRE, TAG_STAGE
from chalicelib.settings import model_bucket_name
from chalicelib.workflows import FAILOVER_TASKS
from infra import chalice_policies, naming, policies
from infra.policies import FUNCTIONS, STAGES, function_policy
from infra.throttling import RESERVED_CONCURRENCY

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT, REGION = {"Ref": "AWS::AccountId"}, {"Ref": "AWS::Region"}

# A minimal template the way CDK writes it: what the audit must accept.
GOOD = {"Resources": {
    "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {
        "BucketName": {"Fn::Join": ["", ["spot-optimizer-dev-models-", ACCOUNT, "-", REGION]]},
        "Tags": [{"Key": "app", "Value": "spot-optimizer"}, {"Key": "stage", "Value": "dev"}]}},
    "Dashboard": {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
        "DashboardName": {"Fn::Join": ["", ["spot-optimizer-dev-", REGION]]}}},
    "Parameter": {"Type": "AWS::SSM::Parameter", "Properties": {"Tags": {"app": "spot-optimizer", "stage": "dev"}}},
    "Role": {"Type": "AWS::IAM::Role", "Properties": {"Tags": [{"Key": "stage", "Value": "dev"}]}},
}}


def _with(path: list, value):
    template = copy.deepcopy(GOOD)
    node = template["Resources"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return template


def test_a_well_named_template_passes():
    assert naming.audit_template(GOOD, "dev") == []


@pytest.mark.parametrize("path, value, complaint", [
    (["Bucket", "Properties", "BucketName"], "spot-optimizer-dev-models", "lacks ['AWS::AccountId', 'AWS::Region']"),
    (["Bucket", "Properties", "BucketName"], {"Fn::Join": ["", ["spot-optimizer-dev-models-", ACCOUNT]]},
     "lacks ['AWS::Region']"),
    (["Bucket", "Properties", "BucketName"], {"Fn::Join": ["", ["spot-optimizer-models-", ACCOUNT, "-", REGION]]},
     "does not name the stage"),
    (["Dashboard", "Properties", "DashboardName"], "spot-optimizer-dev", "lacks ['AWS::Region']"),
    (["Role", "Properties", "RoleName"], "spot-optimizer-dev-failover", "lacks ['AWS::Region']"),
    (["Bucket", "Properties", "Tags"], [{"Key": "app", "Value": "spot-optimizer"}], "tagged without stage=dev"),
    (["Parameter", "Properties", "Tags"], {"app": "spot-optimizer", "stage": "prod"}, "tagged without stage=dev"),
    (["Role", "Properties", "Tags"], [], "tagged without stage=dev"),
])
def test_a_global_name_without_suffix_or_a_stage_less_tag_fails_the_check(path, value, complaint):
    problems = naming.audit_template(_with(path, value), "dev")
    assert len(problems) == 1 and complaint in problems[0], problems


def test_the_longest_stage_fits_an_s3_name_in_every_region():
    longest = model_bucket_name("s" * naming.MAX_STAGE_LENGTH, "123456789012", "ap-southeast-2")
    assert len(longest) <= 63
    assert len(model_bucket_name("s" * (naming.MAX_STAGE_LENGTH + 1), "123456789012", "ap-southeast-2")) > 63


@pytest.mark.parametrize("stage", ["prod-eu", "dev-", "Prod", "1dev", "s" * (naming.MAX_STAGE_LENGTH + 1)])
def test_a_stage_name_with_a_dash_or_out_of_shape_is_refused(stage):
    with pytest.raises(ValueError, match="stage"):
        naming.check_stage_name(stage)


def _grants(stage: str) -> set[str]:
    """The resources a stage's function policies name with its stage (tag-conditioned ARNs and "*" aside)."""
    return {resource for function in FUNCTIONS for _, resources in _allows(function_policy(stage, function))
            for resource in resources if _names_stage(resource, stage)}


@pytest.mark.parametrize("stage", STAGES)
def test_no_stages_grants_reach_another_stages_resources(stage):
    """Two stages in one account: ``spot-optimizer-<stage>-*`` must not match what another stage may be called.
    With a '-' allowed, prod's grants covered a stage prod-eu's tables (the reason for naming.STAGE_NAME)."""
    from fnmatch import fnmatchcase

    assert any(fnmatchcase(f"arn:aws:dynamodb:*:*:table/spot-optimizer-{stage}-eu-clients", grant)
               for grant in _grants(stage))  # what a stage "<stage>-eu" would have been exposed to
    others = {*STAGES, f"{stage}x", f"{stage}2", f"x{stage}", stage[:-1]} - {stage}
    for other in sorted(others):
        naming.check_stage_name(other)
        reached = {(mine, theirs) for mine in _grants(stage) for theirs in _grants(other) if fnmatchcase(theirs, mine)}
        assert not reached, f"{stage}'s grants reach stage {other}'s resources: {sorted(reached)[:3]}"


def test_names_of_account_global_things_carry_the_region():
    assert naming.dashboard_name("dev", "eu-west-1") == "spot-optimizer-dev-eu-west-1"
    assert model_bucket_name("prod", "111122223333", "eu-west-1") == "spot-optimizer-prod-models-111122223333-eu-west-1"


# --- IAM: every pattern a function holds names the stage, or carries the stage tag condition -----------

# Resources IAM cannot scope by stage (the README's "Residual breadth"): the client's own AMIs, networks,
# addresses and target groups, roles it hands its instances, the spot service-linked role, the client role
# hop is checked separately (its name carries the stage).
UNSCOPABLE = {
    "arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:security-group/*",
    "arn:aws:ec2:*:*:network-interface/*", "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:key-pair/*",
    "arn:aws:ec2:*:*:spot-instances-request/*", "arn:aws:ec2:*:*:elastic-ip/*",
    "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*", f"arn:aws:iam::*:role{policies.PASSABLE_ROLE_PATH}*",
    policies.SPOT_SERVICE_LINKED_ROLE, policies.DEFAULT_EVENT_BUS,
}


def _allows(policy):
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            yield statement, resources


def _names_stage(resource: str, stage: str) -> bool:
    return (f"-{stage}-" in resource or f"/{stage}/" in resource or resource.endswith(f"-{stage}")
            or f":{stage}-" in resource or f"-{stage}:" in resource)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_iam_resource_pattern_includes_the_stage(stage, function):
    policy = function_policy(stage, function)
    # A launch is allowed on any instance ARN, and denied unless the request tags it with this stage.
    launch_denied_unless_staged = any(
        s["Effect"] == "Deny" and "ec2:RunInstances" in s["Action"]
        and s["Condition"] == {"StringNotEquals": {f"aws:RequestTag/{TAG_STAGE}": stage}}
        for s in policy["Statement"])
    for statement, resources in _allows(policy):
        for resource in resources:
            if resource == "*" or resource in UNSCOPABLE:
                continue
            equals = statement.get("Condition", {}).get("StringEquals", {})
            tagged = equals.get(f"ec2:ResourceTag/{TAG_STAGE}") or equals.get(f"ec2:ResourceTag/{TAG_RETIRE}")
            launch_tagging = statement.get("Condition", {}).get("StringEquals", {}).get("ec2:CreateAction")
            launch = statement["Action"] == ["ec2:RunInstances"] and launch_denied_unless_staged
            assert _names_stage(resource, stage) or tagged == stage or launch_tagging or launch, (
                f"{function}/{statement['Sid']}: {resource} is not scoped to stage {stage}")


def test_the_stage_check_catches_an_unscoped_pattern():
    assert not _names_stage("arn:aws:s3:::spot-optimizer-models-*/models/*", "dev")
    assert not _names_stage("arn:aws:dynamodb:*:*:table/spot-optimizer-prod-*", "dev")
    assert _names_stage(f"arn:aws:s3:::{model_bucket_name('dev', '*', '*')}/models/*", "dev")


def test_the_model_bucket_grant_is_this_stages_bucket_in_any_region_of_the_own_account():
    (statement,) = [s for s in function_policy("dev", "risk-scorer")["Statement"] if s["Sid"] == "ModelArtifactsRead"]
    assert statement["Resource"] == ["arn:aws:s3:::spot-optimizer-dev-models-*-*/models/*"]
    assert statement["Condition"] == policies.SAME_ACCOUNT


# --- first run: the spot service-linked role, KMS grants only when a key is configured -------------------

LAUNCHERS = sorted(f for f, capabilities in FUNCTIONS.items() if policies.ec2_launch in capabilities)


def _actions(policy) -> set[str]:
    return {a for s, _ in _allows(policy) for a in s["Action"]}


def test_every_launching_function_may_create_the_spot_service_linked_role_and_nothing_else_may():
    assert {"failover-launch", "failover-next-standby", "replica-coordinator"} <= set(LAUNCHERS)
    for function in FUNCTIONS:
        policy = function_policy("prod", function)
        assert ("iam:CreateServiceLinkedRole" in _actions(policy)) == (function in LAUNCHERS), function
        for statement, resources in _allows(policy):
            if "iam:CreateServiceLinkedRole" in statement["Action"]:
                assert resources == [policies.SPOT_SERVICE_LINKED_ROLE]
                assert statement["Condition"] == {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}


KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def kms_configured(tmp_path, monkeypatch):
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps({"app": "python main.py", "context": {"kms_key_arns": {"prod": [KEY]}}}))
    monkeypatch.setattr(policies, "CDK_JSON", cdk_json)
    return cdk_json


def test_no_kms_permission_without_a_configured_key():
    assert policies.kms_key_arns("dev") == [] and policies.kms_key_arns("prod") == []
    for stage in STAGES:
        for function in FUNCTIONS:
            assert not any(a.startswith("kms:") for a in _actions(function_policy(stage, function)))


def test_a_configured_key_grants_launchers_ec2_only_grants_on_that_key(kms_configured):
    for function in FUNCTIONS:
        kms = {s["Sid"]: s for s, _ in _allows(function_policy("prod", function)) if s["Sid"].startswith("Kms")}
        assert bool(kms) == (function in LAUNCHERS), function
        if kms:
            assert kms["KmsGrantForEc2"]["Action"] == ["kms:CreateGrant"]
            assert kms["KmsGrantForEc2"]["Resource"] == [KEY]
            assert kms["KmsGrantForEc2"]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
            assert kms["KmsUseThroughEc2"]["Resource"] == [KEY]
            assert "kms:Decrypt" in kms["KmsUseThroughEc2"]["Action"]
            assert kms["KmsUseThroughEc2"]["Condition"] == {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}
        # dev configures no key: nothing
        assert not any(a.startswith("kms:") for a in _actions(function_policy("dev", function)))


def test_a_malformed_key_arn_is_refused(kms_configured):
    kms_configured.write_text(json.dumps({"context": {"kms_key_arns": {"prod": ["alias/aws/ebs"]}}}))
    with pytest.raises(ValueError, match="not a KMS key ARN"):
        policies.kms_key_arns("prod")


# --- Lambda settings of every deployed stage (.chalice/config.json, generated) ------------------------

@pytest.mark.parametrize("stage", STAGES)
def test_logs_expire_xray_is_on_and_failover_tasks_have_reserved_concurrency(stage):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config == chalice_policies.chalice_config(config)  # generated (make policies)
    stage_config = config["stages"][stage]
    assert naming.log_retention_days(stage) in (30, 90)
    assert stage_config["xray"] is True
    for task in FAILOVER_TASKS.values():
        assert stage_config["lambda_functions"][task]["reserved_concurrency"] == RESERVED_CONCURRENCY[task] >= 1
    # ... and Chalice resolves them for every function it deploys (what `chalice deploy` uses).
    from chalice.config import Config

    for function in FUNCTIONS:
        resolved = Config(chalice_stage=stage, function_name=function, config_from_disk=config)
        # The API handler's group is set after `chalice deploy` (deploy_state.api_log_retention): Chalice 1.34
        # would give the retention to a group named after a function that does not exist.
        expected = None if function == policies.API_HANDLER else naming.log_retention_days(stage)
        assert resolved.log_retention_in_days == expected, function
        assert resolved.xray_enabled is True, function
        assert resolved.reserved_concurrency == RESERVED_CONCURRENCY.get(function), function


def test_each_deployed_stage_deploys_its_api_to_an_api_gateway_stage_of_its_own():
    """REST API metrics (the Api5xx alarm's) tell two stages of one account apart only by the API Gateway
    stage: Chalice names both stages' APIs after the app. Generated, so a shared `api` cannot come back."""
    from chalice.config import Config

    from infra.chalice_deployment import api_gateway_stage

    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    deployed = {stage: Config(chalice_stage=stage, config_from_disk=config).api_gateway_stage for stage in STAGES}
    assert deployed == {stage: naming.api_gateway_stage_name(stage) for stage in STAGES} == {
        stage: api_gateway_stage(stage) for stage in STAGES}
    assert len(set(deployed.values())) == len(STAGES)
    for stage in STAGES:
        config["stages"][stage]["api_gateway_stage"] = "api"
    regenerated = chalice_policies.chalice_config(config)
    assert {stage: regenerated["stages"][stage]["api_gateway_stage"] for stage in STAGES} == deployed


def test_log_retention_and_xray_are_generated_for_every_stage():
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in STAGES:
        config["stages"][stage]["xray"] = False
        for entry in config["stages"][stage]["lambda_functions"].values():
            entry.pop("log_retention_in_days", None)
    regenerated = chalice_policies.chalice_config(config)
    for stage in STAGES:
        assert regenerated["stages"][stage]["xray"] is True
        functions = regenerated["stages"][stage]["lambda_functions"]
        assert all(functions[f]["log_retention_in_days"] == naming.log_retention_days(stage)
                   for f in FUNCTIONS if f != policies.API_HANDLER)
