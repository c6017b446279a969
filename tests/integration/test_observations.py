"""The observations table and repository against moto: round trip, idempotent re-record, time-range
reads, and the back-off computed from stored refusals."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.repositories import observations
from chalicelib.tables.observations import ObservationTable
from components.capacity import DEFAULT_BACKOFF, CapacityObservation, ObservationKind

pytestmark = pytest.mark.usefixtures("aws_tables")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def pool() -> str:
    """A pool of its own per test (the moto is shared by the session)."""
    return f"m5.o{uuid.uuid4().hex[:8]}xl.us-east-1a"


def refused(pool_id: str, at: datetime, code: str = "InsufficientInstanceCapacity") -> CapacityObservation:
    return CapacityObservation(pool_id, ObservationKind.LAUNCH_REFUSED, at.timestamp(), code=code, source="test")


def rows(pool_id: str) -> list[ObservationTable]:
    return list(ObservationTable.query(pool_id, consistent_read=True))


def test_an_observation_round_trips_with_its_context_and_ttl():
    p = pool()
    obs = CapacityObservation(p, ObservationKind.PLACEMENT_SCORE, T0.timestamp(), value=7, source="placement-scores")
    assert observations.record(obs, event_id="evt-1", client_id="c1", agent_id="a1", instance_id="i-0abc12345")
    [row] = rows(p)
    assert row.observation_key == "2026-03-01T12:00:00.000000Z#placement_score#evt-1"
    assert (row.kind, row.value, row.source, row.client_id, row.agent_id, row.instance_id) == \
        ("placement_score", 7, "placement-scores", "c1", "a1", "i-0abc12345")
    assert row.expires_at == T0 + timedelta(days=14)
    assert observations.for_pools([p], T0 - timedelta(minutes=1)) == {p: [obs]}


def test_a_redelivered_source_event_writes_nothing_new():
    p = pool()
    obs = refused(p, T0)
    assert observations.record(obs, event_id="cmd-1") is True
    assert observations.record(obs, event_id="cmd-1") is False
    assert len(rows(p)) == 1
    # another source event at the same instant is another observation
    assert observations.record(obs, event_id="cmd-2") is True
    assert len(rows(p)) == 2


def test_a_write_failure_is_logged_and_never_raised(monkeypatch):
    from pynamodb.exceptions import PutError

    def broken(self, *args, **kwargs):
        raise PutError("table is gone")

    monkeypatch.setattr(ObservationTable, "save", broken)
    assert observations.record(refused(pool(), T0), event_id="x") is False


def test_for_pools_reads_each_pool_by_time_range_oldest_first():
    a, b, quiet = pool(), pool(), pool()
    for minutes in (0, 10, 20, 30):
        observations.record(refused(a, T0 + timedelta(minutes=minutes)), event_id=f"a{minutes}")
    observations.record(refused(b, T0 - timedelta(days=2)), event_id="old")
    got = observations.for_pools([a, b, quiet, a], T0 + timedelta(minutes=5), T0 + timedelta(minutes=20))
    assert [o.at for o in got[a]] == [(T0 + timedelta(minutes=m)).timestamp() for m in (10, 20)]
    assert got[b] == [] and got[quiet] == []
    assert [len(v) for v in observations.for_pools([a], T0, limit=3).values()] == [3]  # the newest 3


def test_backoff_grows_with_refusals_in_a_row_and_a_success_clears_it():
    p, other = pool(), pool()
    observations.record(refused(p, T0), event_id="r1")
    assert observations.backoff([p, other], T0 + timedelta(minutes=5)) == {p: T0 + timedelta(minutes=10)}
    observations.record(refused(p, T0 + timedelta(minutes=11)), event_id="r2")
    # second refusal in a row: 20 minutes from it
    assert observations.backoff([p], T0 + timedelta(minutes=12)) == {p: T0 + timedelta(minutes=31)}
    assert observations.backoff([p], T0 + timedelta(minutes=31)) == {}
    ok = CapacityObservation(p, ObservationKind.LAUNCH_SUCCEEDED, (T0 + timedelta(minutes=40)).timestamp())
    observations.record(ok, event_id="s1")
    observations.record(refused(p, T0 + timedelta(minutes=50)), event_id="r3")
    # the success reset the streak: back to the base window
    assert observations.backoff([p], T0 + timedelta(minutes=51)) == \
        {p: T0 + timedelta(minutes=50, seconds=DEFAULT_BACKOFF.base_s)}


def test_backoff_ignores_refusals_older_than_the_lookback():
    p = pool()
    observations.record(refused(p, T0 - observations.BACKOFF_LOOKBACK - timedelta(hours=1)), event_id="old")
    assert observations.backoff([p], T0) == {}


def test_a_warning_starts_the_same_window_and_a_rebalance_does_not():
    p, q = pool(), pool()
    observations.record(CapacityObservation(p, ObservationKind.INTERRUPTION_WARNING, T0.timestamp()), event_id="w")
    observations.record(CapacityObservation(q, ObservationKind.REBALANCE, T0.timestamp()), event_id="r")
    assert observations.backoff([p, q], T0 + timedelta(minutes=1)) == {p: T0 + timedelta(minutes=10)}


def test_a_crowded_pools_exposure_does_not_crowd_out_its_refusals(monkeypatch, make_tenant):
    """GIVEN 300 live agents on spot in one pool and a refusal there an hour ago
    WHEN the risk scorer records exposure every 15 minutes for 2 hours
    THEN one HELD row per run names the 300, and the bounded newest-first reads (back-off's MAX_PER_POOL,
    the evidence's) still hold the refusal; a rerun of the same run writes nothing."""
    from chalicelib.jobs import risk_scorer
    from chalicelib.repositories import agents as agent_repo

    p = pool()
    client_id, _ = make_tenant(legacy=False)  # its agents' pools are proven: the fleet's exposure
    monkeypatch.setattr(agent_repo, "live_spot_counts",
                        lambda pool_id: Counter({client_id: 300}) if pool_id == p else Counter())
    observations.record(refused(p, T0 - timedelta(hours=1)), event_id="launch-1")
    runs = [T0 - timedelta(hours=2) + k * timedelta(minutes=15) for k in range(9)]
    assert [risk_scorer.record_held(at, [p]) for at in runs] == [300] * 9
    assert risk_scorer.record_held(runs[-1], [p]) == 0  # the same run again

    held = [r for r in rows(p) if r.kind == "held"]
    assert len(held) == 9 and {r.value for r in held} == {300}
    recent = observations.for_pools([p], T0 - timedelta(days=1), T0)[p]  # MAX_PER_POOL newest
    assert [o.kind for o in recent].count(ObservationKind.LAUNCH_REFUSED) == 1
    assert sum(o.held_instances for o in recent) == 9 * 300


def test_a_client_flooding_reports_pushes_out_only_its_own():
    """GIVEN the product's own refusal in pool P, and then more reports of one client's agents about P than a
    read takes (``MAX_PER_POOL``)
    WHEN another client, the fleet, or the flooding client itself reads P
    THEN the product's refusal is still read by all three (P stays in back-off), the other client and the fleet
    read none of the reports, and the flooding client its newest ``MAX_PER_POOL``."""
    p = pool()
    observations.record(refused(p, T0), event_id="replica:a:r1", client_id="victim")
    flood = [CapacityObservation(p, ObservationKind.LAUNCH_SUCCEEDED, (T0 + timedelta(seconds=k + 1)).timestamp(),
                                 source="agent") for k in range(observations.MAX_PER_POOL + 5)]
    for k, obs in enumerate(flood):
        assert observations.record(obs, event_id=f"switch:{k}", client_id="flooder", reported=True)

    now = T0 + timedelta(minutes=5)
    mine = observations.for_pools([p], T0 - timedelta(minutes=1), now, viewer="flooder")[p]
    assert mine[0].kind is ObservationKind.LAUNCH_REFUSED and mine[1:] == flood[-observations.MAX_PER_POOL:]
    for viewer in ("victim", observations.FLEET):
        assert observations.for_pools([p], T0 - timedelta(minutes=1), now, viewer=viewer)[p] == [refused(p, T0)]
        assert observations.backoff([p], now, viewer=viewer) == {p: T0 + timedelta(minutes=10)}
    assert len(observations.for_pools([p], T0 - timedelta(minutes=1), now)[p]) == len(flood) + 1  # diagnostics
    assert observations.backoff([p], now, viewer="flooder") == {}  # its own claims of launches clear its own view


def test_reports_by_client_finds_every_reporting_client_whatever_one_of_them_sent():
    """GIVEN pool P with the product's own refusal, 30 reports of client "b" (ids sorting between the others'),
    one of "a", one of "c" long before the window, and one of "b-2" (a client whose id extends "b")
    WHEN the reports of P within the window are read by client
    THEN each client in the window is found with its own reports only (newest ``limit``), the product's refusal is
    no one's report, and "c" (outside the window) is absent."""
    p = pool()
    observations.record(refused(p, T0), event_id="replica:r1", client_id="a")
    observations.record(refused(p, T0 - timedelta(days=9)), event_id="cmd:c", client_id="c", reported=True)
    mine = {"a": [refused(p, T0 + timedelta(seconds=1))], "b-2": [refused(p, T0 + timedelta(seconds=2))],
            "b": [refused(p, T0 + timedelta(seconds=10 + k)) for k in range(30)]}
    for client, reports in mine.items():
        for k, obs in enumerate(reports):
            assert observations.record(obs, event_id=f"cmd:{client}:{k}", client_id=client, reported=True)

    found = observations.reports_by_client([p, pool()], T0 - timedelta(days=7), T0 + timedelta(hours=1), limit=20)

    assert found == {"a": {p: mine["a"]}, "b-2": {p: mine["b-2"]}, "b": {p: mine["b"][-20:]}}


def test_reports_by_client_scores_at_most_its_cap_of_clients_per_pool():
    """GIVEN four clients with reports on P WHEN read with a cap of two THEN the first two by id are returned."""
    p = pool()
    for client in ("d", "a", "c", "b"):
        observations.record(refused(p, T0), event_id=f"cmd:{client}", client_id=client, reported=True)

    found = observations.reports_by_client([p], T0 - timedelta(hours=1), T0 + timedelta(hours=1), clients=2)

    assert found == {"a": {p: [refused(p, T0)]}, "b": {p: [refused(p, T0)]}}
