"""Per-client request counters of the API rate limit (chalicelib/rate_limit.py); one item per window, TTL."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, table_name


class RateLimitTable(Model):
    """``<client_id>#<window start>`` → requests counted in that window (refused ones are not counted)."""

    class Meta(BaseMeta):
        table_name = table_name("rate-limits")

    window_key = UnicodeAttribute(hash_key=True)
    requests = NumberAttribute(default=0)
    expires_at = TTLAttribute()
