"""Security walk 5: what one tenant's agents and clients can make the service do to another tenant's capacity
through the workflows (promotion, planned return), plus what it can read or inject elsewhere. Each test is one
attack; its docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

import pytest

from chalicelib.repositories import agents as agent_repo
from tests.api._support import assert_error, diff_snapshots, snapshot_world
from tests.conftest import account_instance, new_instance_id, registration


@pytest.fixture
def agent_pointing_at_b(make_tenant):
    """Tenant A's legacy agent whose heartbeat named an instance id nobody had registered yet, which tenant B then
    registered: (A's caller, A's agent id, B's caller, B's agent id, the instance)."""
    _, a = make_tenant()
    status, reply = a.post("/api/agents/register", registration())
    assert status == 200, reply
    a_agent = reply["agent_id"]
    victim = new_instance_id()
    assert a.post(f"/api/agents/{a_agent}/heartbeat", {"status": "online", "instance_id": victim})[0] == 200
    b_client, b = make_tenant()
    status, reply = b.post("/api/agents/register", registration(instance_id=victim))
    assert status == 200, reply
    assert agent_repo.instance_row(victim).client_id == b_client
    return a, a_agent, b, reply["agent_id"], victim


@pytest.mark.parametrize("route", ["promote", "manual-switch"])
def test_a_promotion_never_starts_a_failover_of_another_tenants_instance(agent_pointing_at_b, failover_machine,
                                                                         route):
    """ATTACK: A's legacy agent heartbeats B's (not yet registered) instance id, so A's agent row names it; B
    registers it; A then promotes its own ready standby. BEFORE: the sentinel mapped the promoted "primary" through
    the instances table to B's agent and started B's failover (a replacement launched for B, B's traffic moved,
    B's primary retired), answering A with B's interruption id. NOW: 409, nothing written, no workflow."""
    a, a_agent, b, _, victim = agent_pointing_at_b
    assert a.post(f"/api/client/agents/{a_agent}/config", {"manual_replica_enabled": True})[0] == 200
    status, standby = a.post(f"/api/agents/{a_agent}/replicas",
                             {"instance_id": account_instance("eu-west-1c"), "status": "ready"})
    assert status == 201, standby
    before = snapshot_world()
    path = (f"/api/agents/{a_agent}/replicas/{standby['replica_id']}/promote" if route == "promote"
            else f"/api/agents/{a_agent}/manual-switch")
    status, reply = a.post(path, {})
    assert_error(status, reply, 409)
    assert diff_snapshots(before, snapshot_world()) == {}
    assert b.get("/api/client/interruptions")[1]["interruptions"] == []


@pytest.fixture
def agent_pointing_at_b_live(make_tenant):
    """As ``agent_pointing_at_b``, with B's instance live in the (shared, self-hosted) account."""
    _, a = make_tenant()
    status, reply = a.post("/api/agents/register", registration())
    assert status == 200, reply
    a_agent = reply["agent_id"]
    victim = account_instance("eu-west-1c")
    assert a.post(f"/api/agents/{a_agent}/heartbeat", {"status": "online", "instance_id": victim})[0] == 200
    _, b = make_tenant()
    status, reply = b.post("/api/agents/register", registration(instance_id=victim, az="eu-west-1c"))
    assert status == 200, reply
    return a, a_agent, victim


def test_a_standby_is_never_copied_from_another_tenants_instance(agent_pointing_at_b_live):
    """ATTACK: as above, then A asks for a server-launched standby. BEFORE: the launch copied the instance A's agent
    row names, B's (B's AMI, security groups, instance profile and key pair, in a standby tagged for A). NOW: the
    launch refuses a source the instances table gives to another agent; nothing is launched."""
    a, a_agent, _ = agent_pointing_at_b_live
    assert a.post(f"/api/client/agents/{a_agent}/config", {"manual_replica_enabled": True})[0] == 200
    before = {k: v for k, v in snapshot_world().items() if k.startswith("ec2:")}
    status, reply = a.post(f"/api/agents/{a_agent}/replicas", {"pool_id": "m5.large.eu-west-1b"})
    assert status in (201, 409), (status, reply)
    if status == 201:
        assert reply["status"] == "failed" and reply["instance_id"] is None, reply
    assert {k: v for k, v in snapshot_world().items() if k.startswith("ec2:")} == before


def test_a_hand_over_eip_held_by_another_tenants_instance_is_refused(agent_pointing_at_b_live):
    """ATTACK: as above, then A configures as its hand-over the Elastic IP on B's instance. BEFORE: 200 (the agent
    row's instance counted as A's own). NOW: 409 not_owned, nothing written."""
    from tests.conftest import aws_client

    a, a_agent, victim = agent_pointing_at_b_live
    ec2 = aws_client("ec2", "eu-west-1")
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(AllocationId=allocation, InstanceId=victim)
    before = snapshot_world()
    status, reply = a.post(f"/api/client/agents/{a_agent}/config", {"handover": "eip", "eip_allocation_id": allocation})
    assert_error(status, reply, 409, code="not_owned")
    assert diff_snapshots(before, snapshot_world()) == {}


# --- attacks that held (kept as regression tests) ---


@pytest.mark.parametrize(("route", "body"), [("termination-imminent", {}), ("rebalance-recommendation", {}),
                                             ("create-emergency-replica", {"signal_type": "termination-notice"})])
def test_an_agent_signal_for_the_instance_its_row_names_but_another_tenant_owns_is_404(agent_pointing_at_b,
                                                                                       failover_machine, route,
                                                                                       body):
    a, a_agent, b, _, _ = agent_pointing_at_b
    before = snapshot_world()
    status, reply = a.post(f"/api/agents/{a_agent}/{route}", body)
    assert_error(status, reply, 404, field="instance_id")
    assert diff_snapshots(before, snapshot_world()) == {}
    assert b.get("/api/client/interruptions")[1]["interruptions"] == []


def test_a_legacy_heartbeat_naming_another_tenants_registered_instance_moves_nothing(make_tenant):
    """B registered the instance first: A's heartbeat naming it leaves A's agent on its own instance and B's rows
    as they were."""
    a_client, a = make_tenant()
    _, b = make_tenant()
    victim = new_instance_id()
    assert b.post("/api/agents/register", registration(instance_id=victim))[0] == 200
    reg = registration()
    a_agent = a.post("/api/agents/register", reg)[1]["agent_id"]
    before = {k: v for k, v in snapshot_world().items() if "instances" in k}
    assert a.post(f"/api/agents/{a_agent}/heartbeat", {"status": "online", "instance_id": victim})[0] == 200
    assert agent_repo.get(a_client, a_agent).instance_id == reg["instance_id"]
    assert {k: v for k, v in snapshot_world().items() if "instances" in k} == before


@pytest.mark.parametrize("route", ["rebalance-recommendation", "create-emergency-replica"])
def test_a_rebalance_with_no_pool_for_a_standby_is_answered_and_resolved(tenant_with_agent, monkeypatch, route):
    """ATTACK (robustness): a rebalance recommendation on a risky pool while no other pool can take a standby (every
    one in capacity back-off, as in a capacity crunch). BEFORE: 409 no_pool after the interruption event, its claim
    and the observation were written; the event stayed ``detected`` (the cleanup later notified the client it was
    abandoned) and EventBridge's copy of the signal failed on every delivery (then the dead-letter queue). NOW: the
    signal is handled like a quota refusal: no standby, the reason said, the event resolved."""
    from chalicelib import replicas, sentinel

    client_id, caller, agent_id, _ = tenant_with_agent
    monkeypatch.setattr(sentinel, "_pool_risk", lambda agent: 0.9)
    monkeypatch.setattr(replicas, "candidates", lambda *args, **kwargs: [])
    status, reply = caller.post(f"/api/agents/{agent_id}/{route}", {"signal_type": "rebalance-recommendation"})
    assert status == 200, reply
    assert "no other pool" in (reply.get("reason") or reply.get("error") or ""), reply
    [event] = caller.get("/api/client/interruptions")[1]["interruptions"]
    assert (event["status"], event["response_action"]) == ("resolved", "no-action"), event


def test_a_refused_target_group_never_names_the_other_tenants_instance_it_serves(make_tenant):
    """ATTACK (enumeration): A names as its hand-over a target group of the shared account that serves B's
    instance. BEFORE: 409 "... serves i-<B's instance>, which is not this client's": B's instance id (what the
    attacks above start from) in A's answer. NOW: the same 409 without it."""
    import uuid

    from tests.conftest import aws_client

    _, a = make_tenant()
    a_agent = a.post("/api/agents/register", registration())[1]["agent_id"]
    _, b = make_tenant()
    victim = account_instance("eu-west-1b")
    assert b.post("/api/agents/register", registration(instance_id=victim, az="eu-west-1b"))[0] == 200
    ec2, elb = aws_client("ec2", "eu-west-1"), aws_client("elbv2", "eu-west-1")
    vpc = ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["VpcId"]
    arn = elb.create_target_group(Name=f"tg-{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=80,
                                  VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": victim}])
    status, reply = a.post(f"/api/client/agents/{a_agent}/config", {"handover": "target-group", "target_group_arn": arn})
    assert_error(status, reply, 409, code="not_owned")
    assert victim not in str(reply)


@pytest.mark.usefixtures("failover_machine", "fleet_jobs_see_this_test_only")
def test_the_coordinators_planned_return_never_hands_over_another_tenants_instance(make_tenant):
    """ATTACK: A's legacy agent on on-demand with a ready standby (the replica coordinator returns such an agent to
    spot through a planned promotion) heartbeats an instance id B then registers. BEFORE: the coordinator's
    planned return of A's standby was mapped to B's agent and started B's hand-over. NOW: not started; B has no
    event."""
    from tests.integration.test_return_to_spot import on_demand_agent_with_ready_standby, reconcile

    a_client, a, a_agent, _, _, _ = on_demand_agent_with_ready_standby(make_tenant)
    victim = new_instance_id()
    assert a.post(f"/api/agents/{a_agent}/heartbeat", {"status": "online", "instance_id": victim})[0] == 200
    _, b = make_tenant()
    assert b.post("/api/agents/register", registration(instance_id=victim))[0] == 200
    done = reconcile(a_client, a_agent)
    assert not done.get("returns_started"), done
    assert b.get("/api/client/interruptions")[1]["interruptions"] == []
