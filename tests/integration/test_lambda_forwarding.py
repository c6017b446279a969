"""Local mode's embedded AWS hands Lambda invocations to the API process over HTTP: the handler's
error type must survive the trip, because the failover state machine's Retry and Catch match on it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from moto.awslambda_simple.models import LambdaSimpleBackend

from localmode.workflows import forward_lambda_invocations

ARN = "arn:aws:lambda:us-east-1:123456789012:function:spot-optimizer-local-failover-launch"


@pytest.fixture
def api_process(monkeypatch):
    """A stand-in for ``POST /_local/lambda/{name}``: echoes the call, or fails as told."""
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", LambdaSimpleBackend.invoke)  # restored afterwards
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append((self.path, payload))
            failing = payload.get("fail")
            body = ({"errorType": "TransientAwsError", "errorMessage": "throttled"} if failing
                    else {"ok": True, "echo": payload})
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if failing:
                self.send_header("X-Amz-Function-Error", "Unhandled")
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    forward_lambda_invocations(f"http://127.0.0.1:{server.server_port}")
    yield calls
    server.shutdown()


def test_an_invocation_reaches_the_named_handler_with_its_event(api_process):
    headers: dict = {}
    result = json.loads(LambdaSimpleBackend.invoke(None, ARN, None, json.dumps({"a": 1}), {}, headers))
    assert result == {"ok": True, "echo": {"a": 1}} and "x-amz-function-error" not in headers
    assert api_process == [("/_local/lambda/failover-launch", {"a": 1})]


def test_a_handler_error_keeps_its_type_for_the_state_machine(api_process):
    headers: dict = {}
    result = json.loads(LambdaSimpleBackend.invoke(None, ARN, None, json.dumps({"fail": True}), {}, headers))
    assert headers["x-amz-function-error"] == "Unhandled"
    assert result == {"errorType": "TransientAwsError", "errorMessage": "throttled"}
