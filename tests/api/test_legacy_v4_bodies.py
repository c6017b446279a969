"""The legacy v4.0.0 agent's bodies as its code builds them, where they differ from the
documented field lists: calls replayed one by one, as v4 makes them, with the client token."""

from __future__ import annotations

import uuid

from chalicelib.tables.agents import AgentTable
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.switches import SwitchTable
from tests.api._support import assert_error, iso, now_utc, shifted
from tests.conftest import new_instance_id, registration


def v4_registration(instance_id: str, logical_agent_id: str, az: str) -> dict:
    return registration(instance_id=instance_id, logical_agent_id=logical_agent_id, az=az, agent_version="4.0.0",
                        hostname=f"ip-10-0-0-{uuid.uuid4().int % 250}")


def v4_heartbeat(instance_id: str, az: str, status: str = "online") -> dict:
    return {"status": status, "monitored_instances": [instance_id], "instance_id": instance_id,
            "instance_type": "m5.large", "mode": "spot", "az": az}


# v4's shutdown (SIGTERM, or after a switch that terminates its own host): send_heartbeat(agent_id, 'offline',
# []) with no extra data, so no instance is named.
V4_FINAL_HEARTBEAT = {"status": "offline", "monitored_instances": []}


def test_the_old_instances_final_bare_offline_heartbeat_after_a_switch_does_not_take_the_agent_offline(
        make_tenant):
    """GIVEN a v4 agent on instance A that executes a forced switch to B (wait 300 s): B's agent registers under
    the same logical id and heartbeats while A waits, then A posts its switch report and the result
    WHEN A's agent stops itself and sends its final heartbeat, which names no instance
    THEN the agent stays online on B and the client gets no offline/online flap."""
    client_id, caller = make_tenant()
    logical, old, new = f"web-{uuid.uuid4().hex[:8]}", new_instance_id(), new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(old, "eu-west-1a"))[0] == 200
    status, queued = caller.post(f"/api/client/instances/{old}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    [command] = pending["commands"]

    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(new, "eu-west-1b"))[0] == 200
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", {
        "old_instance": {"instance_id": old, "instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1a",
                         "ami_id": "ami-12345678", "mode": "spot", "pool_id": "m5.large.eu-west-1a"},
        "new_instance": {"instance_id": new, "instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1b",
                         "ami_id": "ami-12345678", "mode": "spot", "pool_id": "m5.large.eu-west-1b"},
        "snapshot": {"used": False}, "prices": {"on_demand": 0.107, "old_spot": 0.04, "new_spot": 0.031},
        "timing": {"switch_initiated_at": iso(shifted(-900)), "new_instance_launched_at": iso(shifted(-890)),
                   "new_instance_ready_at": iso(shifted(-600)), "traffic_switched_at": iso(shifted(-598)),
                   "old_instance_terminated_at": iso(now_utc())},
        "trigger": "manual"})
    assert status == 200, reply
    status, reply = caller.post(f"/api/agents/{agent_id}/commands/{command['id']}/executed",
                                {"success": True, "message": "Switch completed"})
    assert status == 200, reply

    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", V4_FINAL_HEARTBEAT)
    assert status == 200, reply  # v4 does not read it; what matters is what it did to the agent

    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert (row.status, row.instance_id) == ("online", new)
    status, notes = caller.get("/api/notifications")
    flaps = [n["message"] for n in notes["notifications"] if n["kind"] == "agent_status"]
    assert flaps == [], flaps


def test_v4_cleanup_report_failures_are_objects_and_are_counted(tenant_with_agent):
    """GIVEN a v4 agent's hourly cleanup (CleanupManager.run_full_cleanup): each failure is
    ``{"id", "error"}``, each part carries its ``type``, and a part whose listing failed has ``error`` and no
    ``cutoff_date``
    WHEN it posts the report
    THEN every failure is counted and nothing is dropped as implausible."""
    _, caller, agent_id, _ = tenant_with_agent
    status, reply = caller.post(f"/api/agents/{agent_id}/cleanup-report", {
        "timestamp": iso(now_utc()),
        "snapshots": {"type": "snapshots", "deleted": ["snap-0123456789abcdef0"],
                      "failed": [{"id": "snap-0fedcba9876543210", "error": "An error occurred (AccessDenied)"}],
                      "cutoff_date": iso(shifted(-7 * 86400))},
        "amis": {"type": "amis", "deleted_amis": [], "deleted_snapshots": [],
                 "failed": [{"id": "ami-0123456789abcdef0", "error": "An error occurred (InvalidAMIID.Unavailable)"}],
                 "error": "throttled"}})
    assert status == 200, reply
    assert (reply["deleted_snapshots"], reply["failed_count"], reply["warnings"]) == (1, 2, []), reply


