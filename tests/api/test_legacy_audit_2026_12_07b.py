"""Legacy audit of 2026-12-07's later changes (a969f3b..09a21e2: the live-instances, unread-notifications and
open-replicas sparse indexes, the AWS Health split, the replica PUT take-over, ``status=launching`` never offering a
failover's replacement, bounded listing reads): what a real, unchanged legacy client (v4.0.0, v3.2.0, the pre-v4
``spot_agent.py``, the legacy React dashboard) meets after them.

Audited, each test one legacy call sequence as the real client makes it:

- v4's replica polling flow (``GET replicas?status=launching``, PUT ``{instance_id, status:'syncing'}``, status
  ``ready``) and its create_replica path (POST ``/replicas`` ``status:'launching'``, then ``ready``) against the
  open-replicas index: with the index not ready (a stage upgraded in place, rows written without ``open_client_id``),
  across the cleanup job's backfill (polled before, PUT and ready after), and ready; the poll's answer is the flat
  rows with ``next_token`` None (v4 never follows it), a launching standby older than many closed ones included:
  HELD (offered once, attached, ready, the key present exactly while open, no longer offered once it has an
  instance).
- v4's PUT of its own instance onto a standby our in-flight launch attached first, when our instance turned
  ``ready`` before the PUT or between the take-over's read and its conditional write: FIXED. Before: 409
  ``replica_instance_conflict`` and v4's instance ran on, owned by nothing (not tagged by us: no cleanup of ours ends
  it, IAM lets us terminate only ours). Now the agent's instance takes the standby over whatever its open status
  (the row back to ``syncing``, ``ready_at`` removed until v4 reports it ready), ours is terminated. Also FIXED: the
  same PUT re-sent by a v4 build that retries a timed-out call, racing the first: the loser was 409 although the
  row held its instance; a lost compare-and-set is now decided once more on the row read again (200, one take-over).
- the dashboard listings with the new token shapes: a page token of the active instances or the unread
  notifications issued before the index was ready, followed after it became ready: FIXED (before: one 400
  ``next_token``; the console's next page failed once per listing on the upgrade). The old shape is read as the
  same position in the caller's own partition of the index; another tenant's token is still a 400. The client
  replicas listing (one token shape both ways), switch-history (unchanged) and mark-all-read (no token): HELD.
- v3.2 and ``spot_agent.py`` flows that close and reopen instance rows (re-registration on a new instance, switch
  report, termination report, the stub's restart registering as the same agent; a registration on an instance its
  termination report closed is 409 ``instance_replaced``, as designed): HELD, the live-instances index invariant
  (``live_client_id == client_id`` iff ``is_active``) kept after every call.
- a termination report (``POST /api/agents/{id}/termination``) of an agent that has no current instance recorded:
  FIXED. The legacy server marked every reporting agent offline; ours left it ``online`` (it went offline only
  "while on the reported host", and an agent on no host never is).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from chalicelib import replicas as replicas_service
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import job_state, sparse_indexes
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable, NotificationTable, ReplicaTable
from chalicelib.tables.instances import LIVE_INSTANCES, InstanceTable
from chalicelib.tables.notifications import UNREAD_NOTIFICATIONS
from chalicelib.tables.replicas import OPEN_REPLICAS
from tests.api._support import assert_error, switch_body
from tests.api.read_scaling_support import History, history, live_fleet
from tests.api.test_live_instances import assert_live_key_kept
from tests.api.test_replicas import GONE, agent_launched, config, put, agent_recorded_standby
from tests.api.test_security_walk_19 import overtaken_at
from tests.conftest import new_instance_id, registration
from tests.e2e.failover_support import register_agent, state_of

ReplicaStatus = replica_repo.ReplicaStatus


def _now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def upgraded_in_place(aws_tables):
    """The three sparse indexes as on a stage upgraded in place, before the cleanup job's backfill: not ready."""
    now = _now()
    for index in (LIVE_INSTANCES, UNREAD_NOTIFICATIONS, OPEN_REPLICAS):
        job_state.set_position(f"sparse-index#{index.name}", {}, now)
    sparse_indexes.forget_ready()
    yield
    for index in (LIVE_INSTANCES, UNREAD_NOTIFICATIONS, OPEN_REPLICAS):
        sparse_indexes.mark_ready(index, now)


