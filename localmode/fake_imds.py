"""A fake EC2 instance metadata service (IMDSv2 only) on a free loopback port.

Used by the agent's tests and importable by the demo: real HTTP, a session token required on every
GET (401 without, like an instance with ``HttpTokens=required``), settable spot notices.

    imds = FakeImds({"instance_id": "i-0123456789abcdef0", "instance_type": "m5.large",
                     "az": "us-east-1a", "instance_life_cycle": "spot"}).start()
    imds.set_instance_action("terminate", "2030-01-01T00:02:00Z")
    ...
    imds.stop()
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"

# identity key → metadata path
_PATHS = {
    "instance_id": "instance-id",
    "instance_type": "instance-type",
    "az": "placement/availability-zone",
    "region": "placement/region",
    "ami_id": "ami-id",
    "local_ipv4": "local-ipv4",
    "public_ipv4": "public-ipv4",
    "instance_life_cycle": "instance-life-cycle",
    "hostname": "hostname",
}


class FakeImds:
    """IMDSv2 lookalike. ``identity`` keys: instance_id, instance_type, az, region (default: from az),
    ami_id, local_ipv4, public_ipv4 (absent → 404), instance_life_cycle ("spot" or "on-demand"),
    account_id (default: moto's). ``dynamic/instance-identity/document`` and ``.../signature`` are signed
    with local mode's test key (localmode.identity_signer); ``signed=False`` serves neither (404), as
    for a legacy setup."""

    def __init__(self, identity: dict[str, Any], host: str = "127.0.0.1", port: int = 0, signed: bool = True):
        self.identity = dict(identity)
        self.signed = signed
        if self.identity.get("az") and not self.identity.get("region"):
            self.identity["region"] = self.identity["az"][:-1]
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._tokens: set[str] = set()
        self._instance_action: dict[str, str] | None = None
        self._rebalance: dict[str, str] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, carried a valid token)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeImds:
        self._server = ThreadingHTTPServer((self._host, self._port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-imds", daemon=True)  # stop() waits one poll
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeImds:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeImds is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- what tests change -------------------------------------------------------------------

    def set_instance_action(self, action: str, time: str) -> None:
        """The two-minute notice: ``spot/instance-action`` answers ``{"action", "time"}``."""
        with self._lock:
            self._instance_action = {"action": action, "time": time}

    def set_rebalance(self, time: str) -> None:
        """``events/recommendations/rebalance`` answers ``{"noticeTime": time}``."""
        with self._lock:
            self._rebalance = {"noticeTime": time}

    def clear_notices(self) -> None:
        with self._lock:
            self._instance_action = self._rebalance = None

    def expire_tokens(self) -> None:
        """Forget every issued token (the next GET with an old token gets 401)."""
        with self._lock:
            self._tokens.clear()

    # ---- HTTP --------------------------------------------------------------------------------

    def _lookup(self, path: str) -> tuple[int, str]:
        with self._lock:
            if path == "spot/instance-action":
                return (200, json.dumps(self._instance_action)) if self._instance_action else (404, "")
            if path == "events/recommendations/rebalance":
                return (200, json.dumps(self._rebalance)) if self._rebalance else (404, "")
        for key, item in _PATHS.items():
            if item == path:
                value = self.identity.get(key)
                return (200, str(value)) if value is not None else (404, "")
        if path in ("", "/"):
            return 200, "\n".join(sorted(_PATHS.values()))
        return 404, ""

    def _dynamic(self, path: str) -> tuple[int, str]:
        """The signed identity document of the current identity, and its signature."""
        if not self.signed or path not in ("instance-identity/document", "instance-identity/signature"):
            return 404, ""
        from localmode.identity_signer import LOCAL_ACCOUNT_ID, signed_identity

        ident = self.identity
        document, signature = signed_identity(
            instance_id=str(ident.get("instance_id")), instance_type=str(ident.get("instance_type")),
            az=str(ident.get("az")), region=ident.get("region"), image_id=ident.get("ami_id"),
            account_id=ident.get("account_id") or LOCAL_ACCOUNT_ID)
        return 200, document if path.endswith("document") else signature

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive clients otherwise wait ~40 ms per answer (delayed ACK)

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                fake.requests.append(("PUT", self.path, False))
                if self.path != "/latest/api/token":
                    return self._send(404)
                try:
                    ttl = int(self.headers.get(TTL_HEADER, ""))
                except ValueError:
                    return self._send(400, "missing or invalid token TTL")
                if not 1 <= ttl <= 21600:
                    return self._send(400, "token TTL out of range")
                token = secrets.token_urlsafe(24)
                with fake._lock:
                    fake._tokens.add(token)
                self._send(200, token)

            def do_GET(self):
                token = self.headers.get(TOKEN_HEADER)
                with fake._lock:
                    valid = token in fake._tokens
                fake.requests.append(("GET", self.path, valid))
                if not valid:
                    return self._send(401)
                dynamic = "/latest/dynamic/"
                if self.path.startswith(dynamic):
                    return self._send(*fake._dynamic(self.path[len(dynamic):]))
                prefix = "/latest/meta-data/"
                if not self.path.startswith(prefix) and self.path != prefix.rstrip("/"):
                    return self._send(404)
                self._send(*fake._lookup(self.path[len(prefix):]))

        return Handler