def _switch_report(old: str, new: str, *, terminated: bool) -> dict:
    """The report v4's InstanceSwitcher.execute_switch posts (spot eu-west-1a → spot eu-west-1b)."""
    timing = {"switch_initiated_at": iso(shifted(-400)), "new_instance_launched_at": iso(shifted(-390)),
              "new_instance_ready_at": iso(shifted(-100)), "traffic_switched_at": iso(shifted(-98))}
    if terminated:
        timing["old_instance_terminated_at"] = iso(now_utc())
    return v4_switch_body(old, new, timing)


def v4_switch_body(old: str, new: str, timing: dict | None) -> dict:
    """v4's switch report body for a spot m5.large eu-west-1a → eu-west-1b switch, with ``timing`` (None: none)."""
    body = {"old_instance": {"instance_id": old, "instance_type": "m5.large", "region": "eu-west-1",
                             "az": "eu-west-1a", "ami_id": "ami-12345678", "mode": "spot",
                             "pool_id": "m5.large.eu-west-1a"},
            "new_instance": {"instance_id": new, "instance_type": "m5.large", "region": "eu-west-1",
                             "az": "eu-west-1b", "ami_id": "ami-12345678", "mode": "spot",
                             "pool_id": "m5.large.eu-west-1b"},
            "snapshot": {"used": False}, "prices": {"on_demand": 0.107, "old_spot": 0.04, "new_spot": 0.031},
            "trigger": "manual"}
    return body if timing is None else {**body, "timing": timing}


def test_the_kept_old_instances_agent_heartbeating_after_its_switch_does_not_move_the_agent_back(make_tenant):
    """GIVEN a v4 agent on A with auto-terminate off: its forced switch carries terminate_wait_seconds 0, so
    after launching B it reports at once, keeps A running and keeps running itself (heartbeats naming A)
    WHEN A's agent heartbeats after its switch report, before and after B's agent registers
    THEN the agent stays on B (A is the kept old instance, no longer the agent's)."""
    client_id, caller = make_tenant()
    logical, old, new = f"web-{uuid.uuid4().hex[:8]}", new_instance_id(), new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": False})
    assert status == 200, reply
    status, queued = caller.post(f"/api/client/instances/{old}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201 and queued["command"]["terminate_wait_seconds"] == 0, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    [command] = pending["commands"]
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _switch_report(old, new, terminated=False))
    assert status == 200, reply
    assert caller.post(f"/api/agents/{agent_id}/commands/{command['id']}/executed",
                       {"success": True, "message": "Switch completed"})[0] == 200

    def on() -> str:
        return AgentTable.get(client_id, agent_id, consistent_read=True).instance_id

    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(old, "eu-west-1a"))[0] == 200
    assert on() == new
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    for instance_id, az in ((new, "eu-west-1b"), (old, "eu-west-1a")):
        assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, az))[0] == 200
        assert on() == new


def _registered_keeping_instances(make_tenant):
    """A v4 agent registered on A with auto-terminate off (no terminate wait), and the id B its switch will launch:
    (client_id, caller, agent_id, logical id, A, B)."""
    client_id, caller = make_tenant()
    logical, old, new = f"web-{uuid.uuid4().hex[:8]}", new_instance_id(), new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": False})[0] == 200
    return client_id, caller, agent_id, logical, old, new


def _switched_keeping_the_old_instance(make_tenant):
    """A v4 agent registered on A, auto-terminate off, its switch to B reported (A kept running) and B's agent
    registered: (client_id, caller, agent_id, logical id, A, B)."""
    client_id, caller, agent_id, logical, old, new = _registered_keeping_instances(make_tenant)
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _switch_report(old, new, terminated=False))
    assert status == 200, reply
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    return client_id, caller, agent_id, logical, old, new