def _backfilled(*indexes) -> None:
    for index in indexes:
        sparse_indexes.backfill(index, _now(), reads=1000)
        assert sparse_indexes.ready(index)


def _waiting_standby(client_id: str, agent_id: str, *, keyed: bool = True):
    """A manual standby the coordinator created, waiting for an instance (offered to v4's poll); ``keyed`` False:
    written as the code before the open-replicas index wrote it (no ``open_client_id``)."""
    agent = agent_repo.require(client_id, agent_id)
    now = _now()
    row = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                              lifecycle="spot", pool_id="m5.large.eu-west-1b", az="eu-west-1b",
                              created_by="replica-coordinator", now=now, take_slot=True)
    if not keyed:
        ReplicaTable(agent_id, row.replica_id).update(actions=[ReplicaTable.open_client_id.remove()])
    return row


def _v4_poll(caller, agent_id: str) -> list[str]:
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert status == 200 and listed["next_token"] is None, listed
    assert all({"id", "pool_id", "az"} <= set(r) for r in listed["replicas"]), listed
    return [r["id"] for r in listed["replicas"]]


def _open_key(agent_id: str, replica_id: str) -> str | None:
    return ReplicaTable.get(agent_id, replica_id, consistent_read=True).open_client_id


# --- 1. v4's replica polling flow and create_replica path against the open-replicas index ---------------------------


@pytest.mark.parametrize("stage", ["not-ready", "across-the-backfill", "ready"])
def test_v4s_polling_flow_attaches_and_readies_the_standby_whatever_the_index(tenant_with_agent, upgraded_in_place,
                                                                              stage):
    """GIVEN a manual standby waiting for an instance (written without the open key on a stage upgraded in place, or
    with it) WHEN v4 polls ``status=launching``, PUTs its instance ``syncing`` and reports ``ready`` (the backfill
    running between the poll and the PUT, or the index ready throughout) THEN offered once with next_token None, 200
    each, ready with the agent's instance, the open key present, and the next poll offers nothing."""
    client_id, caller, agent_id, _ = tenant_with_agent
    config(caller, agent_id, manual_replica_enabled=True)
    if stage == "ready":
        _backfilled(OPEN_REPLICAS)
    waiting = _waiting_standby(client_id, agent_id, keyed=stage == "ready")
    assert _v4_poll(caller, agent_id) == [waiting.replica_id]
    if stage == "across-the-backfill":
        _backfilled(OPEN_REPLICAS)
    path = f"/api/agents/{agent_id}/replicas/{waiting.replica_id}"
    theirs = agent_launched()
    status, attached = put(caller, path, {"instance_id": theirs, "status": "syncing"})
    assert status == 200 and (attached["instance_id"], attached["status"]) == (theirs, "syncing"), attached
    status, ready = caller.post(f"{path}/status", {"status": "ready"})
    assert status == 200 and ready["status"] == "ready", ready
    assert _open_key(agent_id, waiting.replica_id) == client_id
    assert _v4_poll(caller, agent_id) == []
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas")
    assert status == 200 and [(r["id"], r["status"]) for r in listed["replicas"]] == \
        [(waiting.replica_id, "ready")], listed
    assert caller.get(f"/api/agents/{agent_id}/replica-config")[1]["count"] == 1
    assert_live_key_kept(client_id)


