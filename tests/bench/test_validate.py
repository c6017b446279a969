"""The validation protocol's folds: selection only on other sources / earlier windows, scored on the held-out
part; and the runner on tiny hand-made traces (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.backtest import Rules, run_backtest
from bench.backtest.ours import OursPolicy
from bench.backtest.validate import (
    BASELINES,
    DEFAULT,
    GRID,
    Dataset,
    Setting,
    datasets,
    leave_one_source_out,
    markdown,
    run,
    select,
    summary,
    walk_forward,
)
from tests.bench.helpers import make_trace

GRID_KEYS = [DEFAULT, "a", "b"]


def scores(defaults, a, b, baseline=2.0):
    return {**{name: baseline + k for k, name in enumerate(BASELINES)}, DEFAULT: defaults, "a": a, "b": b}


def test_select_takes_the_lowest_mean_and_breaks_ties_by_grid_order():
    assert select([scores(1.2, 1.1, 1.3), scores(1.2, 1.4, 1.0)], GRID_KEYS) == "b"  # means 1.2, 1.25, 1.15
    assert select([scores(1.2, 1.2, 1.2)], GRID_KEYS) == DEFAULT
    with pytest.raises(ValueError):
        select([], GRID_KEYS)


def test_a_held_out_dataset_never_selects_on_its_own_source():
    table = {"x1": scores(1.5, 1.0, 1.9),   # source x loves "a"
             "x2": scores(1.5, 1.0, 1.9),
             "y": scores(1.5, 1.9, 1.2)}    # source y loves "b"
    rows = {r["dataset"]: r for r in leave_one_source_out(table, {"x1": "x", "x2": "x", "y": "y"}, GRID_KEYS)}
    # x1 is scored with what y prefers, not with what its twin x2 prefers
    assert rows["x1"]["selected_on"] == ["y"] and rows["x1"]["chosen"] == "b"
    assert rows["x1"]["chosen_score"] == 1.9 and rows["x1"]["hindsight"] == "a"
    assert rows["y"]["selected_on"] == ["x1", "x2"] and rows["y"]["chosen"] == "a"
    assert rows["y"]["default_score"] == 1.5
    assert rows["y"]["best_baseline"] == BASELINES[0] and rows["y"]["best_baseline_score"] == 2.0
    s = summary(list(rows.values()))
    assert s["folds"] == 3 and s["chosen_beats_default"] == 0 and s["default_beats_chosen"] == 3
    assert s["chosen_at_most_best_baseline"] == 3


def test_time_splits_select_on_earlier_windows_only():
    windows = [scores(1.5, 1.0, 1.9), scores(1.5, 1.9, 1.2), scores(1.4, 1.3, 1.1)]
    rows = walk_forward(windows, GRID_KEYS)
    assert [r["window"] for r in rows] == [1, 2]
    assert rows[0]["chosen"] == "a" and rows[0]["chosen_score"] == 1.9  # chosen on window 0 alone
    # means over windows 0-1: defaults 1.5, a 1.45, b 1.55 → "a", scored on window 2 (where b was best)
    assert rows[1]["chosen"] == "a" and rows[1]["chosen_score"] == 1.3 and rows[1]["hindsight"] == "b"


def tiny(seed, pools=3, ticks=600):
    rng = np.random.default_rng(seed)
    avail = (rng.random((ticks, pools)) > 0.08).astype(np.int8)
    return make_trace(avail, np.linspace(1.0, 1.6, pools), tick_s=300, name=f"tiny-{seed}")


def test_the_runner_on_tiny_traces_matches_plain_backtests():
    grid = (Setting(DEFAULT), Setting("horizon 2 h", {"horizon_s": 7200.0}))
    sets = [Dataset("t1", "tiny 1", "s1", lambda: tiny(1)), Dataset("t2", "tiny 2", "s2", lambda: tiny(2)),
            Dataset("t3", "tiny 3", "s2", lambda: tiny(3), real=False)]
    doc = run(sets, grid, log=lambda m: None)
    # the defaults' score is the plain backtest of OursPolicy() over the same window
    trace = tiny(1)
    plain = run_backtest(trace, ["ours"], Rules.for_ondemand_price(trace.ondemand_price), 0.6)
    assert doc["scores"]["t1"][DEFAULT] == pytest.approx(plain["policies"]["ours"]["score_ratio_to_oracle"])
    folds = {r["dataset"]: r for r in doc["leave_one_source_out"]["folds"]}
    assert folds["t1"]["selected_on"] == ["t2", "t3"] and folds["t2"]["selected_on"] == ["t1"]
    for key, row in folds.items():
        assert row["chosen_score"] == doc["scores"][key][row["chosen"]]
    assert set(doc["window_scores"]) == {"t1", "t2"}  # time splits only on real availability
    assert [r["window"] for r in doc["time_splits"]["folds"]] == [1, 2, 1, 2]
    text = markdown(doc)
    assert "| tiny 1 |" in text and "Time splits" in text


def test_the_protocol_covers_the_documented_datasets_and_a_small_grid():
    keys = {d.key: d for d in datasets()}
    assert {"p3-9az-boot120", "p3-9az-boot300", "p3-9az-boot600", "p3-use1", "eu-west-1",
            "gpu-p2.xlarge", "gpu-p3.2xlarge"} <= set(keys)
    assert not keys["eu-west-1"].real and keys["p3-use1"].source == keys["p3-9az-boot120"].source
    assert len(GRID) <= 6 and GRID[0].key == DEFAULT and not GRID[0].kwargs
    assert all(isinstance(s.policy(), OursPolicy) for s in GRID)
