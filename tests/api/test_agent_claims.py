"""What a verified agent says about its instances moves the product's idea of which instance is the agent's:
launches copy that instance, a failover retires it under auto-terminate, a hand-over may take an EIP or target
group from it. So a verified agent cannot make an instance its own by naming it: a switch report's new instance
must be shown by EC2 in the agent's account as the replacement the agent launched for its old instance, and a
heartbeat cannot move the agent to an instance it was never recorded on."""

from __future__ import annotations

import pytest

from localmode.identity_signer import signed_identity
from tests.api._support import assert_error, diff_snapshots, live_instance, snapshot_tables, switch_body
from tests.conftest import Caller, registration

ZONE = "eu-west-1b"


@pytest.fixture
def verified_agent(make_tenant, api, aws_signs_locally):
    """(client_id, client caller, agent id, agent caller, its instance id) of a client without legacy mode."""
    client_id, caller = make_tenant(legacy=False)
    body = registration()
    document, signature = signed_identity(instance_id=body["instance_id"], instance_type=body["instance_type"],
                                          az=body["az"], region=body["region"])
    status, reply = caller.post("/api/agents/register", {**body, "identity_document": document,
                                                          "identity_signature": signature})
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], Caller(api.http, token=reply["agent_credential"]), body["instance_id"]


@pytest.mark.parametrize("named", ["bastion", "unknown", "another_clients", "replacing_another"])
def test_a_switch_report_cannot_make_an_instance_that_is_not_the_agents_its_own(verified_agent, named):
    """GIVEN a verified agent WHEN its switch report names as the new instance an instance of the account it did
    not launch (an operator's bastion), one EC2 does not know, another client's, or one launched to replace
    another instance THEN 409 not_owned and nothing is written (the agent stays on its instance)."""
    _, _, agent_id, me, own = verified_agent
    new = {"bastion": lambda: live_instance({"Name": "operators-bastion"}),
           "unknown": lambda: "i-0123456789abcdef1",
           "another_clients": lambda: live_instance({"ManagedBy": "SpotOptimizer", "ClientId": "cl-victim",
                                                "SpotOptimizerStage": "dev", "ReplacesInstance": own}),
           "replacing_another": lambda: live_instance({"ReplacesInstance": "i-0aaaaaaaaaaaaaaaa"})}[named]()
    before = snapshot_tables()
    status, reply = me.post(f"/api/agents/{agent_id}/switch-report", switch_body(own, new, new_az=ZONE))
    assert_error(status, reply, 409, code="not_owned", field="new_instance.instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_a_switch_report_naming_the_replacement_the_agent_launched_is_recorded(verified_agent):
    """GIVEN the instance the product's agent launched for a switch (tagged ReplacesInstance=<old>) WHEN the report
    names it THEN it is recorded, the agent moves to it, and a repeated report is a duplicate."""
    client_id, _, agent_id, me, own = verified_agent
    from chalicelib.repositories import agents

    new = live_instance({"ManagedBy": "SpotOptimizer", "ReplacesInstance": own, "LogicalAgentId": "web"})
    for duplicate in (False, True):
        status, reply = me.post(f"/api/agents/{agent_id}/switch-report", switch_body(own, new, new_az=ZONE))
        assert status == 200 and reply["duplicate"] is duplicate, reply
    assert agents.get(client_id, agent_id).instance_id == new


@pytest.mark.parametrize("claim", [{"new_az": "eu-west-1c"}, {"new_mode": "ondemand"}, {"type": "m5.xlarge"}])
def test_a_switch_report_cannot_say_its_replacement_runs_elsewhere_than_ec2_shows(verified_agent, claim):
    """GIVEN the replacement the product's agent launched (m5.large, spot, eu-west-1b) WHEN the report gives it
    another zone, mode or type THEN 409 placement_mismatch naming the field, nothing written. Before, the report's
    placement became the agent row's (what its replacements copy, and the pool the fleet's exposure counted it
    in): a verified tenant could place its agents in any pool it named."""
    _, _, agent_id, me, own = verified_agent
    new = live_instance({"ManagedBy": "SpotOptimizer", "ReplacesInstance": own})
    body = switch_body(own, new, new_az=claim.get("new_az", ZONE), new_mode=claim.get("new_mode", "spot"))
    if "type" in claim:
        body["new_instance"]["instance_type"] = claim["type"]
        body["new_instance"].pop("pool_id", None)
    field = {"new_az": "az", "new_mode": "mode", "type": "instance_type"}[next(iter(claim))]
    before = snapshot_tables()
    status, reply = me.post(f"/api/agents/{agent_id}/switch-report", body)
    assert_error(status, reply, 409, code="placement_mismatch", field=f"new_instance.{field}")
    assert diff_snapshots(before, snapshot_tables()) == {}


@pytest.mark.parametrize("named", ["bastion", "unknown"])
def test_a_heartbeat_cannot_move_a_verified_agent_to_an_instance_that_is_not_its_own(verified_agent, named):
    """GIVEN a verified agent WHEN its heartbeat names an instance it was never recorded on (not registered with
    an identity document, not a reported switch, not a promotion) THEN 404 and nothing is written: the agent's
    instance (which its standbys and replacements are copied from) stays the verified one."""
    client_id, _, agent_id, me, own = verified_agent
    from chalicelib.repositories import agents

    new = live_instance({"Name": "operators-bastion"}) if named == "bastion" else "i-0123456789abcdef2"
    before = snapshot_tables()
    status, reply = me.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online", "instance_id": new})
    assert_error(status, reply, 404, field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert agents.get(client_id, agent_id).instance_id == own


def test_a_heartbeat_naming_the_verified_agents_own_instance_is_recorded(verified_agent):
    _, _, agent_id, me, own = verified_agent
    status, reply = me.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online", "instance_id": own,
                                                                   "az": "eu-west-1a", "mode": "spot"})
    assert status == 200 and reply["status"] == "online", reply


