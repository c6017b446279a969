"""API Gateway's own answers in the product's shape: its gateway responses, set after `chalice deploy`.

    python infra/gateway_responses.py --stage dev [--region us-east-1]    # after `chalice deploy` (make deploy)

Some answers never reach the Lambda: a method or path no route has, a request over the stage's throttling
(infra/throttling.py) or over API Gateway's payload limit, an integration timeout, a Lambda that could not be
invoked. API Gateway makes those itself, as ``{"message": ...}`` without the headers every answer of the API
carries (``chalicelib.api.common.RESPONSE_HEADERS``), and an unknown route is a misleading 403 "Missing
Authentication Token" (with an Authorization header, a message quoting a hash of it). Chalice 1.34 cannot
configure gateway responses, and every ``chalice deploy`` overwrites the API's definition (``put_rest_api``
``mode=overwrite``), which drops them: ``make deploy`` runs this after it. It reads the REST API id from
``.chalice/deployed/<stage>.json`` (like throttling.py), puts each response of ``GATEWAY_RESPONSES`` — its
status, ``RESPONSE_HEADERS`` as literal headers and a fixed ``application/json`` body in the product's error
shape (``chalicelib.errors.error_body``; nothing of the request, no ``$context`` variable) — and deploys the
API to its stage so they take effect. Run twice, the second run changes nothing: a response that already
matches is not put again, and no deployment is made when the stage's current one is this module's for the
same responses (its description carries their digest).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.api.common import RESPONSE_HEADERS  # noqa: E402
from chalicelib.errors import (  # noqa: E402
    ApiError,
    GatewayTimeoutError,
    InternalError,
    PayloadTooLargeError,
    TooManyRequestsError,
    error_body,
    unknown_route,
)
from infra.chalice_deployment import NotDeployed, api_gateway_stage, post_deploy_args, rest_api_id  # noqa: E402

# The response types that keep API Gateway's own status (each covers several causes of that class).
DEFAULT_TYPES = frozenset({"DEFAULT_4XX", "DEFAULT_5XX"})

# What API Gateway answers instead of its own, by response type (status = the error's, except DEFAULT_*).
# No authorizer, API key, request validator, WAF or resource policy is configured: ACCESS_DENIED,
# UNAUTHORIZED, INVALID_API_KEY, BAD_REQUEST_*, WAF_FILTERED ... never happen, and DEFAULT_4XX covers them.
GATEWAY_RESPONSES: dict[str, ApiError] = {
    # An unknown path, or a method the path does not have (API Gateway: 403 "Missing Authentication Token").
    "MISSING_AUTHENTICATION_TOKEN": unknown_route(),
    "RESOURCE_NOT_FOUND": unknown_route(),
    # Over the stage's throttling (infra/throttling.py API_STAGE_LIMITS): a token bucket refilled every second.
    "THROTTLED": TooManyRequestsError("too many requests to this API; retry shortly", retry_after=1),
    "REQUEST_TOO_LARGE": PayloadTooLargeError("the request is larger than API Gateway accepts"),
    "INTEGRATION_TIMEOUT": GatewayTimeoutError("the API did not answer in time; the request may still have "
                                               "taken effect"),
    "DEFAULT_4XX": ApiError("API Gateway refused the request before it reached the API", code="request_refused"),
    "DEFAULT_5XX": InternalError("the API could not answer; retry shortly"),
}

# A deployment this module made carries this, then the digest of the responses it deployed.
DEPLOYMENT_DESCRIPTION = "gateway responses (infra/gateway_responses.py)"


def literal(value: str) -> str:
    """A static header value as API Gateway's response parameters take it: the text within single quotes
    (the CSP's own quotes stay as they are)."""
    return f"'{value}'"


def gateway_response(response_type: str) -> dict:
    """The ``put_gateway_response`` arguments of one response type (without the API id)."""
    error = GATEWAY_RESPONSES[response_type]
    headers = {**RESPONSE_HEADERS, **error.headers}
    response = {"responseType": response_type,
                "responseParameters": {f"gatewayresponse.header.{name}": literal(value)
                                       for name, value in headers.items()},
                "responseTemplates": {"application/json": json.dumps(error_body(error))}}
    if response_type not in DEFAULT_TYPES:
        response["statusCode"] = str(error.status)
    return response


def digest() -> str:
    wanted = [gateway_response(response_type) for response_type in sorted(GATEWAY_RESPONSES)]
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def _current(client, api_id: str, response_type: str) -> dict | None:
    try:
        return client.get_gateway_response(restApiId=api_id, responseType=response_type)
    except client.exceptions.NotFoundException:
        return None


def _matches(current: dict | None, wanted: dict) -> bool:
    """AWS answers every type (an unset one with its default); a field this module sets must be equal, a status
    it leaves to API Gateway must be unset."""
    if current is None:
        return False
    return all(current.get(key) == wanted.get(key) for key in ("statusCode", "responseParameters",
                                                                "responseTemplates"))


def _deployed_by_us(client, api_id: str, api_stage: str) -> bool:
    deployment_id = client.get_stage(restApiId=api_id, stageName=api_stage).get("deploymentId")
    if not deployment_id:
        return False
    description = client.get_deployment(restApiId=api_id, deploymentId=deployment_id).get("description")
    return description == f"{DEPLOYMENT_DESCRIPTION} {digest()}"


def apply(client, api_id: str, api_stage: str) -> dict:
    """Put the gateway responses that differ, then deploy the API to the stage unless the stage already runs
    this module's deployment of them. Returns ``{"changed": [types put], "deployment": id or None}``."""
    changed = []
    for response_type in GATEWAY_RESPONSES:
        wanted = gateway_response(response_type)
        if not _matches(_current(client, api_id, response_type), wanted):
            client.put_gateway_response(restApiId=api_id, **wanted)
            changed.append(response_type)
    deployment = None
    if changed or not _deployed_by_us(client, api_id, api_stage):
        # A deployment snapshots the API as it is now (Chalice's routes and these responses), then the stage
        # is pointed at it: the stage's own settings (throttling, logging, tracing) stay as they are.
        deployment = client.create_deployment(restApiId=api_id,
                                              description=f"{DEPLOYMENT_DESCRIPTION} {digest()}")["id"]
        client.update_stage(restApiId=api_id, stageName=api_stage,
                            patchOperations=[{"op": "replace", "path": "/deploymentId", "value": deployment}])
    return {"changed": changed, "deployment": deployment}


def main(argv: list[str] | None = None) -> int:
    args = post_deploy_args(__doc__.splitlines()[0], argv)
    import boto3

    try:
        api_id, api_stage = rest_api_id(args.stage, args.project), api_gateway_stage(args.stage, args.project)
    except NotDeployed as exc:
        print(f"gateway responses: {exc}", file=sys.stderr)
        return 1
    result = apply(boto3.client("apigateway", region_name=args.region), api_id, api_stage)
    print(f"API {api_id} stage {api_stage!r}: gateway responses "
          f"{', '.join(result['changed']) or 'unchanged'}; "
          f"{'deployed as ' + result['deployment'] if result['deployment'] else 'no deployment needed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
