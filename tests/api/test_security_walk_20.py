"""Security walk 20: the ground nineteen walks left — the code that landed with the sparse indexes and the AWS Health
split, and the ends of a lifecycle. What a tenant holding two client tokens (its agents on them, its own AWS account
bound to the product and forwarding its events, a dead-letter queue of its own the operator redrives) can make of: the
three sparse indexes (the live instances, the unread notifications, the open replicas: whether a row of one tenant
can be put in another's partition, a closed row kept live, a page token of an index-backed listing positioned in
another tenant's partition or of another key shape), the cleanup job's backfill of those indexes on a stage upgraded in
place (a row changing under it, a write of it failing), the sentinel's intake of an event (its id, which is the
idempotency record's key and the stem of a split event's part ids; the instance ids it names; the same instance named
many times over), the rows an agent's deletion and a client's hard delete leave behind (in every table and every
index, what the cleanup job then makes of the instances left running, and what the old token and page tokens still
reach), and a switch report's times running backwards. Each test
is one attack; its docstring says what it tries and what holds (and, when it found something, what happened before
the fix)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError

from chalicelib import sentinel
from chalicelib.jobs import cleanup
from chalicelib.repositories import activity, job_state, sparse_indexes
from chalicelib.repositories.paging import encode_token
from chalicelib.sentinel import on_event
from chalicelib.tables import (
    SPARSE_INDEXES,
    AgentTable,
    CommandTable,
    InstanceTable,
    InterruptionTable,
    NotificationTable,
    ReplicaTable,
    SwitchTable,
)
from chalicelib.tables.instances import LIVE_INSTANCES
from chalicelib.tables.replicas import ACTIVE_STATUSES as OPEN_STATUSES
from components.sentinel.signals import MAX_AFFECTED_INSTANCES
from tests.api._support import assert_error, iso, now_utc, switch_body, unchanged
from tests.api.read_scaling_support import live_fleet
from tests.api.test_replicas import agent_recorded_standby
from tests.conftest import invoke_schedule, new_instance_id, registration
from tests.e2e.failover_support import ACCOUNT, REGION, register_agent, warning

ATTACKER_ACCOUNT = "210987654321"  # a client account bound to the attacker (never the victim's)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _retirement(*instance_ids: str, account: str = ACCOUNT, event_id: str | None = None) -> dict:
    """An AWS Health scheduled retirement as EventBridge delivers it."""
    return {"version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": "AWS Health Event",
            "source": "aws.health", "account": account, "time": now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION, "resources": list(instance_ids),
            "detail": {"service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
                       "eventTypeCategory": "scheduledChange",
                       "affectedEntities": [{"entityValue": i} for i in instance_ids]}}


def _token(**key: str) -> str:
    """A page token as the service issues them: the typed key, base64 JSON."""
    return encode_token({name: {"S": value} for name, value in key.items()})


# --- the sentinel's intake: the event id, the instance ids, one instance named many times --------------------------


@pytest.mark.parametrize("event_id", ["absent", None, "", "   ", ["e1"], 7])
def test_an_event_without_a_text_id_is_rejected_and_never_handled_outside_the_idempotency_record(
        make_tenant, started, event_id):
    """The attack: an event of the attacker's own account for its own primary whose ``id`` is missing, null, blank or
    no text, redriven from its dead-letter queue (a body of its own making) as often as it likes. The id is what the
    powertools idempotency record is keyed on, and the stem of a split Health event's part ids. Before walk 20 each was
    handled: a missing, null or empty id with no record at all (powertools skips the persistence layer when the key
    is missing: "No idempotency key value found"), so every delivery was handled afresh (a failover started on the
    first; after the claim's window, every redrive started another), and a split id-less event's parts were recorded
    under ``None#part-1-of-2``, a key every other id-less event's parts share, whichever tenant's; a blank, a list or
    a number was taken as an id (a failover started). What holds now: an event
    whose id is not a non-blank string is rejected before anything is read or claimed (EventBridge always sets one):
    no execution, no interruption, no claim, however often it comes."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    event = {k: v for k, v in warning(primary).items() if k != "id"}
    if event_id != "absent":
        event["id"] = event_id

    first, again = on_event(dict(event)), on_event(dict(event))

    assert first["action"] == again["action"] == "rejected", (first, again)
    assert started == []
    assert list(InterruptionTable.query(client_id, consistent_read=True)) == []


def test_a_health_event_naming_ids_that_are_no_instance_ids_looks_none_of_them_up(make_tenant, started, monkeypatch):
    """The attack: an AWS Health retirement from the attacker's account naming, next to its own primary, "instance
    ids" that only start with ``i-``: 3,000 characters (over DynamoDB's 2,048-byte partition key), a NUL, a lone
    surrogate, non-ASCII letters. Before walk 20 each was read with a consistent GetItem of the instances table:
    DynamoDB refuses such a key (a ValidationException; moto does not check, so the test makes the read refuse as
    DynamoDB does), the event raised after its other instances and came back, again and again, until the dead-letter
    queue (the same for a part of a split event, and for an EC2 event's ``instance-id``). What holds now: an id that
    is no EC2 instance id is an unmanaged instance without a read; the primary it names next to them is failed over
    once, and the event is answered."""
    _, _, _, primary, _ = register_agent(make_tenant)
    hostile = ["i-" + "a" * 3000, "i-0123\u0000abcd", "i-\ud800abcdef01", "i-" + "é" * 17]
    asked: list[str] = []
    original = InstanceTable.get.__func__

    def get(cls, hash_key, *args, **kwargs):
        asked.append(hash_key)
        if len(hash_key.encode("utf-8", "surrogatepass")) > 2048 or not hash_key.isascii():
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "invalid key"}}, "GetItem")
        return original(cls, hash_key, *args, **kwargs)

    monkeypatch.setattr(InstanceTable, "get", classmethod(get))

    result = on_event(_retirement(*hostile, primary))

    assert result["action"] == "per_instance", result
    outcome = {r["instance_id"]: r for r in result["results"]}
    assert outcome[primary]["action"] == "failover_started", outcome
    assert all(outcome[i]["action"] == "ignored" for i in hostile), outcome
    assert set(asked) <= {primary} and len(started) == 1
    assert on_event({**warning(hostile[0]), "account": ACCOUNT})["action"] in ("ignored", "rejected")
    assert set(asked) <= {primary}