def test_a_termination_notice_on_the_kept_old_instance_launches_no_standby(make_tenant):
    """GIVEN a v4 agent in auto-switch mode with auto-terminate off that switched from A to B (A kept running,
    its agent too) and B's agent registered
    WHEN A's spot instance gets its two-minute notice and A's agent calls create-emergency-replica, then
    termination-imminent, naming A
    THEN no standby is launched for the agent (A is not what it runs on: nothing to replace) and no failover
    starts; both calls are answered 2xx without success, which v4 only logs."""
    client_id, caller, agent_id, logical, old, new = _switched_keeping_the_old_instance(make_tenant)

    notice = iso(shifted(120))
    status, reply = caller.post(f"/api/agents/{agent_id}/create-emergency-replica",
                                {"signal_type": "termination-notice", "instance_id": old, "termination_time": notice})
    assert 200 <= status < 300 and reply["success"] is False and reply["replica_id"] is None, (status, reply)
    status, reply = caller.post(f"/api/agents/{agent_id}/termination-imminent",
                                {"instance_id": old, "termination_time": notice, "detected_at": iso(now_utc())})
    assert 200 <= status < 300 and reply["success"] is False, (status, reply)
    status, listing = caller.get(f"/api/agents/{agent_id}/replicas?include_terminated=true")
    assert status == 200 and listing["replicas"] == [], listing
    assert AgentTable.get(client_id, agent_id, consistent_read=True).current_replica_id is None


def test_the_kept_old_instances_v4_agent_restarting_cannot_take_the_agent_back(make_tenant):
    """GIVEN a v4 agent that switched from A to B with auto-terminate off (A kept running) and B's agent registered
    WHEN A's v4 agent restarts (a reboot, systemd) and registers A again
    THEN 409 instance_replaced (v4 exits on a failed registration) and the agent stays on B, B active."""
    client_id, caller, agent_id, logical, old, new = _switched_keeping_the_old_instance(make_tenant)

    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert_error(status, reply, 409, code="instance_replaced")
    assert AgentTable.get(client_id, agent_id, consistent_read=True).instance_id == new
    assert InstanceTable.get(new, consistent_read=True).is_active is True


def test_the_kept_old_instance_cannot_take_the_agent_back_when_its_switch_commits_after_the_check(
        make_tenant, monkeypatch):
    """GIVEN the same switched agent (A kept running, B current), and A's re-registration whose up-front check
    ran before the switch committed (emulated: the first check sees nothing to refuse)
    WHEN the registration's transaction writes
    THEN its own condition refuses A (409 instance_replaced): the agent stays on B, B active, A not moved back."""
    from chalicelib.repositories import agents as agents_repo

    client_id, caller, agent_id, logical, old, new = _switched_keeping_the_old_instance(make_tenant)
    real, checks = agents_repo._refuse_known_instance, []

    def stale_first_check(client, reg):
        checks.append(reg.instance_id)
        if len(checks) > 1:
            real(client, reg)

    monkeypatch.setattr(agents_repo, "_refuse_known_instance", stale_first_check)
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert_error(status, reply, 409, code="instance_replaced")
    assert checks == [old, old]
    agent = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert agent.instance_id == new and agent.az == "eu-west-1b"
    assert InstanceTable.get(new, consistent_read=True).is_active is True


