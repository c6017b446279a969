from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from components.data_valve import (
    InvalidPricePointError,
    PointQuality,
    PriceOutOfRangeError,
    PricePoint,
    ValveConfig,
    admit,
    dedup_batch,
    expires_at,
    validate_ondemand_price,
    validate_spot_price,
)
from components.errors import ValidationError

POOL = "m5.large.us-east-1a"
T0 = datetime(2024, 6, 1, tzinfo=UTC)
D = Decimal


def pt(seconds, price, source="a", quality=PointQuality.ACTUAL, sources=1, pool=POOL):
    return PricePoint(pool, T0 + timedelta(seconds=seconds), D(price), quality, source, sources)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.0312", D("0.0312")), (0.5, D("0.5")), (1, D("1")), (D("100"), D("100")), ("0.001", D("0.001"))],
)
def test_validate_spot_price_accepts_numbers_in_range(raw, expected):
    assert validate_spot_price(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["0.0009", "100.0001", 0, -1, "NaN", float("nan"), float("inf"), "Infinity", "abc", "", None, True, [1]],
)
def test_validate_spot_price_rejects(raw):
    with pytest.raises(PriceOutOfRangeError) as info:
        validate_spot_price(raw, field="spot_price")
    assert info.value.field == "spot_price"
    assert isinstance(info.value, ValidationError)


def test_ondemand_range_is_wider_than_spot():
    assert validate_ondemand_price("150") == D("150")
    with pytest.raises(PriceOutOfRangeError):
        validate_spot_price("150")
    with pytest.raises(PriceOutOfRangeError):
        validate_ondemand_price("200.01")


def test_config_bounds_are_used():
    cfg = ValveConfig(spot_min=D("1"), spot_max=D("2"))
    assert validate_spot_price("1.5", cfg) == D("1.5")
    with pytest.raises(PriceOutOfRangeError):
        validate_spot_price("0.5", cfg)


# --- admit: duplicates and averaging ----------------------------------------------------------


def test_exact_duplicate_writes_nothing():
    recent = [pt(0, "0.03")]
    result = admit(recent, pt(0, "0.05"))
    assert result.outcome == "exact_duplicate"
    assert result.upserts == () and result.deletes == ()
    assert result.recent == tuple(recent)


def test_close_report_from_other_agent_is_averaged_and_written():
    # GIVEN agent a reported 0.0300; agent b reports 0.0301 two seconds later (0.33 % apart)
    recent = [pt(0, "0.0300", "a")]
    result = admit(recent, pt(2, "0.0301", "b"))
    # THEN the merged mean is written (the legacy valve dropped it)
    assert result.outcome == "averaged"
    (merged,) = result.upserts
    assert merged.price == D("0.03005")
    assert (merged.sources, merged.quality, merged.ts, merged.source_agent_id) == (
        2, PointQuality.AVERAGED, T0, "a"
    )
    assert result.deletes == ()
    assert result.recent == (merged,)


def test_running_mean_weights_existing_sources():
    # GIVEN a point already averaged from 3 reports
    recent = [pt(0, "0.0300", "a", PointQuality.AVERAGED, sources=3)]
    result = admit(recent, pt(1, "0.0301", "d"))
    # THEN the mean is (0.03*3 + 0.0301)/4, not the pairwise mean
    assert result.upserts[0].price == D("0.030025")
    assert result.upserts[0].sources == 4


def test_averaging_with_a_later_point_moves_the_key_earlier():
    recent = [pt(10, "0.0300", "a")]
    result = admit(recent, pt(7, "0.0300", "b"))
    assert result.outcome == "averaged"
    assert result.upserts[0].ts == T0 + timedelta(seconds=7)
    assert result.upserts[0].source_agent_id == "b"
    assert result.deletes == (recent[0],)
    assert [p.ts for p in result.recent] == [T0 + timedelta(seconds=7)]


@pytest.mark.parametrize(
    ("incoming", "reason"),
    [
        (pt(2, "0.0300", "a"), "same agent"),
        (pt(6, "0.0300", "b"), "outside the 5 s window"),
        (pt(2, "0.0302", "b"), "0.67 % apart, above tolerance"),
    ],
)
def test_no_averaging(incoming, reason):
    result = admit([pt(0, "0.0300", "a")], incoming)
    assert result.outcome == "stored", reason
    assert result.upserts == (incoming,)


def test_window_and_tolerance_edges_are_inclusive():
    # 5 s apart and exactly 0.5 % apart -> still a duplicate
    result = admit([pt(0, "0.0200", "a")], pt(5, "0.0201", "b"))
    assert result.outcome == "averaged"


