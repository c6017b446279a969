"""Security walk 10: where the fleet's shared capacity data takes a tenant's word for where its instances run, what a
verified agent's heartbeat may restate, and the pagination cursors of every client listing. Each test is one attack;
its docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations
from chalicelib.tables import AgentTable
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
    heartbeat of its credential naming ``ZONES[1]`` for the same instance (refused since the heartbeat fix below),
    and the agent row naming that pool all the same, as any path that records a placement from the agent's report
    leaves it (a switch report's new instance); the tenant's id."""
    client_id, caller = make_tenant(legacy=False)
    body = registration(instance_id=instance, instance_type=itype, region=REGION, az=ZONES[0], mode="spot")
    document, signature = signed_identity(instance_id=instance, instance_type=itype, az=ZONES[0], region=REGION)
    status, reply = caller.post("/api/agents/register",
                                {**body, "identity_document": document, "identity_signature": signature})
    assert status == 200, reply
    agent = Caller(api.http, token=reply["agent_credential"])
    agent.post(f"/api/agents/{reply['agent_id']}/heartbeat",
               {"status": "online", "instance_id": instance, "instance_type": itype, "az": ZONES[1], "mode": "spot"})
    AgentTable(client_id, reply["agent_id"]).update(actions=[AgentTable.az.set(ZONES[1]),
                                                             AgentTable.current_pool_id.set(f"{itype}.{ZONES[1]}")])
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
    fleet = observations.for_pools([named], since, viewer=observations.FLEET)[named]
    assert [o for o in fleet if o.kind.value == "interruption_warning"] == []  # (its replacement may launch there)
    assert named not in observations.backoff([named], _now(), viewer=victim_id)
    own = [o.kind.value for o in observations.for_pools([named], since, viewer=attacker_id)[named]]
    if claim is _legacy_primary_named_elsewhere:  # its own placements still avoid the pool it says it lost
        assert "interruption_warning" in own, own



@pytest.mark.usefixtures("failover_machine")
def test_a_placement_ec2_cannot_confirm_never_delays_the_failover_and_stays_its_clients(api, make_tenant,
                                                                                       monkeypatch):
    """The fix's edge: a legacy primary whose claim is true, and EC2 fails to describe it when AWS's warning comes.
    The failover starts all the same; the warning counts for its client only (as a lost state whose reason EC2
    cannot give does, walk 9), never for the fleet on the client's word alone."""
    from chalicelib.aws import ec2 as adapter

    client_id, caller = make_tenant()
    victim_id, _ = make_tenant()
    itype = unique_type()
    instance = launch_primary(itype, ZONES[0])
    pool = f"{itype}.{ZONES[0]}"
    body = registration(instance_id=instance, instance_type=itype, region=REGION, az=ZONES[0], mode="spot")
    assert caller.post("/api/agents/register", body)[0] == 200

    def refused(*_, **__):
        raise adapter.TransientAwsError("DescribeInstances: RequestLimitExceeded")

    with monkeypatch.context() as patched:
        patched.setattr(adapter, "describe", refused)
        result = deliver(api, "sentinel-interruption", warning(instance))
    assert result["action"] == "failover_started", result
    wait_for(result["execution_arn"])
    since = _now() - timedelta(hours=1)
    assert [o for o in observations.for_pools([pool], since, viewer=observations.FLEET)[pool]
            if o.kind.value == "interruption_warning"] == []
    assert pool not in observations.backoff([pool], _now(), viewer=victim_id)
    assert "interruption_warning" in [o.kind.value for o in observations.for_pools([pool], since,
                                                                                    viewer=client_id)[pool]]

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


