"""The risk scorer's work (and the pricing aggregator's) is bounded by the pools, never by the fleet: it scores the
pools priced in the last day (``pools.priced_page``: the pools table, whose size is the market's, in turns past a
cap) and counts each scored pool's live spot agents on the ``live-agents-by-pool`` index (one COUNT Query per
pool). It never scans the agents table (two scans of every agent before: past its 300 s timeout at ≈ 100,000
agents, `python -m bench.cost`)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.jobs import risk_scorer
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.observations import ObservationTable
from chalicelib.tables.pools import PoolTable
from components.risk_model import FEATURE_NAMES
from tests.conftest import dynamodb_calls, registration
from tests.integration.test_instance_types import server_prices

EU = "eu-west-1"


def _register(caller, itype: str, az: str) -> str:
    status, reply = caller.post("/api/agents/register", registration(instance_type=itype, az=az, region=EU))
    assert status == 200, reply
    return reply["agent_id"]


def _held(pool_id: str) -> list[float]:
    return [r.value for r in ObservationTable.query(pool_id, consistent_read=True) if r.kind == "held"]


def test_exposure_is_counted_per_pool_on_the_index_and_no_agent_is_read(make_tenant):
    """GIVEN three live spot agents and an offline one in pool a, a live spot agent and an on-demand one in pool b
    WHEN the risk scorer runs THEN pool a's HELD row names 3 and pool b's 1 (the tenant's own rows: its agents
    registered in legacy mode, on its word), both pools are scored, and the agents table is read only through
    Queries of the live-agents-by-pool index's keys (no Scan, no agent item)."""
    client_id, caller = make_tenant()
    itype = f"r5.s{uuid.uuid4().hex[:8]}xl"
    a, b = f"{itype}.{EU}a", f"{itype}.{EU}b"
    in_a = [_register(caller, itype, f"{EU}a") for _ in range(4)]
    in_b = [_register(caller, itype, f"{EU}b") for _ in range(2)]
    AgentTable(client_id, in_a[3]).update(actions=[AgentTable.status.set("offline"), AgentTable.liveness.remove()])
    AgentTable(client_id, in_b[1]).update(actions=[AgentTable.current_mode.set("on-demand")])
    now = datetime.now(timezone.utc)
    server_prices({a: 0.040, b: 0.030}, now)

    with dynamodb_calls() as calls:
        result = risk_scorer.run(now)

    assert _held(a) == [3] and _held(b) == [1]
    assert result["held"] >= 4 and PoolTable.get(a).risk_at is not None and PoolTable.get(b).risk_at is not None
    on_agents = [c for c in calls if c[1] == AgentTable.Meta.table_name]
    assert on_agents, "the exposure comes from the agents' index"
    assert {(op, index, select) for op, _, index, select in on_agents} == {("Query", "live-agents-by-pool", None)}


def test_only_pools_priced_in_the_last_day_are_scored(make_tenant):
    """GIVEN an agent's type with a pool priced now and one whose last price is two days old WHEN the risk scorer
    runs THEN the fresh pool is scored and the stale one is not (nobody runs or may run on it any more)."""
    _, caller = make_tenant()
    itype = f"r5.p{uuid.uuid4().hex[:8]}xl"
    fresh, stale = f"{itype}.{EU}a", f"{itype}.{EU}c"
    _register(caller, itype, f"{EU}a")
    now = datetime.now(timezone.utc)
    server_prices({fresh: 0.040, stale: 0.050}, now)
    PoolTable(stale).update(actions=[PoolTable.latest_at.set(now - timedelta(days=2))])

    risk_scorer.run(now)

    assert PoolTable.get(fresh).risk_at is not None
    assert PoolTable.get(stale).risk_at is None


