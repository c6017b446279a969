"""Security walk 4: the console, notifications, CSV exports, decisions, admin routes, rate limits, agent
credentials, commands, replicas and odd request bodies, plus the price points agents write. Each test is one
attack; its docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.repositories import pools as pool_repo
from chalicelib.tables.pools import PricePointTable
from components.data_valve import PricePoint
from tests.api._support import now_utc, random_instance_type


def _point(pool_id, ts, price, source):
    return PricePoint(pool_id=pool_id, ts=ts, price=Decimal(price), source_agent_id=source)


def _stored(pool_id, ts):
    try:
        return PricePointTable.get(pool_id, ts, consistent_read=True)
    except PricePointTable.DoesNotExist:
        return None


@pytest.mark.usefixtures("aws_tables")
def test_a_report_at_another_tenants_timestamp_leaves_its_point_alone():
    """ATTACK: B's agent reports a pool A's agent priced, with A's ``collected_at`` (an agent chooses it, up to a
    day back). BEFORE: the point (pool, ts) was a BatchWriteItem put: B's price and client replaced A's stored
    point (A's savings and risk history lost it). NOW: the put is conditional on a new key or the client's own."""
    t = now_utc().replace(microsecond=0) - timedelta(minutes=30)
    pool = f"{random_instance_type()}.eu-west-1a"
    pool_repo.admit_points([_point(pool, t, "0.030", "ag-a")], t, client_id="cl-a")
    pool_repo.admit_points([_point(pool, t, "9.990", "ag-b")], t + timedelta(minutes=1), client_id="cl-b")
    stored = _stored(pool, t)
    assert (stored.client_id, stored.price) == ("cl-a", Decimal("0.030"))
    # B's own view keeps its price (its pool entry), and its re-sent report is still idempotent.
    pool_repo.admit_points([_point(pool, t, "9.990", "ag-b")], t + timedelta(minutes=2), client_id="cl-b")
    assert pool_repo.latest_prices([pool])[pool].seen_by("cl-b").price == Decimal("9.990")
    assert pool_repo.latest_prices([pool])[pool].seen_by("cl-a").price == Decimal("0.030")


@pytest.mark.usefixtures("aws_tables")
def test_a_report_never_replaces_an_aws_point_of_a_pool_the_job_stopped_covering():
    """ATTACK: the spot-prices job priced a pool, then stopped covering it (no agent runs the type any more);
    an agent reports that pool at the time of AWS's point. BEFORE: its put replaced AWS's point (everyone's
    history). NOW: AWS's point stays."""
    t = now_utc().replace(microsecond=0) - timedelta(hours=3)
    pool = f"{random_instance_type()}.eu-west-1a"
    pool_repo.store_server_prices([_point(pool, t, "0.040", pool_repo.SERVER_SOURCE)], t)
    pool_repo.admit_points([_point(pool, t, "0.001", "ag-b")], t + timedelta(hours=2), client_id="cl-b",
                           server_window=timedelta(minutes=30))
    stored = _stored(pool, t)
    assert (stored.source_agent_id, stored.client_id, stored.price) == ("aws", None, Decimal("0.040"))


@pytest.mark.usefixtures("aws_tables")
def test_the_valves_delete_of_a_stale_point_spares_another_tenants_point():
    """ATTACK: A's window holds a point at t; B's point then sits at t (written before the fix); A's agent reports
    2 s before t, so the valve merges the two into one point at t - 2 s and deletes (pool, t). BEFORE: that
    delete removed B's point. NOW: the delete is conditional on the point still being A's."""
    t = now_utc().replace(microsecond=0) - timedelta(minutes=30)
    pool = f"{random_instance_type()}.eu-west-1a"
    pool_repo.admit_points([_point(pool, t, "0.030", "ag-a")], t, client_id="cl-a")
    PricePointTable(pool, t, price=Decimal("0.050"), source_agent_id="ag-b", client_id="cl-b",
                    expires_at=t + timedelta(days=1)).save()
    admissions = pool_repo.admit_points([_point(pool, t - timedelta(seconds=2), "0.0301", "ag-a2")],
                                        t + timedelta(minutes=1), client_id="cl-a")
    assert [p.ts for p in admissions[pool].deletes] == [t]
    assert _stored(pool, t - timedelta(seconds=2)).client_id == "cl-a"
    stored = _stored(pool, t)
    assert stored is not None and (stored.client_id, stored.price) == ("cl-b", Decimal("0.050"))


def test_a_re_sent_termination_report_moves_nothing_and_notifies_once(tenant_with_agent):
    """ATTACK (idempotency): the agent re-sends its termination report (a retry, or a replay much later). BEFORE:
    each copy moved the instance's ``terminated_at`` to its own arrival (the end of the run its savings integrate)
    and added a notification. NOW: the first time stays, one notification."""
    from chalicelib.repositories import agents as agent_repo

    client_id, caller, agent_id, reg = tenant_with_agent
    body = {"instance_id": reg["instance_id"], "reason": "spot"}
    assert caller.post(f"/api/agents/{agent_id}/termination", body)[0] == 200
    first = agent_repo.get_instance(client_id, reg["instance_id"]).terminated_at
    assert caller.post(f"/api/agents/{agent_id}/termination", body)[0] == 200
    assert agent_repo.get_instance(client_id, reg["instance_id"]).terminated_at == first
    status, page = caller.get("/api/notifications")
    assert status == 200
    assert [n["kind"] for n in page["notifications"]].count("termination") == 1
