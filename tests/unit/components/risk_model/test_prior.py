import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.errors import ValidationError
from components.risk_model import (
    ADVISOR_BAND_MONTHLY_RATE,
    SECONDS_PER_MONTH,
    InvalidRiskInputError,
    advisor_prior,
)


def test_band_rates_are_the_middle_of_each_advisor_band():
    assert ADVISOR_BAND_MONTHLY_RATE == (0.025, 0.075, 0.125, 0.175, 0.25)


@pytest.mark.parametrize("band", range(5))
def test_a_month_gives_the_band_rate(band):
    assert advisor_prior(band, SECONDS_PER_MONTH) == pytest.approx(ADVISOR_BAND_MONTHLY_RATE[band])


def test_one_hour_in_the_riskiest_band():
    # 1 − 0.75 ** (1 / 730)
    assert advisor_prior(4, 3600) == pytest.approx(1 - 0.75 ** (1 / 730), rel=1e-12)
    assert advisor_prior(4, 0) == 0.0


@given(st.integers(0, 3), st.floats(1.0, 1e8))
def test_higher_band_is_riskier(band, horizon):
    assert advisor_prior(band, horizon) < advisor_prior(band + 1, horizon)


@given(st.integers(0, 4), st.floats(0.0, 1e8), st.floats(0.0, 1e8))
def test_longer_horizon_is_riskier_and_stays_a_probability(band, a, b):
    low, high = sorted((a, b))
    assert 0.0 <= advisor_prior(band, low) <= advisor_prior(band, high) <= 1.0


@given(st.integers(0, 4), st.floats(1.0, 1e7), st.floats(1.0, 1e7))
def test_constant_hazard_composes_over_consecutive_windows(band, a, b):
    survive = (1 - advisor_prior(band, a)) * (1 - advisor_prior(band, b))
    assert survive == pytest.approx(1 - advisor_prior(band, a + b), rel=1e-9)


@pytest.mark.parametrize(("band", "horizon", "field"), [
    (-1, 3600, "advisor_band"), (5, 3600, "advisor_band"), (2.0, 3600, "advisor_band"),
    (True, 3600, "advisor_band"), (2, -1, "horizon_s"), (2, math.inf, "horizon_s"), (2, math.nan, "horizon_s"),
])
def test_bad_inputs_are_refused(band, horizon, field):
    with pytest.raises(InvalidRiskInputError) as caught:
        advisor_prior(band, horizon)
    assert caught.value.field == field and isinstance(caught.value, ValidationError)
