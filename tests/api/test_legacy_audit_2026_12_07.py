"""Legacy audit of 2026-12-07's changes (8c2381b..a969f3b): what a real, unchanged legacy client (v4.0.0, v3.2.0,
an early v4, the stub agent, the legacy React dashboard) meets after them.

Audited, with the calls as the legacy agents make them:

- the switch report's times placed on the server's clock (``clock.placed``; ``_switch_began_after`` /
  ``_placed_timing`` in chalicelib/api/agents.py): v4's ``timing.*`` names, the legacy server's
  (``initiated_at``/``instance_launched_at``/``instance_ready_at``/``old_terminated_at``), v3.2's (naive UTC plus a
  literal ``Z``, no launch time), epoch seconds, naive ISO, no timing at all; an honest clock, one a minute or four
  behind or ahead; a report sent twice (the second after the terminate wait, with the termination time); a command
  created hours before it was picked up; a report after the command's lease ran out (requeued) or after it was
  timed out. Each: 200, the switch recorded once, the agent moved once, its command completed by the report, the
  week's switch rails counting it once, no warning for an honest clock, the measured boot (launch → ready) kept.
  FIXED: a clock a little behind (or ahead) whose first times fell before the command's creation (or last ones
  after the receive time) had those times clamped one by one to the bound: a clock one minute behind measured a
  60 s boot as 8 s, one 3 s ahead as 59 s, and one 4 min behind that reported after its terminate wait as 0 s (a
  sample of the median: 0 s is a boot). The times a skewed clock gave are now moved together whenever their spread
  fits where the server knows the switch happened (``clock.placed``).
- the replica routes' ``launched_at``/``sync_completed_at`` placement in v4's polling flow (PUT ``{instance_id,
  status:'syncing'}``, then status ``ready`` with or without ``sync_completed_at``) and in the create_replica
  command path (POST ``/replicas`` with ``status:'launching'``): HELD.
- bounded listing reads (``paging.read_page``): v4's ``GET replicas?status=launching`` reads the agent's replicas
  whole (``replicas.for_agent``), so a launching standby older than many closed ones is on the first answer (v4
  never follows ``next_token``): HELD. (The dashboard's ``switch-history?instance_id=`` reads at most about 4,000
  newer switches of other instances per page: left as designed, docs/legacy-compatibility.md "The legacy dashboard".)
- the admin client delete's savings rows, /health's 10 s cache, admin activity's refusal of a token naming a day
  to come: the legacy calls answer as before (tests/api/test_legacy_parity.py): HELD.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import decisions
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable
from chalicelib.tables.commands import CommandTable
from chalicelib.tables.switches import SwitchTable
from tests.api._support import now_utc
from tests.conftest import new_instance_id, registration

# v4's switch, seconds after it picked the command up: RunInstances, launched, running, 2 s traffic switch
V4_SPANS = {"switch_initiated_at": 0, "new_instance_launched_at": 3, "new_instance_ready_at": 63,
            "traffic_switched_at": 65}
PICKUP_S = 5  # the command was created this long before v4's 15 s poll took it


def v4_time(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat()


def v4_agent(make_tenant, **overrides):
    client_id, caller = make_tenant()
    reg = registration(agent_version="4.0.0", **overrides)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], reg["instance_id"]


def delivered_switch(caller, agent_id: str, instance_id: str, created_ago: timedelta) -> str:
    """A client's force-switch of ``instance_id``, delivered to the agent by its poll, created ``created_ago``."""
    status, queued = caller.post(f"/api/client/instances/{instance_id}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["id"] for c in pending["commands"]] == [queued["command"]["id"]], pending
    command_id = queued["command"]["id"]
    CommandTable(agent_id, command_id).update(actions=[CommandTable.created_at.set(now_utc() - created_ago)])
    return command_id


def report(caller, agent_id: str, old: str, timing: dict | None, **extra) -> tuple[str, dict]:
    from tests.api.test_legacy_v4_bodies import v4_switch_body

    new = extra.pop("new", None) or new_instance_id()
    body = {**v4_switch_body(old, new, timing), **extra}
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", body)
    assert status == 200 and reply["success"] is True, reply
    return new, reply


def recorded_once(client_id: str, agent_id: str, new: str) -> SwitchTable:
    """The one switch of the agent, the agent on ``new``, the week's rails counting one switch."""
    [row] = list(SwitchTable.query(client_id, consistent_read=True))
    assert row.new_instance_id == new
    assert AgentTable.get(client_id, agent_id, consistent_read=True).instance_id == new
    where, _ = decisions.situation(agent_repo.require(client_id, agent_id), now_utc())
    assert len(where.recent_switches) == 1, where.recent_switches
    return row


def timing_warnings(reply: dict) -> list[str]:
    return [w for w in reply["warnings"] if w.startswith("timing") or "clock" in w]


# --- switch reports: every legacy shape, an honest clock ------------------------------------------------------------


def _shapes(start: datetime) -> dict[str, tuple[dict | None, dict[str, int]]]:
    """Each legacy shape of a switch that started at ``start``: (timing, the seconds of the stored times)."""
    at = {name: start + timedelta(seconds=s) for name, s in V4_SPANS.items()}
    naive = {k: v.astimezone(timezone.utc).replace(tzinfo=None) for k, v in at.items()}
    return {
        "v4": ({k: v4_time(v) for k, v in at.items()}, V4_SPANS),
        "legacy-server-names": ({"initiated_at": v4_time(at["switch_initiated_at"]),
                                 "instance_launched_at": v4_time(at["new_instance_launched_at"]),
                                 "instance_ready_at": v4_time(at["new_instance_ready_at"]),
                                 "old_terminated_at": v4_time(at["traffic_switched_at"])},
                                {"switch_initiated_at": 0, "new_instance_launched_at": 3,
                                 "new_instance_ready_at": 63}),
        "v3.2-naive-Z": ({"switch_initiated_at": naive["switch_initiated_at"].isoformat() + "Z",
                          "new_instance_ready_at": naive["new_instance_ready_at"].isoformat() + "Z",
                          "traffic_switched_at": naive["traffic_switched_at"].isoformat() + "Z",
                          "old_instance_terminated_at": None},
                         {"switch_initiated_at": 0, "new_instance_ready_at": 63}),
        "stub-naive": ({k: v.isoformat() for k, v in naive.items()}, V4_SPANS),
        "epoch-s": ({k: v.timestamp() for k, v in at.items()}, V4_SPANS),
    }


COLUMNS = {"switch_initiated_at": "initiated_at", "new_instance_launched_at": "launched_at",
           "new_instance_ready_at": "ready_at", "traffic_switched_at": "traffic_switched_at"}


@pytest.mark.parametrize("shape", list(_shapes(now_utc())) + ["no-timing"])
def test_every_legacy_shape_of_an_honest_report_is_recorded_as_given(make_tenant, shape):
    """GIVEN a legacy agent with an honest clock that picked up a force-switch 5 s after it was created WHEN it
    reports the switch in its own shape THEN 200, recorded once at the times it gave, the command completed, no
    timing warning (only a missing start is named), the agent moved once."""
    client_id, caller, agent_id, old = v4_agent(make_tenant)
    command_id = delivered_switch(caller, agent_id, old, timedelta(seconds=PICKUP_S + 70))
    start = now_utc().replace(microsecond=0) - timedelta(seconds=70)
    timing, stored = _shapes(start)[shape] if shape != "no-timing" else (None, {})
    new, reply = report(caller, agent_id, old, timing)
    assert reply["duplicate"] is False and reply["commands_completed"] == [command_id], reply
    row = recorded_once(client_id, agent_id, new)
    for name, seconds in stored.items():
        assert getattr(row, COLUMNS[name]) == start + timedelta(seconds=seconds), (name, getattr(row, COLUMNS[name]))
    if shape == "no-timing":
        assert timing_warnings(reply) == ["timing.switch_initiated_at: missing; the server's receive time is used"]
    else:
        assert timing_warnings(reply) == [], reply["warnings"]
        assert row.total_duration_seconds == 63


# --- switch reports: a clock a little off ---------------------------------------------------------------------------


@pytest.mark.parametrize("offset_s", [-60, -240, 60, 240, 3])
def test_a_clock_a_little_off_keeps_the_boot_it_measured_and_raises_no_warning(make_tenant, offset_s):
    """GIVEN a v4 agent whose clock is ``offset_s`` off (NTP not yet synced) that picked its switch command up 5 s
    after it was created WHEN it reports the switch it just finished THEN its times are within the command's
    creation and the receive time, the launch → ready boot (60 s) and the start → ready duration (63 s) are kept,
    and no warning is given (within ``MAX_CLOCK_SKEW``). BEFORE: a clock a minute behind had its start and launch
    clamped one by one to the command's creation (a measured boot of 8 s), a minute ahead its readiness to the
    receive time (a boot of 2 s)."""
    client_id, caller, agent_id, old = v4_agent(make_tenant)
    created = timedelta(seconds=PICKUP_S + V4_SPANS["traffic_switched_at"])
    command_id = delivered_switch(caller, agent_id, old, created)
    real_start = now_utc() - timedelta(seconds=V4_SPANS["traffic_switched_at"])
    timing = {k: v4_time(real_start + timedelta(seconds=s + offset_s)) for k, s in V4_SPANS.items()}
    new, reply = report(caller, agent_id, old, timing)
    after = now_utc()
    assert reply["commands_completed"] == [command_id] and timing_warnings(reply) == [], reply
    row = recorded_once(client_id, agent_id, new)
    assert after - created - timedelta(seconds=2) <= row.initiated_at and row.traffic_switched_at <= after
    assert (row.ready_at - row.launched_at).total_seconds() == 60, (row.launched_at, row.ready_at)
    assert row.total_duration_seconds == 63
    assert decisions.situation(agent_repo.require(client_id, agent_id), now_utc())[1] == 60.0


@pytest.mark.parametrize("skew_min,wait_s", [(-4, 300), (-10, 1800)], ids=["4min-behind-300s", "10min-behind-30min"])
def test_a_clock_behind_reporting_after_its_terminate_wait_keeps_its_boot(make_tenant, skew_min, wait_s):
    """GIVEN a v4 agent, its clock behind, whose process outlived its terminate wait WHEN it reports the switch with
    the termination time (only that one after the command's creation on its clock) THEN the boot (60 s) is kept; the
    skew is named only past ``MAX_CLOCK_SKEW`` (as the clock's, no time named as out of place). BEFORE: start,
    launch, readiness and traffic were each clamped to the command's creation, a measured boot of 0 s (which counts:
    local mode's EC2 boots at once) pulling the agent's median down."""
    client_id, caller, agent_id, old = v4_agent(make_tenant)
    real_start = now_utc() - timedelta(seconds=V4_SPANS["traffic_switched_at"] + wait_s + 15)
    delivered_switch(caller, agent_id, old, now_utc() - real_start + timedelta(seconds=PICKUP_S))
    skew = timedelta(minutes=skew_min)
    timing = {k: v4_time(real_start + timedelta(seconds=s) + skew) for k, s in V4_SPANS.items()}
    timing["old_instance_terminated_at"] = v4_time(now_utc() + skew)
    new, reply = report(caller, agent_id, old, timing)
    named = timing_warnings(reply)
    assert len(named) == (abs(skew_min) > 5) and all(w.startswith("timing: the agent's clock") for w in named), named
    row = recorded_once(client_id, agent_id, new)
    assert (row.ready_at - row.launched_at).total_seconds() == 60 and row.total_duration_seconds == 63
    assert row.old_terminated_at <= now_utc()


def test_a_report_sent_twice_after_the_terminate_wait_is_one_switch(make_tenant):
    """GIVEN a v4 agent that switched and waited its 300 s terminate wait (its process outlived the old host) WHEN
    it reports with the termination time, and the report is sent once more THEN one switch, the agent moved once,
    the second a duplicate with the first's times, the old instance closed."""
    client_id, caller, agent_id, old = v4_agent(make_tenant)
    command_id = delivered_switch(caller, agent_id, old, timedelta(seconds=PICKUP_S + 400))
    start = now_utc() - timedelta(seconds=400)
    timing = {k: v4_time(start + timedelta(seconds=s)) for k, s in V4_SPANS.items()}
    timing["old_instance_terminated_at"] = v4_time(start + timedelta(seconds=395))
    new, first = report(caller, agent_id, old, timing)
    assert first["commands_completed"] == [command_id] and timing_warnings(first) == [], first
    stored = recorded_once(client_id, agent_id, new)
    _, second = report(caller, agent_id, old, timing, new=new)
    assert second["duplicate"] is True and second["switch_id"] == first["switch_id"], second
    row = recorded_once(client_id, agent_id, new)
    assert (row.initiated_at, row.ready_at, row.old_terminated_at) == \
        (stored.initiated_at, stored.ready_at, start + timedelta(seconds=395))


@pytest.mark.parametrize("fate", ["picked-up-hours-late", "lease-expired", "timed-out"])
def test_a_report_after_a_late_pickup_or_a_lost_lease_keeps_its_times(make_tenant, fate):
    """GIVEN a switch command created 5 h ago and picked up late, or one whose lease ran out (requeued) or that was
    timed out while the agent ran the switch WHEN v4 reports it (honest clock, no command named) THEN 200, the times
    as given (the floor is the command's creation), recorded once, no warning."""
    client_id, caller, agent_id, old = v4_agent(make_tenant)
    age = timedelta(hours=5) if fate == "picked-up-hours-late" else timedelta(minutes=20)
    command_id = delivered_switch(caller, agent_id, old, age)
    if fate != "picked-up-hours-late":
        status = "pending" if fate == "lease-expired" else "timed_out"
        CommandTable(agent_id, command_id).update(actions=[CommandTable.status.set(status)])
    start = now_utc().replace(microsecond=0) - timedelta(minutes=2)
    timing = {k: v4_time(start + timedelta(seconds=s)) for k, s in V4_SPANS.items()}
    new, reply = report(caller, agent_id, old, timing)
    assert timing_warnings(reply) == [], reply
    row = recorded_once(client_id, agent_id, new)
    assert (row.initiated_at, row.launched_at, row.ready_at) == \
        (start, start + timedelta(seconds=3), start + timedelta(seconds=63))


# --- replicas: v4's polling flow and its create_replica path --------------------------------------------------------


@pytest.mark.parametrize("sync_completed", [None, -10, 0], ids=["no-sync_completed_at", "10s-behind", "honest"])
def test_v4s_replica_polling_flow_places_launch_and_readiness(tenant_with_agent, sync_completed):
    """v4: poll ``?status=launching`` (top-level id, pool_id, az), PUT ``{instance_id, status:'syncing'}`` (no
    launch time), then status ``ready`` (its own ``sync_completed_at``, or none): 200 each, launched then ready, both
    within the standby's life."""
    from tests.api.test_replicas import agent_launched, config, put

    client_id, caller, agent_id, _ = tenant_with_agent
    config(caller, agent_id, manual_replica_enabled=True)  # a manual standby's slot is claimed only in that mode
    agent = agent_repo.require(client_id, agent_id)
    now = now_utc()
    waiting = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                                  lifecycle="spot", pool_id="m5.large.eu-west-1b", az="eu-west-1b",
                                  created_by="replica-coordinator", now=now, take_slot=True)
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert status == 200 and [(r["id"], r["pool_id"], r["az"]) for r in listed["replicas"]] == \
        [(waiting.replica_id, "m5.large.eu-west-1b", "eu-west-1b")], listed
    path = f"/api/agents/{agent_id}/replicas/{waiting.replica_id}"
    status, attached = put(caller, path, {"instance_id": agent_launched(), "status": "syncing"})
    assert status == 200 and attached["status"] == "syncing", attached
    body = {"status": "ready"}
    if sync_completed is not None:
        body["sync_completed_at"] = v4_time(now_utc() + timedelta(seconds=sync_completed))
    status, ready = caller.post(f"{path}/status", body)
    assert status == 200 and ready["status"] == "ready", ready
    row = replica_repo.get(agent_id, waiting.replica_id)
    assert now - timedelta(seconds=1) <= row.launched_at <= row.ready_at <= now_utc(), (row.launched_at, row.ready_at)


