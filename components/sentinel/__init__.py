"""Sentinel rules: agent health from heartbeats, and interruption signals from EventBridge or agents."""

from components.sentinel.errors import InvalidSignalError, InvalidThresholdsError, SentinelError
from components.sentinel.health import (
    CONTINUE_MONITORING,
    INVESTIGATE_IMMEDIATELY,
    MONITOR_CLOSELY,
    classify_heartbeat,
    health_score,
)
from components.sentinel.model import HealthReport, HealthState, HealthThresholds
from components.sentinel.signals import (
    DETAIL_TYPES,
    HEALTH_DETAIL_TYPE,
    HEALTH_SOURCE,
    LOST_STATES,
    RETIREMENT_EVENT_CODES,
    TERMINATION_NOTICE_S,
    Signal,
    SignalKind,
    SignalSource,
    capacity_kind,
    claim_is_stale,
    parse_event,
    parse_signals,
    signal_group,
    signal_key,
    stopped_by_user,
)

__all__ = [
    "CONTINUE_MONITORING",
    "DETAIL_TYPES",
    "HEALTH_DETAIL_TYPE",
    "HEALTH_SOURCE",
    "LOST_STATES",
    "RETIREMENT_EVENT_CODES",
    "TERMINATION_NOTICE_S",
    "Signal",
    "SignalKind",
    "SignalSource",
    "capacity_kind",
    "claim_is_stale",
    "parse_event",
    "parse_signals",
    "signal_group",
    "signal_key",
    "stopped_by_user",
    "InvalidSignalError",
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
