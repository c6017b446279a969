"""The training pipeline on a few days of the real traces: the observer's log, rows and labels, causality,
a model that scores, the committed artifact, the baselines."""

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import ml.features as ml_features
from components.capacity import HELD_INTERVAL_S, ObservationKind
from components.risk_model import (
    ADVISOR_BAND_MONTHLY_RATE,
    FEATURE_NAMES,
    advisor_prior,
    evidence_risk,
    feature_vector,
    validate_manifest,
)
from ml import traces
from ml.evaluate import BASELINES, baseline_scores, evaluate, format_table
from ml.features import (
    PROBE_BACKOFF,
    SCORE_EVERY_S,
    _Index,
    epoch_seconds,
    evidence_at,
    feature_tensor,
    label_matrix,
    observer_log,
    scoring_ticks,
    trace_features,
)
from ml.risk import TrainPart, fit, load_artifact, sha256_of, train_estimator
from ml.train import gpu_usw2, run

K = ObservationKind
HORIZON = 3600.0
ONE_CANDIDATE = ({"max_leaf_nodes": 8, "min_samples_leaf": 100},)
ARTIFACT = Path(__file__).resolve().parents[2] / "ml" / "artifacts" / "risk-model.joblib"
ATTEMPTS = (K.LAUNCH_REFUSED, K.LAUNCH_SUCCEEDED)
HOLDING = (K.LAUNCH_SUCCEEDED, K.HELD)


@pytest.fixture(scope="module")
def full_trace():
    return traces.p3_9az()


@pytest.fixture(scope="module")
def few_days(full_trace):
    """The first four days of the 9-AZ p3.2xlarge trace (~1,770 ticks of 195 s)."""
    return full_trace.subset(end=full_trace.times[0] + timedelta(days=4))


@pytest.fixture(scope="module")
def log(few_days):
    return observer_log(few_days)


@pytest.fixture(scope="module")
def tensor(few_days, log):
    return feature_tensor(few_days, log, horizon_s=HORIZON)


@pytest.fixture
def watched_all_along(few_days, monkeypatch):
    """The observer's log when a watched pool is watched for the whole trace (no span switch), so every
    launch attempt it makes is decided by the back-off alone."""
    monkeypatch.setattr(ml_features, "COVERAGE_MEAN_S", 1e15)
    log = observer_log(few_days)
    assert sum(1 for obs in log.values() if obs) >= 2, "the fixed seed watches some pools"
    return log


def _tick_of(trace):
    return {t: i for i, t in enumerate(epoch_seconds(trace))}


# ---- the observer's log -----------------------------------------------------------------------------

def test_advisor_rates_are_the_same_as_the_trace_loaders():
    assert tuple(traces.ADVISOR_BUCKET_MONTHLY_RATE) == ADVISOR_BAND_MONTHLY_RATE


def test_the_observer_log_is_reproducible(few_days, log):
    # same seed, same log (every observation, in the same order)
    assert observer_log(few_days) == log
    assert observer_log(few_days, seed=ml_features.OBSERVER_SEED) == log
    assert observer_log(few_days, seed=12) != log
    assert set(log) == set(few_days.pools)
    for pool, obs in log.items():
        assert all(o.pool_id == pool for o in obs)
        assert [o.at for o in obs] == sorted(o.at for o in obs)
    kinds = {o.kind for obs in log.values() for o in obs}
    assert {K.HELD, K.LAUNCH_SUCCEEDED, K.LAUNCH_REFUSED, K.INTERRUPTION_WARNING} <= kinds
    assert not kinds & {K.REBALANCE, K.AWS_STOPPED, K.PLACEMENT_SCORE}  # no trace carries them


def test_the_observer_sees_a_pool_only_as_it_was_at_that_tick(few_days, log):
    tick_of = _tick_of(few_days)
    for j, pool in enumerate(few_days.pools):
        for o in log[pool]:
            up = few_days.available[tick_of[o.at], j]
            # never HELD (nor launched) where the pool is unobtainable; refused / warned only where it is
            assert up == (1 if o.kind in HOLDING else 0), (pool, o)


def test_a_warning_comes_at_the_first_unobtainable_tick_while_holding(few_days, log):
    tick_of = _tick_of(few_days)
    warnings = 0
    for j, pool in enumerate(few_days.pools):
        obs = log[pool]
        for before, after in zip(obs, obs[1:]):
            if after.kind not in (K.INTERRUPTION_WARNING, K.HELD):
                continue
            # a warning or a HELD only ever follows a launch or a HELD (the observer holds an instance) ...
            assert before.kind in HOLDING, (pool, before, after)
            h, i = tick_of[before.at], tick_of[after.at]
            # ... and the pool was obtainable at every tick in between: no outage goes unwarned
            assert few_days.available[h:i, j].all(), (pool, before, after)
            if after.kind is K.INTERRUPTION_WARNING:
                warnings += 1
                assert few_days.available[i, j] == 0
    assert warnings > 0


