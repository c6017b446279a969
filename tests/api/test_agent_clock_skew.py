"""Clock skew: what the service does with the times an agent reports.

Real fleets have skewed clocks (an instance hours or a day off, NTP not yet synced at boot, a clock that jumps
back) and legacy agents write times in their own shapes (v4: aware ``+00:00``; v3.2: naive UTC plus a literal
``Z``; spot_agent.py: naive UTC; epoch seconds or milliseconds also parse). Every agent time is read by the
schemas' ``UtcDatetime`` (chalicelib/schemas/base.py: ISO with or without a zone, naive = UTC, epoch s / ms,
2000-2099 only). The audit, route by route:

- register, heartbeat, pending-commands, commands/{id}/executed|extend, mark-command-executed, config: the bodies
  carry no time the server reads. Liveness (``last_heartbeat_at``, online/offline), command leases and their expiry,
  rate-limit windows and every TTL are the server's clock. HELD.
- pricing-report ``pricing.collected_at`` (spot_agent.py's ``timestamp``): believed within a day back and
  ``MAX_CLOCK_SKEW`` ahead, else every pool price of the report is dropped and named; a pool the server's own
  DescribeSpotPriceHistory feed prices keeps that price whatever the agent's time. HELD.
- termination-imminent ``detected_at`` / ``termination_time`` (early v4: ``time``), rebalance-recommendation
  ``detected_at``, create-emergency-replica ``termination_time``: a detection older than ``MAX_SIGNAL_AGE`` or in
  the future is the receive time, a deadline outside the notice's window the notice's (also
  tests/api/test_security_walk_8.py). HELD.
- termination ``termination_time``, cleanup-report ``timestamp`` / ``cutoff_date``: audit metadata only. HELD.
- switch-report ``timing.*``: FIXED. Only the future was bounded, each time then the receive time one by one (a
  clock an hour ahead: launch → ready 0 s, a "measured boot" of nothing). A clock behind put the switch where it
  liked: its start keys the switch history and the new instance's installation (the savings roll-up counts the new
  instance from it while the old one still runs: a day behind, a day of savings claimed twice), and the week's
  switch rails count switches by it (eight days behind: a switch that never counts). Now ``clock.placed`` puts
  the times within what the server knows (not before the switch command was created, nor a day before the
  report; not after the receive time), moving a skewed clock's times together so their spans stay.
- replica PUT ``launched_at``, status ``sync_completed_at``: FIXED the past side the same way: a launch not before
  the product asked for the standby (a day before the row for one the agent launched on its own and then recorded),
  a readiness not before the launch (a standby "launched" days ago is past the coordinator's listing grace at once).
- the measured boot time the decision policy prices interruptions with: FIXED (components.decision_engine.boot):
  a boot beyond ``MAX_BOOT_S`` is no measurement (a clock that jumped forward mid-switch); a negative one never
  was. A switch ready before its start stores no duration (it was a negative downtime in the history).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from chalicelib import bootstrap, decisions
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import pools as pool_repo
from chalicelib.tables import AgentTable, InstanceTable
from chalicelib.tables.commands import CommandTable
from chalicelib.tables.interruptions import InterruptionTable
from chalicelib.tables.switches import SwitchTable
from components.data_valve import PricePoint
from components.decision_engine import DEFAULT_BOOT_S, measured_boot_s
from tests.api._support import assert_error, iso, now_utc, pricing_body, random_instance_type, switch_body
from tests.conftest import new_instance_id, registration

DAY = timedelta(days=1)
SPANS = {"switch_initiated_at": 0, "new_instance_launched_at": 40, "new_instance_ready_at": 90,
         "traffic_switched_at": 92, "old_instance_terminated_at": 95}  # seconds into the switch


def skewed_timing(offset: timedelta, *, end: datetime | None = None) -> dict:
    """A switch that ended just now (``end``) as a clock ``offset`` off writes it (v4's aware ISO)."""
    end = end or now_utc()
    start = end - timedelta(seconds=max(SPANS.values()))
    return {name: (start + timedelta(seconds=s) + offset).isoformat() for name, s in SPANS.items()}


def switch_of(client_id: str, switch_id: str) -> SwitchTable:
    [row] = list(SwitchTable.query(client_id, filter_condition=SwitchTable.switch_id == switch_id))
    return row


def report_switch(caller, agent_id, old_id, timing, **kw):
    new_id = new_instance_id()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report",
                                switch_body(old_id, new_id, timing=timing, **kw))
    assert status == 200 and reply["duplicate"] is False, reply
    return new_id, reply


