"""A Lambda that dies after any DynamoDB write of a request, then the same request again.

GIVEN a prepared world (a tenant, its agent, a delivered command, a standby ...) and a request R
WHEN R runs once on a fresh world, counting its DynamoDB writes (PutItem, UpdateItem, DeleteItem,
     TransactWriteItems, BatchWriteItem) — and, for each k, R runs on another fresh, identical world where the
     k-th write completes and then the process dies (``Crash``, a BaseException no handler or middleware catches),
     then R is sent again, unchanged, as a legacy agent or our own agent retries it
THEN the retry answers as the clean run did (or the documented duplicate answer), never a 500, and the world's
     change (every table and EC2: ``snapshot_world``) equals the clean run's once the ids and times that
     legitimately differ between worlds are normalised.

A crash that is never retried must leave nothing a later normal request cannot recover from (``test_*_not_retried``):
a command counted on its agent row as active that is not, a slot taken by no replica, a claim with no event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

import pytest

from tests.api._support import iso, shifted, snapshot_world, utc
from tests.conftest import account_instance, new_instance_id, registration
from tests.crash_support import WRITES, Crash, audit_split, dynamodb_writes, effect, explain, named

pytestmark = pytest.mark.slow  # ~90 s: a fresh world per write of each request, twice (2 cores)

# --- scenarios ------------------------------------------------------------------------------------------------------

@dataclass
class World:
    """One prepared world: who calls, the ids to name in the comparison, anything the request needs."""

    caller: Any
    ids: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    prepare: Callable[..., World]
    request: Callable[[World], tuple[int, Any]]
    # the documented duplicate answer, from the clean run's (normalised): a retry may answer either
    duplicate: Callable[[Any, Any], Any] = lambda clean, retry: clean
    # audit event types that log each request received (a retry is one more request, logged as what it found):
    # compared only for being there at least once
    per_request: frozenset[str] = frozenset()
    marks: tuple = ()
    # the request ends the agent (a delete, a suspension): nothing of it heartbeats or polls after it
    ends_agent: bool = False
    # statuses a retry may answer instead of the clean run's (a create found done: 200 for 201; a delete found done:
    # 404), its body then being the documented duplicate answer or, for an error, any clean 4xx JSON error
    duplicate_status: frozenset[int] = frozenset()
    # a crash that is never retried leaves nothing to check: the tenant is half gone and nothing of it runs
    strands_checked: bool = True


def _v4_registration(instance_id: str, logical: str, az: str = "eu-west-1a", **extra) -> dict:
    return registration(**{"instance_id": instance_id, "logical_agent_id": logical, "az": az,
                           "agent_version": "4.0.0", "hostname": "ip-10-0-0-7", **extra})


def _delivered_switch(caller, agent_id: str, instance_id: str, target: dict) -> str:
    status, queued = caller.post(f"/api/client/instances/{instance_id}/force-switch", target)
    assert status == 201, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    commands = pending if isinstance(pending, list) else pending["commands"]  # a v3.x agent gets the bare list
    assert status == 200 and [c["status"] for c in commands] == ["executing"], pending
    return queued["command"]["id"]


def _agent_world(make_tenant, *, version: str = "4.0.0", config: dict | None = None) -> World:
    client_id, caller = make_tenant()
    old, logical = new_instance_id(), f"web-{uuid.uuid4().hex[:8]}"
    status, reply = caller.post("/api/agents/register", _v4_registration(old, logical, agent_version=version))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    if config:
        status, reply = caller.post(f"/api/client/agents/{agent_id}/config", config)
        assert status == 200, reply
    return World(caller, {"client": client_id, "agent": agent_id, "old": old, "logical": logical})


def _switching_world(make_tenant, *, version: str = "4.0.0", config: dict | None = None) -> World:
    """An agent on ``old`` whose forced switch to eu-west-1b is delivered (executing), and the new instance id."""
    world = _agent_world(make_tenant, version=version, config=config)
    world.ids["command"] = _delivered_switch(world.caller, world.ids["agent"], world.ids["old"],
                                             {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    world.ids["new"] = new_instance_id()
    return world


def _v4_switch_body(world: World) -> dict:
    """The v4 agent's report (the legacy server's names: ``pricing``, ``timing.initiated_at``), sent once the old
    instance is terminated (auto-terminate on, the default)."""
    return {"old_instance": {"instance_id": world.ids["old"], "instance_type": "m5.large", "region": "eu-west-1",
                             "az": "eu-west-1a", "ami_id": "ami-12345678", "mode": "spot",
                             "pool_id": "m5.large.eu-west-1a"},
            "new_instance": {"instance_id": world.ids["new"], "instance_type": "m5.large", "region": "eu-west-1",
                             "az": "eu-west-1b", "ami_id": "ami-12345678", "mode": "spot",
                             "pool_id": "m5.large.eu-west-1b"},
            "snapshot": {"used": False}, "pricing": {"on_demand": 0.107, "old_spot": 0.04, "new_spot": 0.031},
            "timing": {"initiated_at": world.extra["t0"], "instance_launched_at": world.extra["t1"],
                       "instance_ready_at": world.extra["t2"], "traffic_switched_at": world.extra["t2"],
                       "old_terminated_at": world.extra["t3"]},
            "trigger": "manual"}


def _our_switch_body(world: World) -> dict:
    """spot-agent's report: the canonical names, the command it ran, no termination (it reports as soon as the
    replacement runs)."""
    return {"command_id": world.ids["command"],
            "old_instance": {"instance_id": world.ids["old"], "instance_type": "m5.large", "az": "eu-west-1a",
                             "mode": "spot"},
            "new_instance": {"instance_id": world.ids["new"], "instance_type": "m5.large", "region": "eu-west-1",
                             "az": "eu-west-1b", "mode": "spot", "pool_id": "m5.large.eu-west-1b"},
            "prices": {"on_demand": 0.107, "old_spot": 0.04, "new_spot": 0.031},
            "timing": {"switch_initiated_at": world.extra["t0"], "new_instance_launched_at": world.extra["t1"],
                       "new_instance_ready_at": world.extra["t2"]},
            "trigger": "manual", "success": True}


_TIMES = {}


def _times() -> dict[str, str]:
    """The switch's times: one set for the whole test (every world reports the same switch)."""
    if not _TIMES:
        _TIMES.update(t0=iso(shifted(-900)), t1=iso(shifted(-880)), t2=iso(shifted(-600)), t3=iso(shifted(-60)))
    return dict(_TIMES)


