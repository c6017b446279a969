"""Security walk 9: what a request naming one instance makes the service do to another (force-switch), and what a
tenant's own instances can put into the fleet's shared capacity data through the replica coordinator, and which
routes answer without their credential. Each test is one attack; its docstring says what happened before the fix
(when it found something) and what holds now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.jobs.replica_coordinator import reconcile_agent
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations
from chalicelib.repositories import replicas as replica_repo
from tests.api._support import assert_error, diff_snapshots, snapshot_tables, switch_body
from tests.conftest import Caller, account_instance, new_instance_id, registration
from tests.e2e.failover_support import ZONES, aws_reclaims, ec2, launch_primary, register_agent


def _now() -> datetime:
    return datetime.now(UTC)


# --- a request names one instance: the service acts on that one or on none --------------------------------------


@pytest.fixture
def kept_old_primary(make_tenant):
    """A tenant whose agent switched with auto-terminate off: (caller, agent id, the old instance it kept running,
    the agent's current instance)."""
    _, caller = make_tenant()
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": False})[0] == 200
    old, new = reg["instance_id"], new_instance_id()
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(old, new))
    assert status == 200, reply
    row = agent_repo.instance_row(old)
    assert row.is_active and row.role == "primary"  # the customer keeps it: still listed as an active instance
    return caller, agent_id, old, new


@pytest.fixture
def agent_with_standby(make_tenant):
    """A manual-replica tenant's agent with a standby its agent launched: (caller, agent id, the standby, the
    agent's primary)."""
    _, caller = make_tenant()
    reg = registration(az="eu-west-1c")
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config",
                       {"manual_replica_enabled": True, "auto_terminate_enabled": True})[0] == 200
    standby = account_instance("eu-west-1b")
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas",
                                {"instance_id": standby, "pool_id": "m5.large.eu-west-1b"})
    assert status == 201, reply
    return caller, agent_id, standby, reg["instance_id"]


@pytest.mark.parametrize("which", ["kept_old_primary", "agent_with_standby"])
def test_a_force_switch_of_an_instance_that_is_not_the_agents_primary_switches_nothing(request, which):
    """ATTACK (a careless client, or a link to an instance page): ``force-switch`` names an active instance of the
    client that is not its agent's current primary: the old instance a switch kept running (auto-terminate off) or
    the agent's standby. BEFORE: 201, and the command queued was a switch of the agent's *current* primary, which
    the request never named (for a standby under auto-terminate, with the primary terminated 300 s after). NOW: 409
    ``not_current_primary``, nothing queued; the agent's current primary is switched only when it is the one
    named."""
    caller, agent_id, named, current = request.getfixturevalue(which)
    before = snapshot_tables()
    status, reply = caller.post(f"/api/client/instances/{named}/force-switch", {"target": "ondemand"})
    assert_error(status, reply, 409, code="not_current_primary", field="instance_id")
    assert diff_snapshots(before, snapshot_tables()) == {}
    status, reply = caller.post(f"/api/client/instances/{current}/force-switch", {"target": "ondemand"})
    assert status == 201 and reply["command"]["instance_id"] == current, reply


def test_switch_reports_that_keep_the_old_instance_list_at_most_the_instance_quota_as_running(make_tenant, admin):
    """ATTACK (unbounded growth, found by walk 9): a legacy client (whose switch reports are taken on trust) turns
    auto-terminate off and reports switch after switch to made-up instances. BEFORE: every report kept its old
    instance as an active primary row, without bound, and every hourly savings roll-up of the client read them all
    (one slow client fails the roll-ups sent in the same queue message). NOW: an agent lists at most the client's
    instance quota of the instances its switches left running; older ones are closed (inactive, no termination
    time claimed: counted up to the switch that closed them), the current primary stays."""
    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/limits", {"max_instances": 2})[0] == 200
    reg = registration()
    agent_id = caller.post("/api/agents/register", reg)[1]["agent_id"]
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"auto_terminate_enabled": False})[0] == 200
    chain = [reg["instance_id"]] + [new_instance_id() for _ in range(5)]
    for old, new in zip(chain, chain[1:]):  # no times given: each switch is its receive time, one after another
        status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(old, new, timing={}))
        assert status == 200 and not reply["duplicate"], reply
    rows = {i: agent_repo.instance_row(i) for i in chain}
    assert [i for i in chain if rows[i].is_active] == chain[-3:]  # the two newest kept ones and the primary
    assert agent_repo.get(client_id, agent_id).instance_id == chain[-1]
    for closed in chain[:-3]:
        assert rows[closed].terminated_at is None and rows[closed].updated_at is not None