# --- shapes: what legacy agents send is read; nonsense is a clear 4xx (or dropped from a fact), never a 500 ---


def _shapes(at: datetime) -> dict[str, object]:
    utc = at.astimezone(timezone.utc)
    return {"v4-aware": utc.isoformat(timespec="microseconds"),
            "v3-naive-Z": utc.replace(tzinfo=None).isoformat() + "Z",
            "stub-naive": utc.replace(tzinfo=None).isoformat(),
            "offset+09": utc.astimezone(timezone(timedelta(hours=9))).isoformat(),
            "epoch-s": utc.timestamp(),
            "epoch-ms": int(utc.timestamp() * 1000)}


@pytest.mark.parametrize("shape", list(_shapes(now_utc())))
def test_every_shape_a_legacy_agent_writes_is_the_same_instant(tenant_with_agent, shape):
    """GIVEN a rebalance signal seen 30 s ago, written in each shape the legacy agents use WHEN reported
    THEN the event is dated at that instant (a naive time is UTC, an offset is honoured, epoch ms is not seconds)."""
    client_id, caller, agent_id, reg = tenant_with_agent
    seen = now_utc().replace(microsecond=0) - timedelta(seconds=30)
    status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation",
                                {"instance_id": reg["instance_id"], "detected_at": _shapes(seen)[shape]})
    assert status == 200, reply
    event = InterruptionTable.get(client_id, reply["interruption_id"], consistent_read=True)
    assert abs((event.detected_at - seen).total_seconds()) < 1, (event.detected_at, seen)


def test_a_skewed_agents_repeated_signal_is_one_event(tenant_with_agent):
    """Deduplication is the server's: a rebalance signal re-sent by an agent a day behind (its time not believed,
    so each copy is dated at its receive time) is still one interruption event."""
    client_id, caller, agent_id, reg = tenant_with_agent
    body = {"instance_id": reg["instance_id"], "detected_at": iso(now_utc() - DAY)}
    ids = set()
    for _ in range(2):
        status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation", body)
        assert status == 200, reply
        ids.add(reply["interruption_id"])
    assert len(ids) == 1, ids
    assert [e.interruption_id for e in InterruptionTable.query(client_id)] == list(ids)


NONSENSE = ["yesterday", "", True, [], {"at": 1}, -1, 0, 1e20, "2026-02-30T00:00:00Z", "2026-12-07T25:00:00",
            253402300800, "9999-12-31T23:59:59Z"]


@pytest.mark.parametrize("value", NONSENSE, ids=repr)
def test_a_nonsense_signal_time_is_a_400_naming_the_field(tenant_with_agent, value):
    """A signal route's body is a request, not a fact already recorded: an unreadable time is 400 with its field."""
    _, caller, agent_id, reg = tenant_with_agent
    for path, field in (("rebalance-recommendation", "detected_at"), ("termination-imminent", "detected_at"),
                        ("create-emergency-replica", "termination_time")):
        body = {"instance_id": reg["instance_id"], field: value, "signal_type": "termination-notice"}
        status, err = caller.post(f"/api/agents/{agent_id}/{path}", body)
        assert_error(status, err, 400)
        assert field in (err.get("field") or "") + err["message"], (path, err)


@pytest.mark.parametrize("value", NONSENSE, ids=repr)
def test_a_nonsense_time_in_a_report_is_dropped_and_named_never_a_500(tenant_with_agent, value):
    """A report of what already happened (switch, termination, cleanup, prices) is kept; its unreadable time is
    dropped and named in ``warnings``."""
    _, caller, agent_id, reg = tenant_with_agent
    itype = random_instance_type()
    pricing = pricing_body(reg["instance_id"], itype, {"eu-west-1a": 0.03})
    pricing["pricing"]["collected_at"] = value
    reports = (("pricing-report", pricing, "pricing.collected_at"),
               ("termination", {"instance_id": reg["instance_id"], "termination_time": value}, "termination_time"),
               ("cleanup-report", {"timestamp": value}, "timestamp"))
    for path, body, field in reports:
        status, reply = caller.post(f"/api/agents/{agent_id}/{path}", body)
        assert status == 200 and any(w.startswith(field) for w in reply["warnings"]), (path, reply)
    timing = {**skewed_timing(timedelta(0)), "new_instance_ready_at": value}
    _, reply = report_switch(caller, agent_id, reg["instance_id"], timing)
    assert any(w.startswith("timing.new_instance_ready_at") for w in reply["warnings"]), reply


