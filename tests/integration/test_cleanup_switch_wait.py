"""The cleanup's orphan pass and the terminate wait of a switch off an instance the product launched.

The primary P here is an instance the product launched (tagged ``ManagedBy: SpotOptimizer`` with our stage, its row
naming the replica it came from: a promoted standby, an emergency replica). The agent on P runs a switch to N under
auto-terminate with a terminate wait (300 s, to drain the customer's connections) and terminates P itself after it.
Before the fix, P's row could be closed before that agent ended P, and a cleanup run in that window (every 10 min)
terminated P as an orphan, cutting the drain:

- legacy v4 and v3.2 run the switch to its end on their command thread: N's agent registers while the old one still
  sleeps the wait, the registration infers the switch (``api.agents._unreported_switch``) and closes P's row;
- our agent (agent/) reports as soon as N runs and terminates P after the wait; its report, retried (a 503), may land
  after N's agent registered (which closed P's row), without the termination time.

Now P is kept for as long as the agent that switched may still be terminating it (``AgentTimings.host_gone_s`` of
its wait, from the switch's record), and is an orphan again after that: nobody ended it, the product does.

Runs go through the real routes as the agents send them, and the real schedule handler
(``invoke_schedule(api, "cleanup", now=...)``); the agent routes' clock is set (``clock``) so that P is long past the
orphan grace when the switch happens.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import chalicelib.api.agents as agents_api
from chalicelib import bootstrap, command_queue
from chalicelib.aws import ec2 as ec2_adapter
from chalicelib.repositories import agents as agent_repo
from chalicelib.tables.instances import InstanceTable
from components.command_tracker.model import LEGACY_AGENT, SPOT_AGENT, CommandStatus
from tests.api._support import iso
from tests.api.test_legacy_v3_bodies import v3_registration
from tests.conftest import invoke_schedule, registration
from tests.e2e.failover_support import ZONES, state_of, tags_of
from tests.integration.test_cleanup import GONE, launch, orphan_events

WAIT_S = 300
ITYPE = "t3.micro"


@pytest.fixture
def clock(monkeypatch):
    """Set the agent routes' clock to ``when`` (the cleanup runs are given theirs)."""

    def _set(when):
        monkeypatch.setattr(agents_api, "utcnow", lambda: when)

    return _set


def _body(kind: str, instance_id: str, logical: str, az: str, mode: str) -> dict:
    """The register body of the agent ``kind`` (v4, v3.2: no mode; ours, by its version) on ``instance_id``."""
    if kind == "v3.2":
        return v3_registration(instance_id, logical, az, ITYPE)
    return registration(instance_id=instance_id, instance_type=ITYPE, region="us-east-1", az=az,
                        logical_agent_id=logical, mode=mode, hostname=f"ip-10-0-0-{uuid.uuid4().int % 250}",
                        agent_version={"v4": "4.0.0", "ours": "5.0.0"}[kind])


def _on_the_products_instance(make_tenant, kind: str, *, auto_terminate: bool):
    """An agent of ``kind`` on P, an instance the product launched (as a hand-over leaves it): (client_id, caller,
    agent_id, logical id, P)."""
    client_id, caller = make_tenant()
    logical = f"web-{uuid.uuid4().hex[:8]}"
    status, reply = caller.post("/api/agents/register", _body(kind, launch(None), logical, ZONES[1], "spot"))
    assert status == 200, reply
    agent_id, replica_id = reply["agent_id"], f"rep-{uuid.uuid4().hex[:8]}"
    ours = launch({"ManagedBy": "SpotOptimizer", "AgentId": agent_id, "ClientId": client_id, "LogicalAgentId": logical,
                   "ReplicaId": replica_id, "SpotOptimizerStage": "dev"})
    assert caller.post("/api/agents/register", _body(kind, ours, logical, ZONES[1], "spot"))[0] == 200
    InstanceTable(ours).update(actions=[InstanceTable.replica_id.set(replica_id)])
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": auto_terminate,
                                                                  "terminate_wait_seconds": WAIT_S})[0] == 200
    assert agent_repo.get(client_id, agent_id).instance_id == ours
    return client_id, caller, agent_id, logical, ours


def _switch_delivered(caller, client_id: str, agent_id: str, primary: str, how: str, kind: str) -> dict:
    """The client's force-switch, or the decision cycle's switch, of ``primary`` to spot in ZONES[2], delivered to the
    agent's poll (v3.2 is answered a bare list); the command as delivered."""
    pool = f"{ITYPE}.{ZONES[2]}"
    if how == "force-switch":
        status, queued = caller.post(f"/api/client/instances/{primary}/force-switch",
                                     {"target": "pool", "pool_id": pool})
        assert status == 201, queued
    else:
        cmd = command_queue.switch_command(agent_repo.require(client_id, agent_id), target_mode="spot",
                                           target_pool_id=pool, priority=25, trigger="model",
                                           created_by=command_queue.DECISION_ENGINE, now=datetime.now(UTC))
        bootstrap.command_store().add(cmd)
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200, pending
    [delivered] = pending if kind == "v3.2" else pending["commands"]
    return delivered


