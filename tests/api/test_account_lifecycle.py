"""The client-account lifecycle (multi-account tenancy): unbinding an account the product still works in, rotating
a client's ExternalId, and a verified re-registration that proves another account.

Accounts are moto accounts reached through moto's STS (tests/api/test_ownership.py explains the set-up); the
client of most tests is bound to two accounts and runs a verified agent and a product-launched standby in the
second (tests/api/test_security_walk_12.py ``_standby_in_second_account``).
"""

from __future__ import annotations

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from components.replica_coordinator import ReplicaStatus
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.api.test_ownership import assume_role_tenancy, manual  # noqa: F401 - a fixture
from tests.api.test_security_walk_12 import FIRST, SECOND, _standby_in_second_account, _state_in

pytestmark = pytest.mark.usefixtures("aws_signs_locally", "assume_role_tenancy")


# --- unbinding an account the product still works in ------------------------------------------------------------


def test_unbinding_an_account_with_agents_and_standbys_there_is_409_naming_them_and_changes_nothing(admin,
                                                                                                    make_tenant):
    """The defect: the DELETE unbound at once, leaving the agent and the standby the product launched in the account
    running and managed-looking, with nothing more possible there (every action ``account_not_bound``)."""
    client_id, _, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    before = snapshot_tables()

    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}")

    assert_error(status, reply, 409, code="account_in_use", field="account_id")
    assert agent.logical_agent_id in reply["message"] and standby["replica_id"] in reply["message"]
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert _state_in(SECOND, standby["instance_id"]) == "running"
    # the other account holds nothing of the client: it unbinds as before
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{FIRST}")
    assert status == 200 and [a["account_id"] for a in reply["accounts"]] == [SECOND] and reply["released"] is None


def test_a_forced_unbinding_retires_the_standbys_and_stops_the_agents_there(admin, make_tenant):
    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)

    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")

    assert status == 200, reply
    assert [a["account_id"] for a in reply["accounts"]] == [FIRST]
    assert reply["released"] == {"agents": [agent_id], "standbys": [
        {"replica_id": standby["replica_id"], "agent_id": agent_id, "instance_id": standby["instance_id"],
         "retired": True}]}
    assert _state_in(SECOND, standby["instance_id"]) in ("shutting-down", "terminated")
    assert replica_repo.get(agent_id, standby["replica_id"]).status is ReplicaStatus.TERMINATED
    agent = agent_repo.get(client_id, agent_id)
    assert agent.account_id == SECOND  # pinned: never resolved to the client's remaining account
    assert not any(agent.config[k] for k in ("enabled", "auto_switch_enabled", "manual_replica_enabled",
                                             "replica_enabled"))
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert_error(status, reply, 409, code="manual_mode_required")
    manual(caller, agent_id)  # turned on again: still nothing there, nor in the client's other account
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert_error(status, reply, 409, code="account_not_bound")
    assert any(n["kind"] == "account_unbound" for n in caller.get("/api/notifications")[1]["notifications"])


def test_a_forced_unbinding_reports_a_standby_ec2_refuses_and_unbinds_anyway(admin, make_tenant, monkeypatch):
    from chalicelib.aws import ec2

    client_id, _, agent_id, standby = _standby_in_second_account(admin, make_tenant)

    def refuse(*_args, **_kwargs):
        raise ec2.Ec2Error("EC2 refused the termination")

    monkeypatch.setattr(ec2, "terminate", refuse)
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")

    assert status == 200, reply
    assert [a["account_id"] for a in reply["accounts"]] == [FIRST]
    [entry] = reply["released"]["standbys"]
    assert entry["retired"] is False and entry["error"]
    assert replica_repo.get(agent_id, standby["replica_id"]).active  # still open: it still runs


