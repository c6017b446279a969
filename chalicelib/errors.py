"""HTTP errors and the one table that maps exception *types* to status codes.

Every error leaves the API as ``{"error": CODE, "message": TEXT, "field": PATH?}``. Anything a client
can send ends in a 4xx; only our own faults (or AWS outages) produce a 5xx.
"""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from chalice import Response
from pydantic import ValidationError as PydanticValidationError
from pynamodb.exceptions import PynamoDBException, TransactWriteError

from components.agent_identity import IdentityMismatchError
from components.command_tracker.errors import (
    CommandConflictError,
    CommandNotFoundError,
    IllegalTransitionError,
)
from chalicelib.repositories.dynamo import cancellation_codes
from components.errors import DomainError, ValidationError

THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "Throttling",
     "RequestThrottled"}
)
# Why DynamoDB cancelled a transaction, per item: these pass on their own (a concurrent write to one of its items,
# throttling), so the same transaction may succeed when retried. Any other reason (ConditionalCheckFailed above
# all) is an answer, not a fault.
TRANSIENT_CANCELLATIONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
THROTTLED_CANCELLATIONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})
# An AWS service failing on its side (a 5xx), or not reachable: our trouble, not the client's (503).
UNAVAILABLE_CODES = frozenset({"InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
                               "Unavailable", "RequestTimeout"})
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)


class ApiError(Exception):
    """An error with its HTTP status; raise it anywhere in a handler."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}
        if code:
            self.code = code


class BadRequestError(ApiError):
    status, code = 400, "bad_request"


class InvalidInputError(ApiError):
    status, code = 400, "validation_error"


class UnauthorizedError(ApiError):
    status, code = 401, "unauthorized"


class ForbiddenError(ApiError):
    status, code = 403, "forbidden"


class NotFoundError(ApiError):
    status, code = 404, "not_found"


class ConflictError(ApiError):
    status, code = 409, "conflict"


class GoneError(ApiError):
    status, code = 410, "gone"


class PayloadTooLargeError(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaTypeError(ApiError):
    status, code = 415, "unsupported_media_type"


class TooManyRequestsError(ApiError):
    """The client is over its rate limit (chalicelib.rate_limit); ``Retry-After`` says when to come back."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **kwargs) -> None:
        super().__init__(message, headers={"Retry-After": str(int(retry_after))}, **kwargs)


class InternalError(ApiError):
    """Our own fault: the client learns nothing but that (the details are in the logs)."""

    status, code = 500, "internal_error"

    def __init__(self, message: str = "internal error; it has been logged", **kwargs) -> None:
        super().__init__(message, **kwargs)


class ServiceUnavailableError(ApiError):
    status, code = 503, "service_unavailable"


class GatewayTimeoutError(ApiError):
    """API Gateway's own answer when the API did not answer within its integration timeout
    (infra/gateway_responses.py): the request may still have taken effect."""

    status, code = 504, "gateway_timeout"


class RouteNotFoundError(NotFoundError):
    """A method and path the API has no route for: 404, with its own code so that a caller (the console) can
    tell a route this server lacks from a resource it cannot see."""

    code = "route_not_found"


def unknown_route() -> RouteNotFoundError:
    """The answer to a route the API lacks. API Gateway answers it so (infra/gateway_responses.py: not its 403
    "Missing Authentication Token"), and so does local mode's gateway (localmode/chalice_local.py)."""
    return RouteNotFoundError("this API has no route for this method and path")


_ARN = re.compile(r"arn:aws[a-z-]*:[^\s\"',;()<>]*")
_ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


