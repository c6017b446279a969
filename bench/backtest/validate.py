"""Validation protocol for ``ours``' tunable parameters (issue #11): does a setting chosen on some data
still win on data it was never tuned on, and do the shipped defaults?

    python -m bench.backtest.validate [--quick] [--json OUT] [--markdown OUT]

1. **Datasets** (:func:`datasets`): the real p3.2xlarge 9-AZ trace at boot 120 / 300 / 600 s and its
   us-east-1 pools only; eu-west-1's 24 general-purpose pools (real prices, SYNTHETIC interruptions);
   the real us-west-2 GPU probe, one dataset per instance type (its two AZ pools, APPROXIMATE constant
   prices); the real GCP H100 13-zone probe (2025-10, never used to choose anything: the 13 zones and three
   three-zone slices, :data:`GCP_SLICES`, with flat prices of 0.3 × on-demand and AWS's timing rules, so a
   capacity-only check). Each has a *source* (the trace it is cut from).
2. **Grid** (:data:`GRID`, 6 settings including the shipped defaults): ``OursPolicy``'s constructor knobs
   — how often risk is rescored, the switch rails, the hold cap of a move's payback, the capacity
   back-off base. Not the risk horizon: with the evidence estimate (a constant rate) it cancels — the
   engine turns the risk back into a rate over the same horizon — and a first run of this protocol
   scored it identical to the defaults everywhere (docs/benchmarks.md).
3. **Leave one source out** (:func:`leave_one_source_out`): for each dataset, the setting with the lowest
   mean score × oracle over the datasets of the *other* sources is scored on it. Holding out a whole
   source, not one dataset, keeps the boot variants of the 9-AZ trace (same capacity, same prices) from
   selecting for each other.
4. **Time splits** (:func:`walk_forward`): on every dataset with real availability, the evaluated part
   is cut into consecutive windows (:data:`WINDOWS`: 40–60 %, 60–80 %, 80–100 % of the ticks); the
   setting with the lowest mean over the earlier windows of the same dataset is scored on the next one.

Every fold also shows the shipped defaults, the best baseline (``ondemand``, ``static``, ``cheapest``,
``price_capacity``) and the in-sample best setting (tuned on the test itself: what tuning could at most
buy). Scores are score × oracle over the same window (lower is better). The selection functions are
pure over a table of scores, so the fold logic is tested on hand-made numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.backtest import Rules, run_backtest
from bench.backtest.ours import OursPolicy
from bench.backtest.policies import POLICIES
from components.capacity import BackoffPolicy
from ml import traces
from ml.traces import Trace

BASELINES = ("ondemand", "static", "cheapest", "price_capacity")
WINDOWS = ((0.4, 0.6), (0.6, 0.8), (0.8, 1.0))
TRAIN_FRACTION = 0.6  # the leave-one-source-out window: the same part as every backtest table


@dataclass(frozen=True)
class Setting:
    """One point of the grid: keyword arguments of :class:`OursPolicy` (empty = the shipped defaults)."""

    key: str
    kwargs: Mapping = field(default_factory=dict)

    def policy(self) -> OursPolicy:
        policy = OursPolicy(**self.kwargs)
        policy.name = f"ours[{self.key}]"
        return policy


DEFAULT = "defaults"
GRID: tuple[Setting, ...] = (
    Setting(DEFAULT),                             # rescoring 15 min, 3/10 switches, hold cap 24 h, back-off 10 min
    Setting("rescore 5 min", {"risk_refresh_s": 300.0}),
    Setting("switches 6/day", {"rails": {"max_switches_per_day": 6, "max_switches_per_week": 20}}),
    Setting("hold cap 6 h", {"rails": {"hold_cap_h": 6.0}}),
    Setting("back-off 5 min", {"backoff": BackoffPolicy(base_s=300.0)}),
    Setting("back-off 20 min", {"backoff": BackoffPolicy(base_s=1200.0)}),
)
QUICK_GRID = tuple(s for s in GRID if s.key in (DEFAULT, "switches 6/day", "back-off 20 min"))


@dataclass(frozen=True)
class Dataset:
    key: str
    label: str
    source: str  # datasets cut from the same trace are held out together
    load: Callable[[], Trace]
    boot_s: float = 300.0
    real: bool = True  # real availability: time splits run on it
    rotate: bool = False  # flat prices: score every rotation of the pool order (see pool_orders)

    def pool_orders(self, trace: Trace) -> list[Trace]:
        """The trace once; for a ``rotate`` dataset once per rotation of its pools. With one price for every pool
        the baselines break their price ties by column order (``static`` sits in the first pool obtainable), so
        a single order would score whichever pool the file happens to list first; each rotation puts another
        pool first and the row is their mean. ``ours`` and the oracle do not depend on the order."""
        if not self.rotate:
            return [trace]
        pools = list(trace.pools)
        return [trace.subset(pools=pools[k:] + pools[:k]) for k in range(len(pools))]


def _p3(**kwargs) -> Callable[[], Trace]:
    return lambda: traces.p3_9az(**kwargs)


def _gpu(instance_type: str) -> Callable[[], Trace]:
    return lambda: traces.load(traces.GPU_USW2_AVAILABILITY, start_time=traces.GPU_USW2_START,
                               price_model="advisor", instance_types=[instance_type],
                               ondemand_table=traces.ONDEMAND_2022, name=f"GPU us-west-2 {instance_type}")


def _eu() -> Trace:
    return traces.load(prices=traces.EU_WEST_1_PRICES, ondemand_table=traces.ONDEMAND_2022,
                       instance_types=["m4.large", "m5.large", "m5a.large", "m5ad.large", "m5d.large",
                                       "m5n.large", "m6a.large", "m6i.large"], instance_type="m5.large")


def _gcp(pools: list[str] | None = None) -> Callable[[], Trace]:
    name = "GCP H100 " + (", ".join(pools) if pools else "13 zones")
    return lambda: traces.load(traces.GCP_H100_AVAILABILITY, price_model="flat", ondemand_price=1.0,
                               instance_type="a3-highgpu-1g", pools=pools, name=name)


# Three-zone rows of the GCP trace (the shape of our held-out sets), fixed before any policy was scored on them:
# one region's three zones (plentiful), the two US-east regions' three (middling), the three scarcest zones.
GCP_SLICES = (("us-central1-a", "us-central1-b", "us-central1-c"), ("us-east4-a", "us-east4-b", "us-east5-a"),
              ("europe-west3-c", "us-west1-a", "us-west1-b"))


def datasets() -> list[Dataset]:
    """Every dataset of the protocol (the commands of docs/benchmarks.md's Backtest tables)."""
    use1 = ["us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f"]
    return [
        Dataset("p3-9az-boot300", "p3.2xlarge 9 AZs, boot 300", "p3-9az", _p3()),
        Dataset("p3-9az-boot120", "p3.2xlarge 9 AZs, boot 120", "p3-9az", _p3(), boot_s=120.0),
        Dataset("p3-9az-boot600", "p3.2xlarge 9 AZs, boot 600", "p3-9az", _p3(), boot_s=600.0),
        Dataset("p3-use1", "p3.2xlarge us-east-1 (4 AZs)", "p3-9az", _p3(pools=use1)),
        Dataset("eu-west-1", "eu-west-1 24 pools (synthetic events)", "eu-west-1", _eu, real=False),
        *(Dataset(f"gpu-{t}", f"us-west-2 {t} (2 AZs, approx. prices)", "gpu-usw2", _gpu(t))
          for t in traces.PROBE_GPU_TYPES.values()),
        Dataset("gcp-h100", "GCP H100 13 zones (capacity only: flat prices, AWS timing)", "gcp-h100", _gcp(),
                rotate=True),
        *(Dataset("gcp " + ",".join(s), "GCP H100 3 zones: " + ", ".join(s), "gcp-h100", _gcp(list(s)), rotate=True)
          for s in GCP_SLICES),
    ]


# -- running -----------------------------------------------------------------------------------------

Scores = dict[str, float]  # policy or setting key → score × oracle


def evaluate(trace: Trace, boot_s: float, start: int, end: int, grid: Sequence[Setting]) -> Scores:
    """Score × oracle of every baseline and every setting of ``ours`` over ticks ``[start, end)``."""
    rules = Rules.for_ondemand_price(trace.ondemand_price, boot_s=boot_s)
    policies = [POLICIES[name]() for name in BASELINES] + [s.policy() for s in grid]
    doc = run_backtest(trace, policies, rules, start=start, end=end)
    by_name = {name: p["score_ratio_to_oracle"] for name, p in doc["policies"].items()}
    return {**{b: by_name[b] for b in BASELINES}, **{s.key: by_name[f"ours[{s.key}]"] for s in grid}}


def evaluate_orders(d: Dataset, trace: Trace, start: int, end: int, grid: Sequence[Setting]) -> Scores:
    """:func:`evaluate` averaged over the dataset's pool orders (:meth:`Dataset.pool_orders`)."""
    tables = [evaluate(t, d.boot_s, start, end, grid) for t in d.pool_orders(trace)]
    return {key: _mean([t[key] for t in tables]) for key in tables[0]}


def window(trace: Trace, fractions: tuple[float, float]) -> tuple[int, int]:
    lo, hi = fractions
    return trace.split_index(lo), (trace.ticks if hi >= 1 else trace.split_index(hi))


# -- the folds (pure) --------------------------------------------------------------------------------

def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def select(tables: Sequence[Scores], grid: Sequence[str]) -> str:
    """The setting with the lowest mean score over ``tables`` (ties: the earlier in the grid)."""
    if not tables:
        raise ValueError("nothing to select on")
    return min(grid, key=lambda key: (_mean([t[key] for t in tables]), grid.index(key)))


def _row(test: Scores, chosen: str, grid: Sequence[str]) -> dict:
    best_baseline = min(BASELINES, key=lambda b: test[b])
    hindsight = min(grid, key=lambda key: (test[key], grid.index(key)))
    return {"chosen": chosen, "chosen_score": test[chosen], "default_score": test[DEFAULT],
            "best_baseline": best_baseline, "best_baseline_score": test[best_baseline],
            "hindsight": hindsight, "hindsight_score": test[hindsight]}


def leave_one_source_out(scores: Mapping[str, Scores], sources: Mapping[str, str],
                         grid: Sequence[str]) -> list[dict]:
    """One fold per dataset: select on every dataset of another source, score on this one."""
    rows = []
    for key, test in scores.items():
        train = [scores[k] for k in scores if sources[k] != sources[key]]
        rows.append({"dataset": key, "selected_on": [k for k in scores if sources[k] != sources[key]],
                     **_row(test, select(train, grid), grid)})
    return rows


def walk_forward(windows: Sequence[Scores], grid: Sequence[str]) -> list[dict]:
    """One fold per window after the first: select on the earlier windows, score on this one."""
    return [{"window": k, **_row(windows[k], select(windows[:k], grid), grid)} for k in range(1, len(windows))]


def summary(rows: Sequence[dict]) -> dict:
    """Means and how often the chosen setting beats the defaults / ours beats the best baseline."""
    return {"folds": len(rows),
            "chosen_mean": _mean([r["chosen_score"] for r in rows]),
            "default_mean": _mean([r["default_score"] for r in rows]),
            "best_baseline_mean": _mean([r["best_baseline_score"] for r in rows]),
            "chosen_beats_default": sum(r["chosen_score"] < r["default_score"] - 1e-9 for r in rows),
            "default_beats_chosen": sum(r["default_score"] < r["chosen_score"] - 1e-9 for r in rows),
            "chosen_at_most_best_baseline": sum(r["chosen_score"] <= r["best_baseline_score"] + 1e-9 for r in rows),
            "default_at_most_best_baseline": sum(r["default_score"] <= r["best_baseline_score"] + 1e-9
                                                 for r in rows)}


def run(sets: Sequence[Dataset], grid: Sequence[Setting], windows=WINDOWS, log=print) -> dict:
    """Every measurement, then both protocols. Each trace is loaded once per dataset."""
    keys = [s.key for s in grid]
    lodo: dict[str, Scores] = {}
    splits: dict[str, list[Scores]] = {}
    seconds: dict[str, float] = {}
    for d in sets:
        began = time.perf_counter()
        trace = d.load()
        lodo[d.key] = evaluate_orders(d, trace, trace.split_index(TRAIN_FRACTION), trace.ticks, grid)
        if d.real and windows:
            splits[d.key] = [evaluate_orders(d, trace, *window(trace, w), grid) for w in windows]
        seconds[d.key] = round(time.perf_counter() - began, 1)
        log(f"  {d.key}: {seconds[d.key]} s")
    sources = {d.key: d.source for d in sets}
    lodo_rows = leave_one_source_out(lodo, sources, keys)
    split_rows = [{"dataset": key, **row} for key, tables in splits.items() for row in walk_forward(tables, keys)]
    return {
        "grid": {s.key: _describe(s) for s in grid},
        "datasets": {d.key: {"label": d.label, "source": d.source, "boot_s": d.boot_s, "real": d.real}
                     for d in sets},
        "train_fraction": TRAIN_FRACTION, "windows": [list(w) for w in windows],
        "scores": lodo, "window_scores": splits,
        "leave_one_source_out": {"folds": lodo_rows, "summary": summary(lodo_rows)},
        "time_splits": {"folds": split_rows, "summary": summary(split_rows) if split_rows else None},
        "seconds": seconds,
    }


def _describe(setting: Setting) -> dict:
    out = {}
    for name, value in setting.kwargs.items():
        out[name] = {"base_s": value.base_s, "factor": value.factor, "max_s": value.max_s} \
            if isinstance(value, BackoffPolicy) else value
    return out


# -- output ------------------------------------------------------------------------------------------

def _fold_table(rows: Sequence[dict], first: str, label: Callable[[dict], str]) -> list[str]:
    out = [f"| {first} | chosen setting | chosen | defaults | best baseline | in-sample best |",
           "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {label(r)} | {r['chosen']} | {r['chosen_score']:.3f} | {r['default_score']:.3f} | "
                   f"{r['best_baseline_score']:.3f} ({r['best_baseline']}) | "
                   f"{r['hindsight_score']:.3f} ({r['hindsight']}) |")
    return out


def _summary_line(s: dict) -> str:
    return (f"mean over {s['folds']} folds: chosen {s['chosen_mean']:.3f}, defaults {s['default_mean']:.3f}, "
            f"best baseline {s['best_baseline_mean']:.3f}; the chosen setting beats the defaults in "
            f"{s['chosen_beats_default']}, loses in {s['default_beats_chosen']}; ours (chosen) ≤ the best "
            f"baseline in {s['chosen_at_most_best_baseline']}, ours (defaults) in "
            f"{s['default_at_most_best_baseline']}")


def markdown(doc: dict) -> str:
    labels = {k: v["label"] for k, v in doc["datasets"].items()}
    lo = doc["leave_one_source_out"]
    out = ["Grid: " + "; ".join(f"`{k}`" + (f" {v}" if v else "") for k, v in doc["grid"].items()), "",
           f"Leave one source out (score × oracle, window from {doc['train_fraction']:.0%} of each trace):", ""]
    out += _fold_table(lo["folds"], "held-out dataset", lambda r: labels[r["dataset"]])
    out += ["", _summary_line(lo["summary"])]
    ts = doc["time_splits"]
    if ts["folds"]:
        names = ["–".join(f"{x:.0%}" for x in w) for w in doc["windows"]]
        out += ["", "Time splits (select on the earlier windows of the same dataset, score on the next):", ""]
        out += _fold_table(ts["folds"], "dataset, window",
                           lambda r: f"{labels[r['dataset']]}, {names[r['window']]}")
        out += ["", _summary_line(ts["summary"])]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.backtest.validate",
                                 description="Leave-one-source-out and time-split validation of ours' "
                                             "parameters (see the module docstring and docs/benchmarks.md).")
    ap.add_argument("--quick", action="store_true",
                    help=f"{len(QUICK_GRID)} settings and no eu-west-1 (its synthetic events are the slowest set)")
    ap.add_argument("--datasets", help="comma list of dataset keys (default: all)")
    ap.add_argument("--json", type=Path, help="write every score and fold here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    args = ap.parse_args(argv)
    sets = datasets()
    if args.quick:
        sets = [d for d in sets if d.key != "eu-west-1"]
    if args.datasets:
        wanted = [k.strip() for k in args.datasets.split(",") if k.strip()]
        unknown = sorted(set(wanted) - {d.key for d in sets})
        if unknown:
            ap.error(f"unknown datasets {unknown}; known: {[d.key for d in sets]}")
        sets = [d for d in sets if d.key in wanted]
    if len({d.source for d in sets}) < 2:
        ap.error("leave-one-source-out needs datasets of at least two sources")
    began = time.perf_counter()
    doc = run(sets, QUICK_GRID if args.quick else GRID, log=lambda m: print(m, file=sys.stderr))
    doc["seconds"]["total"] = round(time.perf_counter() - began, 1)
    text = markdown(doc)
    print(text)
    print(f"seconds: {doc['seconds']['total']}")
    for path, content in ((args.json, json.dumps(doc, indent=2) + "\n"), (args.markdown, text + "\n")):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
