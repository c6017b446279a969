"""Agent health from the age of its last heartbeat and last pricing report."""

from __future__ import annotations

from datetime import datetime

from components.sentinel.model import HealthReport, HealthState, HealthThresholds
from components.timeutil import ensure_aware

__all__ = [
    "CONTINUE_MONITORING",
    "INVESTIGATE_IMMEDIATELY",
    "MONITOR_CLOSELY",
    "classify_heartbeat",
    "health_score",
]

CONTINUE_MONITORING = "continue_monitoring"
MONITOR_CLOSELY = "monitor_closely"
INVESTIGATE_IMMEDIATELY = "investigate_immediately"

_BASE_SCORE = {HealthState.ONLINE: 100, HealthState.DEGRADED: 50, HealthState.OFFLINE: 0}
_SLOW_HEARTBEAT_PENALTY = 20
_STALE_PRICING_PENALTY = 30


def _age_s(then: datetime, now: datetime) -> float:
    return (ensure_aware(now, "now") - ensure_aware(then, "timestamp")).total_seconds()


def classify_heartbeat(
    last_heartbeat_at: datetime | None,
    now: datetime,
    thresholds: HealthThresholds = HealthThresholds(),
) -> HealthState:
    """Online, degraded (silent ≥ 180 s) or offline (silent ≥ 600 s, or never seen).

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> classify_heartbeat(now - timedelta(seconds=200), now).value
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
    """Score an agent 0–100 and recommend an action (LEGACY §5.4 rules).

    Start from 100 (degraded 50, offline 0); −20 if the heartbeat is older
    than 90 s; −30 if pricing is stale or was never reported; floor 0.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> health_score(now - timedelta(seconds=100), now - timedelta(seconds=400), now)
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
