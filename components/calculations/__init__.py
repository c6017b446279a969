"""Pure money math: hourly and switch savings, cost integrated over time."""

from components.calculations.constants import (
    HOURS_PER_DAY,
    HOURS_PER_MONTH,
    HOURS_PER_YEAR,
    SWITCH_COST_ESTIMATE,
)
from components.calculations.errors import CalculationError, InvalidAmountError
from components.calculations.model import PriceSegment, SavingsSummary, SwitchImpact
from components.calculations.rollup import (
    PART_QUANTUM,
    Bucket,
    HourPart,
    InstanceRun,
    day_key,
    effective_ondemand,
    floor_hour,
    hour_key,
    hourly_parts,
    month_key,
    roll_up,
)
from components.calculations.savings import (
    baseline_and_savings,
    cost_of_interval,
    effective_price,
    hourly_savings,
    integrate_cost,
    savings_percent,
    switch_impact,
    to_money,
    to_percent,
)

__all__ = [
    "PART_QUANTUM",
    "Bucket",
    "HourPart",
    "InstanceRun",
    "day_key",
    "effective_ondemand",
    "floor_hour",
    "hour_key",
    "hourly_parts",
    "month_key",
    "roll_up",
    "HOURS_PER_DAY",
    "HOURS_PER_MONTH",
    "HOURS_PER_YEAR",
    "SWITCH_COST_ESTIMATE",
    "CalculationError",
    "InvalidAmountError",
    "PriceSegment",
    "SavingsSummary",
    "SwitchImpact",
    "baseline_and_savings",
    "cost_of_interval",
    "effective_price",
    "hourly_savings",
    "integrate_cost",
    "savings_percent",
    "switch_impact",
    "to_money",
    "to_percent",
]
