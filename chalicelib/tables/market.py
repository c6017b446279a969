"""When the market-data jobs last asked AWS about one (region, instance type), when they may ask next, and the
on-demand list price the Price List API gave there."""

from __future__ import annotations

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, DecimalAttribute, OptionalText, table_name


class MarketFetchTable(Model):
    """One row per job and (region, type): ``prices#<region>#<type>``, ``placement#<region>#<type>`` or
    ``ondemand#<region>#<type>`` (``price``: AWS's on-demand list price there, the Price List API's answer).

    ``last_at`` is the last successful fetch (the price job's next ``StartTime``); ``next_at`` is the
    earliest time the placement-score job may query this configuration again (its rate limit); ``claimed_at``
    the time of a claim no success or failure followed yet (the run that took it died: its retry finishes it).
    """

    class Meta(BaseMeta):
        table_name = table_name("market-fetches")

    fetch_key = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    region = UnicodeAttribute()
    instance_type = UnicodeAttribute()
    last_at = UTCDateTimeAttribute(null=True)
    next_at = UTCDateTimeAttribute(null=True)
    last_error = OptionalText()
    price = DecimalAttribute(null=True)  # ondemand rows only
    updated_at = UTCDateTimeAttribute()
    claimed_at = UTCDateTimeAttribute(null=True)