def test_an_event_carrying_another_accounts_event_id_is_handled_as_its_own(make_tenant, started):
    """The attack: an event sent from the attacker's account (a body redriven from its own dead-letter queue) carrying
    the id of the victim's spot warning, hoping to be answered from the victim's stored result, or, sent first, to
    have the victim's real warning answered from its own (a replay: no failover). Before walk 20 the idempotency key
    was the event id alone: the second event of the two got the first's stored answer whatever account sent it.
    What holds: the key is the sending account and the id, so each is handled as its own; the victim's warning fails
    its primary over once, and a redelivery of it is still answered from its own record."""
    _, _, _, primary, _ = register_agent(make_tenant)
    shared_id = str(uuid.uuid4())
    forged = {**warning(new_instance_id(), event_id=shared_id), "account": ATTACKER_ACCOUNT}
    first = on_event(dict(forged))
    assert first["action"] != "failover_started", first
    genuine = warning(primary, event_id=shared_id)
    result = on_event(dict(genuine))
    assert result["action"] == "failover_started" and len(started) == 1, result
    assert on_event(dict(genuine)) == result and len(started) == 1  # its own redelivery: its own stored answer
    assert on_event(dict(forged)) == first


def test_one_instance_named_many_times_or_an_event_shaped_as_a_part_multiplies_no_work(aws_tables, monkeypatch):
    """The attack: an AWS Health retirement from the attacker's account that names 26 instances 200 times each
    (``affectedEntities`` and ``resources``: 5,200 entries, one SQS message), and whose own id already reads like a
    part of a split event (``<id>#part-1-of-2``), hoping the split counts entries rather than instances (200 parts,
    each instance looked up 200 times), or that a part is split again (recursion), or that a part's id is read as
    the part of another event. What holds: the instances are counted once each (two parts); each part names at most
    ``MAX_AFFECTED_INSTANCES`` and is never split again; each instance is looked up once; the event's parts are
    ids of its own (``<its id>#part-k-of-2``); a redelivery of the event, or of any part, does nothing again."""
    from chalicelib.settings import event_queue_name, get_settings
    from localmode.queues import drain
    from tests.integration.test_event_intake import empty_event_queue

    empty_event_queue()
    looked_up: list[str] = []
    monkeypatch.setattr(sentinel, "_instance", lambda instance_id: looked_up.append(instance_id))
    ids = [f"i-{uuid.uuid4().hex[:17]}" for _ in range(MAX_AFFECTED_INSTANCES + 1)]
    stem = f"{uuid.uuid4()}#part-1-of-2"
    event = _retirement(*(ids * 200), account=ATTACKER_ACCOUNT, event_id=stem)

    result = on_event(event)

    assert result["action"] == "split" and result["parts"] == 2, result
    parts: list[dict] = []

    def run(batch):
        import json

        parts.extend(json.loads(record["body"]) for record in batch["Records"])
        return sentinel.on_sqs_batch(batch)

    assert drain(event_queue_name(get_settings().stage), run) == 2
    assert sorted(p["id"] for p in parts) == [f"{stem}#part-1-of-2", f"{stem}#part-2-of-2"]
    assert all(len(p["detail"]["affectedEntities"]) <= MAX_AFFECTED_INSTANCES for p in parts)
    assert sorted(looked_up) == sorted(ids)  # every instance once
    assert on_event(event) == result
    for part in parts:
        on_event(part)
    assert sorted(looked_up) == sorted(ids)  # the redeliveries looked nothing up again


