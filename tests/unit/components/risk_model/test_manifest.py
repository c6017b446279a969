import copy

import pytest

from components.errors import ValidationError
from components.risk_model import (
    FEATURE_NAMES,
    Manifest,
    ManifestError,
    example_manifest,
    validate_manifest,
)


def broken(path: str, value=..., delete: bool = False) -> dict:
    """The example manifest with the dotted ``path`` set to ``value`` (or removed)."""
    data = copy.deepcopy(example_manifest())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return data


def test_the_example_validates_into_a_typed_manifest():
    m = validate_manifest(example_manifest())
    assert isinstance(m, Manifest)
    assert m.feature_names == FEATURE_NAMES
    assert m.metrics.baselines["advisor_prior"].auc == 0.5
    assert m.metrics.beats_baselines()
    assert m.training_span.start.startswith("2023-02-15")


def test_optional_blocks_validate():
    data = example_manifest()
    data["metrics"]["per_dataset"] = {"p3": copy.deepcopy({k: data["metrics"][k] for k in ("model", "baselines")})}
    data["metrics"]["model"].update(rows=10, positive_rate=0.2)
    data["datasets"] = [{"name": "p3", "pools": ["us-east-1a"]}]
    data["test_vector"] = {"features": [0.0] * (len(FEATURE_NAMES) - 1) + [None], "probability": 0.3}
    data["notes"] = ["hello"]
    m = validate_manifest(data)
    assert m.metrics.per_dataset["p3"].model.auc == 0.8
    assert m.test_vector is not None and m.test_vector[1] == 0.3


@pytest.mark.parametrize("key", ["name", "version", "feature_names", "horizon_s", "sklearn_version",
                                 "training_span", "metrics", "sha256", "created_at"])
def test_every_required_key_is_required(key):
    with pytest.raises(ManifestError) as caught:
        validate_manifest(broken(key, delete=True))
    assert caught.value.field == key


@pytest.mark.parametrize(("path", "value", "field"), [
    ("feature_names", list(reversed(FEATURE_NAMES)), "feature_names"),
    ("feature_names", list(FEATURE_NAMES)[:-1], "feature_names"),
    ("horizon_s", 0, "horizon_s"),
    ("horizon_s", "3600", "horizon_s"),
    ("horizon_s", True, "horizon_s"),
    ("sklearn_version", "latest", "sklearn_version"),
    ("sha256", "A" * 64, "sha256"),
    ("sha256", "0" * 63, "sha256"),
    ("name", "  ", "name"),
    ("created_at", "yesterday", "created_at"),
    ("created_at", "2024-01-01T00:00:00", "created_at"),
    ("training_span.start", "2024-01-02T00:00:00+00:00", "training_span"),
    ("training_span.end", None, "training_span.end"),
    ("metrics.model.auc", 1.5, "metrics.model.auc"),
    ("metrics.model.brier", float("nan"), "metrics.model.brier"),
    ("metrics.model.extra", 1, "metrics.model"),
    ("metrics.baselines", {}, "metrics.baselines"),
    ("metrics.baselines.advisor_prior", {"auc": 0.5}, "metrics.baselines.advisor_prior.brier"),
    ("metrics.model.rows", -1, "metrics.model.rows"),
    ("extra", 1, "manifest"),
    ("notes", "text", "notes"),
    ("datasets", [{"pools": []}], "datasets"),
    ("test_vector", {"features": [0.0], "probability": 0.5}, "test_vector.features"),
    ("test_vector", {"features": [0.0] * len(FEATURE_NAMES), "probability": 2}, "test_vector.probability"),
])
def test_broken_manifests_name_the_offending_field(path, value, field):
    with pytest.raises(ManifestError) as caught:
        validate_manifest(broken(path, value))
    assert caught.value.field == field
    assert isinstance(caught.value, ValidationError)


def test_a_non_mapping_is_refused():
    with pytest.raises(ManifestError):
        validate_manifest(["not", "a", "manifest"])  # type: ignore[arg-type]


def test_beats_baselines_needs_both_metrics():
    data = broken("metrics.model.brier", 0.25)  # worse than trailing_availability's 0.2
    assert not validate_manifest(data).metrics.beats_baselines()
