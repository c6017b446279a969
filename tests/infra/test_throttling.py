"""Deploy-level throttling: API Gateway stage limits (applied after chalice deploy) and reserved concurrency."""

from __future__ import annotations

import json

import pytest
from chalice.config import Config

from infra import chalice_deployment, throttling
from tests.infra.deployed_api import REGION, ROOT, deployed_api, project
from infra.policies import FUNCTIONS, STAGES



@pytest.mark.parametrize("stage", STAGES)
def test_the_script_sets_the_stage_default_throttling(aws, tmp_path, stage, capsys):
    api_stage = chalice_deployment.api_gateway_stage(stage)  # the stage Chalice deploys to (.chalice/config.json)
    api = deployed_api(aws, api_stage)
    assert throttling.main(["--stage", stage, "--region", REGION,
                            "--project", str(project(tmp_path, api, stage))]) == 0
    settings = aws.get_stage(restApiId=api, stageName=api_stage)["methodSettings"]["*/*"]
    limits = throttling.API_STAGE_LIMITS[stage]
    assert settings["throttlingRateLimit"] == limits.rate_limit
    assert settings["throttlingBurstLimit"] == limits.burst_limit
    assert f"API {api} stage {api_stage!r}" in capsys.readouterr().out


def test_applying_twice_keeps_the_limits(aws):
    api = deployed_api(aws)
    limits = throttling.API_STAGE_LIMITS["prod"]
    throttling.apply(aws, api, "api", limits)
    assert throttling.apply(aws, api, "api", limits)["throttlingBurstLimit"] == limits.burst_limit


def test_without_a_chalice_deployment_it_refuses_and_changes_nothing(aws, tmp_path, capsys):
    api = deployed_api(aws)
    assert throttling.main(["--stage", "dev", "--region", REGION, "--project", str(project(tmp_path, None))]) == 1
    assert "chalice deploy --stage dev" in capsys.readouterr().err
    assert "*/*" not in aws.get_stage(restApiId=api, stageName="api").get("methodSettings", {})


def test_an_unknown_stage_is_refused(aws, tmp_path, capsys):
    assert throttling.main(["--stage", "local", "--project", str(project(tmp_path, "abc", "local"))]) == 1
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