def test_interpolated_points_are_never_averaged_and_get_overwritten():
    filler = pt(60, "0.0300", None, PointQuality.INTERPOLATED)
    real = pt(60, "0.0300", None)
    result = admit([pt(0, "0.03"), filler], real)
    assert result.outcome == "stored"
    assert result.recent[-1] == real


# --- admit: storing and gap fill ----------------------------------------------------------------


def test_first_point_is_stored_without_gap():
    incoming = pt(0, "0.03")
    result = admit([], incoming)
    assert (result.outcome, result.upserts, result.filled, result.gap_s) == ("stored", (incoming,), 0, None)


def test_short_gap_is_linearly_filled_every_step():
    # GIVEN the last point is 240 s old  WHEN a new price arrives
    result = admit([pt(0, "0.0300")], pt(240, "0.0700", "b"))
    # THEN 3 interpolated points at 60/120/180 s, then the real point
    assert result.outcome == "stored"
    assert result.filled == 3 and result.gap_s == 240.0
    filled = result.upserts[:-1]
    assert [p.ts - T0 for p in filled] == [timedelta(seconds=s) for s in (60, 120, 180)]
    assert [p.price for p in filled] == [D("0.04"), D("0.05"), D("0.06")]
    assert all(p.quality is PointQuality.INTERPOLATED and p.source_agent_id is None for p in filled)
    assert result.upserts[-1].ts == T0 + timedelta(seconds=240)


@pytest.mark.parametrize(("gap", "filled"), [(90, 0), (91, 1), (600, 9), (601, 0), (30, 0)])
def test_gap_bounds(gap, filled):
    result = admit([pt(0, "0.03")], pt(gap, "0.03"))
    assert result.filled == filled
    assert result.gap_s == float(gap)


def test_gap_fill_is_capped():
    cfg = ValveConfig(gap_step_s=10, gap_max_points=4)
    result = admit([pt(0, "0.03")], pt(300, "0.04"), cfg)
    assert result.filled == 4 and len(result.upserts) == 5


def test_out_of_order_point_is_stored_without_fill():
    recent = [pt(0, "0.03"), pt(300, "0.03")]
    late = pt(100, "0.05", "b")
    result = admit(recent, late)
    assert (result.outcome, result.upserts, result.filled) == ("out_of_order", (late,), 0)
    assert [p.ts for p in result.recent] == sorted(p.ts for p in result.recent)


def test_recent_window_is_trimmed_to_recent_keep():
    cfg = ValveConfig(recent_keep=3)
    recent = [pt(i * 30, "0.03") for i in range(3)]
    result = admit(recent, pt(150, "0.03"), cfg)
    assert len(result.recent) == 3
    assert result.recent[-1].ts == T0 + timedelta(seconds=150)
    assert [p.ts - T0 for p in result.recent] == [timedelta(seconds=s) for s in (30, 60, 150)]


def test_admit_rejects_a_window_from_another_pool():
    with pytest.raises(InvalidPricePointError):
        admit([pt(0, "0.03", pool="t3.micro.us-east-1a")], pt(10, "0.03"))


def test_price_point_needs_aware_ts_and_decimal():
    with pytest.raises(InvalidPricePointError):
        PricePoint(POOL, datetime(2024, 1, 1), D("0.03"))
    with pytest.raises(InvalidPricePointError):
        PricePoint(POOL, T0, 0.03)


# --- retention and batch ----------------------------------------------------------------------


def test_expires_at_adds_retention_days():
    assert expires_at(T0) == int(T0.timestamp()) + 90 * 86400
    assert expires_at(T0, ValveConfig(retention_days=7)) == int(T0.timestamp()) + 7 * 86400


def test_dedup_batch_merges_clusters_and_never_fills_gaps():
    points = [
        pt(0, "0.0300", "a"),
        pt(2, "0.0301", "b"),
        pt(3, "0.0300", "c"),
        pt(300, "0.0500", "a"),
        pt(300, "0.0500", "a"),  # exact duplicate
    ]
    result = dedup_batch(points)
    assert [(p.ts - T0, p.sources) for p in result] == [(timedelta(0), 3), (timedelta(seconds=300), 1)]
    assert result[0].price == (D("0.0300") * 2 + D("0.0301")) / 3
    assert all(p.quality is not PointQuality.INTERPOLATED for p in result)


def test_dedup_batch_keeps_pools_apart():
    points = [pt(0, "0.03", "a"), pt(1, "0.03", "b", pool="m5.large.us-east-1b")]
    result = dedup_batch(points)
    assert sorted(p.pool_id for p in result) == [POOL, "m5.large.us-east-1b"]
    assert all(p.sources == 1 for p in result)
