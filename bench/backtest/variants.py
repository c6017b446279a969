"""Variants of ``ours`` scored on every real-capacity dataset and the 9-AZ trace's three-zone slices.

    python -m bench.backtest.variants [--variants KEY,KEY] [--rows PREFIX,...] [--window LO,HI] [--offsets K]
                                      [--baselines] [--json OUT]
    python -m bench.backtest.variants --hindsight [--json OUT]

Where ``make validate`` asks whether tuned knobs carry over to data they were not tuned on, this asks
whether a change of the risk estimate or of the back-off is better *everywhere*: each variant's score ×
oracle on the real-capacity rows (the 8 of docs/benchmarks.md, the GCP H100 trace's 4) and the 5 three-zone
slices (the shape of our held-out sets), with the mean, the worst row and how many rows it wins or loses
against the defaults.
A variant ships only if it is lower on every row, or lower on average without losing a row by more than
it wins elsewhere (docs/benchmarks.md, "Backtest"). The rows are scored from 60 % of each trace to its end,
the window every table uses; ``--window 0.2,0.6`` scores an earlier part nothing was chosen on, to check
that a variant's win there is not noise. ``--baselines`` also scores the baselines on the same runs and
prints, per row, the defaults against the best of them: the "lowest on N of 13 rows" of docs/benchmarks.md.

``--hindsight`` asks how far the held-out target (at most ``TARGET`` × the oracle) is from this policy's
knobs: it scores ``hindsight_grid()`` (72 settings of the evidence prior, decay, refusal weight, renewal
floor and back-off base, the defaults among them) on the five slices and prints, per slice, the best setting
*chosen on that slice itself* — an optimistic figure no deployment could pick — against the defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from itertools import product
from pathlib import Path

from bench.backtest import Rules, run_backtest
from bench.backtest.policies import POLICIES
from bench.backtest.validate import BASELINES, DEFAULT, TRAIN_FRACTION, Dataset, Setting, _p3, datasets, window
from components.capacity import DEFAULT_BACKOFF, BackoffPolicy
from components.risk_model.evidence import DECAY_S, PRIOR_HOURS

VARIANTS: tuple[Setting, ...] = (
    Setting(DEFAULT),
    Setting("evidence prior 12 h", {"evidence_params": {"prior_hours": 12.0}}),
    Setting("evidence prior 3 h", {"evidence_params": {"prior_hours": 3.0}}),
    Setting("evidence decay 72 h", {"evidence_params": {"decay_s": 72 * 3600.0}}),
    Setting("refusal 0.3 of an interruption", {"evidence_params": {"refusal_weight": 0.3}}),
    Setting("refusal not counted", {"evidence_params": {"refusal_weight": 0.0}}),
    Setting("region prior 6 h", {"evidence_params": {"region_prior_hours": 6.0}}),
    Setting("region prior 24 h", {"evidence_params": {"region_prior_hours": 24.0}}),
    Setting("renewal 0.9", {"evidence_params": {"renewal_events": 0.9}}),
    Setting("renewal 0.45", {"evidence_params": {"renewal_events": 0.45}}),
    Setting("on on-demand: no back-off", {"ondemand_backoff": "none"}),
    Setting("on on-demand: no refusal back-off", {"ondemand_backoff": "losses"}),
    Setting("losses start no back-off", {"backoff": BackoffPolicy(losses_start=False)}),
    Setting("losses start no back-off (base 5 min)", {"backoff": BackoffPolicy(base_s=300.0, losses_start=False)}),
    Setting("rescore at once on a setback (production does not)", {"rescore_on_setback": True}),
    Setting("warm-up 1 day", {"warmup_s": 86400.0}),
    Setting("warm-up 3 days", {"warmup_s": 3 * 86400.0}),
    Setting("warm-up 7 days", {"warmup_s": 7 * 86400.0}),
    Setting("no switch limits or cooldown", {"rails": {"max_switches_per_day": 10**6, "max_switches_per_week": 10**6,
                                                        "cooldown_s": 0.0}}),
)
SLICES = (("us-west-2a", "us-west-2b", "us-west-2c"), ("us-east-1a", "us-east-1c", "us-east-1d"),
          ("us-east-1c", "us-east-1d", "us-east-1f"), ("us-east-2a", "us-east-2b", "us-west-2a"),
          ("us-east-1f", "us-east-2b", "us-west-2c"))


def rows() -> list[Dataset]:
    """The real-capacity datasets of the validation protocol, then the three-zone slices (boot 300)."""
    return [*(d for d in datasets() if d.real),
            *(Dataset("slice " + ",".join(s), "3 zones: " + ", ".join(s), "p3-9az", _p3(pools=list(s)))
              for s in SLICES)]


TARGET = 1.3  # issue #11: our held-out sets at most 1.3 × the oracle


def _grid_key(prior_h: float, decay_h: float, base_s: float, renewal: float, refusal: float) -> str:
    return f"prior {prior_h:g} h, decay {decay_h:g} h, back-off {base_s / 60:g} min, renewal {renewal:g}, " \
           f"refusal {refusal:g}"


def hindsight_grid() -> list[Setting]:
    """Every combination of the knobs the variants above move one at a time; the shipped policy is one point
    (:func:`grid_defaults`)."""
    grid = []
    for prior, decay_h, base_s, renewal, refusal in product((3.0, 6.0, 12.0), (24.0, 72.0), (300.0, 600.0, 1200.0),
                                                            (0.0, 0.45), (1.0, 0.3)):
        grid.append(Setting(_grid_key(prior, decay_h, base_s, renewal, refusal),
                            {"evidence_params": {"prior_hours": prior, "decay_s": decay_h * 3600.0,
                                                 "renewal_events": renewal, "refusal_weight": refusal},
                             "backoff": BackoffPolicy(base_s=base_s)}))
    return grid


def grid_defaults(grid: Sequence[Setting]) -> str:
    """The key of the grid point that is the shipped policy (its evidence prior, decay and back-off base; no
    renewal floor, a refusal weighing one interruption); raises if the grid lost it."""
    key = _grid_key(PRIOR_HOURS, DECAY_S / 3600.0, DEFAULT_BACKOFF.base_s, 0.0, 1.0)
    if key not in {s.key for s in grid}:
        raise ValueError(f"the grid has no point for the shipped policy ({key})")
    return key


def hindsight_table(scores: Mapping[str, Mapping[str, float]], defaults: str, target: float = TARGET) -> list[dict]:
    """Per row: the defaults' score, the best setting of the grid on that row and its score, the median, and how
    many settings reach ``target``; a last row names the settings that reach it on every row (usually none)."""
    out = []
    for key, row in scores.items():
        best = min(row, key=lambda k: (row[k], k))
        out.append({"row": key, "defaults": row[defaults], "best": best, "best_score": row[best],
                    "median": statistics.median(row.values()), "reach": sum(v <= target for v in row.values()),
                    "settings": len(row)})
    everywhere = [k for k in next(iter(scores.values()), {}) if all(row[k] <= target for row in scores.values())]
    return out + [{"row": "every row", "reach": len(everywhere), "everywhere": everywhere}]


def hindsight_markdown(table: Sequence[dict], target: float = TARGET) -> str:
    lines = ["| row | defaults | best setting on this row (hindsight) | median | settings ≤ "
             f"{target:g} × oracle |", "|---|---:|---|---:|---:|"]
    for r in table[:-1]:
        lines.append(f"| {r['row']} | {r['defaults']:.3f} | {r['best_score']:.3f} ({r['best']}) | {r['median']:.3f} | "
                     f"{r['reach']} of {r['settings']} |")
    lines.append(f"\nSettings at most {target:g} × the oracle on every row: {table[-1]['reach']}"
                 + (f" ({'; '.join(table[-1]['everywhere'])})" if table[-1]['everywhere'] else "") + ".")
    return "\n".join(lines)


def score(sets: Sequence[Dataset], variants: Sequence[Setting], log: Callable[[str], None] = print,
          fractions: tuple[float, float] = (TRAIN_FRACTION, 1.0), offsets: int = 1,
          baselines: Sequence[str] = ()) -> dict:
    """{dataset key: {variant key (and baseline name): score × oracle}}, each dataset loaded once and run once
    for all variants and ``baselines``, over the ticks between the two fractions of each trace. With
    ``offsets`` = k > 1 the window is run k times, starting 0, 1, … k − 1 ticks later, and the ratios are
    averaged: one tick's difference at the start can move a row by several percent (the policy's path
    diverges), so one run cannot tell close variants apart. A flat-price row is also averaged over its pool orders
    (:meth:`Dataset.pool_orders`)."""
    if offsets < 1:
        raise ValueError("offsets must be >= 1")
    out: dict[str, dict[str, float]] = {}
    for d in sets:
        trace = d.load()
        start, end = window(trace, fractions)
        rules = Rules.for_ondemand_price(trace.ondemand_price, boot_s=d.boot_s)
        runs = [run_backtest(ordered, [*(POLICIES[b]() for b in baselines), *(v.policy() for v in variants)], rules,
                             start=start + k, end=end)["policies"]
                for k in range(min(offsets, end - start - 1)) for ordered in d.pool_orders(trace)]
        names = {**{b: b for b in baselines}, **{v.key: f"ours[{v.key}]" for v in variants}}
        out[d.key] = {key: round(statistics.mean(r[name]["score_ratio_to_oracle"] for r in runs), 4)
                      for key, name in names.items()}
        log(f"{d.key}: " + ", ".join(f"{k} {s:.4f}" for k, s in out[d.key].items()))
    return out


def standing(scores: Mapping[str, Mapping[str, float]], baselines: Sequence[str] = BASELINES) -> list[dict]:
    """Per row: the defaults' score, the best baseline and its score, and whether the defaults are the lowest
    (ties within 1e-4 count as lowest: the rows' noise is far larger)."""
    out = []
    for key, row in scores.items():
        best = min(baselines, key=lambda b: (row[b], baselines.index(b)))
        out.append({"row": key, "ours": row[DEFAULT], "best_baseline": best, "baseline": row[best],
                    "lowest": row[DEFAULT] <= row[best] + 1e-4})
    return out


def standing_markdown(rows_: Sequence[dict]) -> str:
    lines = ["| row | `ours` (defaults) | best baseline | `ours` lowest? |", "|---|---:|---:|---|"]
    for r in rows_:
        lines.append(f"| {r['row']} | {r['ours']:.3f} | {r['baseline']:.3f} ({r['best_baseline']}) | "
                     f"{'yes' if r['lowest'] else 'no'} |")
    lines.append(f"\n`ours` lowest on {sum(r['lowest'] for r in rows_)} of {len(rows_)} rows.")
    return "\n".join(lines)


def summary(scores: Mapping[str, Mapping[str, float]], variants: Sequence[str]) -> list[dict]:
    """Per variant: mean, worst row, rows better / worse than the defaults (ties within 1e-4 are neither)."""
    base = [row[DEFAULT] for row in scores.values()]
    out = []
    for key in variants:
        mine = [row[key] for row in scores.values()]
        out.append({"variant": key, "mean": statistics.mean(mine), "worst": max(mine),
                    "better": sum(m < b - 1e-4 for m, b in zip(mine, base)),
                    "worse": sum(m > b + 1e-4 for m, b in zip(mine, base))})
    return sorted(out, key=lambda r: (r["mean"], r["variant"] != DEFAULT))


def markdown(table: Sequence[dict]) -> str:
    lines = ["| variant of `ours` | mean | worst row | rows better than the defaults | rows worse |",
             "|---|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['variant']} | {r['mean']:.3f} | {r['worst']:.3f} | {r['better']} | {r['worse']} |")
    return "\n".join(lines)


def window_arg(ap: argparse.ArgumentParser, text: str) -> tuple[float, float]:
    """``--window LO,HI`` as two fractions of a trace, or the parser's usage error."""
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        ap.error("--window takes two fractions, LO,HI")
    if not 0 <= lo < hi <= 1:
        ap.error("--window needs 0 <= LO < HI <= 1")
    return lo, hi


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", help="comma list of variant keys (default: all; the defaults always run)")
    ap.add_argument("--window", default=f"{TRAIN_FRACTION},1", help="LO,HI: the part of each trace scored "
                    f"(fractions of its ticks; default {TRAIN_FRACTION},1, the tables' window)")
    ap.add_argument("--offsets", type=int, default=1, help="run each row K times, its window starting 0 .. K-1 "
                    "ticks later, and average (1; a row moves by a few %% with one tick's shift)")
    ap.add_argument("--baselines", action="store_true", help="also score ondemand, static, cheapest and "
                    "price_capacity on the same runs and print where the defaults are the lowest")
    ap.add_argument("--hindsight", action="store_true", help="score the 72-setting grid on the five slices and "
                    "print each slice's best setting chosen on the slice itself (≈ 25 CPU-minutes)")
    ap.add_argument("--rows", help="comma list of row-key prefixes: only those rows (e.g. gcp,slice)")
    ap.add_argument("--json", type=Path, help="write every score and the summary here")
    args = ap.parse_args(argv)
    prefixes = tuple(p.strip() for p in args.rows.split(",") if p.strip()) if args.rows else ("",)
    chosen_rows = [d for d in rows() if d.key.startswith(prefixes)]
    if not chosen_rows:
        ap.error(f"--rows {args.rows!r} matches no row; rows: {[d.key for d in rows()]}")
    lo, hi = window_arg(ap, args.window)
    if args.offsets < 1:
        ap.error("--offsets must be >= 1")
    if args.hindsight:
        slices = [d for d in chosen_rows if d.key.startswith("slice ")]
        if not slices:
            ap.error("--hindsight scores the three-zone slices: --rows left none")
        grid = hindsight_grid()
        scores = score(slices, grid,
                       log=lambda line: print(line[:200], file=sys.stderr), fractions=(lo, hi), offsets=args.offsets)
        table = hindsight_table(scores, grid_defaults(grid))
        print(hindsight_markdown(table))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"scores": scores, "hindsight": table}, indent=1) + "\n")
        return 0
    chosen = list(VARIANTS)
    if args.variants:
        wanted = {k.strip() for k in args.variants.split(",")}
        unknown = wanted - {v.key for v in VARIANTS}
        if unknown:
            print(f"error: unknown variants {sorted(unknown)}; known: {[v.key for v in VARIANTS]}", file=sys.stderr)
            return 2
        chosen = [v for v in VARIANTS if v.key == DEFAULT or v.key in wanted]
    baselines = BASELINES if args.baselines else ()
    scores = score(chosen_rows, chosen, log=lambda line: print(line, file=sys.stderr), fractions=(lo, hi),
                   offsets=args.offsets, baselines=baselines)
    table = summary(scores, [v.key for v in chosen])
    print(markdown(table))
    doc = {"scores": scores, "summary": table}
    if baselines:
        doc["standing"] = standing(scores)
        print("\n" + standing_markdown(doc["standing"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
