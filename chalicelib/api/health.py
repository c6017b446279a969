"""``/health``: a cheap readiness check for load balancers and operators."""

from __future__ import annotations

import time

from chalice import Response

from chalicelib.api.common import ApiBlueprint
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.tables.clients import ClientTable

bp = ApiBlueprint(__name__)
VERSION = "0.1.0"
# DescribeTable is a DynamoDB control-plane call: AWS throttles those per account and Region (2,500 a second, shared
# with every deployment's CreateTable/UpdateTable) and asks that their answers be cached. /health takes no credential,
# so a container asks at most once every CHECK_SECONDS and answers its last result in between: a flood of anonymous
# health checks never spends the account's control-plane budget.
CHECK_SECONDS = 10
_last_check: tuple[float, str] | None = None  # (time.monotonic() of the call, its result)


def _dynamodb() -> str:
    """The last check's result: ok when DynamoDB answered it (asked again once it is ``CHECK_SECONDS`` old)."""
    global _last_check
    now = time.monotonic()
    if _last_check is not None and now - _last_check[0] < CHECK_SECONDS:
        return _last_check[1]
    try:
        ClientTable.describe_table()
        result = "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        logger.exception("health check failed")
        result = "unavailable"
    _last_check = (now, result)
    return result


@bp.route("/health", methods=["GET"], auth="none", response="HealthReply", responses={503: "HealthReply"})
def health():
    """200 when DynamoDB answers, 503 (with Retry-After) when it does not (checked at most every ``CHECK_SECONDS``)."""
    checks = {"dynamodb": _dynamodb()}
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks,
            "stage": get_settings().stage, "version": VERSION}
    headers = {"Content-Type": "application/json"}
    if not healthy:
        headers["Retry-After"] = "5"
    return Response(body=body, status_code=200 if healthy else 503, headers=headers)