def test_a_standby_left_running_by_a_forced_unbinding_can_be_deleted_and_the_client_is_told_to_end_it(
        admin, make_tenant, monkeypatch):
    """The defect: a standby whose forced retirement failed stayed open for ever: its DELETE answered 409
    ``account_not_bound`` (the product has no role in the unbound account) on every try, and it blocked its agent's
    move to another account. Now the DELETE closes it ``failed`` with a reason naming the instance and the account
    the client must end it in (a notification and an event say so too), touching nothing in EC2; a retry answers the
    same; the agent may then move. A standby whose account is still bound keeps EC2-first: a refused termination
    leaves it as it was."""
    from datetime import UTC, datetime

    from chalicelib.aws import ec2
    from chalicelib.repositories import activity

    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    path = f"/api/agents/{agent_id}/replicas/{standby['replica_id']}"
    real_terminate, calls = ec2.terminate, []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise ec2.Ec2Error("EC2 refused the termination")

    monkeypatch.setattr(ec2, "terminate", refuse)
    # still bound: EC2 first, a failure changes nothing (a retry will finish)
    before = snapshot_tables()
    status, reply = caller.call("DELETE", path)
    assert status == 503 and reply["error"] == "ec2_unavailable", reply
    assert diff_snapshots(before, snapshot_tables()) == {}
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")
    assert status == 200 and reply["released"]["standbys"][0]["retired"] is False, reply
    assert replica_repo.get(agent_id, standby["replica_id"]).active
    monkeypatch.setattr(ec2, "terminate", real_terminate)
    tries = len(calls)

    status, reply = caller.call("DELETE", path)

    assert status == 200, reply
    assert reply["status"] == "failed" and reply["replica_id"] == standby["replica_id"]
    assert standby["instance_id"] in reply["message"] and SECOND in reply["message"]
    assert "could not terminate" in reply["message"] or "not terminated" in reply["message"]
    assert len(calls) == tries and _state_in(SECOND, standby["instance_id"]) == "running"  # no EC2 call: no role
    closed = replica_repo.get(agent_id, standby["replica_id"])
    assert not closed.active and closed.error_message == reply["message"]
    notes = [n for n in caller.get("/api/notifications")[1]["notifications"] if n["kind"] == "standby_not_terminated"]
    assert len(notes) == 1 and standby["instance_id"] in notes[0]["message"] and SECOND in notes[0]["message"]
    events = [e for e in activity.recent_events(datetime.now(UTC), limit=500)
              if e.event_type == "standby_abandoned" and e.agent_id == agent_id]
    assert len(events) == 1 and events[0].metadata == {"replica_id": standby["replica_id"], "account_id": SECOND}
    # a retry answers the same and writes nothing more
    before = snapshot_tables()
    status, again = caller.call("DELETE", path)
    assert (status, again) == (200, reply)
    assert diff_snapshots(before, snapshot_tables()) == {}
    # the agent is no longer held in the unbound account by it
    agent = agent_repo.get(client_id, agent_id)
    status, moved, _ = _register_verified(caller, FIRST, agent.logical_agent_id)
    assert status == 200 and moved["account_id"] == FIRST, moved


def test_an_agent_whose_standby_a_forced_unbinding_left_running_can_be_deleted(admin, make_tenant, monkeypatch):
    """The same defect on the agent's DELETE: it retires every open standby EC2 first, and the unreachable one
    answered 409 ``account_not_bound`` for ever, the agent never deleted. Now that standby is closed as by its own
    DELETE (the client told to end it), listed in ``not_terminated_replicas``, and the agent is deleted."""
    from chalicelib.aws import ec2

    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    real_terminate = ec2.terminate
    monkeypatch.setattr(ec2, "terminate", lambda *a, **k: (_ for _ in ()).throw(ec2.Ec2Error("refused")))
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")
    assert status == 200 and reply["released"]["standbys"][0]["retired"] is False, reply
    monkeypatch.setattr(ec2, "terminate", real_terminate)

    status, reply = caller.call("DELETE", f"/api/client/agents/{agent_id}")

    assert status == 200, reply
    assert reply["status"] == "deleted" and reply["terminated_replicas"] == []
    [left] = reply["not_terminated_replicas"]
    assert left["replica_id"] == standby["replica_id"] and left["instance_id"] == standby["instance_id"]
    assert standby["instance_id"] in left["message"] and SECOND in left["message"]
    assert replica_repo.get(agent_id, standby["replica_id"]).status is ReplicaStatus.FAILED
    assert any(n["kind"] == "standby_not_terminated" for n in caller.get("/api/notifications")[1]["notifications"])
    assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200  # idempotent


