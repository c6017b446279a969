"""Savings snapshots: the roll-up's rows (hour, day, month per scope) and the daily growth snapshots.

One table, keyed by what is read: ``scope_key`` = ``<scope>#<ids>#<granularity>`` and ``period``
(``YYYY-MM-DDTHH``, ``YYYY-MM-DD`` or ``YYYY-MM``), so every read is one Query on one partition:

- ``client#<client_id>#hour|day|month``   a client's totals per period;
- ``agent#<client_id>#<agent_id>#day``    an agent's days (its summary sums them);
- ``instance#<client_id>#<instance_id>#day``  an instance's days;
- ``fleet#day|month``                     every client together (admin statistics);
- ``growth#day``                          the daily growth/fleet snapshot.

Rows are written with a deterministic key: a re-run overwrites, it never adds.
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, DecimalAttribute, OptionalText, table_name


class SavingsTable(Model):
    """One roll-up row (money exact as Decimal; seconds of spot and on-demand running time)."""

    class Meta(BaseMeta):
        table_name = table_name("savings")

    scope_key = UnicodeAttribute(hash_key=True)
    period = UnicodeAttribute(range_key=True)
    client_id = OptionalText()
    actual_cost = DecimalAttribute(null=True)
    baseline_cost = DecimalAttribute(null=True)
    spot_seconds = DecimalAttribute(null=True)
    ondemand_seconds = DecimalAttribute(null=True)
    instances = NumberAttribute(null=True)
    closed = BooleanAttribute(null=True)  # the period is over and was re-integrated after its end
    computed_at = UTCDateTimeAttribute()
    # growth snapshots only
    clients_total = NumberAttribute(null=True)
    clients_active = NumberAttribute(null=True)
    agents_total = NumberAttribute(null=True)
    agents_online = NumberAttribute(null=True)
    instances_active = NumberAttribute(null=True)
    total_savings = DecimalAttribute(null=True)
    expires_at = TTLAttribute(null=True)  # hourly rows only