# --- the sparse indexes: partitions, page tokens, the backfill --------------------------------------------------------


def test_a_page_token_of_an_index_backed_listing_reaches_only_my_partition_of_that_index(make_tenant):
    """The attack: page tokens crafted for the three listings now read from a sparse index (the active instances from
    the live index, the unread notifications from the unread index, the open standbys from the open-replicas index):
    positioned in another tenant's partition of the index; my partition's attribute next to the other tenant's index
    key (``client_id`` mine, ``unread_client_id`` theirs); the other read's shape (the history index's token on the
    live listing); an extra attribute; and a token of my partition positioned at the other tenant's row. What holds:
    every token not of the index's exact shape in my partition is a clean 400 (``next_token``) that writes nothing,
    but the one other shape these listings issued themselves (the history's, before their index was ready: my own
    partition's, read as the same position of my partition of the index); one positioned at another tenant's row
    lists my rows only."""
    a_id, a = make_tenant()
    b_id, b = make_tenant()
    (a_agent, a_instance), = live_fleet(a, 1)
    (b_agent, b_instance), = live_fleet(b, 1)
    b_installed = InstanceTable.installed_at.serialize(InstanceTable.get(b_instance).installed_at)
    a_note = activity.notify(a_id, "test", "mine", now_utc())
    b_note = activity.notify(b_id, "test", "theirs", now_utc())
    a_caller, a_standby_agent, _, _ = agent_recorded_standby(make_tenant)  # a tenant with an open standby
    listings = {
        "live": (f"/api/client/{a_id}/instances?status=active&limit=1", a, [
            _token(instance_id=b_instance, live_client_id=b_id, installed_at=b_installed),
            _token(instance_id=a_instance, live_client_id=a_id, installed_at=b_installed, client_id=b_id)]),
        "unread": ("/api/notifications?unread=true&limit=1", a, [
            _token(client_id=a_id, notification_id=b_note, unread_client_id=b_id),
            _token(client_id=b_id, notification_id=b_note, unread_client_id=b_id),
            _token(client_id=b_id, notification_id=b_note)]),  # the history's shape, another tenant's partition
    }
    for path, caller, tokens in listings.values():
        for token in tokens:
            status, body = unchanged(lambda: caller.get(f"{path}&next_token={token}"))  # noqa: B023
            assert_error(status, body, 400, field="next_token")

    for honoured in (f"/api/client/{a_id}/instances?status=active&limit=5&next_token="
                     + _token(instance_id=a_instance, client_id=a_id, installed_at="9999"),
                     "/api/notifications?unread=true&limit=5&next_token="
                     + _token(client_id=a_id, notification_id="9999")):  # the history's shape, my partition
        status, body = a.get(honoured)
        rows = body.get("instances", body.get("notifications"))
        assert status == 200 and rows and {r.get("instance_id") or r.get("id") for r in rows} <= {a_instance, a_note}
    status, body = a.get(f"/api/client/{a_id}/instances?status=active&limit=5&next_token="
                         + _token(instance_id=b_instance, live_client_id=a_id, installed_at="9999"))
    assert status == 200 and {r["instance_id"] for r in body["instances"]} <= {a_instance}, body
    status, body = a.get("/api/notifications?unread=true&limit=5&next_token="
                         + _token(client_id=a_id, notification_id="9999", unread_client_id=a_id))
    assert status == 200 and {n["id"] for n in body["notifications"]} <= {a_note} and body["notifications"], body

    standby_client = next(iter(ReplicaTable.query(a_standby_agent))).client_id
    path = f"/api/client/{standby_client}/replicas?limit=1"
    for token in (_token(agent_id=b_agent, replica_id="r-9", client_id=b_id),
                  _token(agent_id=a_standby_agent, replica_id="r-9", open_client_id=standby_client)):
        status, body = unchanged(lambda: a_caller.get(f"{path}&next_token={token}"))  # noqa: B023
        assert_error(status, body, 400, field="next_token")
    status, body = a_caller.get(f"{path}&next_token=" + _token(agent_id=b_agent, replica_id="~", client_id=standby_client))
    assert status == 200 and body["replicas"] and {r["agent_id"] for r in body["replicas"]} == {a_standby_agent}, body


