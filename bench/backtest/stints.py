"""What a spot stint is worth in each pool of a window, for a policy that cannot see when capacity ends.

    python -m bench.backtest.stints [--dataset KEY ...] [--window LO,HI] [--markdown OUT] [--run-age]

A *run* is a stretch of ticks where a pool is obtainable. A stint placed at the very start of a run (an
optimistic entry: no deployed policy knows when a run starts) is worth, against staying on on-demand,

- until the warning:  ``o·(L − b) − p·(L + w) − π·max(0, b − w)``: on-demand is not paid while spot serves,
  the spot instance is paid from its launch to its stop, and the boot not covered by the two-minute notice
  is downtime at the penalty;
- when left after ``τ`` hours (a planned, make-before-break return to on-demand, possible only if the run
  lasts ``τ + b``): ``(o − p)·τ − (o + p)·b``; otherwise the warning comes first and the value above holds,

with ``L`` the run's length, ``p`` its mean price, ``o`` the on-demand price, ``b`` the boot, ``w`` the
notice and ``π`` the downtime penalty per hour (the backtest's rules). The best ``τ`` on a grid is what
any rule whose only clock is the stint's age can get. Where even the best ``τ`` has a negative total,
spot loses money in that pool for every policy that cannot foresee when runs end: on-demand is the
best such a policy can do there, and what a spot optimizer pays above it is the price of finding out.
docs/benchmarks.md ("Backtest") uses this for the rows no policy without foresight can win.

``--run-age`` prints instead how a run's hazard falls with its age (ends per hour of runs still going, by
age band, every pool of a dataset pooled): capacity that has just come back is the likeliest to go again.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.backtest.model import Rules
from bench.backtest.validate import TRAIN_FRACTION, Dataset, window
from bench.backtest.variants import rows, window_arg
from ml.traces import Trace


@dataclass(frozen=True)
class PoolStints:
    """One pool's runs in the window and what stints in them are worth (USD against on-demand)."""

    pool: str
    runs: int
    available_share: float
    mean_run_h: float
    max_run_h: float
    until_warned_usd: float  # every run entered at its start and held to the warning
    gaining_runs: int  # runs whose stint, held to the warning, gains (0: only leaving before the end can)
    best_exit_h: float | None  # the best "leave after τ hours" (inf: hold to the warning; None: none gains)
    best_exit_usd: float  # its total (0 when none gains: stay on on-demand)


def runs_of(available: np.ndarray) -> list[tuple[int, int]]:
    """[first, last) tick ranges where ``available`` is 1."""
    out, first = [], None
    for i, a in enumerate(available):
        if a and first is None:
            first = i
        elif not a and first is not None:
            out.append((first, i))
            first = None
    if first is not None:
        out.append((first, len(available)))
    return out


def stint_values(lengths_h: np.ndarray, prices: np.ndarray, ondemand: float, rules: Rules,
                 exit_after_h: float | None) -> np.ndarray:
    """Each run's stint value against on-demand (``exit_after_h`` None: held until the warning)."""
    b, w = rules.boot_s / 3600.0, rules.warning_s / 3600.0
    warned = ondemand * (lengths_h - b) - prices * (lengths_h + w) - rules.downtime_penalty_per_hour * max(0.0, b - w)
    if exit_after_h is None:
        return warned
    planned = (ondemand - prices) * exit_after_h - (ondemand + prices) * b
    return np.where(lengths_h >= exit_after_h + b, planned, warned)


def pool_stints(trace: Trace, j: int, start: int, end: int, rules: Rules) -> PoolStints:
    """Runs of pool ``j`` in ticks ``[start, end)`` and the value of stints in them."""
    seconds = trace.tick_seconds()[start:end]
    available = np.asarray(trace.available)[start:end, j]
    prices = np.asarray(trace.prices, dtype=float)[start:end, j]
    spans = runs_of(available)
    lengths = np.array([seconds[a:z].sum() / 3600.0 for a, z in spans])
    mean_prices = np.array([np.nanmean(prices[a:z]) if np.isfinite(prices[a:z]).any() else np.nan
                            for a, z in spans])
    keep = np.isfinite(mean_prices)
    lengths, mean_prices = lengths[keep], mean_prices[keep]
    total_h = seconds.sum() / 3600.0
    if not len(lengths):
        return PoolStints(trace.pools[j], 0, 0.0, 0.0, 0.0, 0.0, 0, None, 0.0)
    warned = stint_values(lengths, mean_prices, trace.ondemand_price, rules, None)
    until = float(warned.sum())
    step = float(np.median(seconds)) / 3600.0
    best_h, best = (math.inf, until) if until > 0 else (None, 0.0)
    for tau in np.arange(step, lengths.max() + step, step):
        total = float(stint_values(lengths, mean_prices, trace.ondemand_price, rules, float(tau)).sum())
        if total > best:
            best_h, best = float(tau), total
    return PoolStints(trace.pools[j], len(lengths), float(lengths.sum() / total_h), float(lengths.mean()),
                      float(lengths.max()), until, int((warned > 0).sum()), best_h, best)


