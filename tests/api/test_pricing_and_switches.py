"""Pricing reports through the data valve, and switch reports."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from chalicelib.tables.agents import AgentTable
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.notifications import NotificationTable
from chalicelib.tables.pools import PoolTable, PricePointTable, PricingReportTable
from chalicelib.tables.switches import SwitchTable
from tests.api._support import (
    assert_error,
    now_utc,
    pricing_body,
    random_instance_type,
    switch_body,
)
from tests.conftest import new_instance_id, registration

RETENTION = timedelta(days=90)
EPOCH_FLOOR = datetime(2020, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def typed_agents(make_tenant):
    """Two agents (of two tenants) running the same never-seen instance type; its pools are this test's."""
    itype = random_instance_type()
    agents = []
    for _ in range(2):
        _, caller = make_tenant()
        reg = registration(instance_type=itype)
        status, reply = caller.post("/api/agents/register", reg)
        assert status == 200, reply
        agents.append((caller, reply["agent_id"], reg["instance_id"]))
    return itype, agents


@pytest.fixture
def tenant_agents(make_tenant):
    """Two agents of one tenant running the same never-seen instance type."""
    itype = random_instance_type()
    _, caller = make_tenant()
    agents = []
    for _ in range(2):
        reg = registration(instance_type=itype)
        status, reply = caller.post("/api/agents/register", reg)
        assert status == 200, reply
        agents.append((caller, reply["agent_id"], reg["instance_id"]))
    return itype, agents


def report(caller, agent_id, body):
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200, reply
    return reply


def raw_client(agent_id):
    return list(PricingReportTable.query(agent_id))[0].client_id


def seen(pool_id, agent_id):
    """(price, at, source) of the pool as the agent's client sees it."""
    from chalicelib.repositories import pools

    view = pools.latest_prices([pool_id])[pool_id].seen_by(raw_client(agent_id))
    return view.price, view.at, view.price_source


def points(pool_id):
    return sorted(PricePointTable.query(pool_id), key=lambda p: p.ts)


def test_pricing_report_stores_points_and_pool_rows(typed_agents):
    """GIVEN three AZ prices WHEN reported THEN one point per pool with TTL, and pool rows with the latest
    price, owned by the reporting client; the reporter's on-demand price is kept in the raw report only
    (agents never set the shared on-demand price); the raw report is kept too."""
    itype, [(caller, agent_id, instance_id), _] = typed_agents
    ts = now_utc().replace(microsecond=0) - timedelta(seconds=30)
    prices = {"eu-west-1a": 0.0312, "eu-west-1b": 0.0295, "eu-west-1c": 0.0401}
    reply = report(caller, agent_id, pricing_body(instance_id, itype, prices, on_demand=0.107, current=0.0312,
                                                  collected_at=ts))
    assert reply["pools"] == 3 and reply["points_written"] == 3 and reply["interpolated"] == 0

    for az, price in prices.items():
        pool_id = f"{itype}.{az}"
        [point] = points(pool_id)
        assert point.ts == ts and point.price == Decimal(str(price))
        assert point.quality == "actual" and point.source_agent_id == agent_id and int(point.sources) == 1
        assert point.expires_at == ts + RETENTION
        pool = PoolTable.get(pool_id)
        assert seen(pool_id, agent_id) == (Decimal(str(price)), ts, "agent")
        assert pool.ondemand_price is None and pool.latest_price is None  # the shared price stays AWS's
        assert (pool.instance_type, pool.az, pool.region) == (itype, az, "eu-west-1")
        assert pool.region_type == f"eu-west-1#{itype}"

    [raw] = list(PricingReportTable.query(agent_id))
    assert raw.pools_reported == 3 and raw.pools_stored == 3 and raw.collected_at == ts
    assert raw.on_demand_price == Decimal("0.107") and raw.current_spot_price == Decimal("0.0312")
    assert raw.expires_at > now_utc() + timedelta(days=29)
    assert AgentTable.get(raw.client_id, agent_id).last_pricing_at is not None


