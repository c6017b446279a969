"""The CDK stack of infra/: tables from the models, the one ASL file, least-privilege role, bucket, outputs.

The stack is synthesised ONCE for this module (dev stage, as tests/conftest.py sets SPOT_STAGE=dev) with
a tiny stand-in layer directory, so the 190 MB layer is neither needed nor copied. Expected values are
read from the pynamodb models (``Model._get_schema()``, what ``create_table`` sends) and from
chalicelib.workflows, not from infra/tables.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pynamodb.attributes import TTLAttribute

from chalicelib import workflows
from chalicelib.settings import get_settings, model_bucket_name
from chalicelib.tables import ALL_TABLES
from tests.infra._support import stand_in_layer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"
REGION, ACCOUNT = "eu-central-1", "111122223333"  # stand-ins for AWS::Region / AWS::AccountId


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """(stack, template dict, Template) of the dev stage, synthesised once."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.stack import SpotOptimizerStack

    layer_dir = stand_in_layer(tmp_path_factory)
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = SpotOptimizerStack(app, "spot-optimizer-dev-infra", stage=STAGE, layer_dir=layer_dir)
    template = Template.from_stack(stack)
    return stack, template.to_json(), template


@pytest.fixture(scope="module")
def resources(synth):
    return synth[1]["Resources"]


def _of_type(resources, cfn_type):
    return {name: r for name, r in resources.items() if r["Type"] == cfn_type}


