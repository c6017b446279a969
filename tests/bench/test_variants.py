"""bench/backtest/variants.py and the knobs it turns: the defaults are the product's, each knob does what
it says, and the summary counts rows as documented."""

from __future__ import annotations

import numpy as np
import pytest

from bench.backtest import Rules, run_backtest
from bench.backtest.model import ONDEMAND
from bench.backtest.ours import OursPolicy
from bench.backtest.validate import DEFAULT, Dataset
from bench.backtest.variants import SLICES, VARIANTS, rows, score, summary
from components.capacity import CapacityObservation, ObservationKind
from components.risk_model import PoolEvidence, evidence_hazard
from tests.bench.helpers import make_trace

K = ObservationKind


def test_summary_counts_wins_and_losses_against_the_defaults_and_sorts_by_mean():
    scores = {"a": {DEFAULT: 1.2, "x": 1.1, "y": 1.2}, "b": {DEFAULT: 1.5, "x": 1.7, "y": 1.50001}}
    table = {r["variant"]: r for r in summary(scores, [DEFAULT, "x", "y"])}
    assert table["x"]["better"] == 1 and table["x"]["worse"] == 1 and table["x"]["worst"] == 1.7
    assert table["y"]["better"] == 0 and table["y"]["worse"] == 0  # within 1e-4: a tie
    assert table[DEFAULT]["mean"] == pytest.approx(1.35)
    assert [r["variant"] for r in summary(scores, [DEFAULT, "x", "y"])][0] == DEFAULT  # tie on mean: defaults first


def _tiny(seed: int, ticks: int, obtainable: float, open_from: tuple[int, ...] = ()):
    """A random 3-pool trace (every pool open at the start and from each tick in ``open_from`` for 5 ticks)
    and a Dataset serving it."""
    rng = np.random.default_rng(seed)
    avail = (rng.random((ticks, 3)) < obtainable).astype(np.int8)
    for first in (0, *open_from):
        avail[first:first + 5] = 1
    trace = make_trace(avail, rng.uniform(0.5, 1.5, (ticks, 3)), tick_s=300)
    return trace, Dataset("tiny", "tiny", "tiny", lambda: trace)


def test_the_default_variant_is_the_shipped_policy_and_every_variant_runs():
    trace, tiny = _tiny(3, 120, 0.8)
    scores = score([tiny], VARIANTS, log=lambda _: None)["tiny"]
    assert set(scores) == {v.key for v in VARIANTS}
    plain = run_backtest(trace, [OursPolicy()], Rules.for_ondemand_price(trace.ondemand_price))
    assert scores[DEFAULT] == pytest.approx(plain["policies"]["ours"]["score_ratio_to_oracle"], abs=1e-4)


def test_a_window_scores_only_its_part_of_each_trace():
    trace, tiny = _tiny(5, 200, 0.8, open_from=(80,))
    early = score([tiny], VARIANTS[:1], log=lambda _: None, fractions=(0.4, 0.6))["tiny"][DEFAULT]
    start, end = trace.split_index(0.4), trace.split_index(0.6)
    plain = run_backtest(trace, [OursPolicy()], Rules.for_ondemand_price(trace.ondemand_price), start=start, end=end)
    assert early == pytest.approx(plain["policies"]["ours"]["score_ratio_to_oracle"], abs=1e-4)
    assert score([tiny], VARIANTS[:1], log=lambda _: None)["tiny"][DEFAULT] != early  # the default: 60 % → end


def test_offsets_average_the_window_run_from_successive_start_ticks():
    trace, tiny = _tiny(9, 150, 0.75)
    rules = Rules.for_ondemand_price(trace.ondemand_price)
    start = trace.split_index(0.6)
    each = [run_backtest(trace, [OursPolicy()], rules, start=start + k, end=trace.ticks)["policies"]["ours"]
            ["score_ratio_to_oracle"] for k in range(3)]
    averaged = score([tiny], VARIANTS[:1], log=lambda _: None, offsets=3)["tiny"][DEFAULT]
    assert len({round(e, 4) for e in each}) > 1, each  # the start tick matters here too
    assert averaged == pytest.approx(sum(each) / 3, abs=1e-4)
    with pytest.raises(ValueError):
        score([tiny], VARIANTS[:1], log=lambda _: None, offsets=0)


@pytest.mark.parametrize("bad", ["0.6", "0.6,0.2", "a,b", "0,1.5"])
def test_a_bad_window_is_refused_before_anything_runs(bad, capsys):
    from bench.backtest.variants import main

    with pytest.raises(SystemExit) as exc:
        main(["--window", bad])
    assert exc.value.code == 2 and "--window" in capsys.readouterr().err


def test_the_rows_are_the_real_capacity_datasets_and_the_five_slices():
    keys = [d.key for d in rows()]
    assert "eu-west-1" not in keys  # synthetic interruptions
    assert len([k for k in keys if k.startswith("slice ")]) == len(SLICES) == 5
    assert {"p3-9az-boot300", "p3-9az-boot120", "p3-9az-boot600", "p3-use1"} <= set(keys)


