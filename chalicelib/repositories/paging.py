"""Opaque ``next_token`` pagination over DynamoDB's LastEvaluatedKey.

A token names the tenant's partition it was issued for; a token for another partition is rejected
with 400 instead of being passed to DynamoDB. A page is what one DynamoDB request returns (``first_page``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import InvalidInputError


@dataclass(frozen=True)
class Page:
    """One page of results and the token for the next one (None on the last page)."""

    items: list[Any]
    next_token: str | None


def first_page(model, result) -> Page:
    """What the first DynamoDB request of ``result`` (a Query or Scan of ``model``, or of one of its indexes, made
    with ``limit``) returns, and the token that goes on where that request stopped.

    pynamodb's own iteration reads on, one request after another, until ``limit`` items *passed the filter*: a
    filter matching nothing of a large partition (``?unread=true`` among a tenant's thousands of read
    notifications, a ``?search=`` naming none of its instances) read the whole partition in one API request,
    ``limit`` rows a request. One request evaluates ``limit`` rows at most: a filtered page may hold fewer, even
    none, and still have a token."""
    page = next(result.page_iter, None) or {}
    return Page([model.from_raw_data(item) for item in page.get("Items", [])],
                encode_token(result.page_iter.last_evaluated_key))


def encode_token(last_key: dict[str, Any] | None) -> str | None:
    """Serialise a LastEvaluatedKey into an opaque URL-safe token."""
    if not last_key:
        return None
    raw = json.dumps(last_key, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# DynamoDB refuses (ValidationException, a 500) an ExclusiveStartKey whose key value is empty or longer than a key
# may be (a sort key: 1,024 bytes); moto does not check. Every key value we issue is a short id or timestamp.
MAX_KEY_VALUE_BYTES = 1024


def _key_value(value: Any) -> bool:
    try:
        return isinstance(value, str) and 0 < len(value.encode("utf-8")) <= MAX_KEY_VALUE_BYTES
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the token's JSON) is no text DynamoDB stores
        return False


def _string_key(key: Any) -> bool:
    """True for a DynamoDB key in its typed form ``{attr: {"S": text}}`` (every key here is a string), each value
    one DynamoDB accepts in a key."""
    return isinstance(key, dict) and bool(key) and all(
        isinstance(value, dict) and list(value) == ["S"] and _key_value(value["S"])
        for value in key.values())


def _parse(token: str | None) -> dict | None:
    """The key a token encodes (None for no token); 400 when it is not one of ours."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):  # ours are flat: "[[[…" is no token
        raise InvalidInputError("next_token is not valid", field="next_token") from None


def decode_token(token: str | None, *, partition_attr: str, partition_value: str,
                 key_attrs: tuple[str, ...] | None = None) -> dict | None:
    """Parse a token, checking that it is a key of the caller's partition.

    ``key_attrs`` (every attribute of the key, partition included) rejects tokens of another table or
    index shape before DynamoDB sees them.
    """
    key = _parse(token)
    if key is None:
        return None
    if (not _string_key(key) or key.get(partition_attr) != {"S": partition_value}
            or (key_attrs is not None and set(key) != set(key_attrs))):
        raise InvalidInputError("next_token is not valid", field="next_token")
    return key


def decode_scan_token(token: str | None, *, key_attrs: tuple[str, ...]) -> dict | None:
    """Parse a token of a fleet-wide (admin) scan: any partition, but exactly the table's key attributes."""
    key = _parse(token)
    if key is None:
        return None
    if not _string_key(key) or set(key) != set(key_attrs):
        raise InvalidInputError("next_token is not valid", field="next_token")
    return key
