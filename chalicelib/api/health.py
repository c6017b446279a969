"""``/health``: a cheap readiness check for load balancers and operators."""

from __future__ import annotations

from chalice import Response

from chalicelib.api.common import ApiBlueprint
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.tables.clients import ClientTable

bp = ApiBlueprint(__name__)
VERSION = "0.1.0"


@bp.route("/health", methods=["GET"], auth="none", response="HealthReply", responses={503: "HealthReply"})
def health():
    """200 when DynamoDB answers, 503 (with Retry-After) when it does not."""
    checks = {}
    try:
        ClientTable.describe_table()
        checks["dynamodb"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        logger.exception("health check failed")
        checks["dynamodb"] = "unavailable"
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks,
            "stage": get_settings().stage, "version": VERSION}
    headers = {"Content-Type": "application/json"}
    if not healthy:
        headers["Retry-After"] = "5"
    return Response(body=body, status_code=200 if healthy else 503, headers=headers)