def test_every_row_a_tenants_flows_key_into_a_sparse_index_is_in_its_own_clients_partition_and_open(make_tenant):
    """The attack: two tenants run every flow that writes an index key — register, switch (the old instance kept
    running), a termination report, a standby recorded then retired, notifications read one by one and all at once —
    and the second then takes over, with a proven registration, an instance the first registered on its word only,
    hoping a row ends up in the other tenant's partition of an index (a key derived from who wrote, not whose row it
    is) or a closed row stays in one ("live" after its close). What holds, over every row of both tenants in the three
    tables: a row carries an index key exactly while it is open (active, unread, open status), and the key is its own
    ``client_id``; the index partitions of each tenant list only its own rows."""
    a_id, a = make_tenant()
    b_id, b = make_tenant()
    (a_agent, a_instance), (a_agent2, a_instance2) = live_fleet(a, 2)
    status, _ = a.post(f"/api/agents/{a_agent}/switch-report", switch_body(a_instance, new_instance_id()))
    assert status == 200
    status, _ = a.post(f"/api/agents/{a_agent2}/termination", {"instance_id": a_instance2, "reason": "test"})
    assert status in (200, 202)
    caller, s_agent, _, replica_path = agent_recorded_standby(make_tenant)
    status, _ = caller.call("DELETE", replica_path)
    assert status == 200
    status, body = a.get("/api/notifications")
    assert status == 200 and body["notifications"], body
    status, _ = a.post(f"/api/notifications/{body['notifications'][0]['id']}/mark-read")
    assert status == 200
    status, _ = b.post("/api/notifications/mark-all-read")
    assert status == 200

    clients = {a_id, b_id, *(r.client_id for r in ReplicaTable.query(s_agent))}
    for client_id in clients:
        for row in InstanceTable.by_client.query(client_id):
            assert row.live_client_id == (row.client_id if row.is_active else None), row.attribute_values
        for row in NotificationTable.query(client_id):
            assert row.unread_client_id == (None if row.is_read else row.client_id), row.attribute_values
        for row in ReplicaTable.by_client.query(client_id):
            assert row.open_client_id == (row.client_id if row.status in OPEN_STATUSES else None), \
                row.attribute_values
        assert all(r.client_id == client_id and r.is_active for r in InstanceTable.live.query(client_id))
        assert all(r.client_id == client_id and not r.is_read for r in NotificationTable.unread_by_client.query(client_id))
        assert all(r.client_id == client_id for r in ReplicaTable.open_by_client.query(client_id))


