"""Security walk 21: what landed in the last session, attacked by a tenant holding two client tokens (its agents on
them): a pricing report's pruning of other clients' entries of a shared pool (``agent_prices``: whether one tenant's
report can erase another's fresh price, or measure its age by a time it chose), the legacy emergency replica's repeat
that hands a held failover to the sentinel (whether it can be pointed at another tenant's instance or its held
failover), the v4 replica PUT's take-over of a ready standby and its ``standby_instance_unowned`` notification
(whether a tenant can take over another tenant's standby, make the product terminate an instance that is not its own
launch for it, or be told to terminate instances that are not its own or do not run), an agent delete's repeat keyed
on ``deleted_at`` (whether another tenant's, or one after the agent registered again, replays its effects), the
``released_at`` rows the data cleaner keeps for the product's launches (whether a re-registration on such an
instance loses the mark and gets the client's workload terminated), and the headers a request carries
(``Authorization`` spellings, a forged ``X-Forwarded-For`` against the rate limit). Each test is one attack; its
docstring says what it tries and what holds (and, when it found something, what happened before the fix)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chalicelib.repositories import pools as pool_repo
from chalicelib.tables.pools import PoolTable
from tests.api._support import assert_error, pricing_body, random_instance_type, unchanged
from tests.api.test_security_walk_19 import overtaken_at
from tests.integration.test_data_cleaner import unbounded  # noqa: F401 - the fixture
from tests.conftest import new_instance_id, registration


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _typed_agent(make_tenant, itype: str):
    """A tenant with one agent of ``itype`` in eu-west-1a: (client_id, caller, agent_id, instance_id)."""
    client_id, caller = make_tenant()
    reg = registration(instance_type=itype)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], reg["instance_id"]


def _report(caller, agent_id: str, instance_id: str, itype: str, price: float, at: datetime) -> dict:
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report",
                                pricing_body(instance_id, itype, {"eu-west-1a": price}, collected_at=at))
    assert status == 200, reply
    return reply


def _entries(pool_id: str) -> dict:
    row = PoolTable.get(pool_id, consistent_read=True)
    return row.agent_prices.as_dict() if row.agent_prices is not None else {}


# --- a pricing report's pruning of other clients' entries --------------------------------------------------------


def _shared_pool(make_tenant):
    """A pool of a fresh instance type two tenants' agents run in, the victim's price reported three hours ago:
    (type, pool, now, victim (client id, caller, agent id, instance), attacker (the same))."""
    itype = random_instance_type()
    victim = _typed_agent(make_tenant, itype)
    attacker = _typed_agent(make_tenant, itype)
    now = _now()
    _report(victim[1], victim[2], victim[3], itype, 0.0500, now - timedelta(hours=3))
    return itype, f"{itype}.eu-west-1a", now, victim, attacker


def test_a_report_never_prunes_another_tenants_entry_refreshed_while_it_ran(make_tenant, monkeypatch):
    """The attack: the attacker's agent reports a pool the victim also prices, timed so that the victim's entry,
    untouched for fifteen days when the attacker's report reads the pool, is refreshed by the victim's own report
    before the attacker's write (the victim's agent came back; an attacker reporting every few seconds needs no luck).
    The pruning decides which entries are stale on the row as read, and removes them in its write.

    Before walk 21 the remove was unconditional: the attacker's write deleted the victim's entry its own report had
    just written, so the victim's fresh price (the only price of a pool the spot-prices job does not cover) was gone
    until its next report, its decisions pricing the pool at nothing. What holds now: an entry is removed only if it
    is still the one read (its ``at`` unchanged); a refreshed one stays, the attacker's own entry is written all the
    same."""
    itype, pool, now, (victim_id, victim, victim_agent, victim_instance), (
        attacker_id, attacker, attacker_agent, attacker_instance) = _shared_pool(make_tenant)
    stale = (now - timedelta(days=15)).isoformat()
    PoolTable(pool).update(actions=[PoolTable.agent_prices[victim_id].set(
        {"price": "0.0500", "at": stale, "recent": []})])

    refreshed = overtaken_at(monkeypatch, pool_repo, "_stale_entries", before=True, second=lambda: _report(
        victim, victim_agent, victim_instance, itype, 0.0510, now - timedelta(minutes=1)))
    _report(attacker, attacker_agent, attacker_instance, itype, 0.0900, now - timedelta(minutes=2))

    assert refreshed and refreshed[0]["points_written"] >= 1
    entries = _entries(pool)
    assert victim_id in entries, "the victim's fresh entry was pruned by the attacker's report"
    assert entries[victim_id]["at"] != stale and Decimal(entries[victim_id]["price"]) == Decimal("0.0510")
    assert attacker_id in entries and Decimal(entries[attacker_id]["price"]) == Decimal("0.0900")


def test_a_report_prunes_only_entries_past_the_kept_age_whatever_time_it_claims(make_tenant):
    """The attack: the attacker's agent reports a pool with its ``collected_at`` as far ahead as the clock skew
    allows, hoping the pruning measures the other entries' age against the report's time (which the agent chooses)
    and so erases the victim's entry of thirteen days. What holds: the age is measured against the server's clock;
    the victim's entry (13 days) stays, a gone client's (15 days) goes, and the victim still reads its own price."""
    itype, pool, now, (victim_id, victim, victim_agent, victim_instance), (
        attacker_id, attacker, attacker_agent, attacker_instance) = _shared_pool(make_tenant)
    thirteen = (now - timedelta(days=13)).isoformat()
    PoolTable(pool).update(actions=[
        PoolTable.agent_prices[victim_id].set({"price": "0.0500", "at": thirteen, "recent": []}),
        PoolTable.agent_prices["cl-gone"].set({"price": "0.0400", "at": (now - timedelta(days=15)).isoformat(),
                                               "recent": []})])
    _report(attacker, attacker_agent, attacker_instance, itype, 0.0900, now + timedelta(seconds=50))
    entries = _entries(pool)
    assert entries[victim_id]["at"] == thirteen and "cl-gone" not in entries
    assert pool_repo.latest_prices([pool])[pool].seen_by(victim_id).price == Decimal("0.0500")
    assert pool_repo.latest_prices([pool])[pool].seen_by(attacker_id).price == Decimal("0.0900")


# --- the v4 replica PUT: the take-over and the standby_instance_unowned notification --------------------------------


def _unowned_notices(client_id: str) -> list:
    from chalicelib.tables.notifications import NotificationTable

    return [n for n in NotificationTable.query(client_id, consistent_read=True) if n.kind == "standby_instance_unowned"]


def test_a_put_onto_a_closed_standby_tells_of_no_instance_the_client_does_not_run(make_tenant):
    """The attack: the attacker deletes a standby of its own, then PUTs onto the closed row instance ids that are not
    instances it launched: a made-up one, the victim's registered primary, and the victim's standby (the product's
    launch for the victim, tagged with its client), in the account they share (a self-hosted stage's home account).
    The answer is 409 either way; the question is what the refusal writes. Before walk 21 each PUT wrote a warning
    notification telling the attacker's client that the named instance "was launched for" its standby, "runs
    unmanaged" and to "terminate it if you do not need it": a 4xx that changed something, false for an instance that
    does not run, and an instruction to terminate another tenant's primary or standby. What holds now: the
    notification is written only for a live instance of the client's account that no one's row holds and no other
    client's tag names (the checks the PUT makes of any instance it attaches); the answers are the same 409
    ``replica_not_active``; the victim's instances run on."""
    from tests.api.test_replicas import agent_launched, manual_agent, server_standby
    from tests.e2e.failover_support import state_of

    attacker_id, attacker, agent_id, _, replica, path = server_standby(make_tenant)
    _, victim, victim_agent, victim_primary, _ = manual_agent(make_tenant)
    status, theirs = victim.post(f"/api/agents/{victim_agent}/replicas", {})
    assert status == 201 and theirs["instance_id"], theirs
    assert attacker.call("DELETE", path)[0] == 200
    made_up = "i-0" + "7" * 16
    for named in (made_up, victim_primary, theirs["instance_id"]):
        status, reply = attacker.call("PUT", path, {"instance_id": named, "status": "syncing"})
        assert_error(status, reply, 409, code="replica_not_active")
    assert _unowned_notices(attacker_id) == []
    assert state_of(victim_primary) == "running" and state_of(theirs["instance_id"]) == "running"
    launched = agent_launched("us-east-1", "us-east-1c")  # the notification's own case still tells, once
    for _ in range(2):
        status, reply = attacker.call("PUT", path, {"instance_id": launched, "status": "syncing"})
        assert_error(status, reply, 409, code="replica_not_active")
    told = _unowned_notices(attacker_id)
    assert len(told) == 1 and launched in told[0].message


# --- the legacy emergency replica's repeat, which hands a held failover to the sentinel ----------------------------


def test_an_emergency_replica_naming_another_tenants_instance_in_failover_moves_nothing(make_tenant, started):
    """The attack: the victim's primary is being replaced (its termination notice claimed, the failover started). The
    attacker's own auto-switch agent asks for an emergency replica for a ``termination-notice`` naming the victim's
    primary (in the body, and through its own agent's path), and then the victim's agent's path with its own token,
    hoping the repeat path (a held failover handed to the sentinel again, answered with the held interruption) starts
    the victim's workflow again, counts another interruption, or answers the victim's interruption id. What holds:
    404 ``instance_id`` (as for a made-up id: the same answer) or 404 for the victim's agent, nothing written, no
    execution started, the victim's interruption named nowhere."""
    from tests.e2e.failover_support import register_agent

    _, victim, victim_agent, victim_primary, _ = register_agent(make_tenant)
    status, reply = victim.post(f"/api/agents/{victim_agent}/termination-imminent", {})
    assert status == 202 and reply.get("interruption_id"), reply
    held = reply["interruption_id"]
    _, attacker, attacker_agent, _, _ = register_agent(make_tenant)
    executions = len(started)
    body = {"signal_type": "termination-notice", "instance_id": victim_primary}
    made_up = {**body, "instance_id": "i-0" + "5" * 16}
    path = f"/api/agents/{attacker_agent}/create-emergency-replica"
    answers = [unchanged(lambda b=b: attacker.post(path, b)) for b in (body, made_up)]
    for status, reply in answers:
        assert_error(status, reply, 404, field="instance_id")
    assert {k: v for k, v in answers[0][1].items() if k not in ("message", "request_id")} == \
        {k: v for k, v in answers[1][1].items() if k not in ("message", "request_id")}
    status, reply = unchanged(lambda: attacker.post(f"/api/agents/{victim_agent}/create-emergency-replica",
                                                    {"signal_type": "termination-notice"}))
    assert_error(status, reply, 404)
    assert len(started) == executions
    assert held not in str(answers) + str(reply)


# --- an agent delete's repeat, keyed on its deleted_at ---------------------------------------------------------------


def _kinds(client_id: str, kind: str) -> list:
    from chalicelib.tables.notifications import NotificationTable

    return [n for n in NotificationTable.query(client_id, consistent_read=True) if n.kind == kind]


def test_an_agent_delete_repeated_by_another_tenant_or_after_a_re_registration_replays_nothing(make_tenant):
    """The attack: within the 15 minutes in which a repeat of an agent's delete finishes what its first run left
    (keyed on the agent's ``deleted_at``: commands cancelled, the notification, the audit event, the standbys it
    closed), the attacker sends the same DELETE of the victim's deleted agent with its own token, and the victim's
    agent registers again (same logical id, on a new instance: its deleted one is ``instance_replaced``) and is deleted again. What holds: the attacker's DELETE is 404 as for a
    made-up agent and writes nothing; the agent registered again is a live agent (the first delete's repeat window
    does not make its new registration deleted), and its second delete is a delete of its own (a second
    notification), never a replay answered from the first."""
    victim_id, victim = make_tenant()
    reg = registration()
    status, reply = victim.post("/api/agents/register", reg)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    _, attacker = make_tenant()
    assert victim.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    assert len(_kinds(victim_id, "agent_deleted")) == 1
    for target in (agent_id, "ag-" + "0" * 24):
        status, reply = unchanged(lambda t=target: attacker.call("DELETE", f"/api/client/agents/{t}"))
        assert_error(status, reply, 404, field="agent_id")
    status, again = victim.post("/api/agents/register", {**reg, "instance_id": new_instance_id()})
    assert status == 200, again
    from chalicelib.repositories import agents as agent_repo

    assert not agent_repo.require(victim_id, again["agent_id"]).deleted
    status, reply = victim.call("DELETE", f"/api/client/agents/{again['agent_id']}")
    assert status == 200 and reply["status"] == "deleted", reply
    assert len(_kinds(victim_id, "agent_deleted")) == 2


# --- the released rows of product-launched instances: what a re-registration makes of them ---------------------------


def test_another_agent_registering_on_an_instance_the_product_launched_never_gets_it_terminated_later(
        api, make_tenant, unbounded):  # noqa: F811 - the fixture
    """The attack (on the client itself, by its own hand, the ground of the data cleaner's ``released_at`` change):
    the client's agent runs on an instance the product launched (a failover's replacement: tagged as ours, its row
    naming the replica). The client deletes that agent (the row released: kept by the data cleaner, kept by the
    cleanup), installs the agent again on the same host under another logical id (a new agent registers on the
    instance), later deletes that one too, and waits past the agent retention. Before walk 21 the new registration
    wrote the row afresh, without its replica: the second delete released a row that no longer said the product
    launched the instance, the data cleaner removed it with the agent, and the next cleanup run found a tagged
    instance no row owned and terminated it, the client's running workload. What holds now: a registration keeps the
    client's own row's mark of the product's launch (never another client's); the row stays, and the instance runs."""
    from chalicelib.jobs import data_cleaner
    from chalicelib.repositories import agents as agent_repo
    from chalicelib.tables.instances import InstanceTable
    from tests.conftest import invoke_schedule
    from tests.e2e.failover_support import ZONES, state_of
    from tests.integration.test_cleanup import launch, past_grace
    from tests.integration.test_data_cleaner import _walk_from

    client_id, caller = make_tenant()
    first = f"web-{uuid.uuid4().hex[:8]}"
    reg = {"instance_type": "t3.micro", "region": "us-east-1", "az": ZONES[1]}
    status, reply = caller.post("/api/agents/register", registration(instance_id=launch(None), logical_agent_id=first,
                                                                     **reg))
    assert status == 200, reply
    agent_id, replica_id = reply["agent_id"], f"rep-{uuid.uuid4().hex[:8]}"
    ours = launch({"ManagedBy": "SpotOptimizer", "AgentId": agent_id, "ClientId": client_id, "LogicalAgentId": first,
                   "ReplicaId": replica_id, "SpotOptimizerStage": "dev"})
    status, reply = caller.post("/api/agents/register", registration(instance_id=ours, logical_agent_id=first, **reg))
    assert status == 200, reply
    # as a failover's hand-over leaves the replacement's row: it names the replica the product launched
    InstanceTable(ours).update(actions=[InstanceTable.replica_id.set(replica_id)])
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200

    status, again = caller.post("/api/agents/register", registration(instance_id=ours, **reg))  # another logical id
    assert status == 200, again
    assert caller.call("DELETE", f"/api/client/agents/{again['agent_id']}")[0] == 200
    row = agent_repo.instance_row(ours)
    assert (row.agent_id, row.replica_id) == (again["agent_id"], replica_id) and row.released_at is not None

    now = datetime.now(UTC)
    later = now + timedelta(days=unbounded.agent_retention_days + 1)
    _walk_from(client_id, now)
    data_cleaner.run(later)
    assert agent_repo.instance_row(ours) is not None, "the released row of our launch went with the agent"
    outcome = invoke_schedule(api, "cleanup", now=past_grace(datetime.now(UTC)))
    assert ours not in outcome["terminated"] and state_of(ours) == "running"


def test_the_same_agent_revived_on_an_instance_the_product_launched_keeps_the_mark(api, make_tenant):
    """The legacy agent itself coming back (systemd restarting it on its host after the client's delete: revived under
    the same id, legacy audit 07c) on an instance the product launched: the revival writes the row afresh too, and
    before this it dropped the replica (the revival returned before the row it read was kept), so the next delete
    released a row the data cleaner would remove and the cleanup then terminated the client's workload as an orphan.
    What holds: the revived row still names the replica."""
    from chalicelib.repositories import agents as agent_repo
    from chalicelib.tables.instances import InstanceTable
    from tests.e2e.failover_support import ZONES
    from tests.integration.test_cleanup import launch

    client_id, caller = make_tenant()
    logical = f"web-{uuid.uuid4().hex[:8]}"
    reg = {"instance_type": "t3.micro", "region": "us-east-1", "az": ZONES[1], "logical_agent_id": logical}
    status, reply = caller.post("/api/agents/register", registration(instance_id=launch(None), **reg))
    assert status == 200, reply
    agent_id, replica_id = reply["agent_id"], f"rep-{uuid.uuid4().hex[:8]}"
    ours = launch({"ManagedBy": "SpotOptimizer", "AgentId": agent_id, "ClientId": client_id, "LogicalAgentId": logical,
                   "ReplicaId": replica_id, "SpotOptimizerStage": "dev"})
    assert caller.post("/api/agents/register", registration(instance_id=ours, **reg))[0] == 200
    InstanceTable(ours).update(actions=[InstanceTable.replica_id.set(replica_id)])
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200

    status, again = caller.post("/api/agents/register", registration(instance_id=ours, **reg))
    assert status == 200 and (again["agent_id"], again["action"]) == (agent_id, "revived"), again
    row = agent_repo.instance_row(ours)
    assert (row.is_active, row.released_at, row.replica_id) == (True, None, replica_id)


# --- headers: Authorization variants, forwarded-for ------------------------------------------------------------------


def test_an_authorization_header_in_any_spelling_is_its_own_token_or_401_never_another_client(api, make_tenant):
    """The attack: the attacker sends its own token in every spelling of ``Authorization`` a proxy or a client library
    might produce (scheme case, extra spaces, a second scheme or token after it, no space, another scheme), with and
    without an ``X-Client-Token`` naming the victim's token's prefix or a made-up token, hoping one is read as
    another client, skips the client lookup, or ends in a 500. What holds: each answer is 200 for the attacker's own
    client (a spelling of the Bearer scheme with the token alone) or a JSON 401; none names another client."""
    from tests.conftest import Caller

    attacker_id, attacker = make_tenant()
    victim_id, _ = make_tenant()
    token = attacker.token
    spellings = {f"bearer {token}": True, f"BEARER   {token}  ": True, f"Bearer {token}": True,
                 f"Bearer {token} {token}": False, f"Bearer {token},Bearer x": False, f"Bearer{token}": False,
                 f"Basic {token}": False, f"Token {token}": False, "Bearer ": False, f"Bearer {token[:-1]}": False}
    for value, good in spellings.items():
        for extra in ({}, {"X-Client-Token": "so_" + "A" * 43}):
            response = api.http.get("/api/client/validate", headers={"Authorization": value, **extra})
            body = json.loads(response.body)
            if good:
                assert response.status_code == 200 and body["client_id"] == attacker_id, (value, body)
            else:
                assert_error(response.status_code, body, 401)
            assert victim_id not in json.dumps(body)
    status, body = Caller(api.http).get("/api/client/validate", headers={"X-Client-Token": token})
    assert status == 200 and body["client_id"] == attacker_id


def test_a_forged_forwarded_for_buys_no_requests_past_the_rate_limit(api, admin, make_tenant, monkeypatch):
    """The attack: a tenant at its rate limit sends every next request with another ``X-Forwarded-For`` (and
    ``X-Real-IP``, ``Forwarded``) address, as if it came from elsewhere, hoping the limit is kept per source address.
    What holds: the limit is the client's, whatever the request says of its origin: 429 from the first request past
    it, with or without the headers."""
    from datetime import timezone

    from chalicelib import rate_limit

    now = datetime(2026, 1, 5, 12, 7, 10, tzinfo=timezone.utc)
    monkeypatch.setattr(rate_limit, "wall_clock", lambda: now)
    rate_limit.reset_container_state()
    client_id, caller = make_tenant()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/rate-limit", {"requests_per_window": 2})
    assert status == 200, reply
    answers = [caller.get("/api/client/validate", headers={
        "X-Forwarded-For": f"203.0.113.{k}", "X-Real-IP": f"198.51.100.{k}", "Forwarded": f"for=192.0.2.{k}"})[0]
        for k in range(5)]
    assert answers == [200, 200, 429, 429, 429], answers
    rate_limit.reset_container_state()
    status, body = caller.get("/api/client/validate", headers={"X-Forwarded-For": "10.9.8.7"})
    assert_error(status, body, 429)
    rate_limit.reset_container_state()


def test_a_tenant_never_takes_over_another_tenants_ready_standby_nor_gets_it_terminated(make_tenant):
    """The attack: the victim's standby is the product's own launch and ready, the case in which an agent's PUT of
    its own instance now takes a standby over and the product terminates its own launch. The attacker PUTs an
    instance it launched onto the victim's standby (the victim's agent and replica ids in the path, its own token),
    and onto a ready standby of its own naming the victim's standby instance, hoping for the take-over (the victim's
    instance terminated, or handed to the attacker's row). What holds: 404 for the victim's path (as for a made-up
    replica), 409 ``instance_conflict`` for the victim's instance, nothing written, both standbys and their instances
    as they were."""
    from chalicelib.repositories import replicas as replica_repo
    from tests.api._support import diff_snapshots, snapshot_world
    from tests.api.test_replicas import agent_launched, server_standby
    from tests.e2e.failover_support import state_of

    _, _, victim_agent, _, victim_standby, victim_path = server_standby(make_tenant)
    _, attacker, _, _, own_standby, own_path = server_standby(make_tenant)
    now = datetime.now(UTC)
    for standby in (victim_standby, own_standby):
        replica_repo.transition(standby, replica_repo.ReplicaStatus.READY, now)
    launched = agent_launched("us-east-1", "us-east-1c")
    before = snapshot_world()
    for path in (victim_path, victim_path.rsplit("/", 1)[0] + "/rep-20261207T000000000000-made"):
        status, reply = attacker.call("PUT", path, {"instance_id": launched, "status": "ready"})
        assert_error(status, reply, 404)
    status, reply = attacker.call("PUT", own_path, {"instance_id": victim_standby.instance_id, "status": "ready"})
    assert_error(status, reply, 409, code="instance_conflict")
    assert diff_snapshots(before, snapshot_world()) == {}
    stored = replica_repo.get(victim_agent, victim_standby.replica_id)
    assert (stored.instance_id, stored.own_launch, stored.status.value) == (victim_standby.instance_id, True, "ready")
    assert state_of(victim_standby.instance_id) == "running" and state_of(own_standby.instance_id) == "running"