def test_v4s_create_replica_path_records_launch_and_readiness(make_tenant):
    """v4's create_replica command path: it launched the EC2, POSTs ``/replicas`` (``status:'launching'``), then
    status ``ready`` without a time: 201 then 200, launched at the record, ready after it."""
    from tests.api.test_replicas import agent_recorded_standby

    caller, agent_id, _, path = agent_recorded_standby(make_tenant)
    status, ready = caller.post(f"{path}/status", {"status": "ready"})
    assert status == 200 and ready["status"] == "ready", ready
    row = replica_repo.get(agent_id, path.rsplit("/", 1)[1])
    assert row.launched_at is not None and row.created_at <= row.ready_at, row


# --- listings: v4's replica poll never follows next_token ------------------------------------------------------------


def test_a_launching_standby_older_than_many_closed_ones_is_on_v4s_first_poll(tenant_with_agent):
    """GIVEN a launching standby and, after it, more closed ones than a page holds WHEN v4 polls
    ``replicas?status=launching`` (no limit, never a next_token) THEN the standby is on that first answer."""
    from tests.api.test_replicas import config

    client_id, caller, agent_id, _ = tenant_with_agent
    config(caller, agent_id, manual_replica_enabled=True)  # a manual standby's slot is claimed only in that mode
    agent = agent_repo.require(client_id, agent_id)
    now = now_utc() - timedelta(hours=1)
    waiting = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                                  lifecycle="spot", pool_id="m5.large.eu-west-1b", az="eu-west-1b",
                                  created_by="replica-coordinator", now=now, take_slot=True)
    for n in range(120):
        at = now + timedelta(seconds=n + 1)
        closed = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(at), replica_type="manual",
                                     lifecycle="spot", pool_id="m5.large.eu-west-1c", az="eu-west-1c",
                                     created_by="replica-coordinator", now=at, take_slot=False)
        replica_repo.transition(closed, replica_repo.ReplicaStatus.FAILED, at)
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert status == 200 and [r["id"] for r in listed["replicas"]] == [waiting.replica_id], listed
