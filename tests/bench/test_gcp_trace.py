"""The GCP H100 probe as a check nothing was tuned on: its round-per-row shape, the flat price model, GCP zone
regions, and rows scored over every pool order (flat prices leave the baselines' choice to column order)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from bench.backtest import Rules, run_backtest
from bench.backtest.__main__ import main as backtest_main
from bench.backtest.ours import OursPolicy
from bench.backtest.policies import StaticPolicy
from bench.backtest.validate import DEFAULT, Dataset, Setting, datasets, evaluate, evaluate_orders
from bench.backtest.variants import main as variants_main
from bench.backtest.variants import rows
from ml import traces
from tests.bench.helpers import make_trace

HEADER = "scheduled_at_utc,run_id,run_status,zone,requested,created,capacity_exhausted_detected\n"


@pytest.fixture
def rounds(tmp_path):
    """Three rounds, written out of order; us-west1-b is missing from the second round."""
    path = tmp_path / "rounds.csv.gz"
    lines = ["2025-10-04T00:20:00Z,r2,success,us-central1-a,16,0,1",
             "2025-10-04T00:10:00Z,r1,success,us-central1-a,16,3,1",
             "2025-10-04T00:10:00Z,r1,success,us-west1-b,16,16,0",
             "2025-10-04T00:30:00Z,r3,success,us-west1-b,16,0,1",
             "2025-10-04T00:30:00Z,r3,success,us-central1-a,16,1,1"]
    with gzip.open(path, "wt") as handle:
        handle.write(HEADER + "\n".join(lines) + "\n")
    return path


def test_a_round_per_row_probe_becomes_one_column_per_zone(rounds):
    trace = traces.load(rounds, price_model="flat", ondemand_price=2.0)
    assert trace.pools == ["us-central1-a", "us-west1-b"]
    assert [t.minute for t in trace.times] == [10, 20, 30]
    # at least one instance created = obtainable; a zone missing from a round is not obtainable
    assert trace.available.tolist() == [[1, 1], [0, 0], [1, 0]]
    assert trace.regions == {"us-central1-a": "us-central1", "us-west1-b": "us-west1"}


def test_the_flat_price_model_is_a_fraction_of_on_demand_and_says_so(rounds):
    trace = traces.load(rounds, price_model="flat", ondemand_price=2.0, spot_ratio=0.4)
    np.testing.assert_allclose(trace.prices, 0.8)
    assert "APPROXIMATE" in trace.price_note and "0.4" in trace.price_note
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            traces.load(rounds, price_model="flat", ondemand_price=2.0, spot_ratio=bad)
    with pytest.raises(ValueError, match="ondemand"):  # flat needs an on-demand price to be a fraction of
        traces.load(rounds, price_model="flat")
    with pytest.raises(ValueError, match="unknown price model"):
        traces.load(rounds, price_model="gcp", ondemand_price=2.0)


def test_the_cli_runs_it_with_the_flat_price_model(rounds, capsys):
    assert backtest_main(["--availability", str(rounds), "--price-model", "flat", "--spot-ratio", "0.5",
                          "--ondemand-price", "2", "--train-fraction", "0.34", "--policies", "static"]) == 0
    out = capsys.readouterr().out
    assert "0.5 × on-demand" in out and "APPROXIMATE" in out


def test_the_shipped_gcp_trace():
    trace = traces.load(traces.GCP_H100_AVAILABILITY, price_model="flat", ondemand_price=1.0)
    assert trace.ticks == 2104 and len(trace.pools) == 13
    assert trace.regions["us-east5-a"] == "us-east5" and trace.regions["asia-southeast1-c"] == "asia-southeast1"
    assert trace.available[:, trace.pools.index("asia-south2-b")].mean() == pytest.approx(1.0, abs=0.001)
    assert trace.available[:, trace.pools.index("us-west1-b")].mean() < 0.3


def test_the_gcp_rows_are_their_own_source_and_rotate_their_pools():
    gcp = [d for d in datasets() if d.source == "gcp-h100"]
    assert [d.key for d in gcp][0] == "gcp-h100" and len(gcp) == 4 and all(d.rotate and d.real for d in gcp)
    assert {d.key for d in gcp} <= {d.key for d in rows()}
    assert not any(d.rotate for d in datasets() if d.source != "gcp-h100")  # real prices break ties there


def test_a_flat_price_row_is_the_mean_over_its_pool_orders():
    # pool a is lost every few ticks, pool b never: with one price, static's pool is whichever is listed first
    ticks = 60
    avail = np.ones((ticks, 2), dtype=np.int8)
    avail[10::6, 0] = 0
    trace = make_trace(avail, 1.0, ondemand=3.0, tick_s=300, pools=["us-east-1a", "us-east-1b"])
    d = Dataset("flat", "flat", "flat", lambda: trace, rotate=True)
    orders = d.pool_orders(trace)
    assert [t.pools for t in orders] == [["us-east-1a", "us-east-1b"], ["us-east-1b", "us-east-1a"]]
    start = trace.split_index(0.1)
    each = [evaluate(t, 300.0, start, ticks, [Setting(DEFAULT)]) for t in orders]
    assert each[0]["static"] > each[1]["static"] + 0.05  # the order decides static's row...
    assert each[0][DEFAULT] == pytest.approx(each[1][DEFAULT])  # ...not ours'
    mean = evaluate_orders(d, trace, start, ticks, [Setting(DEFAULT)])
    assert mean["static"] == pytest.approx((each[0]["static"] + each[1]["static"]) / 2)
    assert Dataset("plain", "plain", "plain", lambda: trace).pool_orders(trace) == [trace]


def test_ours_does_not_depend_on_the_pool_order():
    rng = np.random.default_rng(4)
    avail = (rng.random((150, 3)) < 0.8).astype(np.int8)
    avail[:5] = 1
    trace = make_trace(avail, 1.0, ondemand=3.0, tick_s=300)
    rules = Rules.for_ondemand_price(3.0)
    scores = {run_backtest(t, [OursPolicy(), StaticPolicy()], rules)["policies"]["ours"]["score"]
              for t in Dataset("r", "r", "r", lambda: trace, rotate=True).pool_orders(trace)}
    assert len({round(s, 6) for s in scores}) == 1


def test_variants_can_be_limited_to_some_rows(capsys):
    with pytest.raises(SystemExit) as exc:
        variants_main(["--rows", "no-such-row"])
    assert exc.value.code == 2 and "matches no row" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # the hindsight grid is scored on the slices only
        variants_main(["--hindsight", "--rows", "gcp"])
    assert exc.value.code == 2 and "slices" in capsys.readouterr().err
