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


# Moves the switch limits count and bound. Coming back from on-demand is the bridge back to spot, not a
# voluntary switch: it is neither counted nor blocked (an agent never waits on on-demand for a rail).
VOLUNTARY = frozenset({DecisionAction.SWITCH_POOL})


@dataclass(frozen=True)
class PoolOption:
    """One spot pool as the policy sees it now. ``price``/``risk`` None = unknown (never chosen)."""

    pool_id: str
    price: float | None
    risk: float | None
    available: bool = True


@dataclass(frozen=True)
class DecisionConfig:
    """The cost model that drives decisions, and the user's safety rails.

    The engine: every option's expected cost per hour is its price plus its hazard (from the
    calibrated risk within ``horizon_s``) times what an interruption costs this service: the downtime
    it causes (``interruption_gap_s`` = measured boot − the 2-minute warning, or ``promote_s`` with a
    ready standby) at ``downtime_penalty_per_hour``, plus a replacement boot (``switch_overhead_s``,
    the measured boot time) at the pool's price. A move happens when what it saves per hour, counted
    for as long as the new placement is expected to last (at most ``hold_cap_h``), repays its
    overlap. :meth:`for_service` builds this from a measured boot time.

    The rails (user-set; the defaults leave the arithmetic in charge): ``min_savings_percent``,
    ``min_pool_duration_hours``, ``risk_ceiling`` (pools above it are never chosen), and the
    switch limits and cooldown, which bound (and count) pool-to-pool switches only: a pool that costs
    more than on-demand is left for another pool within them, else for on-demand. Replacing a warned
    instance and coming back from on-demand are never blocked by them and never counted. ``risk_recover`` (≤ ceiling) is the risk a pool must be at or below for a return
    from on-demand.
    """

    min_savings_percent: float = 0.0
    risk_ceiling: float = 1.0
    risk_recover: float = 1.0
    horizon_s: float = 3600.0
    min_pool_duration_hours: float = 0.0
    max_switches_per_day: int = 3
    max_switches_per_week: int = 10
    cooldown_s: float = 600.0
    switch_overhead_s: float = 300.0
    interruption_gap_s: float = 180.0
    downtime_penalty_per_hour: float = 0.0
    standby_enabled: bool = True
    standby_value_ratio: float = 1.0
    promote_s: float = 15.0
    hold_cap_h: float = 24.0

    @classmethod
    def for_service(cls, boot_s: float, downtime_penalty_per_hour: float, *, warning_s: float = 120.0,
                    **rails) -> "DecisionConfig":
        """The cost model of a service whose replacement takes ``boot_s`` from launch to serving."""
        boot_s = max(0.0, float(boot_s))
        return cls(switch_overhead_s=boot_s, interruption_gap_s=max(0.0, boot_s - warning_s),
                   downtime_penalty_per_hour=downtime_penalty_per_hour, **rails)

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
    fallbacks: tuple[str, ...] = ()  # tried in order when the target's launch is refused
    expected_cost: dict[str, float] = field(default_factory=dict)  # $/h per option considered
    risk: float | None = None  # risk of the target pool (None for on-demand)

    @property
    def voluntary_switch(self) -> bool:
        return self.action in VOLUNTARY
