"""Production and the backtest share the feature code (issue #11): the same observations and prices, fed
to the risk scorer's builder (from the tables, in moto) and to the backtest's ``ours`` builder (from its
observation log and price matrix), give the same feature vector, the same as training's builder."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from bench.backtest.ours import OursPolicy
from chalicelib import catalogue
from chalicelib.jobs import risk_scorer
from chalicelib.repositories import observations
from chalicelib.repositories import pools as pool_repo
from components.capacity import CapacityObservation, ObservationKind
from components.data_valve import PricePoint
from components.risk_model import (
    DEFAULT_ADVISOR_BAND,
    EVIDENCE_WINDOW_S,
    FEATURE_NAMES,
    evidence_hazard,
    feature_vector,
)
from ml.features import _Index, epoch_seconds, evidence_at
from ml.traces import Trace
from tests.conftest import registration

K = ObservationKind
H = 3600.0
REGION = "eu-west-1"
ZONES = "abc"
_types = itertools.count()
ONDEMAND = 0.096
EARLIER = {"a": 0.044, "b": 0.018, "c": 0.050}  # reported 90 min before now
LATEST = {"a": 0.040, "b": 0.020, "c": 0.045}   # reported just before now

# (zone, hours before now, kind, placement score): refusals, warnings, HELD, successes, rebalances, AWS
# stops and placement scores across the 6 h / 24 h / 7 d windows, some exactly on a boundary
OBSERVED = [
    ("a", 150.0, K.LAUNCH_REFUSED, None),
    ("a", 30.0, K.LAUNCH_SUCCEEDED, None),
    *(("a", 30.0 - 0.25 * k, K.HELD, None) for k in range(1, 5)),
    ("a", 28.0, K.INTERRUPTION_WARNING, None),
    ("a", 27.5, K.LAUNCH_REFUSED, None),
    ("a", 5.0, K.LAUNCH_SUCCEEDED, None),
    *(("a", 5.0 - 0.25 * k, K.HELD, None) for k in range(1, 20)),
    ("a", 2.0, K.REBALANCE, None),
    ("b", 3.0, K.LAUNCH_REFUSED, None),
    ("b", 2.5, K.LAUNCH_REFUSED, None),
    ("b", 2.0, K.LAUNCH_SUCCEEDED, None),
    ("b", 1.75, K.HELD, None),
    ("b", 1.5, K.HELD, None),
    ("b", 1.0, K.AWS_STOPPED, None),
    ("b", 0.5, K.PLACEMENT_SCORE, 8.0),
    ("c", 23.9, K.REBALANCE, None),
    ("c", 24.0, K.LAUNCH_REFUSED, None),      # exactly 24 h old: out of the 24 h windows
    ("c", 10.0, K.LAUNCH_SUCCEEDED, None),
    ("c", 9.75, K.HELD, None),
    ("c", 6.0, K.INTERRUPTION_WARNING, None),  # exactly 6 h old: out of the 6 h window
    ("c", 1.0, K.PLACEMENT_SCORE, 2.0),
    ("c", 0.0, K.LAUNCH_REFUSED, None),        # at now
]


def same(a, b) -> bool:
    """Element-wise equal, NaN equal to NaN."""
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def _differences(a, b) -> dict:
    return {name: (x, y) for name, x, y in zip(FEATURE_NAMES, a, b)
            if not (x == y or (math.isnan(x) and math.isnan(y)))}


def _report(caller, agent_id, itype, prices, collected_at=None):
    """An agent's pricing report (as in test_decisions), optionally collected earlier."""
    pricing = {"on_demand_price": ONDEMAND,
               "spot_pools": [{"pool_id": f"{itype}.{REGION}{z}", "price": p} for z, p in prices.items()]}
    if collected_at is not None:
        pricing["collected_at"] = collected_at.isoformat()
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                {"instance": {"instance_type": itype, "region": REGION}, "pricing": pricing})
    assert status == 200, reply