# --- a tenant's own instances are its own evidence -------------------------------------------------------------


def client_recorded_standby(make_tenant, zone: str) -> tuple[str, str, str, str, str, str]:
    """An attacker whose agent's standby is its own spot instance in ``zone``, recorded naming the type's pool in
    ``ZONES[1]``, and a victim tenant: (attacker id, victim id, agent id, the instance, named pool, replica id)."""
    attacker_id, caller, agent_id, _, itype = register_agent(make_tenant, prices={})
    victim_id, _ = make_tenant()
    named = f"{itype}.{ZONES[1]}"
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})[0] == 200
    own = launch_primary(itype, zone)
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"instance_id": own, "pool_id": named})
    assert status == 201, reply
    return attacker_id, victim_id, agent_id, own, named, reply["replica_id"]


@pytest.mark.usefixtures("failover_machine", "fleet_jobs_see_this_test_only")
def test_a_standby_the_client_launched_and_lost_puts_no_pool_in_back_off_for_other_tenants(make_tenant):
    """ATTACK (shared capacity data): a legacy client records an instance it launched itself as its agent's standby
    (``POST /api/agents/{id}/replicas`` with ``instance_id``), naming any other pool of its type in the region, then
    terminates that instance itself. BEFORE: the replica coordinator, finding the standby gone, recorded an
    ``aws_stopped`` observation of the named pool as something the product saw: the pool went into capacity
    back-off for every tenant's decisions, failovers and standbys (and into the fleet's risk evidence), repeatable
    with a new standby each time. NOW: the loss of an instance the product did not launch is its client's evidence
    only, as its agents' signals and reports are (walk 8); so is a standby the product launched that its owner
    ended (EC2's state reason ``Client.*``); one EC2 reclaimed (``Server.*``) still counts for everyone."""
    attacker_id, victim_id, agent_id, own, pool, replica_id = client_recorded_standby(make_tenant, ZONES[1])
    ec2().terminate_instances(InstanceIds=[own])
    reconcile_agent(agent_repo.get(attacker_id, agent_id), _now())
    assert replica_repo.get(agent_id, replica_id).status.value == "failed"
    now = _now()
    assert pool not in observations.backoff([pool], now, viewer=victim_id)
    assert observations.for_pools([pool], now - timedelta(hours=1), viewer=observations.FLEET)[pool] == []
    assert [o.kind.value for o in observations.for_pools([pool], now - timedelta(hours=1), viewer=attacker_id)[pool]] \
        == ["aws_stopped"]  # its own placements still avoid the pool it lost a standby in
    # the same run launched the agent's next standby itself: the client ending that one is its own evidence too
    # (its account, or its instance's OS: EC2's state reason is Client.*), EC2 reclaiming one is everyone's
    launched = replica_repo.get(agent_id, agent_repo.get(attacker_id, agent_id).current_replica_id)
    assert launched.own_launch and launched.instance_id and launched.pool_id != pool
    ec2().terminate_instances(InstanceIds=[launched.instance_id])
    reconcile_agent(agent_repo.get(attacker_id, agent_id), _now())
    assert launched.pool_id not in observations.backoff([launched.pool_id], _now(), viewer=victim_id)
    assert launched.pool_id in observations.backoff([launched.pool_id], _now(), viewer=attacker_id)
    relaunched = replica_repo.get(agent_id, agent_repo.get(attacker_id, agent_id).current_replica_id)
    assert relaunched.own_launch and relaunched.instance_id and relaunched.replica_id != launched.replica_id
    aws_reclaims(relaunched.instance_id)
    reconcile_agent(agent_repo.get(attacker_id, agent_id), _now())
    assert relaunched.pool_id in observations.backoff([relaunched.pool_id], _now(), viewer=victim_id)