@pytest.mark.usefixtures("fleet_jobs_see_this_test_only")
def test_the_coordinator_closes_a_standby_a_forced_unbinding_left_running_once_and_tells_the_client(
        admin, make_tenant, monkeypatch):
    """The defect: the replica coordinator met such a standby every minute, for ever (until the client deleted it):
    each run read its replicas and its client, failed on the unbound account (``skipped_no_account``, a warning) and
    left it open; the client was never told. Now the first run closes it as its DELETE would (``replicas.abandon``:
    ``failed``, the reason, one notification and one event naming the instance and the account; no EC2 call, no
    role there), and later runs neither read nor retry anything of it. Re-enabled, its agent gets no new standby in
    the unbound account either (nothing launched, no row written)."""
    from datetime import UTC, datetime, timedelta

    from chalicelib.aws import ec2
    from chalicelib.jobs import replica_coordinator
    from chalicelib.repositories import activity
    from tests.conftest import dynamodb_calls
    from tests.e2e.failover_support import configure

    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    real_terminate = ec2.terminate
    monkeypatch.setattr(ec2, "terminate", lambda *a, **k: (_ for _ in ()).throw(ec2.Ec2Error("refused")))
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")
    assert status == 200 and reply["released"]["standbys"][0]["retired"] is False, reply
    ec2_calls = []
    for name, real in (("describe", ec2.describe), ("terminate", real_terminate), ("launch", ec2.launch)):
        monkeypatch.setattr(ec2, name, lambda *a, _real=real, _name=name, **k: (ec2_calls.append(_name),
                                                                                 _real(*a, **k))[1])
    now = datetime.now(UTC)

    first = replica_coordinator.run(now)

    assert first == {"agents": 1, "account_lost": 1, "abandon": 1}, first
    closed = replica_repo.get(agent_id, standby["replica_id"])
    assert closed.status is ReplicaStatus.FAILED and not closed.active
    assert standby["instance_id"] in closed.error_message and SECOND in closed.error_message
    assert ec2_calls == [] and _state_in(SECOND, standby["instance_id"]) == "running"
    assert agent_repo.get(client_id, agent_id).current_replica_id is None
    notes = [n for n in caller.get("/api/notifications")[1]["notifications"] if n["kind"] == "standby_not_terminated"]
    assert len(notes) == 1 and standby["instance_id"] in notes[0]["message"] and SECOND in notes[0]["message"]
    events = [e for e in activity.recent_events(datetime.now(UTC), limit=500)
              if e.event_type == "standby_abandoned" and e.agent_id == agent_id]
    assert len(events) == 1 and events[0].metadata == {"replica_id": standby["replica_id"], "account_id": SECOND}
    # the next runs: the fleet scan every run makes, nothing read, retried or written for it
    for minute in (1, 2, 3):
        with dynamodb_calls() as calls:
            assert replica_coordinator.run(now + timedelta(minutes=minute)) == {}
        assert [op for op, *_ in calls] == ["Scan"], calls
    assert ec2_calls == []
    # its client turns the agent and its manual-replica mode on again: nothing is created in the unbound account
    configure(client_id, agent_id, enabled=True, manual_replica_enabled=True)
    with dynamodb_calls() as calls:
        again = replica_coordinator.run(now + timedelta(minutes=4))
    assert again == {"agents": 1, "account_lost": 1}, again
    assert not any(op in ("PutItem", "UpdateItem", "TransactWriteItems") for op, *_ in calls), calls
    assert [r.replica_id for r in replica_repo.for_agent(agent_id)] == [standby["replica_id"]] and ec2_calls == []
    assert len([n for n in caller.get("/api/notifications")[1]["notifications"]
                if n["kind"] == "standby_not_terminated"]) == 1