def test_pools_the_agent_cannot_speak_for_are_dropped(typed_agents):
    """GIVEN a report including a pool of another instance type, of another region, of a fake zone and of
    a zone AWS does not list WHEN stored THEN only the agent's own pool is kept, the others are named in
    warnings, no pool row is created for them, and no pool gets the reporter's on-demand price."""
    itype, [(caller, agent_id, instance_id), _] = typed_agents
    other = random_instance_type()
    body = pricing_body(instance_id, itype, {"eu-west-1a": 0.03}, on_demand=0.2)
    foreign = [f"{other}.eu-west-1a", f"{itype}.us-east-1a", f"{itype}.eu-west-1-x001-1a", f"{itype}.eu-west-1z"]
    body["pricing"]["spot_pools"] += [{"pool_id": p, "price": 0.001} for p in foreign]
    reply = report(caller, agent_id, body)
    assert reply["pools"] == 1
    for pool_id in foreign:
        assert any(pool_id in w for w in reply["warnings"]), (pool_id, reply["warnings"])
        with pytest.raises(PoolTable.DoesNotExist):
            PoolTable.get(pool_id)
    assert PoolTable.get(f"{itype}.eu-west-1a").ondemand_price is None


def test_two_agents_within_five_seconds_are_averaged(tenant_agents):
    """GIVEN agent 1's price WHEN agent 2 of the same client reports the same pool 3 s later at +0.3 %
    THEN one averaged point (sources 2) replaces it at the earlier timestamp."""
    itype, [(c1, a1, i1), (c2, a2, i2)] = tenant_agents
    t0 = now_utc().replace(microsecond=0) - timedelta(minutes=1)
    pool_id = f"{itype}.eu-west-1a"
    report(c1, a1, pricing_body(i1, itype, {"eu-west-1a": 0.0300}, collected_at=t0))
    reply = report(c2, a2, pricing_body(i2, itype, {"eu-west-1a": 0.0300 * 1.003},
                                        collected_at=t0 + timedelta(seconds=3)))
    assert reply["averaged"] == 1 and reply["points_written"] == 1

    [point] = points(pool_id)
    assert point.ts == t0 and int(point.sources) == 2 and point.quality == "averaged_duplicate"
    expected = (Decimal("0.0300") + Decimal(str(0.0300 * 1.003))) / 2
    assert abs(point.price - expected) < Decimal("1e-9")
    assert seen(pool_id, a1)[0] == point.price


def test_two_tenants_points_are_never_averaged(typed_agents):
    """GIVEN tenant 1's price WHEN tenant 2's agent reports the same pool 3 s later at +0.3 % THEN not
    averaged: each tenant sees its own agent price (one tenant never shapes, nor hides, another's price)."""
    itype, [(c1, a1, i1), (c2, a2, i2)] = typed_agents
    t0 = now_utc().replace(microsecond=0) - timedelta(minutes=1)
    report(c1, a1, pricing_body(i1, itype, {"eu-west-1a": 0.0300}, collected_at=t0))
    reply = report(c2, a2, pricing_body(i2, itype, {"eu-west-1a": 0.0300 * 1.003},
                                        collected_at=t0 + timedelta(seconds=3)))
    assert reply["averaged"] == 0
    pool_id = f"{itype}.eu-west-1a"
    assert seen(pool_id, a2)[0] == Decimal(str(0.0300 * 1.003))
    assert seen(pool_id, a1)[0] == Decimal("0.03")


def test_far_apart_reports_are_not_averaged(tenant_agents):
    """GIVEN agent 1's price WHEN agent 2 reports 3 s later but 5 % higher THEN both points are kept."""
    itype, [(c1, a1, i1), (c2, a2, i2)] = tenant_agents
    t0 = now_utc().replace(microsecond=0) - timedelta(minutes=1)
    report(c1, a1, pricing_body(i1, itype, {"eu-west-1a": 0.0300}, collected_at=t0))
    reply = report(c2, a2, pricing_body(i2, itype, {"eu-west-1a": 0.0315}, collected_at=t0 + timedelta(seconds=3)))
    assert reply["averaged"] == 0
    assert [int(p.sources) for p in points(f"{itype}.eu-west-1a")] == [1, 1]


