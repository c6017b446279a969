"""The data cleaner's retention of gone agents (chalicelib/jobs/data_cleaner.py, ``AGENT_RETENTION_DAYS``) under
moto: a deleted agent past its retention goes with its commands, closed replicas and inactive instance rows; one
with an open replica or a live instance stays; a re-registration racing the cleaner wins; a re-run deletes
nothing; the logical id registers again as a new agent."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.jobs import data_cleaner
from chalicelib.repositories import agents as agent_repo
from chalicelib.settings import get_settings
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.commands import CommandTable
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.replicas import ReplicaTable
from tests.conftest import new_instance_id, registration
from tests.integration.test_data_cleaner import _command, _walk_from, unbounded  # noqa: F401 - the fixture

RETENTION = timedelta(days=90)


def _agent_row(client_id: str, agent_id: str) -> AgentTable | None:
    try:
        return AgentTable.get(client_id, agent_id, consistent_read=True)
    except AgentTable.DoesNotExist:
        return None


def _instance(instance_id: str) -> InstanceTable | None:
    try:
        return InstanceTable.get(instance_id, consistent_read=True)
    except InstanceTable.DoesNotExist:
        return None


def _replica(agent_id: str, client_id: str, status: str, now: datetime, tag: str,
             instance_id: str | None = None, instance_active: bool = False) -> str:
    """A replica row of the agent (and, with ``instance_id``, its standby's instance row naming the agent)."""
    rid = f"rep-{now.strftime('%Y%m%dT%H%M%S%f')}-{tag}"
    ReplicaTable(agent_id, rid, client_id=client_id, status=status, instance_id=instance_id, created_at=now,
                 updated_at=now).save()
    if instance_id:
        InstanceTable(instance_id, client_id=client_id, agent_id=agent_id, role="standby", replica_id=rid,
                      is_active=instance_active, installed_at=now, updated_at=now).save()
    return rid


def _deleted_agent(make_tenant):
    """A client with two agents, one of them deleted through the API: (client_id, caller, deleted agent id, its
    register body, the kept agent id, its register body)."""
    client_id, caller = make_tenant()
    gone_body, kept_body = registration(), registration()
    status, gone = caller.post("/api/agents/register", gone_body)
    assert status == 200, gone
    status, kept = caller.post("/api/agents/register", kept_body)
    assert status == 200, kept
    assert caller.call("DELETE", f"/api/client/agents/{gone['agent_id']}")[0] == 200
    return client_id, caller, gone["agent_id"], gone_body, kept["agent_id"], kept_body


def test_a_deleted_agent_goes_after_its_retention_with_what_only_it_refers_to(make_tenant, unbounded):  # noqa: F811
    """GIVEN a deleted agent with a finished and a pending command, a closed replica with its inactive standby
    instance row, and its own inactive instance row, next to a live agent WHEN the cleaner runs 89 days after the
    deletion THEN nothing of it goes but its finished command (the command retention); WHEN it runs 91 days after THEN the agent row, its commands, its replica and
    both instance rows are gone, each counted, the live agent and its instance are untouched, and the history no
    longer lists it; a re-run deletes nothing."""
    client_id, caller, gone, gone_body, kept, kept_body = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    standby = new_instance_id()
    _command(gone, client_id, "completed", now, now, "done")  # finished: the command retention's (7 days)
    pending = _command(gone, client_id, "pending", now, None, "pending")
    kept_command = _command(kept, client_id, "pending", now, None, "kept")
    replica_id = _replica(gone, client_id, "terminated", now, "closed", standby)
    assert _instance(gone_body["instance_id"]).is_active is False  # the soft delete made it inactive

    _walk_from(client_id, now)
    early = data_cleaner.run(now + RETENTION - timedelta(days=1))
    assert early["gone_agents"] == 0 and early["gone_agent_rows"] == 0 and early["commands"] == 1
    assert _agent_row(client_id, gone) is not None
    assert [r.command_id for r in CommandTable.query(gone, consistent_read=True)] == [pending]
    assert [r.replica_id for r in ReplicaTable.query(gone, consistent_read=True)] == [replica_id]

    _walk_from(client_id, now)
    later = now + RETENTION + timedelta(days=1)
    result = data_cleaner.run(later)
    assert result["gone_agents"] == 1
    assert result["gone_agent_rows"] == 1 + 1 + 1 + 2  # agent, pending command, replica, two instance rows
    assert _agent_row(client_id, gone) is None
    assert list(CommandTable.query(gone, consistent_read=True)) == []
    assert list(ReplicaTable.query(gone, consistent_read=True)) == []
    assert _instance(gone_body["instance_id"]) is None and _instance(standby) is None
    assert _agent_row(client_id, kept).status == "online"
    assert _instance(kept_body["instance_id"]).is_active is True
    assert [r.command_id for r in CommandTable.query(kept, consistent_read=True)] == [kept_command]
    status, history = caller.get(f"/api/client/{client_id}/agents/history")
    assert status == 200, history
    assert [a["agent_id"] for a in history["agents"]] == [kept]

    _walk_from(client_id, now)
    again = data_cleaner.run(later)
    assert again["gone_agents"] == 0 and again["gone_agent_rows"] == 0
    assert _agent_row(client_id, kept) is not None


@pytest.mark.parametrize("blocker", ["open replica", "closed replica with a live instance", "live instance row"])
def test_an_agent_with_something_live_is_kept(make_tenant, unbounded, blocker):  # noqa: F811
    """GIVEN a deleted agent past its retention that still has an open replica, a closed replica whose instance
    row is active, or an active instance row naming it WHEN the cleaner runs THEN nothing of it is deleted: not
    its row, not its replicas, not its commands, not its instance rows."""
    client_id, _, gone, gone_body, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    command_id = _command(gone, client_id, "pending", now, None, "pending")
    closed = _replica(gone, client_id, "terminated", now, "closed")
    if blocker == "open replica":
        _replica(gone, client_id, "ready", now, "open")
    elif blocker == "closed replica with a live instance":
        _replica(gone, client_id, "promoted", now, "promoted", new_instance_id(), instance_active=True)
    else:
        InstanceTable(gone_body["instance_id"]).update(actions=[InstanceTable.is_active.set(True),
                                                                InstanceTable.live_client_id.set(client_id)])

    _walk_from(client_id, now)
    result = data_cleaner.run(now + RETENTION + timedelta(days=1))
    assert result["gone_agents"] == 0 and result["gone_agent_rows"] == 0
    assert _agent_row(client_id, gone) is not None
    assert [r.command_id for r in CommandTable.query(gone, consistent_read=True)] == [command_id]
    assert closed in {r.replica_id for r in ReplicaTable.query(gone, consistent_read=True)}
    assert _instance(gone_body["instance_id"]) is not None


def test_an_instance_registered_since_by_another_agent_stays(make_tenant, unbounded, monkeypatch):  # noqa: F811
    """GIVEN a deleted agent whose old instance another agent of the client registered since WHEN the cleaner
    removes the deleted agent, even from an index read taken before that registration (the row still naming the
    deleted agent, inactive) THEN the instance row, now the other agent's and active, stays; the agent goes."""
    client_id, caller, gone, gone_body, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    cutoff = now + timedelta(days=1)
    stale = agent_repo._instances_naming(agent_repo.gone_before(client_id, gone, cutoff))
    assert [r.instance_id for r in stale] == [gone_body["instance_id"]] and not stale[0].is_active
    status, other = caller.post("/api/agents/register", registration(instance_id=gone_body["instance_id"]))
    assert status == 200, other
    monkeypatch.setattr(agent_repo, "_instances_naming", lambda agent: stale)

    _walk_from(client_id, now)
    result = data_cleaner.run(now + RETENTION + timedelta(days=1))
    assert result["gone_agents"] == 1 and result["gone_agent_rows"] == 1
    assert _agent_row(client_id, gone) is None
    row = _instance(gone_body["instance_id"])
    assert row is not None and row.agent_id == other["agent_id"] and row.is_active


def test_a_re_registration_racing_the_cleaner_wins(make_tenant, unbounded, monkeypatch):  # noqa: F811
    """GIVEN a deleted agent past its retention WHEN its logical id registers again after the cleaner read and
    checked the agent and deleted what it refers to, just before the delete of its row THEN the row is not deleted (its status and times changed): the agent is
    online on its new instance, whose row stays active."""
    client_id, caller, gone, gone_body, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    back = registration(logical_agent_id=gone_body["logical_agent_id"])
    real_delete = agent_repo.delete_gone

    def register_then_delete(agent):
        if agent.agent_id == gone:  # after every check and every other delete: only the row's condition is left
            status, reply = caller.post("/api/agents/register", back)
            assert status == 200 and reply["agent_id"] == gone, reply
        return real_delete(agent)

    monkeypatch.setattr(agent_repo, "delete_gone", register_then_delete)
    _walk_from(client_id, now)
    result = data_cleaner.run(now + RETENTION + timedelta(days=1))
    assert result["gone_agents"] == 0
    row = _agent_row(client_id, gone)
    assert row is not None and row.status == "online" and row.instance_id == back["instance_id"]
    assert _instance(back["instance_id"]).is_active


def test_a_purged_logical_id_registers_as_a_new_agent(make_tenant, unbounded):  # noqa: F811
    """GIVEN a deleted agent removed by the cleaner WHEN its logical id registers again THEN a new agent is created
    (registered now, default config, online) that heartbeats, is listed, and is deleted again like any other."""
    client_id, caller, gone, gone_body, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    _walk_from(client_id, now)
    assert data_cleaner.run(now + RETENTION + timedelta(days=1))["gone_agents"] == 1
    assert _agent_row(client_id, gone) is None

    back = registration(logical_agent_id=gone_body["logical_agent_id"])
    status, reply = caller.post("/api/agents/register", back)
    assert status == 200, reply
    row = _agent_row(client_id, reply["agent_id"])
    assert row.status == "online" and row.deleted_at is None and row.registered_at >= now
    assert row.config.enabled is True and int(row.config_version) == 1
    status, beat = caller.post(f"/api/agents/{reply['agent_id']}/heartbeat",
                               {"status": "online", "instance_id": back["instance_id"]})
    assert status == 200, beat
    status, listed = caller.get(f"/api/client/{client_id}/agents")
    assert status == 200 and reply["agent_id"] in [a["agent_id"] for a in listed["agents"]], listed
    assert caller.call("DELETE", f"/api/client/agents/{reply['agent_id']}")[0] == 200


def test_routes_naming_a_purged_agent_answer_404_not_500(make_tenant, unbounded):  # noqa: F811
    """GIVEN a purged agent, and an instance row still naming it (written by a path the cleaner did not see) WHEN
    the client asks for the agent's decisions, replicas, settings and the instance's pricing, options and a
    switch THEN each answers without a server error (404 for the agent, the instance's own answer otherwise)."""
    client_id, caller, gone, _, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    _walk_from(client_id, now)
    assert data_cleaner.run(now + RETENTION + timedelta(days=1))["gone_agents"] == 1
    orphan = new_instance_id()
    InstanceTable(orphan, client_id=client_id, agent_id=gone, instance_type="m5.large", region="eu-west-1",
                  az="eu-west-1a", is_active=True, installed_at=now, updated_at=now).save()

    for path in (f"/api/client/agents/{gone}/decisions", f"/api/agents/{gone}/replicas"):
        assert caller.get(path)[0] == 404, path
    assert caller.call("DELETE", f"/api/client/agents/{gone}")[0] == 404
    for path in (f"/api/client/instances/{orphan}/pricing", f"/api/client/instances/{orphan}/available-options",
                 f"/api/client/{client_id}/instances", f"/api/client/{client_id}/replicas?status=all",
                 f"/api/client/{client_id}/agents/history"):
        status, reply = caller.get(path)
        assert status < 500, (path, reply)
    status, reply = caller.post(f"/api/client/instances/{orphan}/force-switch", {"target": "ondemand"})
    assert status == 404, reply


def test_a_removal_stopped_by_the_budget_leaves_the_agent_registrable_and_the_next_run_finishes(
        make_tenant, monkeypatch):
    """GIVEN a deleted agent past its retention with a pending command and an older inactive instance row, and a
    budget of 2 deletes a run WHEN the cleaner runs THEN it deletes those 2 rows and keeps the agent row and the
    instance row it names; WHEN the next run comes THEN it resumes at the agent and removes both."""
    client_id, caller, gone, gone_body, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    _command(gone, client_id, "pending", now, None, "pending")
    older = new_instance_id()
    InstanceTable(older, client_id=client_id, agent_id=gone, is_active=False, installed_at=now - timedelta(days=1),
                  updated_at=now).save()
    tight = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_deletes=2)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: tight)
    later = now + RETENTION + timedelta(days=1)

    _walk_from(client_id, now)
    first = data_cleaner.run(later)
    assert first["gone_agent_rows"] == 2 and first["gone_agents"] == 0
    assert _agent_row(client_id, gone) is not None and _instance(gone_body["instance_id"]) is not None
    assert _instance(older) is None

    second = data_cleaner.run(later)  # resumes at the agent
    assert second["gone_agents"] == 1 and second["gone_agent_rows"] == 2
    assert _agent_row(client_id, gone) is None and _instance(gone_body["instance_id"]) is None