def test_a_row_taken_over_by_another_tenant_while_the_backfill_walks_is_never_keyed_to_the_first(aws_tables, monkeypatch):
    """The attack: on a stage upgraded in place (the live index not ready, rows without its key), an instance row of
    tenant A is put anew for tenant B (a proven take-over of an instance A registered on its word only) between the
    backfill's scan, which read it as A's, and its write. A key written from the scanned row would put B's instance in
    A's partition of the live index (A's active listing and counts would show it, its page tokens would reach it).
    What holds: the backfill's write is conditional on the row still lacking a key, and the take-over's put derives
    B's: the row is keyed to B only, A's partition holds nothing of it, and the walk goes on and finishes."""
    for index in SPARSE_INDEXES:
        job_state.set_position(f"sparse-index#{index.name}", {}, NOW)
    sparse_indexes.forget_ready()
    a_id, b_id = f"cl-{uuid.uuid4().hex[:8]}", f"cl-{uuid.uuid4().hex[:8]}"
    instance_id = new_instance_id()
    row = InstanceTable(instance_id, client_id=a_id, agent_id="ag-a", is_active=True, installed_at=NOW,
                        updated_at=NOW)
    row.save()
    row.update(actions=[InstanceTable.live_client_id.remove()])  # as the code before the index wrote it
    original = InstanceTable.update

    def taken_over_first(self, actions, condition=None, **kwargs):
        if self.instance_id == instance_id and self.client_id == a_id:
            InstanceTable(instance_id, client_id=b_id, agent_id="ag-b", is_active=True, installed_at=NOW,
                          updated_at=NOW, proven_account_id=ATTACKER_ACCOUNT).save()
        return original(self, actions, condition=condition, **kwargs)

    try:
        monkeypatch.setattr(InstanceTable, "update", taken_over_first)
        runs = 0
        while not sparse_indexes.ready(LIVE_INSTANCES):
            sparse_indexes.backfill(LIVE_INSTANCES, NOW)
            runs += 1
            assert runs < 10_000
        monkeypatch.undo()
        stored = InstanceTable.get(instance_id, consistent_read=True)
        assert (stored.client_id, stored.live_client_id) == (b_id, b_id)
        assert list(InstanceTable.live.query(a_id)) == []
        assert [r.instance_id for r in InstanceTable.live.query(b_id)] == [instance_id]
    finally:
        for index in SPARSE_INDEXES:
            sparse_indexes.mark_ready(index, NOW)


def test_a_backfill_that_fails_never_stops_the_cleanup_run_for_every_tenant(aws_tables, monkeypatch):
    """The attack: the cleanup job's backfill of a sparse index (on a stage upgraded in place) meets a write it cannot
    make — DynamoDB throttling the table the tenants' own bursts share, a row it refuses — on every run while the
    cause lasts. Before walk 20 the backfill ran ahead of the orphan pass with nothing around it: its error ended the
    run, so every tenant's leaked standby (an instance billed by the hour) went unterminated, run after run, and the
    run's metrics were never published. What holds now: a failing backfill is logged and named in the run's result
    (``backfill_failed``), the other indexes' backfills and the orphan pass of every tenant still run, and the next
    run resumes the walk where it stopped."""
    for index in SPARSE_INDEXES:
        job_state.set_position(f"sparse-index#{index.name}", {}, NOW)
    sparse_indexes.forget_ready()
    throttled = UpdateError("Failed to update item", cause=ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "UpdateItem"))
    original = sparse_indexes.backfill
    walked: list[str] = []

    def backfill(index, now, *args, **kwargs):
        walked.append(index.name)
        if index is LIVE_INSTANCES:
            raise throttled
        return original(index, now, *args, **kwargs)

    reaped: list[tuple] = []
    monkeypatch.setattr(sparse_indexes, "backfill", backfill)
    monkeypatch.setattr(cleanup, "_reap", lambda region, now, account, client_id: reaped.append(
        (region, client_id)) or [])
    monkeypatch.setattr(cleanup, "managed_regions", lambda: ["eu-west-1"])
    monkeypatch.setattr(cleanup, "scopes", lambda: [(None, None)])
    try:
        result = cleanup.run(NOW)
        assert result["backfill_failed"] == [LIVE_INSTANCES.name], result
        assert walked == [index.name for index in SPARSE_INDEXES]  # the others were still walked
        assert reaped == [("eu-west-1", None)]  # every tenant's orphan pass ran
        assert not sparse_indexes.ready(LIVE_INSTANCES)
        monkeypatch.setattr(sparse_indexes, "backfill", original)
        while not sparse_indexes.ready(LIVE_INSTANCES):
            assert cleanup.run(NOW)["backfill_failed"] == []
    finally:
        for index in SPARSE_INDEXES:
            sparse_indexes.mark_ready(index, NOW)


# --- the ends of a lifecycle ---------------------------------------------------------------------------------------


