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
    """Seconds of silence that change an agent's health (LEGACY §5.4 values)."""

    degraded_after_s: int = 180
    offline_after_s: int = 600
    slow_heartbeat_s: int = 90
    pricing_stale_s: int = 300

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