def _market(make_tenant, server_points):
    """An agent on an instance type of its own in eu-west-1 that reported prices of 3 pools 90 min ago
    and now; ``server_points`` = {zone: [(hours before now, price)]} stored as the spot-prices job does;
    the OBSERVED observations recorded. Returns (instance type, now, the recorded observations, the client)."""
    client_id, caller = make_tenant()
    itype = f"m5.{datetime.now().strftime('%H%M%S%f')}{next(_types)}xl"
    status, reply = caller.post("/api/agents/register",
                                registration(instance_type=itype, az=f"{REGION}a", region=REGION))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    _report(caller, agent_id, itype, EARLIER, collected_at=datetime.now(UTC) - timedelta(minutes=90))
    _report(caller, agent_id, itype, LATEST)
    # "now" of the risk-scorer run: a whole second after the reports
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    if server_points:
        pool_repo.store_server_prices(
            [PricePoint(pool_id=f"{itype}.{REGION}{z}", ts=now - timedelta(hours=h), price=Decimal(str(p)),
                        source_agent_id=pool_repo.SERVER_SOURCE)
             for z, points in server_points.items() for h, p in points], datetime.now(UTC))
    recorded = []
    for n, (zone, hours, kind, value) in enumerate(OBSERVED):
        obs = CapacityObservation(f"{itype}.{REGION}{zone}", kind, now.timestamp() - hours * H, value=value,
                                  code="InsufficientInstanceCapacity" if kind is K.LAUNCH_REFUSED else None,
                                  source="parity-test")
        assert observations.record(obs, event_id=f"parity-{itype}-{n}")
        recorded.append(obs)
    return itype, now, recorded, client_id


@pytest.fixture(autouse=True)
def _listed_ondemand(monkeypatch):
    """The scenario's made-up types get ONDEMAND as their AWS list price (the risk scorer's on-demand
    price is the catalogue's: agents cannot set it)."""
    listed = catalogue.ondemand_price
    monkeypatch.setattr(catalogue, "ondemand_price", lambda t, region=None: listed(t, region) or ONDEMAND)


def _production(itype, now, viewer):
    """What the risk scorer builds: its pools, one read of the observations, ``evidence`` per pool, as the reporting
    client's own score sees the prices (its agents' reports and AWS's; the fleet's score reads AWS's only)."""
    pools = sorted(pool_repo.pools_of_type(REGION, itype), key=lambda p: p.pool_id)
    assert [p.pool_id for p in pools] == [f"{itype}.{REGION}{z}" for z in ZONES]
    seen = observations.for_pools([p.pool_id for p in pools], now - timedelta(seconds=EVIDENCE_WINDOW_S), now,
                                  limit=1000)
    region_of = {p.pool_id: p.region for p in pools}
    return pools, {p.pool_id: risk_scorer.evidence(p, seen, region_of, now, viewer=viewer) for p in pools}


def _price_grid(pools, now):
    """Every stored price point of the pools on one time grid (+ now), NaN where a pool has none."""
    points = {p.pool_id: pool_repo.history(p.pool_id, now - timedelta(days=7)) for p in pools}
    stamps = sorted({pt.ts for pts in points.values() for pt in pts} | {now})
    matrix = np.full((len(stamps), len(pools)), np.nan)
    row = {ts: i for i, ts in enumerate(stamps)}
    for j, p in enumerate(pools):
        for pt in points[p.pool_id]:
            matrix[row[pt.ts], j] = float(pt.price)
    return stamps, matrix


def _log(recorded):
    log = defaultdict(list)
    for o in sorted(recorded, key=lambda o: o.at):
        log[o.pool_id].append(o)
    return log


def _backtest(pools, now, recorded, stamps, matrix):
    """What the backtest's ``ours`` builds from its own log and price matrix (production's band and
    on-demand price)."""
    ondemand = {catalogue.ondemand_price(p.instance_type) for p in pools}
    assert len(ondemand) == 1, "one on-demand price per instance type"
    policy = OursPolicy()
    policy.pools = [p.pool_id for p in pools]
    policy.index = {pid: j for j, pid in enumerate(policy.pools)}
    policy.regions = [p.region for p in pools]
    policy.bands = [DEFAULT_ADVISOR_BAND] * len(pools)
    policy.times = np.array([t.timestamp() for t in stamps])
    policy.ondemand = ondemand.pop()
    policy.log = _log(recorded)
    return {pid: policy.evidence(j, now.timestamp(), matrix) for j, pid in enumerate(policy.pools)}


def _training(pools, now, recorded, stamps, matrix):
    """What training builds (``ml.features.evidence_at``) on an equivalent Trace."""
    trace = Trace("parity", list(stamps), [p.pool_id for p in pools], np.ones(matrix.shape, dtype=np.int8),
                  matrix, catalogue.ondemand_price(pools[0].instance_type),
                  advisor_band={p.pool_id: DEFAULT_ADVISOR_BAND for p in pools},
                  regions={p.pool_id: p.region for p in pools})
    index, times = _Index(_log(recorded)), epoch_seconds(trace)
    i = stamps.index(now)
    return {p.pool_id: evidence_at(trace, index, j, i, times) for j, p in enumerate(pools)}