def test_deleting_an_agent_leaves_none_of_its_instances_live(make_tenant):
    """The attack: a tenant's agent switches (auto-terminate off for the old instance: the report names no
    termination, so the old primary stays an active row, as the product keeps a replaced primary running), then the
    client deletes the agent. Before walk 20 the delete closed the agent's current instance only: the instance it
    replaced stayed an active row of a deleted agent in the live index for good — listed as the client's active
    instance, counted in its overview, integrated by every hourly savings roll-up up to "now" (savings and costs
    growing for an instance nobody manages), and never removed by the data cleaner (it removes a gone agent's
    inactive rows only); nothing could close it any more (its agent's credential and routes are gone). What holds
    now: the delete closes every active instance row of the agent (without claiming a termination time for the ones
    it kept running), its listing and overview show none, and a repeat of the delete changes nothing."""
    client_id, caller = make_tenant()
    body = registration()
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    agent_id, replaced = reply["agent_id"], body["instance_id"]
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(replaced, new_instance_id()))
    assert status == 200, reply
    assert InstanceTable.get(replaced, consistent_read=True).is_active  # kept running: the agent's report said so

    status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")
    assert status == 200, reply

    rows = list(InstanceTable.by_agent.query(agent_id))
    assert len(rows) == 2 and not any(r.is_active or r.live_client_id for r in rows)
    assert InstanceTable.get(replaced, consistent_read=True).terminated_at is None  # no termination time claimed
    assert list(InstanceTable.live.query(client_id)) == []
    status, reply = caller.get(f"/api/client/{client_id}")
    assert status == 200 and reply["instances_active"] == 0, reply
    status, reply = caller.get(f"/api/client/{client_id}/instances")
    assert status == 200 and reply["instances"] == [], reply
    unchanged(lambda: caller.call("DELETE", f"/api/client/agents/{agent_id}"))


def test_deleting_an_agent_never_makes_the_cleanup_terminate_the_instances_it_leaves_running(api, make_tenant):
    """The attack (on the client itself, by its own hand): a client deletes an agent whose primary the product
    launched (a failover's replacement, a promoted standby: tagged ``ManagedBy=SpotOptimizer`` for the client and
    agent) and whose switch left the previous product-launched primary running. The delete says the agent's
    instance keeps running, the client's workload. Before walk 20 it closed the current row with a termination time
    it never saw, and the next cleanup run (every 10 minutes) found a tagged instance no active row owned and
    terminated it: the client's production host, gone; with the first fix of this walk (every active row of the
    agent closed) the kept primary would have followed it. What holds now: every row the delete closes is marked
    released (``released_at``), the cleanup's orphan pass keeps a released instance, and both keep running."""
    from tests.e2e.failover_support import ZONES, state_of
    from tests.integration.test_cleanup import launch, past_grace

    client_id, caller = make_tenant()
    logical = f"web-{uuid.uuid4().hex[:8]}"
    reg = {"instance_type": "t3.micro", "region": REGION, "az": ZONES[1], "logical_agent_id": logical}
    status, reply = caller.post("/api/agents/register", registration(instance_id=launch(None), **reg))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    ours = {"ManagedBy": "SpotOptimizer", "AgentId": agent_id, "ClientId": client_id, "LogicalAgentId": logical,
            "SpotOptimizerStage": "dev"}
    kept, current = (launch({**ours, "ReplicaId": f"rep-{uuid.uuid4().hex[:8]}"}) for _ in range(2))
    status, reply = caller.post("/api/agents/register", registration(instance_id=kept, **reg))
    assert status == 200, reply
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(kept, current))
    assert status == 200, reply
    later = past_grace(now_utc())
    outcome = invoke_schedule(api, "cleanup", now=later)
    assert not {kept, current} & set(outcome["terminated"])

    status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")
    assert status == 200, reply
    outcome = invoke_schedule(api, "cleanup", now=later)

    assert not {kept, current} & set(outcome["terminated"]), outcome
    assert state_of(kept) == state_of(current) == "running"
    assert all(InstanceTable.get(i, consistent_read=True).released_at for i in (kept, current))


