"""pynamodb tables: the single source of truth for every DynamoDB table of the product.

``ALL_TABLES`` is what local mode, the tests and infra/ create tables from.
"""

from chalicelib.tables.agents import AgentTable
from chalicelib.tables.clients import ClientLookupTable, ClientTable
from chalicelib.tables.commands import CommandTable
from chalicelib.tables.idempotency import IdempotencyTable
from chalicelib.tables.instances import LIVE_INSTANCES, InstanceTable
from chalicelib.tables.interruptions import InterruptionTable, SignalClaimTable
from chalicelib.tables.market import MarketFetchTable
from chalicelib.tables.notifications import UNREAD_NOTIFICATIONS, NotificationTable
from chalicelib.tables.observations import ObservationTable
from chalicelib.tables.jobs import JobStateTable
from chalicelib.tables.pools import PoolTable, PricePointTable, PriceRollupTable, PricingReportTable
from chalicelib.tables.rate_limits import RateLimitTable
from chalicelib.tables.replicas import OPEN_REPLICAS, ReplicaTable
from chalicelib.tables.risk import DecisionTable, ModelRegistryTable, RiskScoreTable
from chalicelib.tables.savings import SavingsTable
from chalicelib.tables.switches import SwitchTable
from chalicelib.tables.system_events import SystemEventTable

ALL_TABLES = (
    ClientTable,
    ClientLookupTable,
    AgentTable,
    InstanceTable,
    PoolTable,
    PricePointTable,
    PricingReportTable,
    PriceRollupTable,
    MarketFetchTable,
    JobStateTable,
    CommandTable,
    SwitchTable,
    ReplicaTable,
    InterruptionTable,
    SignalClaimTable,
    NotificationTable,
    SystemEventTable,
    RiskScoreTable,
    ObservationTable,
    DecisionTable,
    ModelRegistryTable,
    IdempotencyTable,
    RateLimitTable,
    SavingsTable,
)

# Sparse indexes (``chalicelib.tables.base.SparseIndex``): the cleanup job backfills them on a stage created before
# they existed; a table created with them (``provisioning.ensure_tables``) needs no backfill.
SPARSE_INDEXES = (LIVE_INSTANCES, UNREAD_NOTIFICATIONS, OPEN_REPLICAS)

# Counters every authenticated request writes (the rate limit counts bad requests too), so the
# "nothing written on a 4xx" checks leave them out.
METERING_TABLES = (RateLimitTable,)

__all__ = [t.__name__ for t in ALL_TABLES] + ["ALL_TABLES", "METERING_TABLES", "SPARSE_INDEXES"]