@pytest.mark.parametrize("ready_before", [False, True], ids=["not-ready", "ready"])
def test_v4s_create_replica_path_is_listed_and_readied_whatever_the_index(make_tenant, upgraded_in_place,
                                                                          ready_before):
    """v4's create_replica command path (it launched the EC2, POSTs ``/replicas`` ``status:'launching'``, then
    ``ready``): 201 then 200; the row carries the open key from its first write, so once the backfill makes the index
    ready it is listed by every open-replica read, and never offered to the ``status=launching`` poll (it has an
    instance)."""
    if ready_before:
        _backfilled(OPEN_REPLICAS)
    caller, agent_id, instance_id, path = agent_recorded_standby(make_tenant)
    replica_id = path.rsplit("/", 1)[1]
    client_id = agent_repo.instance_row(instance_id).client_id
    assert _open_key(agent_id, replica_id) == client_id
    assert _v4_poll(caller, agent_id) == []
    status, ready = caller.post(f"{path}/status", {"status": "ready"})
    assert status == 200 and ready["status"] == "ready", ready
    _backfilled(OPEN_REPLICAS)
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas")
    assert status == 200 and [r["id"] for r in listed["replicas"]] == [replica_id], listed
    status, listed = caller.get(f"/api/client/{client_id}/replicas")
    assert status == 200 and [r["id"] for r in listed["replicas"]] == [replica_id], listed
    assert _v4_poll(caller, agent_id) == []


def test_v4s_first_poll_offers_a_standby_older_than_many_closed_ones_before_the_index_is_ready(tenant_with_agent,
                                                                                                upgraded_in_place):
    """GIVEN a stage upgraded in place (index not ready), a waiting standby and, after it, 120 closed ones WHEN v4
    polls (no limit, never a next_token) THEN the standby is on that first answer (the filtered read goes on through
    the partition)."""
    client_id, caller, agent_id, _ = tenant_with_agent
    config(caller, agent_id, manual_replica_enabled=True)
    waiting = _waiting_standby(client_id, agent_id, keyed=False)
    history(client_id, agent_id, History(replicas=120))
    assert _v4_poll(caller, agent_id) == [waiting.replica_id]


# --- 2. v4's PUT onto a standby our in-flight launch attached first, turned ready ------------------------------------


