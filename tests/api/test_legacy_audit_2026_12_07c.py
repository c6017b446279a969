"""Legacy audit of 2026-12-07's last changes (09a21e2..8d2e8c5: an agent's delete closing and releasing every active
instance row of it and finishing on a repeat, ``commands_cancelled`` keyed on the change's time, the held failover
handed to the sentinel again by create-emergency-replica, the rebalance event written before its resolution, the
replica PUT taking over a ready standby, old-shape page tokens, a termination report of an agent on no instance, the
sentinel's idempotency key and id checks, SQS batches cut by size, the pools' stale agent entries pruned, a PUT for a
closed standby, the client delete's ``deleting_at``): what a real, unchanged legacy client (v4.0.0, v3.2.0, the pre-v4
``spot_agent.py``, the legacy React dashboard) meets after them.

Audited, each test one legacy call sequence as the real client makes it:

- the dashboard's agent delete (``DELETE /api/client/agents/{id}``) of a v4 agent that switched with auto-terminate
  off (its old instance kept running) and has a force-switch queued, the delete sent twice (the dashboard's retry):
  HELD (200 both, ``deleted``; both instance rows closed and ``released_at``; the command cancelled; one
  ``commands_cancelled`` and one ``agent_deleted`` notification; the deleted agent's heartbeats 404, as before).
- the agent's legacy process restarting on its own host after that delete (systemd's ``Restart=always`` after a crash,
  a reboot; v4, v3.2 and ``spot_agent.py``): FIXED. The legacy server revived a deleted agent that registered again
  under the same id. Before, the registration on the instance the delete had closed was 409 ``instance_replaced``
  (the delete's close looked like a replacement), so v4 exited at every restart, for good: the agent could only come
  back from another host. Now the row the delete released (``released_at``) is not a replaced instance: the agent is
  revived there (action ``revived``, default config, the row active again and its release cleared). An instance its
  switch kept running, released by the same delete, is still refused (409 ``instance_replaced``): the agent had left
  it.
- the dashboard's ``toggle-enabled {"enabled": false}`` sent twice with a force-switch queued: HELD (one change, the
  command cancelled, one ``commands_cancelled`` notification; v4's poll gets no command).
- v4's termination notice after EventBridge's warning started the failover (``create-emergency-replica``
  ``termination-notice``, then ``termination-imminent``), and a v4 build re-sending the create: HELD (200 ``created``
  false with the running failover's id, 202 ``success``; one workflow started, one interruption event).
- v4's rebalance recommendation (``create-emergency-replica`` ``rebalance-recommendation``, then
  ``rebalance-recommendation``) with EventBridge's copy: HELD (one interruption event, one ``rebalance_recommendation``
  audit event at its detection, the later reports ``duplicate``).
- v4's PUT (``{instance_id, status: 'syncing'}``) of the instance it launched for a standby its poll offered, which the
  client closed meanwhile (manual-replica mode turned off), re-sent, then its ``ready`` report: HELD (409
  ``replica_not_active`` each, JSON; one ``standby_instance_unowned`` notification, the newest the dashboard's
  ``?limit=10`` read shows; nothing else written).
- v4's PUT onto our own-launch standby already ready, re-sent by a build that retries a timed-out call, then its
  ``ready`` report: HELD (200 both, one take-over, ``syncing`` until v4 reports it ready).
- the dashboard's listings given a malformed or foreign ``next_token`` (the active-instances and unread listings now
  translate the old token shape): HELD (400 JSON naming ``next_token``, never a 500).
- a termination report (``POST /api/agents/{id}/termination``) of an agent deleted meanwhile: HELD (404, the agent
  stays ``deleted``: the "no current instance → offline" change never writes a gone agent back).
- EventBridge's warning delivered twice (same account and id) around v4's ``termination-imminent``: HELD (one
  failover; the account-and-id idempotency key answers the redelivery from its record).
- pricing reports of one pool by a v4 agent and a v3.2 agent of two clients, with a third client's entry older than 14
  days: HELD (each dashboard's ``instances/{id}/pricing`` shows its own agent's price; only the stale entry is
  pruned).
- the admin delete of a client (sent twice) whose v4 agent keeps calling: HELD (200, then 404 JSON; the agent's calls
  401).

Left alone (not reachable by a legacy client): the SQS batch cut by size (the sentinel's internal split) and an
event without a text id (EventBridge always sets one).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import bootstrap
from chalicelib.repositories import activity
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable, PoolTable
from chalicelib.tables.instances import InstanceTable
from components.command_tracker.model import CommandStatus
from tests.api._support import assert_error, iso, shifted
from tests.api.test_legacy_v3_bodies import v3_registration
from tests.api.test_legacy_v4_bodies import (
    _switched_keeping_the_old_instance,
    v4_heartbeat,
    v4_registration,
)
from tests.api.test_live_instances import assert_live_key_kept
from tests.api.test_replicas import agent_launched, config, put
from tests.conftest import new_instance_id
from tests.e2e.failover_support import deliver, register_agent, warning

ReplicaStatus = replica_repo.ReplicaStatus


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _kinds(caller, client_id: str) -> list[str]:
    """The notifications' kinds as the legacy dashboard reads them (``?client_id=&limit=10``), newest first."""
    status, reply = caller.get(f"/api/notifications?client_id={client_id}&limit=10")
    assert status == 200, reply
    return [n["kind"] for n in reply["notifications"]]