@pytest.mark.parametrize("how", ["create", "create-ready"])
def test_a_verified_agents_standby_cannot_be_an_instance_the_product_did_not_launch(verified_agent, how):
    """GIVEN a verified agent in manual-replica mode WHEN its client records an instance of the (shared) account
    that the product did not launch for it (an operator's bastion) as the agent-launched standby THEN 409 not_owned
    and nothing is written: promoted, it would become the agent's primary, and the next failover would retire it."""
    _, caller, agent_id, _, _ = verified_agent
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})
    assert status == 200, reply
    bastion = live_instance({"Name": "operators-bastion"})
    body = {"instance_id": bastion, **({"status": "ready"} if how == "create-ready" else {})}
    before = snapshot_tables()
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", body)
    assert_error(status, reply, 409, code="not_owned", field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}


@pytest.mark.parametrize("legacy", [False, True])
def test_a_heartbeat_cannot_give_the_agent_a_type_outside_the_policy(make_tenant, api, aws_signs_locally, legacy):
    """GIVEN an agent (verified, or a legacy one on its client token) WHEN its heartbeat says its instance is of a
    type the client's policy refuses THEN 409 instance_type_not_allowed and nothing is written, as a registration
    naming it would be: the recorded type is what standbys, replacements and switches are launched as."""
    from chalicelib.repositories import agents

    client_id, caller = make_tenant(legacy=legacy)
    body = registration()
    if not legacy:
        document, signature = signed_identity(instance_id=body["instance_id"], instance_type=body["instance_type"],
                                              az=body["az"], region=body["region"])
        body = {**body, "identity_document": document, "identity_signature": signature}
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    me = caller if legacy else Caller(api.http, token=reply["agent_credential"])
    before = snapshot_tables()
    status, reply = me.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online", "instance_id": body["instance_id"],
                                                                   "instance_type": "p5.48xlarge"})
    assert_error(status, reply, 409, code="instance_type_not_allowed")
    assert diff_snapshots(before, snapshot_tables()) == {}
    assert agents.get(client_id, agent_id).instance_type == "m5.large"
