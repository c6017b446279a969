"""Held-out metrics of the risk model against the two baselines, and the table ml.train prints.

Scores compared on the same held-out rows (obtainable pool at t, full label window observed):

- ``model``: the trained classifier's P(unobtainable within the horizon);
- ``evidence_fallback``: :func:`components.risk_model.evidence_risk`, the empirical-Bayes rate from the
  same observations (what serves when no model is active);
- ``advisor_prior``: :func:`components.risk_model.advisor_prior` of the pool's Spot Advisor band.

ROC AUC: higher is better (0.5 = no ranking; a constant score gets exactly 0.5). Brier score:
mean squared error of the probability, lower is better.

``python -m ml.evaluate`` re-scores the committed artifact on the held-out parts of the real traces
and checks the numbers against its manifest.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from ml.features import Dataset

__all__ = ["BASELINES", "beats_baselines", "evaluate", "format_table", "score"]

BASELINES = ("evidence_fallback", "advisor_prior")


def score(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """ROC AUC and Brier score of probabilities ``p`` for labels ``y`` (AUC NaN if one class only)."""
    y = np.asarray(y)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {"auc": auc, "brier": float(brier_score_loss(y, p, pos_label=1)) if len(y) else float("nan"),
            "rows": int(len(y)), "positive_rate": float(y.mean()) if len(y) else float("nan")}


def baseline_scores(rows: Dataset) -> dict[str, np.ndarray]:
    return {"evidence_fallback": rows.fallback, "advisor_prior": rows.prior}


def evaluate(rows: Dataset, model_p: np.ndarray) -> dict[str, Any]:
    """{"model": score, "baselines": {name: score}} on the same rows."""
    return {"model": score(rows.y, model_p),
            "baselines": {name: score(rows.y, p) for name, p in baseline_scores(rows).items()}}


def beats_baselines(metrics: dict[str, Any]) -> bool:
    """Higher AUC and lower Brier than every baseline."""
    model = metrics["model"]
    return all(model["auc"] > b["auc"] and model["brier"] < b["brier"] for b in metrics["baselines"].values())


def format_table(by_dataset: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one line per (dataset, scorer)."""
    lines = [f"{'dataset':<34} {'scorer':<22} {'rows':>7} {'pos':>6} {'ROC AUC':>8} {'Brier':>8}"]
    for name, metrics in by_dataset.items():
        entries = [("model", metrics["model"]), *metrics["baselines"].items()]
        for scorer, s in entries:
            auc = "n/a" if math.isnan(s["auc"]) else f"{s['auc']:.4f}"
            lines.append(f"{name[:34]:<34} {scorer:<22} {s['rows']:>7} {s['positive_rate']:>6.3f} "
                         f"{auc:>8} {s['brier']:>8.4f}")
        lines.append(f"{'':<34} {'model beats both':<22} {'yes' if beats_baselines(metrics) else 'NO':>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ml.risk import load_artifact
    from ml.train import DATASETS, held_out_rows

    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=Path("ml/artifacts/risk-model.joblib"))
    args = parser.parse_args(argv)
    model = load_artifact(args.artifact)
    assert model.manifest is not None
    recorded = model.manifest.raw["metrics"]
    by_dataset, parts = {}, []
    for entry in model.manifest.raw.get("datasets", []):
        trace = DATASETS[entry["name"]]()
        rows = held_out_rows(trace, model.horizon_s, entry.get("train_fraction", 0.6))
        p = model.predict_features(rows.X)
        by_dataset[trace.name] = evaluate(rows, p)
        parts.append((rows, p))
    pooled_rows = Dataset.concat([r for r, _ in parts])
    by_dataset["pooled"] = evaluate(pooled_rows, np.concatenate([p for _, p in parts]))
    print(format_table(by_dataset))
    same = math.isclose(by_dataset["pooled"]["model"]["auc"], recorded["model"]["auc"], abs_tol=1e-6) and \
        math.isclose(by_dataset["pooled"]["model"]["brier"], recorded["model"]["brier"], abs_tol=1e-6)
    print(f"manifest metrics reproduced: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
