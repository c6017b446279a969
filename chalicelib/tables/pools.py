"""Spot pools (type × AZ) with their latest prices, the price points behind them and their rollups, and the raw
pricing reports (all but the pools by TTL)."""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, DecimalAttribute, OptionalText, table_name


class RecentPointMap(MapAttribute):
    """One of the last few stored points, kept on the pool so the data valve needs no extra query."""

    ts = UTCDateTimeAttribute()
    price = DecimalAttribute()
    quality = UnicodeAttribute()
    source = OptionalText()
    sources = NumberAttribute(default=1)


class PoolsByTypeIndex(GlobalSecondaryIndex):
    """Every pool of one instance type in one region (``eu-west-1#m5.large``), by AZ."""

    class Meta:
        index_name = "pools-by-type"
        projection = AllProjection()

    region_type = UnicodeAttribute(hash_key=True)
    az = UnicodeAttribute(range_key=True)


class PoolTable(Model):
    """One spot pool, id ``<type>.<az>`` (components.pool_id)."""

    class Meta(BaseMeta):
        table_name = table_name("pools")

    pool_id = UnicodeAttribute(hash_key=True)
    instance_type = UnicodeAttribute()
    az = UnicodeAttribute()
    region = UnicodeAttribute()
    region_type = UnicodeAttribute()
    latest_price = DecimalAttribute(null=True)
    latest_at = UTCDateTimeAttribute(null=True)
    ondemand_price = DecimalAttribute(null=True)
    # Who set latest_price: "aws" (the spot-prices job, the source of truth) or "agent" (a pricing report).
    price_source = OptionalText()
    # When the spot-prices job last confirmed latest_price; while recent, agent reports do not replace it.
    server_priced_at = UTCDateTimeAttribute(null=True)
    # The client whose agents reported latest_price when price_source is "agent": only that client's
    # decisions use it (market data trust, docs/ARCHITECTURE.md).
    price_client_id = OptionalText()
    recent = ListAttribute(of=RecentPointMap, default=list)
    # {client_id: {"price", "at", "recent": [...]}}: each client's own agents' latest price of a pool the job does
    # not cover (chalicelib/repositories/pools.py ``admit_points``), one entry a client: a tenant's report never
    # replaces another's, and only its own client reads it (``PoolPrice.seen_by``). Text values (exact decimals).
    agent_prices = MapAttribute(null=True)
    # When an agent last stored a price here: an agent-priced pool stays among the pools the jobs walk.
    reported_at = UTCDateTimeAttribute(null=True)
    updated_at = UTCDateTimeAttribute()
    risk = NumberAttribute(null=True)
    risk_at = UTCDateTimeAttribute(null=True)
    risk_source = OptionalText()
    risk_model_version = OptionalText()
    # {client_id: risk}: the pool scored once more with that client's own agents' reports (the risk scorer), read
    # only by that client's placements and views (``PoolPrice.risk_for``); never shown to another tenant.
    client_risk = JSONAttribute(null=True)

    by_type = PoolsByTypeIndex()


class PricePointTable(Model):
    """Price history of a pool; retention by TTL, never by delete-on-insert (legacy defect)."""

    class Meta(BaseMeta):
        table_name = table_name("price-points")

    pool_id = UnicodeAttribute(hash_key=True)
    ts = UTCDateTimeAttribute(range_key=True)
    price = DecimalAttribute()
    quality = UnicodeAttribute(default="actual")
    source_agent_id = OptionalText()
    sources = NumberAttribute(default=1)
    # The reporting client of an agent's point (its interpolated points too): agent prices are that
    # client's only. None with source_agent_id "aws" = the spot-prices job's (everyone's); None otherwise
    # = a point stored before this attribute existed (visible to nobody, like an agent price without client).
    client_id = OptionalText()
    expires_at = TTLAttribute()


class PriceRollupTable(Model):
    """Hourly and daily buckets of a pool's price (chalicelib/jobs/pricing_aggregator.py), per scope.

    ``bucket_key`` = ``<h|d>#<start ISO>#<scope>``: one Query per pool and interval returns a time range
    in order. ``scope`` is ``aws`` (the spot-prices job's prices: everyone's) or ``c:<client_id>`` (one
    client's agent-reported prices: that client's only). Keys are deterministic, so a re-run rewrites the
    same items; each expires by TTL after its interval's retention.
    """

    class Meta(BaseMeta):
        table_name = table_name("price-rollups")

    pool_id = UnicodeAttribute(hash_key=True)
    bucket_key = UnicodeAttribute(range_key=True)
    scope = UnicodeAttribute()
    interval = UnicodeAttribute()  # "hour" | "day"
    start = UTCDateTimeAttribute()
    avg = DecimalAttribute()  # time-weighted over the covered part
    low = DecimalAttribute()
    high = DecimalAttribute()
    last = DecimalAttribute()
    points = NumberAttribute()  # raw points inside the bucket
    covered_s = NumberAttribute()
    filled = BooleanAttribute()  # no raw point of its own: the price was carried forward (gap fill)
    expires_at = TTLAttribute()


class PricingReportTable(Model):
    """Raw pricing reports as the agents sent them (audit and ML features); TTL."""

    class Meta(BaseMeta):
        table_name = table_name("pricing-reports")

    agent_id = UnicodeAttribute(hash_key=True)
    received_at = UTCDateTimeAttribute(range_key=True)
    client_id = UnicodeAttribute()
    instance_id = OptionalText()
    instance_type = OptionalText()
    region = OptionalText()
    az = OptionalText()
    mode = OptionalText()
    pool_id = OptionalText()
    on_demand_price = DecimalAttribute(null=True)
    current_spot_price = DecimalAttribute(null=True)
    cheapest_pool_id = OptionalText()
    cheapest_price = DecimalAttribute(null=True)
    pools_reported = NumberAttribute(default=0)
    pools_stored = NumberAttribute(default=0)
    collected_at = UTCDateTimeAttribute(null=True)
    expires_at = TTLAttribute()
