from datetime import UTC, datetime, timedelta

import pytest

from components.errors import ValidationError
from components.sentinel import (
    CONTINUE_MONITORING,
    HEARTBEAT_BUCKET_S,
    INVESTIGATE_IMMEDIATELY,
    MONITOR_CLOSELY,
    HealthState,
    HealthThresholds,
    InvalidThresholdsError,
    classify_heartbeat,
    health_score,
    heartbeat_bucket,
)

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("age", "state"),
    [
        (0, HealthState.ONLINE),
        (359.9, HealthState.ONLINE),
        (360, HealthState.DEGRADED),
        (899, HealthState.DEGRADED),
        (900, HealthState.OFFLINE),
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
        (181, 10, 80, HealthState.ONLINE, CONTINUE_MONITORING),
        (180, 7201, 70, HealthState.ONLINE, MONITOR_CLOSELY),
        (200, 7300, 50, HealthState.ONLINE, MONITOR_CLOSELY),
        (400, 10, 30, HealthState.DEGRADED, INVESTIGATE_IMMEDIATELY),
        (400, 7300, 0, HealthState.DEGRADED, INVESTIGATE_IMMEDIATELY),
        (1000, 10, 0, HealthState.OFFLINE, INVESTIGATE_IMMEDIATELY),
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


def test_a_heartbeat_bucket_starts_at_or_before_its_time_and_never_goes_back():
    times = [NOW + timedelta(seconds=s) for s in (-1, 0, 0.5, 299.999, 300, 301, 1234.5)]
    buckets = [heartbeat_bucket(t) for t in times]
    for t, b in zip(times, buckets):
        assert b <= t < b + timedelta(seconds=HEARTBEAT_BUCKET_S)
        assert b.timestamp() % HEARTBEAT_BUCKET_S == 0
    assert buckets == sorted(buckets)
    assert heartbeat_bucket(NOW) == NOW and heartbeat_bucket(ago(1)) == ago(HEARTBEAT_BUCKET_S)


def test_the_bucket_of_another_timezone_is_the_utc_bucket():
    from datetime import timezone

    local = (NOW + timedelta(seconds=42)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert heartbeat_bucket(local) == NOW


def test_a_naive_time_has_no_bucket():
    with pytest.raises(ValidationError):
        heartbeat_bucket(datetime(2024, 7, 1))
