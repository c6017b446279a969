"""Properties of the price gate: validation, gap fill, order-independent batch dedup."""

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from components.data_valve import (
    PointQuality,
    PriceOutOfRangeError,
    PricePoint,
    ValveConfig,
    admit,
    dedup_batch,
    validate_spot_price,
)

POOL = "c5.xlarge.eu-west-1b"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
CFG = ValveConfig()
prices = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100"), places=6)


# --- validation -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(prices)
def test_every_in_range_decimal_is_accepted_unchanged(price):
    assert validate_spot_price(price) == price
    assert validate_spot_price(str(price)) == price


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.001, max_value=100))
def test_every_in_range_float_is_accepted(price):
    assert validate_spot_price(price) == Decimal(repr(price))


out_of_range = st.one_of(
    st.decimals(max_value=Decimal("0.000999999"), allow_nan=False, allow_infinity=False),
    st.decimals(min_value=Decimal("100.000001"), allow_nan=False, allow_infinity=False),
    st.floats(max_value=0.000999, allow_nan=False),
    st.floats(min_value=100.0001, allow_nan=False),
)
not_finite = st.sampled_from(
    [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"),
     math.nan, math.inf, -math.inf, "nan", "inf", "-Infinity"]
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(out_of_range, not_finite, st.text(alphabet="abcxyz ,$", max_size=5)))
def test_every_out_of_range_or_non_finite_price_is_rejected(raw):
    try:
        validate_spot_price(raw)
    except PriceOutOfRangeError as exc:
        assert exc.field == "price"
    else:  # pragma: no cover - the property failing
        raise AssertionError(f"accepted {raw!r}")


# --- gap fill -------------------------------------------------------------------------------

configs = st.builds(
    ValveConfig,
    gap_min_s=st.integers(0, 200),
    gap_max_s=st.integers(200, 1200),
    gap_step_s=st.integers(1, 120),
    gap_max_points=st.integers(0, 15),
)


@settings(max_examples=200, deadline=None)
@given(
    config=configs,
    p0=prices,
    p1=prices,
    gap_ms=st.integers(1, 1_500_000),
)
def test_gap_fill_is_bounded_and_between_neighbours(config, p0, p1, gap_ms):
    last = PricePoint(POOL, T0, p0, source_agent_id="a")
    incoming = PricePoint(POOL, T0 + timedelta(milliseconds=gap_ms), p1, source_agent_id="a")
    result = admit([last], incoming, config)
    filled = [p for p in result.upserts if p.quality is PointQuality.INTERPOLATED]

    assert result.filled == len(filled) <= config.gap_max_points
    gap_s = gap_ms / 1000
    if not config.gap_min_s < gap_s <= config.gap_max_s:
        assert filled == []
    low, high = min(p0, p1), max(p0, p1)
    times = [last.ts] + [p.ts for p in filled] + [incoming.ts]
    assert times == sorted(times) and len(set(times)) == len(times)  # strictly between, ascending
    for point in filled:
        assert low <= point.price <= high
        assert point.source_agent_id is None


# --- batch dedup ----------------------------------------------------------------------------

# Well-separated clusters: cluster starts are 60 s apart (far beyond the 5 s window) and the
# price levels inside one cluster are >= 10 % apart (far beyond the 0.5 % tolerance). Inside a
# cluster, points stay within 2 s and 0.2 % of the level, so every pair that *can* merge clearly
# does and no pair sits on the tolerance boundary.
LEVELS = [Decimal("0.0300"), Decimal("0.0400"), Decimal("0.0500")]
cluster_point = st.builds(
    lambda cluster, level, ms, bp, source: PricePoint(
        POOL,
        T0 + timedelta(seconds=60 * cluster, milliseconds=ms),
        LEVELS[level] * (1 + Decimal(bp) / 10_000),
        source_agent_id=source,
    ),
    st.integers(0, 4),
    st.integers(0, len(LEVELS) - 1),
    st.integers(0, 2000),
    st.integers(0, 20),
    st.sampled_from(["a", "b", "c", "d"]),
)


def with_permutation(points):
    return st.tuples(st.just(points), st.permutations(points))


@settings(max_examples=200, deadline=None)
@given(st.lists(cluster_point, max_size=25).flatmap(with_permutation))
def test_dedup_batch_is_order_independent(pair):
    points, shuffled = pair
    result = dedup_batch(points)
    assert dedup_batch(shuffled) == result
    assert dedup_batch(reversed(points)) == result
    # and it only ever merges: no point invented, none counted twice
    assert sum(p.sources for p in result) <= len(points)
    assert len({p.ts for p in result}) == len(result)
    for point in result:
        nearest = min(LEVELS, key=lambda lv: abs(lv - point.price))
        assert nearest <= point.price <= nearest * Decimal("1.002")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.builds(
            lambda s, p, src: PricePoint(POOL, T0 + timedelta(seconds=s), p, source_agent_id=src),
            st.integers(0, 30),
            st.sampled_from([Decimal("0.0300"), Decimal("0.03015"), Decimal("0.0302"), Decimal("0.0303")]),
            st.sampled_from(["a", "b", None]),
        ),
        max_size=15,
    ).flatmap(with_permutation)
)
def test_dedup_batch_is_order_independent_even_on_boundaries(pair):
    # Not required by the spec, but true by construction: the batch is sorted on every field
    # before folding, so even tolerance-boundary chains give one answer.
    points, shuffled = pair
    assert dedup_batch(shuffled) == dedup_batch(points)


@settings(max_examples=100, deadline=None)
@given(st.lists(cluster_point, min_size=1, max_size=20))
def test_admit_window_is_sorted_and_bounded(points):
    recent: tuple[PricePoint, ...] = ()
    for point in sorted(points, key=lambda p: p.ts):
        result = admit(recent, point, CFG)
        assert result.outcome in {"stored", "averaged", "exact_duplicate", "out_of_order"}
        recent = result.recent
        assert len(recent) <= CFG.recent_keep
        assert [p.ts for p in recent] == sorted({p.ts for p in recent})
