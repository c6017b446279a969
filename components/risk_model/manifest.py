"""The JSON manifest that travels with every risk-model artifact, and its schema check.

A manifest says what the joblib file is (name, version, sha256), what it expects (feature names in
order, the horizon) and how it was made and how good it is (scikit-learn version, training span,
held-out metrics against the baselines). The model registry and the layer's smoke test refuse an
artifact whose manifest does not validate here.

Schema (keys marked ? are optional; no other keys are allowed)::

    name            str, non-empty
    version         str, an id: 1-128 of A-Z a-z 0-9 . _ : - starting with a letter or digit (it names the
                    registry row, the artifact's S3 folder and the activate route's path)
    feature_names   list[str], exactly FEATURE_NAMES in that order
    horizon_s       number > 0
    sklearn_version str like "1.9.1"
    training_span   {start: ISO-8601 str, end: ISO-8601 str}, start <= end
    metrics         {model: {auc, brier}, baselines: {<name>: {auc, brier}, ...},
                     per_dataset?: {<name>: {model: ..., baselines: ...}}}
                    (auc, brier in [0, 1]; a block may also carry rows? >= 0 and positive_rate? in [0, 1])
    sha256          64 lowercase hex digits of the joblib file
    created_at      ISO-8601 str
    datasets?       list of {name: str, ...}: where the training and held-out rows came from
    test_vector?    {features: list[number | null] of len(FEATURE_NAMES), probability: number in [0, 1]}
    notes?          list[str]

Examples
--------
>>> m = validate_manifest(example_manifest())
>>> m.horizon_s, m.metrics.model.auc
(3600.0, 0.8)
>>> validate_manifest({**example_manifest(), "sha256": "xyz"})
Traceback (most recent call last):
...
components.risk_model.errors.ManifestError: sha256: must be 64 lowercase hex digits
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from components.risk_model.errors import ManifestError
from components.risk_model.model import FEATURE_NAMES

__all__ = ["Manifest", "ManifestMetrics", "Score", "TrainingSpan", "example_manifest", "validate_manifest"]

_REQUIRED = ("name", "version", "feature_names", "horizon_s", "sklearn_version", "training_span",
             "metrics", "sha256", "created_at")
_OPTIONAL = ("datasets", "test_vector", "notes")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"\d+\.\d+(\.\d+)?([.+-]?\w+)*")
# A model version is a key (the registry's sort key, next to its "_active" pointer), a folder of the artifact's S3
# key and a path segment of POST /api/admin/ml-models/{version}/activate: the route's id shape, ASCII only.
_MODEL_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)


def suggested_version(version: str) -> str | None:
    """An id of the version's shape derived from a name that is not one, for the refusal to offer (never applied
    silently: the version is what the admin activates and what the stored manifest says). Every run of other
    characters becomes one ``-``; what cannot start an id is dropped from the front; at most 128 characters.

    >>> suggested_version("v1.0 final"), suggested_version("Modèle 2"), suggested_version("../x"), suggested_version("__")
    ('v1.0-final', 'Mod-le-2', 'x', None)
    """
    safe = re.sub(r"[^A-Za-z0-9._:-]+", "-", version.strip(), flags=re.ASCII).lstrip("._:-")[:128].rstrip("-")
    return safe if _MODEL_VERSION.fullmatch(safe) else None


@dataclass(frozen=True)
class Score:
    """Held-out quality of one scorer: ROC AUC (higher is better) and Brier score (lower is better)."""

    auc: float
    brier: float
    rows: int | None = None
    positive_rate: float | None = None


@dataclass(frozen=True)
class ManifestMetrics:
    """The model's and each baseline's held-out scores, pooled and optionally per dataset."""

    model: Score
    baselines: Mapping[str, Score]
    per_dataset: Mapping[str, ManifestMetrics] = field(default_factory=dict)

    def beats_baselines(self) -> bool:
        """True when the model has a higher AUC and a lower Brier score than every baseline."""
        return all(self.model.auc > b.auc and self.model.brier < b.brier for b in self.baselines.values())


@dataclass(frozen=True)
class TrainingSpan:
    """First and last time of the data the model learned from (ISO-8601 as written)."""

    start: str
    end: str


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``raw`` is the dict it was read from."""

    name: str
    version: str
    feature_names: tuple[str, ...]
    horizon_s: float
    sklearn_version: str
    training_span: TrainingSpan
    metrics: ManifestMetrics
    sha256: str
    created_at: str
    test_vector: tuple[tuple[float | None, ...], float] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _fail(message: str, where: str) -> ManifestError:
    return ManifestError(message, where)


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail("must be a non-empty string", where)
    return value


