"""HTTP client of the Spot Optimizer API (the agent routes of the legacy protocol).

Unlike the legacy agent, which turned every non-2xx answer into ``None`` and so never saw why a
call failed, every failure here is an ``ApiError`` carrying the status and the
server's JSON error body ``{error, message, field}``: the caller decides whether to retry (5xx,
connection) or give up (4xx). Connection failures are retried once: the agent routes are
idempotent (results by command id, switch reports by new instance, notices deduplicated).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable
from urllib.parse import quote

import requests

from spot_agent import __version__

log = logging.getLogger("spot_agent.api")


# The error code of the server's answer to a method and path it has no route for (chalicelib.errors
# RouteNotFoundError; tests/agent keep the two equal): a wrong server URL, not an unknown agent.
ROUTE_NOT_FOUND = "route_not_found"


class ApiError(RuntimeError):
    """A failed API call: ``status`` is None when the server could not be reached."""

    def __init__(self, method: str, path: str, status: int | None, body: Any = None, reason: str = ""):
        self.method, self.path, self.status, self.body = method, path, status, body
        detail = body.get("message") if isinstance(body, dict) else (body or reason)
        code = f" {body.get('error')}" if isinstance(body, dict) and body.get("error") else ""
        super().__init__(f"{method} {path}: {status or 'unreachable'}{code}: {detail}")

    @property
    def unreachable(self) -> bool:
        return self.status is None

    @property
    def retryable(self) -> bool:
        """Worth trying again later: no answer, throttled, or a server fault."""
        return self.status is None or self.status == 429 or self.status >= 500

    @property
    def code(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None

    @property
    def no_such_route(self) -> bool:
        """The server has no route for this call: the configured server URL is not Spot Optimizer's API."""
        return self.status == 404 and self.code == ROUTE_NOT_FOUND


class ApiClient:
    """One method per agent route; each returns the decoded JSON body of a 2xx answer."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, session: Any = None,
                 retry_delay_s: float = 0.5, sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.token, self.timeout, self.retry_delay_s = token, timeout, retry_delay_s
        # The agent's own credential from a verified registration: every agent route but register uses
        # it. None (a legacy-mode server issued none): the client token, as v4 agents do.
        self.credential: str | None = None
        self.session = session if session is not None else requests.Session()
        self._sleep = sleep

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
             client_token: bool = False) -> dict[str, Any]:
        secret = self.token if client_token or not self.credential else self.credential
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json",
                   "Accept": "application/json", "User-Agent": f"spot-agent/{__version__}"}
        url = self.base_url + path
        last: Exception | None = None
        for attempt in range(2):
            try:
                response = self.session.request(method, url, headers=headers, json=body, timeout=self.timeout)
                break
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = exc
                if attempt == 0:
                    log.info("API %s %s unreachable (%s); retrying once", method, path, exc)
                    self._sleep(self.retry_delay_s)
        else:
            raise ApiError(method, path, None, reason=str(last)) from last
        try:
            payload = response.json() if response.content else None
        except ValueError:
            payload = response.text[:500]
        if not 200 <= response.status_code < 300:
            raise ApiError(method, path, response.status_code, payload)
        return payload if isinstance(payload, dict) else {"result": payload}

    # ---- the agent routes --------------------------------------------------------------------

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        """Registration authenticates with the client token (it is what issues the agent credential)."""
        return self.call("POST", "/api/agents/register", body, client_token=True)

    def heartbeat(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Liveness; the answer carries ``commands`` to execute and ``config_version``."""
        return self.call("POST", f"/api/agents/{_q(agent_id)}/heartbeat", body)

    def config(self, agent_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/agents/{_q(agent_id)}/config")

    def pricing_report(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/api/agents/{_q(agent_id)}/pricing-report", body)

    def command_executed(self, agent_id: str, command_id: str, *, success: bool,
                         message: str | None, error_code: str | None = None) -> dict[str, Any]:
        """A command's result (idempotent on the server: a repeat with the same outcome is a replay).
        ``error_code`` is the AWS error code of a failed command (a capacity refusal tells the server
        the target pool had no room)."""
        body: dict[str, Any] = {"success": success, "message": message}
        if error_code:
            body["error_code"] = error_code
        return self.call("POST", f"/api/agents/{_q(agent_id)}/commands/{_q(command_id)}/executed", body)

    def extend_lease(self, agent_id: str, command_id: str) -> dict[str, Any]:
        """Tell the server the command is still being worked on (renews its lease)."""
        return self.call("POST", f"/api/agents/{_q(agent_id)}/commands/{_q(command_id)}/extend", {})

    def switch_report(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/api/agents/{_q(agent_id)}/switch-report", body)

    def termination_imminent(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/api/agents/{_q(agent_id)}/termination-imminent", body)

    def rebalance_recommendation(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/api/agents/{_q(agent_id)}/rebalance-recommendation", body)


def _q(segment: str) -> str:
    return quote(str(segment), safe="")