def test_a_v4_build_that_checks_health_first_and_resends_timed_out_calls_gets_one_agent_one_switch(make_tenant):
    """final-ml ``agent/spot_optimizer_agent.py`` at b25dea4 (a 4.0.0 build of the last v4's calls): before it
    registers it sends ``GET /health`` with its session's headers (Bearer client token, JSON content type) and exits
    only on a connection error; every call that times out or fails to connect is sent again (up to three times, 1 s
    then 2 s apart), so a call the server handled may arrive twice.
    GIVEN such a build WHEN its health check, registration, switch report and result each arrive twice
    THEN the health check is answered (not refused for its token), both registrations name one agent, the second
    report is a duplicate of the first (one switch recorded), and the second result a replay."""
    client_id, caller = make_tenant()
    status, health = caller.get("/health")
    assert status in (200, 503) and "status" in health, health
    logical, old, new = f"web-{uuid.uuid4().hex[:8]}", new_instance_id(), new_instance_id()
    first = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    again = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert first[0] == again[0] == 200 and first[1]["agent_id"] == again[1]["agent_id"], (first, again)
    agent_id = first[1]["agent_id"]
    status, queued = caller.post(f"/api/client/instances/{old}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    [command] = pending["commands"]
    assert caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))[0] == 200
    report = _switch_report(old, new, terminated=True)
    replies = [caller.post(f"/api/agents/{agent_id}/switch-report", report) for _ in range(2)]
    assert [s for s, _ in replies] == [200, 200] and replies[1][1]["duplicate"] is True, replies
    results = [caller.post(f"/api/agents/{agent_id}/commands/{command['id']}/executed",
                           {"success": True, "message": "Switch completed"}) for _ in range(2)]
    assert [s for s, _ in results] == [200, 200] and results[1][1]["replay"] is True, results
    assert results[1][1]["command"]["status"] == "completed", results
    switches = [r for r in SwitchTable.query(client_id) if r.agent_id == agent_id]
    assert [(r.old_instance_id, r.new_instance_id) for r in switches] == [(old, new)]


def _hop(caller, agent_id: str, old: str, old_az: str, new: str, new_az: str, *, terminated: bool) -> None:
    """A forced switch of ``old`` (in ``old_az``) to ``new_az`` run by v4 as it reports it: poll, switch report, result,
    then the registration of the agent on ``new``, which names its own instance id (no LOGICAL_AGENT_ID)."""
    status, queued = caller.post(f"/api/client/instances/{old}/force-switch",
                                 {"target": "pool", "pool_id": f"m5.large.{new_az}"})
    assert status == 201, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    [command] = pending["commands"]
    report = _switch_report(old, new, terminated=terminated)
    report["old_instance"] |= {"az": old_az, "pool_id": f"m5.large.{old_az}"}
    report["new_instance"] |= {"az": new_az, "pool_id": f"m5.large.{new_az}"}
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", report)
    assert status == 200, reply
    assert caller.post(f"/api/agents/{agent_id}/commands/{command['id']}/executed", {"success": True})[0] == 200
    status, reply = caller.post("/api/agents/register", v4_registration(new, new, new_az))
    assert status == 200 and reply["agent_id"] == agent_id, reply


