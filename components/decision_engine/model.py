"""Values of the decision policy: pool options, the agent's situation, the config, the decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

ONDEMAND = "ondemand"


class DecisionAction(str, Enum):
    """What the decision asks for."""

    STAY = "stay"
    SWITCH_POOL = "switch_pool"  # spot → another spot pool (voluntary)
    TO_ONDEMAND = "to_ondemand"  # spot → on-demand (every pool too risky, or no pool left)
    TO_SPOT = "to_spot"  # on-demand → spot (risk fell back below the recovery level)
    REPLACE = "replace"  # involuntary: the current instance got an interruption warning


VOLUNTARY = frozenset({DecisionAction.SWITCH_POOL, DecisionAction.TO_SPOT})


@dataclass(frozen=True)
class PoolOption:
    """One spot pool as the policy sees it now. ``price``/``risk`` None = unknown (never chosen)."""

    pool_id: str
    price: float | None
    risk: float | None
    available: bool = True


@dataclass(frozen=True)
class DecisionConfig:
    """Guardrails and cost model (PRODUCT.md §6). Defaults follow the legacy agent_configs.

    ``risk_ceiling`` is the highest interruption probability (within ``horizon_s``) a pool may have to
    be chosen; on-demand is left again only when a pool's risk is at most ``risk_recover`` (hysteresis).
    An unplanned interruption without a standby costs ``interruption_gap_s`` of downtime at
    ``downtime_penalty_per_hour`` plus a replacement boot; a voluntary switch costs ``switch_overhead_s``
    of overlap (make-before-break) and must pay for itself within ``min_pool_duration_hours``.
    """

    min_savings_percent: float = 15.0
    risk_ceiling: float = 0.60
    risk_recover: float = 0.40
    horizon_s: float = 3600.0
    min_pool_duration_hours: float = 2.0
    max_switches_per_day: int = 3
    max_switches_per_week: int = 10
    cooldown_s: float = 600.0
    switch_overhead_s: float = 300.0
    interruption_gap_s: float = 180.0
    downtime_penalty_per_hour: float = 0.0
    standby_enabled: bool = True
    standby_value_ratio: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.risk_recover <= self.risk_ceiling <= 1:
            raise ValueError("need 0 <= risk_recover <= risk_ceiling <= 1")
        if self.horizon_s <= 0 or self.min_pool_duration_hours < 0 or self.cooldown_s < 0:
            raise ValueError("horizon, minimum pool duration and cooldown must be positive")
        if self.max_switches_per_day < 0 or self.max_switches_per_week < 0:
            raise ValueError("switch limits must be >= 0")


@dataclass(frozen=True)
class Situation:
    """Where the agent is now and what it did recently."""

    current: str  # a pool id or ONDEMAND
    since: datetime  # when it got there
    recent_switches: tuple[datetime, ...] = ()  # voluntary switches, any order
    warned: bool = False  # the current instance has an interruption warning
    standby: str | None = None  # pool of the hot standby, if any
    standby_ready: bool = False


@dataclass(frozen=True)
class Decision:
    """The outcome, with its reason in words and the numbers behind it."""

    action: DecisionAction
    target: str  # pool id or ONDEMAND: where the primary should be
    standby: str | None
    reason: str
    expected_cost: dict[str, float] = field(default_factory=dict)  # $/h per option considered
    risk: float | None = None  # risk of the target pool (None for on-demand)

    @property
    def voluntary_switch(self) -> bool:
        return self.action in VOLUNTARY
