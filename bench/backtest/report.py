"""The benchmark's output: one JSON document and the same numbers as an aligned table."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import datetime, timezone

from bench.backtest.model import Rules
from bench.backtest.simulator import PolicyResult


CEILING_LABEL = "(ceiling, not deployable)"  # beside a policy that reads what production cannot


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


def build(trace, rules: Rules, start: int, end: int, t0: float, t1: float, train_fraction: float | None,
          results: dict[str, PolicyResult], extra: dict | None = None) -> dict:
    """The issue's JSON shape (+ synthetic, rules, pools, train_fraction and run details).

    ``score_ratio_to_oracle`` is each score over the oracle's (None without an oracle run).
    """
    oracle = results.get("oracle")
    for result in results.values():
        if oracle is None:
            result.score_ratio_to_oracle = None
        elif oracle.score > 0:
            result.score_ratio_to_oracle = result.score / oracle.score
        else:
            result.score_ratio_to_oracle = 1.0 if result.score == 0 else math.inf
    doc = {
        "dataset": trace.name,
        "eval_start": _iso(t0),
        "eval_end": _iso(t1),
        "policies": {name: r.as_dict() for name, r in results.items()},
        "synthetic": bool(trace.synthetic),
        "rules": asdict(rules),
        "pools": list(trace.pools),
        "train_fraction": train_fraction,
        "eval_ticks": end - start,
        "ondemand_price_usd_per_hour": float(trace.ondemand_price),
        "diagnostics": {name: r.diagnostics() for name, r in results.items()},
        "notes": [],
    }
    doc["notes"].extend(getattr(trace, "notes", ()))  # what loading assumed or left out
    if getattr(trace, "price_note", ""):
        doc["approximate_prices"] = True
        doc["notes"].append(trace.price_note)
    if rules.downtime_penalty_per_hour < 2 * trace.ondemand_price:
        doc["notes"].append("downtime penalty below 2x the on-demand price: the oracle leaves out launches "
                            "cancelled before they serve, so it may not be a strict lower bound here")
    doc.update(extra or {})
    return doc


def table(doc: dict) -> str:
    """One row per policy, aligned columns."""
    head = ("policy", "cost $", "% of OD", "downtime s", "interruptions", "switches", "score $", "× oracle")
    rows = []
    ceilings = doc.get("ceilings", {})
    for name, p in doc["policies"].items():
        ratio = p["score_ratio_to_oracle"]
        label = f"{name} {CEILING_LABEL}" if name in ceilings else name
        rows.append((label, f"{p['cost_usd']:.2f}", f"{p['cost_pct_of_ondemand']:.1f}", f"{p['downtime_s']:.0f}",
                     str(p["interruptions"]), str(p["switches"]), f"{p['score']:.2f}",
                     "-" if ratio is None else f"{ratio:.3f}"))
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    line = lambda r: "  ".join(r[0].ljust(widths[0]) if c == 0 else r[c].rjust(widths[c])  # noqa: E731
                               for c in range(len(r)))
    out = [f"dataset: {doc['dataset']}",
           f"evaluated: {doc['eval_start']} .. {doc['eval_end']} ({doc['eval_ticks']} ticks, "
           f"on-demand {doc['ondemand_price_usd_per_hour']:.4g} $/h, "
           f"downtime penalty {doc['rules']['downtime_penalty_per_hour']:.4g} $/h)"]
    if doc.get("synthetic"):
        out.append(f"events are SYNTHETIC (hazard model, seed {doc.get('seed')})")
    out += [f"note: {note}" for note in doc.get("notes", [])]
    out += [f"note: {name} is a CEILING, not deployable: {why}" for name, why in ceilings.items()]
    out += [line(head), "  ".join("-" * w for w in widths), *map(line, rows)]
    return "\n".join(out)
