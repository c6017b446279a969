"""Per-client request gates (chalicelib/rate_limit.py): one small item per client, ``gate#<client_id>``.

A gate holds a copy of what admitting a request needs to know about the client (its token hash and expiry,
status, legacy agent mode, rate-limit override: ``GATE_FIELDS``, written in the same transaction as the
client row by chalicelib/repositories/clients.py) and the request counter of the current rate-limit window.
One conditional UpdateItem on it authenticates a client token, checks the client and counts the request.

The table is a metering table (tests' "nothing written" snapshots leave it out: every request writes it).
Its TTL attribute only expires the per-window counter items of earlier versions; gates never expire.
"""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name

# Client-row attributes copied onto the gate (same names on both items).
GATE_FIELDS = ("token_hash", "token_expires_at", "status", "legacy_agents", "rate_limit_per_window")


def gate_key(client_id: str) -> str:
    """Key of a client's gate item."""
    return f"gate#{client_id}"


class RateLimitTable(Model):
    """``gate#<client_id>`` → the client's admission state and its current window's request count."""

    class Meta(BaseMeta):
        table_name = table_name("rate-limits")

    window_key = UnicodeAttribute(hash_key=True)  # gate#<client_id> (the key's name predates the gate)
    client_id = OptionalText()
    token_hash = OptionalText()
    token_expires_at = UTCDateTimeAttribute(null=True)
    status = OptionalText()  # set on every complete gate: a gate without it is rebuilt from the client row
    legacy_agents = BooleanAttribute(null=True)
    rate_limit_per_window = NumberAttribute(null=True)
    # RATE_LIMIT_PER_AGENT x the client's max_agents override, when it has one (clients.fleet_rate_limit, written
    # with the override by clients.set_limits):
    # the limit without a rate-limit override is the larger of this and the stage's default.
    fleet_rate_limit = NumberAttribute(null=True)
    window_start = NumberAttribute(null=True)  # epoch seconds of the window ``requests`` counts
    requests = NumberAttribute(null=True)  # requests admitted in that window (refused ones are not counted)
    # critical agent reports admitted past the limit in that window, from its reserve (rate_limit.CRITICAL_ROUTES)
    reserve_used = NumberAttribute(null=True)
    expires_at = TTLAttribute(null=True)