def test_idle_agents_a_legacy_tenant_places_in_a_pool_make_it_look_safe_to_no_one_else(make_tenant):
    """ATTACK (shared capacity data; noticed by this walk, fixed after it): a legacy-mode tenant registers idle
    agents "on spot" in a pool it never runs in (its word is the placement) and keeps them heartbeating. BEFORE: the
    risk scorer's HELD row counted them for the fleet, every 15 minutes: exposure without interruptions lowers the
    pool's interruption rate in every tenant's risk score, steering other tenants' decisions, failovers and standbys
    into it. NOW: a legacy-mode client's agents count exposure for its own scores only; the fleet's exposure counts
    the agents of clients whose placements are proven (legacy agent mode off: signed documents)."""
    from chalicelib.jobs import risk_scorer

    attacker_id, caller = make_tenant()
    victim_id, _ = make_tenant()
    itype = unique_type()
    pool = f"{itype}.{ZONES[0]}"
    for _ in range(5):
        status, reply = caller.post("/api/agents/register", registration(instance_type=itype, az=ZONES[0],
                                                                         region=REGION))
        assert status == 200, reply
    now = _now()
    assert risk_scorer.record_held(now, [pool]) == 5
    since, until = now - timedelta(hours=1), now + timedelta(minutes=1)

    def held(viewer) -> float:
        return sum(o.held_instances for o in observations.for_pools([pool], since, until, viewer=viewer)[pool])

    assert held(observations.FLEET) == 0 and held(victim_id) == 0
    assert held(attacker_id) == 5  # its own scores still count its agents' exposure


# --- held: a pagination cursor never crosses into another tenant's partition ----------------------------------------


def _cursors(a: str, a_agent: str) -> dict[str, dict]:
    """Per paginated client route (``{b}`` / ``{b_agent}``: the caller's ids), a cursor of the route's own key shape
    positioned in tenant A's partition (``a``, ``a_agent``)."""
    return {
        "/api/notifications": {"client_id": a, "notification_id": "20990101T000000000000-x"},
        "/api/client/interruptions": {"client_id": a, "interruption_id": "int-20990101T000000000000-x"},
        "/api/client/{b}/switch-history": {"client_id": a, "switch_key": "2099-01-01T00:00:00.000000Z#x"},
        "/api/client/{b}/replicas?status=all": {"agent_id": a_agent, "replica_id": "rep-z", "client_id": a},
        "/api/client/{b}/agents": {"client_id": a, "agent_id": a_agent, "logical_agent_id": "web-z"},
        "/api/client/{b}/agents/decisions": {"client_id": a, "agent_id": a_agent, "logical_agent_id": "web-z"},
        "/api/client/{b}/instances": {"instance_id": "i-0123456789abcdef0", "live_client_id": a,  # the live index
                                      "installed_at": "2099-01-01T00:00:00.000000+0000"},
        "/api/client/{b}/instances?status=all": {"instance_id": "i-0123456789abcdef0", "client_id": a,
                                                 "installed_at": "2099-01-01T00:00:00.000000+0000"},
        "/api/agents/{b_agent}/interruptions": {"agent_id": a_agent, "interruption_id": "int-z", "client_id": a},
        "/api/client/agents/{b_agent}/decisions": {"agent_id": a_agent, "decision_key": "2099-01-01T00:00:00Z#x"},
    }


def test_a_cursor_forged_for_another_tenants_partition_is_400_on_every_paginated_client_route(make_tenant):
    """HELD (walk 7 and the pagination tests checked the notifications listing only): tenant B forges a
    ``next_token`` of each paginated client route's own key shape whose partition is tenant A's (A's client id, or
    A's agent id for the per-agent lists). Every route answers 400 ``next_token`` and none of A's rows; the same
    cursor naming B's own partition is accepted (the control: the 400 comes from the partition, not the shape)."""
    from chalicelib.repositories.paging import encode_token

    a, a_caller = make_tenant()
    a_agent = a_caller.post("/api/agents/register", registration())[1]["agent_id"]
    b, b_caller = make_tenant()
    b_agent = b_caller.post("/api/agents/register", registration())[1]["agent_id"]
    forged, own = _cursors(a, a_agent), _cursors(b, b_agent)
    for route, key in forged.items():
        path = route.format(b=b, b_agent=b_agent)
        glue = "&" if "?" in path else "?"
        token = encode_token({name: {"S": value} for name, value in key.items()})
        status, reply = b_caller.get(f"{path}{glue}next_token={token}")
        assert_error(status, reply, 400, field="next_token")
        assert a not in str(reply) and a_agent not in str(reply), (route, reply)
        mine = encode_token({name: {"S": value} for name, value in own[route].items()})
        status, reply = b_caller.get(f"{path}{glue}next_token={mine}")
        assert status == 200, (route, reply)