def test_aws_warning_a_standby_the_client_recorded_is_filed_under_its_claim_for_it_alone(api, make_tenant):
    """A legacy client records its own spot instance as its agent's standby, naming another pool of the type (the
    pool is the client's word, never checked against the instance). BEFORE: EventBridge's real interruption
    warning for that instance was recorded as the fleet's warning on the *named* pool: a tenant could file AWS's
    reclaims of its cheap pool under another pool, every tenant's back-off and risk. NOW: what is seen of a standby
    the product did not launch is its client's evidence only."""
    from tests.e2e.failover_support import deliver, warning

    attacker_id, victim_id, _, own, named, _ = client_recorded_standby(make_tenant, ZONES[2])
    result = deliver(api, "sentinel-interruption", warning(own))
    assert result["action"] == "standby_lost", result
    now = _now()
    assert observations.for_pools([named], now - timedelta(hours=1), viewer=observations.FLEET)[named] == []
    assert named not in observations.backoff([named], now, viewer=victim_id)
    assert [o.kind.value for o in observations.for_pools([named], now - timedelta(hours=1),
                                                          viewer=attacker_id)[named]] == ["interruption_warning"]


@pytest.mark.parametrize("ended_by", ["its owner", "EC2"])
def test_a_primary_its_owner_terminated_is_failed_over_and_only_its_clients_evidence(api, make_tenant, ended_by):
    """A tenant terminates its own spot primary (console/API in an account it holds, or ``shutdown`` inside the
    instance): EventBridge forwards the ``terminated`` state change. BEFORE: the sentinel recorded it as an
    ``aws_stopped`` observation for the fleet: the pool went into back-off for every tenant, at no cost to the
    tenant (a failover replaced its instance). NOW: EC2's state reason decides: ``Client.*`` is the owner's doing,
    its client's evidence only; ``Server.*`` (a spot reclaim) is everyone's. Either way the primary is failed
    over, as before."""
    from tests.e2e.failover_support import deliver, ec2_event, wait_for

    attacker_id, _, agent_id, primary, itype = register_agent(make_tenant)
    victim_id, _ = make_tenant()
    pool = f"{itype}.{ZONES[0]}"
    if ended_by == "EC2":
        aws_reclaims(primary)
    else:
        ec2().terminate_instances(InstanceIds=[primary])
    result = deliver(api, "sentinel-state-change",
                     ec2_event("EC2 Instance State-change Notification", primary, state="terminated"))
    assert result["action"] == "failover_started", result
    wait_for(result["execution_arn"])
    now = _now()
    fleet = observations.for_pools([pool], now - timedelta(hours=1), viewer=observations.FLEET)[pool]
    own = observations.for_pools([pool], now - timedelta(hours=1), viewer=attacker_id)[pool]
    assert [o.kind.value for o in own] == ["aws_stopped"]
    assert [o.kind.value for o in fleet] == (["aws_stopped"] if ended_by == "EC2" else [])
    assert (pool in observations.backoff([pool], now, viewer=victim_id)) is (ended_by == "EC2")


# --- held: no route answers without its credential ---------------------------------------------------------------

OPEN_ROUTES = {"/", "/health", "/api/openapi.json", "/console/{name}", "/console/vendor/{name}"}


def test_every_admin_route_refuses_a_client_token_and_every_other_route_a_missing_one(make_tenant, api, chalice_app):
    """HELD: every route the app registers (so a new one is covered without touching this test): an admin route
    answers 401 to a client token in either header (walk 4 checked three of them), every other route but the
    console, the health check and the OpenAPI document answers 401 without a credential; nothing is written."""
    client_id, caller = make_tenant()
    agent_id = caller.post("/api/agents/register", registration())[1]["agent_id"]
    ids = {"client_id": client_id, "agent_id": agent_id}
    anonymous, as_admin_key = Caller(api.http), Caller(api.http, admin=caller.token)
    before = snapshot_tables()
    for path, methods in sorted(chalice_app.routes.items()):
        if path in OPEN_ROUTES:
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x1"), path)
        for method in methods:
            callers = (caller, as_admin_key) if path.startswith("/api/admin") else (anonymous,)
            for who in callers:
                status, reply = who.call(method, url, {})
                assert_error(status, reply, 401)
    assert diff_snapshots(before, snapshot_tables()) == {}
