import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.errors import ValidationError
from components.risk_model import (
    FEATURE_NAMES,
    LOOKBACK_S,
    InvalidRiskInputError,
    PoolHistory,
    feature_rows,
    feature_vector,
)

MONDAY = 1704067200.0  # 2024-01-01T00:00:00Z, a Monday
H = 3600.0
NAN = float("nan")


def same(a, b) -> bool:
    """Bit-for-bit equal, NaN equal to NaN."""
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def history(times, available, prices=None, region=None, ondemand=3.0, band=4) -> PoolHistory:
    n = len(times)
    return PoolHistory(tuple(times), tuple(available), tuple(prices or [1.0] * n),
                       tuple(region or [1.0] * n), ondemand, band)


@st.composite
def histories(draw, max_size=50):
    n = draw(st.integers(1, max_size))
    step = draw(st.sampled_from([195.0, 600.0, 1800.0, 4 * H]))
    gaps = draw(st.lists(st.floats(0.3, 3.0), min_size=n - 1, max_size=n - 1))
    times = [MONDAY + draw(st.floats(0, 7 * 86400))]
    for g in gaps:
        times.append(times[-1] + round(g * step, 3))
    available = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    price = st.one_of(st.none(), st.just(NAN), st.just(0.0), st.floats(0.1, 5.0))
    prices = draw(st.lists(price, min_size=n, max_size=n))
    share = st.one_of(st.sampled_from([0.0, 1 / 3, 0.5, 2 / 3, 1.0]), st.floats(0.0, 1.0))
    region = draw(st.lists(share, min_size=n, max_size=n))
    ondemand = draw(st.sampled_from([3.06, 0.0, NAN]))
    return PoolHistory(tuple(times), tuple(available), tuple(prices), tuple(region), ondemand,
                       draw(st.integers(0, 4)))


# ---- values on a tiny hand-made history -----------------------------------------------------------

def test_values_on_a_hand_made_history():
    # GIVEN half-hourly probes from Monday 00:00 UTC: an outage from 01:00 to 02:00, the price rising
    h = history(times=[MONDAY + k * 0.5 * H for k in range(7)],
                available=[1, 1, 0, 0, 1, 1, 1],
                prices=[1.0, 1.0, 1.0, 1.1, 1.1, 1.2, 1.2],
                region=[1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 0.75], ondemand=3.0, band=3)
    # WHEN the features are read at 03:00
    v = dict(zip(FEATURE_NAMES, feature_vector(h)))
    # THEN each one matches its definition
    day = 3 / 24  # Monday (0) + 3 h
    expected = {
        "available_streak_h": 1.0,                 # obtainable again since 02:00
        "pool_availability_1h": 1.0,               # 02:30, 03:00 (02:00 is not > 03:00 − 1 h)
        "pool_availability_6h": 5 / 7,
        "pool_availability_24h": 5 / 7,
        "drops_6h": 1.0,
        "drops_24h": 1.0,
        "hours_since_drop": 2.0,                   # the drop seen at 01:00
        "last_outage_h": 1.0,                      # 01:00 → 02:00
        "region_availability_now": 0.75,
        "region_availability_1h": 0.875,
        "region_availability_6h": 5.75 / 7,
        "region_availability_24h": 5.75 / 7,
        "price_to_ondemand": 0.4,
        "price_change_1h": 1.2 / 1.1 - 1,          # vs 02:00, the price in force 1 h ago
        "price_change_24h": 0.2,                   # history shorter than 24 h: vs its first price
        "hour_sin": math.sin(math.pi / 4),
        "hour_cos": math.cos(math.pi / 4),
        "dow_sin": math.sin(2 * math.pi * day / 7),
        "dow_cos": math.cos(2 * math.pi * day / 7),
        "advisor_band": 3.0,
    }
    assert set(expected) == set(FEATURE_NAMES)
    for name, value in expected.items():
        assert v[name] == pytest.approx(value, abs=1e-12), name


def test_single_element_history_has_sensible_defaults():
    v = dict(zip(FEATURE_NAMES, feature_vector(history([MONDAY], [1], prices=[0.9], region=[0.5]))))
    assert v["available_streak_h"] == 0.0
    assert v["pool_availability_1h"] == v["pool_availability_24h"] == 1.0
    assert v["drops_24h"] == 0.0 and v["last_outage_h"] == 0.0
    assert v["hours_since_drop"] == LOOKBACK_S / 3600
    assert v["price_change_1h"] == v["price_change_24h"] == 0.0
    assert v["region_availability_6h"] == 0.5


