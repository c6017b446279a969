"""Plumbing every route shares: error rendering, body limits, JSON parsing, pagination.

``ApiBlueprint.route`` wraps each view so that domain, validation and storage errors become the
JSON error shape (chalicelib.errors) instead of Chalice's generic 500.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from chalice import Blueprint, Response
from pydantic import BaseModel

from chalicelib import auth, clock, rate_limit
from chalicelib.api.inputs import check_path_params, int_param, parse_body
from chalicelib.errors import (
    ForbiddenError,
    InternalError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
    error_response,
    translate,
)
from chalicelib.observability import logger
from chalicelib.api.route_doc import route_doc
from chalicelib.repositories import activity, agents
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.clients import ClientRecord
from chalicelib.settings import get_settings

SchemaT = TypeVar("SchemaT", bound=BaseModel)

# What every answer carries unless its route set its own (the console's files: chalicelib/api/console.py).
# JSON answers hold client tokens (create, regenerate) and tenants' fleets: never stored by a browser or
# proxy cache (an admin key is no Authorization header, which shared caches would respect), never sniffed
# into HTML, never framed. The site is HTTPS only (API Gateway has no plain-HTTP listener), and HSTS keeps a browser
# there: typed without https://, the console's sign-in (which takes a token or the admin key) would otherwise be
# asked for over HTTP first, where anyone on the network can answer it. No includeSubDomains: a custom domain's
# other hosts are the operator's to decide.
RESPONSE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
                    "Referrer-Policy": "no-referrer", "Strict-Transport-Security": "max-age=31536000"}


def security_headers(event, get_response):
    """HTTP middleware: ``RESPONSE_HEADERS`` on every answer, error answers included; a route's own win."""
    response = get_response(event)
    present = {name.lower() for name in response.headers}
    for name, value in RESPONSE_HEADERS.items():
        if name.lower() not in present:
            response.headers[name] = value
    return response


# What one JSON answer of a listing whose rows carry what tenants send (the audit log's metadata) may weigh: a
# synchronous Lambda answers at most 6 MB (API Gateway: 502), and the proxy's envelope escapes the body once more (a
# quote or backslash doubles). A page of such rows stops at this budget and its next_token goes on after it.
ANSWER_BUDGET_BYTES = 2_560 * 1024


def rows_within_budget(views: list[Any], budget: int = ANSWER_BUDGET_BYTES) -> int:
    """How many of ``views`` (the first ones; always at least one) one answer carries within ``budget`` bytes."""
    size = 0
    for count, view in enumerate(views):
        size += len(json.dumps(view, default=str))
        if count and size > budget:
            return count
    return len(views)


def utcnow() -> datetime:
    """The request's clock (chalicelib.clock: the system clock, or local mode's replay time)."""
    return clock.now()


