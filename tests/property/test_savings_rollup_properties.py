"""Properties of the savings roll-up: conservation, zero for on-demand, determinism, late data locality."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from components.calculations import (
    InstanceRun,
    day_key,
    floor_hour,
    hourly_parts,
    month_key,
    roll_up,
)

T0 = datetime(2026, 1, 30, 20, tzinfo=UTC)  # spans a day and a month boundary within the window
WINDOW_END = T0 + timedelta(days=4)
prices = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("5"), places=5)
offsets = st.integers(min_value=0, max_value=4 * 24 * 3600)


@st.composite
def runs(draw, mode=None):
    start = T0 + timedelta(seconds=draw(offsets))
    end = start + timedelta(seconds=draw(st.integers(min_value=1, max_value=3 * 24 * 3600)))
    points = tuple((T0 + timedelta(seconds=draw(offsets)), draw(prices))
                   for _ in range(draw(st.integers(min_value=0, max_value=6))))
    return InstanceRun(
        instance_id=f"i-{draw(st.integers(min_value=0, max_value=5))}",
        agent_id=f"ag-{draw(st.integers(min_value=0, max_value=2))}",
        mode=mode or draw(st.sampled_from(["spot", "ondemand", "unknown"])),
        start=start, end=end,
        ondemand_price=draw(st.one_of(st.none(), prices)),
        spot_points=points, spot_fallback=draw(st.one_of(st.none(), prices)))


discounts = st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=2)


def _parts(fleet, discount):
    return [p for run in fleet for p in hourly_parts(run, T0, WINDOW_END, discount)]


@settings(max_examples=150, deadline=None)
@given(st.lists(runs(), max_size=6), discounts)
def test_conservation_across_every_grouping(fleet, discount):
    parts = _parts(fleet, discount)
    total_actual = sum((p.actual for p in parts), Decimal(0))
    total_baseline = sum((p.baseline for p in parts), Decimal(0))
    for key in (lambda p: p.hour, lambda p: day_key(p.hour), lambda p: month_key(p.hour),
                lambda p: p.instance_id, lambda p: (p.agent_id, day_key(p.hour))):
        buckets = roll_up(parts, key)
        assert sum((b.actual for b in buckets.values()), Decimal(0)) == total_actual
        assert sum((b.baseline for b in buckets.values()), Decimal(0)) == total_baseline
    days = roll_up(parts, lambda p: day_key(p.hour))
    months = roll_up(parts, lambda p: month_key(p.hour))
    for month, bucket in months.items():
        in_month = [b for d, b in days.items() if d.startswith(month)]
        assert sum((b.savings for b in in_month), Decimal(0)) == bucket.savings


@settings(max_examples=100, deadline=None)
@given(st.lists(runs(), max_size=6))
def test_time_is_conserved(fleet):
    for run in fleet:
        parts = hourly_parts(run, T0, WINDOW_END)
        ran = (min(run.end, WINDOW_END) - max(run.start, T0)).total_seconds()
        assert sum(p.spot_seconds + p.ondemand_seconds for p in parts) == Decimal(str(max(ran, 0)))
        assert all(p.hour == floor_hour(p.hour) for p in parts)


@settings(max_examples=150, deadline=None)
@given(st.lists(runs(mode="ondemand"), max_size=6), discounts)
def test_all_on_demand_saves_exactly_zero(fleet, discount):
    parts = _parts(fleet, discount)
    assert all(p.savings == 0 for p in parts)
    assert sum((b.savings for b in roll_up(parts, lambda p: p.hour).values()), Decimal(0)) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(runs(), max_size=6), discounts)
def test_rerun_changes_nothing(fleet, discount):
    first = _parts(fleet, discount)
    assert first == _parts(list(fleet), discount)
    order = lambda p: (p.hour, p.instance_id, p.agent_id, p.actual, p.baseline, p.spot_seconds, p.ondemand_seconds)  # noqa: E731
    assert sorted(first, key=order) == sorted(_parts(list(reversed(fleet)), discount), key=order)


@settings(max_examples=150, deadline=None)
@given(runs(mode="spot"), offsets, prices)
def test_a_late_price_point_only_changes_hours_from_its_own(run, late_offset, late_price):
    late_ts = T0 + timedelta(seconds=late_offset)
    before = {p.hour: p for p in hourly_parts(run, T0, WINDOW_END)}
    with_late = InstanceRun(**{**run.__dict__, "spot_points": run.spot_points + ((late_ts, late_price),)})
    after = {p.hour: p for p in hourly_parts(with_late, T0, WINDOW_END)}
    assert before.keys() == after.keys()
    first_point = min((ts for ts, _ in run.spot_points), default=None)
    changed = {h for h in before if before[h] != after[h]}
    if run.spot_fallback is not None or (first_point is not None and late_ts >= first_point):
        assert all(h >= floor_hour(late_ts) for h in changed)


@settings(max_examples=100, deadline=None)
@given(st.lists(runs(), max_size=5), runs(), discounts)
def test_a_late_instance_only_changes_its_own_hours(fleet, late, discount):
    late = InstanceRun(**{**late.__dict__, "instance_id": "i-late"})
    before = roll_up(_parts(fleet, discount), lambda p: p.hour)
    after = roll_up(_parts(fleet + [late], discount), lambda p: p.hour)
    late_hours = {p.hour for p in hourly_parts(late, T0, WINDOW_END, discount)}
    for hour in set(before) | set(after):
        if hour not in late_hours:
            assert before[hour] == after[hour]