def test_a_half_removed_agent_registers_again(make_tenant, monkeypatch):
    """GIVEN a deleted agent past its retention and a run whose budget (1 delete) cannot finish its removal WHEN the
    cleaner runs THEN the agent row and the instance row it names are both still there, and its logical id
    registers again: the agent is revived (200, online on the new instance), not refused."""
    client_id, caller, gone, gone_body, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    tight = dataclasses.replace(get_settings(), cleaner_max_clients=100_000, cleaner_max_deletes=1)
    monkeypatch.setattr(data_cleaner, "get_settings", lambda: tight)
    _walk_from(client_id, now)
    assert data_cleaner.run(now + RETENTION + timedelta(days=1))["gone_agents"] == 0
    assert _agent_row(client_id, gone) is not None and _instance(gone_body["instance_id"]) is not None

    back = registration(logical_agent_id=gone_body["logical_agent_id"])
    status, reply = caller.post("/api/agents/register", back)
    assert status == 200 and reply["agent_id"] == gone, reply
    assert _agent_row(client_id, gone).status == "online"


# --- the savings day rows of a removed agent and of ended instances ---------------------------------------------


def _days(scope_key: str, client_id: str, now: datetime, *days: int) -> None:
    """Savings day rows in ``scope_key`` for the given days back from ``now`` ($1 saved a day)."""
    from decimal import Decimal

    from chalicelib.tables.savings import SavingsTable

    for back in days:
        period = (now - timedelta(days=back)).strftime("%Y-%m-%d")
        SavingsTable(scope_key, period, client_id=client_id, actual_cost=Decimal("1"), baseline_cost=Decimal("2"),
                     computed_at=now).save()


