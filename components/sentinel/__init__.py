"""Sentinel rules: agent health from heartbeats and pricing reports."""

from components.sentinel.errors import InvalidThresholdsError, SentinelError
from components.sentinel.health import (
    CONTINUE_MONITORING,
    INVESTIGATE_IMMEDIATELY,
    MONITOR_CLOSELY,
    classify_heartbeat,
    health_score,
)
from components.sentinel.model import HealthReport, HealthState, HealthThresholds

__all__ = [
    "CONTINUE_MONITORING",
    "INVESTIGATE_IMMEDIATELY",
    "MONITOR_CLOSELY",
    "HealthReport",
    "HealthState",
    "HealthThresholds",
    "InvalidThresholdsError",
    "SentinelError",
    "classify_heartbeat",
    "health_score",
]