def _raced_standby(make_tenant):
    """v4's poll offered a waiting manual standby; our coordinator's launch of it, in flight then, attached first
    (``own_launch``, launching). (client_id, caller, agent_id, the row as attached, its path)."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    config(caller, agent_id, manual_replica_enabled=True)
    agent = agent_repo.require(client_id, agent_id)
    now = _now()
    row = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now), replica_type="manual",
                              lifecycle="spot", pool_id=f"{agent.instance_type}.us-east-1c", az="us-east-1c",
                              created_by="replica-coordinator", now=now, take_slot=True)
    status, listed = caller.get(f"/api/agents/{agent_id}/replicas?status=launching")
    assert status == 200 and [r["id"] for r in listed["replicas"]] == [row.replica_id], listed
    ours = replicas_service.launch(agent, row, now, source_instance_id=primary)
    assert ours.own_launch and ours.instance_id, ours
    return client_id, caller, agent_id, ours, f"/api/agents/{agent_id}/replicas/{row.replica_id}"


def _taken_over(client_id: str, agent_id: str, ours, theirs: str, status: str = "syncing") -> None:
    stored = replica_repo.get(agent_id, ours.replica_id)
    assert (stored.instance_id, stored.own_launch, stored.status.value) == (theirs, False, status), stored
    assert state_of(ours.instance_id) in GONE and state_of(theirs) == "running"
    mine, replaced = agent_repo.instance_row(theirs), agent_repo.instance_row(ours.instance_id)
    assert (mine.replica_id, mine.role, mine.is_active) == (ours.replica_id, "standby", True)
    assert replaced.is_active is False
    assert AgentTable.get(client_id, agent_id, consistent_read=True).current_replica_id == ours.replica_id
    assert _open_key(agent_id, ours.replica_id) == client_id
    assert_live_key_kept(client_id)


def test_v4s_put_racing_our_standby_turning_ready_takes_it_over(make_tenant, monkeypatch):
    """The race: v4's PUT of its own instance has read our standby ``launching`` (and decided to take it over) when
    the coordinator marks our instance ``ready``; then the take-over writes. BEFORE: 409 ``replica_instance_conflict``
    (the write's condition named launching/syncing), v4's instance left running unowned. NOW: 200, v4's instance is
    the standby (``syncing``, no ``ready_at``), ours terminated; v4's ``ready`` report then readies it."""
    client_id, caller, agent_id, ours, path = _raced_standby(make_tenant)
    theirs = agent_launched("us-east-1", "us-east-1c")
    readied = overtaken_at(monkeypatch, replica_repo, "take_over_instance", lambda: replica_repo.transition(
        replica_repo.get(agent_id, ours.replica_id), ReplicaStatus.READY, _now()), before=True)
    status, reply = put(caller, path, {"instance_id": theirs, "status": "syncing"})
    monkeypatch.undo()
    assert readied[0].status is ReplicaStatus.READY
    assert status == 200 and (reply["instance_id"], reply["status"]) == (theirs, "syncing"), reply
    assert replica_repo.get(agent_id, ours.replica_id).ready_at is None
    _taken_over(client_id, agent_id, ours, theirs)
    status, ready = caller.post(f"{path}/status", {"status": "ready"})
    assert status == 200 and ready["status"] == "ready", ready
    _taken_over(client_id, agent_id, ours, theirs, status="ready")


def test_v4s_put_after_our_standby_turned_ready_takes_it_over(make_tenant):
    """GIVEN our own launch of the offered standby attached and turned ``ready`` before v4's PUT WHEN v4 PUTs its own
    instance THEN 200 (BEFORE: 409, v4's instance left running unowned): v4's is the standby, ours terminated."""
    client_id, caller, agent_id, ours, path = _raced_standby(make_tenant)
    replica_repo.transition(ours, ReplicaStatus.READY, _now())
    theirs = agent_launched("us-east-1", "us-east-1c")
    status, reply = put(caller, path, {"instance_id": theirs, "status": "syncing"})
    assert status == 200 and (reply["instance_id"], reply["status"]) == (theirs, "syncing"), reply
    _taken_over(client_id, agent_id, ours, theirs)


def test_v4s_put_sent_twice_at_once_is_one_take_over(make_tenant, monkeypatch):
    """The race: a v4 build that re-sends a timed-out call sends its PUT again while the first is still running; the
    second takes the standby over between the first's read and its write. BEFORE: the first answered 409
    ``replica_instance_conflict`` though the row held its instance. NOW: both 200, one take-over."""
    client_id, caller, agent_id, ours, path = _raced_standby(make_tenant)
    theirs = agent_launched("us-east-1", "us-east-1c")
    body = {"instance_id": theirs, "status": "syncing"}
    again = overtaken_at(monkeypatch, replica_repo, "take_over_instance", lambda: put(caller, path, body),
                         before=True)
    status, reply = put(caller, path, body)
    monkeypatch.undo()
    assert again[0][0] == 200, again
    assert status == 200 and (reply["instance_id"], reply["status"]) == (theirs, "syncing"), reply
    _taken_over(client_id, agent_id, ours, theirs)


def test_a_put_racing_the_standbys_close_is_a_clean_409(make_tenant, monkeypatch):
    """The race: the client deletes the standby between v4's PUT's read and its take-over: 409 ``replica_closed``,
    the row stays closed, no 500 (the agent's instance is the one left: noticed, left alone)."""
    client_id, caller, agent_id, ours, path = _raced_standby(make_tenant)
    theirs = agent_launched("us-east-1", "us-east-1c")
    closed = overtaken_at(monkeypatch, replica_repo, "take_over_instance",
                          lambda: caller.call("DELETE", path), before=True)
    status, reply = put(caller, path, {"instance_id": theirs, "status": "syncing"})
    monkeypatch.undo()
    assert closed[0][0] == 200, closed
    assert_error(status, reply, 409, code="replica_closed")
    assert replica_repo.get(agent_id, ours.replica_id).status is ReplicaStatus.TERMINATED
    assert agent_repo.instance_row(theirs) is None
    assert_live_key_kept(client_id)


# --- 3. the dashboard's listings across their index becoming ready ---------------------------------------------------


def _pages(caller, path: str, key: str, limit: int, *, between=None) -> list[str]:
    listed, token, turn = [], None, 0
    while True:
        status, reply = caller.get(f"{path}{'&' if '?' in path else '?'}limit={limit}"
                                   + (f"&next_token={token}" if token else ""))
        assert status == 200, (turn, reply)
        listed += [row[key] for row in reply[list(set(reply) & {"instances", "notifications", "replicas"})[0]]]
        token = reply["next_token"]
        if token is None:
            return listed
        if turn == 0 and between:
            between()
        turn += 1


def test_an_active_instances_page_token_issued_before_the_index_was_ready_goes_on(make_tenant, upgraded_in_place):
    """GIVEN 4 active instances and 20 closed ones, the live index not ready WHEN the console lists the active ones 2
    a page, the backfill ending after the first page THEN the next page answers with the old token (BEFORE: 400
    ``next_token``) and every active instance is listed once."""
    client_id, caller = make_tenant()
    fleet = live_fleet(caller, 4)
    history(client_id, fleet[0][0], History(instances=20))
    listed = _pages(caller, f"/api/client/{client_id}/instances?status=active", "instance_id", 2,
                    between=lambda: _backfilled(LIVE_INSTANCES))
    assert sorted(listed) == sorted(i for _, i in fleet), listed
    assert_live_key_kept(client_id)


def test_an_unread_page_token_issued_before_the_index_was_ready_goes_on(make_tenant, upgraded_in_place):
    """GIVEN 5 unread notifications among 12, the unread index not ready WHEN they are listed 2 a page, the backfill
    ending after the first page THEN the next page answers with the old token (BEFORE: 400) and each unread one is
    listed once, newest first; mark-all-read then marks them all."""
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration())
    history(client_id, reply["agent_id"], History(notifications=12, unread=5))
    unread = sorted(r.notification_id for r in NotificationTable.query(client_id, consistent_read=True)
                    if not r.is_read)
    listed = _pages(caller, "/api/notifications?unread=true", "id", 2,
                    between=lambda: _backfilled(UNREAD_NOTIFICATIONS))
    assert listed == unread[::-1], listed
    status, reply = caller.post("/api/notifications/mark-all-read", {"client_id": None})
    assert status == 200 and reply["more"] is False, reply
    assert caller.get("/api/notifications?unread=true")[1]["notifications"] == []


