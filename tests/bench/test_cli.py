"""The command line on small files in every documented format, and on the real 9-AZ trace."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.backtest.__main__ import main
from ml import traces

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"cost_usd", "ondemand_cost_usd", "cost_pct_of_ondemand", "downtime_s", "interruptions", "switches",
        "score", "score_ratio_to_oracle"}
BASELINES = ["ondemand", "static", "cheapest", "price_capacity"]


def write_csv(path: Path, header, rows):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def check_report(doc):
    assert {"dataset", "eval_start", "eval_end", "policies"} <= set(doc)
    assert list(doc["policies"])[-1] == "oracle"
    assert set(BASELINES) <= set(doc["policies"])
    for name, row in doc["policies"].items():
        assert set(row) == KEYS, name
        assert row["score"] >= doc["policies"]["oracle"]["score"] - 1e-9
    assert doc["policies"]["oracle"]["score_ratio_to_oracle"] == 1.0
    assert doc["policies"]["ondemand"]["downtime_s"] == 0


def test_wide_availability_with_long_prices(tmp_path, capsys):
    pools = ["us-east-1a", "us-east-1b", "us-east-1c"]
    rows = [[f"2024-01-01 {h:02d}:{m:02d}:00"] + [int(not (j == 0 and 20 <= (h * 60 + m) // 5 < 30)) for j in
                                                  range(3)]
            for h in range(6) for m in range(0, 60, 5)]
    write_csv(tmp_path / "avail.csv", ["ts", *pools], rows)
    write_csv(tmp_path / "prices.csv.gz", ["timestamp", "availability_zone", "instance_type", "spot_price"],
              [["2023-12-31T23:00:00Z", az, "m5.large", p] for az, p in zip(pools, [0.03, 0.04, 0.05])]
              + [["2024-01-01T03:00:00+00:00", "us-east-1a", "m5.large", 0.06]])
    out = tmp_path / "report.json"
    assert main(["--availability", str(tmp_path / "avail.csv"), "--prices", str(tmp_path / "prices.csv.gz"),
                 "--ondemand-price", "0.096", "--instance-type", "m5.large", "--train-fraction", "0.25",
                 "--policies", ",".join(BASELINES), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    check_report(doc)
    assert doc["pools"] == pools and doc["synthetic"] is False and doc["train_fraction"] == 0.25
    assert doc["rules"]["downtime_penalty_per_hour"] == pytest.approx(24 * 0.096)
    printed = capsys.readouterr().out
    assert "oracle" in printed and "SYNTHETIC" not in printed


def test_price_only_data_gets_synthetic_events(tmp_path, capsys):
    rows = []
    for day in range(1, 4):
        for h in range(0, 24, 2):
            for az, p in (("eu-west-1a", 0.03), ("eu-west-1b", 0.035)):
                rows.append([f"2022-03-{day:02d}T{h:02d}:00:00Z", az, "m5.large", p + 0.001 * (h % 5)])
    write_csv(tmp_path / "long.csv", ["timestamp", "availability_zone", "instance_type", "spot_price"], rows)
    out = tmp_path / "r.json"
    assert main(["--prices", str(tmp_path / "long.csv"), "--instance-types", "m5.large",
                 "--ondemand-price", "0.107", "--seed", "3", "--policies", "cheapest,static",
                 "--downtime-penalty", "5", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["synthetic"] is True and doc["seed"] == 3
    assert list(doc["policies"]) == ["cheapest", "static", "oracle"]
    assert doc["rules"]["downtime_penalty_per_hour"] == 5
    assert "events are SYNTHETIC (hazard model, seed 3)" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_on_the_real_9az_trace(tmp_path):
    out = tmp_path / "p3.json"
    cmd = [sys.executable, "-m", "bench.backtest", "--availability", str(traces.P3_9AZ_AVAILABILITY),
           "--prices", str(traces.P3_9AZ_PRICES), "--ondemand-table", str(traces.ONDEMAND_2022),
           "--instance-type", "p3.2xlarge", "--start", "2023-03-01", "--end", "2023-03-04",
           "--pools", "us-east-1a,us-east-2a,us-west-2a,us-west-2b", "--json", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    check_report(doc)
    assert doc["pools"] == ["us-east-1a", "us-east-2a", "us-west-2a", "us-west-2b"]
    if (ROOT / "bench" / "backtest" / "ours.py").exists():  # registered by default when present
        assert "ours" in doc["policies"]
    assert doc["eval_start"].startswith("2023-03-02") and doc["eval_end"].startswith("2023-03-04")
    assert doc["policies"]["ondemand"]["cost_usd"] == pytest.approx(3.06 * 3 * 24 * 0.4, rel=0.01)
    assert "× oracle" in result.stdout
