"""Health states, thresholds and the health report of one agent."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from components.sentinel.errors import InvalidThresholdsError

__all__ = ["HealthReport", "HealthState", "HealthThresholds"]


class HealthState(str, Enum):
    """Liveness of an agent judged from its heartbeats."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass(frozen=True)
class HealthThresholds:
    """Seconds of silence that change an agent's health, sized for the product agent's default cadence
    (``agent/spot_agent/config.py``: a heartbeat every 120 s ± 10 % jitter, a price report every hour):
    degraded after 3 missed heartbeats, offline after 7.5 (15 min), a heartbeat "slow" after 1.5 intervals,
    prices stale after 2 report intervals. Below ~2.5 heartbeats an agent would flap between online and
    degraded on ordinary jitter and latency (tests/unit/components/sentinel/test_health.py checks the
    relation against the agent's defaults). A legacy agent heartbeating every 30 s is judged by the same
    thresholds (the legacy server had 180 / 600 / 90 / 300 for its 30 s / 300 s cadence)."""

    degraded_after_s: int = 360
    offline_after_s: int = 900
    slow_heartbeat_s: int = 180
    pricing_stale_s: int = 7200

    def __post_init__(self) -> None:
        if not 0 < self.degraded_after_s < self.offline_after_s:
            raise InvalidThresholdsError("need 0 < degraded_after_s < offline_after_s", "degraded_after_s")
        if self.slow_heartbeat_s <= 0 or self.pricing_stale_s <= 0:
            raise InvalidThresholdsError("thresholds must be positive", "slow_heartbeat_s")


@dataclass(frozen=True)
class HealthReport:
    """Score 0–100, the heartbeat state, and what an operator should do."""

    score: int
    state: HealthState
    recommendation: str
