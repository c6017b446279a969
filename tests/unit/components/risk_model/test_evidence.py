"""The one feature function: every feature's definition on hand-made observations, causality, the
evidence fallback (hazard / risk / placement score) and input validation."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.capacity import HELD_INTERVAL_S, CapacityObservation, ObservationKind
from components.errors import ValidationError
from components.risk_model import (
    ADVISOR_BAND_MONTHLY_RATE,
    EVIDENCE_WINDOW_S,
    FEATURE_NAMES,
    SECONDS_PER_MONTH,
    InvalidRiskInputError,
    PoolEvidence,
    evidence_hazard,
    evidence_risk,
    feature_vector,
)
from components.risk_model.evidence import placement_score

K = ObservationKind
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
H = 3600.0
DAY = 24 * H
CAP_H = 168.0
NAN = float("nan")


def seen(kind: ObservationKind, at: float, pool: str = "p", value: float | None = None) -> CapacityObservation:
    return CapacityObservation(pool, kind, at, value=value)


def ago(hours: float) -> float:
    return T0 - hours * H


def features(**kwargs) -> dict[str, float]:
    kwargs.setdefault("now", T0)
    return dict(zip(FEATURE_NAMES, feature_vector(PoolEvidence(**kwargs)), strict=True))


def same(a, b) -> bool:
    """Bit-for-bit equal, NaN equal to NaN."""
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def band_hourly_rate(band: int) -> float:
    return ADVISOR_BAND_MONTHLY_RATE[band] * H / SECONDS_PER_MONTH


# ---- the contract ---------------------------------------------------------------------------------

def test_feature_names_are_the_contract():
    assert FEATURE_NAMES == (
        "hours_since_negative", "negatives_6h", "negatives_24h", "negatives_7d", "refusals_24h",
        "rebalances_24h", "hours_since_positive", "held_hours_7d", "negative_rate_7d",
        "region_negatives_24h", "region_negative_share_24h", "price_to_ondemand", "price_change_1h",
        "price_change_24h", "advisor_band")
    assert EVIDENCE_WINDOW_S == 7 * DAY and HELD_INTERVAL_S == 900.0


def test_a_pool_nobody_looked_at():
    # GIVEN no observation, no price, no on-demand price
    v = features()
    # THEN "hours since" are the cap, counts 0, region share and prices missing, band the default
    assert v["hours_since_negative"] == v["hours_since_positive"] == CAP_H
    for name in ("negatives_6h", "negatives_24h", "negatives_7d", "refusals_24h", "rebalances_24h",
                 "held_hours_7d", "negative_rate_7d", "region_negatives_24h"):
        assert v[name] == 0.0, name
    for name in ("region_negative_share_24h", "price_to_ondemand", "price_change_1h", "price_change_24h"):
        assert math.isnan(v[name]), name
    assert v["advisor_band"] == 2.0
    assert all(isinstance(x, float) for x in v.values())


# ---- values on a hand-made log ----------------------------------------------------------------------

OWN = (
    seen(K.LAUNCH_REFUSED, ago(30)),                       # in 7 d only
    seen(K.LAUNCH_SUCCEEDED, ago(29)),
    *(seen(K.HELD, ago(29) + k * HELD_INTERVAL_S) for k in range(1, 9)),  # 8 × 15 min = 2 h
    seen(K.INTERRUPTION_WARNING, ago(26)),                 # in 7 d only
    seen(K.REBALANCE, ago(25)),                            # older than 24 h: not counted
    seen(K.LAUNCH_REFUSED, ago(10)),                       # in 24 h, not 6 h
    seen(K.REBALANCE, ago(9)),
    seen(K.LAUNCH_SUCCEEDED, ago(8)),
    *(seen(K.HELD, ago(8) + k * HELD_INTERVAL_S) for k in range(1, 5)),   # 4 × 15 min = 1 h, last at −7 h
    seen(K.AWS_STOPPED, ago(5)),                           # in 6 h
    seen(K.LAUNCH_REFUSED, ago(2)),                        # in 6 h, the last negative
    seen(K.PLACEMENT_SCORE, ago(1), value=3),              # no feature reads it
    seen(K.HELD, ago(-0.5)),                               # after now: ignored
    seen(K.INTERRUPTION_WARNING, ago(-1)),                 # after now: ignored
)
REGION = (
    seen(K.INTERRUPTION_WARNING, ago(30), "q"),            # older than 24 h: not counted
    seen(K.LAUNCH_REFUSED, ago(3), "q"),
    seen(K.HELD, ago(2), "q"),
    seen(K.HELD, ago(1), "q"),
    seen(K.REBALANCE, ago(1), "q"),                        # neither negative nor positive
    seen(K.AWS_STOPPED, ago(23), "r"),
    seen(K.LAUNCH_SUCCEEDED, ago(20), "r"),
    seen(K.PLACEMENT_SCORE, ago(1), "r", value=9),
    seen(K.LAUNCH_REFUSED, ago(-2), "r"),                  # after now: ignored
)
PRICE_TIMES = (ago(30), ago(20), ago(1.5), ago(10 / 60), ago(-10 / 60))
PRICES = (0.50, 0.40, 0.44, 0.55, 9.0)  # the last one is after now


def test_values_on_a_hand_made_log():
    # WHEN the features are read at T0
    v = features(observations=OWN, region_observations=REGION, price_times=PRICE_TIMES, prices=PRICES,
                 ondemand_price=1.1, advisor_band=3)
    # THEN each one matches its definition
    expected = {
        "hours_since_negative": 2.0,          # the refusal 2 h ago
        "negatives_6h": 2.0,                  # AWS stop −5 h, refusal −2 h
        "negatives_24h": 3.0,                 # + refusal −10 h
        "negatives_7d": 5.0,                  # + refusal −30 h, warning −26 h
        "refusals_24h": 2.0,                  # refusals only (not the AWS stop)
        "rebalances_24h": 1.0,                # −9 h (−25 h is outside)
        "hours_since_positive": 7.0,          # the last HELD
        "held_hours_7d": 3.0,                 # 12 HELD × 15 min
        "negative_rate_7d": 5 / (3 + 1),
        "region_negatives_24h": 2.0,          # q refused −3 h, r stopped −23 h
        "region_negative_share_24h": 2 / 5,   # 2 negatives / (2 + 2 HELD + 1 success)
        "price_to_ondemand": 0.55 / 1.1,
        "price_change_1h": 0.55 / 0.44 - 1,   # vs the price in force 1 h ago (set at −1.5 h)
        "price_change_24h": 0.55 / 0.50 - 1,  # vs the price in force 24 h ago (set at −30 h)
        "advisor_band": 3.0,
    }
    assert set(expected) == set(FEATURE_NAMES)
    for name, value in expected.items():
        assert v[name] == pytest.approx(value, abs=1e-12), name


# ---- windows and their boundaries -------------------------------------------------------------------

@pytest.mark.parametrize(("age_h", "in_6h", "in_24h", "in_7d"), [
    (0.0, 1, 1, 1),                  # at now: counted
    (6 - 1 / H, 1, 1, 1),
    (6.0, 0, 1, 1),                  # windows are (now − w, now]: exactly 6 h old is out of 6 h
    (24 - 1 / H, 0, 1, 1),
    (24.0, 0, 0, 1),
    (168 - 1 / H, 0, 0, 1),
    (168.0, 0, 0, 0),                # exactly a week old: outside every window
    (200.0, 0, 0, 0),
    (-1 / H, 0, 0, 0),               # one second after now: not seen yet
])
@pytest.mark.parametrize("kind", [K.LAUNCH_REFUSED, K.INTERRUPTION_WARNING, K.AWS_STOPPED])
def test_negative_counts_at_the_window_boundaries(kind, age_h, in_6h, in_24h, in_7d):
    v = features(observations=[seen(kind, ago(age_h))])
    assert (v["negatives_6h"], v["negatives_24h"], v["negatives_7d"]) == (in_6h, in_24h, in_7d)
    assert v["refusals_24h"] == (in_24h if kind is K.LAUNCH_REFUSED else 0)
    assert v["hours_since_negative"] == pytest.approx(age_h if in_7d else CAP_H, abs=1e-9)
    assert v["negative_rate_7d"] == in_7d  # no exposure: negatives / (0 + 1)
    # a negative is never a positive
    assert v["hours_since_positive"] == CAP_H and v["held_hours_7d"] == 0.0


@pytest.mark.parametrize(("age_h", "counted"), [
    (0.0, True), (24.0, True), (168 - 1 / H, True), (168.0, False), (500.0, False), (-1 / H, False)])
def test_held_and_hours_since_positive_at_the_boundaries(age_h, counted):
    v = features(observations=[seen(K.HELD, ago(age_h))])
    assert v["held_hours_7d"] == (HELD_INTERVAL_S / H if counted else 0.0)
    assert v["hours_since_positive"] == pytest.approx(age_h if counted else CAP_H, abs=1e-9)


@pytest.mark.parametrize(("age_h", "counted"), [(0.0, 1), (24 - 1 / H, 1), (24.0, 0), (-1 / H, 0)])
def test_rebalances_count_in_24h_and_are_neither_negative_nor_positive(age_h, counted):
    v = features(observations=[seen(K.REBALANCE, ago(age_h))])
    assert v["rebalances_24h"] == counted
    assert v["negatives_7d"] == 0.0 and v["hours_since_negative"] == CAP_H
    assert v["hours_since_positive"] == CAP_H and v["held_hours_7d"] == 0.0


def test_hours_since_are_capped_at_a_week():
    v = features(observations=[seen(K.LAUNCH_REFUSED, ago(167)), seen(K.HELD, ago(167.5))])
    assert v["hours_since_negative"] == 167.0 and v["hours_since_positive"] == 167.5
    v = features(observations=[seen(K.LAUNCH_REFUSED, ago(169)), seen(K.LAUNCH_SUCCEEDED, ago(1000))])
    assert v["hours_since_negative"] == v["hours_since_positive"] == CAP_H
    assert v["negatives_7d"] == 0.0


def test_the_latest_observation_sets_hours_since_whatever_the_order():
    log = [seen(K.LAUNCH_REFUSED, ago(3)), seen(K.LAUNCH_REFUSED, ago(1)), seen(K.LAUNCH_REFUSED, ago(2)),
           seen(K.HELD, ago(5)), seen(K.LAUNCH_SUCCEEDED, ago(4)), seen(K.HELD, ago(6))]
    v = features(observations=log)
    assert v["hours_since_negative"] == 1.0 and v["hours_since_positive"] == 4.0


def test_held_observations_are_exposure_and_launches_are_not():
    # GIVEN a day of holding (96 HELD) after one launch, and one warning
    log = [seen(K.LAUNCH_SUCCEEDED, ago(25)), *(seen(K.HELD, ago(25) + k * HELD_INTERVAL_S) for k in range(1, 97)),
           seen(K.INTERRUPTION_WARNING, ago(0.5))]
    v = features(observations=log)
    # THEN held hours = 96 × 15 min, and the raw rate = 1 / (24 + 1)
    assert v["held_hours_7d"] == 24.0
    assert v["negative_rate_7d"] == pytest.approx(1 / 25)
    assert v["hours_since_positive"] == pytest.approx(1.0)  # the last HELD at −1 h
    # a launch alone is a positive but no exposure
    v = features(observations=[seen(K.LAUNCH_SUCCEEDED, ago(2))])
    assert v["hours_since_positive"] == 2.0 and v["held_hours_7d"] == 0.0


def test_one_held_observation_naming_n_instances_is_n_held_observations():
    # production records one HELD per pool and run naming how many agents ran there; the backtest one per instance
    each = [seen(K.HELD, ago(h)) for h in (1, 1, 1, 2, 2)]
    counted = [seen(K.HELD, ago(1), value=3), seen(K.HELD, ago(2), value=2)]
    for own in (each, counted):
        own.append(seen(K.INTERRUPTION_WARNING, ago(3)))
    assert features(observations=each) == features(observations=counted)
    assert features(observations=counted)["held_hours_7d"] == 5 * HELD_INTERVAL_S / H
    assert evidence_hazard(PoolEvidence(now=T0, observations=each)) == pytest.approx(
        evidence_hazard(PoolEvidence(now=T0, observations=counted)), rel=1e-12)


@pytest.mark.parametrize("value", [0, 0.5, -1, float("nan"), float("inf")])
def test_a_held_observation_counts_at_least_one_instance(value):
    with pytest.raises(ValidationError):
        seen(K.HELD, ago(1), value=value)


def test_placement_scores_are_no_feature():
    base = features(observations=OWN[:5])
    with_scores = features(observations=[*OWN[:5], seen(K.PLACEMENT_SCORE, ago(1), value=1),
                                         seen(K.PLACEMENT_SCORE, ago(2), value=10)])
    assert same(list(base.values()), list(with_scores.values()))


# ---- the region -----------------------------------------------------------------------------------

def test_region_share_is_missing_when_no_region_observation():
    assert math.isnan(features()["region_negative_share_24h"])
    # observations that are neither negative nor positive, or older than 24 h, or after now, do not count
    v = features(region_observations=[seen(K.REBALANCE, ago(1), "q"), seen(K.PLACEMENT_SCORE, ago(1), "q", 5),
                                      seen(K.LAUNCH_REFUSED, ago(24), "q"), seen(K.HELD, ago(30), "q"),
                                      seen(K.AWS_STOPPED, ago(-0.1), "q")])
    assert v["region_negatives_24h"] == 0.0 and math.isnan(v["region_negative_share_24h"])


@pytest.mark.parametrize(("region", "negatives", "share"), [
    ([seen(K.HELD, ago(1), "q")], 0, 0.0),
    ([seen(K.LAUNCH_REFUSED, ago(1), "q")], 1, 1.0),
    ([seen(K.LAUNCH_REFUSED, ago(1), "q"), seen(K.INTERRUPTION_WARNING, ago(2), "r"),
      seen(K.LAUNCH_SUCCEEDED, ago(3), "q"), seen(K.HELD, ago(23.9), "r")], 2, 0.5),
    ([seen(K.AWS_STOPPED, ago(1), "q"), *(seen(K.HELD, ago(2), "r") for _ in range(3))], 1, 0.25),
])
def test_region_negatives_and_share(region, negatives, share):
    v = features(region_observations=region)
    assert v["region_negatives_24h"] == negatives
    assert v["region_negative_share_24h"] == pytest.approx(share)


def test_region_observations_do_not_touch_the_pools_own_features():
    own = features(observations=OWN)
    both = features(observations=OWN, region_observations=REGION)
    for name in FEATURE_NAMES:
        if not name.startswith("region_"):
            assert own[name] == both[name] or (math.isnan(own[name]) and math.isnan(both[name])), name


# ---- prices ---------------------------------------------------------------------------------------

def test_prices_are_a_step_function_read_at_now_1h_and_24h_ago():
    times, prices = (ago(48), ago(24), ago(1), ago(0)), (1.0, 2.0, 3.0, 4.0)
    v = features(price_times=times, prices=prices, ondemand_price=8.0)
    # a price set exactly 24 h / 1 h ago is the price in force then
    assert v["price_to_ondemand"] == 0.5
    assert v["price_change_1h"] == pytest.approx(4 / 3 - 1)
    assert v["price_change_24h"] == pytest.approx(4 / 2 - 1)
    # a minute later they are still the prices in force then
    v = features(now=T0 + 60, price_times=times, prices=prices, ondemand_price=8.0)
    assert v["price_change_1h"] == pytest.approx(4 / 3 - 1) and v["price_change_24h"] == pytest.approx(1.0)


def test_unchanged_price_gives_zero_changes():
    v = features(price_times=(ago(100),), prices=(0.3,), ondemand_price=1.2)
    assert v["price_to_ondemand"] == pytest.approx(0.25)
    assert v["price_change_1h"] == v["price_change_24h"] == 0.0


@pytest.mark.parametrize(("times", "prices", "ondemand", "missing"), [
    ((), (), 1.0, {"price_to_ondemand", "price_change_1h", "price_change_24h"}),           # no price
    ((ago(-1),), (0.5,), 1.0, {"price_to_ondemand", "price_change_1h", "price_change_24h"}),  # only future
    ((ago(0.5),), (0.5,), 1.0, {"price_change_1h", "price_change_24h"}),                  # none 1 h ago
    ((ago(2),), (0.5,), 1.0, {"price_change_24h"}),                                       # none 24 h ago
    ((ago(25), ago(2)), (0.5, 0.6), NAN, {"price_to_ondemand"}),                           # no on-demand
    ((ago(25), ago(2)), (0.5, 0.6), 0.0, {"price_to_ondemand"}),
    ((ago(25), ago(2)), (0.5, 0.6), math.inf, {"price_to_ondemand"}),
    ((ago(25), ago(2)), (0.5, None), 1.0, {"price_to_ondemand", "price_change_1h", "price_change_24h"}),
    ((ago(25), ago(2)), (None, 0.6), 1.0, {"price_change_24h"}),                           # unknown then
    ((ago(25), ago(2)), (0.0, 0.6), 1.0, {"price_change_24h"}),                            # 0 then: no ratio
    ((ago(25), ago(2)), (0.5, NAN), 1.0, {"price_to_ondemand", "price_change_1h", "price_change_24h"}),
])
def test_unknown_prices_give_missing_price_features(times, prices, ondemand, missing):
    v = features(price_times=times, prices=prices, ondemand_price=ondemand)
    for name in ("price_to_ondemand", "price_change_1h", "price_change_24h"):
        assert math.isnan(v[name]) == (name in missing), name


@pytest.mark.parametrize("band", range(5))
def test_advisor_band_is_a_feature(band):
    assert features(advisor_band=band)["advisor_band"] == float(band)


# ---- causality: the vector at now depends on nothing after now ------------------------------------

KINDS = [k for k in ObservationKind]


@st.composite
def observation_logs(draw, pools=("p",), span_h=240.0, max_size=40):
    items = draw(st.lists(st.tuples(st.sampled_from(KINDS), st.floats(0.0, span_h * H), st.sampled_from(pools),
                                    st.integers(1, 10)), max_size=max_size))
    log = [CapacityObservation(pool, kind, T0 + round(offset, 3),
                               value=float(score) if kind is K.PLACEMENT_SCORE else None)
           for kind, offset, pool, score in items]
    return sorted(log, key=lambda o: o.at)


@st.composite
def price_series(draw, span_h=240.0, max_size=30):
    offsets = sorted(set(draw(st.lists(st.floats(0.0, span_h * H), max_size=max_size))))
    price = st.one_of(st.none(), st.just(0.0), st.floats(0.01, 10.0))
    prices = draw(st.lists(price, min_size=len(offsets), max_size=len(offsets)))
    return tuple(T0 + round(o, 3) for o in offsets), tuple(prices)


def _evidence(now, own, region, series, ondemand, band):
    return PoolEvidence(now=now, observations=tuple(own), region_observations=tuple(region),
                        price_times=series[0], prices=series[1], ondemand_price=ondemand, advisor_band=band)


@settings(max_examples=200, deadline=None)
@given(own=observation_logs(), region=observation_logs(pools=("q", "r")), series=price_series(),
       cut_h=st.floats(0.0, 240.0), ondemand=st.sampled_from([1.0, 3.06, NAN]), band=st.integers(0, 4))
def test_a_longer_log_never_changes_the_vector_at_an_earlier_now(own, region, series, cut_h, ondemand, band):
    # GIVEN everything known up to now, and the same plus what came after
    now = T0 + round(cut_h * H, 3)
    prefix_series = tuple(zip(*[(t, p) for t, p in zip(*series) if t <= now])) or ((), ())
    short = _evidence(now, [o for o in own if o.at <= now], [o for o in region if o.at <= now],
                      prefix_series, ondemand, band)
    full = _evidence(now, own, region, series, ondemand, band)
    # THEN the features, the fallback and the placement score are the same
    assert same(feature_vector(short), feature_vector(full))
    assert evidence_hazard(short) == evidence_hazard(full)
    assert placement_score(short) == placement_score(full)


@settings(max_examples=100, deadline=None)
@given(own=observation_logs(), region=observation_logs(pools=("q", "r")), cut_h=st.floats(0.0, 240.0),
       seed=st.integers(0, 2**32 - 1))
def test_the_order_of_the_observations_does_not_matter(own, region, cut_h, seed):
    # production passes region observations sorted by time, the backtest pool by pool
    rng = random.Random(seed)
    shuffled_own, shuffled_region = own[:], region[:]
    rng.shuffle(shuffled_own)
    rng.shuffle(shuffled_region)
    now = T0 + cut_h * H
    a = _evidence(now, own, region, ((), ()), 1.0, 2)
    b = _evidence(now, shuffled_own, shuffled_region, ((), ()), 1.0, 2)
    assert same(feature_vector(a), feature_vector(b))
    assert evidence_hazard(a) == pytest.approx(evidence_hazard(b), rel=1e-12)


# ---- the evidence fallback ------------------------------------------------------------------------

@pytest.mark.parametrize("band", range(5))
def test_no_evidence_is_the_bands_rate(band):
    ev = PoolEvidence(now=T0, advisor_band=band)
    assert evidence_hazard(ev) == pytest.approx(band_hourly_rate(band), rel=1e-12)
    assert evidence_risk(ev, H) == pytest.approx(-math.expm1(-band_hourly_rate(band)), rel=1e-12)
    assert evidence_risk(ev, 0.0) == 0.0


def test_higher_band_is_riskier_without_evidence():
    risks = [evidence_risk(PoolEvidence(now=T0, advisor_band=b), H) for b in range(5)]
    assert risks == sorted(risks) and len(set(risks)) == 5


def test_a_negative_weighs_its_recency_and_holding_weighs_exposure():
    # empirical Bayes: (6 h × band rate + Σ e^(−age/24 h) negatives) / (6 h + Σ e^(−age/24 h) held hours)
    rate = band_hourly_rate(2)
    one = evidence_hazard(PoolEvidence(now=T0, observations=[seen(K.INTERRUPTION_WARNING, ago(24))]))
    assert one == pytest.approx((6 * rate + math.exp(-1)) / 6)
    held = [seen(K.HELD, T0) for _ in range(8)]  # 2 h of exposure, age 0
    assert evidence_hazard(PoolEvidence(now=T0, observations=held)) == pytest.approx(6 * rate / 8)
    recent = evidence_hazard(PoolEvidence(now=T0, observations=[seen(K.LAUNCH_REFUSED, ago(1))]))
    old = evidence_hazard(PoolEvidence(now=T0, observations=[seen(K.LAUNCH_REFUSED, ago(100))]))
    week = evidence_hazard(PoolEvidence(now=T0, observations=[seen(K.LAUNCH_REFUSED, ago(168))]))
    assert recent > old > week == pytest.approx(rate)


def test_the_renewal_floor_makes_a_pool_that_just_failed_risky_and_fades_with_the_hours_since():
    # a variant of the backtest (bench/backtest/variants.py), off by default: hazard ≥ c / (scale + τ)
    refused = [seen(K.LAUNCH_REFUSED, ago(0.5))]
    default = evidence_hazard(PoolEvidence(now=T0, observations=refused))
    floored = evidence_hazard(PoolEvidence(now=T0, observations=refused), renewal_events=0.45)
    assert default < 0.2 and floored == pytest.approx(0.45 / (0.5 + 0.5))
    later = [seen(K.LAUNCH_REFUSED, ago(3)), *(seen(K.HELD, ago(h / 4)) for h in range(8))]  # 2 h held since
    assert evidence_hazard(PoolEvidence(now=T0, observations=later)) < 0.45 / 3.5
    assert evidence_hazard(PoolEvidence(now=T0, observations=later), renewal_events=0.45) == pytest.approx(
        0.45 / 3.5)
    # no negative, no floor: the band's prior and held hours alone
    held = PoolEvidence(now=T0, observations=later[1:])
    assert evidence_hazard(held, renewal_events=0.45) == evidence_hazard(held)


@settings(max_examples=150, deadline=None)
@given(own=observation_logs(span_h=160.0), age_h=st.floats(0.0, 167.0), band=st.integers(0, 4),
       kind=st.sampled_from([K.LAUNCH_REFUSED, K.INTERRUPTION_WARNING, K.AWS_STOPPED]))
def test_hazard_grows_with_negatives_and_shrinks_with_exposure(own, age_h, band, kind):
    now = T0 + 160 * H
    base = PoolEvidence(now=now, observations=tuple(own), advisor_band=band)
    at = now - age_h * H
    more_negative = PoolEvidence(now=now, observations=(*own, seen(kind, at)), advisor_band=band)
    more_held = PoolEvidence(now=now, observations=(*own, seen(K.HELD, at)), advisor_band=band)
    assert evidence_hazard(more_negative) > evidence_hazard(base) > evidence_hazard(more_held) > 0
    assert evidence_risk(more_negative, H) > evidence_risk(base, H) > evidence_risk(more_held, H)
    # rebalances and launches are neither events nor exposure
    other = PoolEvidence(now=now, observations=(*own, seen(K.REBALANCE, at), seen(K.LAUNCH_SUCCEEDED, at)),
                         advisor_band=band)
    assert evidence_hazard(other) == evidence_hazard(base)


def test_placement_score_10_lowers_and_1_raises_the_no_evidence_risk():
    plain = PoolEvidence(now=T0)

    def scored(*scores):
        return PoolEvidence(now=T0, observations=[seen(K.PLACEMENT_SCORE, at, value=s) for at, s in scores])

    high, low, middle = scored((ago(1), 10)), scored((ago(1), 1)), scored((ago(1), 5.5))
    assert evidence_risk(high, H) < evidence_risk(plain, H) < evidence_risk(low, H)
    assert evidence_hazard(high) == pytest.approx(evidence_hazard(plain) / 5.5)
    assert evidence_hazard(low) == pytest.approx(evidence_hazard(plain) * 10 / 5.5)
    assert evidence_hazard(middle) == pytest.approx(evidence_hazard(plain))
    # the latest score of the last 24 h is the one used; older ones and future ones are not
    assert placement_score(plain) is None
    assert placement_score(scored((ago(3), 1), (ago(2), 10), (ago(-1), 4))) == 10
    assert placement_score(scored((ago(24), 1))) is None
    assert evidence_hazard(scored((ago(25), 1))) == evidence_hazard(plain)
    assert 0 < evidence_risk(high, H) < evidence_risk(low, H) < 1
    # two scores at the same instant: the lower, whatever the order they arrive in
    assert placement_score(scored((ago(1), 9), (ago(1), 3))) == placement_score(scored((ago(1), 3), (ago(1), 9))) == 3


@settings(max_examples=100, deadline=None)
@given(own=observation_logs(span_h=160.0), horizons=st.lists(st.floats(0.0, 1e7), min_size=2, max_size=2))
def test_evidence_risk_is_a_probability_growing_with_the_horizon(own, horizons):
    ev = PoolEvidence(now=T0 + 160 * H, observations=tuple(own))
    short, long = sorted(horizons)
    assert 0.0 <= evidence_risk(ev, short) <= evidence_risk(ev, long) <= 1.0


# ---- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"now": NAN}, "now"),
    ({"now": math.inf}, "now"),
    ({"now": "2024-01-01"}, "now"),
    ({"now": None}, "now"),
    ({"price_times": (T0,), "prices": ()}, "prices"),
    ({"price_times": (), "prices": (1.0,)}, "prices"),
    ({"advisor_band": 5}, "advisor_band"),
    ({"advisor_band": -1}, "advisor_band"),
    ({"advisor_band": 2.0}, "advisor_band"),
    ({"advisor_band": True}, "advisor_band"),
    ({"advisor_band": "2"}, "advisor_band"),
])
def test_pool_evidence_rejects_bad_input(kwargs, field):
    kwargs = {"now": T0, **kwargs}
    with pytest.raises(InvalidRiskInputError) as caught:
        PoolEvidence(**kwargs)
    assert isinstance(caught.value, ValidationError) and caught.value.field == field
