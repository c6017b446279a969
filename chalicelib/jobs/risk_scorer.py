"""Every 15 minutes: score the interruption risk of the pools agents run or may run on (``pools.priced_page``:
the pools priced in the last day, at most ``RISK_SCORER_MAX_POOLS`` a run, in turns past that) and store it
(pool item + history).

The only function deployed with the scikit-learn layer. It validates newly uploaded model versions,
then scores with the active one; with no active model it stores the evidence estimate
(``components.risk_model.evidence_risk``). Both read the same :class:`PoolEvidence` that training and
the backtest build: the pool's capacity observations (refused/succeeded launches, warnings,
rebalances, AWS stops, instances held, placement scores), its region's, its price history and the
on-demand price — nothing filled with constants.

Each run first records a HELD observation for every scored pool one of our agents' spot instances runs in:
that is the exposure the features count (one per pool and run, naming how many agents ran there, 15
minutes each): the fleet's for the agents of clients whose placements are proven (legacy agent mode off), and a
legacy-mode client's own for its agents (its word only; :func:`record_held`). Past the pool cap a pool is scored
once a round of the walk, so its HELD row counts the round's runs (``lap_runs``), not one: exposure is not
under-counted between turns, which would read as a higher interruption rate.

The fleet's score (on the pool item, and in the history) counts only what the product saw itself; an agent's
report (a refused switch, a launch) is its own client's claim, so a client with reports in a scored pool gets
scores of its own (``client_evidence``: the fleet's evidence plus its reports, for the pools of the (region,
instance type)s it reported on), kept in the pool item's ``client_risk`` and read by that client's placements
only (``PoolPrice.risk_for``).

Nothing here reads the fleet: the pools come from the pools table (its size is the market's) and each pool's
live spot agents are counted per client on the ``live-agents-by-pool`` index (one Query of its keys per pool, and
each of their clients read once a run). The run's work grows with the pools scored and the clients reporting on
them; of the agents only their index keys are read, a page per ~4,000 in a pool (it read every agent twice before:
two scans, ≈ 0.7 ms per agent, past its 300 s timeout at ≈ 100,000 agents; `python -m bench.cost`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from components.capacity import CapacityObservation, ObservationKind
from components.risk_model import (
    DEFAULT_ADVISOR_BAND,
    EVIDENCE_WINDOW_S,
    PoolEvidence,
    evidence_risk,
    feature_vector,
)

from chalicelib import catalogue, model_store
from chalicelib.jobs import pool_walk
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import clients
from chalicelib.repositories import observations
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import price_rollups
from chalicelib.settings import get_settings

PRICE_HISTORY = timedelta(hours=24)
REGION_WINDOW = timedelta(hours=24)
RUN_EVERY_S = 900
# 1 in a run that could not score every priced pool (more than ``RISK_SCORER_MAX_POOLS``): runs take the pools in
# turns, so risk is older than a run (the stage's "RiskPoolCap" alarm, infra/monitoring.py).
POOL_CAP_METRIC = "RiskScorer.poolCapReached"
RISK_WALK = "risk-scorer#pools"  # job-state key of its turns past the cap (chalicelib.jobs.pool_walk)


def record_held(now: datetime, pool_ids: list[str], lap_runs: int | None = None) -> int:
    """One HELD observation per pool of ``pool_ids`` our live spot agents run in, its ``value`` how many
    instance-intervals (agents × the runs since the pool's last turn: one under the cap, a round of the walk
    past it), keyed by pool and run (idempotent); returns the agents counted.

    One row per pool, not per agent: a pool's observations are read newest first and bounded
    (``observations.for_pools``, ``MAX_PER_POOL``), so a row per agent would crowd the pool's refusals and
    warnings out of the back-off's and the evidence's reads once a few dozen agents shared it.

    Only agents whose pool is proven count for the fleet: those of clients with legacy agent mode off (every
    agent of theirs registered with a signed identity document, and a verified heartbeat cannot move it). A
    legacy-mode client's agents are where its word puts them, so their exposure is a HELD row of that client's
    own (``reported``, its own scores only): otherwise registering idle agents "on spot" in a pool would make
    that pool look safe to every tenant."""
    run = int(now.timestamp()) // RUN_EVERY_S
    intervals = lap_runs or 1  # a counted round is at least one run
    proven: dict[str, bool] = {}
    count = 0
    for pool_id in sorted(pool_ids):
        fleet = 0
        for client_id, agents in sorted(agent_repo.live_spot_counts(pool_id).items()):
            if client_id not in proven:
                client = clients.get(client_id)
                proven[client_id] = client is not None and not client.legacy_agents
            if proven[client_id]:
                fleet += agents
            elif _held(pool_id, agents * intervals, now, run, client_id):
                count += agents
        if fleet and _held(pool_id, fleet * intervals, now, run):
            count += fleet
    return count


def _held(pool_id: str, instance_intervals: int, now: datetime, run: int, client_id: str | None = None) -> bool:
    """Record one run's HELD row of the pool: the fleet's, or ``client_id``'s own (its agents' word)."""
    observation = CapacityObservation(pool_id, ObservationKind.HELD, now.timestamp(), value=float(instance_intervals),
                                      source="risk-scorer")
    return observations.record(observation, event_id=f"held-{run}", client_id=client_id,
                               reported=client_id is not None)


def evidence(pool, seen: dict, region_of: dict, now: datetime, prices: dict | None = None, *,
             viewer: str | None = None) -> PoolEvidence:
    """The pool's PoolEvidence from the tables (the same shape ml.features builds from a trace); ``prices`` keeps
    each pool's price history for the run. Its prices are those ``viewer`` may see (``price_rollups.visible_history``):
    the fleet's score (None), which every tenant reads, AWS's only; a client's own score AWS's and its agents'."""
    prices = {} if prices is None else prices
    if (pool.pool_id, viewer) not in prices:
        prices[pool.pool_id, viewer] = price_rollups.visible_history(pool.pool_id, now - PRICE_HISTORY, viewer,
                                                                     pool if isinstance(pool, pool_repo.PoolPrice) else None)
    points = prices[pool.pool_id, viewer]
    region_since = now.timestamp() - REGION_WINDOW.total_seconds()
    neighbours = [o for pid, obs in seen.items() if pid != pool.pool_id and region_of.get(pid) == pool.region
                  for o in obs if o.at >= region_since]
    return PoolEvidence(
        now=now.timestamp(), observations=tuple(seen.get(pool.pool_id, ())),
        region_observations=tuple(sorted(neighbours, key=lambda o: o.at)),
        price_times=tuple(ts.timestamp() for ts, _ in points), prices=tuple(float(price) for _, price in points),
        ondemand_price=catalogue.ondemand_price(pool.instance_type, pool.region) or float("nan"),
        advisor_band=DEFAULT_ADVISOR_BAND)


