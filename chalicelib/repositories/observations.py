"""Capacity observations (``components.capacity``) in the observations table, and the back-off
they imply.

Writers: the failover and the replica coordinator (their own launches; the coordinator also a standby
EC2 took away unnoticed), the agents' command results and switch reports, the sentinel (warnings,
rebalance recommendations, AWS-initiated stops). Readers:
the failover planner and the coordinator (pools in back-off are skipped), the decision cycle
(``backoff``). Every write is a conditional put of a key derived from the source event, so a
redelivery writes nothing new; a failed write is logged and never fails the caller's operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pynamodb.exceptions import PutError, PynamoDBException

from components.capacity import DEFAULT_BACKOFF, CapacityObservation, ObservationKind

from chalicelib import clock
from chalicelib.observability import logger
from chalicelib.repositories.dynamo import condition_failed
from chalicelib.settings import get_settings
from chalicelib.tables.observations import ObservationTable

KEY_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
# The longest back-off window is DEFAULT_BACKOFF.max_s (6 h), reached after 7 refusals in a row at
# most a few hours apart; a week of history holds every streak that can still be open.
BACKOFF_LOOKBACK = timedelta(days=7)
MAX_PER_POOL = 200  # newest observations read per pool and query: bounded reads however busy a pool is
# Clients with reports in a pool scored with their own (``reports_by_client``): bounds the scorer's reads. A pool
# item's ``client_risk`` also holds the clients scored for a sibling pool (same region and type, at most 32), so
# at most 32 × 50 entries of ≈ 45 bytes: far from DynamoDB's 400 KB item limit.
MAX_CLIENTS_PER_POOL = 50
# ``viewer`` of a fleet-wide reader (the risk scorer): no client's reports, only what the product saw itself.
FLEET = ""
# An agent's report sorts under ``R#<client>#`` in its pool's partition, after every time key ("2…" < "R"): the
# fleet's time range never reads one, and a client flooding reports pushes out only its own (``MAX_PER_POOL``).
_REPORTED = "R#"
_PAST_PREFIX = chr(ord("#") + 1)  # "R#c$" sorts after every "R#c#…" key and before the next client's


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def observation_key(at: datetime, kind: ObservationKind | str, event_id: str) -> str:
    """Sort key ``<iso time>#<kind>#<id>``: a pool's observations in time order."""
    kind = kind.value if isinstance(kind, ObservationKind) else kind
    return f"{at.astimezone(UTC).strftime(KEY_TIME)}#{kind}#{event_id}"


def reported_prefix(client_id: str) -> str:
    """The sort-key prefix of ``client_id``'s agents' reports (``record(reported=True)``)."""
    return f"{_REPORTED}{client_id}#"


def at_of(when: datetime) -> float:
    """Epoch seconds of an aware datetime (``CapacityObservation.at``)."""
    return when.timestamp()


def record(obs: CapacityObservation, *, event_id: str, client_id: str | None = None,
           agent_id: str | None = None, instance_id: str | None = None, reported: bool = False) -> bool:
    """Store one observation once; True when written, False when it was already there or the write
    failed (logged: recording what we saw never fails the operation that saw it).

    ``reported``: an agent's claim (a command result, a switch report), not something the product saw: it
    counts for ``client_id``'s placements only (``for_pools``' ``viewer``), as an agent's price does, so one
    tenant cannot put pools in back-off (or out of it) for the others, nor raise the fleet's risk scores.

    ``event_id`` must come from the source event (EventBridge id, command id, replica id ...) and
    ``obs.at`` from the event or a set-once timestamp, so a redelivery writes the same key again.
    """
    at = _utc(obs.at)
    now = clock.now()
    key = observation_key(at, obs.kind, event_id)
    row = ObservationTable(
        obs.pool_id, reported_prefix(client_id or "") + key if reported else key, kind=obs.kind.value, at=at,
        value=obs.value, code=obs.code, source=obs.source or "unknown", event_id=event_id,
        client_id=client_id, agent_id=agent_id, instance_id=instance_id, recorded_at=now,
        reported_by=client_id if reported else None,
        expires_at=at + timedelta(days=get_settings().observation_retention_days))
    try:
        row.save(condition=ObservationTable.observation_key.does_not_exist())
    except PutError as exc:
        if condition_failed(exc):
            return False  # a redelivery of the same source event
        logger.warning("capacity observation not recorded", extra=_context(obs, event_id, exc))
        return False
    except (PynamoDBException, OSError) as exc:
        logger.warning("capacity observation not recorded", extra=_context(obs, event_id, exc))
        return False
    logger.info("capacity observation", extra={"pool_id": obs.pool_id, "kind": obs.kind.value,
                                               "code": obs.code, "source": obs.source, "event_id": event_id})
    return True


def _context(obs: CapacityObservation, event_id: str, exc: BaseException) -> dict:
    return {"pool_id": obs.pool_id, "kind": obs.kind.value, "event_id": event_id, "error": str(exc)}