AGE_BANDS_H = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 48.0)


def run_age_hazard(lengths_h: Sequence[float], bands_h: Sequence[float] = AGE_BANDS_H,
                   open_ended: Sequence[bool] | None = None) -> list[tuple[float, float, int, float]]:
    """Per age band [lo, hi): (lo, hi, runs reaching lo, ends per hour lived in the band). A run still going
    when the window closes (``open_ended``) counts its hours but no end; NaN where no run reaches the band."""
    lengths = np.asarray(lengths_h, dtype=float)
    ended = ~np.asarray(open_ended, dtype=bool) if open_ended is not None else np.ones(len(lengths), dtype=bool)
    out = []
    for lo, hi in zip(bands_h, bands_h[1:]):
        alive = lengths > lo
        hours = float((np.minimum(lengths[alive], hi) - lo).sum())
        ends = int((alive & (lengths <= hi) & ended).sum())
        out.append((lo, hi, int(alive.sum()), ends / hours if hours > 0 else math.nan))
    return out


def dataset_run_ages(d: Dataset, fractions: tuple[float, float]) -> list[tuple[float, float, int, float]]:
    """:func:`run_age_hazard` over every run of every pool of one dataset in the window."""
    trace = d.load()
    start, end = window(trace, fractions)
    seconds = trace.tick_seconds()[start:end]
    lengths, still = [], []
    for j in range(len(trace.pools)):
        for a, z in runs_of(np.asarray(trace.available)[start:end, j]):
            lengths.append(seconds[a:z].sum() / 3600.0)
            still.append(z == end - start)
    return run_age_hazard(lengths, open_ended=still)


def run_age_markdown(results: Sequence[tuple[Dataset, list[tuple[float, float, int, float]]]]) -> str:
    bands = [f"{lo:g}–{hi:g} h" for lo, hi, _, _ in results[0][1]] if results else []
    lines = ["| dataset | " + " | ".join(bands) + " |", "|---|" + "---:|" * len(bands)]
    for d, table in results:
        lines.append(f"| {d.label} | " + " | ".join(f"{h:.2f} ({n})" for _, _, n, h in table) + " |")
    return "\n".join(lines)


def dataset_stints(d: Dataset, fractions: tuple[float, float]) -> list[PoolStints]:
    """Every pool of one dataset, over the part of its trace between the two fractions."""
    trace = d.load()
    start, end = window(trace, fractions)
    rules = Rules.for_ondemand_price(trace.ondemand_price, boot_s=d.boot_s)
    return [pool_stints(trace, j, start, end, rules) for j in range(len(trace.pools))]


def markdown(results: Sequence[tuple[Dataset, list[PoolStints]]]) -> str:
    lines = ["| dataset | pool | runs | obtainable | mean run | longest | stints held to the warning | "
             "runs where that gains | best 'leave after τ' |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for d, pools in results:
        for s in pools:
            if s.best_exit_h is None:
                best = "none gains: stay on on-demand"
            elif math.isinf(s.best_exit_h):
                best = f"hold to the warning: {s.best_exit_usd:+.1f} $"
            else:
                best = f"τ = {s.best_exit_h:.2f} h: {s.best_exit_usd:+.1f} $"
            lines.append(f"| {d.label} | {s.pool} | {s.runs} | {s.available_share:.0%} | {s.mean_run_h:.2f} h | "
                         f"{s.max_run_h:.1f} h | {s.until_warned_usd:+.1f} $ | {s.gaining_runs} | {best} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", action="append", help="a dataset key, repeatable (a slice's key has commas); "
                    "default: every real-capacity row and slice")
    ap.add_argument("--window", default=f"{TRAIN_FRACTION},1", help="LO,HI fractions of each trace (the tables')")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument("--run-age", action="store_true", help="print each dataset's hazard by run age instead "
                    "(ends per hour, and in brackets the runs reaching the band)")
    args = ap.parse_args(argv)
    lo, hi = window_arg(ap, args.window)
    sets = rows()
    if args.dataset:
        wanted = args.dataset
        unknown = sorted(set(wanted) - {d.key for d in sets})
        if unknown:
            print(f"unknown datasets {unknown}; known: {[d.key for d in sets]}", file=sys.stderr)
            return 2
        sets = [d for d in sets if d.key in wanted]
    if args.run_age:
        table = run_age_markdown([(d, dataset_run_ages(d, (lo, hi))) for d in sets])
    else:
        table = markdown([(d, dataset_stints(d, (lo, hi))) for d in sets])
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
