"""Everything a client sends, checked once before any handler logic (issue #12: never a 500).

A request body is parsed here with a nesting limit, and every value in it is walked once without
recursion: each number must be one DynamoDB can store (a later write would fail half-way otherwise),
each string and key is bounded in UTF-8 bytes (what an item's 400 KB limit counts). Path parameters
and integer query parameters have one shape check each. Failures are 4xx ``ApiError``s, so a route
answers before it reads or writes a table.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from chalicelib.errors import BadRequestError, InvalidInputError, PayloadTooLargeError

MAX_DEPTH = 32  # our deepest schema nests 4 levels
MAX_STRING_BYTES = 16 * 1024  # one string value, UTF-8
MAX_KEY_BYTES = 256  # one object key, UTF-8
# Strings bounded by the body limit only: they go to object storage, never into a DynamoDB item.
UNCAPPED_STRINGS = frozenset({("artifact_base64",)})  # POST /api/admin/ml-models (the model artifact)
# DynamoDB numbers: up to 38 significant digits, magnitude 1E-130 .. 9.99…E+125 (or zero).
DYNAMO_DIGITS, DYNAMO_MIN_EXP, DYNAMO_MAX_EXP = 38, -130, 125
# Every id we mint (ag-…, cmd-…, rep-…, notification stamps, model versions, EC2 instance ids) fits.
PATH_PARAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)
ASCII_DIGITS = re.compile(r"[0-9]{1,9}", re.ASCII)


def dynamo_storable(number: int | float) -> bool:
    """True when DynamoDB can store ``number`` exactly as pynamodb would send it."""
    if isinstance(number, float) and not math.isfinite(number):
        return False
    try:
        value = Decimal(repr(number) if isinstance(number, float) else number).normalize()
    except (InvalidOperation, ValueError):
        return False
    if value.is_zero():
        return True
    digits = len(value.as_tuple().digits)
    return digits <= DYNAMO_DIGITS and DYNAMO_MIN_EXP <= value.adjusted() <= DYNAMO_MAX_EXP


def _path(parts: tuple) -> str | None:
    return ".".join(str(p) for p in parts) or None


def _check_values(body: Any) -> None:
    """Walk the parsed body iteratively: depth, string/key sizes, storable numbers."""
    stack: list[tuple[Any, tuple, int]] = [(body, (), 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise InvalidInputError(f"request body nests deeper than {MAX_DEPTH} levels",
                                        code="too_deep")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(key, str) and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                    raise PayloadTooLargeError(f"an object key exceeds {MAX_KEY_BYTES} bytes", field=_path(path))
                stack.append((value, (*path, key), depth + 1))
        elif isinstance(node, str):
            if path not in UNCAPPED_STRINGS and len(node) > MAX_STRING_BYTES // 4 and len(node.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES:
                raise PayloadTooLargeError(f"a string exceeds {MAX_STRING_BYTES} bytes (UTF-8)", field=_path(path))
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and not dynamo_storable(node):
            raise InvalidInputError("number out of range (finite, at most 38 digits, magnitude 1e-130 to 1e125)",
                                    field=_path(path))


def parse_body(raw: bytes, *, limit: int, declared: str | None = None) -> dict[str, Any]:
    """The body as a JSON object ({} when empty): 413 over ``limit`` bytes, 400 when malformed,
    too deep, or carrying a value we could not store."""
    if len(raw) > limit or (declared and ASCII_DIGITS.fullmatch(declared) and int(declared) > limit):
        raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    if not raw.strip():
        return {}
    try:
        # UTF-8 only (RFC 8259 8.1; a BOM is ignored): json.loads would also take UTF-16 and UTF-32 bytes, a body
        # anything reading it as UTF-8 in front of the API (a WAF rule, a log) sees as NULs and noise.
        body = json.loads(raw.decode("utf-8-sig"))
    except RecursionError:
        raise InvalidInputError(f"request body nests deeper than {MAX_DEPTH} levels", code="too_deep") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError("request body is not valid JSON (UTF-8)", code="malformed_json") from None
    if not isinstance(body, dict):
        raise InvalidInputError("request body must be a JSON object")
    _check_values(body)
    return body


def check_path_params(params: dict[str, Any]) -> None:
    """Every path parameter is a short ASCII id; anything else is a 400 naming the parameter."""
    for name, value in params.items():
        if not isinstance(value, str) or not PATH_PARAM.fullmatch(value):
            raise InvalidInputError(f"{name} must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
                                    field=name)


def int_param(params: dict[str, str], name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``low..high``: ASCII digits only (``int()`` would take '²' or
    '١٢', ``isdigit()`` accepts '²' that ``int()`` then refuses)."""
    raw = params.get(name)
    if raw is None:
        return default
    if not ASCII_DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidInputError(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def bool_param(params: dict[str, str], name: str, *, default: bool) -> bool:
    """A boolean query parameter: true/false/1/0 in any case; anything else is 400 (not silently false)."""
    raw = params.get(name)
    if raw is None:
        return default
    value = _BOOLEANS.get(raw.lower())
    if value is None:
        raise InvalidInputError(f"{name} must be true or false", field=name)
    return value
