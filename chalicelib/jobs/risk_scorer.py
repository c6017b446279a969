"""Every 15 minutes: score every known pool's interruption risk and store it (pool item + history).

The only function deployed with the scikit-learn layer. It validates newly uploaded model versions,
then scores with the active one; with no active model it stores the documented Spot Advisor prior.
Features come from components.risk_model — the same code that built the training set.

What production knows of a pool today is its price history; capacity observations (interruption
warnings per pool) join the features once the sentinel records them, until then a pool that reports
prices counts as available.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from components.risk_model import DEFAULT_ADVISOR_BAND, PoolHistory, advisor_prior, feature_vector

from chalicelib import model_store
from chalicelib.observability import MetricUnit, logger, metrics, publish_metrics
from chalicelib.repositories import pools as pool_repo
from chalicelib.settings import get_settings

HISTORY = timedelta(hours=24)


def _history(pool, now: datetime) -> PoolHistory | None:
    points = pool_repo.history(pool.pool_id, now - HISTORY)
    if not points or pool.ondemand_price is None:
        return None
    return PoolHistory(times=[p.ts.timestamp() for p in points], available=[1] * len(points),
                       prices=[float(p.price) for p in points],
                       region_available_fraction=[1.0] * len(points),
                       ondemand_price=float(pool.ondemand_price), advisor_band=DEFAULT_ADVISOR_BAND)


def run(now: datetime) -> dict:
    """Validate uploads, then score every pool; returns counts by source."""
    logger.append_keys(job="risk-scorer")
    horizon = get_settings().risk_horizon_s
    validated = model_store.validate_uploaded(now)
    active = model_store.active_estimator()
    prior = advisor_prior(DEFAULT_ADVISOR_BAND, horizon)
    scores, vectors, counts = [], [], defaultdict(int)
    for pool in pool_repo.all_pools():
        history = _history(pool, now) if active else None
        if history is None:
            scores.append((pool.pool_id, prior, "prior", None))
        else:
            vectors.append((pool.pool_id, feature_vector(history)))
    if active and vectors:
        version, estimator = active
        rows = [[float("nan") if x is None else float(x) for x in v] for _, v in vectors]
        probabilities = estimator.predict_proba(rows)[:, 1]
        scores += [(pid, float(p), "model", version) for (pid, _), p in zip(vectors, probabilities)]
    pool_repo.save_risk(scores, horizon, now)
    for _, _, source, _ in scores:
        counts[source] += 1
    result = {"scored": dict(counts), "validated": validated, "model": active[0] if active else None}
    logger.info("risk scores stored", extra=result)
    metrics.add_metric(name="RiskScorer.pools", unit=MetricUnit.Count, value=len(scores))
    publish_metrics()
    return result