def _periods(scope_key: str) -> list[str]:
    from chalicelib.tables.savings import SavingsTable

    return [r.period for r in SavingsTable.query(scope_key, consistent_read=True)]


def test_a_removed_agents_and_its_instances_savings_day_rows_go_and_the_clients_totals_stay(make_tenant,
                                                                                              unbounded):  # noqa: F811
    """The defect: the roll-up's per-agent and per-instance day rows (``agent#…#day``, ``instance#…#day``) have no
    TTL and nothing deleted them: a removed agent's stayed for ever. Now they go with the agent when its retention
    ends (first, while its instance rows still say which instances were its), counted with its rows. The client's
    own rows are integrated from the instances, not summed from these: its totals do not change. The kept agent's
    rows, and an instance another agent runs now, are untouched."""
    from chalicelib.repositories import savings

    client_id, caller, gone, gone_body, kept, kept_body = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    standby = new_instance_id()
    _replica(gone, client_id, "terminated", now, "closed", standby)
    gone_keys = [savings.agent_key(client_id, gone), savings.instance_key(client_id, gone_body["instance_id"]),
                 savings.instance_key(client_id, standby)]
    kept_keys = [savings.agent_key(client_id, kept), savings.instance_key(client_id, kept_body["instance_id"]),
                 savings.client_key(client_id, "day"), savings.client_key(client_id, "month")]
    for key in gone_keys + kept_keys:
        _days(key, client_id, now, 3, 2, 1)
    later = now + RETENTION + timedelta(days=1)
    totals = savings.client_summary(client_id, later)

    _walk_from(client_id, now)
    early = data_cleaner.run(now + RETENTION - timedelta(days=1))
    assert early["gone_agents"] == 0 and all(len(_periods(k)) == 3 for k in gone_keys)

    _walk_from(client_id, now)
    result = data_cleaner.run(later)

    assert result["gone_agents"] == 1
    assert result["gone_agent_rows"] == 3 * 3 + 1 + 1 + 2  # the day rows, the agent, its replica, two instance rows
    assert {k: _periods(k) for k in gone_keys} == {k: [] for k in gone_keys}
    assert all(len(_periods(k)) == 3 for k in kept_keys)
    assert savings.client_summary(client_id, later) == totals
    _walk_from(client_id, now)
    assert data_cleaner.run(later)["gone_agent_rows"] == 0  # a re-run deletes nothing


