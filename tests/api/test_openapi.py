"""GET /api/openapi.json: the OpenAPI 3.1 document is generated from the route table, so it lists every
route (and only routes), validates as OpenAPI 3.1, and names each route's auth, request and response."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from chalicelib import openapi
from chalicelib.api.common import ApiBlueprint, ok

# Routes whose success body has no declared response model yet (a generic object in the document).
# Declare one (``response="Name"`` on the route, the model in chalicelib/schemas/responses.py) and
# remove the route from here; a new undeclared route fails test_undeclared_responses_are_listed.
UNDECLARED_RESPONSES: set[tuple[str, str]] = set()


def _routes(app) -> set[tuple[str, str]]:
    return {(method, path) for path, methods in app.routes.items() for method in methods}


def _documented(doc) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


@pytest.fixture(scope="module")
def served(chalice_app):
    from chalice.test import Client

    with Client(chalice_app, stage_name="dev") as client:
        response = client.http.get("/api/openapi.json")
    return response


def test_served_without_auth_as_json(served):
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "application/json"
    assert json.loads(served.body)["openapi"] == "3.1.0"


def test_every_route_is_documented_and_nothing_else(chalice_app, served):
    # GIVEN the app's route table and the document it serves
    doc = json.loads(served.body)
    # THEN each (method, path) is an operation, and each operation is a route
    assert _routes(chalice_app) - _documented(doc) == set(), "routes missing from /api/openapi.json"
    assert _documented(doc) - _routes(chalice_app) == set(), "operations that are not routes"


def test_document_validates_as_openapi_3_1(served):
    validate(json.loads(served.body))  # raises on any violation of the OpenAPI 3.1 schema


def test_undeclared_responses_are_listed(chalice_app):
    # A route whose success body is a generic object must be listed above (the gap stays visible),
    # and a listed route that now declares its model must leave the list.
    assert set(openapi.undeclared_responses(chalice_app)) == UNDECLARED_RESPONSES


def test_auth_request_and_response_per_route(served):
    doc = json.loads(served.body)
    paths = doc["paths"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["adminKey"] == {"type": "apiKey", "in": "header", "name": "X-Admin-Key"}
    assert schemes["clientToken"]["scheme"] == schemes["agentCredential"]["scheme"] == "bearer"
    # auth kinds, inferred from the views' request helpers
    assert paths["/api/admin/clients"]["get"]["security"] == [{"adminKey": []}]
    assert paths["/api/client/validate"]["get"]["security"] == [{"clientToken": []}]
    assert paths["/api/agents/{agent_id}/heartbeat"]["post"]["security"] == [{"agentCredential": []},
                                                                           {"clientToken": []}]
    assert paths["/health"]["get"]["security"] == paths["/api/openapi.json"]["get"]["security"] == []
    # request model inferred from agent_request(..., HeartbeatRequest); response declared
    beat = paths["/api/agents/{agent_id}/heartbeat"]["post"]
    assert beat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HeartbeatRequest"}
    assert beat["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HeartbeatReply"}
    assert {"name": "agent_id", "in": "path"}.items() <= beat["parameters"][0].items()
    # success status inferred from ok(..., status=201); errors share the Error schema
    create = paths["/api/admin/clients/create"]["post"]
    assert "201" in create["responses"] and "200" not in create["responses"]
    for code in ("400", "401", "403", "404", "409", "413", "503"):
        assert create["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "message"]
    # pagination inferred from page_params
    listed = {p["name"]: p for p in paths["/api/admin/clients"]["get"]["parameters"]}
    assert listed["limit"]["schema"]["type"] == "integer" and "next_token" in listed


def test_an_undeclared_route_appears_with_inferred_params_and_auth():
    # GIVEN a blueprint route nobody declared anything for (as other branches add them)
    from chalice import Chalice

    from chalicelib.api.common import admin_request, page_params
    from chalicelib.api.inputs import int_param

    bp = ApiBlueprint(__name__)

    @bp.route("/api/admin/things/{thing_id}/parts", methods=["GET"])
    def parts(thing_id):
        """List a thing's parts."""
        request = bp.current_request
        admin_request(request)
        page_params(request)
        int_param(request.query_params or {}, "days", default=7, low=1, high=90)
        return ok({"parts": []})

    app = Chalice("openapi-probe")
    app.register_blueprint(bp)
    # WHEN the document is built
    doc = openapi.build(app)
    validate(doc)
    operation = doc["paths"]["/api/admin/things/{thing_id}/parts"]["get"]
    # THEN it is there, with its path parameter, query parameters and the admin key
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["thing_id"]["in"] == "path" and params["thing_id"]["required"] is True
    assert params["days"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 90}
    assert {"limit", "next_token"} <= params.keys()
    assert operation["security"] == [{"adminKey": []}]
    assert operation["summary"] == "List a thing's parts."
    assert openapi.undeclared_responses(app) == [("GET", "/api/admin/things/{thing_id}/parts")]


def test_a_declaration_overrides_inference_and_a_bad_auth_kind_is_refused():
    bp = ApiBlueprint(__name__)

    @bp.route("/api/client/things", methods=["GET"], auth="client", tags=["things"], response="ValidateTokenReply",
              query=[openapi.Query("kind", enum=("a", "b"))], csv=True)
    def things():
        return ok({})

    from chalice import Chalice

    app = Chalice("openapi-probe-2")
    app.register_blueprint(bp)
    operation = openapi.build(app)["paths"]["/api/client/things"]["get"]
    assert operation["tags"] == ["things"] and operation["security"] == [{"clientToken": []}]
    assert {p["name"] for p in operation["parameters"]} == {"kind", "format"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    with pytest.raises(ValueError, match="auth must be one of"):
        bp.route("/api/x", methods=["GET"], auth="root")


def test_non_json_and_csv_success_content_is_declared(served):
    # The console answers HTML / JS / CSS (not JSON), its 404 is the JSON Error; the lists with
    # ?format=csv also answer text/csv; new routes' query parameters carry their enums and bounds.
    paths = json.loads(served.body)["paths"]
    assert set(paths["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert "text/javascript" in paths["/console/{name}"]["get"]["responses"]["200"]["content"]
    assert "application/json" not in paths["/console/vendor/{name}"]["get"]["responses"]["200"]["content"]
    assert paths["/console/{name}"]["get"]["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}
    for path in ("/api/client/{client_id}/instances", "/api/client/{client_id}/agents",
                 "/api/client/{client_id}/savings", "/api/client/{client_id}/switch-history"):
        assert set(paths[path]["get"]["responses"]["200"]["content"]) == {"application/json", "text/csv"}, path
    instances = {p["name"]: p["schema"] for p in paths["/api/client/{client_id}/instances"]["get"]["parameters"]}
    assert instances["status"]["enum"] == ["active", "terminated", "all"]
    assert instances["format"]["enum"] == ["json", "csv"] and "pattern" in instances["search"]
    savings = {p["name"]: p["schema"] for p in paths["/api/client/{client_id}/savings"]["get"]["parameters"]}
    assert savings["months"] == {"type": "integer", "minimum": 1, "maximum": 36}
    assert savings["period"]["enum"] == ["monthly", "daily"]


def test_built_once_per_process(chalice_app, served):
    # The served document is the cached one: a second request does not rebuild it.
    first = openapi.document(chalice_app)
    assert openapi.document(chalice_app) is first
    assert json.loads(served.body) == json.loads(json.dumps(first))
