"""Pure money math: hourly and switch savings, cost integrated over time."""

from components.calculations.constants import (
    HOURS_PER_DAY,
    HOURS_PER_MONTH,
    HOURS_PER_YEAR,
    SWITCH_COST_ESTIMATE,
)
from components.calculations.errors import CalculationError, InvalidAmountError
from components.calculations.model import PriceSegment, SavingsSummary, SwitchImpact
from components.calculations import rollup
from components.calculations.rollup import *  # noqa: F403 (its __all__ is part of this package's)
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
    *rollup.__all__,
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