@pytest.mark.usefixtures("fleet_jobs_see_this_test_only")
def test_a_coordinator_run_that_died_after_closing_such_a_standby_is_finished_by_the_next_one(admin, make_tenant,
                                                                                              monkeypatch):
    """The run's Lambda dies right after the standby's status write (its slot still held, neither the notification
    nor the event written): the next run frees the slot and writes both, once, as the DELETE's repeat would; a
    plain ``finish_closing`` would have freed the slot and left the client untold."""
    from datetime import UTC, datetime, timedelta

    from chalicelib.aws import ec2
    from chalicelib.jobs import replica_coordinator

    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    with monkeypatch.context() as m:
        m.setattr(ec2, "terminate", lambda *a, **k: (_ for _ in ()).throw(ec2.Ec2Error("refused")))
        status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")
    assert status == 200 and reply["released"]["standbys"][0]["retired"] is False, reply
    now = datetime.now(UTC)

    class Crash(BaseException):  # the Lambda's death (a timeout kills the process): no handler of the run's sees it
        pass

    with monkeypatch.context() as m:
        from chalicelib.repositories import activity

        # the status (and the instance row) written, then the process dies: the event, the notification and the
        # slot's release come after (``replicas.abandon`` releases the slot last)
        m.setattr(activity, "record_event", lambda *a, **k: (_ for _ in ()).throw(Crash("died")))
        with pytest.raises(Crash):
            replica_coordinator.run(now)
    assert replica_repo.get(agent_id, standby["replica_id"]).status is ReplicaStatus.FAILED
    assert agent_repo.get(client_id, agent_id).current_replica_id == standby["replica_id"]

    def told():
        return [n for n in caller.get("/api/notifications")[1]["notifications"] if n["kind"] == "standby_not_terminated"]

    assert told() == []

    assert replica_coordinator.run(now + timedelta(minutes=1)) == {"agents": 1, "slot_freed": 1}

    assert agent_repo.get(client_id, agent_id).current_replica_id is None
    [note] = told()
    assert standby["instance_id"] in note["message"] and SECOND in note["message"]
    assert replica_coordinator.run(now + timedelta(minutes=2)) == {} and len(told()) == 1


def _legacy_agent_bound_to_both(admin, make_tenant):
    """A legacy client (no identity documents) bound to both accounts and a legacy agent registered without a
    document: the product cannot tell which of them its instance runs in. (client id, caller, agent id)."""
    from tests.conftest import registration
    from tests.e2e.failover_support import REGION, ZONES

    client_id, caller = _bound_to_both(admin, make_tenant)
    status, reply = caller.post("/api/agents/register", registration(region=REGION, az=ZONES[0]))
    assert status == 200, reply
    agent = agent_repo.get(client_id, reply["agent_id"])
    assert agent.account_id is None
    return client_id, caller, agent.agent_id