def test_exact_retry_is_a_duplicate(typed_agents):
    """GIVEN a stored report WHEN the agent retries the identical report THEN nothing new is stored."""
    itype, [(caller, agent_id, instance_id), _] = typed_agents
    body = pricing_body(instance_id, itype, {"eu-west-1a": 0.03}, collected_at=now_utc() - timedelta(seconds=10))
    report(caller, agent_id, body)
    reply = report(caller, agent_id, body)
    assert reply["duplicates"] == 1 and reply["points_written"] == 0
    assert len(points(f"{itype}.eu-west-1a")) == 1


def test_three_minute_gap_is_interpolated(typed_agents):
    """GIVEN a price WHEN the next report comes 3 minutes later THEN the gap is filled by linear points
    (one a minute, quality interpolated, no source) with their own TTL."""
    itype, [(caller, agent_id, instance_id), _] = typed_agents
    t0 = now_utc().replace(microsecond=0) - timedelta(minutes=10)
    report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.030}, collected_at=t0))
    reply = report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.036},
                                                  collected_at=t0 + timedelta(minutes=3)))
    assert reply["interpolated"] == 2 and reply["points_written"] == 3
    stored = points(f"{itype}.eu-west-1a")
    assert [p.ts - t0 for p in stored] == [timedelta(minutes=m) for m in range(4)]
    assert [p.quality for p in stored] == ["actual", "interpolated", "interpolated", "actual"]
    for point, linear in zip(stored[1:3], (Decimal("0.032"), Decimal("0.034"))):
        assert abs(point.price - linear) < Decimal("1e-12"), point.price
    assert stored[1].source_agent_id is None
    assert all(p.expires_at == p.ts + RETENTION for p in stored)
    assert seen(f"{itype}.eu-west-1a", agent_id)[0] == Decimal("0.036")


@pytest.mark.parametrize("gap_minutes, filled", [(10, 9), (11, 0), (1, 0)])
def test_gap_fill_is_bounded(typed_agents, gap_minutes, filled):
    """GIVEN a price WHEN the next report comes 1, 10 or 11 minutes later THEN at most 10 points are filled
    (9 for the longest gap filled, none beyond it, none for a normal cadence)."""
    itype, [(caller, agent_id, instance_id), _] = typed_agents
    t0 = now_utc().replace(microsecond=0) - timedelta(minutes=30)
    report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.03}, collected_at=t0))
    reply = report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.04},
                                                  collected_at=t0 + timedelta(minutes=gap_minutes)))
    assert reply["interpolated"] == filled <= 10
    stored = points(f"{itype}.eu-west-1a")
    assert sum(p.quality == "interpolated" for p in stored) == filled
    assert len(stored) == filled + 2


def test_out_of_order_report_does_not_move_the_latest_price(typed_agents):
    """GIVEN a recent price WHEN an older report arrives late THEN it is stored but latest stays the newest."""
    itype, [(caller, agent_id, instance_id), _] = typed_agents
    t0 = now_utc().replace(microsecond=0) - timedelta(minutes=5)
    report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.05}, collected_at=t0))
    report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.02},
                                          collected_at=t0 - timedelta(minutes=2)))
    assert seen(f"{itype}.eu-west-1a", agent_id)[:2] == (Decimal("0.05"), t0)
    assert len(points(f"{itype}.eu-west-1a")) == 2


# ---------------------------------------------------------------------------------------------- switches

