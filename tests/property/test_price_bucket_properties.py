"""Properties of the price buckets (components/price_buckets.py): the pricing aggregator's arithmetic."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from components.price_buckets import (
    DAY,
    HOUR,
    Bucket,
    affected_starts,
    changes,
    floor_to,
    merged_buckets,
    price_buckets,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
END = T0 + timedelta(hours=30)
prices = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100"), places=6)
offsets = st.integers(min_value=0, max_value=30 * 3600 - 1)
series = st.lists(st.tuples(offsets, prices), min_size=1, max_size=40).map(
    lambda pts: [(T0 + timedelta(seconds=s), p) for s, p in pts])
carries = st.one_of(st.none(), st.integers(min_value=60, max_value=12 * 3600).map(lambda s: timedelta(seconds=s)))


def _by_start(buckets):
    return {b.start: b for b in buckets}


@settings(max_examples=200, deadline=None)
@given(series, carries)
def test_average_within_low_and_high(points, carry):
    """Every hourly and daily bucket's time-weighted average lies within its own min and max, and the
    last price is one of the prices in force."""
    hourly = price_buckets(points, T0, END, max_carry=carry)
    for b in hourly + merged_buckets(hourly, T0, END, DAY):
        assert b.low <= b.avg <= b.high
        assert b.low <= b.last <= b.high
        assert 0 < b.covered_s <= b.seconds or b.covered_s == 0
    seen = {p for _, p in points}
    assert all(b.low in seen and b.high in seen and b.last in seen for b in hourly)


@settings(max_examples=200, deadline=None)
@given(series, carries, st.integers(min_value=1, max_value=29))
def test_sub_windows_give_the_same_buckets(points, carry, split_h):
    """Aggregating [T0, split) and [split, END) separately gives the buckets of [T0, END): a re-run of
    any window rewrites the same values (idempotent), and windows can be recomputed independently."""
    whole = price_buckets(points, T0, END, max_carry=carry)
    split = T0 + timedelta(hours=split_h)
    parts = price_buckets(points, T0, split, max_carry=carry) + price_buckets(points, split, END, max_carry=carry)
    assert parts == whole
    assert price_buckets(points, T0, END, max_carry=carry) == whole
    puts, deletes = changes(_by_start(whole), _by_start(whole), (T0, END))
    assert puts == [] and deletes == []


@settings(max_examples=200, deadline=None)
@given(series, st.integers(min_value=1, max_value=6))
def test_gap_fill_carries_the_last_price(points, empty_hours):
    """Hours after the last point that hold no point of their own are filled with the last price
    (flat: avg = min = max = last), marked filled; they reach as far as the carry allows."""
    last_ts, last_price = max(points, key=lambda p: (p[0], p[1]))
    last_ts = max(t for t, _ in points)
    last_price = max(p for t, p in points if t == last_ts)
    end = floor_to(last_ts, HOUR) + timedelta(hours=1 + empty_hours)
    buckets = _by_start(price_buckets(points, T0, end))
    for h in range(1, empty_hours + 1):
        b = buckets[floor_to(last_ts, HOUR) + timedelta(hours=h)]
        assert b.filled and b.points == 0
        assert b.avg == b.low == b.high == b.last == last_price
        assert b.covered_s == HOUR
    carried = _by_start(price_buckets(points, T0, end, max_carry=timedelta(hours=1)))
    assert all(b.start <= last_ts + timedelta(hours=1) for b in carried.values())


@settings(max_examples=200, deadline=None)
@given(series, offsets, prices)
def test_late_point_changes_only_the_affected_hours(points, late_s, late_price):
    """A point arriving late changes only the buckets from its own hour to the hour of the next point
    after it: the aggregator re-aggregates those and leaves the rest as stored."""
    late = T0 + timedelta(seconds=late_s)
    points = [p for p in points if p[0] != late]
    before = _by_start(price_buckets(points, T0, END))
    after = _by_start(price_buckets(points + [(late, late_price)], T0, END))
    first, last = affected_starts([t for t, _ in points], late)
    puts, deletes = changes(before, after, (T0, END))
    assert deletes == []
    for b in puts:
        assert first <= b.start and (last is None or b.start <= last)


@settings(max_examples=100, deadline=None)
@given(series)
def test_daily_matches_a_day_long_bucket(points):
    """A day merged from its hourly buckets has the min/max/last/points of a day-long bucket computed
    from the raw points, and the same average up to the rounding of whole covered seconds."""
    days_end = T0 + timedelta(days=2)  # whole days only
    hourly = price_buckets(points, T0, days_end)
    daily = _by_start(merged_buckets(hourly, T0, days_end, DAY))
    direct = _by_start(price_buckets(points, T0, days_end, seconds=DAY))
    assert daily.keys() == direct.keys()
    for start, d in daily.items():
        r = direct[start]
        assert (d.low, d.high, d.last, d.points, d.filled) == (r.low, r.high, r.last, r.points, r.filled)
        assert abs(d.avg - r.avg) <= (r.high - r.low) / Decimal(3600) + Decimal("1e-9")


def test_examples():
    """Hand-checked: 0.04 for 30 min then 0.02 → avg 0.03; an hour without points carries 0.02."""
    pts = [(T0, Decimal("0.04")), (T0 + timedelta(minutes=30), Decimal("0.02"))]
    first, second = price_buckets(pts, T0, T0 + timedelta(hours=2))
    assert first == Bucket(T0, HOUR, Decimal("0.03"), Decimal("0.02"), Decimal("0.04"), Decimal("0.02"), 2,
                           HOUR, False)
    assert second.filled and second.avg == Decimal("0.02") and second.points == 0
    # nothing before the first point: the first hour covers from the point on, no bucket before it
    late_start = price_buckets([(T0 + timedelta(minutes=45), Decimal("1"))], T0 - timedelta(hours=1),
                               T0 + timedelta(hours=1))
    assert [(b.start, b.covered_s) for b in late_start] == [(T0, 15 * 60)]
    # known_until stops the carry
    assert price_buckets(pts, T0, T0 + timedelta(hours=3), known_until=T0 + timedelta(minutes=90))[-1].start \
        == T0 + timedelta(hours=1)
