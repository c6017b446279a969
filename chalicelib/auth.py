"""Tokens and tenancy (PRODUCT.md §3).

Client tokens are generated with ``secrets``, shown once, and stored only as SHA-256 hashes. A token
is resolved with one GetItem on its hash (``client-lookups``) and one on the client; the hash is
compared in constant time. The admin key is stored hashed in SSM Parameter Store.

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
from datetime import datetime, timezone
from typing import Any

from chalicelib.errors import ForbiddenError, NotFoundError, UnauthorizedError
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import clients as client_repo
from chalicelib.settings import get_settings

TOKEN_PREFIX = "sot_"
AGENT_CREDENTIAL_PREFIX = "soa_"
_AGENT_CREDENTIAL = re.compile(r"soa_(cl-[A-Za-z0-9-]{1,64})\.(ag-[0-9a-f]{1,64})\.[A-Za-z0-9_-]{20,128}")
ADMIN_HEADER = "x-admin-key"
ADMIN_KEY_CACHE_SECONDS = 300


def new_token() -> str:
    """A fresh client token (256 bits of entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_agent_credential(client_id: str, agent_id: str) -> str:
    """A fresh credential for one agent (256 bits of entropy after the row it names)."""
    return f"{AGENT_CREDENTIAL_PREFIX}{client_id}.{agent_id}.{secrets.token_urlsafe(32)}"


def is_agent_credential(token: str | None) -> bool:
    """True for anything shaped like an agent credential (it is then never tried as a client token)."""
    return isinstance(token, str) and token.startswith(AGENT_CREDENTIAL_PREFIX)


def authenticate_agent(token: str, agent_id: str, *, allow_deleted: bool = False) -> agent_repo.AgentRecord:
    """The agent an agent credential belongs to, if it is ``agent_id``: one GetItem.

    401 for a malformed, unknown or rotated credential; 403 when the client is inactive; 404 when the
    path names another agent (whether or not it exists: siblings stay invisible) or a deleted one.
    """
    match = _AGENT_CREDENTIAL.fullmatch(token)
    if match is None:
        raise UnauthorizedError("invalid agent credential")
    agent = agent_repo.get(match.group(1), match.group(2))
    if agent is None or not agent.credential_hash or \
            not hmac.compare_digest(agent.credential_hash, hash_secret(token)):
        raise UnauthorizedError("invalid agent credential; register again to get a new one")
    if agent.client_suspended:
        raise ForbiddenError("client is not active")
    if agent.agent_id != agent_id or (agent.deleted and not allow_deleted):
        raise NotFoundError("agent not found", field="agent_id")
    return agent


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a token or key: the only form we ever store."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


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


def authenticate(headers: Mapping[str, str] | None, body: Mapping[str, Any] | None = None,
                 now: datetime | None = None) -> client_repo.ClientRecord:
    """Resolve the calling client from the Bearer header or the legacy body ``client_token``.

    Raises UnauthorizedError (401) for a missing, unknown or expired token and ForbiddenError (403)
    for an inactive client.
    """
    token = bearer_token(headers)
    if token is None and body is not None:
        candidate = body.get("client_token")
        token = candidate.strip() if isinstance(candidate, str) and candidate.strip() else None
    if token is None:
        raise UnauthorizedError("missing client token (Authorization: Bearer <token>)")
    if is_agent_credential(token):
        raise ForbiddenError("an agent credential is good for its own agent's routes only, not this one",
                             code="agent_credential_refused")
    token_hash = hash_secret(token)
    client = client_repo.find_by_token_hash(token_hash)
    if client is None or not hmac.compare_digest(client.token_hash, token_hash):
        raise UnauthorizedError("invalid client token")
    now = now or datetime.now(timezone.utc)
    if client.token_expires_at is not None and client.token_expires_at <= now:
        raise UnauthorizedError("client token expired; ask an admin to regenerate it")
    if client.status != "active":
        raise ForbiddenError("client is not active")
    return client


def admin_key_hash() -> str:
    """The stored admin-key hash, cached per container for a few minutes."""
    from aws_lambda_powertools.utilities import parameters  # imports boto3: on first use, not at cold start

    return parameters.get_parameter(get_settings().admin_key_parameter, decrypt=True,
                                    max_age=ADMIN_KEY_CACHE_SECONDS)


def require_admin(headers: Mapping[str, str] | None) -> None:
    """Reject the request unless it carries the admin key in ``X-Admin-Key``."""
    given = _header(headers, ADMIN_HEADER)
    if not given:
        raise UnauthorizedError("admin key required (X-Admin-Key header)")
    if not hmac.compare_digest(hash_secret(given.strip()), admin_key_hash()):
        raise UnauthorizedError("invalid admin key")