# A switch of ten minutes ago (the server places a switch reported more than a day late, or from a clock that far
# off, at its receive time: tests/api/test_agent_clock_skew.py).
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def at_text(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


AGENT_TIMING = {"switch_initiated_at": at_text(0), "new_instance_launched_at": at_text(40),
                "new_instance_ready_at": at_text(90), "traffic_switched_at": at_text(92)}
LEGACY_TIMING = {"initiated_at": at_text(0), "instance_launched_at": at_text(40),
                 "instance_ready_at": at_text(90), "traffic_switched_at": at_text(92)}


def switch_rows(agent_id):
    return list(SwitchTable.by_agent.query(agent_id))


def post_switch(caller, agent_id, body):
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", body)
    assert status == 200, reply
    return reply


@pytest.mark.parametrize("prices, timing, legacy", [
    ({"on_demand": 0.107, "old_spot": 0.040, "new_spot": 0.031}, AGENT_TIMING, False),
    ({"on_demand": 0.107, "old_spot": 0.040, "new_spot": 0.031}, LEGACY_TIMING, True),
    ({"on_demand_price": 0.107, "old_spot_price": 0.040, "new_spot_price": 0.031}, LEGACY_TIMING, True),
], ids=["agent-names", "legacy-block-name", "legacy-field-names"])
def test_switch_report_field_names_all_store_real_values(tenant_with_agent, prices, timing, legacy):
    """GIVEN a switch report in the agent's or the legacy server's field names WHEN stored THEN prices and
    timestamps are the real ones (no 1970, no $0) and hourly savings = old - new."""
    client_id, caller, agent_id, reg = tenant_with_agent
    new_id = new_instance_id()
    reply = post_switch(caller, agent_id, switch_body(reg["instance_id"], new_id, prices=prices, timing=timing,
                                                      legacy_names=legacy))
    assert reply["duplicate"] is False and reply["hourly_savings"] == 0.009
    [row] = switch_rows(agent_id)
    assert (row.initiated_at, row.launched_at, row.ready_at) == (at(0), at(40), at(90))
    assert all(t > EPOCH_FLOOR for t in (row.initiated_at, row.launched_at, row.ready_at, row.recorded_at))
    assert int(row.total_duration_seconds) == 90
    assert (row.on_demand_price, row.old_price, row.new_price) == (Decimal("0.107"), Decimal("0.04"),
                                                                   Decimal("0.031"))
    assert row.hourly_savings == Decimal("0.009")
    assert row.old_instance_id == reg["instance_id"] and row.new_instance_id == new_id
    assert row.new_pool_id == "m5.large.eu-west-1b" and row.client_id == client_id

    agent = AgentTable.get(client_id, agent_id)
    assert agent.instance_id == new_id and agent.current_pool_id == "m5.large.eu-west-1b"
    instance = InstanceTable.get(new_id)
    assert instance.client_id == client_id and instance.is_active and instance.spot_price == Decimal("0.031")


@pytest.mark.parametrize("old_mode, new_mode, hourly", [
    ("spot", "ondemand", Decimal("-0.0670")),   # 0.040 spot -> 0.107 on-demand
    ("ondemand", "spot", Decimal("0.0760")),    # 0.107 on-demand -> 0.031 spot
    ("spot", "spot", Decimal("0.0090")),
    ("on-demand", "normal", Decimal("0.0000")),  # legacy spellings of on-demand on both sides
])
def test_hourly_savings_is_mode_aware_and_never_times_24(tenant_with_agent, old_mode, new_mode, hourly):
    """GIVEN a switch between modes WHEN reported THEN savings use the price each side really paid, per
    hour; the monthly figure is hourly x 730, never a x24 'per day' guess."""
    client_id, caller, agent_id, reg = tenant_with_agent
    body = switch_body(reg["instance_id"], new_instance_id(), old_mode=old_mode, new_mode=new_mode)
    reply = post_switch(caller, agent_id, body)
    assert Decimal(str(reply["hourly_savings"])) == hourly
    assert Decimal(str(reply["monthly_savings"])) == hourly * 730
    [row] = switch_rows(agent_id)
    assert row.hourly_savings == hourly and row.monthly_savings == hourly * 730
    assert row.hourly_savings != hourly * 24 or hourly == 0
    [note] = [n for n in NotificationTable.query(client_id) if n.kind == "switch"]
    assert f"{hourly:+}" in note.message


def _unpriced_switch(old_instance_id: str, instance_type: str, **kw) -> dict:
    """A switch report between two pools of a type nobody reported prices for."""
    body = switch_body(old_instance_id, new_instance_id(), **kw)
    for side in ("old_instance", "new_instance"):
        body[side]["instance_type"] = instance_type
    body["new_instance"]["pool_id"] = f"{instance_type}.eu-west-1b"
    return body


def test_unknown_prices_are_stored_as_unknown_not_zero(tenant_with_agent):
    """GIVEN a report without prices, for pools the server has no price of WHEN stored THEN prices and
    savings are null (not $0.0000)."""
    client_id, caller, agent_id, reg = tenant_with_agent
    reply = post_switch(caller, agent_id, _unpriced_switch(reg["instance_id"], random_instance_type(), prices={}))
    assert reply["hourly_savings"] is None and reply["monthly_savings"] is None
    [row] = switch_rows(agent_id)
    assert row.old_price is None and row.new_price is None and row.hourly_savings is None


def test_an_implausible_price_is_dropped_and_the_servers_own_price_used(tenant_with_agent):
    """GIVEN the server knows the pools' prices WHEN a switch report carries an implausible old spot price
    (the embedded EC2's $0.00001) THEN the switch is recorded, the field named in warnings, and the
    savings computed from the server's price of the old pool."""
    client_id, caller, _, _ = tenant_with_agent
    itype = random_instance_type()
    reg = registration(instance_type=itype)
    status, reply = caller.post("/api/agents/register", reg)
    agent_id = reply["agent_id"]
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", pricing_body(
        reg["instance_id"], itype, {"eu-west-1a": 0.05, "eu-west-1b": 0.03}, on_demand=0.1))
    assert status == 200 and reply["pools"] == 2, reply
    reply = post_switch(caller, agent_id, _unpriced_switch(
        reg["instance_id"], itype, prices={"on_demand": 0.1, "old_spot": 0.00001, "new_spot": 0.03},
        timing=AGENT_TIMING))
    assert [w.split(":")[0] for w in reply["warnings"]] == ["prices.old_spot", "prices.old_spot"], reply
    assert reply["hourly_savings"] == pytest.approx(0.02)
    [row] = switch_rows(agent_id)
    assert float(row.old_price) == pytest.approx(0.05) and float(row.new_price) == pytest.approx(0.03)