def _report(old: str, new: str, at: datetime) -> dict:
    """A switch report of ``old`` → ``new`` sent at ``at``, before the old instance's termination (no time for it)."""
    return {"old_instance": {"instance_id": old, "instance_type": ITYPE, "region": "us-east-1", "az": ZONES[1],
                             "mode": "spot", "pool_id": f"{ITYPE}.{ZONES[1]}"},
            "new_instance": {"instance_id": new, "instance_type": ITYPE, "region": "us-east-1", "az": ZONES[2],
                             "mode": "spot", "pool_id": f"{ITYPE}.{ZONES[2]}"},
            "snapshot": {"used": False}, "prices": {"on_demand": 0.0104, "old_spot": 0.004, "new_spot": 0.0035},
            "timing": {"switch_initiated_at": iso(at - timedelta(seconds=120)),
                       "new_instance_launched_at": iso(at - timedelta(seconds=110)),
                       "new_instance_ready_at": iso(at - timedelta(seconds=20)),
                       "traffic_switched_at": iso(at - timedelta(seconds=18))}, "trigger": "manual"}


def _replacement() -> str:
    """N as the agent launches it: v4 tags it ``ManagedBy: SpotOptimizer`` itself, without our stage."""
    return launch({"Name": "SpotOptimizer-spot", "ManagedBy": "SpotOptimizer"})


def _kept_through(api, instance_id: str, times: list[datetime]) -> None:
    for at in times:
        outcome = invoke_schedule(api, "cleanup", now=at)
        assert instance_id not in outcome["terminated"], (at, outcome)
        assert state_of(instance_id) == "running", at
        assert ec2_adapter.TAG_ORPHANED not in tags_of(instance_id), at
        assert orphan_events(instance_id, at) == []


def _reaped_at(api, instance_id: str, at: datetime) -> None:
    outcome = invoke_schedule(api, "cleanup", now=at)
    assert instance_id in outcome["terminated"], outcome
    assert state_of(instance_id) in GONE
    [event] = orphan_events(instance_id, at)
    assert event.severity == "warning"


