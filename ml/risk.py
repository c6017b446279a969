"""The risk model as the backtest and the training command use it: fit, load, predict per tick and pool.

One training pipeline (:func:`train_estimator`) serves both ``python -m ml.train`` (several traces,
writes the artifact) and :func:`fit` (one trace up to a tick, in memory, for the backtest):

1. rows = (scoring tick, pool) where the pool is obtainable, features from the observations a probe
   fleet would have made (``ml.features``: ``components.risk_model.feature_vector`` over a
   ``PoolEvidence``, the function production and the backtest call);
2. an inner validation split of the *training* part (its last 25 %, label windows kept on their side)
   picks the hyper-parameters and the number of boosting iterations by Brier score;
3. the chosen estimator is refitted on the whole training part.

The held-out part of a trace is never read by any of this.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from components.risk_model import FEATURE_NAMES, Manifest, validate_manifest
from ml.features import Dataset, feature_tensor, trace_features
from ml.traces import Trace

__all__ = ["HORIZON_S", "PARAM_GRID", "RANDOM_STATE", "RiskModel", "TrainPart", "fit", "load_artifact",
           "make_estimator", "sha256_of", "train_estimator"]

HORIZON_S = 3600.0
RANDOM_STATE = 0
INNER_FRACTION = 0.75  # the inner validation is the last 25 % of each training part
MAX_ITER = 200
CHECKPOINT = 25  # iteration counts tried: 25, 50, ..., MAX_ITER
# Candidates tried on the inner validation split (learning rate and L2 fixed).
PARAM_GRID: tuple[dict[str, Any], ...] = tuple(
    {"max_leaf_nodes": leaves, "min_samples_leaf": min_leaf}
    for leaves in (8, 16, 32) for min_leaf in (100, 400))
BASE_PARAMS: dict[str, Any] = {"learning_rate": 0.05, "l2_regularization": 1.0, "max_bins": 255}
# scikit-learn's OpenMP threads spin badly when the 2 cores are shared (a 3 s fit took 80 s with two
# threads on a busy machine); one thread is fast and predictable, and the result does not depend on it.
THREADS = 1


def make_estimator(params: dict[str, Any]) -> HistGradientBoostingClassifier:
    """A HistGradientBoostingClassifier with our fixed settings (no random early stopping)."""
    return HistGradientBoostingClassifier(**{**BASE_PARAMS, "max_iter": MAX_ITER, **params},
                                          early_stopping=False, random_state=RANDOM_STATE)


@dataclass
class TrainPart:
    """The training part of one trace: ticks ``[0, end)``; ``tensor`` = its precomputed features."""

    trace: Trace
    end: int
    tensor: tuple[np.ndarray, np.ndarray] | None = None

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        if self.tensor is None:
            self.tensor = feature_tensor(self.trace)
        return self.tensor

    def rows(self, horizon_s: float, start: int = 0, end: int | None = None) -> Dataset:
        stop = self.end if end is None else end
        return trace_features(self.trace, horizon_s, start=start, end=stop, label_end=stop,
                              tensor=self.features())


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


@dataclass
class Selection:
    """What the inner validation chose, and the Brier score of every candidate tried."""

    params: dict[str, Any]
    inner_brier: float
    tried: list[dict[str, Any]] = field(default_factory=list)


def select_params(parts: list[TrainPart], horizon_s: float,
                  grid: tuple[dict[str, Any], ...] = PARAM_GRID) -> Selection:
    """Pick hyper-parameters and iteration count on the inner split of the training parts."""
    inner_train, inner_val = [], []
    for part in parts:
        inner = max(1, int(part.end * INNER_FRACTION))
        inner_train.append(part.rows(horizon_s, end=inner))
        inner_val.append(part.rows(horizon_s, start=inner))
    fit_rows, val_rows = Dataset.concat(inner_train), Dataset.concat(inner_val)
    if len(np.unique(fit_rows.y)) < 2 or len(val_rows) == 0:
        return Selection({**grid[0], "max_iter": 100}, float("nan"))
    with threadpool_limits(THREADS, user_api="openmp"):
        return _search(fit_rows, val_rows, grid)


def _search(fit_rows: Dataset, val_rows: Dataset, grid: tuple[dict[str, Any], ...]) -> Selection:
    best: Selection | None = None
    tried = []
    for params in grid:
        estimator = make_estimator(params).fit(fit_rows.X, fit_rows.y)
        for i, proba in enumerate(estimator.staged_predict_proba(val_rows.X), start=1):
            if i % CHECKPOINT:
                continue
            score = _brier(val_rows.y, proba[:, 1])
            tried.append({**params, "max_iter": i, "inner_brier": round(score, 6)})
            if best is None or score < best.inner_brier - 1e-12:
                best = Selection({**params, "max_iter": i}, score)
    assert best is not None
    best.tried = tried
    return best


def train_estimator(parts: list[TrainPart], horizon_s: float = HORIZON_S,
                    grid: tuple[dict[str, Any], ...] = PARAM_GRID
                    ) -> tuple[HistGradientBoostingClassifier, Selection, Dataset]:
    """Select on the inner split, then refit on every training row. Returns (estimator, selection,
    training rows)."""
    selection = select_params(parts, horizon_s, grid)
    rows = Dataset.concat([part.rows(horizon_s) for part in parts])
    if len(np.unique(rows.y)) < 2:
        raise ValueError("the training part has a single label class; use a longer span")
    with threadpool_limits(THREADS, user_api="openmp"):
        estimator = make_estimator(selection.params).fit(rows.X, rows.y)
    return estimator, selection, rows


@dataclass
class RiskModel:
    """A fitted estimator + its horizon; scores any trace tick by tick, causally."""

    estimator: HistGradientBoostingClassifier
    horizon_s: float = HORIZON_S
    manifest: Manifest | None = None
    selection: Selection | None = None

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """P(interruption within the horizon) for rows of features in FEATURE_NAMES order."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected (rows, {len(FEATURE_NAMES)}) features, got {X.shape}")
        if not len(X):
            return np.empty(0)
        with threadpool_limits(THREADS, user_api="openmp"):
            return self.estimator.predict_proba(X)[:, 1]