def test_evidence_parameters_change_only_what_they_name():
    obs = (CapacityObservation("p", K.HELD, 0.0), CapacityObservation("p", K.LAUNCH_REFUSED, 1800.0),
           CapacityObservation("p", K.INTERRUPTION_WARNING, 3000.0))
    ev = PoolEvidence(now=3600.0, observations=obs, advisor_band=0)
    base = evidence_hazard(ev)
    assert evidence_hazard(ev, prior_hours=6.0, refusal_weight=1.0) == base  # the defaults
    without = evidence_hazard(ev, refusal_weight=0.0)
    assert without < base
    only_warning = PoolEvidence(now=3600.0, observations=(obs[0], obs[2]), advisor_band=0)
    assert without == pytest.approx(evidence_hazard(only_warning))
    assert evidence_hazard(ev, prior_hours=12.0) < base  # more prior exposure at the band's low rate
    assert evidence_hazard(ev, decay_s=72 * 3600.0) > base  # older events weigh more
    troubled = PoolEvidence(now=3600.0, observations=obs, advisor_band=0, region_observations=tuple(
        CapacityObservation("q", K.INTERRUPTION_WARNING, 600.0 * k) for k in range(1, 6)))
    assert evidence_hazard(troubled) == base  # the region is read only with a region prior
    assert evidence_hazard(troubled, region_prior_hours=6.0) > base


def _policy_with_log(mode: str, current: str) -> OursPolicy:
    policy = OursPolicy(ondemand_backoff=mode)
    policy.log = {"refused": [CapacityObservation("refused", K.LAUNCH_REFUSED, 100.0)],
                  "lost": [CapacityObservation("lost", K.INTERRUPTION_WARNING, 100.0)]}
    policy.current = current
    return policy


@pytest.mark.parametrize("mode, on_demand, expected", [
    ("all", {"refused", "lost"}, {"refused", "lost"}),
    ("losses", {"lost"}, {"refused", "lost"}),
    ("none", set(), {"refused", "lost"}),
])
def test_on_demand_back_off_modes_apply_only_on_on_demand(mode, on_demand, expected):
    assert _policy_with_log(mode, ONDEMAND)._backoff(200.0) == on_demand
    assert _policy_with_log(mode, "other-pool")._backoff(200.0) == expected  # on spot: the product's back-off


def test_an_unknown_back_off_mode_is_refused():
    with pytest.raises(ValueError, match="ondemand_backoff"):
        OursPolicy(ondemand_backoff="sometimes")


def test_every_variant_can_be_named_on_the_command_line():
    keys = [v.key for v in VARIANTS]
    assert len(set(keys)) == len(keys) and not any("," in k for k in keys)  # --variants is a comma list


def test_baselines_are_scored_on_the_same_runs_and_the_standing_names_the_best():
    from bench.backtest.variants import standing

    trace, tiny = _tiny(11, 150, 0.75)
    row = score([tiny], VARIANTS[:1], log=lambda _: None, baselines=("static", "cheapest"))["tiny"]
    plain = run_backtest(trace, [OursPolicy()], Rules.for_ondemand_price(trace.ondemand_price),
                         start=trace.split_index(0.6), end=trace.ticks)["policies"]
    from bench.backtest.policies import POLICIES

    direct = run_backtest(trace, [POLICIES["static"](), POLICIES["cheapest"]()],
                          Rules.for_ondemand_price(trace.ondemand_price), start=trace.split_index(0.6),
                          end=trace.ticks)["policies"]
    assert row[DEFAULT] == pytest.approx(plain["ours"]["score_ratio_to_oracle"], abs=1e-4)
    assert row["static"] == pytest.approx(direct["static"]["score_ratio_to_oracle"], abs=1e-4)
    assert row["cheapest"] == pytest.approx(direct["cheapest"]["score_ratio_to_oracle"], abs=1e-4)
    table = standing({"tiny": row, "other": {DEFAULT: 1.30, "static": 1.2, "cheapest": 1.25}},
                     baselines=("static", "cheapest"))
    other = table[1]
    assert other["best_baseline"] == "static" and other["baseline"] == 1.2 and other["lowest"] is False
    best = min(("static", "cheapest"), key=lambda b: row[b])
    assert table[0]["best_baseline"] == best and table[0]["lowest"] == (row[DEFAULT] <= row[best] + 1e-4)


def test_the_hindsight_grid_holds_the_shipped_policy_and_scores_like_it():
    from bench.backtest.variants import grid_defaults, hindsight_grid

    grid = hindsight_grid()
    keys = [s.key for s in grid]
    assert len(grid) == 72 and len(set(keys)) == 72
    trace, tiny = _tiny(13, 120, 0.8)
    point = next(s for s in grid if s.key == grid_defaults(grid))
    scores = score([tiny], [point, VARIANTS[0]], log=lambda _: None)["tiny"]
    assert scores[point.key] == pytest.approx(scores[DEFAULT], abs=1e-9)  # the grid's defaults are the product's


def test_the_hindsight_table_picks_each_rows_best_and_the_settings_that_reach_the_target_everywhere():
    from bench.backtest.variants import hindsight_markdown, hindsight_table

    scores = {"a": {"d": 1.4, "x": 1.25, "y": 1.29}, "b": {"d": 1.35, "x": 1.31, "y": 1.3}}
    table = hindsight_table(scores, "d", target=1.3)
    a, b, every = table
    assert (a["best"], a["best_score"], a["defaults"], a["reach"]) == ("x", 1.25, 1.4, 2)
    assert (b["best"], b["reach"], b["median"]) == ("y", 1, 1.31)
    assert every["everywhere"] == ["y"]  # x misses on b, d misses everywhere
    assert "Settings at most 1.3 × the oracle on every row: 1 (y)." in hindsight_markdown(table, 1.3)
