"""Agent registration: idempotent identity, migration, revival, legacy bodies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from components.agent_identity import agent_id_for

from chalicelib.tables.agents import AgentTable
from chalicelib.tables.instances import InstanceTable
from tests.api._support import assert_error, diff_snapshots, snapshot_tables, walk
from tests.conftest import new_instance_id, registration

DEFAULT_CONFIG = {"enabled": True, "auto_switch_enabled": True, "auto_terminate_enabled": True,
                  "terminate_wait_seconds": 300, "manual_replica_enabled": False, "replica_enabled": False,
                  "replica_count": 0, "min_savings_percent": 0, "risk_threshold": 1.0,
                  "max_switches_per_day": 3, "max_switches_per_week": 10, "min_pool_duration_hours": 0,
                  "handover": "none", "eip_allocation_id": None, "target_group_arn": None, "target_port": None,
                  "instance_types": None, "type_requirements": None, "allowed_instance_types": None}


def _register(caller, body):
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    return reply


def test_first_registration_creates_the_agent_with_default_config(make_tenant):
    """GIVEN a new logical id WHEN it registers THEN action created, derived id, default config, online."""
    client_id, caller = make_tenant()
    body = registration()
    reply = _register(caller, body)
    assert reply["action"] == "created" and reply["client_id"] == client_id
    assert reply["agent_id"] == agent_id_for(client_id, body["logical_agent_id"])
    config = {k: v for k, v in reply["config"].items() if k not in ("agent_id", "config_version")}
    assert config == DEFAULT_CONFIG and reply["config"]["config_version"] == 1
    row = AgentTable.get(client_id, reply["agent_id"])
    assert row.status == "online" and row.instance_id == body["instance_id"] and row.current_mode == "spot"
    assert row.current_pool_id == "m5.large.eu-west-1a" and int(row.instance_count) == 1
    instance = InstanceTable.get(body["instance_id"])
    assert instance.client_id == client_id and instance.agent_id == reply["agent_id"] and instance.is_active


def test_registering_twice_is_idempotent(make_tenant):
    """GIVEN a registered agent WHEN the same body is sent again THEN same agent id, action refreshed."""
    client_id, caller = make_tenant()
    body = registration()
    first = _register(caller, body)
    second = _register(caller, {**body, "agent_version": "5.0.1", "hostname": "web-1b"})
    assert second["agent_id"] == first["agent_id"] and second["action"] == "refreshed"
    rows = list(AgentTable.by_logical_id.query(client_id))
    assert [r.agent_id for r in rows] == [first["agent_id"]]
    row = AgentTable.get(client_id, rows[0].agent_id)  # the listing index holds keys and status only
    assert row.agent_version == "5.0.1" and row.hostname == "web-1b" and int(row.instance_count) == 1
    assert second["config"]["config_version"] == first["config"]["config_version"]


def test_a_repeated_registration_answers_as_the_first_until_the_agent_heartbeats(make_tenant):
    """GIVEN a new agent's registration answered ``created`` WHEN the same request comes again before the agent's
    first heartbeat (a retry: the answer was lost, or the Lambda died after its write) THEN it answers ``created``
    again; once the agent has heartbeated the same request is a restart: ``refreshed``."""
    _, caller = make_tenant()
    body = registration()
    first = _register(caller, body)
    again = _register(caller, body)
    assert (first["action"], again["action"]) == ("created", "created")
    assert again["agent_id"] == first["agent_id"] and again["config"] == first["config"]
    assert caller.post(f"/api/agents/{first['agent_id']}/heartbeat", {"status": "online"})[0] == 200
    assert _register(caller, body)["action"] == "refreshed"


def test_a_restart_on_the_running_primary_keeps_its_run_and_its_switch(make_tenant):
    """GIVEN an agent that switched to B (B's row: installed at the switch's start, its prices and switch time)
    WHEN its agent on B registers again (a restart, or the repeat of a registration whose Lambda died)
    THEN B's row still starts at the switch and keeps what the switch recorded (the savings roll-ups integrate an
    instance from ``installed_at``: a restart must not drop the run before it)."""
    client_id, caller = make_tenant()
    body = registration()
    agent_id = _register(caller, body)["agent_id"]
    new = new_instance_id()
    started = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", {
        "old_instance": {"instance_id": body["instance_id"], "instance_type": "m5.large", "az": "eu-west-1a",
                         "mode": "spot"},
        "new_instance": {"instance_id": new, "instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1b",
                         "mode": "spot", "pool_id": "m5.large.eu-west-1b"},
        "prices": {"on_demand": 0.107, "old_spot": 0.04, "new_spot": 0.031},
        "timing": {"switch_initiated_at": started.strftime("%Y-%m-%dT%H:%M:%SZ")}})
    assert status == 200, reply
    switched = InstanceTable.get(new, consistent_read=True)
    assert switched.installed_at == started and switched.last_switch_at
    reply = _register(caller, {**body, "instance_id": new, "az": "eu-west-1b"})
    assert reply["action"] == "refreshed", reply
    row = InstanceTable.get(new, consistent_read=True)
    assert (row.installed_at, row.last_switch_at, row.spot_price, row.ondemand_price) == (
        switched.installed_at, switched.last_switch_at, switched.spot_price, switched.ondemand_price)
    assert row.is_active and row.agent_id == agent_id and row.updated_at > switched.updated_at


def test_a_restart_on_a_promoted_standby_keeps_it_a_promoted_standby(make_tenant):
    """GIVEN an agent whose primary is a standby the product launched and promoted (its row names its replica, EC2's
    lifecycle, the launch as ``installed_at`` and the promotion as ``last_switch_at``) WHEN its agent registers on it
    (it does after every promotion) THEN the row still names its replica and lifecycle, so the savings roll-up counts
    its baseline from the promotion, not from the standby's launch. (Kept ``installed_at`` without its replica id,
    the demo's week counted 100 standby hours as workload hours: 66.0 % of on-demand instead of 73.2 %.)"""
    from chalicelib.jobs.savings_rollup import _baseline
    from chalicelib.tables.agents import AgentTable

    client_id, caller = make_tenant()
    body = registration()
    agent_id = _register(caller, body)["agent_id"]
    promoted, launched, at = new_instance_id(), datetime(2026, 1, 1, tzinfo=timezone.utc), \
        datetime(2026, 1, 1, 6, tzinfo=timezone.utc)
    InstanceTable(promoted, client_id=client_id, agent_id=agent_id, instance_type=body["instance_type"],
                  region=body["region"], az=body["az"], mode="spot", lifecycle="spot", role="primary",
                  replica_id="rep-promoted", is_active=True, installed_at=launched, updated_at=at,
                  last_switch_at=at).save()
    AgentTable(client_id, agent_id).update(actions=[AgentTable.instance_id.set(promoted)])
    assert _register(caller, {**body, "instance_id": promoted})["action"] == "refreshed"
    row = InstanceTable.get(promoted, consistent_read=True)
    assert (row.replica_id, row.lifecycle, row.installed_at, row.last_switch_at) == (
        "rep-promoted", "spot", launched, at)
    assert _baseline(row) == (True, at)