def fit(trace: Trace, train_end_tick: int, horizon_s: float = HORIZON_S,
        grid: tuple[dict[str, Any], ...] = PARAM_GRID) -> RiskModel:
    """Train on ``trace`` ticks before ``train_end_tick`` only (labels included), as ml.train does."""
    if not 0 < train_end_tick <= trace.ticks:
        raise ValueError(f"train_end_tick must be in 1..{trace.ticks}")
    estimator, selection, _ = train_estimator([TrainPart(trace, train_end_tick)], horizon_s, grid)
    return RiskModel(estimator, float(horizon_s), selection=selection)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_artifact(path: str | Path, manifest_path: str | Path | None = None) -> RiskModel:
    """Load a joblib artifact after checking its manifest (default: same name, ``.json``): schema,
    sha256 of the file, and feature count of the estimator."""
    import joblib

    path = Path(path)
    manifest_path = path.with_suffix(".json") if manifest_path is None else Path(manifest_path)
    manifest = validate_manifest(json.loads(manifest_path.read_text()))
    actual = sha256_of(path)
    if actual != manifest.sha256:
        raise ValueError(f"{path}: sha256 {actual} does not match the manifest's {manifest.sha256}")
    estimator = joblib.load(path)
    if getattr(estimator, "n_features_in_", None) != len(FEATURE_NAMES):
        raise ValueError(f"{path}: the estimator takes {getattr(estimator, 'n_features_in_', None)} features, "
                         f"the contract has {len(FEATURE_NAMES)}")
    return RiskModel(estimator, manifest.horizon_s, manifest)