def test_held_is_recorded_every_interval_while_holding(few_days, log):
    stamps = epoch_seconds(few_days)
    longest_tick = float(np.diff(stamps).max())
    held = 0
    for obs in log.values():
        for before, after in zip(obs, obs[1:]):
            if after.kind is K.HELD:
                held += 1
                assert HELD_INTERVAL_S <= after.at - before.at < HELD_INTERVAL_S + longest_tick
    assert held > 0


def test_when_holding_the_pool_is_in_no_back_off_and_after_a_warning_it_is(watched_all_along):
    for obs in watched_all_along.values():
        for n, o in enumerate(obs):
            if o.kind in HOLDING:
                assert PROBE_BACKOFF.until(obs[:n + 1], o.at) is None
            elif o.kind is K.INTERRUPTION_WARNING:
                assert PROBE_BACKOFF.until(obs[:n + 1], o.at) == o.at + PROBE_BACKOFF.window(1)


def test_launches_are_retried_under_the_probe_back_off(few_days, watched_all_along):
    # GIVEN a pool watched along the whole trace
    stamps = epoch_seconds(few_days)
    tick_of = _tick_of(few_days)
    longest_streak, attempts_after_a_negative = 0, 0
    for obs in watched_all_along.values():
        streak = 0
        for n, o in enumerate(obs):
            if o.kind not in ATTEMPTS:
                streak = streak + 1 if o.kind is K.INTERRUPTION_WARNING else streak
                continue
            # THEN no launch is tried while the product's back-off blocks the pool ...
            assert PROBE_BACKOFF.until(obs[:n], o.at) is None, o
            i = tick_of[o.at]
            if n and obs[n - 1].negative:
                attempts_after_a_negative += 1
                # ... and it is retried at the first tick the back-off allows
                previous = obs[n - 1]
                window = PROBE_BACKOFF.window(streak)
                assert o.at >= previous.at + window > stamps[i - 1], (previous, o, window)
            streak = streak + 1 if o.kind is K.LAUNCH_REFUSED else 0
            longest_streak = max(longest_streak, streak)
    # the data exercise the growing windows up to the cap (10 min × 2^6 > 6 h)
    assert attempts_after_a_negative > 20 and longest_streak >= 7


def test_a_pool_is_watched_in_spans_so_no_observation_is_in_the_data(few_days, log):
    # the default log leaves stretches of more than half a day without any observation of a pool
    gaps = []
    start, end = epoch_seconds(few_days)[[0, -1]]
    for obs in log.values():
        times = [start, *(o.at for o in obs), end]
        gaps.append(max(np.diff(times)))
    assert max(gaps) > 12 * 3600


# ---- rows and labels ------------------------------------------------------------------------------

def test_scoring_ticks_are_the_first_tick_at_least_15_minutes_after_the_last(few_days):
    stamps = epoch_seconds(few_days)
    ticks = scoring_ticks(few_days)
    assert ticks[0] == 0 and (np.diff(ticks) > 0).all()
    gaps = np.diff(stamps[ticks])
    assert (gaps >= SCORE_EVERY_S - 1e-6).all()
    # no tick skipped that was already far enough from the last scoring tick
    assert (stamps[ticks[1:] - 1] - stamps[ticks[:-1]] < SCORE_EVERY_S).all()


def test_rows_are_scoring_ticks_of_obtainable_pools_with_a_complete_label_window(few_days, tensor):
    rows = trace_features(few_days, HORIZON, tensor=tensor)
    stamps = epoch_seconds(few_days)
    scored = set(scoring_ticks(few_days).tolist())
    assert len(rows) > 1000 and rows.X.shape == (len(rows), len(FEATURE_NAMES))
    assert set(rows.tick.tolist()) <= scored
    assert (few_days.available[rows.tick, rows.pool] == 1).all()
    assert (stamps[rows.tick] + HORIZON <= stamps[-1]).all()
    # every such (tick, pool) is a row, once
    expected = {(t, j) for t in scored for j in range(len(few_days.pools))
                if few_days.available[t, j] == 1 and stamps[t] + HORIZON <= stamps[-1]}
    got = list(zip(rows.tick.tolist(), rows.pool.tolist()))
    assert len(got) == len(set(got)) and set(got) == expected


def test_labels_look_only_inside_the_horizon(few_days):
    y, window_end = label_matrix(few_days, HORIZON)
    stamps = epoch_seconds(few_days)
    avail = few_days.available
    for tick in (0, 100, 900, few_days.ticks - 25):
        later = (stamps > stamps[tick]) & (stamps <= stamps[tick] + HORIZON)
        assert window_end[tick] == np.nonzero(later)[0].max()
        for pool in range(len(few_days.pools)):
            assert y[tick, pool] == int((avail[later, pool] == 0).any())


