"""``GET /api/openapi.json``: the OpenAPI 3.1 document of this app (chalicelib/openapi.py), no auth."""

from __future__ import annotations

from chalicelib.api.common import ApiBlueprint, ok

bp = ApiBlueprint(__name__)


@bp.route("/api/openapi.json", methods=["GET"], auth="none", tags=["meta"], response="OpenApiDocument")
def openapi_document():
    """The OpenAPI document, generated from the route table once per cold start."""
    from chalicelib import openapi

    return ok(openapi.document(bp.current_app))
