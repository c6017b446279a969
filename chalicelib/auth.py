"""Tokens and tenancy (PRODUCT.md §3).

Client tokens are generated with ``secrets``, shown once, and stored only as SHA-256 hashes. A token
is resolved with one GetItem on its hash (``client-lookups``) and one on the client; the hash is
compared in constant time. The admin key is stored hashed in SSM Parameter Store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from aws_lambda_powertools.utilities import parameters

from chalicelib.errors import ForbiddenError, UnauthorizedError
from chalicelib.repositories import clients as client_repo
from chalicelib.settings import get_settings

TOKEN_PREFIX = "sot_"
ADMIN_HEADER = "x-admin-key"
ADMIN_KEY_CACHE_SECONDS = 300


def new_token() -> str:
    """A fresh client token (256 bits of entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


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
    return parameters.get_parameter(get_settings().admin_key_parameter, decrypt=True,
                                    max_age=ADMIN_KEY_CACHE_SECONDS)


def require_admin(headers: Mapping[str, str] | None) -> None:
    """Reject the request unless it carries the admin key in ``X-Admin-Key``."""
    given = _header(headers, ADMIN_HEADER)
    if not given:
        raise UnauthorizedError("admin key required (X-Admin-Key header)")
    if not hmac.compare_digest(hash_secret(given.strip()), admin_key_hash()):
        raise UnauthorizedError("invalid admin key")
