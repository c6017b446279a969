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


@pytest.mark.parametrize("force", ["yes", "", "2"])
def test_a_bad_force_is_400_and_changes_nothing(admin, make_tenant, force):
    client_id, _, _, _ = _standby_in_second_account(admin, make_tenant)
    before = snapshot_tables()
    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{SECOND}?force={force}")
    assert_error(status, reply, 400, field="force")
    assert diff_snapshots(before, snapshot_tables()) == {}
