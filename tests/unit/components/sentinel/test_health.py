from datetime import UTC, datetime, timedelta

import pytest

from components.errors import ValidationError
from components.sentinel import (
    CONTINUE_MONITORING,
    INVESTIGATE_IMMEDIATELY,
    MONITOR_CLOSELY,
    HealthState,
    HealthThresholds,
    InvalidThresholdsError,
    classify_heartbeat,
    health_score,
)

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("age", "state"),
    [
        (0, HealthState.ONLINE),
        (179.9, HealthState.ONLINE),
        (180, HealthState.DEGRADED),
        (599, HealthState.DEGRADED),
        (600, HealthState.OFFLINE),
        (-30, HealthState.ONLINE),  # clock skew: a heartbeat "from the future" is fresh
    ],
)
def test_classify_heartbeat_thresholds(age, state):
    assert classify_heartbeat(ago(age), NOW) is state


def test_never_seen_is_offline():
    assert classify_heartbeat(None, NOW) is HealthState.OFFLINE


def test_custom_thresholds():
    t = HealthThresholds(degraded_after_s=10, offline_after_s=20)
    assert classify_heartbeat(ago(15), NOW, t) is HealthState.DEGRADED


@pytest.mark.parametrize(
    ("heartbeat_age", "pricing_age", "score", "state", "advice"),
    [
        (10, 10, 100, HealthState.ONLINE, CONTINUE_MONITORING),
        (91, 10, 80, HealthState.ONLINE, CONTINUE_MONITORING),
        (90, 301, 70, HealthState.ONLINE, MONITOR_CLOSELY),
        (100, 400, 50, HealthState.ONLINE, MONITOR_CLOSELY),
        (200, 10, 30, HealthState.DEGRADED, INVESTIGATE_IMMEDIATELY),
        (200, 400, 0, HealthState.DEGRADED, INVESTIGATE_IMMEDIATELY),
        (700, 10, 0, HealthState.OFFLINE, INVESTIGATE_IMMEDIATELY),
        (None, None, 0, HealthState.OFFLINE, INVESTIGATE_IMMEDIATELY),
        (10, None, 70, HealthState.ONLINE, MONITOR_CLOSELY),
    ],
)
def test_health_score(heartbeat_age, pricing_age, score, state, advice):
    hb = None if heartbeat_age is None else ago(heartbeat_age)
    pricing = None if pricing_age is None else ago(pricing_age)
    report = health_score(hb, pricing, NOW, HealthThresholds())
    assert (report.score, report.state, report.recommendation) == (score, state, advice)


def test_inconsistent_thresholds_rejected():
    with pytest.raises(InvalidThresholdsError):
        HealthThresholds(degraded_after_s=600, offline_after_s=180)


def test_naive_datetimes_rejected():
    with pytest.raises(ValidationError):
        classify_heartbeat(datetime(2024, 7, 1), NOW)
