"""Held-out traces in the shapes real exports take: each loads as the clean file does, or stops with one
clear message (never a traceback, never a silently different trace)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from bench.backtest.__main__ import main
from ml import traces

ZONES = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
TYPE = "r5.2xlarge"


def _rows(ticks: int = 48):
    """5-minute ticks; zone a is out for ticks 30-35; prices differ per zone and change at tick 24."""
    avail, prices = [], []
    for i in range(ticks):
        ts = f"2023-09-20 {i * 5 // 60:02d}:{i * 5 % 60:02d}:00"
        avail.append([ts] + [0 if (j == 0 and 30 <= i < 36) else 1 for j in range(3)])
        prices.append([ts] + [round(0.12 + 0.01 * j + (0.02 if i >= 24 and j == 0 else 0.0), 4) for j in range(3)])
    return avail, prices


def _write(path: Path, header, rows, *, gz: bool | None = None, crlf: bool = False, bom: bool = False,
           trailing: str = "") -> Path:
    gz = path.name.endswith(".gz") if gz is None else gz
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:
        if bom:
            handle.write("\ufeff")
        writer = csv.writer(handle, lineterminator="\r\n" if crlf else "\n")
        writer.writerow(header)
        writer.writerows(rows)
        handle.write(trailing)
    return path


def _clean(tmp_path: Path) -> traces.Trace:
    avail, prices = _rows()
    a = _write(tmp_path / "clean_a.csv", ["ts", *ZONES], avail)
    p = _write(tmp_path / "clean_p.csv", ["ts", *ZONES], prices)
    return traces.load(a, p, instance_type=TYPE, ondemand_price=0.5)


def _same(trace: traces.Trace, clean: traces.Trace) -> None:
    assert trace.pools == clean.pools
    assert [t.timestamp() for t in trace.times] == [t.timestamp() for t in clean.times]
    np.testing.assert_array_equal(trace.available, clean.available)
    np.testing.assert_allclose(trace.prices, clean.prices)


@pytest.mark.parametrize("variant", ["bom", "crlf", "trailing_blank_lines", "gzip_named_csv", "plain_named_gz",
                                     "iso_z", "iso_offset", "unsorted", "epoch_seconds"])
def test_an_export_variant_reads_as_the_clean_file(tmp_path, variant):
    clean = _clean(tmp_path)
    avail, prices = _rows()
    kw, name = {}, "a.csv"
    if variant == "bom":
        kw["bom"] = True
    elif variant == "crlf":
        kw["crlf"] = True
    elif variant == "trailing_blank_lines":
        kw["trailing"] = "\n\r\n,,,\n"
    elif variant == "gzip_named_csv":
        kw["gz"] = True
    elif variant == "plain_named_gz":
        name, kw["gz"] = "a.csv.gz", False
    elif variant == "iso_z":
        avail = [[r[0].replace(" ", "T") + "Z", *r[1:]] for r in avail]
    elif variant == "iso_offset":  # the same instants written in UTC+02:00
        avail = [[f"2023-09-20T{int(r[0][11:13]) + 2:02d}:{r[0][14:16]}:00+02:00", *r[1:]] for r in avail]
    elif variant == "unsorted":
        avail = avail[::-1]
    elif variant == "epoch_seconds":
        avail = [[str(int(traces.parse_ts(r[0]).timestamp())), *r[1:]] for r in avail]
    a = _write(tmp_path / name, ["ts", *ZONES], avail, **kw)
    p = _write(tmp_path / ("p_" + name), ["ts", *ZONES], prices, **kw)
    _same(traces.load(a, p, instance_type=TYPE, ondemand_price=0.5), clean)


def test_repeated_timestamps_keep_one_tick_the_last_row(tmp_path):
    clean = _clean(tmp_path)
    avail, prices = _rows()
    stale = [[r[0], 0, 0, 0] for r in avail[:10]]  # an earlier export's rows, overwritten by the later ones
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], stale + avail)
    p = _write(tmp_path / "p.csv", ["ts", *ZONES], prices + prices[:5])
    trace = traces.load(a, p, instance_type=TYPE, ondemand_price=0.5)
    _same(trace, clean)
    assert any("repeated" in note for note in trace.notes)


def test_a_count_above_one_is_available_not_unavailable(tmp_path):
    clean = _clean(tmp_path)
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], [[r[0], *(2 * v for v in r[1:])] for r in avail])
    p = _write(tmp_path / "p.csv", ["ts", *ZONES], prices)
    _same(traces.load(a, p, instance_type=TYPE, ondemand_price=0.5), clean)


def test_a_text_column_is_not_a_pool(tmp_path):
    clean = _clean(tmp_path)
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES, "product_description"], [[*r, "Linux/UNIX"] for r in avail])
    p = _write(tmp_path / "p.csv", ["ts", "product_description", *ZONES], [[r[0], "Linux/UNIX", *r[1:]] for r in prices])
    trace = traces.load(a, p, instance_type=TYPE, ondemand_price=0.5)
    _same(trace, clean)
    assert any("product_description" in note for note in trace.notes)


def _long(rows, header=("timestamp", "availability_zone", "instance_type", "spot_price"), itype=TYPE, extra=()):
    """The wide price rows as price changes (one row per pool whenever its price changes)."""
    out, last = [], {}
    for r in rows:
        for az, value in zip(ZONES, r[1:]):
            if last.get(az) != value:
                out.append([r[0].replace(" ", "T") + "Z", az, itype, value, *extra])
                last[az] = value
    return out


def test_long_prices_in_the_aws_cli_shape_with_windows_rows_read_as_linux(tmp_path):
    clean = _clean(tmp_path)
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], avail)
    linux = _long(prices)
    rows = [[az, it, "Linux/UNIX", v, t] for t, az, it, v in linux]
    rows += [[az, it, "Windows", v * 3, t] for t, az, it, v in linux]
    p = _write(tmp_path / "p.csv", ["AvailabilityZone", "InstanceType", "ProductDescription", "SpotPrice", "Timestamp"],
               rows[::-1])
    _same(traces.load(a, p, instance_type=TYPE, ondemand_price=0.5), clean)
    p2 = _write(tmp_path / "p2.csv", ["timestamp", "availability_zone", "instance_type", "spot_price",
                                      "product_description"],
                [[*r, "Linux/UNIX"] for r in linux] + [[t, az, it, v * 3, "SUSE Linux"] for t, az, it, v in linux])
    _same(traces.load(a, p2, instance_type=TYPE, ondemand_price=0.5), clean)


def test_long_prices_of_several_types_need_the_type(tmp_path):
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], avail)
    p = _write(tmp_path / "p.csv", ["timestamp", "availability_zone", "instance_type", "spot_price"],
               _long(prices) + _long([[r[0], *(v / 2 for v in r[1:])] for r in prices], itype="r5.xlarge"))
    with pytest.raises(ValueError, match="--instance-type"):
        traces.load(a, p, ondemand_price=0.5)
    clean = _clean(tmp_path)
    _same(traces.load(a, p, instance_type=TYPE, ondemand_price=0.5), clean)


def test_a_pool_without_any_price_is_left_out_and_said(tmp_path):
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], avail)
    p = _write(tmp_path / "p.csv", ["ts", *ZONES[:2]], [r[:3] for r in prices])
    trace = traces.load(a, p, instance_type=TYPE, ondemand_price=0.5)
    assert trace.pools == ZONES[:2]
    assert any(ZONES[2] in note and "no price" in note for note in trace.notes)
    p_long = _write(tmp_path / "p_long.csv", ["timestamp", "availability_zone", "instance_type", "spot_price"],
                    [r for r in _long(prices) if r[1] != ZONES[2]])
    trace = traces.load(a, p_long, instance_type=TYPE, ondemand_price=0.5)
    assert trace.pools == ZONES[:2]
    with pytest.raises(ValueError, match="no price"):
        traces.load(a, p_long, instance_type="r5.xlarge", ondemand_price=0.5)


def test_a_pool_priced_only_after_the_start_is_said(tmp_path):
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], avail)
    p = _write(tmp_path / "p.csv", ["timestamp", "availability_zone", "instance_type", "spot_price"],
               [r for r in _long(prices) if r[1] != ZONES[0] or r[0] >= "2023-09-20T02"])
    trace = traces.load(a, p, instance_type=TYPE, ondemand_price=0.5)
    assert any(ZONES[0] in note and "no price before" in note for note in trace.notes)


def test_wide_prices_that_end_early_are_said(tmp_path):
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], avail)
    p = _write(tmp_path / "p.csv", ["ts", *ZONES], prices[:20])
    trace = traces.load(a, p, instance_type=TYPE, ondemand_price=0.5)
    assert any("end at" in note for note in trace.notes)


def test_the_instance_type_comes_from_the_release_file_name_and_on_demand_from_the_shipped_table(tmp_path):
    avail, prices = _rows()
    a = _write(tmp_path / "aws_r5.2xlarge_3az_2023-09-20_probe.csv.gz", ["ts", *ZONES], avail)
    p = _write(tmp_path / "aws_r5.2xlarge_3az_2023-09-20_spot_price.csv.gz", ["ts", *ZONES], prices)
    trace = traces.load(a, p)
    assert trace.instance_types == {z: TYPE for z in ZONES}
    assert trace.regions == {z: "eu-central-1" for z in ZONES}
    assert trace.ondemand_price == pytest.approx(0.504)  # us-east-1 list price, said in a note
    assert any("r5.2xlarge" in n and "file name" in n for n in trace.notes)
    assert any("us-east-1" in n for n in trace.notes)
    assert trace.advisor_band == {z: traces.read_advisor_bands(traces.ADVISOR_2025)[("eu-central-1", TYPE)]
                                  for z in ZONES}
    # a type the 2022 table lacks needs its price; a type given overrides the file name
    g = _write(tmp_path / "aws_g6.xlarge_3az_2023-09-20_probe.csv", ["ts", *ZONES], avail)
    gp = _write(tmp_path / "aws_g6.xlarge_3az_2023-09-20_spot_price.csv", ["ts", *ZONES], prices)
    with pytest.raises(KeyError, match="g6.xlarge .*--ondemand-price"):
        traces.load(g, gp)
    assert traces.load(g, gp, ondemand_price=0.8).instance_types == {z: "g6.xlarge" for z in ZONES}
    with pytest.raises(ValueError, match="different instance types"):
        traces.load(g, p)
    assert traces.load(a, p, instance_type="r5.xlarge").ondemand_price == pytest.approx(0.252)


def test_held_out_files_at_the_cli_defaults(tmp_path, capsys):
    avail, prices = _rows(120)
    a = _write(tmp_path / "aws_g4dn.xlarge_3az_2023-07-05_probe.csv.gz", ["ts", *ZONES], avail)
    p = _write(tmp_path / "aws_g4dn.xlarge_3az_2023-07-05_spot_price.csv.gz", ["ts", *ZONES], prices, crlf=True)
    out = tmp_path / "r.json"
    assert main(["--availability", str(a), "--prices", str(p), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["ondemand_price_usd_per_hour"] == pytest.approx(0.526)
    assert {"ours", "oracle", "cheapest"} <= set(doc["policies"])
    assert "g4dn.xlarge" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing_file", "empty_file", "header_only_gz", "bad_number", "short_row",
                                  "bad_time", "unknown_pool", "unknown_type", "no_type"])
def test_a_broken_input_stops_with_one_message(tmp_path, capsys, case):
    avail, prices = _rows()
    a = _write(tmp_path / "a.csv", ["ts", *ZONES], avail)
    p = _write(tmp_path / "p.csv", ["ts", *ZONES], prices)
    extra = ["--instance-type", TYPE]
    if case == "missing_file":
        a = tmp_path / "nope.csv"
    elif case == "empty_file":
        a.write_text("")
    elif case == "header_only_gz":
        a = _write(tmp_path / "a.csv.gz", ["ts", *ZONES], [])
    elif case == "bad_number":
        a = _write(tmp_path / "a.csv", ["ts", *ZONES], [*avail[:5], [avail[5][0], 1, "yes?", 1], *avail[6:]])
    elif case == "short_row":
        a = _write(tmp_path / "a.csv", ["ts", *ZONES], [*avail[:5], avail[5][:2], *avail[6:]])
    elif case == "bad_time":
        a = _write(tmp_path / "a.csv", ["ts", *ZONES], [*avail[:5], ["20/09/2023 00:25", 1, 1, 1], *avail[6:]])
    elif case == "unknown_pool":
        extra += ["--pools", "eu-central-1z"]
    elif case == "unknown_type":
        extra = ["--instance-type", "zz9.huge"]
    elif case == "no_type":
        extra = []
    assert main(["--availability", str(a), "--prices", str(p), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    if case in ("bad_number", "short_row", "bad_time"):
        assert "line 7" in err, err
    if case == "unknown_pool":
        assert "eu-central-1a" in err  # the pools there are