def test_unknown_prices_give_missing_price_features():
    h = history([MONDAY, MONDAY + H], [1, 1], prices=[None, NAN], ondemand=3.0)
    v = dict(zip(FEATURE_NAMES, feature_vector(h)))
    assert all(math.isnan(v[n]) for n in ("price_to_ondemand", "price_change_1h", "price_change_24h"))
    # known price but no on-demand price: only the ratio is missing
    v = dict(zip(FEATURE_NAMES, feature_vector(history([MONDAY, MONDAY + H], [1, 1], ondemand=0.0))))
    assert math.isnan(v["price_to_ondemand"]) and v["price_change_1h"] == 0.0


def test_durations_are_cut_at_the_lookback():
    # a pool obtainable for three days, with one drop four days ago
    times = [MONDAY + k * H for k in range(24 * 7)]
    available = [1] * len(times)
    available[10] = 0
    v = dict(zip(FEATURE_NAMES, feature_vector(history(times, available))))
    assert v["available_streak_h"] == v["hours_since_drop"] == 24.0
    assert v["last_outage_h"] == 0.0 and v["drops_24h"] == 0.0


def test_an_outage_reaching_into_the_window_counts_only_inside_it():
    times = [MONDAY + k * H for k in range(40)]
    available = [0] * 20 + [1] * 20   # down for the first 20 h, up since
    v = dict(zip(FEATURE_NAMES, feature_vector(history(times, available))))
    # now = 39 h, window (15 h, 39 h]: the part of [0 h, 20 h) inside it is 5 h
    assert v["last_outage_h"] == pytest.approx(5.0)
    assert v["available_streak_h"] == 19.0


# ---- causality and the two ways of computing ------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(histories())
def test_incremental_rows_equal_the_per_prefix_vectors(h):
    rows = feature_rows(h)
    assert len(rows) == len(h)
    for i, row in enumerate(rows):
        assert len(row) == len(FEATURE_NAMES)
        assert same(row, feature_vector(h.prefix(i + 1))), i


@settings(max_examples=150, deadline=None)
@given(histories(), histories(), st.data())
def test_changing_the_future_never_changes_the_features_at_t(h, other, data):
    # GIVEN a cut k and a history whose elements after k are replaced by anything else
    k = data.draw(st.integers(1, len(h)))
    tail = max(0, min(len(other), len(h)) - k)
    shift = h.times[k - 1] + 1.0 - (other.times[len(other) - tail] if tail else 0.0)
    changed = PoolHistory(
        tuple(h.times[:k]) + tuple(t + shift for t in other.times[len(other) - tail:]),
        tuple(h.available[:k]) + tuple(other.available[len(other) - tail:]),
        tuple(h.prices[:k]) + tuple(other.prices[len(other) - tail:]),
        tuple(h.region_available_fraction[:k]) + tuple(other.region_available_fraction[len(other) - tail:]),
        h.ondemand_price, h.advisor_band)
    # THEN every feature up to element k − 1 is the same, computed either way
    assert all(same(a, b) for a, b in zip(feature_rows(h)[:k], feature_rows(changed)[:k]))
    assert same(feature_vector(h.prefix(k)), feature_vector(changed.prefix(k)))


@settings(max_examples=100, deadline=None)
@given(histories(max_size=80))
def test_history_older_than_the_lookback_changes_nothing(h):
    # the features at t read only from the last element at/before t − 24 h on: the scorer needs 24 h
    t = h.times[-1]
    first = max([i for i, x in enumerate(h.times) if x <= t - LOOKBACK_S] or [0])
    trimmed = PoolHistory(*(tuple(seq[first:]) for seq in (h.times, h.available, h.prices,
                                                             h.region_available_fraction)),
                          h.ondemand_price, h.advisor_band)
    assert same(feature_vector(h), feature_vector(trimmed))


# ---- input checks ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"times": ()}, "times"),
    ({"available": (1,)}, "available"),
    ({"times": (2.0, 1.0)}, "times"),
    ({"times": (1.0, 1.0)}, "times"),
    ({"available": (1, 2)}, "available"),
    ({"region_available_fraction": (0.5, 1.5)}, "region_available_fraction"),
    ({"prices": (1.0, -1.0)}, "prices"),
    ({"advisor_band": 5}, "advisor_band"),
    ({"advisor_band": True}, "advisor_band"),
    ({"advisor_band": 2.0}, "advisor_band"),
    ({"ondemand_price": None}, "ondemand_price"),
])
def test_bad_histories_are_refused(kwargs, field):
    base = {"times": (0.0, 1.0), "available": (1, 1), "prices": (1.0, 1.0),
            "region_available_fraction": (1.0, 1.0), "ondemand_price": 3.0, "advisor_band": 2}
    with pytest.raises(InvalidRiskInputError) as caught:
        PoolHistory(**{**base, **kwargs})
    assert caught.value.field == field
    assert isinstance(caught.value, ValidationError)