def _number(value: Any, where: str, low: float | None = None, high: float | None = None,
            positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail("must be a finite number", where)
    if positive and value <= 0:
        raise _fail("must be > 0", where)
    if (low is not None and value < low) or (high is not None and value > high):
        raise _fail(f"must be in [{low}, {high}]", where)
    return float(value)


def _timestamp(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise _fail("must be an ISO-8601 string", where)
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail("must be an ISO-8601 string", where) from None
    if stamp.tzinfo is None:
        raise _fail("must carry a timezone (UTC)", where)
    return stamp


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail("must be an object", where)
    return value


def _score(value: Any, where: str) -> Score:
    block = _mapping(value, where)
    extra = set(block) - {"auc", "brier", "rows", "positive_rate"}
    if extra:
        raise _fail(f"unknown keys {sorted(extra)}", where)
    for key in ("auc", "brier"):
        if key not in block:
            raise _fail("is required", f"{where}.{key}")
    rows = block.get("rows")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0):
        raise _fail("must be an integer >= 0", f"{where}.rows")
    rate = block.get("positive_rate")
    return Score(_number(block["auc"], f"{where}.auc", 0.0, 1.0),
                 _number(block["brier"], f"{where}.brier", 0.0, 1.0), rows,
                 None if rate is None else _number(rate, f"{where}.positive_rate", 0.0, 1.0))


def _metrics(value: Any, where: str, nested: bool = True) -> ManifestMetrics:
    block = _mapping(value, where)
    allowed = {"model", "baselines", "per_dataset"} if nested else {"model", "baselines"}
    extra = set(block) - allowed
    if extra:
        raise _fail(f"unknown keys {sorted(extra)}", where)
    if "model" not in block:
        raise _fail("is required", f"{where}.model")
    baselines = _mapping(block.get("baselines"), f"{where}.baselines")
    if not baselines:
        raise _fail("needs at least one baseline", f"{where}.baselines")
    per_dataset = _mapping(block.get("per_dataset", {}), f"{where}.per_dataset")
    return ManifestMetrics(
        _score(block["model"], f"{where}.model"),
        {str(k): _score(v, f"{where}.baselines.{k}") for k, v in baselines.items()},
        {str(k): _metrics(v, f"{where}.per_dataset.{k}", nested=False) for k, v in per_dataset.items()})


def _test_vector(value: Any) -> tuple[tuple[float | None, ...], float]:
    block = _mapping(value, "test_vector")
    features = block.get("features")
    if not isinstance(features, list) or len(features) != len(FEATURE_NAMES):
        raise _fail(f"must be a list of {len(FEATURE_NAMES)} numbers", "test_vector.features")
    for i, x in enumerate(features):
        if x is not None:
            _number(x, f"test_vector.features[{i}]")
    return tuple(features), _number(block.get("probability"), "test_vector.probability", 0.0, 1.0)


def validate_manifest(data: Mapping[str, Any]) -> Manifest:
    """Check ``data`` (a parsed manifest) against the schema above and return it typed.

    Raises
    ------
    ManifestError
        On the first broken rule; ``field`` is the dotted path of the offending key.
    """
    data = _mapping(data, "manifest")
    for key in _REQUIRED:
        if key not in data:
            raise _fail("is required", key)
    extra = set(data) - set(_REQUIRED) - set(_OPTIONAL)
    if extra:
        raise _fail(f"unknown keys {sorted(extra)}", "manifest")
    names = data["feature_names"]
    if not isinstance(names, (list, tuple)) or tuple(names) != FEATURE_NAMES:
        raise _fail(f"must be exactly {list(FEATURE_NAMES)} (this code's features, in order)", "feature_names")
    sklearn_version = _text(data, "sklearn_version", "sklearn_version")
    if not _VERSION.fullmatch(sklearn_version):
        raise _fail("must be a version such as 1.9.1", "sklearn_version")
    span = _mapping(data["training_span"], "training_span")
    start = _timestamp(span.get("start"), "training_span.start")
    end = _timestamp(span.get("end"), "training_span.end")
    if start > end:
        raise _fail("start is after end", "training_span")
    sha = data["sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise _fail("must be 64 lowercase hex digits", "sha256")
    _timestamp(data["created_at"], "created_at")
    datasets = data.get("datasets", [])
    if not isinstance(datasets, list) or not all(isinstance(d, Mapping) and isinstance(d.get("name"), str)
                                                 for d in datasets):
        raise _fail("must be a list of objects with a name", "datasets")
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _fail("must be a list of strings", "notes")
    version = _text(data, "version", "version")
    if not _MODEL_VERSION.fullmatch(version):
        raise _fail("must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit (it names the "
                    "version's registry row, its S3 folder and the activate route's path)"
                    + (f"; for example {hint!r}" if (hint := suggested_version(version)) else ""), "version")
    return Manifest(
        name=_text(data, "name", "name"),
        version=version,
        feature_names=tuple(names),
        horizon_s=_number(data["horizon_s"], "horizon_s", positive=True),
        sklearn_version=sklearn_version,
        training_span=TrainingSpan(span["start"], span["end"]),
        metrics=_metrics(data["metrics"], "metrics"),
        sha256=sha,
        created_at=data["created_at"],
        test_vector=_test_vector(data["test_vector"]) if "test_vector" in data else None,
        raw=data,
    )


def example_manifest() -> dict[str, Any]:
    """A small valid manifest (for docs and tests; its numbers mean nothing)."""
    return {
        "name": "spot-risk",
        "version": "example",
        "feature_names": list(FEATURE_NAMES),
        "horizon_s": 3600,
        "sklearn_version": "1.9.1",
        "training_span": {"start": "2023-02-15T22:08:16+00:00", "end": "2023-03-15T05:41:08+00:00"},
        "metrics": {"model": {"auc": 0.8, "brier": 0.1},
                    "baselines": {"evidence_fallback": {"auc": 0.7, "brier": 0.2},
                                  "advisor_prior": {"auc": 0.5, "brier": 0.3}}},
        "sha256": "0" * 64,
        "created_at": "2024-01-01T00:00:00+00:00",
    }