def test_an_ended_instance_rows_savings_days_go_with_it_and_the_agents_stay(make_tenant, unbounded):  # noqa: F811
    """A staying agent's instance row that ended past the retention goes (tests/api/test_security_walk_11.py);
    its instance's day rows go just before it, counted as ``savings_days``. The agent's own day rows (its summary
    over its life) and its current instance's stay, as do the client's totals."""
    from chalicelib.repositories import savings

    client_id, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    now = datetime.now(UTC)
    old = now - timedelta(days=100)
    ended = new_instance_id()
    InstanceTable(ended, client_id=client_id, agent_id=agent_id, role="primary", mode="spot",
                  instance_type="m5.large", az="eu-west-1a", is_active=False, installed_at=old - timedelta(days=1),
                  terminated_at=old, updated_at=old).save()
    _days(savings.instance_key(client_id, ended), client_id, now, 102, 101)
    stays = [savings.agent_key(client_id, agent_id), savings.instance_key(client_id, reg["instance_id"]),
             savings.client_key(client_id, "day")]
    for key in stays:
        _days(key, client_id, now, 101, 1)
    totals = savings.client_summary(client_id, now)

    _walk_from(client_id, now)
    result = data_cleaner.run(now)

    assert (result["instances"], result["savings_days"]) == (1, 2)
    assert _instance(ended) is None and _periods(savings.instance_key(client_id, ended)) == []
    assert all(len(_periods(k)) == 2 for k in stays)
    assert savings.client_summary(client_id, now) == totals
    _walk_from(client_id, now)
    again = data_cleaner.run(now)
    assert (again["instances"], again["savings_days"]) == (0, 0)