def client_evidence(pools, seen: dict, reports: dict[str, dict[str, list]], region_of: dict,
                    now: datetime, prices: dict | None = None) -> list[tuple[str, str, PoolEvidence]]:
    """(client, pool, evidence) for each client with reports in this run's pools: the fleet's observations plus
    that client's own agents' reports, for every pool of a (region, instance type) it reported on — the pools its
    agents choose between, whose region features its reports change too. Another client's reports never enter."""
    out = []
    for client, own in sorted(reports.items()):
        groups = {(p.region, p.instance_type) for p in pools if p.pool_id in own}
        regions = {region for region, _ in groups}  # its scores read their regions' observations only
        merged = {pid: sorted([*seen.get(pid, ()), *own.get(pid, ())], key=lambda o: o.at)
                  for pid in set(seen) | set(own) if region_of.get(pid) in regions}
        out += [(client, p.pool_id, evidence(p, merged, region_of, now, prices, viewer=client)) for p in pools
                if (p.region, p.instance_type) in groups]
    return out


def score(evidences: list[PoolEvidence], active, horizon: int) -> list[tuple[float, str, str | None]]:
    """(risk, source, model version) of each evidence: the active model's probability (one batch), else the
    evidence estimate."""
    if not active:
        return [(evidence_risk(ev, horizon), "evidence", None) for ev in evidences]
    if not evidences:
        return []
    version, estimator = active
    rows = [[float("nan") if x is None else float(x) for x in feature_vector(ev)] for ev in evidences]
    return [(float(p), "model", version) for p in estimator.predict_proba(rows)[:, 1]]


@logged_job("risk-scorer")
def run(now: datetime) -> dict:
    """Validate uploads, record exposure, then score every pool (and again per client with its own reports);
    returns counts by source."""
    settings = get_settings()
    horizon, cap = settings.risk_horizon_s, settings.risk_scorer_max_pools
    validated = model_store.validate_uploaded(now)
    active = model_store.active_estimator()
    pools, capped, lap_runs = pool_walk.next_pools(RISK_WALK, now, cap)
    if capped:
        logger.warning("risk scorer pool cap reached: each run scores the next pools, so a pool's risk is refreshed "
                       "less often than every run (raise RISK_SCORER_MAX_POOLS)", extra={"cap": cap})
    held = record_held(now, [p.pool_id for p in pools], lap_runs)
    since, pool_ids = now - timedelta(seconds=EVIDENCE_WINDOW_S), [p.pool_id for p in pools]
    # The fleet's scores, which every tenant sees, count only what the product saw itself; each client's agents'
    # reports (refused switches, launches) count in a score of its own that only its placements read.
    seen = observations.for_pools(pool_ids, since, now, limit=1000, viewer=observations.FLEET)
    reported = observations.reports_by_client(pool_ids, since, now)
    region_of = {p.pool_id: p.region for p in pools}
    prices: dict = {}
    fleet = [evidence(p, seen, region_of, now, prices) for p in pools]
    per_client = client_evidence(pools, seen, reported, region_of, now, prices)
    results = score(fleet + [ev for _, _, ev in per_client], active, horizon)
    scores = [(p.pool_id, *r) for p, r in zip(pools, results)]
    client_scores: dict[str, dict[str, float]] = defaultdict(dict)
    for (client, pool_id, _), (risk, _, _) in zip(per_client, results[len(pools):]):
        client_scores[pool_id][client] = risk
    pool_repo.save_risk(scores, horizon, now, client_scores=client_scores)
    counts = defaultdict(int)
    for _, _, source, _ in scores:
        counts[source] += 1
    result = {"scored": dict(counts), "validated": validated, "model": active[0] if active else None,
              "held": held, "capped": capped, "client_scores": len(per_client)}
    logger.info("risk scores stored", extra=result)
    metrics.add_metric(name="RiskScorer.pools", unit=MetricUnit.Count, value=len(scores))
    metrics.add_metric(name=POOL_CAP_METRIC, unit=MetricUnit.Count, value=int(capped))
    publish_metrics()
    return result
