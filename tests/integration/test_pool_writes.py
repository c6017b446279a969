"""A pool's price writers never put back an older risk score: the spot-prices job (every 10 min) and the risk
scorer (every 15) start together every 30 minutes, and a price write that replaced the whole item it read before
the scorer's update undid that update until the next scoring."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.repositories import pools as pool_repo
from chalicelib.tables.pools import PoolTable
from components.data_valve import PricePoint

pytestmark = pytest.mark.usefixtures("aws_tables")


def _point(pool_id: str, price: str, at: datetime, source: str = pool_repo.SERVER_SOURCE) -> PricePoint:
    return PricePoint(pool_id=pool_id, ts=at, price=Decimal(price), source_agent_id=source)


def _read_before_the_scorer(monkeypatch, pool_id: str) -> None:
    """The writer's BatchGetItem answers the item as it was before the scorer's update."""
    stale = list(PoolTable.batch_get([pool_id]))
    monkeypatch.setattr(PoolTable, "batch_get", classmethod(lambda cls, keys, **kw: iter(stale)))


@pytest.mark.parametrize("writer", ["server", "agent"])
def test_a_price_write_keeps_the_risk_the_scorer_wrote_after_the_read(monkeypatch, writer):
    now = datetime.now(UTC).replace(microsecond=0)
    pool_id = f"m5.w{uuid.uuid4().hex[:8]}xl.eu-west-1a"
    pool_repo.admit_points([_point(pool_id, "0.040", now - timedelta(minutes=20), "ag-1")], now - timedelta(minutes=20),
                           client_id="cl-1")
    _read_before_the_scorer(monkeypatch, pool_id)
    pool_repo.save_risk([(pool_id, 0.42, "model", "v1")], 3600, now, client_scores={pool_id: {"cl-1": 0.5}})

    if writer == "server":
        pool_repo.store_server_prices([_point(pool_id, "0.035", now - timedelta(minutes=1))], now)
    else:
        pool_repo.admit_points([_point(pool_id, "0.035", now - timedelta(minutes=1), "ag-1")], now, client_id="cl-1")

    monkeypatch.undo()
    stored = pool_repo.latest_prices([pool_id])[pool_id].seen_by("cl-1")
    assert stored.price == Decimal("0.035") and (stored.risk, stored.client_risk) == (0.42, {"cl-1": 0.5})
    assert (stored.instance_type, stored.region) == (pool_id.rsplit(".", 1)[0], "eu-west-1")