def _observation(row: ObservationTable) -> CapacityObservation:
    return CapacityObservation(pool_id=row.pool_id, kind=ObservationKind(row.kind), at=row.at.timestamp(),
                               value=None if row.value is None else float(row.value), code=row.code,
                               source=row.source)


def for_pools(pool_ids: Iterable[str], since: datetime, until: datetime | None = None, *,
              limit: int = MAX_PER_POOL, viewer: str | None = None) -> dict[str, list[CapacityObservation]]:
    """Each pool's observations in ``[since, until]``, oldest first: at most the newest ``limit`` of what the
    product saw (one Query per pool) and, for a client ``viewer``, the newest ``limit`` of its own agents' reports
    (one more). Pools without any are present with an empty list.

    ``viewer``: the client whose placement reads them (its own agents' reports count, other clients' do not),
    ``FLEET`` for a fleet-wide reader (no reports at all), None for every row (tests, diagnostics: every
    client's reports too, read whole)."""
    lower = since.astimezone(UTC).strftime(KEY_TIME)
    upper = (until.astimezone(UTC).strftime(KEY_TIME) if until else "9999") + "#~"  # '~' sorts after kinds
    out: dict[str, list[CapacityObservation]] = {}
    for pool_id in dict.fromkeys(p for p in pool_ids if p):
        rows = _newest(pool_id, lower, upper, limit)
        if viewer is None:
            rows += [r for r in ObservationTable.query(pool_id, ObservationTable.observation_key.startswith(_REPORTED))
                     if since <= r.at and (until is None or r.at <= until)]
        elif viewer != FLEET:
            prefix = reported_prefix(viewer)
            # an agent's report of a signal AWS also sent (the same event) is counted once
            fleet = {(r.event_id, r.kind) for r in rows}
            rows += [r for r in _newest(pool_id, prefix + lower, prefix + upper, limit)
                     if (r.event_id, r.kind) not in fleet]
        out[pool_id] = [_observation(r) for r in sorted(rows, key=lambda r: (r.at, r.observation_key))]
    return out


def reports_by_client(pool_ids: Iterable[str], since: datetime, until: datetime, *, limit: int = MAX_PER_POOL,
                      clients: int = MAX_CLIENTS_PER_POOL) -> dict[str, dict[str, list[CapacityObservation]]]:
    """The clients' agents' reports on ``pool_ids`` in ``[since, until]``: ``{client_id: {pool_id: [...]}}``,
    oldest first, at most the newest ``limit`` per client and pool, and at most ``clients`` clients per pool (the
    first by id: past that, a pool's other reporting clients read the fleet's score; logged); clients and pools
    without any are absent.

    For the risk scorer's per-client scores. The reporting clients of a pool are found by a skip scan of its
    ``R#<client>#`` keys (one one-row Query per client, then one bounded read of its window), so the work grows
    with the clients that reported there, never with how many reports one of them sent."""
    lower = since.astimezone(UTC).strftime(KEY_TIME)
    upper = until.astimezone(UTC).strftime(KEY_TIME) + "#~"
    out: dict[str, dict[str, list[CapacityObservation]]] = {}
    for pool_id in dict.fromkeys(p for p in pool_ids if p):
        after, found = _REPORTED, 0
        while True:
            first = next(iter(ObservationTable.query(
                pool_id, ObservationTable.observation_key.between(after, _REPORTED[:-1] + _PAST_PREFIX), limit=1)),
                None)
            if first is None:
                break
            if found == clients:
                logger.warning("more clients reported on a pool than get scores of their own",
                               extra={"pool_id": pool_id, "clients": clients})
                break
            client = first.reported_by or ""  # record(reported=True) without a client: "R##…", nobody's
            prefix = reported_prefix(client)
            rows = _newest(pool_id, prefix + lower, prefix + upper, limit) if client else []
            if rows:
                found += 1
                out.setdefault(client, {})[pool_id] = [
                    _observation(r) for r in sorted(rows, key=lambda r: (r.at, r.observation_key))]
            after = prefix[:-1] + _PAST_PREFIX  # the first key past every one of this client's
    return out


def _newest(pool_id: str, lower: str, upper: str, limit: int) -> list[ObservationTable]:
    return list(ObservationTable.query(pool_id, ObservationTable.observation_key.between(lower, upper),
                                       scan_index_forward=False, limit=limit))


def backoff(pool_ids: Iterable[str], now: datetime, *, viewer: str | None = None) -> dict[str, datetime]:
    """Pools in capacity back-off at ``now`` for ``viewer``'s placements (``for_pools``), each with the time it
    may be tried again.

    The decision cycle, the failover planner and the coordinator skip these pools (``DEFAULT_BACKOFF``, one
    policy for every placement). A read failure blocks nothing (logged): back-off is an
    optimisation, never a reason to refuse a launch.
    """
    try:
        history = for_pools(pool_ids, now - BACKOFF_LOOKBACK, now, viewer=viewer)
    except (PynamoDBException, OSError) as exc:
        logger.warning("capacity back-off not read", extra={"error": str(exc)})
        return {}
    return {pool_id: _utc(end) for pool_id, end in DEFAULT_BACKOFF.blocked(history, at_of(now)).items()}