def test_a_plain_unbinding_is_409_naming_legacy_agents_whose_account_is_unknown(admin, make_tenant):
    """The defect: a legacy agent of a client bound to two accounts resolves to no account, so a plain unbinding of
    either account did not see it and went through (the agent possibly running there, the product then acting for
    it in the other account). The product cannot know: 409 ``account_in_use`` naming it as possibly affected,
    nothing changed; forced, it is stopped and pinned like an agent known to be there."""
    client_id, caller, agent_id = _legacy_agent_bound_to_both(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    before = snapshot_tables()

    for account in (SECOND, FIRST):
        status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{account}")
        assert_error(status, reply, 409, code="account_in_use", field="account_id")
        assert agent.logical_agent_id in reply["message"] and "unknown account" in reply["message"]
    assert diff_snapshots(before, snapshot_tables()) == {}

    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force=true")
    assert status == 200, reply
    assert [a["account_id"] for a in reply["accounts"]] == [FIRST] and reply["released"]["agents"] == [agent_id]
    after = agent_repo.get(client_id, agent_id)
    assert after.account_id == SECOND and not after.config["enabled"]  # pinned: never resolved to FIRST


def test_an_unbinding_uses_the_account_an_instance_row_of_the_agent_proved(admin, make_tenant):
    """An agent whose row names no account, but one of whose instances a signed identity document proved in FIRST,
    is in FIRST: it holds FIRST, not SECOND."""
    from chalicelib.tables.instances import InstanceTable

    client_id, _, agent_id = _legacy_agent_bound_to_both(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    InstanceTable(agent.instance_id).update(actions=[InstanceTable.proven_account_id.set(FIRST)])

    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{FIRST}")
    assert_error(status, reply, 409, code="account_in_use", field="account_id")
    assert agent.logical_agent_id in reply["message"] and "unknown account" not in reply["message"]
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}")
    assert status == 200 and reply["released"] is None, reply


@pytest.mark.parametrize("force", ["yes", "", "2"])
def test_a_bad_force_is_400_and_changes_nothing(admin, make_tenant, force):
    client_id, _, _, _ = _standby_in_second_account(admin, make_tenant)
    before = snapshot_tables()
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force={force}")
    assert_error(status, reply, 400, field="force")
    assert diff_snapshots(before, snapshot_tables()) == {}


# --- rotating a client's ExternalId --------------------------------------------------------------------------------


def _bound_to_both(admin, make_tenant):
    client_id, caller = make_tenant()
    for account in (FIRST, SECOND):
        status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts",
                                   {"account_id": account, "role_arn": f"arn:aws:iam::{account}:role/SpotOptimizer-dev"})
        assert status == 201, reply
    return client_id, caller


@pytest.fixture
def trust_policies(monkeypatch):
    """The ExternalIds each role's trust policy accepts (moto's STS accepts any): ``{role_arn: {ids}}``; a role not
    named accepts any. Every AssumeRole is recorded in ``assumed``."""
    from botocore.exceptions import ClientError

    from chalicelib.aws import accounts

    accepted: dict[str, set[str]] = {}
    assumed: list[dict] = []
    real = accounts._client

    def check(params, **_):
        assumed.append(dict(params))
        allowed = accepted.get(params["RoleArn"])
        if allowed is not None and params.get("ExternalId") not in allowed:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "AssumeRole")

    def guarded(service, region):
        client = real(service, region)
        if service == "sts":
            client.meta.events.register("provide-client-params.sts.AssumeRole", check)
        return client

    monkeypatch.setattr(accounts, "_client", guarded)
    accounts.reset()
    yield accepted, assumed
    accounts.reset()


def test_an_external_id_rotation_switches_only_once_every_bound_role_accepts_the_new_id(admin, make_tenant,
                                                                                         trust_policies):
    """The defect: a client's ExternalId could never change. Now rotate → a pending id the client sees on its
    account page, the current one still used; confirm assumes every bound role with the pending id and switches
    only when all accept (409 naming the refusing accounts, nothing changed, otherwise)."""
    from chalicelib import tenancy

    accepted, assumed = trust_policies
    client_id, caller = _bound_to_both(admin, make_tenant)
    old = caller.get("/api/client/accounts")[1]["external_id"]

    status, reply = admin.post(f"/api/admin/clients/{client_id}/external-id/rotate", {})
    assert status == 201, reply
    new = reply["pending_external_id"]
    assert new.startswith("so-") and new != old and reply["external_id"] == old
    status, mine = caller.get("/api/client/accounts")
    assert (mine["external_id"], mine["pending_external_id"]) == (old, new) and mine["pending_external_id_since"]
    assert admin.post(f"/api/admin/clients/{client_id}/external-id/rotate", {})[1]["pending_external_id"] == new

    # the role in SECOND still trusts only the old id
    accepted[f"arn:aws:iam::{FIRST}:role/SpotOptimizer-dev"] = {old, new}
    accepted[f"arn:aws:iam::{SECOND}:role/SpotOptimizer-dev"] = {old}
    before = snapshot_tables()
    status, reply = admin.post(f"/api/admin/clients/{client_id}/external-id/confirm", {})
    assert_error(status, reply, 409, code="external_id_not_accepted", field="pending_external_id")
    assert SECOND in reply["message"] and FIRST not in reply["message"]
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert {tenancy.for_client(client_id, a).external_id for a in (FIRST, SECOND)} == {old}  # still in use

    accepted[f"arn:aws:iam::{SECOND}:role/SpotOptimizer-dev"] = {old, new}
    status, reply = admin.post(f"/api/admin/clients/{client_id}/external-id/confirm", {})
    assert status == 200, reply
    assert (reply["external_id"], reply["pending_external_id"]) == (new, None)
    assert {a["external_id"] for a in reply["accounts"]} == {new}
    assert {tenancy.for_client(client_id, a).external_id for a in (FIRST, SECOND)} == {new}
    # the old id may now leave the trust policies: the product's sessions use the new one
    accepted[f"arn:aws:iam::{FIRST}:role/SpotOptimizer-dev"] = {new}
    from chalicelib.aws import accounts
    accounts.reset()
    accounts.role_client("sts", "us-east-1", tenancy.for_client(client_id, FIRST))
    assert assumed[-1]["ExternalId"] == new
    status, reply = admin.post(f"/api/admin/clients/{client_id}/external-id/confirm", {})
    assert_error(status, reply, 409, code="no_pending_external_id")