def test_the_pricing_aggregator_rolls_up_priced_pools_without_reading_an_agent(make_tenant):
    """GIVEN an agent's pool priced now WHEN the pricing aggregator runs over its default pools THEN that pool is
    among them and the agents table is not read at all (it scanned every agent for their types before)."""
    from chalicelib.jobs import pricing_aggregator

    _, caller = make_tenant()
    itype = f"r5.g{uuid.uuid4().hex[:8]}xl"
    _register(caller, itype, f"{EU}a")
    now = datetime.now(timezone.utc)
    server_prices({f"{itype}.{EU}a": 0.040}, now)

    with dynamodb_calls() as calls:
        result = pricing_aggregator.run(now)

    assert result["pools"] >= 1 and not result["failed"]
    assert not [c for c in calls if c[1] == AgentTable.Meta.table_name]


def test_a_run_at_its_pool_cap_says_so_in_its_result_log_and_alarm_metric(make_tenant, monkeypatch):
    """GIVEN more priced pools than RISK_SCORER_MAX_POOLS WHEN the risk scorer runs THEN it scores the cap's worth,
    returns ``capped`` and publishes 1 on the metric the stage's RiskPoolCap alarm watches (0 when under the cap)."""
    import dataclasses

    from chalicelib import observability
    from chalicelib.settings import get_settings

    _, caller = make_tenant()
    itype = f"r5.c{uuid.uuid4().hex[:8]}xl"
    _register(caller, itype, f"{EU}a")
    now = datetime.now(timezone.utc)
    server_prices({f"{itype}.{EU}a": 0.040, f"{itype}.{EU}b": 0.030}, now)
    documents = []
    monkeypatch.setattr(observability.metrics, "flush_metrics",
                        lambda *a, **k: documents.append(observability.metrics.serialize_metric_set()))
    observability.metrics.clear_metrics()

    monkeypatch.setattr(risk_scorer, "get_settings", lambda: dataclasses.replace(get_settings(), risk_scorer_max_pools=1))
    capped = risk_scorer.run(now)
    monkeypatch.setattr(risk_scorer, "get_settings", lambda: dataclasses.replace(get_settings(),
                                                                                  risk_scorer_max_pools=10**6))
    whole = risk_scorer.run(now)

    assert capped["capped"] is True and sum(capped["scored"].values()) == 1
    assert whole["capped"] is False and sum(whole["scored"].values()) >= 2
    assert [d[risk_scorer.POOL_CAP_METRIC] for d in documents] == [[1.0], [0.0]]


def _own_pools(make_tenant, monkeypatch, zones: str) -> tuple[datetime, list[str]]:
    """A client's agent on a fresh type priced in ``zones``; the pools table's scan, as the scorer's pager sees it,
    holds only these pools, in ``zones`` order (the shared table has every other test's pools too)."""
    from chalicelib.repositories import pools as pool_repo

    from chalicelib.repositories import clients

    client_id, caller = make_tenant()
    itype = f"r5.{zones}{uuid.uuid4().hex[:8]}xl"
    _register(caller, itype, f"{EU}a")
    clients.set_legacy_agents(client_id, False)  # its agent counts for the fleet's exposure, as a verified one does
    now = datetime.now(timezone.utc)
    ids = [f"{itype}.{EU}{z}" for z in zones]
    server_prices({pid: 0.04 for pid in ids}, now)
    mine = {p.pool_id: p for p in pool_repo.priced_page(now, 10**6).pools if p.pool_id in ids}

    def page(now, cap, after=None):
        rest = [mine[pid] for pid in ids[ids.index(after) + 1 if after else 0:]]
        return pool_repo.PricedPage(rest[:cap], rest[cap - 1].pool_id if len(rest) > cap else None)

    monkeypatch.setattr(pool_repo, "priced_page", page)
    return now, ids


def _cap(monkeypatch, pools: int) -> None:
    import dataclasses

    from chalicelib.settings import get_settings

    monkeypatch.setattr(risk_scorer, "get_settings",
                        lambda: dataclasses.replace(get_settings(), risk_scorer_max_pools=pools))