def _registered(caller, body: dict) -> str:
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    return reply["agent_id"]


# --- 1. the dashboard's agent delete, sent twice ---------------------------------------------------------------------


def test_the_dashboards_delete_sent_twice_closes_releases_and_tells_once(make_tenant):
    """GIVEN a v4 agent that switched A → B with auto-terminate off (A kept running) and a force-switch of B queued
    WHEN the dashboard deletes the agent, and sends the delete again THEN 200 ``deleted`` both times, A and B closed
    and released, the command cancelled, one ``commands_cancelled`` and one ``agent_deleted`` notification; the
    v4 agents on A and B heartbeat into a 404."""
    client_id, caller, agent_id, _, old, new = _switched_keeping_the_old_instance(make_tenant)
    status, queued = caller.post(f"/api/client/instances/{new}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1c"})
    assert status == 201, queued
    for _ in range(2):
        status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")
        assert status == 200 and reply["status"] == "deleted", reply
    for instance_id in (old, new):
        row = InstanceTable.get(instance_id, consistent_read=True)
        assert (row.is_active, row.released_at is not None) == (False, True), instance_id
    assert_live_key_kept(client_id)
    kinds = _kinds(caller, client_id)
    assert kinds.count("commands_cancelled") == 1 and kinds.count("agent_deleted") == 1, kinds
    status, reply = caller.get(f"/api/client/{client_id}/agents/history")
    assert status == 200, reply
    for instance_id, az in ((new, "eu-west-1b"), (old, "eu-west-1a")):
        status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(instance_id, az))
        assert_error(status, reply, 404, field="agent_id")


# --- 2. the legacy agent restarting on its host after the delete ---------------------------------------------------


def test_v4_restarting_on_its_host_after_the_delete_revives_the_agent(make_tenant):
    """GIVEN a v4 agent on B (its switch kept A running) deleted by the dashboard WHEN its v4 process on B restarts and
    registers THEN revived under the same id on B (BEFORE: 409 ``instance_replaced`` at every restart), B active
    again and no longer released; its heartbeats 200. The v4 process on the kept A restarting is still 409."""
    client_id, caller, agent_id, logical, old, new = _switched_keeping_the_old_instance(make_tenant)
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    status, reply = caller.post("/api/agents/register", v4_registration(new, logical, "eu-west-1b"))
    assert status == 200 and (reply["agent_id"], reply["action"]) == (agent_id, "revived"), reply
    row = InstanceTable.get(new, consistent_read=True)
    assert (row.is_active, row.released_at, row.agent_id) == (True, None, agent_id)
    agent = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert (agent.status, agent.instance_id, agent.deleted_at) == ("online", new, None)
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(new, "eu-west-1b"))[0] == 200
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert_error(status, reply, 409, code="instance_replaced")
    assert InstanceTable.get(old, consistent_read=True).is_active is False
    assert AgentTable.get(client_id, agent_id, consistent_read=True).instance_id == new
    assert_live_key_kept(client_id)


def test_v32_restarting_on_its_host_after_the_delete_revives_the_agent(make_tenant):
    """v3.2 (no ``mode``) deleted by the dashboard, then its process restarting on the same instance: revived
    (BEFORE: 409 ``instance_replaced``)."""
    client_id, caller = make_tenant()
    instance_id, logical = new_instance_id(), f"v3-{uuid.uuid4().hex[:8]}"
    agent_id = _registered(caller, v3_registration(instance_id, logical))
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    status, reply = caller.post("/api/agents/register", v3_registration(instance_id, logical))
    assert status == 200 and (reply["agent_id"], reply["action"]) == (agent_id, "revived"), reply
    assert agent_repo.instance_row(instance_id).is_active is True
    assert_live_key_kept(client_id)