def test_a_kept_instances_v4_agent_without_logical_agent_id_restarting_is_refused_as_a_named_one_is(make_tenant):
    """GIVEN v4 agents without LOGICAL_AGENT_ID (each names its own instance id): the agent was created on I0, switched
    to I1 (I0 terminated), then to I2 under auto-terminate off (I1 kept running, its v4 agent too)
    WHEN I1's v4 agent restarts and registers naming I1, an id no agent has
    THEN 409 instance_replaced, as for an agent with a logical id of its own, not a second agent taking I1 from the
    agent (with default settings: auto-switch on, so the decision cycle would move the kept instance too)."""
    client_id, caller = make_tenant()
    first, kept, current = new_instance_id(), new_instance_id(), new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(first, first, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    _hop(caller, agent_id, first, "eu-west-1a", kept, "eu-west-1b", terminated=True)
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": False})
    assert status == 200, reply
    _hop(caller, agent_id, kept, "eu-west-1b", current, "eu-west-1c", terminated=False)

    status, reply = caller.post("/api/agents/register", v4_registration(kept, kept, "eu-west-1b"))
    assert_error(status, reply, 409, code="instance_replaced")
    assert [(r.agent_id, r.instance_id) for r in AgentTable.query(client_id)] == [(agent_id, current)]


def test_a_decisions_switch_left_undelivered_while_the_agent_was_away_is_not_run_on_its_return(make_tenant):
    """GIVEN a live v4 agent for which the decision cycle queued a switch just as it went silent (a network outage,
    its host stopped) WHEN it polls again hours later
    THEN it is not given that switch (decided on the prices of hours ago; v4 runs whatever a poll returns): the
    command is cancelled as stale, and the next decision queues afresh. A fresh decision's switch and a client's
    force-switch are still delivered, however long the latter waited."""
    from datetime import UTC, datetime, timedelta

    from chalicelib import bootstrap, command_queue, decisions
    from chalicelib.repositories import agents as agent_repo
    from components.decision_engine import Decision, DecisionAction

    client_id, caller = make_tenant()
    instance_id = new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(instance_id, f"web-{uuid.uuid4().hex[:8]}",
                                                                        "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    agent = agent_repo.get(client_id, agent_id)
    move = Decision(DecisionAction.SWITCH_POOL, "m5.large.eu-west-1b", None, "cheaper in b")
    hours_ago = datetime.now(UTC) - timedelta(hours=3)
    stale = decisions.command_for(agent, move, hours_ago, trigger="model")
    assert stale is not None

    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert (status, pending["commands"]) == (200, []), pending
    stored = bootstrap.command_store().get(agent_id, stale.command_id)
    assert (stored.status.value, stored.attempts) == ("cancelled", 0) and "stale" in stored.message, stored
    assert AgentTable.get(client_id, agent_id, consistent_read=True).active_commands == 0

    fresh = decisions.command_for(agent_repo.get(client_id, agent_id), move, datetime.now(UTC), trigger="model")
    assert fresh is not None and fresh.command_id != stale.command_id
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert [c["id"] for c in pending["commands"]] == [fresh.command_id], pending
    assert caller.post(f"/api/agents/{agent_id}/commands/{fresh.command_id}/executed", {"success": False})[0] == 200

    forced = command_queue.switch_command(
        agent_repo.get(client_id, agent_id), target_mode="ondemand", target_pool_id=None, priority=75,
        trigger="manual", created_by="client", now=hours_ago)
    bootstrap.command_store().add(forced)
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert [c["id"] for c in pending["commands"]] == [forced.command_id], pending


def test_the_headers_legacy_http_clients_send_are_read_as_json(make_tenant, api):
    """GIVEN the headers legacy agents' HTTP libraries send: v4's session sets ``Content-Type: application/json`` on
    every call, GETs without a body included; a JSON body with a charset suffix or in capitals; a script's POST with no
    Content-Type at all (Chalice takes JSON then) WHEN they call the agent routes THEN each is answered 2xx as JSON,
    and a query string v4 adds (``replicas?status=launching``) is read, not part of the path."""
    import json

    client_id, caller = make_tenant()
    instance_id = new_instance_id()
    auth = {"Authorization": f"Bearer {caller.token}"}
    body = json.dumps(v4_registration(instance_id, f"web-{uuid.uuid4().hex[:8]}", "eu-west-1a"))
    agent_ids = set()
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
                         None):
        headers = auth | ({"Content-Type": content_type} if content_type else {})
        response = api.http.post("/api/agents/register", headers=headers, body=body)
        assert response.status_code == 200, (content_type, response.body)
        agent_ids.add(json.loads(response.body)["agent_id"])
    [agent_id] = agent_ids
    session = auth | {"Content-Type": "application/json"}
    for path in (f"/api/agents/{agent_id}/config", f"/api/agents/{agent_id}/pending-commands",
                 f"/api/agents/{agent_id}/replicas?status=launching"):
        response = api.http.get(path, headers=session)
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/json", (
            path, response.body)
    response = api.http.post(f"/api/agents/{agent_id}/heartbeat", headers=auth,
                             body=json.dumps(v4_heartbeat(instance_id, "eu-west-1a")))
    assert response.status_code == 200 and json.loads(response.body)["success"] is True, response.body


