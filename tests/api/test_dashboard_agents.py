"""Client dashboard, agents (issue #13): lists, history, decisions, toggle, settings, the legacy config body,
soft delete with real standby termination; pagination, csv, filters, tenancy, nothing written on a 4xx."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable
from chalicelib.tables.system_events import SystemEventTable
from tests.api._support import unchanged, assert_error, diff_snapshots, pricing_body, snapshot_world
from tests.conftest import registration
from tests.e2e.failover_support import register_agent, state_of

GONE = ("shutting-down", "terminated")


def _register(caller, **overrides):
    body = registration(**overrides)
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    return reply["agent_id"], body



def _all_pages(caller, path, key, limit=1):
    seen, token = [], None
    for _ in range(20):
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&next_token={token}" if token else "")
        status, reply = caller.get(url)
        assert status == 200, reply
        seen += reply[key]
        token = reply["next_token"]
        if not token:
            return seen
    raise AssertionError("pagination did not end")


def _csv(api, caller, path):
    response = api.http.get(path, headers=caller.headers())
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.body.decode())))


def test_agents_list_has_flat_flags_pages_and_skips_deleted(api, make_tenant):
    client_id, caller = make_tenant()
    first, _ = _register(caller, logical_agent_id="a-web", hostname="web-a")
    second, _ = _register(caller, logical_agent_id="b-web", hostname="web-b")
    gone, _ = _register(caller, logical_agent_id="c-web", hostname="web-c")
    assert caller.call("DELETE", f"/api/client/agents/{gone}")[0] == 200

    status, reply = caller.get(f"/api/client/{client_id}/agents")
    assert status == 200, reply
    rows = {r["agent_id"]: r for r in reply["agents"]}
    assert set(rows) == {first, second} and reply["next_token"] is None
    row = rows[first]
    assert row["hostname"] == "web-a" and row["status"] == "online" and row["enabled"] is True
    assert row["terminate_wait_seconds"] == 300 and row["terminate_wait_minutes"] == 5
    assert row["mode"] == "spot" and row["pool_id"] == "m5.large.eu-west-1a" and row["region"] == "eu-west-1"
    for key in ("auto_switch_enabled", "auto_terminate_enabled", "manual_replica_enabled", "replica_count",
                "logical_agent_id", "instance_id", "instance_type", "az", "agent_version", "last_heartbeat_at",
                "config_version"):
        assert key in row
    paged = _all_pages(caller, f"/api/client/{client_id}/agents", "agents")
    assert sorted(r["agent_id"] for r in paged) == sorted([first, second])


def test_agents_csv_is_formula_safe(api, make_tenant):
    client_id, caller = make_tenant()
    agent_id, _ = _register(caller, hostname='=HYPERLINK("http://evil")')
    rows = _csv(api, caller, f"/api/client/{client_id}/agents?format=csv")
    assert [r["agent_id"] for r in rows] == [agent_id]
    assert rows[0]["hostname"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["terminate_wait_minutes"] == "5" and rows[0]["enabled"] == "true"


def test_agent_history_orders_online_offline_deleted_and_pages(make_tenant):
    client_id, caller = make_tenant()
    deleted, _ = _register(caller, logical_agent_id="a-deleted")
    offline, body = _register(caller, logical_agent_id="b-offline")
    online, _ = _register(caller, logical_agent_id="c-online")
    assert caller.call("DELETE", f"/api/client/agents/{deleted}")[0] == 200
    status, reply = caller.post(f"/api/agents/{offline}/termination", {"instance_id": body["instance_id"]})
    assert status == 200, reply

    status, reply = caller.get(f"/api/client/{client_id}/agents/history")
    assert status == 200, reply
    assert [(r["agent_id"], r["status"]) for r in reply["agents"]] == [
        (online, "online"), (offline, "offline"), (deleted, "deleted")]
    paged = _all_pages(caller, f"/api/client/{client_id}/agents/history", "agents", limit=2)
    assert [r["agent_id"] for r in paged] == [online, offline, deleted]
    for token in ("abc", "-1", "9" * 20):
        status, reply = unchanged(lambda token=token: caller.get(f"/api/client/{client_id}/agents/history?next_token={token}"))
        assert_error(status, reply, 400, field="next_token")


def test_agents_decisions_show_the_last_five_and_health(make_tenant, monkeypatch):
    from chalicelib import clock

    client_id, caller = make_tenant()
    agent_id, body = _register(caller)
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                pricing_body(body["instance_id"], "m5.large", {"eu-west-1a": 0.031, "eu-west-1b": 0.029}))
    assert status == 200, reply
    wall, start = clock.now, clock.now() - timedelta(minutes=7)
    for minute in range(6):  # one a minute: a decision asked for again within its minute replaces the last one
        monkeypatch.setattr(clock, "now", lambda at=start + timedelta(minutes=minute): at)
        status, reply = caller.post(f"/api/agents/{agent_id}/decide", {})
        assert status == 200, reply
    monkeypatch.setattr(clock, "now", wall)
    status, reply = caller.get(f"/api/client/{client_id}/agents/decisions")
    assert status == 200, reply
    [row] = reply["agents"]
    assert row["agent_id"] == agent_id and row["status"] == "online"
    assert len(row["decisions"]) == 5 and all(d["source"] == "decide" and d["reason"] for d in row["decisions"])
    stamps = [d["decided_at"] for d in row["decisions"]]
    assert stamps == sorted(stamps, reverse=True)
    assert row["pricing_health"] == "fresh" and row["last_pricing_report_at"]
    assert row["health"]["score"] == 100 and row["health"]["state"] == "online"


def test_toggle_enabled_sets_or_flips(make_tenant):
    _, caller = make_tenant()
    agent_id, _ = _register(caller)
    path = f"/api/client/agents/{agent_id}/toggle-enabled"
    status, reply = caller.post(path, {})
    assert status == 200 and reply["success"] is True and reply["enabled"] is False, reply
    assert caller.get(f"/api/agents/{agent_id}/config")[1]["enabled"] is False
    status, reply = caller.post(path, {"enabled": False})
    assert status == 200 and reply["enabled"] is False
    status, reply = caller.post(path, {"enabled": True})
    assert status == 200 and reply["enabled"] is True
    assert caller.get(f"/api/agents/{agent_id}/config")[1]["enabled"] is True
    for bad in ({"enabled": "yes"}, {"enabled": None}, {"enabled": 1}):
        status, reply = unchanged(lambda bad=bad: caller.post(path, bad))
        assert_error(status, reply, 400, field="enabled")


def test_settings_write_the_legacy_flags_and_keep_modes_exclusive(make_tenant):
    _, caller = make_tenant()
    agent_id, _ = _register(caller)
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})
    assert status == 200 and reply["auto_switch_enabled"] is False, reply
    path = f"/api/client/agents/{agent_id}/settings"
    status, reply = caller.post(path, {"auto_switch_enabled": True, "auto_terminate_enabled": False,
                                       "replica_enabled": True, "replica_count": 1})
    assert status == 200 and reply["success"] is True, reply
    config = reply["config"]
    assert config["auto_switch_enabled"] is True and config["manual_replica_enabled"] is False
    assert config["auto_terminate_enabled"] is False and config["replica_enabled"] is True
    assert config["replica_count"] == 1
    for bad, field in (({}, None), ({"replica_count": 2}, "replica_count"), ({"replica_count": -1}, "replica_count"),
                       ({"auto_switch_enabled": "true"}, "auto_switch_enabled")):
        status, reply = unchanged(lambda bad=bad: caller.post(path, bad))
        assert_error(status, reply, 400, field=field)


def test_config_takes_the_legacy_ui_body(make_tenant):
    client_id, caller = make_tenant()
    agent_id, _ = _register(caller)
    path = f"/api/client/agents/{agent_id}/config"
    status, reply = caller.post(path, {"autoSwitchEnabled": False, "manualReplicaEnabled": True,
                                       "autoTerminateEnabled": False, "terminateWaitMinutes": 7})
    assert status == 200, reply
    assert reply["manual_replica_enabled"] is True and reply["auto_switch_enabled"] is False
    assert reply["auto_terminate_enabled"] is False and reply["terminate_wait_seconds"] == 420
    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert row.config.terminate_wait_seconds == 420
    # the legacy UI's turn-auto-switch-on body turns manual-replica off (exclusive), as the current body does
    status, reply = caller.post(path, {"autoSwitchEnabled": True, "terminateWaitMinutes": 0.5})
    assert status == 200 and reply["manual_replica_enabled"] is False and reply["terminate_wait_seconds"] == 30
    status, reply = caller.post(path, {"auto_terminate_enabled": True, "terminate_wait_seconds": 60})
    assert status == 200 and reply["terminate_wait_seconds"] == 60 and reply["auto_terminate_enabled"] is True


@pytest.mark.parametrize("body,field", [
    ({"autoSwitchEnabled": True, "manualReplicaEnabled": True}, "manual_replica_enabled"),
    ({"terminateWaitMinutes": -1}, "terminateWaitMinutes"),
    ({"terminateWaitMinutes": 100000}, "terminateWaitMinutes"),
    ({"terminateWaitMinutes": True}, "terminateWaitMinutes"),
    ({"terminateWaitMinutes": None}, "terminateWaitMinutes"),
    ({"terminateWaitMinutes": 2, "terminate_wait_seconds": 60}, None),
    ({"autoSwitchEnabled": True, "auto_switch_enabled": False}, None),
    ({"autoSwitchEnabled": "yes"}, "auto_switch_enabled"),
])
def test_config_legacy_body_errors_write_nothing(make_tenant, body, field):
    _, caller = make_tenant()
    agent_id, _ = _register(caller)
    status, reply = unchanged(lambda: caller.post(f"/api/client/agents/{agent_id}/config", body))
    assert_error(status, reply, 400, field=field)


def test_delete_terminates_the_standby_for_real_and_is_idempotent(api, make_tenant):
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"manualReplicaEnabled": True})
    assert status == 200, reply
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201 and standby["instance_id"], standby

    status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")
    assert status == 200, reply
    assert reply == {"success": True, "agent_id": agent_id, "status": "deleted",
                     "terminated_replicas": [standby["replica_id"]]}
    assert state_of(standby["instance_id"]) in GONE
    assert state_of(primary) not in GONE  # the client's own workload keeps running
    assert replica_repo.get(agent_id, standby["replica_id"]).status.value == "terminated"
    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert row.status == "deleted" and row.deleted_at and row.config.enabled is False
    assert row.config.manual_replica_enabled is False and row.current_replica_id is None
    assert agent_repo.get_instance(client_id, primary).is_active is False

    status, again = caller.call("DELETE", f"/api/client/agents/{agent_id}")  # a repeat: the same answer, nothing twice
    assert status == 200 and again["status"] == "deleted" and again["terminated_replicas"] == [standby["replica_id"]]
    assert len([e for e in SystemEventTable.scan(SystemEventTable.agent_id == agent_id)
                if e.event_type in ("agent_deleted", "standby_terminated")]) == 2
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"enabled": True})[0] == 404
    status, listing = caller.get(f"/api/client/{client_id}/agents")
    assert agent_id not in {a["agent_id"] for a in listing["agents"]}
    status, notes = caller.get("/api/notifications")
    assert any(n["kind"] == "agent_deleted" for n in notes["notifications"])


def test_another_tenant_gets_404_and_writes_nothing(make_tenant):
    a_client, a_caller = make_tenant()
    agent_id, _ = _register(a_caller)
    b_client, b_caller = make_tenant()
    before = snapshot_world()
    for method, path, body in (
            ("GET", f"/api/client/{a_client}/agents", None),
            ("GET", f"/api/client/{a_client}/agents/history", None),
            ("GET", f"/api/client/{a_client}/agents/decisions", None),
            ("POST", f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False}),
            ("POST", f"/api/client/agents/{agent_id}/settings", {"auto_switch_enabled": False}),
            ("POST", f"/api/client/agents/{agent_id}/config", {"autoSwitchEnabled": False}),
            ("DELETE", f"/api/client/agents/{agent_id}", None)):
        status, reply = b_caller.call(method, path, body)
        assert_error(status, reply, 404, code="not_found")
        assert agent_id not in str(reply) and a_client not in str(reply)
    assert diff_snapshots(before, snapshot_world()) == {}
    assert a_caller.get(f"/api/agents/{agent_id}/config")[1]["enabled"] is True
    assert b_caller.get(f"/api/client/{b_client}/agents")[1]["agents"] == []


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=x", "limit"), ("format=xls", "format"),
                                         ("next_token=garbage", "next_token")])
def test_bad_list_parameters_are_400(make_tenant, query, field):
    client_id, caller = make_tenant()
    _register(caller)
    status, reply = unchanged(lambda: caller.get(f"/api/client/{client_id}/agents?{query}"))
    assert_error(status, reply, 400, field=field)