def test_duplicate_switch_report_is_recorded_once(tenant_with_agent):
    """GIVEN a stored switch WHEN the agent retries the report THEN duplicate true, still one row, one
    notification."""
    client_id, caller, agent_id, reg = tenant_with_agent
    body = switch_body(reg["instance_id"], new_instance_id())
    first = post_switch(caller, agent_id, body)
    second = post_switch(caller, agent_id, body)
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["switch_id"] == first["switch_id"]
    assert len(switch_rows(agent_id)) == 1
    assert len([n for n in NotificationTable.query(client_id) if n.kind == "switch"]) == 1


@pytest.mark.parametrize("repeat_timing", [{}, {"switch_initiated_at": "2026-01-01T00:05:00Z"}],
                         ids=["no timing", "another time"])
def test_a_repeated_switch_report_with_other_or_no_timing_is_the_same_switch(tenant_with_agent, repeat_timing):
    """GIVEN a stored switch to a new instance WHEN the agent reports it again without timing (the server's
    receive time would key it) or with another time THEN duplicate true, one row, one notification."""
    client_id, caller, agent_id, reg = tenant_with_agent
    new = new_instance_id()
    first = post_switch(caller, agent_id, switch_body(reg["instance_id"], new, timing={}))
    second = post_switch(caller, agent_id, switch_body(reg["instance_id"], new, timing=repeat_timing))
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["switch_id"] == first["switch_id"]
    assert len(switch_rows(agent_id)) == 1
    assert len([n for n in NotificationTable.query(client_id) if n.kind == "switch"]) == 1


def test_a_late_repeat_of_an_earlier_switch_does_not_move_the_agent_back(tenant_with_agent):
    """GIVEN an agent that switched A → B, then B → C WHEN the report of A → B arrives again (a late retry,
    keyed by its receive time) THEN it is a duplicate: two switches stored, the agent still on C."""
    client_id, caller, agent_id, reg = tenant_with_agent
    b, c = new_instance_id(), new_instance_id()
    post_switch(caller, agent_id, switch_body(reg["instance_id"], b, timing={}))
    post_switch(caller, agent_id, switch_body(b, c, timing={}))
    repeat = post_switch(caller, agent_id, switch_body(reg["instance_id"], b, timing={}))
    assert repeat["duplicate"] is True
    assert len(switch_rows(agent_id)) == 2
    assert AgentTable.get(client_id, agent_id, consistent_read=True).instance_id == c


