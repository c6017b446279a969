"""Every hour: spot placement scores of the pools agents use, recorded as capacity observations.

For each (region, instance type) an agent runs that is due (never asked, or ``PLACEMENT_INTERVAL_S``
since it was), at most ``PLACEMENT_MAX_PER_RUN`` per run, never-asked and longest-unasked first: one
``GetSpotPlacementScores`` (the type, 1 instance, single AZ, the region) through the
:class:`~chalicelib.aws.spot_market.PlacementScores` port; each AZ's score (1..10) becomes a
``PLACEMENT_SCORE`` observation of pool ``<type>.<az>`` (source ``placement-scores``). Why these
limits: AWS caps new configurations per 24 h (see ``AwsPlacementScores``). The right to query a
(region, type) is claimed with a conditional write, so overlapping runs never spend a query twice; the claim holds
for ``market.CLAIM_LEASE`` (5 min), and the run's success or failure sets when it is due again, so a run that died
after its claim leaves the configuration to the next run. That run finishes the claim: its observations are the
claim's, at its time and under its keys (``claimed_at``, kept on the row until a success or failure), so the scores
the run that died recorded are not recorded twice, and those it did not record are (within
``PLACEMENT_INTERVAL_S`` of the claim; an older one is a new claim).
``MaxConfigLimitExceeded`` stops the run and rests that configuration 24 h; another failure is retried
after an hour; an endpoint without the action yields no scores. None of these fails the job.

Observations are written through ``record_observations``, a thin port over
``chalicelib.repositories.observations.record`` (imported lazily: that store lands separately).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from components.capacity import CapacityObservation, InvalidObservationError, ObservationKind
from components.errors import InvalidPoolIdError
from components.pool_id import make_pool_id

from chalicelib import bootstrap
from chalicelib.aws.spot_market import NoPlacementScores, PlacementLimitReached, PlacementScores
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import market
from chalicelib.settings import get_settings

SOURCE = "placement-scores"
LIMIT_REST = timedelta(hours=24)  # AWS: no new configuration "until the next 24-hour period"
RETRY_AFTER = timedelta(hours=1)


def record_observations(observations: list[CapacityObservation], event_id_prefix: str) -> int:
    """Write observations through the observations store; ``event_id`` = ``<prefix>#<pool id>`` (one
    per pool and claim, so a run finishing the claim of one that died records nothing twice). Returns how many
    were handed over; 0 when the store is not deployed yet (logged)."""
    if not observations:
        return 0
    try:
        from chalicelib.repositories.observations import record
    except ImportError:
        logger.warning("observations store not available: placement scores not recorded",
                       extra={"count": len(observations)})
        return 0
    for observation in observations:
        record(observation, event_id=f"{event_id_prefix}#{observation.pool_id}")
    return len(observations)


def _observations(instance_type: str, scores: dict[str, int], at: float) -> list[CapacityObservation]:
    found = []
    for az, score in sorted(scores.items()):
        try:
            found.append(CapacityObservation(make_pool_id(instance_type, az), ObservationKind.PLACEMENT_SCORE,
                                             at, value=float(score), source=SOURCE))
        except (InvalidPoolIdError, InvalidObservationError) as exc:
            logger.warning("placement score skipped", extra={"az": az, "score": score, "error": str(exc)})
    return found


def due(targets: list[tuple[str, str]], now: datetime,
        states: dict[tuple[str, str], market.FetchState] | None = None) -> list[tuple[str, str]]:
    """Targets whose rate-limit window is over: never asked first, then the longest unasked."""
    if states is None:
        states = market.states(market.PLACEMENT, targets) if targets else {}
    ready = [t for t in targets if (s := states.get(t)) is None or s.next_at is None or s.next_at <= now]
    return sorted(ready, key=lambda t: (states[t].last_at.timestamp() if t in states and states[t].last_at
                                        else float("-inf"), t))


@logged_job("placement-scores")
def run(now: datetime, *, source: PlacementScores | None = None,
        targets: list[tuple[str, str]] | None = None) -> dict:
    """One run; returns what it asked and recorded."""
    settings = get_settings()
    source = source or bootstrap.placement_scores()
    result = {"asked": [], "observations": 0, "failed": [], "limited": False, "skipped": 0}
    if isinstance(source, NoPlacementScores):
        logger.info("placement scores off", extra=result)
        return result
    targets = sorted(set(targets if targets is not None else agent_repo.types_in_use()))
    interval = timedelta(seconds=settings.placement_interval_s)
    states = market.states(market.PLACEMENT, targets) if targets else {}
    ready = due(targets, now, states)
    result["skipped"] = len(targets) - len(ready)
    for region, instance_type in ready:
        if len(result["asked"]) >= settings.placement_max_per_run:
            break
        state = states.get((region, instance_type))
        unfinished = state.claimed_at if state is not None else None  # the claim of a run that died
        claimed = unfinished if unfinished is not None and now - interval < unfinished <= now else now
        if not market.claim(market.PLACEMENT, region, instance_type, now, claimed):
            continue  # another run took it
        name = f"{region}#{instance_type}"
        result["asked"].append(name)
        try:
            scores = source.scores(region, instance_type)
            recorded = record_observations(_observations(instance_type, scores, claimed.timestamp()),
                                           f"{SOURCE}:{name}:{claimed.strftime('%Y%m%dT%H%M%SZ')}")
        except PlacementLimitReached as exc:
            market.record_failure(market.PLACEMENT, region, instance_type, now, str(exc), next_at=now + LIMIT_REST)
            result["limited"] = True
            logger.warning("placement score configuration limit reached: run stopped", extra={"target": name})
            break
        except Exception as exc:  # noqa: BLE001 - MarketDataError or the store: one target must not stop the others
            market.record_failure(market.PLACEMENT, region, instance_type, now, f"{type(exc).__name__}: {exc}",
                                  next_at=now + RETRY_AFTER)
            result["failed"].append(name)
            logger.warning("placement scores failed", extra={"target": name, "error": str(exc)})
            continue
        market.record_success(market.PLACEMENT, region, instance_type, now, next_at=now + interval)
        result["observations"] += recorded
    logger.info("placement scores", extra=result)
    metrics.add_metric(name="PlacementScores.asked", unit=MetricUnit.Count, value=len(result["asked"]))
    metrics.add_metric(name="PlacementScores.observations", unit=MetricUnit.Count, value=result["observations"])
    publish_metrics()
    return result