def test_a_hard_deleted_client_leaves_no_row_in_any_tenant_table_or_index_and_its_tokens_reach_nothing(
        make_tenant, admin):
    """The attack: a client with a fleet (instances active and replaced, a recorded standby, unread and read
    notifications, switches, commands) is hard-deleted by the operator; its holder keeps the old client token and the
    page tokens of its index-backed listings (active instances, unread notifications, open standbys), hoping a row
    left in a table or in one of the new sparse indexes (which the delete never names: it deletes table rows) still
    answers, or that its tokens do. What holds: no row of the client is left in its tables (agents, instances,
    replicas, commands, switches, interruptions, notifications) nor in any of their indexes (by client, by agent, the
    live, unread and open partitions); its token is 401 on every listing, with or without its old page token."""
    caller, agent_id, standby, _ = agent_recorded_standby(make_tenant)
    client_id = next(iter(ReplicaTable.query(agent_id))).client_id
    (a1, i1), (a2, i2) = live_fleet(caller, 2)
    status, _ = caller.post(f"/api/agents/{a1}/switch-report", switch_body(i1, new_instance_id()))
    assert status == 200
    caller.post(f"/api/client/instances/{i2}/force-switch", {})  # a command of its agent (if it queues one)
    activity.notify(client_id, "test", "one", now_utc())
    activity.notify(client_id, "test", "two", now_utc() + timedelta(seconds=1))
    tokens = {}
    for name, path in (("live", f"/api/client/{client_id}/instances?status=active&limit=1"),
                       ("unread", "/api/notifications?unread=true&limit=1"),
                       ("open", f"/api/client/{client_id}/replicas?limit=1")):
        status, reply = caller.get(path)
        assert status == 200, reply
        tokens[name] = (path, reply["next_token"])
    assert tokens["live"][1] and tokens["unread"][1]
    agent_ids = [r.agent_id for r in AgentTable.query(client_id)]

    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200, reply

    assert list(AgentTable.query(client_id)) == [] and list(AgentTable.by_logical_id.query(client_id)) == []
    assert list(InstanceTable.by_client.query(client_id)) == [] and list(InstanceTable.live.query(client_id)) == []
    assert all(list(InstanceTable.by_agent.query(a)) == [] for a in agent_ids)
    assert all(list(ReplicaTable.query(a)) == [] and list(CommandTable.query(a)) == [] for a in agent_ids)
    assert list(ReplicaTable.by_client.query(client_id)) == [] and list(ReplicaTable.open_by_client.query(client_id)) == []
    assert list(NotificationTable.query(client_id)) == []
    assert list(NotificationTable.unread_by_client.query(client_id)) == []
    assert list(SwitchTable.query(client_id)) == [] and list(InterruptionTable.query(client_id)) == []
    for path, token in tokens.values():
        for url in (path, f"{path}&next_token={token}" if token else path):
            status, body = unchanged(lambda: caller.get(url))  # noqa: B023
            assert_error(status, body, 401)


# --- numbers and times -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timing", [
    {"switch_initiated_at": "now", "new_instance_launched_at": "-1y", "new_instance_ready_at": "-2y",
     "traffic_switched_at": "-3y"},
    {"switch_initiated_at": "+9y", "new_instance_ready_at": "-9y"},
    {"switch_initiated_at": "0001-01-01T00:00:00Z", "new_instance_ready_at": "9999-12-31T23:59:59Z"},
    {"switch_initiated_at": "9999-12-31T23:59:59-12:00", "new_instance_ready_at": "0001-01-01T00:00:00+14:00"},
])
def test_a_switch_report_whose_times_run_backwards_or_to_the_ends_of_the_calendar_records_no_negative_duration(
        make_tenant, timing):
    """The attack: a switch report whose times run backwards (the traffic switched years before the switch began),
    or sit at the ends of what a timestamp can say (year 1 at +14:00, year 9999 at -12:00: one step more is past
    ``datetime``'s range), hoping for a 500 from the clock-skew arithmetic that moves them, or a negative duration in
    the switch history and the charts (a "downtime" the client's reports would average in). What holds: the report
    is answered (the switch happened in AWS), its times placed within when the server knows it can have happened,
    no stored duration is negative, and the history answers."""
    client_id, caller = make_tenant()
    body = registration()
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    agent_id, now = reply["agent_id"], now_utc()
    shifts = {"now": timedelta(0), "-1y": timedelta(days=-365), "-2y": timedelta(days=-730),
              "-3y": timedelta(days=-1095), "+9y": timedelta(days=9 * 365), "-9y": timedelta(days=-9 * 365)}
    times = {k: iso(now + shifts[v]) if v in shifts else v for k, v in timing.items()}

    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report",
                                switch_body(body["instance_id"], new_instance_id(), timing=times))

    assert status == 200, reply
    [row] = list(SwitchTable.query(client_id, consistent_read=True))
    assert row.total_duration_seconds is None or row.total_duration_seconds >= 0
    for at in (row.initiated_at, row.launched_at, row.ready_at, row.traffic_switched_at):
        assert at is None or now - timedelta(days=2) <= at <= now_utc()
    status, reply = caller.get(f"/api/client/{client_id}/switch-history")
    assert status == 200 and len(reply["switches"]) == 1, reply