def test_a_new_instance_two_unnamed_switches_could_have_launched_is_a_new_agent(make_tenant):
    """GIVEN two v4 agents without LOGICAL_AGENT_ID, each running a forced switch to the same pool (polled, not yet
    reported) WHEN an instance of that pool registers naming its own instance id THEN it is not guessed to be either's
    replacement: a new agent (each old agent keeps its instance and its leased switch); one switch alone is adopted."""
    from chalicelib import bootstrap

    client_id, caller = make_tenant()
    olds = [new_instance_id(), new_instance_id()]
    agent_ids = []
    for old in olds:
        status, reply = caller.post("/api/agents/register", v4_registration(old, old, "eu-west-1a"))
        assert status == 200, reply
        agent_ids.append(reply["agent_id"])
        status, queued = caller.post(f"/api/client/instances/{old}/force-switch",
                                     {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
        assert status == 201, queued
        assert len(caller.get(f"/api/agents/{reply['agent_id']}/pending-commands")[1]["commands"]) == 1
    new = new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(new, new, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] not in agent_ids and reply["action"] == "created", reply
    assert {a: AgentTable.get(client_id, a, consistent_read=True).instance_id for a in agent_ids} == dict(
        zip(agent_ids, olds))
    assert all(bootstrap.command_store().active_for_agent(a, 5)[0].status.value == "executing" for a in agent_ids)

    # with the first switch finished (reported failed), the second alone could have launched the next one
    [first] = bootstrap.command_store().active_for_agent(agent_ids[0], 5)
    assert caller.post(f"/api/agents/{agent_ids[0]}/commands/{first.command_id}/executed", {"success": False})[0] == 200
    other = new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(other, other, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_ids[1] and reply["action"] == "migrated", reply


def test_a_switch_whose_report_was_refused_after_its_result_is_recorded_once_by_the_replacements_registration(
        make_tenant):
    """GIVEN a v4 agent on A (auto-terminate off: no terminate wait) whose forced switch to B ran, its result
    accepted, and its switch report refused (a 429 or a transient 503: v4 does not send it again)
    WHEN B's agent registers under the same logical id, then the report arrives after all
    THEN the registration records the switch A → B (inferred from the completed command), exactly once: the late
    report is a duplicate of it."""
    client_id, caller, agent_id, logical, old, new = _registered_keeping_instances(make_tenant)
    status, queued = caller.post(f"/api/client/instances/{old}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201 and queued["command"]["terminate_wait_seconds"] == 0, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    [command] = pending["commands"]
    status, reply = caller.post(f"/api/agents/{agent_id}/commands/{command['id']}/executed",
                                {"success": True, "message": "Switch completed"})
    assert status == 200 and reply["command"]["status"] == "completed", reply
    # the switch report is refused here (never reaches the handler)
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply

    def recorded():
        return [(r.old_instance_id, r.new_instance_id, bool(r.inferred), r.command_id)
                for r in SwitchTable.query(client_id, consistent_read=True) if r.agent_id == agent_id]

    assert recorded() == [(old, new, True, command["id"])]
    assert AgentTable.get(client_id, agent_id, consistent_read=True).instance_id == new
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", _switch_report(old, new, terminated=False))
    assert status == 200, reply
    assert [(o, n) for o, n, _, _ in recorded()] == [(old, new)]
    # B's agent registering again (a restart) records nothing more
    assert caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))[0] == 200
    assert [(o, n) for o, n, _, _ in recorded()] == [(old, new)]


def test_one_heartbeat_saying_ondemand_on_a_spot_instance_does_not_flip_its_recorded_mode(make_tenant):
    """GIVEN a v4 agent registered on a spot instance
    WHEN one heartbeat says ``mode: ondemand`` (an IMDS hiccup: v4 reads the lifecycle from IMDS each beat), then the
    next says ``spot`` again
    THEN both are answered 200 and the agent's recorded mode stays spot throughout."""
    client_id, caller = make_tenant()
    logical, instance_id = f"web-{uuid.uuid4().hex[:8]}", new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(instance_id, logical, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]

    def mode() -> str:
        return AgentTable.get(client_id, agent_id, consistent_read=True).current_mode

    assert mode() == "spot"
    hiccup = v4_heartbeat(instance_id, "eu-west-1a") | {"mode": "ondemand"}
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", hiccup)
    assert status == 200, reply
    assert mode() == "spot"
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, "eu-west-1a"))[0] == 200
    assert mode() == "spot"


def test_a_v4_registration_hiccup_is_corrected_by_its_heartbeats_that_agree(make_tenant):
    """GIVEN a v4 agent whose registration said ``mode: ondemand`` on a spot instance (v4 reports ``ondemand`` when
    both IMDS's lifecycle and DescribeInstances fail: a first-boot hiccup at registration)
    WHEN its heartbeats say ``spot`` (what v4 reads each beat once IMDS answers)
    THEN a single contradicting beat is not written, but the next one that says the same is: the recorded mode is
    spot (the registration's word is no better than the heartbeat's; it used to stay ondemand for the instance's
    life, so decisions and savings read an on-demand agent)."""
    client_id, caller = make_tenant()
    logical, instance_id = f"web-{uuid.uuid4().hex[:8]}", new_instance_id()
    status, reply = caller.post("/api/agents/register",
                                v4_registration(instance_id, logical, "eu-west-1a") | {"mode": "ondemand"})
    assert status == 200, reply
    agent_id = reply["agent_id"]

    def mode() -> str:
        return AgentTable.get(client_id, agent_id, consistent_read=True).current_mode

    assert mode() == "ondemand"
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, "eu-west-1a"))[0] == 200
    assert mode() == "ondemand"
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, "eu-west-1a"))[0] == 200
    assert mode() == "spot"
    # and a later single hiccup does not flip it back
    hiccup = v4_heartbeat(instance_id, "eu-west-1a") | {"mode": "ondemand"}
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", hiccup)[0] == 200
    assert mode() == "spot"
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, "eu-west-1a"))[0] == 200
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", hiccup)[0] == 200
    assert mode() == "spot"