def _resolve(value):
    """Evaluate the intrinsics CDK emits for env-agnostic names (Ref pseudo parameters, Fn::Join)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(_resolve(part) for part in parts)
    raise AssertionError(f"unexpected intrinsic {value!r}")


def _key_schema(entries):
    return sorted((e["AttributeName"], e["KeyType"]) for e in entries)


def _model_ttl(model):
    names = [attr.attr_name for attr in model.get_attributes().values() if isinstance(attr, TTLAttribute)]
    assert len(names) <= 1, (model.__name__, names)
    return names[0] if names else None


# --- tables ---------------------------------------------------------------------------------------

def test_one_table_per_model_and_nothing_else(synth, resources):
    tables = _of_type(resources, "AWS::DynamoDB::Table")
    synth[2].resource_count_is("AWS::DynamoDB::Table", len(ALL_TABLES))
    assert sorted(t["Properties"]["TableName"] for t in tables.values()) == \
        sorted(model.Meta.table_name for model in ALL_TABLES)
    assert all(model.Meta.table_name.startswith(f"spot-optimizer-{STAGE}-") for model in ALL_TABLES)


@pytest.mark.parametrize("model", ALL_TABLES, ids=lambda m: m.__name__)
def test_table_matches_its_model(resources, model):
    by_name = {t["Properties"]["TableName"]: t for t in _of_type(resources, "AWS::DynamoDB::Table").values()}
    table = by_name[model.Meta.table_name]
    props, schema = table["Properties"], model._get_schema()

    assert _key_schema(props["KeySchema"]) == _key_schema(schema["key_schema"])
    expected_attrs = {(a["AttributeName"], a["AttributeType"]) for a in schema["attribute_definitions"]}
    assert {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]} == expected_attrs
    assert len(props["AttributeDefinitions"]) == len(expected_attrs)

    for kind, cfn_key in (("global_secondary_indexes", "GlobalSecondaryIndexes"),
                          ("local_secondary_indexes", "LocalSecondaryIndexes")):
        expected = {i["index_name"]: i for i in schema.get(kind, [])}
        actual = {i["IndexName"]: i for i in props.get(cfn_key, [])}
        assert sorted(actual) == sorted(expected), (model.__name__, kind)
        for name, index in expected.items():
            assert _key_schema(actual[name]["KeySchema"]) == _key_schema(index["key_schema"]), name
            projection = actual[name]["Projection"]
            assert projection["ProjectionType"] == index["projection"]["ProjectionType"], name
            assert sorted(projection.get("NonKeyAttributes", [])) == \
                sorted(index["projection"].get("NonKeyAttributes", [])), name

    ttl = _model_ttl(model)
    if ttl:
        assert props["TimeToLiveSpecification"] == {"AttributeName": ttl, "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in props
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Delete"  # dev; prod is RETAIN (see test_prod_policies below)


def test_the_models_exercise_ttl_and_every_gsi_projection_we_use():
    """Guards the parametrised test above against passing vacuously."""
    assert any(_model_ttl(m) for m in ALL_TABLES) and any(not _model_ttl(m) for m in ALL_TABLES)
    projections = {i["projection"]["ProjectionType"] for m in ALL_TABLES
                   for i in m._get_schema()["global_secondary_indexes"]}
    assert {"ALL", "KEYS_ONLY"} <= projections


# --- failover state machine -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def state_machine(resources):
    (machine,) = _of_type(resources, "AWS::StepFunctions::StateMachine").values()
    return machine["Properties"]


def test_state_machine_body_is_the_asl_file_verbatim(state_machine):
    assert state_machine["DefinitionString"] == workflows.ASL_PATH.read_text()
    assert state_machine["StateMachineName"] == workflows.state_machine_name(STAGE)


def test_substitutions_cover_every_placeholder_and_render_like_local_mode(state_machine):
    text = state_machine["DefinitionString"]
    placeholders = set(re.findall(r"\$\{([^}]+)\}", text))
    substitutions = {k: _resolve(v) for k, v in state_machine["DefinitionSubstitutions"].items()}
    assert placeholders and placeholders == set(substitutions)
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", value)
    assert json.loads(text) == json.loads(workflows.render(STAGE, REGION, ACCOUNT))


def test_infra_holds_no_second_copy_of_the_asl():
    for path in (ROOT / "infra").glob("*"):  # infra/ is flat; cdk.out/ (a folder) is skipped
        if path.is_file() and path.suffix in (".py", ".json"):
            text = path.read_text()
            assert '"StartAt"' not in text and "FailoverPlan" not in text, path


def test_state_machine_logs_and_traces(state_machine, resources):
    assert state_machine["TracingConfiguration"] == {"Enabled": True}
    logging = state_machine["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    (destination,) = logging["Destinations"]
    group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert resources[group]["Type"] == "AWS::Logs::LogGroup"
    assert resources[group]["Properties"]["LogGroupName"].endswith(workflows.state_machine_name(STAGE))


def test_role_may_invoke_only_the_failover_functions(state_machine, resources):
    role_id = state_machine["RoleArn"]["Fn::GetAtt"][0]
    role = resources[role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"}
    statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for policy in _of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    expected = {workflows.function_arn(name, STAGE, REGION, ACCOUNT) for name in workflows.FAILOVER_TASKS.values()}
    invoked = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), statement
        if any(a.startswith("lambda:") for a in actions):
            assert actions == ["lambda:InvokeFunction"], statement
            resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            invoked |= {_resolve(r) for r in resources_}
        else:  # what Step Functions needs for logging and X-Ray; nothing else
            assert all(a.startswith(("logs:", "xray:")) for a in actions), statement
    assert invoked == expected


# --- bucket, topic, parameter, layer, outputs ----------------------------------------------------

def test_model_bucket_is_private_encrypted_versioned_and_tls_only(synth, resources):
    (bucket_id, bucket), = _of_type(resources, "AWS::S3::Bucket").items()
    props = bucket["Properties"]
    # Global name: the stack's own account and region make it unique; the Lambdas get it as MODEL_BUCKET from
    # the ModelBucket output (infra/wire_outputs.py), the policies grant model_bucket_name(stage, "*", "*").
    assert _resolve(props["BucketName"]) == model_bucket_name(STAGE, ACCOUNT, REGION)
    assert synth[1]["Outputs"]["ModelBucket"]["Value"] == {"Ref": bucket_id}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (policy,) = [p for p in _of_type(resources, "AWS::S3::BucketPolicy").values()
                 if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
    assert any(s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
               for s in policy["Properties"]["PolicyDocument"]["Statement"])


def test_topic_and_admin_key_parameter(resources):
    (topic,) = _of_type(resources, "AWS::SNS::Topic").values()
    assert topic["Properties"]["TopicName"].startswith("spot-optimizer-")  # infra/policies.py notify: sns:Publish
    (parameter,) = _of_type(resources, "AWS::SSM::Parameter").values()
    assert parameter["Properties"]["Name"] == get_settings().admin_key_parameter
    assert not re.fullmatch(r"[0-9a-f]{64}", parameter["Properties"]["Value"])  # a placeholder no key matches


def test_layer_is_python312_only(resources):
    (layer,) = _of_type(resources, "AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]


def test_outputs(synth):
    outputs = synth[1]["Outputs"]
    for key in ("StateMachineArn", "NotificationTopicArn", "ModelBucket", "TablePrefix", "LayerArn",
                "AdminKeyParameter", "Region", "DashboardName"):
        assert key in outputs, key
    assert outputs["TablePrefix"]["Value"] == f"spot-optimizer-{STAGE}-"
    assert outputs["StateMachineArn"]["Value"] == {"Ref": _only_id(synth[1], "AWS::StepFunctions::StateMachine")}
    assert outputs["LayerArn"]["Value"] == {"Ref": _only_id(synth[1], "AWS::Lambda::LayerVersion")}


def _only_id(template, cfn_type):
    (name,) = _of_type(template["Resources"], cfn_type)
    return name


# --- guards (no synth) ------------------------------------------------------------------------------

def test_missing_layer_fails_with_a_hint_unless_skipped(tmp_path, synth):
    import aws_cdk as cdk

    from infra.stack import LayerMissingError, SpotOptimizerStack

    with pytest.raises(LayerMissingError, match="make layer"):
        SpotOptimizerStack(cdk.App(), "no-layer", stage=STAGE, layer_dir=tmp_path / "absent")
    skipped = SpotOptimizerStack(cdk.App(), "skipped", stage=STAGE, layer_dir=tmp_path / "absent", skip_layer=True)
    assert skipped.layer is None and skipped.node.try_find_child("LayerArn") is None


def test_stack_refuses_a_stage_chalicelib_was_not_loaded_for(synth):
    import aws_cdk as cdk

    from infra.stack import SpotOptimizerStack

    with pytest.raises(RuntimeError, match="SPOT_STAGE"):
        SpotOptimizerStack(cdk.App(), "wrong-stage", stage="prod", skip_layer=True)


def test_stack_refuses_a_stage_name_with_a_dash(synth):
    """``spot-optimizer-dev-*`` grants would reach a stage dev-eu's resources (infra/naming.py STAGE_NAME)."""
    import aws_cdk as cdk

    from infra.stack import SpotOptimizerStack

    with pytest.raises(ValueError, match="no '-'"):
        SpotOptimizerStack(cdk.App(), "dash-stage", stage="dev-eu", skip_layer=True)


def test_prod_policies():
    """RETAIN + deletion protection in prod, DESTROY elsewhere (decided before any construct exists)."""
    from aws_cdk import RemovalPolicy

    from infra.stack import PROD_STAGES, removal_policy

    assert PROD_STAGES == {"prod"}
    assert removal_policy("prod") == RemovalPolicy.RETAIN
    assert removal_policy("dev") == RemovalPolicy.DESTROY
