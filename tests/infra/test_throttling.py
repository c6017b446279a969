"""Deploy-level throttling: API Gateway stage limits (applied after chalice deploy) and reserved concurrency."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest
from chalice.config import Config
from moto import mock_aws

from infra import throttling
from infra.policies import FUNCTIONS, STAGES

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("apigateway", region_name=REGION)


def _deployed_api(client, stage_name: str = "api") -> str:
    api = client.create_rest_api(name="spot-optimizer")["id"]
    root = client.get_resources(restApiId=api)["items"][0]["id"]
    client.put_method(restApiId=api, resourceId=root, httpMethod="GET", authorizationType="NONE")
    client.put_integration(restApiId=api, resourceId=root, httpMethod="GET", type="MOCK")
    client.create_deployment(restApiId=api, stageName=stage_name)
    return api


def _project(tmp_path: Path, api_id: str | None, stage: str = "dev") -> Path:
    (tmp_path / ".chalice" / "deployed").mkdir(parents=True)
    shutil.copy(ROOT / ".chalice" / "config.json", tmp_path / ".chalice" / "config.json")
    if api_id:
        (tmp_path / ".chalice" / "deployed" / f"{stage}.json").write_text(json.dumps({"schema_version": "2.0", "resources": [
            {"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": "arn:aws:lambda:x"},
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api_id,
             "rest_api_url": f"https://{api_id}.execute-api.{REGION}.amazonaws.com/{stage}/"}]}))
    return tmp_path


@pytest.mark.parametrize("stage", STAGES)
def test_the_script_sets_the_stage_default_throttling(aws, tmp_path, stage, capsys):
    api_stage = throttling.api_gateway_stage(stage)  # the stage Chalice deploys to (.chalice/config.json)
    api = _deployed_api(aws, api_stage)
    assert throttling.main(["--stage", stage, "--region", REGION,
                            "--project", str(_project(tmp_path, api, stage))]) == 0
    settings = aws.get_stage(restApiId=api, stageName=api_stage)["methodSettings"]["*/*"]
    limits = throttling.API_STAGE_LIMITS[stage]
    assert settings["throttlingRateLimit"] == limits.rate_limit
    assert settings["throttlingBurstLimit"] == limits.burst_limit
    assert f"API {api} stage {api_stage!r}" in capsys.readouterr().out


def test_applying_twice_keeps_the_limits(aws):
    api = _deployed_api(aws)
    limits = throttling.API_STAGE_LIMITS["prod"]
    throttling.apply(aws, api, "api", limits)
    assert throttling.apply(aws, api, "api", limits)["throttlingBurstLimit"] == limits.burst_limit


def test_without_a_chalice_deployment_it_refuses_and_changes_nothing(aws, tmp_path, capsys):
    api = _deployed_api(aws)
    assert throttling.main(["--stage", "dev", "--region", REGION, "--project", str(_project(tmp_path, None))]) == 1
    assert "chalice deploy --stage dev" in capsys.readouterr().err
    assert "*/*" not in aws.get_stage(restApiId=api, stageName="api").get("methodSettings", {})


def test_an_unknown_stage_is_refused(aws, tmp_path, capsys):
    assert throttling.main(["--stage", "local", "--project", str(_project(tmp_path, "abc", "local"))]) == 1
    assert "no API limits" in capsys.readouterr().err


def test_every_deployed_stage_has_api_limits():
    assert set(throttling.API_STAGE_LIMITS) == set(STAGES)
    assert all(0 < limits.rate_limit <= limits.burst_limit for limits in throttling.API_STAGE_LIMITS.values())


@pytest.mark.parametrize("stage", STAGES)
def test_reserved_concurrency_reaches_chalice_for_the_queue_consumers_and_failover_only(stage):
    config_from_disk = json.loads((ROOT / ".chalice" / "config.json").read_text())
    reserved = {function: Config(chalice_stage=stage, function_name=function,
                                 config_from_disk=config_from_disk).reserved_concurrency for function in FUNCTIONS}
    expected = {f: n for f, n in throttling.RESERVED_CONCURRENCY.items()}
    assert {f: n for f, n in reserved.items() if n is not None} == expected
    assert set(expected) == {f for f in FUNCTIONS if f in ("sentinel", "decision-worker", "savings-worker")
                             or f.startswith("failover-")}


@pytest.mark.parametrize("function", ["sentinel", "decision-worker", "savings-worker"])
def test_a_queue_poller_never_exceeds_the_reserved_concurrency(chalice_app, function):
    """Lambda's SQS poller at most as concurrent as the function may be: a throttled receive would count
    towards maxReceiveCount and could dead-letter a warning (or a fleet's decisions)."""
    (source,) = [s for s in chalice_app.event_sources if s.name == function]
    assert source.maximum_concurrency == throttling.RESERVED_CONCURRENCY[function]


def test_the_documented_account_concurrency_is_what_the_reservations_need():
    """Lambda refuses a reservation that leaves fewer than 100 unreserved executions: the operator asks for the
    account limit the README states before the first deploy, so it must be the real sum (dev and prod in one
    account and region reserve twice)."""
    total = sum(throttling.RESERVED_CONCURRENCY.values())
    readme = " ".join((ROOT / "infra" / "README.md").read_text().split())
    assert f"{total} in all" in readme
    assert f"must be at least {throttling.UNRESERVED_MINIMUM + total}" in readme
    assert f"{throttling.UNRESERVED_MINIMUM + len(STAGES) * total} with both stages" in readme
    rehearsal = " ".join((ROOT / "docs" / "deploy-rehearsal.md").read_text().split())
    assert f"the account needs ≥ {throttling.UNRESERVED_MINIMUM + total}" in rehearsal