def test_a_v4_fleet_booting_together_near_the_agent_quota_registers_every_agent_the_quota_allows(
        admin, make_tenant, monkeypatch):
    """GIVEN a client with max_agents 13 and one agent, and a v4 fleet of 12 more booting together (an ASG or a
    Terraform apply: v4 registers once at start and exits if that fails; no v4 build resends a 409)
    WHEN one registration of the burst is overtaken after each of its counts by another of the fleet landing (as
    many Lambda containers as agents: the slowest of a burst)
    THEN it lands too, and so do the rest: 13 agents (the quota has room for each), and a 14th is 409
    quota_exceeded. Before, the quota's guard was the version of the client row: a registration overtaken counted
    again, and after 8 rounds got 409 ``conflict`` (the v4 agent exited) while the quota still had room."""
    from chalicelib import quotas

    fleet = 12
    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_agents": fleet + 1})[0] == 200
    assert caller.post("/api/agents/register", registration())[0] == 200
    bodies = [v4_registration(new_instance_id(), f"web-{uuid.uuid4().hex[:8]}", "eu-west-1a") for _ in range(fleet)]
    slow, others = bodies[0], list(bodies[1:])
    real_check, answers, inside = quotas.check_agents, {}, []

    def overtaken(*args, **kwargs):
        found = real_check(*args, **kwargs)
        if not inside and others:  # the slow one counted: another of the fleet registers whole before it writes
            inside.append(True)
            body = others.pop(0)
            answers[body["logical_agent_id"]] = caller.post("/api/agents/register", body)
            inside.clear()
        return found

    monkeypatch.setattr(quotas, "check_agents", overtaken)
    answers[slow["logical_agent_id"]] = caller.post("/api/agents/register", slow)
    monkeypatch.undo()
    for body in others:  # the rest of the fleet
        answers[body["logical_agent_id"]] = caller.post("/api/agents/register", body)
    assert [status for status, _ in answers.values()] == [200] * fleet, [r for s, r in answers.values() if s != 200]
    assert len({reply["agent_id"] for _, reply in answers.values()}) == fleet
    assert sum(1 for _ in AgentTable.query(client_id)) == fleet + 1
    status, reply = caller.post("/api/agents/register", v4_registration(new_instance_id(), "one-more", "eu-west-1a"))
    assert_error(status, reply, 409, code="quota_exceeded")