def test_a_replicas_page_token_goes_on_across_the_index_becoming_ready(make_tenant, upgraded_in_place):
    """The client replicas listing's token is one shape both ways: 3 open standbys of 3 agents listed 2 a page, the
    backfill between the pages, each listed once."""
    client_id, caller = make_tenant()
    fleet = live_fleet(caller, 3)
    for agent_id, _ in fleet:
        config(caller, agent_id, manual_replica_enabled=True)
        _waiting_standby(client_id, agent_id, keyed=False)
    listed = _pages(caller, f"/api/client/{client_id}/replicas", "agent_id", 2,
                    between=lambda: _backfilled(OPEN_REPLICAS))
    assert sorted(listed) == sorted(a for a, _ in fleet), listed


def test_an_old_shape_token_of_another_tenant_is_still_a_400(make_tenant):
    """An old-shape token (the filtered read's) naming another client's partition is a 400 on the active instances
    and unread listings once their index is ready: it never positions a read in another tenant's partition."""
    client_id, caller = make_tenant()
    other_id, other = make_tenant()
    fleet = live_fleet(other, 3)
    history(other_id, fleet[0][0], History(notifications=6, unread=4))
    for path, mine in ((f"/api/client/{other_id}/instances?status=all&limit=1",
                        f"/api/client/{client_id}/instances?status=active"),
                       ("/api/notifications?limit=1", "/api/notifications?unread=true")):
        status, reply = other.get(path)
        assert status == 200 and reply["next_token"], reply
        status, reply = caller.get(f"{mine}&next_token={reply['next_token']}")
        assert_error(status, reply, 400, field="next_token")


# --- 4. v3.2 and spot_agent.py flows keep the live-instances invariant -----------------------------------------------