def test_a_pending_external_id_rotation_can_be_cancelled_and_a_new_binding_meanwhile_uses_the_current_id(
        admin, make_tenant, trust_policies):
    client_id, caller = make_tenant()
    old = caller.get("/api/client/accounts")[1]["external_id"]
    pending = admin.post(f"/api/admin/clients/{client_id}/external-id/rotate", {})[1]["pending_external_id"]
    status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts",
                               {"account_id": FIRST, "role_arn": f"arn:aws:iam::{FIRST}:role/SpotOptimizer-dev"})
    assert status == 201 and reply["accounts"][0]["external_id"] == old and reply["pending_external_id"] == pending
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/external-id/pending")
    assert status == 200 and (reply["external_id"], reply["pending_external_id"]) == (old, None)
    assert caller.get("/api/client/accounts")[1]["pending_external_id"] is None
    assert admin.call("DELETE", f"/api/admin/clients/{client_id}/external-id/pending")[0] == 200  # idempotent


def test_two_concurrent_external_id_rotations_end_with_one_pending_id_both_answers_name(admin, make_tenant,
                                                                                        monkeypatch):
    """The defect: two rotates that both read "nothing pending" both answered 201 as if each had minted the pending id
    (and told the client twice). Now the write is conditional on no pending id: the loser mints nothing and answers
    the winner's id, 200, and only the winner records the event and notifies the client."""
    from chalicelib.repositories import clients as client_repo

    client_id, caller = make_tenant()
    real, replies, calls = client_repo.start_external_id_rotation, [], []

    def racing(client, new_id, now):  # request B read "nothing pending"; request A completes before B writes
        calls.append(new_id)
        if len(calls) == 1:
            replies.append(admin.post(f"/api/admin/clients/{client_id}/external-id/rotate", {}))
        return real(client, new_id, now)

    monkeypatch.setattr(client_repo, "start_external_id_rotation", racing)
    status_b, reply_b = admin.post(f"/api/admin/clients/{client_id}/external-id/rotate", {})
    (status_a, reply_a), = replies

    assert (status_a, status_b) == (201, 200), (reply_a, reply_b)
    pending = reply_a["pending_external_id"]
    assert pending and reply_b["pending_external_id"] == pending
    assert caller.get("/api/client/accounts")[1]["pending_external_id"] == pending
    kinds = [n["kind"] for n in caller.get("/api/notifications")[1]["notifications"]]
    assert kinds.count("external_id_rotation") == 1
    status, reply = admin.post(f"/api/admin/clients/{client_id}/external-id/rotate", {})  # a retry: idempotent
    assert (status, reply["pending_external_id"]) == (200, pending)