def test_row_features_labels_and_baselines_are_the_tensors_and_label_matrix(few_days, log, tensor):
    features, fallback = tensor
    rows = trace_features(few_days, HORIZON, tensor=tensor)
    y, _ = label_matrix(few_days, HORIZON)
    np.testing.assert_array_equal(rows.y, y[rows.tick, rows.pool])
    np.testing.assert_array_equal(rows.X, features[rows.tick, rows.pool])
    np.testing.assert_array_equal(rows.fallback, fallback[rows.tick, rows.pool])
    bands = np.array([few_days.advisor_band[p] for p in few_days.pools])
    np.testing.assert_array_equal(rows.prior, [advisor_prior(int(b), HORIZON) for b in bands[rows.pool]])
    assert 0 < rows.y.mean() < 1
    # a row is the one feature function on the evidence the risk scorer would build at that tick
    index, stamps = _Index(log), epoch_seconds(few_days)
    for r in np.linspace(0, len(rows) - 1, 25).astype(int):
        ev = evidence_at(few_days, index, int(rows.pool[r]), int(rows.tick[r]), stamps)
        assert ev.now == stamps[rows.tick[r]] and all(o.at <= ev.now for o in ev.observations)
        np.testing.assert_array_equal(rows.X[r], feature_vector(ev))
        assert rows.fallback[r] == evidence_risk(ev, HORIZON)
    # not at scoring ticks: NaN
    off = np.setdiff1d(np.arange(few_days.ticks), scoring_ticks(few_days))
    assert np.isnan(features[off]).all() and np.isnan(fallback[off]).all()


def test_features_at_t_do_not_change_when_the_trace_after_t_changes(few_days, tensor):
    # GIVEN a copy of the trace whose availability and prices after tick t are scrambled
    t = few_days.ticks // 2
    rng = np.random.default_rng(0)
    altered = few_days.subset()
    altered.available = altered.available.copy()
    altered.prices = altered.prices.copy()
    altered.available[t + 1:] = rng.integers(0, 2, altered.available[t + 1:].shape)
    altered.prices[t + 1:] = rng.uniform(0.5, 3.0, altered.prices[t + 1:].shape)
    # WHEN features are computed on both (each with its own observer log)
    features, fallback = tensor
    features_b, fallback_b = feature_tensor(altered, horizon_s=HORIZON)
    # THEN every row up to t is the same, and the future did change something
    np.testing.assert_array_equal(features_b[: t + 1], features[: t + 1])
    np.testing.assert_array_equal(fallback_b[: t + 1], fallback[: t + 1])
    assert not np.array_equal(features_b, features, equal_nan=True)


def test_no_training_label_window_crosses_the_split(few_days, tensor):
    split = few_days.split_index(0.6)
    rows = TrainPart(few_days, split, tensor).rows(HORIZON)
    _, window_end = label_matrix(few_days, HORIZON)
    assert len(rows) > 0
    assert rows.tick.max() < split
    assert window_end[rows.tick].max() < split
    assert (few_days.available[rows.tick, rows.pool] == 1).all()
    held = trace_features(few_days, HORIZON, start=split, tensor=tensor)
    assert held.tick.min() >= split and window_end[held.tick].max() <= few_days.ticks - 1


# ---- training -------------------------------------------------------------------------------------

def test_a_model_trained_on_a_few_real_days_scores_probabilities(few_days, tensor):
    # WHEN the model is fitted on the first 60 % of four real days
    split = few_days.split_index(0.6)
    model = fit(few_days, split, HORIZON, ONE_CANDIDATE)
    # THEN it scores rows of len(FEATURE_NAMES) features, missing values included, with probabilities
    held = trace_features(few_days, HORIZON, start=split, tensor=tensor)
    assert held.X.shape[1] == len(FEATURE_NAMES) == model.estimator.n_features_in_
    assert np.isnan(held.X).any()
    p = model.predict_features(held.X)
    assert p.shape == (len(held),) and ((p >= 0) & (p <= 1)).all() and np.isfinite(p).all()
    assert len(np.unique(p)) > 1
    assert model.selection is not None and model.selection.params["max_iter"] > 0
    # and the baselines come with the same rows
    metrics = evaluate(held, p)
    assert set(metrics["baselines"]) == set(BASELINES) == {"evidence_fallback", "advisor_prior"}
    assert "evidence_fallback" in format_table({"held": metrics})
    with pytest.raises(ValueError, match="features"):
        model.predict_features(held.X[:, :-1])
    assert model.predict_features(np.empty((0, len(FEATURE_NAMES)))).shape == (0,)