@dataclass
class Built:
    itype: str
    pools: list
    production: dict
    backtest: dict
    training: dict

    def vectors(self, builder: str) -> dict[str, dict[str, float]]:
        """{zone: {feature: value}} of one builder."""
        return {pid.rsplit(REGION, 1)[1]: dict(zip(FEATURE_NAMES, feature_vector(e), strict=True))
                for pid, e in getattr(self, builder).items()}


def _build(make_tenant, server_points) -> Built:
    """The scenario in moto, then the three builders' PoolEvidence of every pool at the same now."""
    itype, now, recorded, client_id = _market(make_tenant, server_points)
    pools, production = _production(itype, now, client_id)
    stamps, matrix = _price_grid(pools, now)
    return Built(itype, pools, production, _backtest(pools, now, recorded, stamps, matrix),
                 _training(pools, now, recorded, stamps, matrix))


def test_production_and_backtest_build_the_same_feature_vectors(make_tenant):
    # GIVEN three pools with agent-reported prices (90 min ago and now), the spot-prices job's price of
    # pool c exactly 24 h ago, and observations of every kind recorded through the observations repository
    # WHEN the risk scorer's builder reads them from the tables, and the backtest's and training's
    # builders get the same observations and price points
    built = _build(make_tenant, {"c": [(24.0, 0.052)]})
    # THEN every pool's feature vector is the same, NaN where one is NaN
    for p in built.pools:
        ours, theirs, trained = (feature_vector(getattr(built, b)[p.pool_id])
                                 for b in ("production", "backtest", "training"))
        assert same(ours, theirs), _differences(ours, theirs)
        assert same(ours, trained), _differences(ours, trained)
        # and so is the evidence fallback (placement scores included)
        assert evidence_hazard(built.production[p.pool_id]) == evidence_hazard(built.backtest[p.pool_id])
        assert evidence_hazard(built.production[p.pool_id]) == evidence_hazard(built.training[p.pool_id])
    # the vectors are not trivially equal: every kind of feature carries a value somewhere
    v = built.vectors("production")
    a, b, c = v["a"], v["b"], v["c"]
    assert (a["negatives_7d"], a["held_hours_7d"], a["rebalances_24h"], a["hours_since_negative"]) == (
        3.0, 5.75, 1.0, 27.5)
    assert (b["negatives_6h"], b["refusals_24h"], b["hours_since_positive"]) == (3.0, 2.0, 1.5)
    assert (c["negatives_6h"], c["negatives_24h"], c["negatives_7d"], c["hours_since_negative"]) == (
        1.0, 2.0, 3.0, 0.0)
    assert c["region_negatives_24h"] == 3.0 and c["region_negative_share_24h"] == pytest.approx(3 / 26)
    assert a["price_to_ondemand"] == pytest.approx(LATEST["a"] / ONDEMAND)
    assert a["price_change_1h"] == pytest.approx(LATEST["a"] / EARLIER["a"] - 1)
    assert c["price_change_24h"] == pytest.approx(LATEST["c"] / 0.052 - 1)
    assert math.isnan(a["price_change_24h"])
    assert {x["advisor_band"] for x in v.values()} == {DEFAULT_ADVISOR_BAND}
    assert evidence_hazard(built.production[f"{built.itype}.{REGION}b"]) > 0


# Pool a's price changed 30 h ago (the spot-prices job stored it), then the agent reported it.
OLD_PRICES = {"a": [(30.0, 0.050)]}


def test_backtest_and_training_read_the_price_in_force_a_day_ago(make_tenant):
    built = _build(make_tenant, OLD_PRICES)
    for p in built.pools:
        trained, theirs = feature_vector(built.training[p.pool_id]), feature_vector(built.backtest[p.pool_id])
        assert same(trained, theirs), _differences(trained, theirs)
    assert built.vectors("backtest")["a"]["price_change_24h"] == pytest.approx(LATEST["a"] / 0.050 - 1)


def test_production_reads_the_price_in_force_a_day_ago_as_the_backtest_does(make_tenant):
    built = _build(make_tenant, OLD_PRICES)
    for p in built.pools:
        ours, theirs = feature_vector(built.production[p.pool_id]), feature_vector(built.backtest[p.pool_id])
        assert same(ours, theirs), (p.pool_id, _differences(ours, theirs))
