from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from components.calculations import (
    HOURS_PER_MONTH,
    HOURS_PER_YEAR,
    InvalidAmountError,
    PriceSegment,
    baseline_and_savings,
    cost_of_interval,
    effective_price,
    hourly_savings,
    integrate_cost,
    savings_percent,
    switch_impact,
)
from components.errors import ValidationError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
D = Decimal


def impact_of(old_mode, new_mode, old_spot, new_spot, ondemand):
    return switch_impact(
        old_mode=old_mode,
        new_mode=new_mode,
        old_spot_price=old_spot,
        new_spot_price=new_spot,
        ondemand_price=ondemand,
    )


def test_hourly_savings_is_ondemand_minus_spot_rounded_to_4dp():
    # GIVEN prices with more than 4 decimals  WHEN computing  THEN money is rounded half up
    assert hourly_savings(D("0.1"), D("0.03335")) == D("0.0667")
    assert hourly_savings(D("0.03"), D("0.05")) == D("-0.0200")


def test_savings_percent_and_zero_ondemand_guard():
    assert savings_percent(D("0.0960"), D("0.0312")) == D("67.50")
    # GIVEN an unknown on-demand price THEN the percentage is 0, not a division error
    assert savings_percent(D("0"), D("0.03")) == D("0.00")
    assert savings_percent(D("-1"), D("0.03")) == D("0.00")


def test_percent_rounds_half_up():
    # (0.2 - 0.19995) / 0.2 = 0.025 % -> half up to 0.03 (banker's rounding would give 0.02)
    assert savings_percent(D("0.2"), D("0.19995")) == D("0.03")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("spot", D("0.03")), ("ondemand", D("0.10")), ("SPOT", D("0.03")), (" ondemand ", D("0.10"))],
)
def test_effective_price_follows_mode(mode, expected):
    assert effective_price(mode, D("0.03"), D("0.10")) == expected


def test_effective_price_is_none_when_unknown():
    # GIVEN an unknown mode, or the price the mode needs is missing  THEN None, never 0
    assert effective_price("unknown", D("0.03"), D("0.10")) is None
    assert effective_price("spot", None, D("0.10")) is None
    assert effective_price("ondemand", D("0.03"), None) is None


def test_switch_impact_spot_to_spot():
    # GIVEN a switch between two spot pools
    impact = impact_of("spot", "spot", D("0.05"), D("0.03"), D("0.10"))
    # THEN savings are old - new, projected by 730 h and 8766 h
    assert impact.hourly_savings == D("0.0200")
    assert impact.monthly_savings == D("0.02") * HOURS_PER_MONTH == D("14.6000")
    assert impact.yearly_savings == D("175.3200") == D("0.02") * HOURS_PER_YEAR
    assert (impact.percent_before, impact.percent_after) == (D("50.00"), D("70.00"))
    assert impact.improvement_pp == D("20.00")


def test_switch_impact_to_ondemand_uses_ondemand_price_not_stale_spot():
    # GIVEN a switch to on-demand, with a spot price still attached to the new side
    impact = impact_of("spot", "ondemand", D("0.03"), D("0.02"), D("0.10"))
    # THEN the new price is on-demand and the switch costs money (negative savings)
    assert impact.new_price == D("0.1000")
    assert impact.hourly_savings == D("-0.0700")
    assert impact.percent_after == D("0.00")
    assert impact.improvement_pp == D("-70.00")


def test_switch_impact_missing_price_gives_none_not_zero():
    # GIVEN the old spot price is unknown
    impact = impact_of("spot", "spot", None, D("0.03"), D("0.10"))
    # THEN everything depending on it is None; the rest is still computed
    assert impact.old_price is None
    assert impact.hourly_savings is None and impact.monthly_savings is None and impact.yearly_savings is None
    assert impact.percent_before is None and impact.improvement_pp is None
    assert impact.percent_after == D("70.00")


def test_switch_impact_without_ondemand_price():
    impact = impact_of("spot", "spot", D("0.05"), D("0.03"), None)
    assert impact.hourly_savings == D("0.0200")
    assert impact.percent_before is None and impact.percent_after is None


def test_cost_of_interval_is_price_times_exact_hours():
    assert cost_of_interval(D("0.10"), T0, T0 + timedelta(minutes=90)) == D("0.1500")
    assert cost_of_interval(D("0.0417"), T0, T0 + timedelta(seconds=1)) == D("0.0000")
    # GIVEN end before or equal to start THEN nothing is charged
    assert cost_of_interval(D("0.10"), T0, T0) == D("0")
    assert cost_of_interval(D("0.10"), T0 + timedelta(hours=1), T0) == D("0")


def test_cost_of_interval_rejects_naive_datetimes_and_negative_prices():
    with pytest.raises(ValidationError):
        cost_of_interval(D("0.10"), datetime(2024, 1, 1), datetime(2024, 1, 2))
    with pytest.raises(InvalidAmountError):
        cost_of_interval(D("-0.10"), T0, T0 + timedelta(hours=1))


def test_integrate_cost_rounds_once_at_the_end():
    # GIVEN 3 one-second segments each worth 0.00004 (rounds to 0.0000 on its own)
    seg = [
        PriceSegment(T0 + timedelta(seconds=i), T0 + timedelta(seconds=i + 1), D("0.144"))
        for i in range(3)
    ]
    # THEN the total is 0.00012 -> 0.0001, not 3 x 0.0000
    assert integrate_cost(seg) == D("0.0001")
    assert integrate_cost([]) == D("0.0000")


def test_baseline_and_savings_with_mixed_modes():
    # GIVEN 20 h on spot at 0.03 and 4 h on on-demand at 0.10
    segments = [
        PriceSegment(T0, T0 + timedelta(hours=20), D("0.03")),
        PriceSegment(T0 + timedelta(hours=20), T0 + timedelta(hours=24), D("0.10")),
    ]
    summary = baseline_and_savings(segments, D("0.10"))
    # THEN actual = 0.6 + 0.4, baseline = 24 h on-demand
    assert summary.actual == D("1.0000")
    assert summary.baseline == D("2.4000")
    assert summary.savings == D("1.4000")
    assert summary.savings_percent == D("58.33")


def test_baseline_honours_discount_and_savings_can_be_negative():
    segments = [PriceSegment(T0, T0 + timedelta(hours=10), D("0.09"))]
    summary = baseline_and_savings(segments, D("0.10"), discount_percent=D("20"))
    assert summary.baseline == D("0.8000")
    assert summary.savings == D("-0.1000")
    assert summary.savings_percent == D("-12.50")


def test_baseline_rejects_bad_discount_and_handles_empty():
    with pytest.raises(ValidationError) as info:
        baseline_and_savings([], D("0.10"), discount_percent=D("101"))
    assert info.value.field == "discount_percent"
    empty = baseline_and_savings([], D("0.10"))
    assert (empty.actual, empty.baseline, empty.savings, empty.savings_percent) == (D(0), D(0), D(0), D(0))