def _prepare_switch(version: str):
    def prepare(make_tenant):
        world = _switching_world(make_tenant, version=version)
        world.extra.update(_times())
        # the switch ran after its command was created: the server places a switch reported as started before its
        # command at the command (tests/api/test_agent_clock_skew.py), and these times are the first world's
        from chalicelib.tables.commands import CommandTable

        CommandTable(world.ids["agent"], world.ids["command"]).update(
            actions=[CommandTable.created_at.set(utc(world.extra["t0"]) - timedelta(minutes=1))])
        return world
    return prepare


def _switch_report(body_of):
    def request(world):
        return world.caller.post(f"/api/agents/{world.ids['agent']}/switch-report", body_of(world))
    return request


def _duplicate_switch(clean, retry):
    return {**clean, "duplicate": True, "commands_completed": retry.get("commands_completed")}


def _prepare_result(make_tenant):
    return _switching_world(make_tenant, version="5.0.0")


def _result(body):
    def request(world):
        return world.caller.post(f"/api/agents/{world.ids['agent']}/commands/{world.ids['command']}/executed", body)
    return request


def _replayed_result(clean, retry):
    return {**clean, "replay": True}


def _prepare_new_agent(make_tenant):
    client_id, caller = make_tenant()
    world = World(caller, {"client": client_id, "old": new_instance_id(), "logical": f"web-{uuid.uuid4().hex[:8]}"})
    from components.agent_identity import agent_id_for
    world.ids["agent"] = agent_id_for(client_id, world.ids["logical"])
    return world


def _register(world):
    return world.caller.post("/api/agents/register", _v4_registration(world.ids["old"], world.ids["logical"]))


def _prepare_v4_replacement(make_tenant):
    """A v4 agent whose forced switch (terminate wait 300 s) is delivered: its host terminates itself in that
    wait, so the replacement's registration is the only news of the switch (``_unreported_switch``)."""
    world = _switching_world(make_tenant, version="4.0.0",
                             config={"auto_terminate_enabled": True, "terminate_wait_seconds": 300})
    return world


def _register_replacement(world):
    return world.caller.post("/api/agents/register", _v4_registration(world.ids["new"], world.ids["logical"],
                                                                      az="eu-west-1b"))


def _same_registration(clean, retry):
    """A retried registration answers as the first did, its action included (``repeats_registration``)."""
    return clean


def _register_restart(world):
    """The v4 process on ``old`` restarted (systemd, a reboot) while it held the delivered switch: it registers again
    on the same instance (``abandon_on_restart`` times the switch out and tells the client)."""
    return world.caller.post("/api/agents/register", _v4_registration(world.ids["old"], world.ids["logical"]))


def _prepare_termination(make_tenant):
    return _agent_world(make_tenant)


def _terminate(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/termination",
                             {"instance_id": world.ids["old"], "reason": "spot interruption",
                              "termination_time": _times()["t3"]})


def _prepare_force_switch(make_tenant):
    return _agent_world(make_tenant, version="5.0.0")


def _force_switch(world):
    return world.caller.post(f"/api/client/instances/{world.ids['old']}/force-switch",
                             {"target": "pool", "pool_id": "m5.large.eu-west-1b"})


