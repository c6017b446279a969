"""Today's tightenings against the legacy clients' own request shapes: the v4/v3.2 agents (``requests`` with
``json=`` and a session ``Content-Type: application/json``, so ASCII JSON: ``ensure_ascii``), and the legacy
dashboard's ``apiClient.jsx`` (``fetch`` with ``JSON.stringify``: UTF-8, non-ASCII as is; ``toggleAgent`` sends
``{enabled}``, ``getNotifications`` adds ``?client_id=&limit=10``, ``markAllNotificationsRead`` sends
``{"client_id": null}`` when no client is selected). Each call is made as that client makes it."""

from __future__ import annotations

import json

import pytest

from chalicelib.jobs.replica_coordinator import reconcile_agent
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables.system_events import SystemEventTable
from components.replica_coordinator import ReplicaType
from tests.api._support import assert_error, diff_snapshots, iso, now_utc, shifted, snapshot_tables
from tests.conftest import registration
from tests.e2e.failover_support import configure, register_agent
from tests.faults import inject


def _events(agent_id: str, event_type: str) -> list:
    return list(SystemEventTable.scan((SystemEventTable.agent_id == agent_id)
                                      & (SystemEventTable.event_type == event_type)))


def test_every_legacy_clients_json_encoding_is_still_read_and_only_utf16_or_32_is_refused(tenant_with_agent):
    """GIVEN request bodies now read as UTF-8 only
    WHEN the v4 agent posts its ASCII JSON (``requests``' ``json=``), the dashboard posts UTF-8 with non-ASCII text
    (``JSON.stringify``), with or without ``; charset=utf-8``, or a tool adds a UTF-8 BOM
    THEN each is read as before (200, the value stored as sent); only a UTF-16 (or 32) body, which no legacy client
    sends, is a 400 ``malformed_json`` that writes nothing."""
    client_id, caller, agent_id, _ = tenant_with_agent
    heartbeat = {"status": "online", "hostname": "hôte-web-1"}
    as_requests = json.dumps(heartbeat).encode("ascii")  # requests' json=: ensure_ascii, so "\\u00f4"
    as_fetch = json.dumps(heartbeat, ensure_ascii=False).encode("utf-8")
    for raw, content_type in ((as_requests, "application/json"), (as_fetch, "application/json"),
                              (as_fetch, "application/json; charset=utf-8"),
                              (b"\xef\xbb\xbf" + as_fetch, "application/json;charset=UTF-8")):
        status, reply = caller.call("POST", f"/api/agents/{agent_id}/heartbeat", raw=raw,
                                    headers={"Content-Type": content_type})
        assert status == 200 and reply["success"] is True, (content_type, raw, reply)
    status, reply = caller.call("POST", f"/api/client/agents/{agent_id}/settings",
                                raw=json.dumps({"auto_terminate_enabled": False}, ensure_ascii=False).encode(),
                                headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and reply["config"]["auto_terminate_enabled"] is False, reply

    before = snapshot_tables()
    for encoding in ("utf-16", "utf-32"):
        status, reply = caller.call("POST", f"/api/agents/{agent_id}/heartbeat",
                                    raw=json.dumps(heartbeat).encode(encoding))
        assert_error(status, reply, 400, code="malformed_json")
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_a_legacy_registration_with_a_non_ascii_hostname_in_utf8_registers(make_tenant):
    """A hostname the dashboard or a hand-written client sends in UTF-8 (not escaped) is kept as sent."""
    _, caller = make_tenant()
    body = registration(hostname="serveur-é-1", agent_version="4.0.0")
    status, reply = caller.call("POST", "/api/agents/register", raw=json.dumps(body, ensure_ascii=False).encode())
    assert status == 200, reply
    status, listed = caller.get(f"/api/client/{reply['client_id']}/agents")
    assert [a["hostname"] for a in listed["agents"]] == ["serveur-é-1"], listed


def test_the_legacy_dashboards_toggle_sent_twice_answers_the_same_and_logs_one_change(tenant_with_agent):
    """GIVEN ``toggle-enabled`` now always going through the config write (a repeat finishes what a first run that
    died left undone)
    WHEN the legacy dashboard disables an agent and the same ``{"enabled": false}`` arrives again (a double click,
    a retried fetch), then enables it
    THEN both disables answer 200 with the same version, the agent stays disabled, one ``agent_config`` event is
    written per real change (none for the repeat), and the enable is a change again."""
    client_id, caller, agent_id, _ = tenant_with_agent
    path = f"/api/client/agents/{agent_id}/toggle-enabled"
    first = caller.post(path, {"enabled": False})
    again = caller.post(path, {"enabled": False})
    assert first[0] == again[0] == 200, (first, again)
    assert first[1] == again[1] == {"success": True, "enabled": False,
                                    "config_version": first[1]["config_version"]}, (first, again)
    status, config = caller.get(f"/api/agents/{agent_id}/config")
    assert status == 200 and config["enabled"] is False, config
    assert len(_events(agent_id, "agent_config")) == 1
    status, reply = caller.post(path, {"enabled": True})
    assert status == 200 and reply["enabled"] is True and reply["config_version"] == first[1]["config_version"] + 1
    assert len(_events(agent_id, "agent_config")) == 2


def test_the_legacy_dashboards_notification_calls_are_served_for_the_tokens_client_only(tenant_with_agent,
                                                                                        make_tenant):
    """``getNotifications(clientId, 10)`` adds ``?client_id=<id>&limit=10`` (read as the token's client: another
    client's id shows nothing of that client), ``markAllNotificationsRead()`` sends ``{"client_id": null}``."""
    client_id, caller, agent_id, _ = tenant_with_agent
    other_id, other = make_tenant()
    assert other.post("/api/agents/register", registration())[0] == 200
    assert caller.post(f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})[0] == 200
    status, own = caller.get(f"/api/notifications?client_id={client_id}&limit=10")
    assert status == 200 and isinstance(own["notifications"], list), own
    status, theirs = caller.get(f"/api/notifications?client_id={other_id}&limit=10")
    assert status == 200 and theirs == own, (own, theirs)
    for body in ({"client_id": None}, {"client_id": client_id}):
        status, reply = caller.post("/api/notifications/mark-all-read", body)
        assert status == 200 and reply["success"] is True, reply