def test_external_id_routes_of_an_unknown_client_are_404(admin):
    for method, path in (("POST", "rotate"), ("POST", "confirm"), ("DELETE", "pending")):
        status, reply = admin.call(method, f"/api/admin/clients/cl-nobody/external-id/{path}")
        assert_error(status, reply, 404)


# --- a re-registration that proves another account ----------------------------------------------------------------


def _register_verified(caller, account: str, logical_agent_id: str | None = None) -> tuple[int, dict, str]:
    """A verified registration of a fresh primary in ``account``: (status, reply, instance id)."""
    from localmode.identity_signer import signed_identity
    from tests.api.test_ownership import in_account
    from tests.conftest import registration
    from tests.e2e.failover_support import REGION, ZONES, launch_primary, unique_type

    itype = unique_type()
    with in_account(account):
        primary = launch_primary(itype)
    document, signature = signed_identity(instance_id=primary, instance_type=itype, az=ZONES[0], region=REGION,
                                          account_id=account)
    body = {**registration(instance_id=primary, instance_type=itype, region=REGION, az=ZONES[0], mode="spot"),
            "identity_document": document, "identity_signature": signature}
    if logical_agent_id:
        body["logical_agent_id"] = logical_agent_id
    status, reply = caller.post("/api/agents/register", body)
    return status, reply, primary


def test_a_registration_proving_another_account_is_409_while_the_agent_has_standbys_in_its_old_one(admin,
                                                                                                     make_tenant):
    """The defect: the agent moved to the newly proven account silently, and its standby in the old account could
    no longer be ended (a standby is retired in its agent's account: the new one, where it is not)."""
    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    before = snapshot_tables()

    status, reply, _ = _register_verified(caller, FIRST, agent.logical_agent_id)

    assert_error(status, reply, 409, code="account_changed", field="identity_document")
    assert standby["replica_id"] in reply["message"] and SECOND in reply["message"]
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert agent_repo.get(client_id, agent_id).account_id == SECOND

    # once the standby is gone (in its account), the agent moves, audited
    status, gone = caller.call("DELETE", f"/api/agents/{agent_id}/replicas/{standby['replica_id']}")
    assert status == 200, gone
    assert _state_in(SECOND, standby["instance_id"]) in ("shutting-down", "terminated")
    status, reply, _ = _register_verified(caller, FIRST, agent.logical_agent_id)
    assert status == 200 and reply["agent_id"] == agent_id and reply["account_id"] == FIRST, reply
    from datetime import UTC, datetime

    from chalicelib.repositories import activity
    [moved] = [e for e in activity.recent_events(datetime.now(UTC), limit=500)
               if e.event_type == "agent_account_changed" and e.agent_id == agent_id]
    assert moved.metadata == {"from": SECOND, "to": FIRST}


def test_a_legacy_registration_on_another_instance_does_not_keep_the_agents_proven_account(admin, make_tenant):
    """A legacy registration (no identity document; the client runs in legacy agent mode) proves no account: on an
    instance not known to be the agent's it would have kept the account the agent was verified in, and the product
    would act there for an instance of unknown account. 409, nothing written; a restart on its own instance is fine."""
    from tests.conftest import registration
    from tests.e2e.failover_support import REGION, ZONES

    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    admin.post(f"/api/admin/clients/{client_id}/legacy-agents", {"enabled": True})
    before = snapshot_tables()

    status, reply = caller.post("/api/agents/register", registration(
        instance_type=agent.instance_type, region=REGION, az=ZONES[0], logical_agent_id=agent.logical_agent_id))

    assert_error(status, reply, 409, code="identity_document_required", field="identity_document")
    assert diff_snapshots(before, snapshot_tables()) == {}
    status, reply = caller.post("/api/agents/register", registration(
        instance_id=agent.instance_id, instance_type=agent.instance_type, region=REGION, az=ZONES[0],
        logical_agent_id=agent.logical_agent_id))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert agent_repo.get(client_id, agent_id).account_id == SECOND