def _prepare_promotion(make_tenant):
    """A manual-replica agent with a standby its agent launched (attached, syncing)."""
    world = _agent_world(make_tenant, version="5.0.0", config={"manual_replica_enabled": True})
    world.ids["new"] = account_instance("eu-west-1b")
    status, reply = world.caller.post(f"/api/agents/{world.ids['agent']}/replicas",
                                      {"instance_id": world.ids["new"], "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, reply
    world.ids["replica"] = reply["replica_id"]
    return world


def _promote(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/replicas/{world.ids['replica']}/promote", {})


def _duplicate_promotion(clean, retry):
    return {**clean, "action": "duplicate"}


def _prepare_real_primary(make_tenant, **config):
    """A us-east-1 agent on a real primary with fresh prices of its own instance type (tests/e2e/failover_support)."""
    from tests.e2e.failover_support import register_agent

    client_id, caller, agent_id, instance_id, itype = register_agent(make_tenant, **config)
    return World(caller, {"client": client_id, "agent": agent_id, "old": instance_id, "itype": itype})


def _prepare_manual_standby(make_tenant):
    """A manual-replica agent on a real primary whose server-launched standby runs."""
    world = _prepare_real_primary(make_tenant, manual_replica_enabled=True, auto_switch_enabled=False)
    status, reply = world.caller.post(f"/api/agents/{world.ids['agent']}/replicas", {})
    assert status == 201, reply
    world.ids.update(replica=reply["replica_id"], new=reply["instance_id"])
    return world


def _enable_manual(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/manual-replica/enable", {})


def _disable_manual(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/manual-replica/disable", {})


def _create_standby(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/replicas", {})


def _delete_standby(world):
    return world.caller.call("DELETE", f"/api/agents/{world.ids['agent']}/replicas/{world.ids['replica']}")


def _pricing_report(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/pricing-report", {
        "instance": {"instance_id": world.ids["old"], "instance_type": world.ids["itype"], "region": "us-east-1"},
        "pricing": {"on_demand_price": 0.192, "collected_at": world.extra["collected"],
                    "spot_pools": [{"pool_id": f"{world.ids['itype']}.us-east-1{z}", "price": p}
                                   for z, p in (("a", 0.041), ("b", 0.036), ("c", 0.052))]}})


def _prepare_pricing(make_tenant):
    world = _prepare_real_primary(make_tenant)
    world.extra["collected"] = _times()["t3"]
    return world


def _duplicate_prices(clean, retry):
    """The data valve's answer to points it already holds: each one an exact duplicate, none written."""
    return {**clean, "points_written": retry.get("points_written"), "duplicates": retry.get("duplicates")}


def _prepare_v3_result(make_tenant):
    """A v3.2 agent (no mode, its command ids posted by mark-command-executed) whose forced switch is delivered."""
    world = _switching_world(make_tenant, version="3.2.0")
    return world


def _mark_executed(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/mark-command-executed",
                             {"command_id": world.ids["command"]})


def _prepare_queued_switch(make_tenant):
    """An agent with a force-switch queued, not yet delivered."""
    world = _agent_world(make_tenant, version="5.0.0")
    status, queued = world.caller.post(f"/api/client/instances/{world.ids['old']}/force-switch",
                                       {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    world.ids["command"] = queued["command"]["id"]
    return world


def _heartbeat(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/heartbeat",
                             {"status": "online", "instance_id": world.ids["old"]})


def _termination_notice(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/termination-imminent",
                             {"instance_id": world.ids["old"], "termination_time": world.extra["deadline"]})


def _prepare_notice(make_tenant):
    world = _prepare_real_primary(make_tenant)
    world.extra["deadline"] = iso(shifted(120))
    return world


def _duplicate_signal(clean, retry):
    return {**clean, "action": "duplicate", "status": retry.get("status"), "message": retry.get("message")}


def _change_config(world):
    return world.caller.post(f"/api/client/agents/{world.ids['agent']}/config",
                             {"auto_terminate_enabled": False, "min_savings_percent": 5, "max_switches_per_day": 2})


def _disable(world):
    """The dashboard's toggle: the agent disabled, so its queued switch is cancelled (it would wait for ever)."""
    return world.caller.post(f"/api/client/agents/{world.ids['agent']}/toggle-enabled", {"enabled": False})


# The admin caller of the running test (the admin routes' scenarios): set by ``_admin_of_this_test``.
_ADMIN: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _admin_of_this_test(admin):
    _ADMIN["caller"] = admin
    yield
    _ADMIN.clear()


def _delete_agent(world):
    """The dashboard's agent delete: its standby terminated, the agent ``deleted``, the client told."""
    return world.caller.call("DELETE", f"/api/client/agents/{world.ids['agent']}")


def _prepare_rebalance(make_tenant):
    world = _prepare_real_primary(make_tenant)
    world.extra["detected"] = iso(shifted(-30))
    return world


def _rebalance(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/rebalance-recommendation",
                             {"instance_id": world.ids["old"], "detected_at": world.extra["detected"]})


def _emergency_replica(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/create-emergency-replica",
                             {"signal_type": "termination-notice", "instance_id": world.ids["old"],
                              "termination_time": world.extra["deadline"]})


def _prepare_v4_launching(make_tenant):
    """A v4 agent in manual-replica mode that announced the standby it is launching (``status: launching``)."""
    world = _agent_world(make_tenant, config={"manual_replica_enabled": True})
    world.ids["new"] = account_instance("eu-west-1b")
    status, reply = world.caller.post(f"/api/agents/{world.ids['agent']}/replicas", {
        "instance_id": world.ids["new"], "replica_type": "manual", "parent_instance_id": world.ids["old"],
        "pool_id": "m5.large.eu-west-1b", "status": "launching"})
    assert status in (200, 201), reply
    world.ids["replica"] = reply.get("replica_id") or reply["id"]
    return world


def _v4_replica_syncing(world):
    return world.caller.call("PUT", f"/api/agents/{world.ids['agent']}/replicas/{world.ids['replica']}",
                             {"instance_id": world.ids["new"], "status": "syncing"})


def _standby_ready(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/replicas/{world.ids['replica']}/status",
                             {"status": "ready"})


def _cleanup_report(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/cleanup-report", {
        "timestamp": _times()["t3"], "snapshots": {"deleted": ["snap-0123456789abcdef0"], "failed": [],
                                                   "cutoff_date": _times()["t0"]},
        "amis": {"deleted_amis": [], "deleted_snapshots": [], "failed": [], "cutoff_date": _times()["t0"]}})


def _extend(world):
    return world.caller.post(f"/api/agents/{world.ids['agent']}/commands/{world.ids['command']}/extend", {})


def _prepare_unread(make_tenant):
    """A client with three unread notifications."""
    from chalicelib.repositories import activity

    world = _agent_world(make_tenant, version="5.0.0")
    for k in range(3):
        activity.notify(world.ids["client"], "agent_status", f"note {k}", shifted(-60 * (k + 1)),
                        agent_id=world.ids["agent"])
    return world


def _mark_all_read(world):
    return world.caller.post("/api/notifications/mark-all-read", {})


def _duplicate_rebalance(clean, retry):
    """A delivery of a recommendation already resolved: ``duplicate``, with what the first one decided."""
    return {**retry, "success": clean["success"]} if retry.get("action") == "duplicate" else clean


def _duplicate_emergency(clean, retry):
    """The emergency replica the first run created (``created: False``) or, past its claim, the failover it
    started (``workflow.action: duplicate``)."""
    same = retry.get("created") is False or (retry.get("workflow") or {}).get("action") == "duplicate"
    return retry if same and retry.get("urgency") == clean["urgency"] else clean


def _duplicate_client_delete(clean, retry):
    """What the retry itself deleted and terminated (the first run's share is gone already)."""
    return {**clean, "deleted": retry.get("deleted"), "terminated_instances": retry.get("terminated_instances")}


def _suspend_client(world):
    return _ADMIN["caller"].post(f"/api/admin/clients/{world.ids['client']}/status", {"status": "inactive"})


def _delete_client(world):
    return _ADMIN["caller"].call("DELETE", f"/api/admin/clients/{world.ids['client']}")


SCENARIOS = [
    Scenario("switch-report-v4", _prepare_switch("4.0.0"), _switch_report(_v4_switch_body), _duplicate_switch),
    Scenario("switch-report-ours", _prepare_switch("5.0.0"), _switch_report(_our_switch_body), _duplicate_switch),
    Scenario("result-success", _prepare_result, _result({"success": True, "message": "switched"}), _replayed_result),
    Scenario("result-refused", _prepare_result,
             _result({"success": False, "message": "launch refused", "error_code": "InsufficientInstanceCapacity"}),
             _replayed_result),
    Scenario("register-new-agent", _prepare_new_agent, _register, _same_registration,
             per_request=frozenset({"agent_registered"})),
    Scenario("register-v4-replacement", _prepare_v4_replacement, _register_replacement, _same_registration,
             per_request=frozenset({"agent_registered"})),
    Scenario("register-v4-restart", _prepare_v4_replacement, _register_restart, _same_registration,
             per_request=frozenset({"agent_registered"})),
    Scenario("termination", _prepare_termination, _terminate, per_request=frozenset({"agent_termination"})),
    Scenario("force-switch", _prepare_force_switch, _force_switch, lambda clean, retry: {**clean, "duplicate": True}),
    Scenario("replica-promote", _prepare_promotion, _promote, _duplicate_promotion,
             per_request=frozenset({"manual_promotion"})),
    Scenario("mark-command-executed-v3", _prepare_v3_result, _mark_executed, _replayed_result),
    Scenario("pricing-report", _prepare_pricing, _pricing_report, _duplicate_prices),
    Scenario("manual-replica-enable", lambda make_tenant: _prepare_real_primary(make_tenant), _enable_manual),
    Scenario("standby-create", lambda make_tenant: _prepare_real_primary(
        make_tenant, manual_replica_enabled=True, auto_switch_enabled=False), _create_standby),
    Scenario("standby-delete", _prepare_manual_standby, _delete_standby),
    # manual-replica mode off: its standby retired and the mode's end logged, whichever write the first run died after
    Scenario("manual-replica-disable", _prepare_manual_standby, _disable_manual),
    Scenario("heartbeat-delivering", _prepare_queued_switch, _heartbeat),
    Scenario("termination-imminent", _prepare_notice, _termination_notice, _duplicate_signal),
    # a config change whose Lambda died after its write: the retry changes nothing, and finishes its audit event
    Scenario("agent-config", lambda make_tenant: _agent_world(make_tenant, version="5.0.0"), _change_config),
    Scenario("agent-disable", _prepare_queued_switch, _disable),
    # its standby retired, the agent deleted, the client told: a retry finishes what the first run left, once
    Scenario("agent-delete", _prepare_manual_standby, _delete_agent, ends_agent=True),
    Scenario("rebalance-recommendation", _prepare_rebalance, _rebalance, _duplicate_rebalance),
    Scenario("create-emergency-replica", _prepare_notice, _emergency_replica, _duplicate_emergency,
             duplicate_status=frozenset({200})),
    Scenario("replica-put-v4", _prepare_v4_launching, _v4_replica_syncing),
    Scenario("standby-ready", _prepare_manual_standby, _standby_ready),
    # the legacy server logged every cleanup report it received, a retry included
    Scenario("cleanup-report", lambda make_tenant: _agent_world(make_tenant), _cleanup_report,
             per_request=frozenset({"cleanup_report"})),
    Scenario("command-extend", _prepare_result, _extend),
    Scenario("mark-all-read", _prepare_unread, _mark_all_read,
             lambda clean, retry: {**clean, "updated": retry.get("updated")}),  # what this request found unread
    # each admin request is logged as what it found
    Scenario("admin-suspend-client", _prepare_manual_standby, _suspend_client,
             per_request=frozenset({"client_status"}), ends_agent=True),
    # the event's counts are of the run that finished the rows; it is written once (the delete's start time)
    Scenario("admin-delete-client", _prepare_manual_standby, _delete_client, _duplicate_client_delete,
             per_request=frozenset({"client_deleted"}), ends_agent=True, duplicate_status=frozenset({404}),
             strands_checked=False),
]


@pytest.fixture(autouse=True)
def executions_recorded(monkeypatch):
    """Step Functions' StartExecution recorded, not run: the workflow's own crash handling is tested with the
    state machine (tests/e2e); here the API's writes are compared, and a running execution would change the
    tables while they are read."""
    from chalicelib.aws import stepfunctions

    started = []
    monkeypatch.setattr(stepfunctions, "start", lambda name, payload: started.append(name) or f"arn:exec:{name}")
    return started


def _run(scenario: Scenario, make_tenant, crash_at: int | None):
    """Prepare a world, run the request (crashing after write ``crash_at``, then sending it again); returns the
    world, the writes of the first attempt, the answer that counts and the normalised effect."""
    world = scenario.prepare(make_tenant)
    before = snapshot_world()
    with dynamodb_writes(crash_at) as writes:
        try:
            answer = scenario.request(world)
        except Crash:
            answer = None
    if crash_at is not None:
        assert answer is None, f"no crash at write {crash_at} of {writes}"
        answer = scenario.request(world)
    return world, writes, answer, effect(before, snapshot_world(), world.ids)


def _named(answer, world: World):
    """An answer with the world's ids named and times blanked (as ``effect`` does)."""
    return named(answer, world.ids)


@pytest.mark.parametrize("scenario", [pytest.param(s, marks=s.marks) for s in SCENARIOS], ids=lambda s: s.name)
def test_a_crash_after_any_write_then_the_same_request_ends_as_one_clean_request(scenario, make_tenant):
    world, writes, (status, clean_body), clean = _run(scenario, make_tenant, None)
    assert 200 <= status < 300, clean_body
    assert writes, "the request writes nothing"
    _CLEAN_WRITES[scenario.name] = writes
    clean_body = _named(clean_body, world)
    clean, clean_logged = audit_split(clean, scenario.per_request)
    failures = []
    for k in range(1, len(writes) + 1):
        retry_world, _, (retry_status, retry_body), crashed = _run(scenario, make_tenant, k)
        retry_body = _named(retry_body, retry_world)
        if retry_status != status and retry_status not in scenario.duplicate_status:
            failures.append(f"k={k} ({writes[k - 1]}): retry answered {retry_status} {retry_body}")
            continue
        if retry_status >= 400:
            if not (isinstance(retry_body, dict) and retry_body.get("error")):
                failures.append(f"k={k} ({writes[k - 1]}): retry answered {retry_status} {retry_body}")
        elif retry_body not in (clean_body, scenario.duplicate(clean_body, retry_body)):
            failures.append(f"k={k} ({writes[k - 1]}): retry answered {retry_body}, clean {clean_body}")
        crashed, logged = audit_split(crashed, scenario.per_request)
        if set(logged) != set(clean_logged):
            failures.append(f"k={k} ({writes[k - 1]}): audit events {dict(logged)}, clean {dict(clean_logged)}")
        if crashed != clean:
            failures.append(f"k={k} ({writes[k - 1]}):\n{explain(clean, crashed)}")
    assert not failures, f"writes of a clean run: {writes}\n" + "\n".join(failures)


_CLEAN_WRITES: dict[str, list[str]] = {}  # the writes of each scenario's clean run, once counted


def _stranded(world: World) -> list[str]:
    """What a crash may have left that no later request repairs: the agent row's count of active commands against
    the commands it counts, its standby slot against its replicas, its signal claims against their events."""
    from chalicelib.repositories import replicas as replica_repo
    from chalicelib.tables.agents import AgentTable
    from chalicelib.tables.commands import CommandTable
    from chalicelib.tables.interruptions import InterruptionTable, SignalClaimTable

    found = []
    try:
        agent = AgentTable.get(world.ids["client"], world.ids["agent"], consistent_read=True)
    except AgentTable.DoesNotExist:
        return found
    commands = list(CommandTable.query(agent.agent_id, consistent_read=True))
    counted = sum(1 for c in commands if c.counted and c.status in ("pending", "executing"))
    if agent.active_commands is not None and int(agent.active_commands) != counted:
        found.append(f"agent counts {agent.active_commands} active commands, {counted} are")
    if agent.current_replica_id:
        replica = replica_repo.get(agent.agent_id, agent.current_replica_id)
        if replica is None or not replica.active:
            found.append(f"slot held by {agent.current_replica_id}, which is {replica and replica.status}")
    for instance_id in {world.ids.get("old"), world.ids.get("new")} - {None}:
        for claim in SignalClaimTable.scan(SignalClaimTable.signal_key.startswith(f"{instance_id}#")):
            try:
                InterruptionTable.get(world.ids["client"], claim.interruption_id, consistent_read=True)
            except InterruptionTable.DoesNotExist:
                found.append(f"claim {claim.signal_key} names no event ({claim.interruption_id})")
    return found


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.strands_checked], ids=lambda s: s.name)
def test_a_crash_after_any_write_that_is_never_retried_strands_nothing(scenario, make_tenant):
    """GIVEN a request that crashed after its k-th write and is never sent again
    WHEN the service and the agent carry on (the replica coordinator's next run; the agent's next heartbeat and poll,
         from the instance it runs on now)
    THEN nothing is stranded (``_stranded``), and those requests answer 200."""
    writes = _CLEAN_WRITES.get(scenario.name) or _run(scenario, make_tenant, None)[1]
    failures = []
    for k in range(1, len(writes) + 1):
        world = scenario.prepare(make_tenant)
        with dynamodb_writes(k), pytest.raises(Crash):
            scenario.request(world)
        from chalicelib.tables.agents import AgentTable

        try:
            instance_id = AgentTable.get(world.ids["client"], world.ids["agent"], consistent_read=True).instance_id
        except AgentTable.DoesNotExist:
            continue  # the crash came before the agent existed: nothing of it to strand
        # the replica coordinator's run of the minute (what frees a slot a closed standby still holds)
        from chalicelib.clock import now
        from chalicelib.jobs.replica_coordinator import reconcile_agent
        from chalicelib.repositories import agents as agent_repo

        reconcile_agent(agent_repo.require(world.ids["client"], world.ids["agent"], allow_deleted=True), now())
        if scenario.ends_agent:  # an agent deleted or suspended neither heartbeats nor polls again
            failures += [f"k={k} ({writes[k - 1]}): {what}" for what in _stranded(world)]
            continue
        agent_path = f"/api/agents/{world.ids['agent']}"
        for status, body in (world.caller.post(f"{agent_path}/heartbeat", {"status": "online",
                                                                             "instance_id": instance_id}),
                             world.caller.get(f"{agent_path}/pending-commands?instance_id={instance_id}")):
            if status != 200:
                failures.append(f"k={k} ({writes[k - 1]}): the next request answered {status} {body}")
        failures += [f"k={k} ({writes[k - 1]}): {what}" for what in _stranded(world)]
    assert not failures, "\n".join(failures)


# --- a crash between a write and what follows it, then the same request (focused) --------------------------------------

def _events(agent_id: str, event_type: str) -> list:
    from chalicelib.tables.system_events import SystemEventTable

    return list(SystemEventTable.scan((SystemEventTable.agent_id == agent_id)
                                      & (SystemEventTable.event_type == event_type)))


def _crash_after(world: World, request, op: str, table: str) -> list[str]:
    """Run ``request`` and die right after its first DynamoDB ``op`` on ``table`` (a transaction: one of its items');
    returns the writes made, the last one being it."""
    from botocore.client import BaseClient

    original, seen = BaseClient._make_api_call, []

    def dies_after(client, operation, params):
        result = original(client, operation, params)
        if client.meta.service_model.service_name == "dynamodb" and operation in WRITES:
            tables = [next(iter(item.values()))["TableName"] for item in params.get("TransactItems", [])] \
                or [params.get("TableName", "")]
            seen.append(f"{operation}:{','.join(t.rsplit('-', 1)[-1] for t in tables)}")
            if operation == op and any(t.endswith(f"-{table}") for t in tables):
                raise Crash(f"crashed after {seen[-1]}")
        return result

    BaseClient._make_api_call = dies_after
    try:
        with pytest.raises(Crash):
            request(world)
    finally:
        BaseClient._make_api_call = original
    return seen


def test_a_config_change_that_died_after_its_write_gets_its_audit_event_on_the_retry_once(make_tenant):
    """GIVEN a config change whose Lambda died right after the agent row's write (before its audit event)
    WHEN the same request is sent again (it finds the config already held: nothing to write), and once more
    THEN the change's ``agent_config`` event is written by the retry, once, at the change's time and version."""
    world = _agent_world(make_tenant, version="5.0.0")
    _crash_after(world, _change_config, "UpdateItem", "agents")
    assert _events(world.ids["agent"], "agent_config") == []  # the crash lost it
    for _ in range(2):
        status, reply = _change_config(world)
        assert status == 200 and reply["config_version"] == 2, reply
    [event] = _events(world.ids["agent"], "agent_config")
    assert event.metadata["config_version"] == 2
    from chalicelib.tables.agents import AgentTable

    row = AgentTable.get(world.ids["client"], world.ids["agent"], consistent_read=True)
    assert (row.config_changed_version, row.config_changed_at) == (2, event.created_at)


def test_a_config_change_repeated_without_a_crash_writes_one_audit_event(make_tenant):
    world = _agent_world(make_tenant, version="5.0.0")
    for _ in range(3):
        status, reply = _change_config(world)
        assert status == 200 and reply["config_version"] == 2, reply
    assert len(_events(world.ids["agent"], "agent_config")) == 1


def test_a_disable_that_died_after_its_write_cancels_the_queued_switch_and_logs_it_on_the_retry(make_tenant):
    """GIVEN an agent with a switch queued, disabled by the dashboard's toggle whose Lambda died after the config
    write WHEN the toggle is sent again THEN the queued switch is cancelled (a disabled agent is delivered nothing:
    it would wait for ever) and the ``agent_config`` event written, once."""
    world = _prepare_queued_switch(make_tenant)
    _crash_after(world, _disable, "UpdateItem", "agents")
    for _ in range(2):
        status, reply = _disable(world)
        assert status == 200 and reply["enabled"] is False, reply
    from chalicelib.tables.commands import CommandTable

    [row] = [c for c in CommandTable.query(world.ids["agent"], consistent_read=True)
             if c.command_id == world.ids["command"]]
    assert row.status == "cancelled"
    assert len(_events(world.ids["agent"], "agent_config")) == 1


def test_a_config_change_ending_manual_replica_that_died_after_its_write_retires_the_standby_on_the_retry(
        make_tenant):
    """GIVEN a manual-replica agent whose standby runs, and a config change to auto-switch (manual-replica off)
    whose Lambda died right after the config write (before the standby was retired)
    WHEN the same request is sent again THEN the standby is terminated (EC2 included) and named in the answer:
    nothing else retires a manual standby of an agent no longer in that mode, so it would run, billed, for good.
    A third request answers the same and does nothing twice."""
    from chalicelib.repositories import replicas as replica_repo
    from tests.e2e.failover_support import state_of

    world = _prepare_manual_standby(make_tenant)

    def to_auto_switch(w):
        return w.caller.post(f"/api/client/agents/{w.ids['agent']}/config", {"auto_switch_enabled": True})

    _crash_after(world, to_auto_switch, "UpdateItem", "agents")
    assert replica_repo.get(world.ids["agent"], world.ids["replica"]).active  # the crash left it running
    status, reply = to_auto_switch(world)
    assert status == 200 and reply["terminated_replicas"] == [world.ids["replica"]], reply
    assert not replica_repo.get(world.ids["agent"], world.ids["replica"]).active
    assert state_of(world.ids["new"]) in {"shutting-down", "terminated"}
    status, reply = to_auto_switch(world)  # once more: the same answer, nothing done twice
    assert status == 200 and reply["terminated_replicas"] == [world.ids["replica"]], reply
    assert len(_events(world.ids["agent"], "agent_config")) == 1
    assert len(_events(world.ids["agent"], "standby_terminated")) == 1


def test_a_no_op_config_request_after_another_routes_change_logs_nothing(make_tenant):
    """GIVEN manual-replica mode turned on by the config route, then off by its own route (its own event)
    WHEN the config route is sent the config it now holds THEN no ``agent_config`` event is added: the version
    it holds is not a config route's change."""
    world = _agent_world(make_tenant, version="5.0.0", config={"manual_replica_enabled": True})
    status, reply = world.caller.post(f"/api/agents/{world.ids['agent']}/manual-replica/disable", {})
    assert status == 200 and reply["config_version"] == 3, reply
    status, reply = world.caller.post(f"/api/client/agents/{world.ids['agent']}/config",
                                      {"manual_replica_enabled": False})
    assert status == 200 and reply["config_version"] == 3, reply
    assert len(_events(world.ids["agent"], "agent_config")) == 1  # the enable's


def test_a_v4_replacement_registration_that_died_after_its_transaction_records_the_inferred_switch_once(
        make_tenant):
    """GIVEN a v4 agent's forced switch delivered, and its replacement's registration whose Lambda died right after
    the registration's transaction (before the inferred switch was recorded)
    WHEN the same registration is sent again, and once more
    THEN the switch is recorded once (inferred), its command completed, its ``switch_inferred`` event and the
    client's ``switch`` notification (when its saving is known) written once (``_finish_unreported_switch``)."""
    from chalicelib.tables.commands import CommandTable
    from chalicelib.tables.notifications import NotificationTable
    from chalicelib.tables.switches import SwitchTable

    world = _prepare_v4_replacement(make_tenant)
    writes = _crash_after(world, _register_replacement, "TransactWriteItems", "agents")
    assert len(writes) <= 2, writes  # the registration's transaction (after the rate limit's count)
    assert [s for s in SwitchTable.query(world.ids["client"]) if s.agent_id == world.ids["agent"]] == []
    for _ in range(2):
        status, reply = _register_replacement(world)
        assert status == 200, reply
    [switch] = [s for s in SwitchTable.query(world.ids["client"], consistent_read=True)
                if s.agent_id == world.ids["agent"]]
    assert switch.inferred and (switch.old_instance_id, switch.new_instance_id) == (world.ids["old"],
                                                                                     world.ids["new"])
    [command] = [c for c in CommandTable.query(world.ids["agent"], consistent_read=True)
                 if c.command_id == world.ids["command"]]
    assert command.status == "completed"
    assert len(_events(world.ids["agent"], "switch_inferred")) == 1
    notified = [n for n in NotificationTable.query(world.ids["client"]) if n.kind == "switch"]
    assert len(notified) == (0 if switch.hourly_savings is None else 1)  # no notification without a saving known


def test_a_poll_that_timed_out_a_command_and_died_still_told_the_client_once(make_tenant, monkeypatch):
    """GIVEN a delivered switch whose agent stayed silent past every lease, and a poll that finds it at its last
    attempt (timed out, the client to be told) and dies right after the command's write
    WHEN the agent polls again
    THEN the client has been told once (``command_timed_out`` written in the command's own transaction: the next
    poll no longer finds the command leased, so a notice written after it would be lost)."""
    import sys

    from chalicelib import bootstrap
    from chalicelib.api import agents as agents_api
    from chalicelib.clock import now as server_now

    world = _agent_world(make_tenant, version="5.0.0")
    caller, agent_id = world.caller, world.ids["agent"]
    status, queued = caller.post(f"/api/client/instances/{world.ids['old']}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    at = {"now": server_now()}
    monkeypatch.setattr(agents_api, "utcnow", lambda: at["now"])
    monkeypatch.setattr(sys.modules["app"], "scheduled_time", lambda event: at["now"])

    def poll():
        status, body = caller.get(f"/api/agents/{agent_id}/pending-commands")
        assert status == 200, body
        return body["commands"]

    for _ in range(bootstrap.lease_policy().max_attempts):
        [leased] = poll()
        at["now"] = utc(leased["lease_expires_at"]) + timedelta(seconds=1)
    _crash_after(world, lambda w: caller.get(f"/api/agents/{agent_id}/pending-commands"), "TransactWriteItems",
                 "commands")
    assert poll() == []
    status, body = caller.get("/api/notifications")
    told = [n for n in body["notifications"] if n["kind"] == "command_timed_out" and n["agent_id"] == agent_id]
    assert len(told) == 1 and queued["command"]["id"] in told[0]["message"], body