def test_a_repeat_that_reads_the_index_before_it_shows_the_first_is_still_a_duplicate(tenant_with_agent, monkeypatch):
    """GIVEN a stored switch WHEN its repeat (no timing) finds no recorded key (the by-agent index is eventually
    consistent, or the first report commits meanwhile) THEN the agent's last switch refuses it: duplicate, one
    row, one notification."""
    from chalicelib.repositories import switches

    client_id, caller, agent_id, reg = tenant_with_agent
    new = new_instance_id()
    post_switch(caller, agent_id, switch_body(reg["instance_id"], new, timing={}))
    monkeypatch.setattr(switches, "recorded_key", lambda agent_id, switch_id: None)
    repeat = post_switch(caller, agent_id, switch_body(reg["instance_id"], new, timing={}))
    assert repeat["duplicate"] is True
    assert len(switch_rows(agent_id)) == 1
    assert len([n for n in NotificationTable.query(client_id) if n.kind == "switch"]) == 1


def test_switch_report_with_the_command_it_executed(tenant_with_agent):
    """GIVEN a force-switch command WHEN the switch report names it THEN it is stored with the switch."""
    client_id, caller, agent_id, reg = tenant_with_agent
    status, reply = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    command_id = reply["command"]["id"]
    post_switch(caller, agent_id, switch_body(reg["instance_id"], new_instance_id(), command_id=command_id))
    assert switch_rows(agent_id)[0].command_id == command_id


@pytest.mark.parametrize("auto_terminate, reports_termination, deactivated", [
    (True, False, False),
    (True, True, True),
    (False, True, False),
    (False, False, False),
])
def test_old_instance_deactivated_only_with_auto_terminate_and_termination_time(
        tenant_with_agent, auto_terminate, reports_termination, deactivated):
    """GIVEN auto-terminate on/off and a termination time or not (the legacy server's fix) WHEN a switch is reported
    THEN the old instance is inactive only when both hold."""
    client_id, caller, agent_id, reg = tenant_with_agent
    if not auto_terminate:
        AgentTable(client_id, agent_id).update(actions=[AgentTable.config.auto_terminate_enabled.set(False)])
    timing = dict(AGENT_TIMING)
    if reports_termination:
        timing["old_instance_terminated_at"] = at_text(390)
    post_switch(caller, agent_id, switch_body(reg["instance_id"], new_instance_id(), timing=timing))
    old = InstanceTable.get(reg["instance_id"])
    assert old.is_active is (not deactivated)
    if deactivated:
        assert old.terminated_at == at(390)
    else:
        assert old.terminated_at is None


def test_legacy_old_terminated_at_name_is_accepted(tenant_with_agent):
    """GIVEN the legacy ``timing.old_terminated_at`` WHEN reported with auto-terminate on THEN it counts."""
    client_id, caller, agent_id, reg = tenant_with_agent
    timing = {**LEGACY_TIMING, "old_terminated_at": at_text(390)}
    post_switch(caller, agent_id, switch_body(reg["instance_id"], new_instance_id(), timing=timing,
                                              legacy_names=True))
    assert InstanceTable.get(reg["instance_id"]).is_active is False
    assert switch_rows(agent_id)[0].old_terminated_at == at(390)


def test_switch_start_falls_back_to_launch_time(tenant_with_agent):
    """GIVEN a report whose timing has only the launch time WHEN stored THEN that is the start (not 1970)."""
    client_id, caller, agent_id, reg = tenant_with_agent
    timing = {"new_instance_launched_at": at_text(40)}
    post_switch(caller, agent_id, switch_body(reg["instance_id"], new_instance_id(), timing=timing))
    [row] = switch_rows(agent_id)
    assert row.initiated_at == at(40)
    assert row.total_duration_seconds is None


def test_switch_to_an_instance_of_another_tenant_is_409(tenant_with_agent, make_tenant):
    """GIVEN another tenant's instance WHEN reported as this agent's new instance THEN 409, nothing stored."""
    _, other = make_tenant()
    foreign = registration()
    assert other.post("/api/agents/register", foreign)[0] == 200
    client_id, caller, agent_id, reg = tenant_with_agent
    status, body = caller.post(f"/api/agents/{agent_id}/switch-report",
                               switch_body(reg["instance_id"], foreign["instance_id"]))
    assert_error(status, body, 409, code="instance_conflict", field="new_instance.instance_id")
    assert switch_rows(agent_id) == []
    assert AgentTable.get(client_id, agent_id).instance_id == reg["instance_id"]
