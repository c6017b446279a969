"""Errors Chalice answers itself, before any view runs (a body type a route does not take, a method it does
not have), are in the product's JSON error shape too, and say nothing of the caller's
credentials: they come before authentication."""

from __future__ import annotations

import json

import pytest

from app import app
from tests.api._support import assert_error

ROUTES = sorted((path, method) for path, methods in app.routes.items() for method in methods)


def _url(template: str) -> str:
    return "/".join("x-1" if part.startswith("{") else part for part in template.split("/"))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sot_not-a-real-token"}],
                         ids=["anonymous", "bad-token"])
def test_a_body_type_no_route_takes_is_415_in_the_error_shape(api, headers):
    """GIVEN a text/plain body WHEN any POST/PUT route is called THEN 415 ``unsupported_media_type``, JSON."""
    for path, method in ROUTES:
        if method not in ("POST", "PUT"):
            continue
        response = api.http.request(method, _url(path), headers={"Content-Type": "text/plain", **headers},
                                    body=b"{}")
        assert_error(response.status_code, json.loads(response.body), 415, code="unsupported_media_type")
        assert response.headers["Content-Type"] == "application/json", (method, path)


def test_a_method_a_route_does_not_have_is_405_in_the_error_shape(api):
    """GIVEN a method the route does not serve WHEN it is called THEN 405 ``method_not_allowed`` with Allow."""
    for path, methods in sorted(app.routes.items()):
        response = api.http.request("PATCH", _url(path), headers={}, body=b"")
        assert_error(response.status_code, json.loads(response.body), 405, code="method_not_allowed")
        assert set(response.headers["Allow"].split(", ")) == set(methods), path
