"""API Gateway's own answers (unknown route, throttled, too large, timeout, its 4xx/5xx) in the product's error
shape with the headers every answer carries: gateway responses put after chalice deploy, then deployed."""

from __future__ import annotations

import json
import re

import pytest

from chalicelib.api.common import RESPONSE_HEADERS
from infra import chalice_deployment, gateway_responses, throttling
from tests.infra.deployed_api import REGION, deployed_api, project
from infra.policies import STAGES

# The status of each response type (None: API Gateway's own status of the cause, kept).
STATUSES = {"MISSING_AUTHENTICATION_TOKEN": "404", "RESOURCE_NOT_FOUND": "404", "THROTTLED": "429",
            "REQUEST_TOO_LARGE": "413", "INTEGRATION_TIMEOUT": "504", "DEFAULT_4XX": None, "DEFAULT_5XX": None}
# What a $context variable of a template could become (a template of this module should have none).
CONTEXT = {"requestId": "c0ffee00-0000-4000-8000-000000000001", "error.message": "Authorization=sot_secret",
           "error.messageString": '"Authorization=sot_secret"', "error.responseType": "THROTTLED"}


def _responses(client, api: str) -> dict[str, dict]:
    found = {}
    for response_type in STATUSES:
        response = client.get_gateway_response(restApiId=api, responseType=response_type)
        response.pop("ResponseMetadata")
        found[response_type] = response
    return found


def _render(template: str) -> str:
    """The body API Gateway sends: each $context variable substituted (``$context.x`` or ``${context.x}``)."""
    return re.sub(r"\$\{?context\.([A-Za-z.]+?)\}?(?![A-Za-z.])", lambda m: CONTEXT[m.group(1)], template)


def _headers(response: dict) -> dict[str, str]:
    """The literal headers of a gateway response (``'value'`` → value); anything else fails."""
    headers = {}
    for key, value in response["responseParameters"].items():
        assert key.startswith("gatewayresponse.header."), key
        assert value.startswith("'") and value.endswith("'"), (key, value)  # a literal, never request data
        headers[key.removeprefix("gatewayresponse.header.")] = value[1:-1]
    return headers


@pytest.mark.parametrize("stage", STAGES)
def test_the_script_puts_every_gateway_response_and_deploys_them_to_the_stage(aws, tmp_path, stage, capsys):
    api_stage = chalice_deployment.api_gateway_stage(stage)  # the stage Chalice deploys to (.chalice/config.json)
    api = deployed_api(aws, api_stage)
    chalices = aws.get_stage(restApiId=api, stageName=api_stage)["deploymentId"]
    assert gateway_responses.main(["--stage", stage, "--region", REGION,
                                   "--project", str(project(tmp_path, api, stage))]) == 0
    responses = _responses(aws, api)
    assert {t: r.get("statusCode") for t, r in responses.items()} == STATUSES
    live = aws.get_stage(restApiId=api, stageName=api_stage)["deploymentId"]
    assert live != chalices, "gateway responses take effect only in a new deployment of the stage"
    assert aws.get_deployment(restApiId=api, deploymentId=live)["description"].startswith(
        gateway_responses.DEPLOYMENT_DESCRIPTION)
    out = capsys.readouterr().out
    assert f"API {api} stage {api_stage!r}" in out and f"deployed as {live}" in out


def test_every_gateway_response_carries_the_security_headers(aws):
    api = deployed_api(aws, "dev")
    gateway_responses.apply(aws, api, "dev")
    for response_type, response in _responses(aws, api).items():
        headers = _headers(response)
        assert {name: headers[name] for name in RESPONSE_HEADERS} == RESPONSE_HEADERS, response_type
        assert set(headers) - set(RESPONSE_HEADERS) == ({"Retry-After"} if response_type == "THROTTLED" else set())
    assert _headers(_responses(aws, api)["THROTTLED"])["Retry-After"] == "1"


def test_every_body_is_the_products_error_shape_and_echoes_nothing_of_the_request(aws):
    api = deployed_api(aws, "dev")
    gateway_responses.apply(aws, api, "dev")
    codes = {}
    for response_type, response in _responses(aws, api).items():
        assert set(response["responseTemplates"]) == {"application/json"}, response_type
        template = response["responseTemplates"]["application/json"]
        # API Gateway's own message may quote the Authorization header (hashed) or the request: never used
        assert "$context.error.message" not in template and "${context.error.message" not in template
        assert "$input" not in template and "method.request" not in template, response_type
        body = json.loads(_render(template))
        assert set(body) <= {"error", "message", "field"} and {"error", "message"} <= set(body), body
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", body["error"]) and body["message"], body
        assert "sot_secret" not in json.dumps(body)
        codes[response_type] = body["error"]
    assert codes == {"MISSING_AUTHENTICATION_TOKEN": "route_not_found", "RESOURCE_NOT_FOUND": "route_not_found",
                     "THROTTLED": "rate_limited", "REQUEST_TOO_LARGE": "payload_too_large",
                     "INTEGRATION_TIMEOUT": "gateway_timeout", "DEFAULT_4XX": "request_refused",
                     "DEFAULT_5XX": "internal_error"}