def test_fit_never_reads_the_ticks_after_train_end(few_days):
    # GIVEN the same trace twice, the second with everything from tick k on scrambled
    k = few_days.ticks // 2
    scrambled = few_days.subset()
    scrambled.available = scrambled.available.copy()
    scrambled.available[k:] = np.random.default_rng(0).integers(0, 2, scrambled.available[k:].shape)
    # WHEN a model is fitted on ticks before k of each
    a, b = fit(few_days, k, HORIZON, ONE_CANDIDATE), fit(scrambled, k, HORIZON, ONE_CANDIDATE)
    # THEN they are the same model
    X = feature_tensor(few_days)[0].reshape(-1, len(FEATURE_NAMES))
    X = X[~np.isnan(X).all(axis=1)]
    np.testing.assert_array_equal(a.predict_features(X), b.predict_features(X))


def test_train_estimator_selects_on_the_inner_split_and_refits_on_every_row(few_days, tensor):
    part = TrainPart(few_days, few_days.split_index(0.6), tensor)
    estimator, selection, rows = train_estimator([part], HORIZON, ONE_CANDIDATE)
    assert len(rows) == len(part.rows(HORIZON)) and estimator.n_features_in_ == len(FEATURE_NAMES)
    assert selection.tried and all(c["max_iter"] % 25 == 0 for c in selection.tried)
    assert selection.inner_brier == pytest.approx(min(c["inner_brier"] for c in selection.tried), abs=1e-6)


def test_training_writes_a_loadable_artifact_and_a_valid_manifest(few_days, tmp_path):
    # WHEN the training command runs on four days of the real trace
    run({"p3_9az": few_days}, horizon_s=HORIZON, train_fraction=0.6, out=tmp_path, grid=ONE_CANDIDATE,
        allow_worse=True, log=lambda _: None)
    # THEN the manifest validates, its sha256 is the artifact's, and the artifact loads and scores
    manifest = json.loads((tmp_path / "risk-model.json").read_text())
    checked = validate_manifest(manifest)
    assert checked.sha256 == sha256_of(tmp_path / "risk-model.joblib")
    assert checked.horizon_s == HORIZON and checked.feature_names == FEATURE_NAMES
    assert set(manifest["metrics"]["baselines"]) == set(BASELINES)
    assert manifest["training_span"]["end"] < manifest["datasets"][0]["held_out"]["start"]
    model = load_artifact(tmp_path / "risk-model.joblib")
    vector = np.array([[np.nan if x is None else x for x in manifest["test_vector"]["features"]]])
    assert model.predict_features(vector)[0] == pytest.approx(manifest["test_vector"]["probability"], abs=1e-6)
    # a tampered artifact is refused
    with open(tmp_path / "risk-model.joblib", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        load_artifact(tmp_path / "risk-model.joblib")


# ---- the committed artifact and the baselines -----------------------------------------------------

def test_the_committed_artifact_loads_and_reproduces_its_test_vector():
    assert ARTIFACT.exists(), "the risk model is committed in ml/artifacts (python -m ml.train)"
    model = load_artifact(ARTIFACT)
    assert model.manifest is not None and model.manifest.feature_names == FEATURE_NAMES
    assert model.estimator.n_features_in_ == len(FEATURE_NAMES)
    assert set(model.manifest.raw["metrics"]["baselines"]) == set(BASELINES)
    assert model.manifest.metrics.beats_baselines()
    assert model.manifest.test_vector is not None
    features, probability = model.manifest.test_vector
    vector = np.array([[np.nan if x is None else x for x in features]])
    assert model.predict_features(vector)[0] == pytest.approx(probability, abs=1e-6)


def test_the_baselines_are_the_rows_evidence_fallback_and_advisor_prior(few_days, tensor):
    rows = trace_features(few_days, HORIZON, tensor=tensor)
    scores = baseline_scores(rows)
    assert tuple(scores) == BASELINES
    np.testing.assert_array_equal(scores["evidence_fallback"], rows.fallback)
    np.testing.assert_array_equal(scores["advisor_prior"], rows.prior)
    assert ((rows.fallback > 0) & (rows.fallback < 1)).all()
    # every pool of the trace is in band 4: the prior is one constant
    assert np.unique(rows.prior).tolist() == [advisor_prior(4, HORIZON)]


def test_gpu_trace_adapter_names_pools_as_the_product_does():
    trace = gpu_usw2()
    assert trace.ticks == 3895 and len(trace.pools) == 8
    assert "p2.xlarge.us-west-2a" in trace.pools and "p3.16xlarge.us-west-2b" in trace.pools
    assert set(trace.regions.values()) == {"us-west-2"}
    assert np.all(np.diff([t.timestamp() for t in trace.times]) == 600)
    assert set(trace.advisor_band.values()) <= set(range(5))
    assert not np.isfinite(trace.prices).any()
