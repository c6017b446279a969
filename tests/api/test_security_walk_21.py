"""Security walk 21: what landed in the last session, attacked by a tenant holding two client tokens (its agents on
them): a pricing report's pruning of other clients' entries of a shared pool (``agent_prices``: whether one tenant's
report can erase another's fresh price, or keep a stale one), the legacy emergency replica's repeat that hands a held
failover to the sentinel (whether it can be pointed at another tenant's instance or its held failover), the v4 replica
PUT's take-over of a ready standby and its ``standby_instance_unowned`` notification (whether a tenant can make the
product terminate an instance that is not the product's own launch for it, take over another tenant's standby, or be
told of instances that do not run), and an agent delete's repeat keyed on ``deleted_at`` (whether another tenant's, or
one after the agent was registered again, replays its effects). Each test is one attack; its docstring says what it
tries and what holds (and, when it found something, what happened before the fix)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chalicelib.repositories import pools as pool_repo
from chalicelib.tables.pools import PoolTable
from tests.api._support import pricing_body, random_instance_type
from tests.api.test_security_walk_19 import overtaken_at
from tests.conftest import registration


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _typed_agent(make_tenant, itype: str):
    """A tenant with one agent of ``itype`` in eu-west-1a: (client_id, caller, agent_id, instance_id)."""
    client_id, caller = make_tenant()
    reg = registration(instance_type=itype)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], reg["instance_id"]


def _report(caller, agent_id: str, instance_id: str, itype: str, price: float, at: datetime) -> dict:
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                pricing_body(instance_id, itype, {"eu-west-1a": price}, collected_at=at))
    assert status == 200, reply
    return reply


def _entries(pool_id: str) -> dict:
    row = PoolTable.get(pool_id, consistent_read=True)
    return row.agent_prices.as_dict() if row.agent_prices is not None else {}


# --- a pricing report's pruning of other clients' entries --------------------------------------------------------


def test_a_report_never_prunes_another_tenants_entry_refreshed_while_it_ran(make_tenant, monkeypatch):
    """The attack: the attacker's agent reports a pool the victim also prices, timed so that the victim's entry,
    untouched for fifteen days when the attacker's report reads the pool, is refreshed by the victim's own report
    before the attacker's write (the victim's agent came back; an attacker reporting every few seconds needs no luck).
    The pruning decides which entries are stale on the row as read, and removes them in its write.

    Before walk 21 the remove was unconditional: the attacker's write deleted the victim's entry its own report had
    just written, so the victim's fresh price (the only price of a pool the spot-prices job does not cover) was gone
    until its next report, its decisions pricing the pool at nothing. What holds now: an entry is removed only if it
    is still the one read (its ``at`` unchanged); a refreshed one stays, the attacker's own entry is written all the
    same."""
    itype = random_instance_type()
    pool = f"{itype}.eu-west-1a"
    victim_id, victim, victim_agent, victim_instance = _typed_agent(make_tenant, itype)
    attacker_id, attacker, attacker_agent, attacker_instance = _typed_agent(make_tenant, itype)
    now = _now()
    _report(victim, victim_agent, victim_instance, itype, 0.0500, now - timedelta(hours=3))
    stale = (now - timedelta(days=15)).isoformat()
    PoolTable(pool).update(actions=[PoolTable.agent_prices[victim_id].set(
        {"price": "0.0500", "at": stale, "recent": []})])

    refreshed = overtaken_at(monkeypatch, pool_repo, "_stale_entries", before=True, second=lambda: _report(
        victim, victim_agent, victim_instance, itype, 0.0510, now - timedelta(minutes=1)))
    _report(attacker, attacker_agent, attacker_instance, itype, 0.0900, now - timedelta(minutes=2))

    assert refreshed and refreshed[0]["points_written"] >= 1
    entries = _entries(pool)
    assert victim_id in entries, "the victim's fresh entry was pruned by the attacker's report"
    assert entries[victim_id]["at"] != stale and Decimal(entries[victim_id]["price"]) == Decimal("0.0510")
    assert attacker_id in entries and Decimal(entries[attacker_id]["price"]) == Decimal("0.0900")


def test_a_report_prunes_only_entries_past_the_kept_age_whatever_time_it_claims(make_tenant):
    """The attack: the attacker's agent reports a pool with its ``collected_at`` as far ahead as the clock skew
    allows, hoping the pruning measures the other entries' age against the report's time (which the agent chooses)
    and so erases the victim's entry of thirteen days. What holds: the age is measured against the server's clock;
    the victim's entry (13 days) stays, a gone client's (15 days) goes, and the victim still reads its own price."""
    itype = random_instance_type()
    pool = f"{itype}.eu-west-1a"
    victim_id, victim, victim_agent, victim_instance = _typed_agent(make_tenant, itype)
    attacker_id, attacker, attacker_agent, attacker_instance = _typed_agent(make_tenant, itype)
    now = _now()
    _report(victim, victim_agent, victim_instance, itype, 0.0500, now - timedelta(hours=3))
    thirteen = (now - timedelta(days=13)).isoformat()
    PoolTable(pool).update(actions=[
        PoolTable.agent_prices[victim_id].set({"price": "0.0500", "at": thirteen, "recent": []}),
        PoolTable.agent_prices["cl-gone"].set({"price": "0.0400", "at": (now - timedelta(days=15)).isoformat(),
                                               "recent": []})])
    _report(attacker, attacker_agent, attacker_instance, itype, 0.0900, now + timedelta(seconds=50))
    entries = _entries(pool)
    assert entries[victim_id]["at"] == thirteen and "cl-gone" not in entries
    assert pool_repo.latest_prices([pool])[pool].seen_by(victim_id).price == Decimal("0.0500")
    assert pool_repo.latest_prices([pool])[pool].seen_by(attacker_id).price == Decimal("0.0900")
