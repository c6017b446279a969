"""`make deploy` / `make destroy` guards: region agreement, prod destroy confirmation, Chalice's deployed state
shared through the stage's bucket without lost updates (moto S3)."""

from __future__ import annotations

import json

import boto3
import pytest

from infra import deploy_state, wire_outputs
from infra.deploy_state import DeployStateError
from infra.naming import deployed_state_key, stack_name

BUCKET = "spot-optimizer-dev-models-111122223333-us-east-1"


@pytest.fixture
def s3():
    client = boto3.client("s3", region_name="us-east-1")
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET, Prefix="chalice/").get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])


def _project(tmp_path, name: str, state: dict | None = None):
    project = tmp_path / name
    (project / ".chalice" / "deployed").mkdir(parents=True)
    if state is not None:
        (project / ".chalice" / "deployed" / "dev.json").write_text(json.dumps(state))
    return project


def _shared(s3) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=deployed_state_key("dev"))["Body"].read())


def test_a_second_clone_deploys_over_the_first_ones_state(s3, tmp_path):
    """GIVEN one operator's deploy pushed its state WHEN another clone (no local state) pulls
    THEN it gets the same resources (chalice updates that API instead of creating a second one)."""
    first = _project(tmp_path, "first")
    assert "first deploy" in deploy_state.pull(s3, BUCKET, "dev", first)
    (first / ".chalice" / "deployed" / "dev.json").write_text(json.dumps({"resources": [{"rest_api_id": "abc"}]}))
    deploy_state.push(s3, BUCKET, "dev", first)
    second = _project(tmp_path, "second")
    deploy_state.pull(s3, BUCKET, "dev", second)
    assert json.loads((second / ".chalice" / "deployed" / "dev.json").read_text()) == {
        "resources": [{"rest_api_id": "abc"}]}


def test_an_existing_local_state_is_pushed_when_the_bucket_has_none(s3, tmp_path):
    project = _project(tmp_path, "p", {"resources": [{"rest_api_id": "old"}]})
    assert "will be pushed" in deploy_state.pull(s3, BUCKET, "dev", project)
    deploy_state.push(s3, BUCKET, "dev", project)
    assert _shared(s3) == {"resources": [{"rest_api_id": "old"}]}


def test_a_concurrent_deploy_cannot_overwrite_the_other_ones_state(s3, tmp_path):
    """GIVEN two operators pulled the same version WHEN both push THEN the second push fails and the first
    one's record stays; after pulling again it goes through."""
    base = _project(tmp_path, "base", {"resources": []})
    deploy_state.pull(s3, BUCKET, "dev", base)
    deploy_state.push(s3, BUCKET, "dev", base)
    alice, bob = _project(tmp_path, "alice"), _project(tmp_path, "bob")
    deploy_state.pull(s3, BUCKET, "dev", alice)
    deploy_state.pull(s3, BUCKET, "dev", bob)
    (alice / ".chalice" / "deployed" / "dev.json").write_text(json.dumps({"resources": ["alice"]}))
    (bob / ".chalice" / "deployed" / "dev.json").write_text(json.dumps({"resources": ["bob"]}))
    deploy_state.push(s3, BUCKET, "dev", alice)
    with pytest.raises(DeployStateError, match="someone else deployed"):
        deploy_state.push(s3, BUCKET, "dev", bob)
    assert _shared(s3) == {"resources": ["alice"]}
    deploy_state.pull(s3, BUCKET, "dev", bob)
    assert (bob / ".chalice" / "deployed" / "dev.json.local-backup").exists()  # bob's differing copy is kept
    deploy_state.push(s3, BUCKET, "dev", bob)  # pushes what it pulled: alice's record


def test_two_first_deploys_at_once_cannot_both_create_the_shared_state(s3, tmp_path):
    alice, bob = _project(tmp_path, "alice"), _project(tmp_path, "bob")
    deploy_state.pull(s3, BUCKET, "dev", alice)
    deploy_state.pull(s3, BUCKET, "dev", bob)
    for who in (alice, bob):
        (who / ".chalice" / "deployed" / "dev.json").write_text(json.dumps({"resources": [who.name]}))
    deploy_state.push(s3, BUCKET, "dev", alice)
    with pytest.raises(DeployStateError):
        deploy_state.push(s3, BUCKET, "dev", bob)
    assert _shared(s3) == {"resources": ["alice"]}


def test_push_without_pull_is_refused(s3, tmp_path):
    with pytest.raises(DeployStateError, match="without a pull"):
        deploy_state.push(s3, BUCKET, "dev", _project(tmp_path, "p", {"resources": []}))


