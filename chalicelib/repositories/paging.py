"""Opaque ``next_token`` pagination over DynamoDB's LastEvaluatedKey.

A token names the tenant's partition it was issued for; a token for another partition is rejected
with 400 instead of being passed to DynamoDB. A page is read by ``read_page`` (a bounded number of requests).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import InvalidInputError


@dataclass(frozen=True)
class Page:
    """One page of results and the token for the next one (None on the last page)."""

    items: list[Any]
    next_token: str | None


# A filtered listing (``?unread=true``, ``?search=``, ``?status=``) reads on past rows its filter drops, but boundedly:
# its first request evaluates ``limit`` rows, each later one READ_ROWS, PAGE_READS requests at most (each also
# stops at DynamoDB's 1 MB). pynamodb's own iteration reads on until ``limit`` rows *passed the filter*, ``limit``
# rows a request: a filter matching nothing of a tenant's large partition read all of it in one API request.
READ_ROWS = 1000
PAGE_READS = 5


def read_page(model, read: Callable[[int, dict | None], Any], *, limit: int, start: dict | None,
              key_attrs: tuple[str, ...]) -> Page:
    """Up to ``limit`` rows of ``model`` from ``read(page_size, start_key)`` (a Query or Scan of the model or of one of
    its indexes, from ``start_key``), in its order, and the token that goes on after the last row returned (its
    ``key_attrs``: the key DynamoDB itself would give as LastEvaluatedKey). A page ends short, with a token, only
    when its reads found fewer rows than ``limit`` in PAGE_READS requests; the next page goes on from there."""
    items: list[Any] = []
    for attempt in range(PAGE_READS):
        result = read(limit if attempt == 0 else max(limit, READ_ROWS), start)
        for raw in (next(result.page_iter, None) or {}).get("Items", []):
            items.append(model.from_raw_data(raw))
            if len(items) == limit:
                return Page(items, encode_token({attr: raw[attr] for attr in key_attrs}))
        start = result.page_iter.last_evaluated_key
        if not start:
            return Page(items, None)
    return Page(items, encode_token(start))


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
