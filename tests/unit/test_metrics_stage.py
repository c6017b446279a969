"""The app's metrics carry the stage (alarms of one stage never fire on another stage's metrics in the same
account: infra/monitoring.py), and the cleanup job counts the interruptions it found stuck."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib import observability
from chalicelib.jobs import cleanup
from chalicelib.jobs.cleanup import STUCK_INTERRUPTIONS_METRIC


@pytest.fixture
def flushed(monkeypatch):
    """Every EMF document publish_metrics flushes (metrics are disabled in tests: nothing is printed)."""
    documents = []
    monkeypatch.setattr(observability.metrics, "flush_metrics",
                        lambda *a, **k: documents.append(observability.metrics.serialize_metric_set()))
    observability.metrics.clear_metrics()
    yield documents
    observability.metrics.clear_metrics()


def _dimensions(document) -> list[str]:
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    return [d for group in directive["Dimensions"] for d in group]


def test_every_flushed_metric_carries_the_stage(flushed):
    observability.metrics.add_metric(name="Probe", unit=observability.MetricUnit.Count, value=1)
    observability.publish_metrics()
    observability.metrics.add_metric(name="Probe", unit=observability.MetricUnit.Count, value=1)
    observability.publish_metrics()  # and again after the first flush cleared the dimensions
    assert len(flushed) == 2
    for document in flushed:
        assert observability.STAGE_DIMENSION in _dimensions(document)
        assert document[observability.STAGE_DIMENSION] == "dev"
        assert document["service"] == "spot-optimizer"


def test_the_cleanup_counts_stuck_interruptions_for_the_alarm(flushed, monkeypatch):
    monkeypatch.setattr(cleanup, "expire_standbys", lambda now: [])
    monkeypatch.setattr(cleanup, "sweep_stuck", lambda now: ["int-1", "int-2"])
    monkeypatch.setattr(cleanup, "managed_regions", lambda: [])
    cleanup.run(datetime.now(UTC))
    (document,) = flushed
    assert document[STUCK_INTERRUPTIONS_METRIC] == [2.0]
    assert document[observability.STAGE_DIMENSION] == "dev"