def test_spot_agent_py_restarting_on_its_host_after_the_delete_revives_the_agent(api, make_tenant):
    """spot_agent.py (``X-Client-Token``, no logical id: it is named by its instance) deleted, then restarting on the
    same instance: revived as the same agent (BEFORE: 409 ``instance_replaced``), still running no commands."""
    from tests.api.test_legacy_stub_bodies import stub_agent, stub_registration

    client_id, caller, stub, agent_id, instance_id = stub_agent(api, make_tenant)
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    status, reply = stub.post("/api/agents/register", stub_registration(instance_id))
    assert status == 200 and (reply["agent_id"], reply["action"]) == (agent_id, "revived"), reply
    assert AgentTable.get(client_id, agent_id, consistent_read=True).runs_commands is False
    assert_live_key_kept(client_id)


def test_a_deleted_agents_instance_replaced_before_its_delete_is_still_refused(make_tenant):
    """The revival is only on the instance the agent ran on when deleted: the instance a v4 switch (auto-terminate
    on) left, closed before the delete, stays 409 ``instance_replaced``."""
    client_id, caller = make_tenant()
    old, new, logical = new_instance_id(), new_instance_id(), f"web-{uuid.uuid4().hex[:8]}"
    agent_id = _registered(caller, v4_registration(old, logical, "eu-west-1a"))
    assert _registered(caller, v4_registration(new, logical, "eu-west-1b")) == agent_id  # moved: A closed
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    status, reply = caller.post("/api/agents/register", v4_registration(old, logical, "eu-west-1a"))
    assert_error(status, reply, 409, code="instance_replaced")
    assert AgentTable.get(client_id, agent_id, consistent_read=True).status == "deleted"


# --- 3. the dashboard's disable, sent twice --------------------------------------------------------------------------


def test_the_dashboards_disable_sent_twice_cancels_and_tells_once(tenant_with_agent):
    """GIVEN a force-switch queued WHEN the dashboard sends ``toggle-enabled {"enabled": false}`` twice THEN 200 both,
    the command cancelled, one ``commands_cancelled`` notification; v4's poll gets no command."""
    client_id, caller, agent_id, body = tenant_with_agent
    status, queued = caller.post(f"/api/client/instances/{body['instance_id']}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    for _ in range(2):
        status, reply = caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})
        assert status == 200, reply
    assert _kinds(caller, client_id).count("commands_cancelled") == 1
    command = bootstrap.command_store().get(agent_id, queued["command"]["id"])
    assert command.status is CommandStatus.CANCELLED, command
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and reply["commands"] == [], reply


# --- 4. v4's termination notice after EventBridge's warning ----------------------------------------------------------


def test_v4s_notice_after_eventbridges_warning_joins_the_one_failover(api, make_tenant, started):
    """GIVEN EventBridge's warning started the failover of v4's spot primary WHEN v4's notice check calls
    create-emergency-replica (a retrying build twice) and termination-imminent THEN 200 ``created`` false with the
    running failover's id each, 202 ``success``; one workflow started, one interruption event."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    first = deliver(api, "sentinel-interruption", warning(primary))
    assert first["action"] == "failover_started", first
    body = {"signal_type": "termination-notice", "instance_id": primary, "termination_time": iso(shifted(110))}
    for _ in range(2):
        status, reply = caller.post(f"/api/agents/{agent_id}/create-emergency-replica", body)
        assert status == 200 and reply["created"] is False, reply
        assert reply["workflow"]["interruption_id"] == first["interruption_id"], reply
    status, reply = caller.post(f"/api/agents/{agent_id}/termination-imminent",
                                {"instance_id": primary, "termination_time": body["termination_time"],
                                 "detected_at": iso(shifted(-5))})
    assert status == 202 and reply["success"] is True, reply
    assert reply["interruption_id"] == first["interruption_id"], reply
    assert len(started) == 1, started
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    assert [e["interruption_id"] for e in listing["interruptions"]] == [first["interruption_id"]], listing


def test_eventbridges_warning_delivered_twice_around_v4s_notice_is_one_failover(api, make_tenant, started):
    """The same EventBridge event (account and id) redelivered after v4's termination-imminent: answered from its
    idempotency record; one workflow, one interruption event."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    event = warning(primary)
    first = deliver(api, "sentinel-interruption", event)
    status, reply = caller.post(f"/api/agents/{agent_id}/termination-imminent",
                                {"instance_id": primary, "termination_time": iso(shifted(110))})
    assert status == 202 and reply["success"] is True, reply
    again = deliver(api, "sentinel-interruption", event)
    assert again["interruption_id"] == first["interruption_id"], (first, again)
    assert len(started) == 1, started
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    assert len(listing["interruptions"]) == 1, listing