def _guarded(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            check_path_params(kwargs)
            return view(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - translated, or logged in full and answered generically
            error = translate(exc)
            if error is None:
                logger.exception("unhandled error")
                error = InternalError()
            return error_response(error)

    return wrapper


class ApiBlueprint(Blueprint):
    """A Blueprint whose routes answer every client mistake with a JSON 4xx.

    ``route`` also takes the route's OpenAPI declarations (``request=``, ``response=``, ``responses=``,
    ``query=``, ``auth=``, ``tags=``, ``csv=``, ``status=``, ``content=``; chalicelib/openapi.py): all optional, what
    is not declared is inferred from the view."""

    def route(self, path: str, **kwargs: Any):
        doc = route_doc(kwargs)
        register = super().route(path, **kwargs)

        def decorator(view):
            guarded = _guarded(view)
            if doc is not None:
                guarded.__openapi__ = doc
            register(guarded)
            return view

        return decorator


# The errors Chalice answers itself before any view runs, in its own shape ({"Code", "Message"}).
_CHALICE_ERROR_CODES = {"UnsupportedMediaType": "unsupported_media_type", "MethodNotAllowedError": "method_not_allowed",
                        "BadRequest": "bad_request"}


def chalice_error_shape(event, get_response):
    """HTTP middleware: Chalice's own errors (a body type the route does not take: 415; a method it does not
    have: 405) in the product's JSON error shape, like every other error."""
    response = get_response(event)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code = str(body["Code"])
        code = _CHALICE_ERROR_CODES.get(code) or re.sub(r"(?<!^)(?=[A-Z])", "_", code).lower()
        response.body = json.dumps({"error": code, "message": str(body["Message"])})
        response.headers["Content-Type"] = "application/json"
    return response


def raw_json(request) -> dict[str, Any]:
    """The request body as a JSON object; {} when empty (chalicelib.api.inputs checks it)."""
    return parse_body(request.raw_body or b"", limit=get_settings().max_body_bytes,
                      declared=(request.headers or {}).get("content-length"))


def validate(schema: type[SchemaT], body: dict[str, Any]) -> SchemaT:
    """Validate a body against its pydantic schema (pydantic errors become 400 with a field)."""
    return schema.model_validate(body)


def client_request(request, schema: type[SchemaT] | None = None) -> tuple[ClientRecord, SchemaT | dict]:
    """Authenticate a client call (Bearer or legacy body token), then validate its body."""
    body = raw_json(request)
    client = auth.authenticate(request.headers, body, request=request)
    if schema is None:
        return client, body
    return client, validate(schema, body)


def agent_request(request, agent_id: str, schema: type[SchemaT] | None = None, *,
                  allow_deleted: bool = False,
                  retired_instance: Callable[[dict], str | None] | None = None) -> tuple[str, AgentRecord, SchemaT | dict]:
    """Authenticate an agent route: ``(client_id, agent, body)``.

    The agent's own credential (its row's GetItem; another agent's id is 404), or, where the client runs in
    legacy agent mode, the client token (Bearer or the v4 body ``client_token``). Without legacy mode a
    client token answers 403 ``agent_credential_required``. Then the client's gate admits and counts the
    request (chalicelib/rate_limit.py; for a client token it also checks the token, so the agent row is read
    only for an admitted request)."""
    body = raw_json(request)
    token = auth.header_token(request.headers)
    if auth.is_agent_credential(token):
        try:
            agent = auth.authenticate_agent(token, agent_id, allow_deleted=allow_deleted,
                                            retired_instance=retired_instance(body) if retired_instance else None)
        except (UnauthorizedError, ForbiddenError, NotFoundError):
            rate_limit.refund(request)  # counted by a fast path before the row refused the credential
            raise
        rate_limit.admit(agent.client_id, request=request)
    else:
        client_id = auth.admit_token(request.headers, body, legacy=True, request=request)
        agent = agents.require(client_id, agent_id, allow_deleted=allow_deleted)
    return agent.client_id, agent, body if schema is None else validate(schema, body)


def quick_agent_admission(request, agent_id: str, body: dict[str, Any], *,
                          agent_condition=None) -> tuple[str, str | None] | None:
    """The fast admission of an agent route that does its own conditional write or check of the agent row:
    ``(client_id, credential_hash)`` (None for a client token), or None when the caller must take its full
    path (``agent_request``).

    Without ``agent_condition`` the gate alone admits and counts the request (one UpdateItem); the route's
    own conditional write then checks the row (and the credential). If that write's condition fails the
    route takes its full path, which does not count the request again, and refunds the count when the
    row refuses an agent credential (``agent_request``): a forged credential naming a client uses none of
    its quota. With ``agent_condition`` the gate update and a condition check of the agent row (credential,
    ``agent_condition``) are one transaction; when the row's check fails nothing is counted."""
    token = auth.header_token(request.headers)
    if auth.is_agent_credential(token):
        named = auth.credential_names(token)
        if named is None or named[1] != agent_id:
            return None
        client_id, credential_hash, token_hash, legacy = named[0], auth.hash_secret(token), None, False
    else:
        client_id, token_hash = auth.client_of(auth.request_token(request.headers, body))
        credential_hash, legacy = None, True
    if agent_condition is None:
        if token_hash is None:
            try:
                rate_limit.admit(client_id, request=request)
            except (ForbiddenError, TooManyRequestsError):
                return None  # the credential is not verified yet: the full path answers 401 before these
        else:
            auth.admit_token(request.headers, body, legacy=True, request=request)
        return client_id, credential_hash
    condition = agents.credential_condition(credential_hash) & agent_condition
    try:
        admitted = rate_limit.admit_with(lambda tx: agents.check_in(tx, client_id, agent_id, condition),
                                         client_id, token_hash=token_hash, legacy=legacy, request=request)
    except (ForbiddenError, TooManyRequestsError):
        if credential_hash is None:
            raise
        return None  # the full path verifies the credential first, then answers the same 403/429
    return (client_id, credential_hash) if admitted else None


def admin_request(request, schema: type[SchemaT] | None = None) -> SchemaT | dict:
    """Check the admin key, then validate the body (an agent credential is never an admin key)."""
    auth.require_admin(request.headers)
    body = raw_json(request)
    return body if schema is None else validate(schema, body)


def page_params(request) -> tuple[int, str | None]:
    """``limit`` (1..max, default from settings) and ``next_token`` from the query string."""
    params = request.query_params or {}
    settings = get_settings()
    limit = int_param(params, "limit", default=settings.default_page_size, low=1, high=settings.max_page_size)
    return limit, params.get("next_token")


def noted(warnings: list[str], what: str, now: datetime, *, client_id: str, agent_id: str | None,
          instance_id: str | None = None) -> list[str]:
    """Log the fields a report lost to implausibility in the activity log; the list the answer carries."""
    if warnings:
        activity.record_event("report_warnings", f"{what}: {len(warnings)} field(s) dropped as implausible",
                              now, severity="warning", client_id=client_id, agent_id=agent_id,
                              instance_id=instance_id, metadata={"warnings": warnings})
    return warnings


def ok(body: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json"})