def test_an_unknown_route_is_the_apps_404_not_found(aws):
    """Not API Gateway's 403 "Missing Authentication Token": the same answer local mode gives
    (localmode/chalice_local.py) and the same code as any other thing a caller cannot see."""
    from chalicelib.errors import error_body, unknown_route

    api = deployed_api(aws, "dev")
    gateway_responses.apply(aws, api, "dev")
    response = aws.get_gateway_response(restApiId=api, responseType="MISSING_AUTHENTICATION_TOKEN")
    assert response["statusCode"] == "404"
    assert json.loads(response["responseTemplates"]["application/json"]) == error_body(unknown_route())
    assert "$" not in response["responseTemplates"]["application/json"]


def test_a_second_run_changes_nothing(aws, tmp_path):
    api = deployed_api(aws, "dev")
    assert gateway_responses.apply(aws, api, "dev")["deployment"]
    before = (_responses(aws, api), aws.get_stage(restApiId=api, stageName="dev")["deploymentId"],
              len(aws.get_deployments(restApiId=api)["items"]))
    assert gateway_responses.apply(aws, api, "dev") == {"changed": [], "deployment": None}
    assert (_responses(aws, api), aws.get_stage(restApiId=api, stageName="dev")["deploymentId"],
            len(aws.get_deployments(restApiId=api)["items"])) == before


def test_after_a_chalice_deploy_it_puts_what_was_dropped_and_deploys_again(aws):
    """chalice deploy overwrites the API's definition (gateway responses included) and deploys the stage: the
    next run puts them back; and a stage running another deployment than this module's is deployed again even
    when the responses are all there (a run that stopped between its puts and its deployment)."""
    api = deployed_api(aws, "dev")
    gateway_responses.apply(aws, api, "dev")
    aws.delete_gateway_response(restApiId=api, responseType="THROTTLED")  # what put_rest_api(overwrite) does
    aws.create_deployment(restApiId=api, stageName="dev")  # chalice's deployment
    result = gateway_responses.apply(aws, api, "dev")
    assert result["changed"] == ["THROTTLED"] and result["deployment"]
    assert aws.get_stage(restApiId=api, stageName="dev")["deploymentId"] == result["deployment"]

    aws.create_deployment(restApiId=api, stageName="dev")
    result = gateway_responses.apply(aws, api, "dev")
    assert result["changed"] == [] and result["deployment"]
    assert gateway_responses.apply(aws, api, "dev") == {"changed": [], "deployment": None}


def test_a_changed_response_is_put_and_deployed(aws):
    api = deployed_api(aws, "dev")
    gateway_responses.apply(aws, api, "dev")
    aws.put_gateway_response(restApiId=api, responseType="DEFAULT_5XX", statusCode="500",
                             responseTemplates={"application/json": '{"message":$context.error.messageString}'})
    result = gateway_responses.apply(aws, api, "dev")
    assert result["changed"] == ["DEFAULT_5XX"] and result["deployment"]
    assert "statusCode" not in aws.get_gateway_response(restApiId=api, responseType="DEFAULT_5XX")


def test_the_stage_keeps_its_throttling(aws):
    """The deployment is made, then the stage pointed at it: the stage's own settings are left alone."""
    api = deployed_api(aws, "dev")
    limits = throttling.API_STAGE_LIMITS["dev"]
    throttling.apply(aws, api, "dev", limits)
    gateway_responses.apply(aws, api, "dev")
    settings = aws.get_stage(restApiId=api, stageName="dev")["methodSettings"]["*/*"]
    assert (settings["throttlingRateLimit"], settings["throttlingBurstLimit"]) == (limits.rate_limit,
                                                                                   limits.burst_limit)


def test_without_a_chalice_deployment_it_refuses_and_changes_nothing(aws, tmp_path, capsys):
    api = deployed_api(aws, "dev")
    deployment = aws.get_stage(restApiId=api, stageName="dev")["deploymentId"]
    assert gateway_responses.main(["--stage", "dev", "--region", REGION,
                                   "--project", str(project(tmp_path, None, "dev"))]) == 1
    assert "chalice deploy --stage dev" in capsys.readouterr().err
    with pytest.raises(aws.exceptions.NotFoundException):
        aws.get_gateway_response(restApiId=api, responseType="MISSING_AUTHENTICATION_TOKEN")
    assert aws.get_stage(restApiId=api, stageName="dev")["deploymentId"] == deployment
