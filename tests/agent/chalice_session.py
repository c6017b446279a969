"""A ``requests``-like session over ``chalice.test.Client``: the agent's real ApiClient talks to the
real API handlers in-process (moto behind them), with a switch to play "server down"."""

from __future__ import annotations

import json as jsonlib
from urllib.parse import urlsplit

import requests

BASE_URL = "http://api.test"


class ShimResponse:
    def __init__(self, response):
        self.status_code = response.status_code
        self.headers = dict(response.headers or {})
        self.content = response.body or b""
        if isinstance(self.content, str):
            self.content = self.content.encode()

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self):
        return jsonlib.loads(self.content)


class ChaliceSession:
    """``request(method, url, headers=, json=, timeout=)`` → the in-process API's answer.

    ``calls`` records (method, path) of every attempt; while ``down`` is true every call raises
    ``requests.ConnectionError`` as an unreachable server would.
    """

    def __init__(self, http):
        self.http = http
        self.down = False
        self.calls: list[tuple[str, str]] = []

    def request(self, method, url, headers=None, json=None, data=None, timeout=None):
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.calls.append((method, path))
        if self.down:
            raise requests.ConnectionError(f"{url}: connection refused (test: server down)")
        body = jsonlib.dumps(json).encode() if json is not None else (data or b"")
        return ShimResponse(self.http.request(method, path, headers=dict(headers or {}), body=body))

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p in self.calls if m == method and p.endswith(suffix))