def test_a_deleted_agents_primary_the_product_launched_keeps_its_row_after_the_agent_goes(make_tenant,
                                                                                        unbounded):  # noqa: F811
    """GIVEN a deleted agent whose primary the product launched (a promoted standby: its row names the replica), which
    the delete released to the client (``released_at``) and which still runs, tagged as ours
    WHEN the cleaner runs past the agent's retention
    THEN the agent row goes but that instance row stays: without it the cleanup's orphan pass would take the client's
    running workload for an orphan of ours and terminate it. A primary the product did not launch goes as before."""
    client_id, caller, gone, gone_body, kept, kept_body = _deleted_agent(make_tenant)
    launched_client, launched_caller, launched, launched_body, _, _ = _deleted_agent(make_tenant)
    now = datetime.now(UTC)
    row = _instance(launched_body["instance_id"])
    assert row.released_at is not None and row.is_active is False  # the delete released it
    row.update(actions=[InstanceTable.replica_id.set("rep-20261207T000000000000-promoted")])

    later = now + RETENTION + timedelta(days=1)
    _walk_from(client_id, now)  # the two clients, in creation order
    assert data_cleaner.run(later)["gone_agents"] == 2
    assert _agent_row(launched_client, launched) is None and _agent_row(client_id, gone) is None
    assert _instance(launched_body["instance_id"]).released_at is not None  # kept: the product launched it
    assert _instance(gone_body["instance_id"]) is None  # the client's own: nothing of ours to protect
    _walk_from(launched_client, now)
    assert data_cleaner.run(later)["gone_agent_rows"] == 0  # kept for good, not retried
