"""A scheduled job's log lines name the job while it runs, and only then: in local mode (one process)
the API's request lines that follow must not carry the last job's name."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib import observability
from chalicelib.jobs import cleanup


def test_the_job_key_lives_for_the_run_only(monkeypatch):
    seen = {}

    def expire(now):
        seen.update(observability.logger.get_current_keys())
        return []

    monkeypatch.setattr(cleanup, "expire_standbys", expire)
    monkeypatch.setattr(cleanup, "sweep_stuck", lambda now: [])
    monkeypatch.setattr(cleanup, "managed_regions", lambda: [])
    cleanup.run(datetime.now(UTC))
    assert seen["job"] == "cleanup"
    assert "job" not in observability.logger.get_current_keys()


def test_a_failing_job_does_not_leave_its_key_behind(monkeypatch):
    def boom(now):
        raise RuntimeError("table gone")

    monkeypatch.setattr(cleanup, "expire_standbys", boom)
    try:
        cleanup.run(datetime.now(UTC))
    except RuntimeError:
        pass
    assert "job" not in observability.logger.get_current_keys()


def test_the_spot_prices_run_names_its_job(monkeypatch):
    """The spot-prices job's own lines (its summary, its metrics) carry ``job``, not only its on-demand step's."""
    from chalicelib.jobs import spot_prices

    seen = {}
    monkeypatch.setattr(spot_prices, "refresh_ondemand", lambda targets, now: {"fetched": 0, "failed": 0})
    monkeypatch.setattr(spot_prices, "publish_metrics", lambda: seen.update(observability.logger.get_current_keys()))
    spot_prices.run(datetime.now(UTC), targets=[])
    assert seen.get("job") == "spot-prices"
    assert "job" not in observability.logger.get_current_keys()