# --- the server's own clock decides liveness; an agent's time is never read for it ---------------------------------


def test_liveness_is_the_servers_clock_whatever_the_agent_claims(tenant_with_agent):
    """GIVEN a heartbeat carrying times of its own (extras a skewed agent might send) WHEN received THEN the agent's
    last heartbeat and the reply's ``server_time`` are the server's receive time."""
    client_id, caller, agent_id, reg = tenant_with_agent
    before = now_utc()
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", {
        "status": "online", "instance_id": reg["instance_id"], "timestamp": "2000-01-01T00:00:00Z",
        "last_heartbeat_at": "2099-01-01T00:00:00Z", "sent_at": 4102444800})
    after = now_utc()
    assert status == 200 and reply["status"] == "online", reply
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(reply["server_time"]) <= after
    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert before - timedelta(seconds=1) <= row.last_heartbeat_at <= after, row.last_heartbeat_at


def test_a_termination_report_closes_the_instance_at_the_servers_time(tenant_with_agent):
    """The reported termination time (a clock a day behind) is kept in the audit event only."""
    client_id, caller, agent_id, reg = tenant_with_agent
    before = now_utc()
    status, reply = caller.post(f"/api/agents/{agent_id}/termination",
                                {"instance_id": reg["instance_id"], "termination_time": iso(before - DAY)})
    assert status == 200, reply
    row = InstanceTable.get(reg["instance_id"], consistent_read=True)
    assert row.is_active is False and row.terminated_at >= before - timedelta(seconds=1), row.terminated_at


# --- prices: the agent's time only dates its own points; the server's feed wins ------------------------------------


def test_prices_from_a_clock_a_day_behind_or_an_hour_ahead_are_dropped_and_named(tenant_with_agent):
    _, caller, agent_id, reg = tenant_with_agent
    itype = random_instance_type()
    for offset in (-DAY - timedelta(minutes=1), timedelta(hours=1)):
        body = pricing_body(reg["instance_id"], itype, {"eu-west-1a": 0.03}, collected_at=now_utc() + offset)
        status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
        assert status == 200 and reply["points_written"] == 0, reply
        assert any(w.startswith("pricing.collected_at") for w in reply["warnings"]), reply
    assert pool_repo.latest_prices([f"{itype}.eu-west-1a"]) == {}


def test_an_agent_clock_ahead_never_overrides_the_servers_price(make_tenant):
    """GIVEN the server's feed priced a pool just now WHEN an agent whose clock runs 4 min ahead (within the
    tolerated skew: its point would be the newest) reports another price THEN the server's price stays."""
    _, caller = make_tenant()
    itype, now = random_instance_type(), now_utc()
    reg = registration(instance_type=itype)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    agent_id, pool = reply["agent_id"], f"{itype}.eu-west-1a"
    pool_repo.store_server_prices([PricePoint(pool, now, Decimal("0.040"), source_agent_id=pool_repo.SERVER_SOURCE)],
                                  now)
    body = pricing_body(reg["instance_id"], itype, {"eu-west-1a": 0.011}, collected_at=now + timedelta(minutes=4))
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200 and reply["server_priced"] == 1 and reply["points_written"] == 0, reply
    assert pool_repo.latest_prices([pool])[pool].price == Decimal("0.040")


# --- switch reports: the server places the switch; the agent's spans are kept --------------------------------------


@pytest.mark.parametrize("offset", [-DAY, -timedelta(hours=5), timedelta(hours=1), DAY],
                         ids=["a-day-behind", "5h-behind", "1h-ahead", "a-day-ahead"])