def test_exactly_the_cap_is_not_past_it(make_tenant, monkeypatch):
    """GIVEN exactly RISK_SCORER_MAX_POOLS priced pools THEN every one is scored and the run is not ``capped``; one
    more and it is (a page reads one pool past the cap to tell the two apart)."""
    from chalicelib.repositories import job_state

    now, _ = _own_pools(make_tenant, monkeypatch, "abc")
    _cap(monkeypatch, 3)
    exact = risk_scorer.run(now)
    _cap(monkeypatch, 2)
    past = risk_scorer.run(now)
    job_state.set_position(risk_scorer.RISK_WALK, {}, now)

    assert exact["capped"] is False and sum(exact["scored"].values()) == 3
    assert past["capped"] is True and sum(past["scored"].values()) == 2


def test_pages_of_priced_pools_cover_each_pool_once_and_say_where_the_table_ends(make_tenant):
    """GIVEN priced pools WHEN they are read in pages of a small cap, each resuming after the last THEN every pool
    comes exactly once and the last page says the scan reached the end."""
    from chalicelib.repositories import pools as pool_repo

    itype = f"r5.p{uuid.uuid4().hex[:8]}xl"
    now = datetime.now(timezone.utc)
    server_prices({f"{itype}.{EU}{z}": 0.04 for z in "abc"}, now)
    everything = {p.pool_id for p in pool_repo.priced_page(now, 10**6).pools}
    seen, after, pages = [], None, 0
    while True:
        page = pool_repo.priced_page(now, 2, after=after)
        pages += 1
        assert len(page.pools) <= 2 and [p.pool_id for p in page.pools] == sorted(p.pool_id for p in page.pools)
        seen += [p.pool_id for p in page.pools]
        if page.resume_after is None:
            break
        assert len(page.pools) == 2
        after = page.resume_after
    assert sorted(seen) == sorted(everything) and len(seen) == len(set(seen))
    assert pages == -(-len(everything) // 2)
    assert {f"{itype}.{EU}{z}" for z in "abc"} <= set(seen)


def test_past_its_cap_the_scorer_takes_the_pools_in_turns(make_tenant, monkeypatch):
    """GIVEN more priced pools than the cap WHEN the scorer runs again and again THEN each run scores the next pools
    (resuming after the last run's), every pool is scored within ⌈pools / cap⌉ runs, and the walk starts over; a
    capped run says so (before this, the same first ``cap`` pools were scored every run and the rest never)."""
    from chalicelib.repositories import job_state
    from chalicelib.repositories import pools as pool_repo

    now, ids = _own_pools(make_tenant, monkeypatch, "abcde")
    _cap(monkeypatch, 2)
    job_state.set_position(risk_scorer.RISK_WALK, {}, now)
    scored, flags = [], []
    real_save = pool_repo.save_risk
    monkeypatch.setattr(pool_repo, "save_risk", lambda scores, *a, **k: (scored.append([s[0] for s in scores]),
                                                                          real_save(scores, *a, **k)))
    for _ in range(4):
        flags.append(risk_scorer.run(now)["capped"])
    # the third run reaches the end after one pool and goes on from the start with the room left
    assert scored == [ids[0:2], ids[2:4], [ids[0], ids[4]], ids[1:3]]
    assert flags == [True, True, True, True]
    _cap(monkeypatch, 9)
    assert risk_scorer.run(now)["capped"] is False and scored[-1] == sorted(ids)  # resumed, went round: all of them
    job_state.set_position(risk_scorer.RISK_WALK, {}, now)


def test_the_aggregator_and_the_cleaner_take_the_pools_in_turns_too(make_tenant, monkeypatch):
    """GIVEN more priced pools than PRICE_ROLLUP_MAX_POOLS WHEN the pricing aggregator runs again and again THEN
    each run rolls up the next pools and says it is capped; the data cleaner's raw-point sweep keeps a position of
    its own (before, both took the same first pools every run: the rest never rolled up nor cleaned)."""
    import dataclasses

    from chalicelib import observability
    from chalicelib.jobs import data_cleaner, pool_walk, pricing_aggregator
    from chalicelib.repositories import job_state
    from chalicelib.settings import get_settings

    now, ids = _own_pools(make_tenant, monkeypatch, "abcde")
    for key in (pricing_aggregator.ROLLUP_WALK, data_cleaner.RAW_POINTS_WALK):
        job_state.set_position(key, {}, now)
    monkeypatch.setattr(pricing_aggregator, "get_settings",
                        lambda: dataclasses.replace(get_settings(), price_rollup_max_pools=2))
    rolled, documents = [], []
    monkeypatch.setattr(pricing_aggregator, "aggregate_pool", lambda pool, previous, now: (
        rolled.append(pool.pool_id), {"hours_written": 0, "days_written": 0, "deleted": 0})[1])
    monkeypatch.setattr(observability.metrics, "flush_metrics",
                        lambda *a, **k: documents.append(observability.metrics.serialize_metric_set()))
    observability.metrics.clear_metrics()

    results = [pricing_aggregator.run(now) for _ in range(3)]

    assert rolled == [*ids[0:2], *ids[2:4], ids[0], ids[4]]
    assert [r["capped"] for r in results] == [True, True, True] and [r["pools"] for r in results] == [2, 2, 2]
    assert [d[pricing_aggregator.POOL_CAP_METRIC] for d in documents] == [[1.0]] * 3  # the PriceRollupPoolCap alarm's
    cleaned, capped, _ = pool_walk.next_pools(data_cleaner.RAW_POINTS_WALK, now, 2)
    assert [p.pool_id for p in cleaned] == ids[0:2] and capped  # its own walk, from the first pool
    for key in (pricing_aggregator.ROLLUP_WALK, data_cleaner.RAW_POINTS_WALK):
        job_state.set_position(key, {}, now)


def test_under_the_cap_a_walk_writes_no_position(make_tenant, monkeypatch):
    """GIVEN fewer priced pools than the cap and no saved position WHEN a job takes its pools THEN it gets them all,
    is not capped, and writes nothing to job-state (every run of every deployment under its caps)."""
    from chalicelib.jobs import pool_walk
    from chalicelib.repositories import job_state

    now, ids = _own_pools(make_tenant, monkeypatch, "abc")
    job_state.set_position("test#pools", {}, now)
    writes = []
    monkeypatch.setattr(job_state, "set_position", lambda *a: writes.append(a))
    pools, capped, _ = pool_walk.next_pools("test#pools", now, 9)
    assert [p.pool_id for p in pools] == ids and not capped and writes == []


def test_past_its_cap_a_pools_exposure_counts_the_whole_round_between_its_turns(make_tenant, monkeypatch):
    """GIVEN four priced pools, a cap of two and a live spot agent in the first pool WHEN the scorer runs every
    15 minutes THEN, once the walk has counted a round (two runs: the pool is scored every other run), the pool's
    HELD row counts two 15-minute intervals, not one (one a turn under-counted its exposure by the rounds' length,
    which reads as a higher interruption rate); before a round is counted it counts one, as under the cap."""
    from chalicelib.repositories import job_state

    now, ids = _own_pools(make_tenant, monkeypatch, "abcd")
    _cap(monkeypatch, 2)
    job_state.set_position(risk_scorer.RISK_WALK, {}, now)
    results = [risk_scorer.run(now + timedelta(seconds=900 * k)) for k in range(5)]

    assert [r["capped"] for r in results] == [True] * 5
    assert _held(ids[0]) == [1, 1, 2]  # runs 1, 3, 5: not counted, not counted (one going round), two runs
    assert job_state.position(risk_scorer.RISK_WALK)["lap_runs"] == 2
    later = now + timedelta(days=3)  # a paused schedule credits no exposure (as under the cap): runs, not time
    for k in range(2):
        risk_scorer.run(later + timedelta(seconds=900 * k))
    assert _held(ids[0]) == [1, 1, 2, 2]
    _cap(monkeypatch, 9)
    assert risk_scorer.run(later + timedelta(seconds=1800))["capped"] is False
    assert job_state.position(risk_scorer.RISK_WALK) == {}  # back under the cap: nothing kept


class _RefusalsModel:
    """An estimator whose probability is a tenth of the ``refusals_24h`` feature: which evidence each score read."""

    def predict_proba(self, rows):
        import numpy as np

        column = FEATURE_NAMES.index("refusals_24h")
        p = np.array([min(1.0, row[column] / 10) for row in rows])
        return np.column_stack([1 - p, p])


def test_with_a_model_each_client_score_is_its_own_evidence_and_the_fleets_none(make_tenant, monkeypatch):
    """GIVEN the active model, the product's own refusal in pool a, client c1's two reported refusals in a and
    client c2's one in another type's pool
    WHEN the scorer runs (one batch for the fleet's and the clients' rows)
    THEN a's fleet score counts the product's refusal only, c1's scores (a and its sibling b, same type and region)
    count its reports as well, c2's reports reach no pool of this type, and nobody's reach the fleet's scores."""
    from chalicelib.repositories import observations
    from chalicelib.repositories import pools as pool_repo
    from components.capacity import CapacityObservation, ObservationKind

    now, (a, b) = _own_pools(make_tenant, monkeypatch, "ab")
    other = f"c5.x{uuid.uuid4().hex[:8]}xl.{EU}a"

    def refused(pool_id, minutes):
        return CapacityObservation(pool_id, ObservationKind.LAUNCH_REFUSED, (now - timedelta(minutes=minutes)).timestamp(),
                                   code="InsufficientInstanceCapacity", source="test")

    observations.record(refused(a, 30), event_id="replica:own")
    for k in (1, 2):
        observations.record(refused(a, 20 + k), event_id=f"cmd:c1:{k}", client_id="c1", reported=True)
    observations.record(refused(other, 5), event_id="cmd:c2", client_id="c2", reported=True)
    monkeypatch.setattr(risk_scorer.model_store, "active_estimator", lambda: ("fake", _RefusalsModel()))

    result = risk_scorer.run(now)

    stored = pool_repo.latest_prices([a, b])
    assert result["scored"] == {"model": 2} and result["client_scores"] == 2
    assert (stored[a].risk, stored[b].risk) == (pytest.approx(0.1), 0.0)
    assert stored[a].client_risk == {"c1": pytest.approx(0.3)} and stored[b].client_risk == {"c1": 0.0}
    assert stored[a].risk_for("c1") == pytest.approx(0.3) and stored[a].risk_for("c2") == pytest.approx(0.1)
    assert stored[a].risk_source == "model"


def test_a_clients_scores_read_the_observations_of_its_own_regions_only(monkeypatch):
    """GIVEN a run's pools in two regions, the fleet's observations in each, and a client with a report in one region
    WHEN its scores' evidence is built THEN only that region's pools' observations are merged with its reports (its
    scores read no other region's): the work per reporting client grows with its regions' observations, not with
    every scored pool's (a copy and sort of the whole run's evidence per client before)."""
    from types import SimpleNamespace

    from components.capacity import CapacityObservation, ObservationKind

    now = datetime.now(timezone.utc)
    pools = [SimpleNamespace(pool_id=f"m5.large.{az}", region=az[:-1], instance_type="m5.large")
             for az in ("eu-west-1a", "eu-west-1b", "us-east-1a", "us-east-1b")]

    def held(pool_id):
        return [CapacityObservation(pool_id, ObservationKind.HELD, now.timestamp() - 900, value=1.0)]

    read = set()

    class Watched(dict):
        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

    seen = Watched({p.pool_id: held(p.pool_id) for p in pools})
    own = {"c1": {"m5.large.eu-west-1a": [CapacityObservation("m5.large.eu-west-1a", ObservationKind.LAUNCH_REFUSED,
                                                              now.timestamp() - 60)]}}
    monkeypatch.setattr(risk_scorer.catalogue, "ondemand_price", lambda t, region=None: 0.096)

    out = risk_scorer.client_evidence(pools, seen, own, {p.pool_id: p.region for p in pools}, now,
                                      {p.pool_id: [] for p in pools})

    assert [(c, pid) for c, pid, _ in out] == [("c1", "m5.large.eu-west-1a"), ("c1", "m5.large.eu-west-1b")]
    assert len(out[0][2].observations) == 2 and len(out[1][2].region_observations) == 2
    assert read and not [pid for pid in read if "us-east-1" in pid], read
