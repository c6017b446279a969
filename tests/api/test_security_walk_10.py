"""Security walk 10: where the fleet's shared capacity data takes a tenant's word for where its instances run, and
the routes, cursors and workflow inputs walks 3-9 did not reach. Each test is one attack; its docstring says what
happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations
from localmode.identity_signer import signed_identity
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.api.test_agent_identity import verified_registration
from tests.conftest import Caller, registration
from tests.e2e.failover_support import REGION, ZONES, deliver, launch_primary, unique_type, wait_for, warning


def _now() -> datetime:
    return datetime.now(UTC)


# --- where an instance runs is EC2's word (or a signed document's), never the tenant's -----------------------------


def _legacy_primary_named_elsewhere(make_tenant, api, itype: str, instance: str) -> str:
    """A legacy registration of the tenant's own spot instance (in ``ZONES[0]``) that names ``ZONES[1]``; the
    tenant's id."""
    client_id, caller = make_tenant()
    body = registration(instance_id=instance, instance_type=itype, region=REGION, az=ZONES[1], mode="spot")
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    return client_id


def _verified_primary_moved_by_heartbeat(make_tenant, api, itype: str, instance: str) -> str:
    """A verified registration of the tenant's own spot instance (its signed document: ``ZONES[0]``), then a
    heartbeat of its credential naming ``ZONES[1]`` for the same instance; the tenant's id."""
    client_id, caller = make_tenant(legacy=False)
    body = registration(instance_id=instance, instance_type=itype, region=REGION, az=ZONES[0], mode="spot")
    document, signature = signed_identity(instance_id=instance, instance_type=itype, az=ZONES[0], region=REGION)
    status, reply = caller.post("/api/agents/register",
                                {**body, "identity_document": document, "identity_signature": signature})
    assert status == 200, reply
    agent = Caller(api.http, token=reply["agent_credential"])
    agent.post(f"/api/agents/{reply['agent_id']}/heartbeat",
               {"status": "online", "instance_id": instance, "instance_type": itype, "az": ZONES[1], "mode": "spot"})
    return client_id


@pytest.mark.usefixtures("failover_machine", "aws_signs_locally")
@pytest.mark.parametrize("claim", [_legacy_primary_named_elsewhere, _verified_primary_moved_by_heartbeat],
                         ids=["legacy-registration", "verified-heartbeat"])
def test_aws_warning_of_a_primary_is_never_filed_under_a_pool_it_does_not_run_in(api, make_tenant, claim):
    """ATTACK (shared capacity data): a tenant's spot instance runs in one pool; its agent says it runs in another
    (the pool of the same type in another zone, where other tenants run): a legacy registration names that zone
    (nothing checks a legacy claim), or a verified agent's heartbeat names it after the signed registration. Then
    AWS's real interruption warning for the instance comes (a reclaim of the tenant's cheap pool, or one it causes
    itself: AWS FIS sends real spot interruption warnings to instances of the account). BEFORE: the sentinel filed
    AWS's warning as the fleet's observation of the pool the agent *named*: that pool went into capacity back-off
    for every tenant (their decisions, failovers and standbys avoided it) and into the fleet's risk evidence, at
    will. NOW: the fleet's observation needs the pool confirmed (a signed document, the product's own launch, or
    EC2's placement of the instance); a claim EC2 contradicts is the tenant's evidence only. The instance is still
    failed over. (The verified agent's heartbeat is refused since the fix below: its pool stays the proven one.)"""
    victim_id, _ = make_tenant()
    itype = unique_type()
    instance = launch_primary(itype, ZONES[0])
    named = f"{itype}.{ZONES[1]}"
    attacker_id = claim(make_tenant, api, itype, instance)
    result = deliver(api, "sentinel-interruption", warning(instance))
    assert result["action"] == "failover_started", result
    wait_for(result["execution_arn"])
    since = _now() - timedelta(hours=1)
    fleet = observations.for_pools([named], since, viewer=observations.FLEET)[named]
    assert [o for o in fleet if o.kind.value == "interruption_warning"] == []  # (its replacement may launch there)
    assert named not in observations.backoff([named], _now(), viewer=victim_id)
    own = [o.kind.value for o in observations.for_pools([named], since, viewer=attacker_id)[named]]
    if claim is _legacy_primary_named_elsewhere:  # its own placements still avoid the pool it says it lost
        assert "interruption_warning" in own, own


@pytest.mark.usefixtures("aws_signs_locally")
@pytest.mark.parametrize("field,value", [("az", "eu-west-1b"), ("instance_type", "c5.large")])
def test_a_verified_agents_heartbeat_cannot_restate_where_its_instance_runs(api, make_tenant, field, value):
    """ATTACK (bad input that changes proven state): a verified agent's credential heartbeats its own instance with
    another zone or type than its signed identity document proved (an instance never changes zone; a new type
    comes with a restart, whose registration proves it). BEFORE: 200, and the agent row's zone/type and pool became
    the heartbeat's: the pool its standbys avoid, its replacements are launched next to, its decisions price, and
    the fleet's exposure count (risk evidence) for the pool it named. NOW: 409 ``placement_mismatch`` naming the
    field, nothing written; a heartbeat that restates the proven placement is answered as before."""
    _, caller = make_tenant(legacy=False)
    body = verified_registration()
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    agent_id, agent = reply["agent_id"], Caller(api.http, token=reply["agent_credential"])
    beat = {"status": "online", "instance_id": body["instance_id"], "instance_type": body["instance_type"],
            "az": body["az"], "mode": "spot"}
    before = snapshot_tables()
    status, reply = agent.post(f"/api/agents/{agent_id}/heartbeat", {**beat, field: value})
    assert_error(status, reply, 409, code="placement_mismatch", field=field)
    assert diff_snapshots(before, snapshot_tables()) == {}
    status, reply = agent.post(f"/api/agents/{agent_id}/heartbeat", beat)
    assert status == 200, reply
    row = agent_repo.get(reply.get("client_id") or agent_repo.instance_row(body["instance_id"]).client_id, agent_id)
    assert (row.az, row.instance_type) == (body["az"], body["instance_type"])