def test_the_legacy_dashboards_query_strings_and_its_config_modals_bare_number(tenant_with_agent):
    """``getSavings(id, 'monthly')``, ``getSwitchHistory(id, instanceId)`` and ``getPriceHistory(id, 7, 'hour')`` add
    query strings the legacy server read or ignored: served (200). Its config modal posts the bare number of minutes
    (``JSON.stringify(30)``), which no object read takes: a 400 that writes nothing."""
    client_id, caller, agent_id, reg = tenant_with_agent
    for path in (f"/api/client/{client_id}/savings?range=monthly",
                 f"/api/client/{client_id}/switch-history?instance_id={reg['instance_id']}",
                 f"/api/client/instances/{reg['instance_id']}/price-history?days=7&interval=hour"):
        status, reply = caller.get(path)
        assert status == 200, (path, reply)
    before = snapshot_tables()
    status, reply = caller.call("POST", f"/api/client/agents/{agent_id}/config", raw="30")
    assert_error(status, reply, 400)
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_the_v4_pending_commands_poll_names_no_instance_and_still_gets_its_commands(tenant_with_agent):
    """v4 (every build) polls ``pending-commands`` without ``?instance_id=`` (only spot-agent sends it, exactly as
    IMDS gave it): the whole-id check leaves that poll, and an exact id, as they were."""
    client_id, caller, agent_id, reg = tenant_with_agent
    status, queued = caller.post(f"/api/client/instances/{reg['instance_id']}/force-switch",
                                 {"target": "pool", "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, queued
    status, pending = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["id"] for c in pending["commands"]] == [queued["command"]["id"]], pending
    assert pending["commands"][0]["target_pool_id"] == "m5.large.eu-west-1b"
    status, again = caller.get(f"/api/agents/{agent_id}/pending-commands?instance_id={reg['instance_id']}")
    assert status == 200 and [c["id"] for c in again["commands"]] == [queued["command"]["id"]], again


@pytest.mark.usefixtures("failover_machine", "fleet_jobs_see_this_test_only")
def test_the_v4_termination_notices_standby_left_unlaunched_by_ec2_is_still_launched_by_the_coordinator(
        make_tenant, monkeypatch):
    """GIVEN v4's termination notice (``create-emergency-replica`` with ``termination-notice``: a standby in the
    agent's slot, replica type ``automatic-termination``, created by the agent's call) whose launch EC2 throttled
    (the row left ``launching`` without an instance "for the coordinator", as the route's answer says)
    WHEN the replica coordinator runs
    THEN it launches that standby, as before today. The coordinator leaves a failover's *replacements* to their
    workflow (its rows, ``created_by`` failover); this row is no workflow's: the workflow plans around a standby
    without an instance and never launches it. Left alone it held the agent's slot unlaunched for 15 minutes,
    offered meanwhile to v4's ``replicas?status=launching`` poll (the last v4 build launches nothing there)."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    configure(client_id, agent_id, auto_switch_enabled=True)
    inject(monkeypatch, "RunInstances", "RequestLimitExceeded", message="slow down")
    status, reply = caller.post(f"/api/agents/{agent_id}/create-emergency-replica", {
        "signal_type": "termination-notice", "instance_id": primary, "termination_time": iso(shifted(120))})
    assert status in (200, 201) and reply["replica_id"] and reply["instance_id"] is None, reply
    standby = replica_repo.get(agent_id, reply["replica_id"])
    assert (standby.replica_type, standby.created_by, standby.status.value) == (
        ReplicaType.TERMINATION.value, "agent", "launching")

    reconcile_agent(agent_repo.get(client_id, agent_id), now_utc())
    launched = replica_repo.get(agent_id, reply["replica_id"])
    assert launched.instance_id and launched.own_launch, launched
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert status == 200 and reply["replica_id"] not in [r["id"] for r in listed["replicas"]], listed