# --- 5. v4's rebalance recommendation ------------------------------------------------------------------------------


def test_v4s_rebalance_reported_twice_and_eventbridges_copy_is_one_event_logged_once(api, make_tenant):
    """GIVEN a v4 agent on a spot primary WHEN its rebalance check calls create-emergency-replica
    (``rebalance-recommendation``), then rebalance-recommendation, and EventBridge's copy arrives THEN one
    interruption event, one ``rebalance_recommendation`` audit event, the later reports ``duplicate``."""
    from tests.e2e.failover_support import rebalance

    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    status, reply = caller.post(f"/api/agents/{agent_id}/create-emergency-replica",
                                {"signal_type": "rebalance-recommendation", "instance_id": primary})
    assert status in (200, 201), reply
    status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation",
                                {"instance_id": primary, "detected_at": iso(shifted(-2))})
    assert status == 200 and reply["success"] is True and reply["action"] == "duplicate", reply
    assert "risk_score" in reply and reply["reason"], reply
    deliver(api, "sentinel-rebalance", rebalance(primary))
    status, listing = caller.get(f"/api/agents/{agent_id}/interruptions")
    assert len(listing["interruptions"]) == 1, listing
    logged = [e for e in activity.recent_events(_now() + timedelta(minutes=1), limit=500)
              if e.agent_id == agent_id and e.event_type == "rebalance_recommendation"]
    assert len(logged) == 1, logged


# --- 6. v4's PUT for a standby closed meanwhile --------------------------------------------------------------------


def test_v4s_put_for_a_standby_closed_meanwhile_is_409_and_the_client_is_told_once(tenant_with_agent):
    """GIVEN a manual standby waiting for an instance, offered to v4's poll WHEN the client turns manual-replica off
    (the standby closed) and v4 then PUTs the instance it launched, re-sends the PUT, and reports it ``ready`` THEN
    409 ``replica_not_active`` JSON each, one ``standby_instance_unowned`` notification (the newest), nothing else."""
    client_id, caller, agent_id, _ = tenant_with_agent
    config(caller, agent_id, manual_replica_enabled=True)
    agent = agent_repo.require(client_id, agent_id)
    now = _now()
    row = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                              lifecycle="spot", pool_id="m5.large.eu-west-1b", az="eu-west-1b",
                              created_by="replica-coordinator", now=now, take_slot=True)
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert [r["id"] for r in listed["replicas"]] == [row.replica_id], listed
    config(caller, agent_id, manual_replica_enabled=False)
    theirs = agent_launched()
    path = f"/api/agents/{agent_id}/replicas/{row.replica_id}"
    for _ in range(2):
        status, reply = put(caller, path, {"instance_id": theirs, "status": "syncing"})
        assert_error(status, reply, 409, code="replica_not_active")
    status, reply = caller.post(f"{path}/status", {"status": "ready"})
    assert status == 409 and reply["error"], reply
    kinds = _kinds(caller, client_id)
    assert kinds[0] == "standby_instance_unowned" and kinds.count("standby_instance_unowned") == 1, kinds
    assert agent_repo.instance_row(theirs) is None
    assert replica_repo.get(agent_id, row.replica_id).instance_id is None
    assert_live_key_kept(client_id)


# --- 7. v4's PUT onto our ready standby, re-sent --------------------------------------------------------------------


def test_v4s_put_onto_our_ready_standby_resent_then_ready_is_one_take_over(make_tenant):
    """GIVEN v4's poll offered a standby our launch attached first and made ready WHEN v4 PUTs its instance, a retrying
    build sends the PUT again, then v4 reports ``ready`` THEN 200 each, one take-over (ours terminated), ``syncing``
    after the PUTs (``ready_at`` cleared) and ``ready`` after the report."""
    from tests.api.test_legacy_audit_2026_12_07b import _raced_standby, _taken_over

    client_id, caller, agent_id, ours, path = _raced_standby(make_tenant)
    replica_repo.transition(ours, ReplicaStatus.READY, _now())
    theirs = agent_launched("us-east-1", "us-east-1c")
    for _ in range(2):
        status, reply = put(caller, path, {"instance_id": theirs, "status": "syncing"})
        assert status == 200 and (reply["instance_id"], reply["status"]) == (theirs, "syncing"), reply
    assert replica_repo.get(agent_id, ours.replica_id).ready_at is None
    _taken_over(client_id, agent_id, ours, theirs)
    status, reply = caller.post(f"{path}/status", {"status": "ready"})
    assert status == 200 and reply["status"] == "ready", reply
    _taken_over(client_id, agent_id, ours, theirs, status="ready")


