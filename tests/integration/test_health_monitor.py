"""The health-monitor job against moto: silent agents degrade, then go offline, exactly once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from chalicelib.repositories import agents as agent_repo
from chalicelib.tables import AgentTable, NotificationTable
from tests.conftest import invoke_schedule


def _invoke(api):
    return invoke_schedule(api, "health-monitor")


def _age_heartbeat(client_id, agent_id, seconds):
    row = AgentTable.get(client_id, agent_id)
    row.update(actions=[AgentTable.last_heartbeat_at.set(
        datetime.now(timezone.utc) - timedelta(seconds=seconds))])


def test_silent_agent_goes_degraded_then_offline_with_one_notification(api, tenant_with_agent):
    client_id, caller, agent_id, _ = tenant_with_agent
    # GIVEN an online agent whose last heartbeat is 200 s old
    _age_heartbeat(client_id, agent_id, 200)
    # WHEN the monitor runs THEN it is degraded but still watched
    _invoke(api)
    row = AgentTable.get(client_id, agent_id)
    assert row.status == "degraded" and row.liveness == "live"
    # GIVEN 700 s of silence WHEN the monitor runs twice
    _age_heartbeat(client_id, agent_id, 700)
    _invoke(api)
    _invoke(api)
    # THEN it is offline, out of the live index, and the client got exactly one offline notification
    row = AgentTable.get(client_id, agent_id)
    assert row.status == "offline" and row.liveness is None
    offline = [n for n in NotificationTable.query(client_id) if "offline" in n.message]
    assert len(offline) == 1
    # WHEN it heartbeats again THEN it is online
    status, body = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert status == 200 and body["status"] == "online"


def test_fresh_heartbeat_wins_over_a_concurrent_monitor_decision(api, tenant_with_agent):
    client_id, caller, agent_id, _ = tenant_with_agent
    # GIVEN the monitor read the agent while it was silent
    _age_heartbeat(client_id, agent_id, 700)
    stale = agent_repo.get(client_id, agent_id)
    # WHEN the agent heartbeats before the monitor writes
    caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    # THEN the monitor's conditional write is refused and the agent stays online
    assert agent_repo.set_liveness(stale, "offline", datetime.now(timezone.utc)) is False
    assert AgentTable.get(client_id, agent_id).status == "online"


def test_online_agent_with_recent_heartbeat_is_left_alone(api, tenant_with_agent):
    client_id, _, agent_id, _ = tenant_with_agent
    _invoke(api)
    assert AgentTable.get(client_id, agent_id).status == "online"
