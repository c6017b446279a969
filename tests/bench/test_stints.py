"""bench.backtest.stints: the value of a spot stint against on-demand, by hand and against the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from bench.backtest import Rules, simulate
from bench.backtest.stints import pool_stints, run_age_hazard, runs_of, stint_values
from tests.bench.helpers import ONDEMAND, Script, make_trace

HALF_HOUR = 1800
RULES = Rules.for_ondemand_price(3.0)  # boot 300 s, notice 120 s, downtime 72 $/h


def test_runs_are_the_stretches_of_obtainable_ticks():
    assert runs_of(np.array([0, 1, 1, 0, 1, 0, 0, 1])) == [(1, 3), (4, 5), (7, 8)]
    assert runs_of(np.array([0, 0])) == []


def test_a_stint_held_to_the_warning_pays_the_boot_the_notice_and_the_gap():
    # 10 h at 1 $/h against 3 $/h: on-demand not paid for 10 h − boot, spot paid 10 h + notice, 180 s down
    (value,) = stint_values(np.array([10.0]), np.array([1.0]), 3.0, RULES, None)
    assert value == pytest.approx(3 * (10 - 1 / 12) - (10 + 1 / 30) - 72 * (1 / 12 - 1 / 30))
    # left after 9.5 h (the run lasts 9.5 h + boot): no warning, both boots overlap
    (planned,) = stint_values(np.array([10.0]), np.array([1.0]), 3.0, RULES, 9.5)
    assert planned == pytest.approx(2 * 9.5 - 4 / 12)
    # a run too short for the planned exit: the warning comes first
    (short,) = stint_values(np.array([1.0]), np.array([1.0]), 3.0, RULES, 9.5)
    assert short == pytest.approx(3 * (1 - 1 / 12) - (1 + 1 / 30) - 72 * (1 / 12 - 1 / 30))


def test_short_runs_gain_nothing_and_long_runs_gain_most_when_left_before_they_end():
    short = [1, 0] * 21  # half-hour runs: each stint loses the downtime, no exit rule helps
    long = ([1] * 20 + [0]) * 2  # 10 h runs: leaving after 9.5 h beats waiting for the warning
    trace = make_trace(np.array([short, long]).T, 1.0, tick_s=HALF_HOUR)
    s = pool_stints(trace, 0, 0, trace.ticks, RULES)
    assert s.runs == 21 and s.gaining_runs == 0 and s.until_warned_usd < 0 and s.best_exit_h is None and s.best_exit_usd == 0
    s = pool_stints(trace, 1, 0, trace.ticks, RULES)
    assert s.runs == 2 and s.gaining_runs == 2 and s.max_run_h == pytest.approx(10.0)
    assert s.best_exit_h == pytest.approx(9.5) and s.best_exit_usd > s.until_warned_usd > 0


def test_held_to_the_warning_is_what_the_simulator_charges():
    """A policy that enters every run at its first tick and holds to the warning saves, against
    on-demand, exactly the sum of the stints' values (the formula is the simulator's accounting)."""
    pattern = [0, 0] + [1] * 6 + [0, 0] + [1] * 3 + [0] * 3 + [1] * 9 + [0, 0]
    trace = make_trace(np.array([pattern]).T, 1.2, ondemand=3.0, tick_s=HALF_HOUR)
    follow = Script(lambda obs: trace.pools[0] if obs.available[0] else ONDEMAND, first=ONDEMAND)
    on_demand = Script(lambda obs: ONDEMAND, first=ONDEMAND)
    got = simulate(trace, follow, RULES, 0, trace.ticks).score
    base = simulate(trace, on_demand, RULES, 0, trace.ticks).score
    s = pool_stints(trace, 0, 0, trace.ticks, RULES)
    assert s.runs == 3
    assert base - got == pytest.approx(s.until_warned_usd, rel=1e-9)


def test_the_command_names_unknown_datasets_and_writes_the_table(tmp_path, capsys):
    from bench.backtest import stints

    assert stints.main(["--dataset", "no-such-row"]) == 2
    assert "unknown datasets ['no-such-row']" in capsys.readouterr().err
    out = tmp_path / "stints.md"
    assert stints.main(["--dataset", "gpu-p2.8xlarge", "--markdown", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if "p2.8xlarge." in line]
    assert len(rows) == 2 and all("none gains" in row for row in rows)  # docs/benchmarks.md's GPU p2.8xlarge row


def test_run_age_hazard_is_ends_per_hour_lived_in_each_band():
    # runs of 0.25 h, 0.75 h, 3 h: band [0, 0.5) lives 0.25 + 0.5 + 0.5 h and sees one end; [0.5, 1) lives
    # 0.25 + 0.5 h and sees one end; [1, 2) lives 1 h, no end; [2, 4) lives 1 h and one end
    table = run_age_hazard([0.25, 0.75, 3.0], bands_h=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0))
    assert [(lo, hi, n) for lo, hi, n, _ in table] == [(0.0, 0.5, 3), (0.5, 1.0, 2), (1.0, 2.0, 1), (2.0, 4.0, 1),
                                                        (4.0, 8.0, 0)]
    hazards = [h for *_, h in table]
    assert hazards[:4] == pytest.approx([1 / 1.25, 1 / 0.75, 0.0, 1.0])
    assert np.isnan(hazards[4])


def test_a_run_still_going_when_the_window_closes_counts_its_hours_but_no_end():
    (band,) = run_age_hazard([1.0, 1.0], bands_h=(0.0, 2.0), open_ended=[False, True])
    assert band == (0.0, 2.0, 2, pytest.approx(1 / 2.0))
