"""Train the interruption-risk model on the real traces and write the artifact + manifest.

    python -m ml.train [--horizon-s 3600] [--out ml/artifacts] [--train-fraction 0.6]

Datasets (data/availability, sources in data/SOURCES.md):

- ``p3_9az``: p3.2xlarge in 9 AZs of 3 regions, 2023-02-15 → 2023-04-02, 195 s ticks, with the
  spot price of every AZ at every tick (on-demand 3.06 $/h, us-east-1 list price 2022-06).
- ``gpu_usw2``: p2.xlarge, p2.8xlarge, p3.2xlarge, p3.16xlarge in us-west-2a/b from 2022-10-26,
  600 s ticks (from the collector's metadata). No spot prices: the price features are NaN (missing)
  for all its rows. Its exact start time is not published: ticks are placed from a nominal
  2022-10-26T00:00:00Z, so its hour-of-day / day-of-week features are approximate.

Each trace is split in time at ``--train-fraction`` of its ticks. The model learns only from ticks
before the split, and from rows whose label window (t, t + horizon] ends before the split; it is
evaluated on the ticks after it. Hyper-parameters are picked on an inner validation split of the
training part (ml.risk). The Spot Advisor band of every pool in both traces is 4 (">20 %", snapshot
2025-06-28, the same in the 2021-02-10 one), so the Advisor prior is one constant per trace: its AUC
is 0.5 by construction, and its Brier score shows how far the band's monthly rate is from the
probes' short outages.

The run refuses to write an artifact that does not beat both baselines (AUC and Brier) on the
pooled held-out rows, unless ``--allow-worse``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from components.risk_model import FEATURE_NAMES, validate_manifest
from ml import traces
from ml.evaluate import beats_baselines, evaluate, format_table
from ml.features import Dataset, feature_tensor, trace_features
from ml.risk import HORIZON_S, PARAM_GRID, RiskModel, TrainPart, sha256_of, train_estimator
from ml.traces import Trace

__all__ = ["DATASETS", "gpu_usw2", "held_out_rows", "main", "p3_9az", "run"]

ARTIFACT_NAME = "risk-model"
MODEL_NAME = "spot-interruption-risk"
GPU_USW2_NOMINAL_START = traces.GPU_USW2_START


def p3_9az() -> Trace:
    return traces.p3_9az()


def gpu_usw2(path: Path = traces.GPU_USW2_AVAILABILITY, start: datetime = GPU_USW2_NOMINAL_START) -> Trace:
    """The us-west-2 GPU probe trace (``tick,offset_s,<az>_<gpu>_<n>...``) as a Trace with pool ids.

    ``ml.traces.load`` reads it: times are ``start + offset_s``, columns become ``<instance type>.<az>``;
    no prices, no single on-demand price (four instance types).
    """
    return traces.load(path, start_time=start, ondemand_price=float("nan"),
                       name="aws GPU us-west-2 8 pools (2022-10-26, real)")


DATASETS: dict[str, Callable[[], Trace]] = {"p3_9az": p3_9az, "gpu_usw2": gpu_usw2}
SOURCES = {"p3_9az": [traces.P3_9AZ_AVAILABILITY.name, traces.P3_9AZ_PRICES.name],
           "gpu_usw2": [traces.GPU_USW2_AVAILABILITY.name]}


def held_out_rows(trace: Trace, horizon_s: float, train_fraction: float,
                  tensor: np.ndarray | None = None) -> Dataset:
    """Evaluation rows: ticks from the split on, label windows inside the trace."""
    return trace_features(trace, horizon_s, start=trace.split_index(train_fraction), tensor=tensor)


def _iso(stamp: datetime) -> str:
    return stamp.astimezone(UTC).isoformat()


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    def block(s: dict[str, Any]) -> dict[str, Any]:
        return {"auc": round(s["auc"], 6), "brier": round(s["brier"], 6), "rows": s["rows"],
                "positive_rate": round(s["positive_rate"], 6)}
    return {"model": block(metrics["model"]),
            "baselines": {k: block(v) for k, v in metrics["baselines"].items()}}


def run(datasets: dict[str, Trace], *, horizon_s: float = HORIZON_S, train_fraction: float = 0.6,
        out: Path | None = Path("ml/artifacts"), grid: tuple[dict[str, Any], ...] = PARAM_GRID,
        allow_worse: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train on the early part of every trace, evaluate on the later part, write artifact + manifest
    into ``out`` (unless None). Returns the manifest (plus ``model`` and ``tables`` when not written)."""
    began = time.monotonic()
    parts, held, tensors, described = [], {}, {}, []
    for key, trace in datasets.items():
        tensors[key] = feature_tensor(trace, horizon_s=horizon_s)
        split = trace.split_index(train_fraction)
        parts.append(TrainPart(trace, split, tensors[key]))
        held[key] = held_out_rows(trace, horizon_s, train_fraction, tensors[key])
    log(f"features for {len(datasets)} traces in {time.monotonic() - began:.1f} s")
    estimator, selection, train_rows = train_estimator(parts, horizon_s, grid)
    model = RiskModel(estimator, float(horizon_s), selection=selection)
    log(f"chosen on the inner validation split: {selection.params} (inner Brier {selection.inner_brier:.4f})")

    by_dataset, pooled_p = {}, []
    for (key, trace), part in zip(datasets.items(), parts):
        rows = held[key]
        p = model.predict_features(rows.X)
        pooled_p.append(p)
        by_dataset[key] = evaluate(rows, p)
        train_part = part.rows(horizon_s)
        described.append({
            "name": key, "title": trace.name, "files": SOURCES.get(key, []), "pools": list(trace.pools),
            "tick_s": float(np.median(np.diff([t.timestamp() for t in trace.times]))),
            "train_fraction": train_fraction,
            "train": {"start": _iso(trace.times[0]), "end": _iso(trace.times[part.end - 1]),
                      "rows": len(train_part), "positive_rate": round(float(train_part.y.mean()), 6)},
            "held_out": {"start": _iso(trace.times[part.end]), "end": _iso(trace.times[-1]),
                         "rows": len(rows)},
            "prices": bool(np.isfinite(trace.prices).any()),
            "advisor_bands": sorted({int(b) for b in trace.advisor_band.values()}),
        })
    pooled = Dataset.concat(list(held.values()))
    pooled_metrics = evaluate(pooled, np.concatenate(pooled_p))
    tables = {**{d["title"]: by_dataset[d["name"]] for d in described}, "pooled": pooled_metrics}
    elapsed = time.monotonic() - began
    log(format_table(tables))
    log(f"training + evaluation: {elapsed:.1f} s on {len(train_rows)} training rows")
    if not beats_baselines(pooled_metrics) and not allow_worse:
        raise SystemExit("the model does not beat both baselines on the pooled held-out rows: not written")

    starts = [d["train"]["start"] for d in described]
    ends = [d["train"]["end"] for d in described]
    # the contract's test vector: a held-out row as written to JSON (6 decimals, NaN → null), and the
    # model's probability on exactly that vector
    written = [_json_number(x) for x in (pooled.X[0] if len(pooled) else np.zeros(len(FEATURE_NAMES)))]
    example = np.array([np.nan if x is None else x for x in written], dtype=float)
    manifest: dict[str, Any] = {
        "name": MODEL_NAME,
        "version": "",
        "feature_names": list(FEATURE_NAMES),
        "horizon_s": float(horizon_s),
        "sklearn_version": sklearn.__version__,
        "training_span": {"start": min(starts), "end": max(ends)},
        "metrics": {**_rounded(pooled_metrics),
                    "per_dataset": {k: _rounded(v) for k, v in by_dataset.items()}},
        "sha256": "",
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "datasets": described,
        "test_vector": {"features": written,
                        "probability": round(float(model.predict_features(example[None, :])[0]), 6)},
        "notes": [
            "label: the pool, obtainable at t, is unobtainable at a probe in (t, t + horizon_s]",
            "rows: every 15 min per obtainable pool; features from the observations of ml.features.observer_log "
            "(a probe fleet with the product's back-off, watching each pool in random spans), never from the "
            "trace's availability",
            "estimator: sklearn HistGradientBoostingClassifier, params "
            + json.dumps({**estimator.get_params(), "chosen_on": "inner validation of the training part"},
                         sort_keys=True),
            "features: components.risk_model.feature_vector(PoolEvidence); null in test_vector = NaN (missing)",
            f"training + evaluation took {elapsed:.0f} s",
        ],
    }
    if "gpu_usw2" in datasets:
        manifest["notes"].append("gpu_usw2 has no prices (price features NaN)")
    bands = {b for d in described for b in d["advisor_bands"]}
    if len(bands) == 1:
        manifest["notes"].append(f"every pool's Spot Advisor band is {bands.pop()}: the advisor_prior "
                                 "baseline is one constant, so its AUC is 0.5 by construction")
    if out is None:
        manifest["sha256"] = "0" * 64
        manifest["version"] = "unsaved"
        validate_manifest(manifest)
        return {**manifest, "model": model, "tables": tables}

    out.mkdir(parents=True, exist_ok=True)
    artifact = out / f"{ARTIFACT_NAME}.joblib"
    joblib.dump(estimator, artifact, compress=3)
    digest = sha256_of(artifact)
    manifest["sha256"] = digest
    manifest["version"] = f"{datetime.now(UTC):%Y%m%d}-{digest[:8]}"
    validate_manifest(manifest)
    manifest_path = out / f"{ARTIFACT_NAME}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {artifact} ({artifact.stat().st_size / 1024:.0f} KiB, sha256 {digest[:12]}…) and {manifest_path}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizon-s", type=float, default=HORIZON_S, help="prediction horizon (s)")
    parser.add_argument("--out", type=Path, default=Path("ml/artifacts"), help="artifact directory")
    parser.add_argument("--train-fraction", type=float, default=0.6,
                        help="share of each trace's ticks used for training (the rest is held out)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {sorted(DATASETS)}")
    parser.add_argument("--allow-worse", action="store_true",
                        help="write the artifact even if it does not beat both baselines")
    args = parser.parse_args(argv)
    if not 0 < args.train_fraction < 1:
        parser.error("--train-fraction must be in (0, 1)")
    chosen = {k: DATASETS[k]() for k in args.datasets.split(",") if k}
    run(chosen, horizon_s=args.horizon_s, train_fraction=args.train_fraction, out=args.out,
        allow_worse=args.allow_worse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
