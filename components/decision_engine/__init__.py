"""The decision policy: expected cost with risk, guardrails, on-demand fallback, standby placement."""

from components.decision_engine.boot import BOOT_SAMPLES, DEFAULT_BOOT_S, measured_boot_s
from components.decision_engine.costs import (
    expected_hold_hours,
    expected_hourly_cost,
    hazard_per_hour,
    interruption_cost,
    switch_cost,
)
from components.decision_engine.errors import InvalidDecisionInputError
from components.decision_engine.limits import blocked_by_limits, held_long_enough, switches_within
from components.decision_engine.model import (
    ONDEMAND,
    VOLUNTARY,
    Decision,
    DecisionAction,
    DecisionConfig,
    PoolOption,
    Situation,
)
from components.decision_engine.policy import decide
from components.decision_engine.standby import choose_standby, standby_value_per_hour

__all__ = [
    "BOOT_SAMPLES",
    "DEFAULT_BOOT_S",
    "ONDEMAND",
    "VOLUNTARY",
    "Decision",
    "DecisionAction",
    "DecisionConfig",
    "InvalidDecisionInputError",
    "PoolOption",
    "Situation",
    "blocked_by_limits",
    "choose_standby",
    "decide",
    "expected_hold_hours",
    "expected_hourly_cost",
    "hazard_per_hour",
    "held_long_enough",
    "interruption_cost",
    "measured_boot_s",
    "standby_value_per_hour",
    "switch_cost",
    "switches_within",
]