def test_a_v4_agent_whose_account_was_pinned_registers_its_own_switchs_replacement(make_tenant):
    """GIVEN a v4 agent whose AWS account is pinned (a forced unbinding pins a legacy agent's account,
    ``agents.leave_account``; the client then bound it again and re-enabled the agent) and a switch of its instance
    delivered to it (v4 launches the replacement itself, with its instance's credentials: in the same account)
    WHEN the replacement's v4 agent registers under the same logical id, before any switch report (v4 registers on
    boot; under auto-terminate the old one never reports), with no identity document (v4 has none)
    THEN 200: the same agent on the new instance, its account kept, and the switch inferred. Before, a legacy
    registration on an instance not known to be the agent's was 409 ``identity_document_required`` whenever the
    agent had an account: v4 exits on a failed registration, and the agent never registered again."""
    from components.command_tracker import enqueue, new_command

    from chalicelib import bootstrap
    from chalicelib.repositories import agents as agent_repo

    client_id, caller = make_tenant()
    logical, old = f"web-{uuid.uuid4().hex[:8]}", new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    agent_repo.leave_account(agent_repo.require(client_id, agent_id), "111122223333", now_utc())
    status, reply = caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": True})
    assert status == 200, reply
    cmd = new_command(command_id=f"cmd-{uuid.uuid4().hex[:8]}", client_id=client_id, agent_id=agent_id,
                      command_type="switch", priority=75, now=now_utc(), target_mode="ondemand", instance_id=old,
                      terminate_wait_seconds=300)
    enqueue(bootstrap.command_store(), cmd)
    status, polled = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["id"] for c in polled["commands"]] == [cmd.command_id], polled

    new = new_instance_id()
    status, reply = caller.post("/api/agents/register",
                                v4_registration(new, logical, "eu-west-1a") | {"mode": "ondemand"})

    assert status == 200 and reply["agent_id"] == agent_id, reply
    agent = agent_repo.require(client_id, agent_id)
    assert agent.instance_id == new and agent.account_id == "111122223333"
    assert bootstrap.command_store().get(agent_id, cmd.command_id).status.value == "completed"
    # a registration on an instance no switch of the agent launched still proves nothing: 409, as before
    status, reply = caller.post("/api/agents/register", v4_registration(new_instance_id(), logical, "eu-west-1a"))
    assert_error(status, reply, 409, code="identity_document_required")


def test_v4_after_a_switch_to_ondemand_heartbeats_ondemand_on_its_new_instance(make_tenant):
    """GIVEN a v4 agent on spot instance A force-switched to on-demand without a terminate wait (auto-terminate off:
    A and its v4 agent keep running)
    WHEN B's v4 agent registers (``mode: ondemand``) and heartbeats ondemand, A's agent reports the switch, posts the
    result and keeps heartbeating A as spot
    THEN the agent is on B, on-demand, throughout: B's heartbeats are written as ever (they agree with its
    registration), and A's spot heartbeats never bring the spot mode back (the heartbeat's mode check reads the
    agent's instance, not the kept one)."""
    client_id, caller = make_tenant()
    logical, old, new = f"web-{uuid.uuid4().hex[:8]}", new_instance_id(), new_instance_id()
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/settings", {"auto_terminate_enabled": False})[0] == 200
    status, queued = caller.post(f"/api/client/instances/{old}/force-switch", {"target": "ondemand"})
    assert status == 201, queued
    [command] = caller.get(f"/api/agents/{agent_id}/pending-commands")[1]["commands"]
    assert command["target_mode"] == "ondemand" and command["terminate_wait_seconds"] == 0, command

    def row():
        return AgentTable.get(client_id, agent_id, consistent_read=True)

    ondemand_beat = v4_heartbeat(new, "eu-west-1a") | {"mode": "ondemand"}
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1a") | {"mode": "ondemand"})
    assert status == 200 and reply["agent_id"] == agent_id, reply
    for _ in range(2):
        assert caller.post(f"/api/agents/{agent_id}/heartbeat", ondemand_beat)[0] == 200
        assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(old, "eu-west-1a"))[0] == 200
        assert (row().instance_id, row().current_mode) == (new, "ondemand")
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", {
        "old_instance": {"instance_id": old, "instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1a",
                         "ami_id": "ami-12345678", "mode": "spot", "pool_id": "m5.large.eu-west-1a"},
        "new_instance": {"instance_id": new, "instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1a",
                         "ami_id": "ami-12345678", "mode": "ondemand", "pool_id": None},
        "snapshot": {"used": False}, "prices": {"on_demand": 0.107, "old_spot": 0.04, "new_spot": 0.107},
        "timing": {"switch_initiated_at": iso(shifted(-400)), "new_instance_launched_at": iso(shifted(-390)),
                   "new_instance_ready_at": iso(shifted(-100)), "traffic_switched_at": iso(shifted(-98))},
        "trigger": "manual"})
    assert status == 200, reply
    status, reply = caller.post(f"/api/agents/{agent_id}/commands/{command['id']}/executed",
                                {"success": True, "message": "Switch completed"})
    assert status == 200, reply
    for _ in range(2):
        assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(old, "eu-west-1a"))[0] == 200
        assert caller.post(f"/api/agents/{agent_id}/heartbeat", ondemand_beat)[0] == 200
    assert (row().instance_id, row().current_mode, row().status) == (new, "ondemand", "online")
    assert InstanceTable.get(new).mode == "ondemand"