def _in_the_wait(switched: datetime, gone_s: int) -> list[datetime]:
    """Cleanup runs while the agent may still sleep its wait or terminate P: right after the switch, mid-wait, at its
    end, and at the end of the time the agent may take to terminate (the last moment it may still be at it)."""
    return [switched + timedelta(seconds=s) for s in (60, WAIT_S // 2, WAIT_S + 60, gone_s - 30)]


@pytest.mark.parametrize("how", ["force-switch", "decision"])
@pytest.mark.parametrize("kind", ["v4", "v3.2"])
def test_a_legacy_switch_inferred_at_the_replacements_registration_leaves_p_to_its_wait(
        api, make_tenant, clock, kind, how):
    """GIVEN a legacy agent (v4, v3.2) on P under auto-terminate with a 300 s wait, running a switch (the client's
    force-switch, a decision's) delivered to its poll WHEN N's agent registers while the old one sleeps its wait (the
    switch is inferred there, P's row closed) and the cleanup runs through the wait and the termination it may still
    be doing THEN P keeps running, never tagged an orphan (before: terminated by the first run, the drain cut); and
    when nobody ended P, the first run past that time terminates it as an orphan (the backstop)."""
    client_id, caller, agent_id, logical, primary = _on_the_products_instance(make_tenant, kind, auto_terminate=True)
    delivered = _switch_delivered(caller, client_id, agent_id, primary, how, kind)
    assert delivered["terminate_wait_seconds"] == WAIT_S, delivered
    switched = datetime.now(UTC) + timedelta(minutes=20)  # P is long past the orphan grace
    clock(switched)
    new = _replacement()
    status, reply = caller.post("/api/agents/register", _body(kind, new, logical, ZONES[2], "spot"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    row = agent_repo.instance_row(primary)
    assert not row.is_active and row.terminated_at is not None  # the registration closed P's row: the window
    assert bootstrap.command_store().get(agent_id, delivered["id"]).status is CommandStatus.COMPLETED

    gone_s = LEGACY_AGENT.host_gone_s(WAIT_S)
    _kept_through(api, primary, _in_the_wait(switched, gone_s))
    _reaped_at(api, primary, switched + timedelta(seconds=gone_s + 60))


def test_v32_told_to_keep_p_by_our_setting_still_gets_its_own_wait(api, make_tenant, clock):
    """GIVEN v3.2 on P with auto-terminate off here (its command carries no wait), which terminates by its own
    AUTO_TERMINATE_OLD_INSTANCE / TERMINATE_WAIT_TIME whatever the command says WHEN N's v3.2 registers (the switch
    inferred, P's row closed with the registration's time) and the cleanup runs through v3.2's own 300 s wait and its
    termination THEN P keeps running (before: terminated by the first run)."""
    client_id, caller, agent_id, logical, primary = _on_the_products_instance(make_tenant, "v3.2",
                                                                              auto_terminate=False)
    delivered = _switch_delivered(caller, client_id, agent_id, primary, "force-switch", "v3.2")
    assert delivered["terminate_wait_seconds"] == 0, delivered
    switched = datetime.now(UTC) + timedelta(minutes=20)
    clock(switched)
    status, reply = caller.post("/api/agents/register", v3_registration(_replacement(), logical, ZONES[2], ITYPE))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert agent_repo.instance_row(primary).terminated_at is not None

    _kept_through(api, primary, _in_the_wait(switched, LEGACY_AGENT.host_gone_s(WAIT_S)))


def test_v4_keeping_p_under_auto_terminate_off_keeps_it_after_the_wait_too(api, make_tenant, clock):
    """GIVEN v4 on P with auto-terminate off (the customer keeps the old instance), running the client's force-switch
    WHEN N's v4 registers before the old one's report (the switch inferred, P's row closed with the registration's
    time: a guess), the report comes (no termination: v4 keeps P), and the cleanup runs long after any wait THEN P
    keeps running, never tagged an orphan (before: terminated at the end of the wait, or by the first run before the
    wait was kept): under auto-terminate off the instance a switch left is the customer's."""
    client_id, caller, agent_id, logical, primary = _on_the_products_instance(make_tenant, "v4", auto_terminate=False)
    delivered = _switch_delivered(caller, client_id, agent_id, primary, "force-switch", "v4")
    switched = datetime.now(UTC) + timedelta(minutes=20)
    clock(switched)
    new = _replacement()
    status, reply = caller.post("/api/agents/register", _body("v4", new, logical, ZONES[2], "spot"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert agent_repo.instance_row(primary).terminated_at is not None  # the registration's guess
    reported = switched + timedelta(seconds=30)
    clock(reported)
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _report(primary, new, reported))
    assert status == 200, reply
    assert bootstrap.command_store().get(agent_id, delivered["id"]).status is CommandStatus.COMPLETED

    gone_s = LEGACY_AGENT.host_gone_s(WAIT_S)
    _kept_through(api, primary, [*_in_the_wait(switched, gone_s), switched + timedelta(seconds=gone_s + 60),
                                 switched + timedelta(hours=6)])


def test_our_agents_report_retried_after_the_replacements_registration_leaves_p_to_its_wait(
        api, make_tenant, clock):
    """GIVEN our agent on P under auto-terminate (300 s wait), its switch to N done WHEN N's agent registers before the
    first report lands (a 503 retried), then the report comes without the termination time (it terminates P after the
    wait) and the cleanup runs through the wait THEN P keeps running (before: the registration had closed P's row and
    the first run terminated it); nobody ending P, the first run past the time terminates it as an orphan."""
    client_id, caller, agent_id, logical, primary = _on_the_products_instance(make_tenant, "ours", auto_terminate=True)
    delivered = _switch_delivered(caller, client_id, agent_id, primary, "force-switch", "ours")
    assert delivered["terminate_wait_seconds"] == WAIT_S, delivered
    registered = datetime.now(UTC) + timedelta(minutes=20)
    clock(registered)
    new = _replacement()
    status, reply = caller.post("/api/agents/register", _body("ours", new, logical, ZONES[2], "spot"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert not agent_repo.instance_row(primary).is_active
    reported = registered + timedelta(seconds=30)
    clock(reported)
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", {**_report(primary, new, reported),
                                                                         "command_id": delivered["id"]})
    assert status == 200 and not reply["duplicate"], reply

    gone_s = SPOT_AGENT.host_gone_s(WAIT_S)
    _kept_through(api, primary, _in_the_wait(reported, gone_s))
    _reaped_at(api, primary, reported + timedelta(seconds=gone_s + 60))


def test_our_agents_report_before_the_termination_keeps_p_its_agents(api, make_tenant, clock):
    """GIVEN our agent on P under auto-terminate (300 s wait) WHEN it reports the switch as soon as N runs (no
    termination time: it terminates P after the wait), N's agent registers, and the cleanup runs through the wait
    THEN P keeps running: its row stays active until the agent reports P terminated (HELD before and after)."""
    client_id, caller, agent_id, logical, primary = _on_the_products_instance(make_tenant, "ours", auto_terminate=True)
    delivered = _switch_delivered(caller, client_id, agent_id, primary, "force-switch", "ours")
    reported = datetime.now(UTC) + timedelta(minutes=20)
    clock(reported)
    new = _replacement()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", {**_report(primary, new, reported),
                                                                         "command_id": delivered["id"]})
    assert status == 200, reply
    clock(reported + timedelta(seconds=60))
    status, reply = caller.post("/api/agents/register", _body("ours", new, logical, ZONES[2], "spot"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert agent_repo.instance_row(primary).is_active

    _kept_through(api, primary, _in_the_wait(reported, SPOT_AGENT.host_gone_s(WAIT_S)))
