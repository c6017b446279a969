"""Local mode's API process (``python -m localmode.chalice_local local``) answers a path no route has as the
deployed API Gateway does (infra/gateway_responses.py): 404 ``route_not_found`` in the error shape with the headers
of every answer, not chalice local's 403 "Missing Authentication Token" that quotes the Authorization header."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chalice import local as chalice_local
from chalice.config import Config

from chalicelib.api.common import RESPONSE_HEADERS
from chalicelib.errors import error_body, unknown_route
from localmode import chalice_local as product_local
from tests.api._support import assert_error

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sot_not-a-real-token-but-a-secret"


@pytest.fixture
def local_server(chalice_app, monkeypatch):
    """chalice local's dev server as ``localmode.chalice_local`` sets it up (``install``), on a free port."""
    monkeypatch.setattr(chalice_local, "LocalGateway", chalice_local.LocalGateway)  # restored afterwards
    monkeypatch.setattr(chalice_local.ThreadedHTTPServer, "request_queue_size",
                        chalice_local.ThreadedHTTPServer.request_queue_size)
    product_local.install()
    config = Config(chalice_stage="dev", function_name="api_handler",
                    config_from_disk=json.loads((ROOT / ".chalice" / "config.json").read_text()))
    server = chalice_local.LocalDevServer(chalice_app, config, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server.server_address[1]}"
    server.shutdown()
    server.server.server_close()
    thread.join(5)


def _get(url: str, headers: dict):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {TOKEN}"}], ids=["anonymous", "with-token"])
@pytest.mark.parametrize("path", ["/no/such/route", "/api/client/validate/extra"])
def test_an_unknown_route_is_404_not_found_with_the_headers_and_no_echo(local_server, path, headers):
    status, answer_headers, body = _get(local_server + path, headers)
    assert_error(status, json.loads(body), 404, code="route_not_found")
    assert json.loads(body) == error_body(unknown_route())
    assert TOKEN.encode() not in body
    assert answer_headers["Content-Type"] == "application/json"
    assert {name: answer_headers[name] for name in RESPONSE_HEADERS} == RESPONSE_HEADERS


def test_a_known_route_still_reaches_the_app(local_server):
    status, answer_headers, body = _get(local_server + "/health", {})
    assert status == 200, body
    assert answer_headers["X-Frame-Options"] == "DENY"
    assert product_local.BACKLOG == chalice_local.ThreadedHTTPServer.request_queue_size


def test_the_console_knows_the_unknown_route_answer():
    """The console tells "not available on this server" from a 404 of something the caller cannot see by
    this message (web/js/api.js UNKNOWN_ROUTE)."""
    source = (ROOT / "web" / "js" / "api.js").read_text()
    assert f'export const UNKNOWN_ROUTE = {json.dumps(unknown_route().code)};' in source
