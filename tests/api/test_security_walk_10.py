"""Security walk 10: where the fleet's shared capacity data takes a tenant's word for where its instances run, and
the routes, cursors and workflow inputs walks 3-9 did not reach. Each test is one attack; its docstring says what
happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.repositories import observations
from localmode.identity_signer import signed_identity
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
    failed over."""
    victim_id, _ = make_tenant()
    itype = unique_type()
    instance = launch_primary(itype, ZONES[0])
    named = f"{itype}.{ZONES[1]}"
    attacker_id = claim(make_tenant, api, itype, instance)
    result = deliver(api, "sentinel-interruption", warning(instance))
    assert result["action"] == "failover_started", result
    wait_for(result["execution_arn"])
    since = _now() - timedelta(hours=1)
    assert observations.for_pools([named], since, viewer=observations.FLEET)[named] == []
    assert named not in observations.backoff([named], _now(), viewer=victim_id)
    assert [o.kind.value for o in observations.for_pools([named], since, viewer=attacker_id)[named]] \
        == ["interruption_warning"]  # its own placements still avoid the pool it says it lost
