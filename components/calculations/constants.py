"""Calendar and cost constants for money math.

730 h/month and 8766 h/year are the averaged calendar (365.25 d), so monthly
and yearly figures stay comparable with AWS pricing pages.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "HOURS_PER_DAY",
    "HOURS_PER_MONTH",
    "HOURS_PER_YEAR",
    "MONEY_QUANTUM",
    "PERCENT_QUANTUM",
    "SWITCH_COST_ESTIMATE",
]

HOURS_PER_DAY = 24
HOURS_PER_MONTH = 730
HOURS_PER_YEAR = 8766
SWITCH_COST_ESTIMATE = Decimal("0.50")
MONEY_QUANTUM = Decimal("0.0001")
PERCENT_QUANTUM = Decimal("0.01")