# --- 8. the dashboard's listings given a bad token ------------------------------------------------------------------


@pytest.mark.parametrize("token", ["not-a-token", "eyJmb28iOiAiYmFyIn0", "%%%", "e30"])
def test_a_malformed_next_token_on_the_translating_listings_is_a_400(make_tenant, token):
    """The active-instances and unread listings (which now translate the old token shape) answer a malformed token
    400 JSON naming ``next_token``, never a 500."""
    client_id, caller = make_tenant()
    for path in (f"/api/client/{client_id}/instances?status=active&next_token={token}",
                 f"/api/notifications?unread=true&next_token={token}"):
        status, reply = caller.get(path)
        assert_error(status, reply, 400, field="next_token")


# --- 9. a termination report of a deleted agent --------------------------------------------------------------------


def test_a_termination_report_of_a_deleted_agent_leaves_it_deleted(tenant_with_agent):
    """GIVEN the dashboard deleted the agent WHEN its agent (which keeps running) reports its instance terminating
    THEN 404 JSON and the agent stays ``deleted`` (never written back ``offline``)."""
    client_id, caller, agent_id, body = tenant_with_agent
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    status, reply = caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": body["instance_id"]})
    assert_error(status, reply, 404)
    assert AgentTable.get(client_id, agent_id, consistent_read=True).status == "deleted"


# --- 10. pricing reports of one pool by two clients' legacy agents ---------------------------------------------------


def test_two_clients_legacy_price_reports_of_one_pool_keep_each_own_price(make_tenant):
    """GIVEN a pool (a type the spot-prices job does not price) holding a third client's entry 15 days old WHEN a v4
    agent of one client and a v3.2 agent of another report it THEN each dashboard's instance pricing shows its own
    agent's price for the pool, and only the stale entry is gone."""
    from tests.api.test_legacy_v3_bodies import v3_pricing_report

    itype = f"t{uuid.uuid4().hex[:8]}.large"
    pool_id = f"{itype}.eu-west-1b"
    a_id, a = make_tenant()
    b_id, b = make_tenant()
    a_instance, b_instance = new_instance_id(), new_instance_id()
    a_agent = _registered(a, v4_registration(a_instance, f"v4-{uuid.uuid4().hex[:6]}", "eu-west-1a")
                          | {"instance_type": itype})
    b_agent = _registered(b, v3_registration(b_instance, f"v3-{uuid.uuid4().hex[:6]}", instance_type=itype))
    status, reply = a.post(f"/api/agents/{a_agent}/pricing-report", {
        "instance": {"instance_id": a_instance, "instance_type": itype, "region": "eu-west-1", "az": "eu-west-1a",
                     "mode": "spot", "pool_id": f"{itype}.eu-west-1a"},
        "pricing": {"on_demand_price": 0.2, "current_spot_price": 0.061,
                    "spot_pools": [{"pool_id": pool_id, "instance_type": itype, "az": "eu-west-1b",
                                    "price": 0.061}], "collected_at": iso(_now())}})
    assert status == 200 and reply["pools"] == 1, reply
    stale = {"price": "0.5", "at": (_now() - timedelta(days=15)).isoformat(), "recent": []}
    PoolTable(pool_id).update(actions=[PoolTable.agent_prices["cl-gone"].set(stale)])
    status, reply = b.post(f"/api/agents/{b_agent}/pricing-report", v3_pricing_report(
        b_instance, itype, "eu-west-1a", "spot", {"eu-west-1b": 0.072}))
    assert status == 200, reply
    entries = PoolTable.get(pool_id, consistent_read=True).agent_prices.as_dict()
    assert set(entries) == {a_id, b_id}, entries
    for caller, instance_id, price in ((a, a_instance, 0.061), (b, b_instance, 0.072)):
        status, reply = caller.get(f"/api/client/instances/{instance_id}/pricing")
        assert status == 200, reply
        shown = {p["pool_id"]: p for p in reply["pools"]}
        assert pool_id in shown and float(shown[pool_id]["price"]) == price, reply


# --- 11. the admin delete of a client whose v4 agent keeps calling --------------------------------------------------


def test_the_admin_delete_sent_twice_while_the_v4_agent_calls(admin, tenant_with_agent):
    """The dashboard's admin delete (with the admin key), sent twice, while the client's v4 agent keeps heartbeating:
    200 then 404 JSON; the agent's calls 401."""
    client_id, caller, agent_id, body = tenant_with_agent
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200 and reply["success"] is True, reply
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert_error(status, reply, 404)
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", v4_heartbeat(body["instance_id"], "eu-west-1a"))
    assert_error(status, reply, 401)
