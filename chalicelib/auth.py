"""Tokens and tenancy (docs/ARCHITECTURE.md, "Auth and tenancy").

Client tokens are generated with ``secrets``, shown once, and stored only as SHA-256 hashes. A token's
hash names its client through one GetItem (``client-lookups``), which a container remembers (the answer
never changes for a hash); whether the token is still the client's current, unexpired one, and the client
active, is checked on every request by the client's gate in the same conditional write that counts the
request (chalicelib/rate_limit.py): a regenerated or revoked token, a deactivated client, are refused at
once by every container. The admin key is stored hashed in SSM Parameter Store.

Agent credentials (``soa_<client_id>.<agent_id>.<secret>``) are issued on a verified registration and
stored as a SHA-256 hash on the agent's row. The credential names its row, so checking it is one
GetItem (the row also carries the client's suspension). It is good for its own agent's routes only:
client and admin routes refuse it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from chalicelib import rate_limit
from chalicelib.errors import ForbiddenError, NotFoundError, ServiceUnavailableError, UnauthorizedError
from chalicelib.observability import logger
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import clients as client_repo
from chalicelib.settings import get_settings

TOKEN_PREFIX = "sot_"
AGENT_CREDENTIAL_PREFIX = "soa_"
_AGENT_CREDENTIAL = re.compile(r"soa_(cl-[A-Za-z0-9-]{1,64})\.(ag-[0-9a-f]{1,64})\.[A-Za-z0-9_-]{20,128}")
ADMIN_HEADER = "x-admin-key"
# The pre-v4 agent (final-ml agent/spot_agent.py) sends its client token in this header instead of a Bearer one.
CLIENT_TOKEN_HEADER = "x-client-token"
ADMIN_KEY_CACHE_SECONDS = 300
TOKEN_CLIENTS_CACHED = 1024  # token hash → client id pairs a container remembers

_token_clients: dict[str, str] = {}


def new_token() -> str:
    """A fresh client token (256 bits of entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_agent_credential(client_id: str, agent_id: str) -> str:
    """A fresh credential for one agent (256 bits of entropy after the row it names)."""
    return f"{AGENT_CREDENTIAL_PREFIX}{client_id}.{agent_id}.{secrets.token_urlsafe(32)}"


def is_agent_credential(token: str | None) -> bool:
    """True for anything shaped like an agent credential (it is then never tried as a client token)."""
    return isinstance(token, str) and token.startswith(AGENT_CREDENTIAL_PREFIX)


def authenticate_agent(token: str, agent_id: str, *, allow_deleted: bool = False,
                       retired_instance: str | None = None) -> agent_repo.AgentRecord:
    """The agent an agent credential belongs to, if it is ``agent_id``: one GetItem.

    401 for a malformed, unknown or rotated credential; 403 when the client is inactive; 404 when the
    path names another agent (whether or not it exists: siblings stay invisible) or a deleted one.
    With ``retired_instance`` (the one route that allows it) the credential replaced by the latest
    registration is accepted too, if it was issued to that instance: the record says
    ``by_retired_credential`` and the route limits what it may do.
    """
    names = credential_names(token)
    if names is None:
        raise UnauthorizedError("invalid agent credential")
    agent = agent_repo.get(*names)
    hashed = hash_secret(token)
    if agent is not None and agent.credential_hash and hmac.compare_digest(agent.credential_hash, hashed):
        pass
    elif agent is not None and retired_instance and agent.retired_credential_hash \
            and agent.retired_credential_instance_id == retired_instance \
            and hmac.compare_digest(agent.retired_credential_hash, hashed):
        agent = replace(agent, by_retired_credential=True)
    else:
        raise UnauthorizedError("invalid agent credential; register again to get a new one")
    if agent.client_suspended:
        raise ForbiddenError("client is not active")
    if agent.agent_id != agent_id or (agent.deleted and not allow_deleted):
        raise NotFoundError("agent not found", field="agent_id")
    return agent


def credential_names(token: str) -> tuple[str, str] | None:
    """(client id, agent id) an agent credential names (not verified: the agent row holds its hash)."""
    match = _AGENT_CREDENTIAL.fullmatch(token)
    return None if match is None else (match.group(1), match.group(2))


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a token or key: the only form we ever store. A lone surrogate (JSON allows
    one in a body ``client_token``) is hashed too, not a 500: no issued secret has one, so it matches none."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def bearer_token(headers: Mapping[str, str] | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    value = _header(headers, "authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def client_token_header(headers: Mapping[str, str] | None) -> str | None:
    """The token of an ``X-Client-Token`` header (spot_agent.py's way of sending it), if any."""
    value = (_header(headers, CLIENT_TOKEN_HEADER) or "").strip()
    return value or None


def header_token(headers: Mapping[str, str] | None) -> str | None:
    """The token a request's headers carry: ``Authorization: Bearer``, else ``X-Client-Token``. Either header
    carries the same kind of secret (a client token, or an agent credential on its agent's routes)."""
    return bearer_token(headers) or client_token_header(headers)


def speaks_client_token_header(headers: Mapping[str, str] | None) -> bool:
    """True for a request authenticated by ``X-Client-Token`` alone: spot_agent.py's protocol (it reads a
    pending-commands answer as a bare list, and cannot run a command: docs/legacy-compatibility.md)."""
    return bearer_token(headers) is None and client_token_header(headers) is not None


def request_token(headers: Mapping[str, str] | None, body: Mapping[str, Any] | None = None) -> str:
    """The client token of the Bearer or ``X-Client-Token`` header, or the legacy body ``client_token``: 401
    when there is none, 403 for an agent credential (good for its own agent's routes only)."""
    token = header_token(headers)
    if token is None and body is not None:
        candidate = body.get("client_token")
        token = candidate.strip() if isinstance(candidate, str) and candidate.strip() else None
    if token is None:
        raise UnauthorizedError("missing client token (Authorization: Bearer <token>)")
    if is_agent_credential(token):
        raise ForbiddenError("an agent credential is good for its own agent's routes only, not this one",
                             code="agent_credential_refused")
    return token


def client_of(token: str) -> tuple[str, str]:
    """(client id, token hash) of a client token; 401 when no client was ever issued it. Whether it is
    still valid is the gate's to say (``rate_limit.admit(..., token_hash=...)``)."""
    token_hash = hash_secret(token)
    client_id = _token_clients.get(token_hash)
    if client_id is None:
        client_id = client_repo.client_of_token(token_hash)
        if client_id is None:
            raise UnauthorizedError("invalid client token")
        if len(_token_clients) >= TOKEN_CLIENTS_CACHED:
            _token_clients.clear()
        _token_clients[token_hash] = client_id
    return client_id, token_hash


def admit_token(headers: Mapping[str, str] | None, body: Mapping[str, Any] | None = None, *,
                legacy: bool = False, request=None) -> str:
    """Admit a request carrying a client token: its client's id. One conditional UpdateItem of the client's
    gate checks the token, expiry, status (and, ``legacy``, legacy agent mode) and counts the request
    (plus one GetItem the first time a container sees the token). 401 for a missing, unknown, replaced or
    expired token, 403 for an inactive client (or legacy mode off), 429 over the rate limit."""
    client_id, token_hash = client_of(request_token(headers, body))
    try:
        rate_limit.admit(client_id, token_hash=token_hash, legacy=legacy, request=request)
    except UnauthorizedError:
        _token_clients.pop(token_hash, None)
        raise
    return client_id


def authenticate(headers: Mapping[str, str] | None, body: Mapping[str, Any] | None = None,
                 request=None) -> client_repo.ClientRecord:
    """Admit a client route's request (``admit_token``) and read its client.

    Raises UnauthorizedError (401) for a missing, unknown or expired token, ForbiddenError (403) for an
    inactive client, TooManyRequestsError (429) over its rate limit.
    """
    client = client_repo.get(admit_token(headers, body, request=request))
    if client is None:
        raise UnauthorizedError("invalid client token")
    return client


def forget_tokens() -> None:
    """Forget the token → client pairs this container learnt (tests; a new container starts empty)."""
    _token_clients.clear()


def admin_key_hash() -> str:
    """The stored admin-key hash, cached per container for a few minutes. When SSM cannot give it (the
    parameter missing, the read throttled) the admin routes stay closed with a 503 to retry, not a 500."""
    from aws_lambda_powertools.utilities import parameters  # imports boto3: on first use, not at cold start

    try:
        return parameters.get_parameter(get_settings().admin_key_parameter, decrypt=True,
                                        max_age=ADMIN_KEY_CACHE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        logger.error("the admin-key hash cannot be read from SSM", extra={"error": str(exc)})
        raise ServiceUnavailableError("the admin key cannot be checked now, retry", code="admin_key_unavailable",
                                      headers={"Retry-After": "5"}) from exc


def require_admin(headers: Mapping[str, str] | None) -> None:
    """Reject the request unless it carries the admin key in ``X-Admin-Key``. A key that is blank once
    stripped is no key: were the empty key's hash stored (``sha256sum`` of an unset variable), a header of
    a non-breaking space would otherwise match it."""
    given = (_header(headers, ADMIN_HEADER) or "").strip()
    if not given:
        raise UnauthorizedError("admin key required (X-Admin-Key header)")
    if not hmac.compare_digest(hash_secret(given), admin_key_hash()):
        raise UnauthorizedError("invalid admin key")
