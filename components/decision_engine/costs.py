"""Expected hourly cost of a pool: its price plus the expected cost of being interrupted there."""

from __future__ import annotations

import math

from components.decision_engine.model import DecisionConfig, PoolOption


def hazard_per_hour(risk: float, horizon_s: float) -> float:
    """Constant hourly interruption rate equivalent to P(interrupted within the horizon) = risk."""
    risk = min(max(risk, 0.0), 0.999999)
    return -math.log1p(-risk) * 3600.0 / horizon_s


def interruption_cost(price: float, config: DecisionConfig, with_standby: bool) -> float:
    """Dollars lost per interruption: downtime (``promote_s`` with a ready standby) plus a replacement boot."""
    downtime_s = min(config.promote_s, config.interruption_gap_s) if with_standby else config.interruption_gap_s
    return (config.downtime_penalty_per_hour * downtime_s + price * config.switch_overhead_s) / 3600.0


def expected_hourly_cost(option: PoolOption, config: DecisionConfig, with_standby: bool = False) -> float:
    """price + hazard × cost of an interruption ($/h); infinite for an option we cannot price."""
    if option.price is None or option.risk is None or not option.available:
        return math.inf
    rate = hazard_per_hour(option.risk, config.horizon_s)
    return option.price + rate * interruption_cost(option.price, config, with_standby)


def expected_hold_hours(option: PoolOption, config: DecisionConfig) -> float:
    """How long a placement in this pool is expected to last before an interruption moves it (capped)."""
    if option.risk is None:
        return 0.0
    rate = hazard_per_hour(option.risk, config.horizon_s)
    return config.hold_cap_h if rate <= 1.0 / config.hold_cap_h else 1.0 / rate


def switch_cost(new_price: float, config: DecisionConfig) -> float:
    """One-off cost of a voluntary switch: the new instance runs ``switch_overhead_s`` before serving."""
    return new_price * config.switch_overhead_s / 3600.0