def test_a_skewed_clocks_switch_is_placed_at_the_receive_time_with_its_spans_kept(tenant_with_agent, offset):
    """GIVEN an agent whose clock is off by ``offset`` (all its times alike) WHEN it reports the switch it was
    commanded (naming no command, as v4) and just finished THEN the switch ends at the receive time: it starts (and
    the new instance is installed) within the last minutes, the launch → ready span it measured (50 s) is kept, so
    is the start → ready one, and the reply names the skew. BEFORE: a clock behind installed the new instance hours
    (a day) early — the savings roll-up counted both instances meanwhile — and a clock ahead made every time the
    receive time: a 0 s boot."""
    client_id, caller, agent_id, reg = tenant_with_agent
    status, queued = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    before = now_utc() - timedelta(minutes=10)  # the command, then its 95 s switch, ran in these minutes
    CommandTable(agent_id, queued["command"]["id"]).update(actions=[CommandTable.created_at.set(before)])
    new_id, reply = report_switch(caller, agent_id, reg["instance_id"], skewed_timing(offset))
    after = now_utc()
    row = switch_of(client_id, reply["switch_id"])
    assert before <= row.initiated_at <= after, row.initiated_at
    assert (row.ready_at - row.launched_at).total_seconds() == 50, (row.launched_at, row.ready_at)
    assert int(row.total_duration_seconds) == 90
    assert row.switch_key.startswith(row.initiated_at.strftime("%Y-%m-%dT%H:%M"))
    assert InstanceTable.get(new_id, consistent_read=True).installed_at == row.initiated_at
    assert any("clock" in w for w in reply["warnings"]), reply["warnings"]


def test_a_switch_from_a_clock_a_week_behind_counts_against_the_weeks_rails(tenant_with_agent):
    """Even without a command to date it (a report may be up to a day late: the product's agent resends one that
    failed), a switch is not placed more than a day back. BEFORE: eight days behind, the switch was recorded as
    started eight days ago, so the decision cycle's ``recent_switches`` (the week's and the day's limits) never
    counted it."""
    client_id, caller, agent_id, reg = tenant_with_agent
    report_switch(caller, agent_id, reg["instance_id"], skewed_timing(-timedelta(days=8)))
    now = now_utc()
    where, boot_s = decisions.situation(agent_repo.require(client_id, agent_id), now)
    assert len(where.recent_switches) == 1 and now - where.recent_switches[0] < timedelta(minutes=5), where
    assert boot_s == 50.0


def test_a_switch_does_not_start_before_its_command_existed(tenant_with_agent):
    """GIVEN a long-running instance and a switch command created a minute ago WHEN the agent, its clock 20 hours
    behind (within the day a report may be late), reports the switch THEN it started no earlier than the command:
    the server knows the switch began after it asked for it."""
    client_id, caller, agent_id, reg = tenant_with_agent
    InstanceTable(reg["instance_id"]).update(actions=[InstanceTable.installed_at.set(now_utc() - timedelta(days=30))])
    status, queued = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    command = bootstrap.command_store().get(agent_id, queued["command"]["id"])
    timing = skewed_timing(-timedelta(hours=20))
    timing = {k: v for k, v in timing.items() if k != "traffic_switched_at"}
    timing["new_instance_ready_at"] = iso(now_utc())  # NTP synced while it waited for the new instance
    _, reply = report_switch(caller, agent_id, reg["instance_id"], timing)
    row = switch_of(client_id, reply["switch_id"])
    assert row.initiated_at >= command.created_at and row.launched_at >= command.created_at, row.initiated_at
    assert 0 <= (row.ready_at - row.launched_at).total_seconds() < 300


