"""The health-monitor job against moto: silent agents degrade, then go offline, exactly once; the live index
is keyed on a heartbeat bucket, so a routine heartbeat does not move the agent in it, and the monitor still
finds exactly the agents silent past its threshold."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from components.sentinel import HEARTBEAT_BUCKET_S, HealthThresholds, heartbeat_bucket

from chalicelib.repositories import agents as agent_repo
from chalicelib.tables import AgentTable, NotificationTable
from tests.conftest import invoke_schedule, registration

DEGRADED, OFFLINE = HealthThresholds().degraded_after_s, HealthThresholds().offline_after_s


def _invoke(api, now=None):
    return invoke_schedule(api, "health-monitor", now)


def _heartbeat_at(client_id, agent_id, at):
    """The row as a heartbeat at ``at`` leaves it: its time and that time's bucket."""
    AgentTable(client_id, agent_id).update(actions=[AgentTable.last_heartbeat_at.set(at),
                                                    AgentTable.heartbeat_bucket.set(heartbeat_bucket(at))])


def _age_heartbeat(client_id, agent_id, seconds):
    _heartbeat_at(client_id, agent_id, datetime.now(timezone.utc) - timedelta(seconds=seconds))


def test_silent_agent_goes_degraded_then_offline_with_one_notification(api, tenant_with_agent):
    client_id, caller, agent_id, _ = tenant_with_agent
    # GIVEN an online agent silent a little longer than the degraded threshold
    _age_heartbeat(client_id, agent_id, DEGRADED + 20)
    # WHEN the monitor runs THEN it is degraded but still watched
    _invoke(api)
    row = AgentTable.get(client_id, agent_id)
    assert row.status == "degraded" and row.liveness == "live"
    # GIVEN a silence past the offline threshold WHEN the monitor runs twice
    _age_heartbeat(client_id, agent_id, OFFLINE + 100)
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
    _age_heartbeat(client_id, agent_id, OFFLINE + 100)
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


def _run_time() -> datetime:
    """A monitor run time (whole seconds, as the schedule's event carries) whose cutoff lies inside its bucket,
    at least 2 s from either edge."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    while not 2 <= ((now - timedelta(seconds=DEGRADED)) - heartbeat_bucket(now - timedelta(seconds=DEGRADED))
                    ).total_seconds() <= HEARTBEAT_BUCKET_S - 3:
        now += timedelta(seconds=3)
    return now


def test_the_monitor_finds_exactly_the_agents_silent_past_its_threshold(api, make_tenant):
    """GIVEN three agents whose heartbeats are 1 s before the degraded cutoff, 1 s after it (both in the
    cutoff's own heartbeat bucket) and a bucket before it WHEN the monitor runs THEN the first and the last
    are degraded and the one that heartbeated after the cutoff stays online."""
    client_id, caller = make_tenant()
    ids = {}
    for name in ("just-silent", "just-alive", "long-silent"):
        status, reply = caller.post("/api/agents/register", registration(logical_agent_id=name))
        assert status == 200, reply
        ids[name] = reply["agent_id"]
    now = _run_time()
    cutoff = now - timedelta(seconds=DEGRADED)
    _heartbeat_at(client_id, ids["just-silent"], cutoff - timedelta(seconds=1))
    _heartbeat_at(client_id, ids["just-alive"], cutoff + timedelta(seconds=1))
    _heartbeat_at(client_id, ids["long-silent"], cutoff - timedelta(seconds=HEARTBEAT_BUCKET_S))
    assert heartbeat_bucket(cutoff - timedelta(seconds=1)) == heartbeat_bucket(cutoff + timedelta(seconds=1))
    _invoke(api, now)
    status = {name: AgentTable.get(client_id, agent_id).status for name, agent_id in ids.items()}
    assert status == {"just-silent": "degraded", "just-alive": "online", "long-silent": "degraded"}


def test_every_heartbeat_writes_the_bucket_of_its_own_time(tenant_with_agent):
    """GIVEN an agent WHEN it heartbeats (quick path) and changes its status (full path) THEN each write leaves
    the indexed bucket equal to the bucket of ``last_heartbeat_at`` (so the monitor's bucket query cannot miss
    it)."""
    client_id, caller, agent_id, _ = tenant_with_agent
    for status in ("online", "online", "disabled", "online"):
        assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": status})[0] == 200
        row = AgentTable.get(client_id, agent_id)
        assert row.status == status and row.heartbeat_bucket == heartbeat_bucket(row.last_heartbeat_at)
        assert (row.liveness == "live") == (status == "online")