def redact(text: str, limit: int = 300) -> str:
    """Text fit for a client: its first line, without ARNs or account ids (stack traces, the full
    message and the ids stay in the logs and the admin activity log)."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    first = _ACCOUNT_ID.sub("<account>", _ARN.sub("<arn>", first))
    return first[:limit]


def public_cause(error: dict[str, Any] | None) -> str:
    """A Step Functions error (``{"Error", "Cause"}``; a Lambda's Cause is JSON with its stack trace)
    as a client may read it: the error's name and the first line of its message, redacted."""
    error = error or {}
    name, cause = str(error.get("Error") or "Error"), str(error.get("Cause") or "")
    try:
        parsed = json.loads(cause)
    except ValueError:
        parsed = None
    message = str(parsed.get("errorMessage") or "") if isinstance(parsed, dict) else cause
    if message.lstrip().startswith("Traceback"):
        message = ""
    return redact(f"{name}: {message}" if message else name)


def _pydantic_field(exc: PydanticValidationError) -> tuple[str | None, str]:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    return field, first.get("msg", "invalid value")


def _client_error_code(exc: BaseException) -> str | None:
    cause = exc.cause if isinstance(exc, PynamoDBException) else exc
    if isinstance(cause, ClientError):
        return cause.response.get("Error", {}).get("Code")
    return getattr(exc, "cause_response_code", None)


def cancellation_reasons(exc: BaseException) -> list[str]:
    """The reasons DynamoDB gave for cancelling a transaction, one per item that failed (items that were fine
    are left out); [] for any other error."""
    return [code for code in cancellation_codes(exc) if code]


def transient_cancellation(exc: BaseException) -> bool:
    """A transaction DynamoDB cancelled only for reasons that pass (``TRANSIENT_CANCELLATIONS``): retry it. A
    condition that failed, next to them or alone, is the caller's answer and is never retried blindly."""
    reasons = cancellation_reasons(exc)
    return bool(reasons) and all(reason in TRANSIENT_CANCELLATIONS for reason in reasons)


def _aws_outage(exc: BaseException) -> ApiError | None:
    """An AWS call that did not get an answer we can act on (a 5xx, the network, an answer not read in time, an
    adapter's transient error), whatever wraps it (pynamodb, the exception chain): 503, or 504 when the request
    may have taken effect (read timeout), both with Retry-After. The routes' AWS writes are idempotent or
    conditional, so repeating the request is safe."""
    seen = 0
    while exc is not None and seen < 6:
        seen += 1
        if isinstance(exc, ReadTimeoutError):
            return GatewayTimeoutError("AWS did not answer in time; the request may have taken effect, retry",
                                       code="aws_timeout", headers={"Retry-After": "5"})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0 \
            if isinstance(exc, ClientError) else 0
        if (isinstance(exc, _UNREACHABLE) or getattr(exc, "aws_unavailable", False)
                or (isinstance(exc, ClientError) and (_client_error_code(exc) in UNAVAILABLE_CODES or status >= 500))):
            return ServiceUnavailableError("an AWS service is unavailable, retry shortly", code="aws_unavailable",
                                           headers={"Retry-After": "5"})
        exc = getattr(exc, "cause", None) if isinstance(exc, PynamoDBException) else exc.__cause__
    return None


def translate(exc: BaseException) -> ApiError | None:
    """Map a domain, validation or storage exception to an ApiError (None: a real server fault)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PydanticValidationError):
        field, msg = _pydantic_field(exc)
        return InvalidInputError(msg, field=field)
    if isinstance(exc, CommandNotFoundError):
        return NotFoundError(str(exc) or "command not found", field="command_id")
    if isinstance(exc, (IllegalTransitionError, CommandConflictError)):
        return ConflictError(str(exc) or "illegal state transition", code="illegal_transition")
    if isinstance(exc, IdentityMismatchError):
        return ForbiddenError(exc.message, field=exc.field, code="identity_mismatch")
    if isinstance(exc, ValidationError):
        return InvalidInputError(str(exc), field=getattr(exc, "field", None))
    if isinstance(exc, DomainError):
        return ConflictError(str(exc))
    if getattr(exc, "conflict_code", None):  # ownership refusals of the AWS adapters (chalicelib/aws)
        return ConflictError(str(exc), code=exc.conflict_code)
    code = _client_error_code(exc)
    if code in THROTTLING_CODES:
        return ServiceUnavailableError("the service is busy, retry shortly", code="throttled",
                                       headers={"Retry-After": "1"})
    if isinstance(exc, TransactWriteError) and THROTTLED_CANCELLATIONS & set(cancellation_reasons(exc)):
        return ServiceUnavailableError("the service is busy, retry shortly", code="throttled",
                                       headers={"Retry-After": "1"})
    if isinstance(exc, TransactWriteError) and code == "TransactionCanceledException":
        return ConflictError("the resource changed concurrently, retry", code="conflict")
    return _aws_outage(exc)


def error_body(error: ApiError) -> dict[str, Any]:
    """An ApiError in the product's JSON error shape (also API Gateway's own answers: infra/gateway_responses.py)."""
    body: dict[str, Any] = {"error": error.code, "message": error.message}
    if error.field:
        body["field"] = error.field
    return body


def error_response(error: ApiError) -> Response:
    """Render an ApiError in the product's JSON error shape."""
    headers = {"Content-Type": "application/json", **error.headers}
    return Response(body=json.dumps(error_body(error)), status_code=error.status, headers=headers)