def test_v32s_flows_keep_the_live_key(make_tenant):
    """v3.2: registration, registration again on a new instance (its restart after an operator moved it), a switch
    report, the switch's replacement registering, a termination report, and a registration on the instance it
    closed (409 ``instance_replaced``, nothing reopened): the key follows ``is_active`` after each."""
    from tests.api.test_legacy_v3_bodies import v3_registration

    client_id, caller = make_tenant()
    first = new_instance_id()
    status, reply = caller.post("/api/agents/register", v3_registration(first, "v3-agent"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    assert_live_key_kept(client_id)
    second = new_instance_id()
    status, reply = caller.post("/api/agents/register", v3_registration(second, "v3-agent"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert_live_key_kept(client_id)
    third = new_instance_id()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(second, third))
    assert status == 200, reply
    assert_live_key_kept(client_id)
    status, reply = caller.post("/api/agents/register", v3_registration(third, "v3-agent", az="eu-west-1b"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert_live_key_kept(client_id)
    status, reply = caller.post(f"/api/agents/{agent_id}/termination", {"instance_id": third})
    assert status == 200, reply
    rows = assert_live_key_kept(client_id)
    assert third not in {r.instance_id for r in rows if r.is_active}  # the switch's old one runs on: kept
    status, reply = caller.post("/api/agents/register", v3_registration(third, "v3-agent", az="eu-west-1b"))
    assert_error(status, reply, 409, code="instance_replaced")  # reported terminated: not reopened (as designed)
    rows = assert_live_key_kept(client_id)
    assert third not in {r.instance_id for r in rows if r.is_active}


def test_spot_agent_py_flows_keep_the_live_key(api, make_tenant):
    """spot_agent.py (``X-Client-Token``, no logical id): registration, its bare ``offline`` heartbeat (what follows
    its termination notice; the failover's hand-over is tests/api/test_live_instances.py's), its restart registering
    again, a termination report, and a registration on the instance it closed (409 ``instance_replaced``, nothing
    reopened): the key follows ``is_active`` after each."""
    from tests.api.test_legacy_stub_bodies import stub_agent, stub_registration

    client_id, caller, stub, agent_id, instance_id = stub_agent(api, make_tenant)
    assert_live_key_kept(client_id)
    status, reply = stub.post(f"/api/agents/{agent_id}/heartbeat", {"status": "offline"})
    assert status == 200, reply
    assert_live_key_kept(client_id)
    status, reply = stub.post("/api/agents/register", stub_registration(instance_id))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert_live_key_kept(client_id)
    status, reply = stub.post(f"/api/agents/{agent_id}/termination", {"instance_id": instance_id})
    assert status == 200, reply
    assert instance_id not in {r.instance_id for r in assert_live_key_kept(client_id) if r.is_active}
    status, reply = stub.post("/api/agents/register", stub_registration(instance_id))
    assert_error(status, reply, 409, code="instance_replaced")  # reported terminated: not reopened (as designed)
    assert instance_id not in {r.instance_id for r in assert_live_key_kept(client_id) if r.is_active}


# --- 5. a termination report of an agent with no current instance ----------------------------------------------------


def test_a_termination_report_of_an_agent_on_no_instance_takes_it_offline(tenant_with_agent):
    """GIVEN an agent with no current instance recorded (its row names none) WHEN it reports its (last) instance
    terminating THEN 200, the instance closed and the agent offline, as the legacy server marked every reporting
    agent. BEFORE: the instance closed but the agent left ``online`` (offline only "on the reported host")."""
    client_id, caller, agent_id, body = tenant_with_agent
    AgentTable(client_id, agent_id).update(actions=[AgentTable.instance_id.remove()])
    status, reply = caller.post(f"/api/agents/{agent_id}/termination",
                                {"instance_id": body["instance_id"], "reason": "spot interruption"})
    assert status == 200 and reply["status"] == "offline", reply
    assert AgentTable.get(client_id, agent_id, consistent_read=True).status == "offline"
    assert agent_repo.instance_row(body["instance_id"]).is_active is False
    assert_live_key_kept(client_id)
    assert InstanceTable.get(body["instance_id"]).live_client_id is None