def test_the_bucket_comes_from_the_outputs_file_or_the_stack(tmp_path):
    outputs = tmp_path / "out.json"
    outputs.write_text(json.dumps({stack_name("dev"): {"ModelBucket": BUCKET}}))
    assert deploy_state.bucket_for("dev", outputs) == BUCKET

    class Cfn:
        def describe_stacks(self, StackName):
            assert StackName == stack_name("dev")
            return {"Stacks": [{"Outputs": [{"OutputKey": "ModelBucket", "OutputValue": "from-stack"}]}]}

    assert deploy_state.bucket_for("dev", None, Cfn()) == "from-stack"


def test_the_api_handlers_real_log_group_gets_the_stage_retention():
    logs = boto3.client("logs", region_name="us-east-1")
    for stage, days in (("dev", 30), ("prod", 90)):
        assert "kept" in deploy_state.api_log_retention(logs, stage)
        deploy_state.api_log_retention(logs, stage)  # again: the group exists, still fine
        name = f"/aws/lambda/spot-optimizer-{stage}"
        (group,) = [g for g in logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
                    if g["logGroupName"] == name]
        assert group["retentionInDays"] == days


# --- region and destroy guards ---------------------------------------------------------------------------

def test_cdk_and_chalice_in_different_regions_is_refused(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(DeployStateError, match="eu-west-1.*us-east-1"):
        deploy_state.preflight("dev")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert deploy_state.preflight("dev") == "us-east-1"


def test_destroying_prod_needs_confirm_yes(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(DeployStateError, match="CONFIRM=yes"):
        deploy_state.preflight("prod", destroy=True, confirm=None)
    assert deploy_state.preflight("prod", destroy=True, confirm="yes") == "us-east-1"
    assert deploy_state.preflight("dev", destroy=True, confirm=None) == "us-east-1"


def test_wiring_refuses_a_stack_in_another_region_than_chalices():
    with pytest.raises(wire_outputs.WiringError, match="eu-west-1"):
        wire_outputs.check_region({"Region": "eu-west-1"}, "us-east-1")
    wire_outputs.check_region({"Region": "us-east-1"}, "us-east-1")


def test_the_make_targets_run_the_guards_in_order():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    deploy = makefile[makefile.index("\ndeploy:"):makefile.index("\ndestroy:")]
    destroy = makefile[makefile.index("\ndestroy:"):]
    steps = ["deploy_state.py preflight", "$(CDK) deploy", "--require-approval never", "wire_outputs.py --stage",
             "--region", "deploy_state.py pull", "event_source adopt", "bytecode.py  #", "bytecode.py --chalice-deploy $(STAGE)",
             "chalice deploy --stage", "deploy_state.py push",
             "deploy_state.py api-log-retention", "throttling.py", "gateway_responses.py"]
    positions = [deploy.index(step) for step in steps]
    assert positions == sorted(positions)
    steps = ["preflight --stage $(STAGE) --destroy", "deploy_state.py pull", "chalice delete", "deploy_state.py push",
             "destroy $(APP_NAME)"]
    positions = [destroy.index(step) for step in steps]
    assert positions == sorted(positions)


@pytest.fixture
def stage_in_eu_west_1():
    """The dev stage's infra stack deployed in eu-west-1 of the (embedded) account."""
    cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
    cloudformation.create_stack(StackName=stack_name("dev"), TemplateBody=json.dumps(
        {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}))
    yield
    cloudformation.delete_stack(StackName=stack_name("dev"))


def test_a_stage_deployed_in_another_region_of_the_account_is_refused(monkeypatch, stage_in_eu_west_1, capsys):
    """Chalice's function roles (spot-optimizer-<stage>-<function>) are account-global: a second region would
    silently adopt them, and destroying either region would delete the roles the other's functions run with."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("CONFIRM", raising=False)
    assert deploy_state.regions_with_stage("dev", "us-east-1") == ["eu-west-1"]
    assert deploy_state.regions_with_stage("prod", "us-east-1") == []
    assert deploy_state.regions_with_stage("dev", "eu-west-1") == []  # its own region is no other
    assert deploy_state.main(["preflight", "--stage", "dev"]) == 1
    assert "also deployed in eu-west-1" in capsys.readouterr().err
    assert deploy_state.main(["preflight", "--stage", "prod"]) == 0
    assert deploy_state.main(["preflight", "--stage", "dev", "--destroy"]) == 1
    monkeypatch.setenv("CONFIRM", "yes")
    assert deploy_state.main(["preflight", "--stage", "dev", "--destroy"]) == 0
    assert deploy_state.main(["preflight", "--stage", "dev"]) == 1  # CONFIRM never lets a deploy through