def test_new_instance_migrates_the_agent(make_tenant):
    """GIVEN an agent on instance 1 WHEN it registers from instance 2 THEN migrated, old row inactive, count 2."""
    client_id, caller = make_tenant()
    body = registration()
    first = _register(caller, body)
    new_id = new_instance_id()
    second = _register(caller, {**body, "instance_id": new_id, "az": "eu-west-1c"})
    assert second["agent_id"] == first["agent_id"] and second["action"] == "migrated"

    old_row, new_row = InstanceTable.get(body["instance_id"]), InstanceTable.get(new_id)
    assert old_row.is_active is False and old_row.terminated_at is not None
    assert new_row.is_active is True and new_row.agent_id == first["agent_id"]
    agent = AgentTable.get(client_id, first["agent_id"])
    assert agent.instance_id == new_id and int(agent.instance_count) == 2
    assert agent.current_pool_id == "m5.large.eu-west-1c"

    # A third instance migrates again (count 3).
    third_id = new_instance_id()
    third = _register(caller, {**body, "instance_id": third_id})
    assert third["action"] == "migrated" and InstanceTable.get(new_id).is_active is False
    assert int(AgentTable.get(client_id, first["agent_id"]).instance_count) == 3


def test_an_instance_the_agent_left_cannot_take_the_agent_back(make_tenant):
    """GIVEN an agent that moved from instance 1 to 2 WHEN the agent on instance 1 restarts and registers
    THEN 409 instance_replaced and nothing changes (the logical agent stays on the live instance)."""
    client_id, caller = make_tenant()
    body = registration()
    first = _register(caller, body)
    new_id = new_instance_id()
    _register(caller, {**body, "instance_id": new_id})
    before = snapshot_tables()
    status, reply = caller.post("/api/agents/register", body)
    assert_error(status, reply, 409, code="instance_replaced", field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert AgentTable.get(client_id, first["agent_id"]).instance_id == new_id


def test_moving_on_leaves_an_instance_another_agent_took_active(make_tenant):
    """GIVEN agent A on instance 1, then agent B (another logical id of the same client, e.g. the host's config
    changed) registered on instance 1 WHEN A registers from instance 2 THEN instance 1 stays active and B's: A's
    move closes only an instance that is still A's (it used to mark B's live instance inactive, and the sentinel
    then ignored its interruptions)."""
    client_id, caller = make_tenant()
    body = registration()
    first = _register(caller, body)
    other = _register(caller, {**body, "logical_agent_id": "other-" + body["logical_agent_id"]})
    assert other["agent_id"] != first["agent_id"]
    assert InstanceTable.get(body["instance_id"]).agent_id == other["agent_id"]
    moved = _register(caller, {**body, "instance_id": new_instance_id()})
    assert moved["agent_id"] == first["agent_id"] and moved["action"] == "migrated"
    row = InstanceTable.get(body["instance_id"], consistent_read=True)
    assert (row.agent_id, row.is_active) == (other["agent_id"], True)


def test_a_standby_registers_only_once_promoted(make_tenant):
    """GIVEN a standby instance of the agent WHEN its agent registers THEN 409 instance_is_standby and no
    change; once the standby is the primary (a failover promoted it) the same registration migrates."""
    client_id, caller = make_tenant()
    body = registration()
    first = _register(caller, body)
    standby_id = new_instance_id()
    InstanceTable(standby_id, client_id=client_id, agent_id=first["agent_id"], instance_type="m5.large",
                  region="eu-west-1", az="eu-west-1b", role="standby", is_active=True,
                  installed_at=datetime.now(timezone.utc), updated_at=datetime.now(timezone.utc)).save()
    before = snapshot_tables()
    status, reply = caller.post("/api/agents/register", {**body, "instance_id": standby_id, "az": "eu-west-1b"})
    assert_error(status, reply, 409, code="instance_is_standby", field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    InstanceTable(standby_id).update(actions=[InstanceTable.role.set("primary")])
    promoted = _register(caller, {**body, "instance_id": standby_id, "az": "eu-west-1b"})
    assert promoted["action"] == "migrated"
    assert AgentTable.get(client_id, first["agent_id"]).instance_id == standby_id


def test_missing_logical_id_falls_back_to_instance_id(make_tenant):
    """GIVEN no logical_agent_id (legacy env default) WHEN registering THEN the instance id is the logical id."""
    client_id, caller = make_tenant()
    body = registration()
    del body["logical_agent_id"]
    reply = _register(caller, body)
    assert reply["agent_id"] == agent_id_for(client_id, body["instance_id"])
    assert AgentTable.get(client_id, reply["agent_id"]).logical_agent_id == body["instance_id"]
    again = _register(caller, {**body, "logical_agent_id": None})
    assert again["agent_id"] == reply["agent_id"] and again["action"] == "refreshed"


def test_missing_mode_is_accepted_as_unknown(make_tenant):
    """GIVEN an agent-v2 body without ``mode`` (the legacy server rejected it) WHEN registering THEN 200 and mode unknown."""
    client_id, caller = make_tenant()
    body = registration()
    del body["mode"]
    reply = _register(caller, body)
    assert AgentTable.get(client_id, reply["agent_id"]).current_mode == "unknown"
    assert InstanceTable.get(body["instance_id"]).mode == "unknown"


def test_mode_aliases_are_normalised(make_tenant):
    """GIVEN the legacy lifecycle words WHEN registering THEN 'normal'/'on-demand' become ondemand."""
    client_id, caller = make_tenant()
    for word, expected in (("normal", "ondemand"), ("On-Demand", "ondemand"), ("SPOT", "spot"),
                           ("scheduled-ish", "unknown")):
        reply = _register(caller, registration(mode=word))
        assert AgentTable.get(client_id, reply["agent_id"]).current_mode == expected, word


def test_instance_of_another_tenant_is_409_and_writes_nothing(make_tenant):
    """GIVEN tenant A's registered instance WHEN tenant B registers the same instance id THEN 409, no write."""
    _, a_caller = make_tenant()
    body = registration()
    a_reply = _register(a_caller, body)
    b_client, b_caller = make_tenant()
    before = snapshot_tables()
    for logical in (body["logical_agent_id"], "someone-else"):
        status, reply = b_caller.post("/api/agents/register", {**body, "logical_agent_id": logical})
        assert_error(status, reply, 409, code="instance_conflict", field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert InstanceTable.get(body["instance_id"]).agent_id == a_reply["agent_id"]
    assert list(AgentTable.query(b_client)) == []


def test_a_registered_agent_moving_to_another_tenants_instance_is_409_instance_conflict(make_tenant):
    """GIVEN tenant A's registered instance and tenant B's agent registered on its own instance
    WHEN B's agent registers again naming A's instance (a migration, so the transaction updates B's agent)
    THEN 409 instance_conflict at once (not a retried "raced" conflict), and nothing is written."""
    _, a_caller = make_tenant()
    taken = registration()
    _register(a_caller, taken)
    b_client, b_caller = make_tenant()
    own = registration()
    b_reply = _register(b_caller, own)
    before = snapshot_tables()
    status, reply = b_caller.post("/api/agents/register", {**own, "instance_id": taken["instance_id"]})
    assert_error(status, reply, 409, code="instance_conflict", field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert AgentTable.get(b_client, b_reply["agent_id"]).instance_id == own["instance_id"]


def test_same_logical_id_in_two_tenants_gives_two_agents(make_tenant):
    """GIVEN the same logical id in two tenants WHEN both register THEN two distinct agents."""
    _, a_caller = make_tenant()
    _, b_caller = make_tenant()
    a = _register(a_caller, registration(logical_agent_id="web-shared"))
    b = _register(b_caller, registration(logical_agent_id="web-shared"))
    assert a["agent_id"] != b["agent_id"]


def test_deleted_agent_is_revived_with_default_config(make_tenant):
    """GIVEN an agent with a changed config that was deleted WHEN it registers again THEN revived, same id,
    config reset to defaults (version bumped), online again."""
    client_id, caller = make_tenant()
    body = registration()
    first = _register(caller, body)
    agent_id = first["agent_id"]
    row = AgentTable.get(client_id, agent_id)
    row.update(actions=[AgentTable.config.auto_switch_enabled.set(False),
                        AgentTable.config.terminate_wait_seconds.set(30),
                        AgentTable.config_version.add(1)])
    row.update(actions=[AgentTable.status.set("deleted"), AgentTable.liveness.remove()])
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert_error(status, reply, 404, field="agent_id")
    status, reply = caller.get(f"/api/agents/{agent_id}/config")
    assert_error(status, reply, 404)

    revived = _register(caller, body)
    assert revived["agent_id"] == agent_id and revived["action"] == "revived"
    config = {k: v for k, v in revived["config"].items() if k not in ("agent_id", "config_version")}
    assert config == DEFAULT_CONFIG
    assert revived["config"]["config_version"] == 3
    row = AgentTable.get(client_id, agent_id)
    assert row.status == "online" and row.deleted_at is None
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})
    assert status == 200, reply


def test_disabled_agent_stays_disabled_on_register(make_tenant):
    """GIVEN an operator-disabled agent WHEN it registers again THEN refreshed but still disabled."""
    client_id, caller = make_tenant()
    body = registration()
    agent_id = _register(caller, body)["agent_id"]
    AgentTable(client_id, agent_id).update(actions=[AgentTable.status.set("disabled")])
    reply = _register(caller, body)
    assert reply["action"] == "refreshed"
    assert AgentTable.get(client_id, agent_id).status == "disabled"


def test_registration_is_recorded_in_the_audit_log(admin, make_tenant):
    """GIVEN a registration WHEN the admin reads the activity feed THEN the agent_registered event is there."""
    client_id, caller = make_tenant()
    reply = _register(caller, registration())
    # Walk the feed: other tests of the session record events stamped later today (jobs run at a future now).
    feed = walk(admin, "/api/admin/activity", "events", limit=50,
                stop=lambda rows: any(e["agent_id"] == reply["agent_id"] for e in rows))
    events = [e for e in feed if e["agent_id"] == reply["agent_id"]]
    assert [e["event_type"] for e in events] == ["agent_registered"]
    assert events[0]["client_id"] == client_id
