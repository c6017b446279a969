"""The training pipeline on a few days of the real traces: no leakage, a loadable artifact, a valid manifest."""

import json
from datetime import timedelta

import numpy as np
import pytest

from components.risk_model import (
    ADVISOR_BAND_MONTHLY_RATE,
    FEATURE_NAMES,
    UNAVAILABLE_RISK,
    advisor_prior,
    feature_vector,
    validate_manifest,
)
from ml import traces
from ml.features import feature_tensor, label_matrix, pool_histories, trace_features
from ml.risk import TrainPart, fit, load_artifact, prior_matrix, sha256_of
from ml.train import gpu_usw2, run

HORIZON = 3600.0
ONE_CANDIDATE = ({"max_leaf_nodes": 8, "min_samples_leaf": 100},)


@pytest.fixture(scope="module")
def full_trace():
    return traces.p3_9az()


@pytest.fixture(scope="module")
def few_days(full_trace):
    """The first four days of the 9-AZ p3.2xlarge trace (~1,770 ticks of 195 s)."""
    return full_trace.subset(end=full_trace.times[0] + timedelta(days=4))


def test_advisor_rates_are_the_same_as_the_trace_loaders():
    assert tuple(traces.ADVISOR_BUCKET_MONTHLY_RATE) == ADVISOR_BAND_MONTHLY_RATE


def test_gpu_trace_adapter_names_pools_as_the_product_does():
    trace = gpu_usw2()
    assert trace.ticks == 3895 and len(trace.pools) == 8
    assert "p2.xlarge.us-west-2a" in trace.pools and "p3.16xlarge.us-west-2b" in trace.pools
    assert set(trace.regions.values()) == {"us-west-2"}
    assert np.all(np.diff([t.timestamp() for t in trace.times]) == 600)
    assert set(trace.advisor_band.values()) <= set(range(5))


def test_feature_tensor_uses_the_component_definition(few_days):
    tensor = feature_tensor(few_days)
    assert tensor.shape == (few_days.ticks, len(few_days.pools), len(FEATURE_NAMES))
    h = pool_histories(few_days)[3]
    for tick in (0, 17, few_days.ticks - 1):
        expected = np.array(feature_vector(h.prefix(tick + 1)))
        np.testing.assert_array_equal(tensor[tick, 3], expected)


def test_labels_look_only_inside_the_horizon(few_days):
    y, window_end = label_matrix(few_days, HORIZON)
    stamps = np.array([t.timestamp() for t in few_days.times])
    avail = few_days.available
    for tick in (0, 100, 900):
        later = (stamps > stamps[tick]) & (stamps <= stamps[tick] + HORIZON)
        assert window_end[tick] == np.nonzero(later)[0].max()
        for pool in range(len(few_days.pools)):
            assert y[tick, pool] == int((avail[later, pool] == 0).any())


def test_no_training_label_window_crosses_the_split(few_days):
    split = few_days.split_index(0.6)
    rows = TrainPart(few_days, split).rows(HORIZON)
    _, window_end = label_matrix(few_days, HORIZON)
    assert len(rows) > 0
    assert rows.tick.max() < split
    assert window_end[rows.tick].max() < split
    assert (few_days.available[rows.tick, rows.pool] == 1).all()
    # held-out rows start at the split and never read past the trace's end
    held = trace_features(few_days, HORIZON, start=split)
    assert held.tick.min() >= split and window_end[held.tick].max() <= few_days.ticks - 1


def test_fit_never_reads_the_ticks_after_train_end(few_days):
    # GIVEN the same trace twice, the second with everything after tick k scrambled
    k = few_days.ticks // 2
    scrambled = few_days.subset()
    scrambled.available = scrambled.available.copy()
    scrambled.available[k:] = np.random.default_rng(0).integers(0, 2, scrambled.available[k:].shape)
    # WHEN a model is fitted on ticks before k of each
    a, b = fit(few_days, k, HORIZON, ONE_CANDIDATE), fit(scrambled, k, HORIZON, ONE_CANDIDATE)
    # THEN they are the same model
    X = feature_tensor(few_days).reshape(-1, len(FEATURE_NAMES))
    np.testing.assert_array_equal(a.predict_features(X), b.predict_features(X))


def test_predict_matrix_is_causal_and_certain_for_unavailable_pools(few_days):
    model = fit(few_days, few_days.split_index(0.6), HORIZON, ONE_CANDIDATE)
    full = model.predict_matrix(few_days)
    assert full.shape == few_days.available.shape
    assert (full[few_days.available == 0] == UNAVAILABLE_RISK).all()
    assert ((full >= 0) & (full <= 1)).all()
    # the first k rows are the same when the trace stops at k
    k = 700
    cut = few_days.subset(end=few_days.times[k])
    np.testing.assert_array_equal(model.predict_matrix(cut), full[:k])


def test_prior_matrix(few_days):
    prior = prior_matrix(few_days, HORIZON)
    assert prior.shape == few_days.available.shape
    assert (prior[few_days.available == 0] == 1.0).all()
    expected = advisor_prior(few_days.advisor_band[few_days.pools[0]], HORIZON)
    assert (prior[few_days.available[:, 0] == 1, 0] == expected).all()


def test_training_writes_a_loadable_artifact_and_a_valid_manifest(few_days, tmp_path):
    # WHEN the training command runs on four days of the real trace
    run({"p3_9az": few_days}, horizon_s=HORIZON, train_fraction=0.6, out=tmp_path, grid=ONE_CANDIDATE,
        allow_worse=True, log=lambda _: None)
    # THEN the manifest validates, its sha256 is the artifact's, and the artifact loads and scores
    manifest = json.loads((tmp_path / "risk-model.json").read_text())
    checked = validate_manifest(manifest)
    assert checked.sha256 == sha256_of(tmp_path / "risk-model.joblib")
    assert checked.horizon_s == HORIZON and checked.feature_names == FEATURE_NAMES
    assert set(manifest["metrics"]["baselines"]) == {"trailing_availability", "advisor_prior"}
    assert manifest["training_span"]["end"] < manifest["datasets"][0]["held_out"]["start"]
    model = load_artifact(tmp_path / "risk-model.joblib")
    vector = np.array([[np.nan if x is None else x for x in manifest["test_vector"]["features"]]])
    assert model.predict_features(vector)[0] == pytest.approx(manifest["test_vector"]["probability"], abs=1e-6)
    assert type(model.estimator).__module__.startswith("sklearn.")


def test_a_tampered_artifact_is_refused(few_days, tmp_path):
    run({"p3_9az": few_days}, horizon_s=HORIZON, out=tmp_path, grid=ONE_CANDIDATE, allow_worse=True,
        log=lambda _: None)
    with open(tmp_path / "risk-model.joblib", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        load_artifact(tmp_path / "risk-model.joblib")


def test_the_committed_artifact_loads_and_matches_its_manifest():
    from pathlib import Path

    artifact = Path(__file__).resolve().parents[2] / "ml" / "artifacts" / "risk-model.joblib"
    assert artifact.exists(), "the risk model is committed in ml/artifacts (python -m ml.train)"
    model = load_artifact(artifact)
    assert model.manifest is not None and model.manifest.metrics.beats_baselines()
    features, probability = model.manifest.test_vector
    vector = np.array([[np.nan if x is None else x for x in features]])
    assert model.predict_features(vector)[0] == pytest.approx(probability, abs=1e-6)
