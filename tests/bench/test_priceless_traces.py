"""Availability traces without prices (the us-west-2 GPU probe release): offsets placed from an anchor,
release column names turned into pool ids, one row per instance type, and the APPROXIMATE price model."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from bench.backtest.__main__ import main
from ml import traces

ANCHOR = datetime(2022, 10, 26, tzinfo=timezone.utc)


def write_offsets(path, rows):
    with gzip.open(path, "wt") as handle:
        handle.write("tick,offset_s,us-west-2a_k80_1,us-west-2a_v100_1,us-west-2b_k80_1,us-west-2b_v100_1\n")
        for i, row in enumerate(rows):
            handle.write(",".join(map(str, [i, 600 * i, *row])) + "\n")


@pytest.fixture
def offsets(tmp_path):
    path = tmp_path / "probe.csv.gz"
    write_offsets(path, [[1, 1, 0, 1], [1, 0, 0, 1], [0, 1, 1, 1], [1, 1, 1, 0]] * 5)
    return path


def test_an_offset_file_needs_its_anchor_and_is_placed_from_it(offsets):
    with pytest.raises(ValueError, match="start time"):
        traces.load(offsets, price_model="advisor")
    trace = traces.load(offsets, start_time=ANCHOR, price_model="advisor", instance_types=["p3.2xlarge"])
    assert trace.times[0] == ANCHOR and (trace.times[3] - ANCHOR).total_seconds() == 1800
    assert trace.pools == ["p3.2xlarge.us-west-2a", "p3.2xlarge.us-west-2b"]
    assert trace.available[:4, 0].tolist() == [1, 0, 1, 1]


def test_the_advisor_price_model_is_ondemand_times_the_advisor_saving(offsets):
    trace = traces.load(offsets, start_time=ANCHOR, price_model="advisor", instance_types=["p2.xlarge"],
                        ondemand_table=traces.ONDEMAND_2022)
    # us-east-1 list price 0.90 $/h; Spot Advisor 2025-06-28: p2.xlarge in us-west-2 saves 64 %
    assert trace.ondemand_price == pytest.approx(0.9)
    np.testing.assert_allclose(trace.prices, 0.9 * 0.36)
    assert "APPROXIMATE" in trace.price_note
    assert trace.subset(start=trace.times[2]).price_note == trace.price_note
    with pytest.raises(ValueError, match="price model"):
        traces.load(offsets, traces.P3_9AZ_PRICES, start_time=ANCHOR, price_model="advisor")


def test_the_real_gpu_trace_gives_one_row_per_type_with_two_az_pools():
    for itype in traces.PROBE_GPU_TYPES.values():
        trace = traces.load(traces.GPU_USW2_AVAILABILITY, start_time=traces.GPU_USW2_START,
                            price_model="advisor", instance_types=[itype], ondemand_table=traces.ONDEMAND_2022)
        assert trace.pools == [f"{itype}.us-west-2a", f"{itype}.us-west-2b"]
        assert trace.ticks == 3895 and set(trace.regions.values()) == {"us-west-2"}
        assert np.isfinite(trace.prices).all() and (trace.prices < trace.ondemand_price).all()


def test_the_cli_runs_a_priceless_trace_and_says_the_prices_are_approximate(offsets, tmp_path, capsys):
    common = ["--availability", str(offsets), "--start-time", "2022-10-26T00:00:00Z",
              "--ondemand-table", str(traces.ONDEMAND_2022), "--instance-types", "p3.2xlarge"]
    with pytest.raises(SystemExit):  # no prices and no price model: refused, not silently all-unavailable
        main(common)
    assert main([*common[:2], "--price-model", "advisor", "--ondemand-price", "3"]) == 2  # no anchor
    assert "start time" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main([*common, "--price-model", "advisor", "--policies", "static,cheapest", "--json", str(out)]) == 0
    assert "prices are APPROXIMATE" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["approximate_prices"] is True and doc["pools"] == ["p3.2xlarge.us-west-2a", "p3.2xlarge.us-west-2b"]
