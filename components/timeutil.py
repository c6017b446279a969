"""Small helpers for the timezone-aware UTC datetimes every component uses."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from components.errors import ValidationError

__all__ = ["ensure_aware", "parse_iso", "seconds_between", "to_utc"]


def ensure_aware(value: datetime, field: str) -> datetime:
    """Return `value` unchanged, or raise if it is naive.

    A naive datetime is ambiguous (local time? UTC?); comparing it with an
    aware one fails far from the cause, so we fail at the boundary instead.
    """
    if not isinstance(value, datetime):
        raise ValidationError("must be a datetime", field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError("must be timezone-aware (UTC)", field)
    return value


def to_utc(value: datetime, field: str = "timestamp") -> datetime:
    """Convert an aware datetime to UTC (rejects naive ones)."""
    return ensure_aware(value, field).astimezone(timezone.utc)


def seconds_between(start: datetime, end: datetime) -> Decimal:
    """Exact seconds from `start` to `end` as a Decimal (negative if reversed).

    Decimal avoids float drift when the result is multiplied by a price.
    """
    delta = end - start
    whole = delta.days * 86400 + delta.seconds
    return Decimal(whole) + Decimal(delta.microseconds) / Decimal(1_000_000)


def parse_iso(text: str) -> datetime:
    """An ISO-8601 timestamp (``Z`` accepted) as an aware UTC datetime; naive input is taken as UTC.

    >>> parse_iso("2026-01-01T00:00:00Z").isoformat()
    '2026-01-01T00:00:00+00:00'
    """
    if not isinstance(text, str):
        raise ValueError("timestamp must be a string")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
