"""Worked examples of the savings roll-up (the numbers a reader can check by hand)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from components.calculations import InstanceRun, day_key, hourly_parts, roll_up

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
OD = Decimal("0.10")


def run(iid, mode, start_h, end_h, points=(), fallback=None, od=OD):
    return InstanceRun(iid, "ag-1", mode, T0 + timedelta(hours=start_h), T0 + timedelta(hours=end_h), od,
                       tuple((T0 + timedelta(hours=h), Decimal(p)) for h, p in points), fallback)


def total(parts):
    b = roll_up(parts, lambda p: "all")["all"]
    return b.actual, b.baseline, b.savings


def test_spot_price_steps_are_integrated_exactly():
    parts = hourly_parts(run("i-1", "spot", 0, 3, points=[(0, "0.03"), (1.5, "0.05")]), T0, T0 + timedelta(days=1))
    # 1.5 h at 0.03 + 1.5 h at 0.05 = 0.12; baseline 3 h x 0.10 = 0.30
    assert total(parts) == (Decimal("0.12"), Decimal("0.30"), Decimal("0.18"))
    assert [p.actual for p in parts] == [Decimal("0.03"), Decimal("0.04"), Decimal("0.05")]


def test_switch_overlap_both_instances_cost():
    old = run("i-old", "spot", 0, 2.5, points=[(0, "0.04")])
    new = run("i-new", "spot", 2, 4, points=[(0, "0.02")])
    parts = [p for r in (old, new) for p in hourly_parts(r, T0, T0 + timedelta(days=1))]
    actual, baseline, _ = total(parts)
    assert actual == Decimal("0.04") * Decimal("2.5") + Decimal("0.02") * 2
    assert baseline == OD * Decimal("4.5")  # the overlap half hour is capacity both ways


def test_discount_lowers_the_baseline_and_on_demand_saves_nothing():
    parts = hourly_parts(run("i-1", "spot", 0, 10, points=[(0, "0.03")]), T0, T0 + timedelta(days=1), 20)
    assert total(parts) == (Decimal("0.30"), Decimal("0.80"), Decimal("0.50"))
    od_parts = hourly_parts(run("i-2", "ondemand", 0, 10), T0, T0 + timedelta(days=1), 20)
    assert total(od_parts) == (Decimal("0.80"), Decimal("0.80"), Decimal("0"))


def test_unknown_prices_never_claim_savings():
    no_spot = hourly_parts(run("i-1", "spot", 0, 2), T0, T0 + timedelta(days=1))
    assert total(no_spot)[2] == 0
    no_od = hourly_parts(run("i-2", "spot", 0, 2, points=[(0, "0.03")], od=None), T0, T0 + timedelta(days=1))
    assert total(no_od) == (Decimal("0.06"), Decimal("0.06"), Decimal("0"))


def test_parts_are_cut_at_the_window_and_at_midnight():
    r = run("i-1", "spot", 12, 16, points=[(0, "0.05")])  # 22:00 → 02:00 next day
    parts = hourly_parts(r, T0 + timedelta(hours=13), T0 + timedelta(days=2))
    assert len(parts) == 3
    days = roll_up(parts, lambda p: day_key(p.hour))
    assert days["2026-03-01"].spot_seconds == 3600 and days["2026-03-02"].spot_seconds == 7200


def test_a_standby_costs_and_adds_no_baseline():
    """The client would run no standby on demand: a spot standby's hours are a cost, never a saving (they
    counted in the baseline, so a standby at 0.03 'saved' 0.07/h and an on-demand one hid its cost)."""
    spot = hourly_parts(InstanceRun("i-s", "ag-1", "spot", T0, T0 + timedelta(hours=2), OD,
                                    ((T0, Decimal("0.03")),), in_baseline=False), T0, T0 + timedelta(days=1))
    assert total(spot) == (Decimal("0.06"), Decimal("0"), Decimal("-0.06"))
    ondemand = hourly_parts(InstanceRun("i-o", "ag-1", "ondemand", T0, T0 + timedelta(hours=2), OD,
                                        in_baseline=False), T0, T0 + timedelta(days=1))
    assert total(ondemand) == (Decimal("0.20"), Decimal("0"), Decimal("-0.20"))
    assert sum(p.spot_seconds for p in spot) == 7200 and sum(p.ondemand_seconds for p in ondemand) == 7200


def test_a_promoted_standby_counts_in_the_baseline_from_its_promotion():
    promoted = InstanceRun("i-p", "ag-1", "spot", T0, T0 + timedelta(hours=3), OD, ((T0, Decimal("0.04")),),
                           baseline_from=T0 + timedelta(hours=1, minutes=30))
    parts = hourly_parts(promoted, T0, T0 + timedelta(days=1))
    assert total(parts) == (Decimal("0.12"), Decimal("0.15"), Decimal("0.03"))
    assert [p.baseline for p in parts] == [Decimal("0"), Decimal("0.05"), Decimal("0.10")]
    no_od = InstanceRun("i-q", "ag-1", "spot", T0, T0 + timedelta(hours=2), None, ((T0, Decimal("0.04")),),
                        baseline_from=T0 + timedelta(hours=1))
    assert total(hourly_parts(no_od, T0, T0 + timedelta(days=1))) == (Decimal("0.08"), Decimal("0.04"),
                                                                      Decimal("-0.04"))
