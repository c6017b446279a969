"""Agent health from the age of its last heartbeat and last pricing report."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from components.sentinel.model import HealthReport, HealthState, HealthThresholds
from components.timeutil import ensure_aware, to_utc

__all__ = [
    "CONTINUE_MONITORING",
    "INVESTIGATE_IMMEDIATELY",
    "MONITOR_CLOSELY",
    "classify_heartbeat",
    "HEARTBEAT_BUCKET_S",
    "heartbeat_bucket",
    "health_score",
]

CONTINUE_MONITORING = "continue_monitoring"
MONITOR_CLOSELY = "monitor_closely"
INVESTIGATE_IMMEDIATELY = "investigate_immediately"

# Width of the heartbeat buckets the live-agents index is keyed on. A heartbeat rewrites the index only when
# its bucket changes (once per bucket, not once per heartbeat); the health monitor reads the rows of every
# bucket up to its cutoff's and compares the exact time. A bucket no wider than (degraded threshold −
# heartbeat interval) would cost the monitor no read of a healthy agent; 300 s against 360 s − 120 s makes it
# read ≈ 5 % of the healthy agents per run (those still in the cutoff's bucket), cheaper than the index moves
# of a narrower bucket.
HEARTBEAT_BUCKET_S = 300
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_BASE_SCORE = {HealthState.ONLINE: 100, HealthState.DEGRADED: 50, HealthState.OFFLINE: 0}
_SLOW_HEARTBEAT_PENALTY = 20
_STALE_PRICING_PENALTY = 30


def _age_s(then: datetime, now: datetime) -> float:
    return (ensure_aware(now, "now") - ensure_aware(then, "timestamp")).total_seconds()


def heartbeat_bucket(at: datetime) -> datetime:
    """The start of the ``HEARTBEAT_BUCKET_S`` bucket holding ``at`` (UTC): every time in the bucket is at or
    after it, and a later time never has an earlier bucket.

    >>> from datetime import datetime, timezone
    >>> heartbeat_bucket(datetime(2024, 1, 1, 10, 7, 59, 999999, tzinfo=timezone.utc)).isoformat()
    '2024-01-01T10:05:00+00:00'
    """
    seconds = (to_utc(at, "at") - _EPOCH) // timedelta(seconds=1)
    return _EPOCH + timedelta(seconds=seconds - seconds % HEARTBEAT_BUCKET_S)


def classify_heartbeat(
    last_heartbeat_at: datetime | None,
    now: datetime,
    thresholds: HealthThresholds = HealthThresholds(),
) -> HealthState:
    """Online, degraded (silent ≥ 360 s) or offline (silent ≥ 900 s, or never seen).

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> classify_heartbeat(now - timedelta(seconds=400), now).value
    'degraded'
    >>> classify_heartbeat(None, now).value
    'offline'
    """
    if last_heartbeat_at is None:
        return HealthState.OFFLINE
    age = _age_s(last_heartbeat_at, now)
    if age >= thresholds.offline_after_s:
        return HealthState.OFFLINE
    if age >= thresholds.degraded_after_s:
        return HealthState.DEGRADED
    return HealthState.ONLINE


def health_score(
    last_heartbeat_at: datetime | None,
    last_pricing_at: datetime | None,
    now: datetime,
    thresholds: HealthThresholds = HealthThresholds(),
) -> HealthReport:
    """Score an agent 0–100 and recommend an action (the legacy server's rules).

    Start from 100 (degraded 50, offline 0); −20 if the heartbeat is older
    than 180 s; −30 if pricing is stale (2 h) or was never reported; floor 0.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> health_score(now - timedelta(seconds=200), now - timedelta(seconds=7300), now)
    HealthReport(score=50, state=<HealthState.ONLINE: 'online'>, recommendation='monitor_closely')
    """
    state = classify_heartbeat(last_heartbeat_at, now, thresholds)
    score = _BASE_SCORE[state]
    if last_heartbeat_at is None or _age_s(last_heartbeat_at, now) > thresholds.slow_heartbeat_s:
        score -= _SLOW_HEARTBEAT_PENALTY
    if last_pricing_at is None or _age_s(last_pricing_at, now) > thresholds.pricing_stale_s:
        score -= _STALE_PRICING_PENALTY
    score = max(score, 0)
    return HealthReport(score=score, state=state, recommendation=_recommend(score))


def _recommend(score: int) -> str:
    if score >= 80:
        return CONTINUE_MONITORING
    if score >= 50:
        return MONITOR_CLOSELY
    return INVESTIGATE_IMMEDIATELY