def test_a_clock_that_jumped_mid_switch_does_not_poison_the_measured_boot(tenant_with_agent):
    """GIVEN an agent whose earlier switch booted in 100 s WHEN its clock jumps back an hour between the launch
    and the readiness of its next switch (ready "before" launch), or NTP syncs forward (ready a day later) THEN its
    measured boot stays 100 s (BEFORE: the median of 100 s and a day)."""
    client_id, caller, agent_id, reg = tenant_with_agent
    old = reg["instance_id"]
    now = now_utc()
    for n in range(1):
        at = now - timedelta(hours=3 - n)
        timing = {"switch_initiated_at": iso(at), "new_instance_launched_at": iso(at + timedelta(seconds=10)),
                  "new_instance_ready_at": iso(at + timedelta(seconds=110))}
        old, _ = report_switch(caller, agent_id, old, timing)
    jumped = {"switch_initiated_at": iso(now - timedelta(minutes=3)),
              "new_instance_launched_at": iso(now - timedelta(minutes=2)),
              "new_instance_ready_at": iso(now - timedelta(hours=1))}
    old, _ = report_switch(caller, agent_id, old, jumped)
    synced = {"switch_initiated_at": iso(now - DAY + timedelta(minutes=1)),
              "new_instance_launched_at": iso(now - DAY + timedelta(minutes=2)),
              "new_instance_ready_at": iso(now_utc())}
    report_switch(caller, agent_id, old, synced)
    assert decisions.situation(agent_repo.require(client_id, agent_id), now_utc())[1] == 100.0


def test_a_switch_ready_before_it_started_has_no_duration(tenant_with_agent):
    """A clock that jumped back mid-switch: "ready" an hour before the start. BEFORE: stored as a duration of -3,420 s,
    the history's ``downtime_seconds``. NOW: an impossible span is unknown (None), the times kept as reported."""
    client_id, caller, agent_id, reg = tenant_with_agent
    now = now_utc()
    _, reply = report_switch(caller, agent_id, reg["instance_id"], {
        "switch_initiated_at": iso(now - timedelta(minutes=3)), "new_instance_ready_at": iso(now - timedelta(hours=1))})
    row = switch_of(client_id, reply["switch_id"])
    assert row.total_duration_seconds is None and row.ready_at < row.initiated_at, row.total_duration_seconds
    status, history = caller.get(f"/api/client/{client_id}/switch-history")
    assert status == 200 and history["switches"][0]["downtime_seconds"] is None, history


def test_a_measured_boot_of_hours_is_no_measurement():
    assert measured_boot_s([120.0, 86_400.0, 86_400.0]) == 120.0
    assert measured_boot_s([86_400.0, -5.0]) == DEFAULT_BOOT_S
    assert measured_boot_s([0.0]) == 0.0  # the local mode's embedded EC2 runs an instance at once


# --- replicas: a standby is launched and ready after it was asked for -----------------------------------------------


def test_a_standbys_launch_and_readiness_are_placed_within_its_life(make_tenant):
    """GIVEN a standby the agent launched itself and recorded (legacy create_replica: the launch comes before the
    row, so up to the day a report may be late) WHEN the agent, its clock three days behind, reports its launch and
    its readiness THEN the launch is at most a day before the row and the readiness not before the launch (BEFORE:
    launched and ready "three days ago": the coordinator's listing grace for a young launch long over)."""
    from tests.api.test_replicas import agent_recorded_standby, put

    caller, _, instance_id, path = agent_recorded_standby(make_tenant)
    status, reply = put(caller, path, {"instance_id": instance_id, "launched_at": iso(now_utc() - 3 * DAY)})
    assert status == 200, reply
    born = datetime.fromisoformat(reply["replica"]["created_at"].replace("Z", "+00:00"))
    launched = datetime.fromisoformat(reply["replica"]["launched_at"].replace("Z", "+00:00"))
    assert launched >= born - DAY, (launched, born)
    status, reply = caller.post(f"{path}/status", {"status": "ready", "sync_completed_at": iso(now_utc() - 3 * DAY)})
    assert status == 200, reply
    ready = datetime.fromisoformat(reply["replica"]["ready_at"].replace("Z", "+00:00"))
    assert ready >= launched, (ready, launched)


def test_registration_ignores_any_time_a_skewed_agent_sends(make_tenant):
    """Registration reads no agent time: extras such as a boot time are ignored (v4 sends none)."""
    client_id, caller = make_tenant()
    before = now_utc()
    status, reply = caller.post("/api/agents/register", registration(boot_time="2000-01-01T00:00:00Z",
                                                                     timestamp=4102444800))
    assert status == 200, reply
    row = AgentTable.get(client_id, reply["agent_id"], consistent_read=True)
    assert row.last_heartbeat_at is None or row.last_heartbeat_at >= before - timedelta(seconds=1)
