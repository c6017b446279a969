"""The cleanup job against moto: orphans past the grace period are terminated and audited; nothing else is.

Runs go through the real schedule handler (``invoke_schedule(api, "cleanup", now=...)``). The moto is shared by
the whole session and a cleanup run looks at every managed instance: each test asserts on its own instances and
replicas only, never on global counts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.jobs.replica_coordinator import reconcile_agent
from chalicelib.replicas import start_standby
from chalicelib.repositories import activity
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.settings import get_settings
from chalicelib.tables import AgentTable
from components.replica_coordinator import ReplicaStatus, ReplicaType
from tests.conftest import invoke_schedule
from tests.e2e.failover_support import ZONES, ec2, register_agent, state_of
from localmode.embedded_aws import image_id

GONE = ("shutting-down", "terminated")


@pytest.fixture
def region_agent(make_tenant):
    """An agent in us-east-1 (cleanup scans the regions that have agents): (client_id, agent_id, primary)."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    return client_id, agent_id, primary


def launch(tags: dict[str, str] | None) -> str:
    """A bare instance in us-east-1 with the given tags (None: untagged), launched now."""
    client = ec2()
    params = {"ImageId": image_id(client), "InstanceType": "t3.micro",
              "MinCount": 1, "MaxCount": 1, "Placement": {"AvailabilityZone": ZONES[1]}}
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "instance",
                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return client.run_instances(**params)["Instances"][0]["InstanceId"]


def orphan_tags(stage: str = "dev") -> dict[str, str]:
    """Our tags (this test stage's), naming a replica and an agent that no table knows (launched, never attached)."""
    suffix = uuid.uuid4().hex[:8]
    return {"ManagedBy": "SpotOptimizer", "ReplicaId": f"rep-unknown-{suffix}", "AgentId": f"ag-unknown-{suffix}",
            "ClientId": f"cl-unknown-{suffix}", "LogicalAgentId": f"web-{suffix}", "SpotOptimizerStage": stage}


def past_grace(now: datetime) -> datetime:
    return now + timedelta(seconds=get_settings().orphan_grace_s + 60)


def orphan_events(instance_id: str, at: datetime):
    return [e for e in activity.recent_events(at, limit=5000)
            if e.event_type == "orphan_terminated" and e.instance_id == instance_id]


def test_an_unknown_tagged_instance_older_than_the_grace_is_terminated_and_audited(api, region_agent):
    """GIVEN an instance tagged ManagedBy=SpotOptimizer whose ReplicaId/AgentId no table knows
    WHEN the cleanup runs after the grace period
    THEN it is terminated and an orphan_terminated system event names it."""
    tags = orphan_tags()
    orphan = launch(tags)
    later = past_grace(datetime.now(UTC))

    outcome = invoke_schedule(api, "cleanup", now=later)

    assert orphan in outcome["terminated"]
    assert state_of(orphan) in GONE
    [event] = orphan_events(orphan, later)
    assert event.severity == "warning"
    assert (event.agent_id, event.client_id) == (tags["AgentId"], tags["ClientId"])
    assert tags["ReplicaId"] in event.message


def test_another_stages_orphan_is_never_touched(api, region_agent):
    """GIVEN an unknown instance tagged as ours but by the prod stage (and one with no stage tag at all)
    WHEN this (dev) stage's cleanup runs after the grace period
    THEN both keep running: a stage only reaps what it launched (while dev's own orphan, in the same account
    and run, is reaped: the pass did look)."""
    prod, unstaged = launch(orphan_tags("prod")), launch({k: v for k, v in orphan_tags().items()
                                                          if k != "SpotOptimizerStage"})
    own = launch(orphan_tags("dev"))
    outcome = invoke_schedule(api, "cleanup", now=past_grace(datetime.now(UTC)))
    assert prod not in outcome["terminated"] and unstaged not in outcome["terminated"]
    assert state_of(prod) not in GONE and state_of(unstaged) not in GONE
    assert own in outcome["terminated"] and state_of(own) in GONE


def test_an_unknown_tagged_instance_within_the_grace_is_left_alone(api, region_agent):
    """GIVEN the same kind of orphan, just launched (the launch → attach gap)
    WHEN the cleanup runs now
    THEN it keeps running and no event names it."""
    orphan = launch(orphan_tags())
    now = datetime.now(UTC)

    outcome = invoke_schedule(api, "cleanup", now=now)

    assert orphan not in outcome["terminated"]
    assert state_of(orphan) == "running"
    assert orphan_events(orphan, now) == []


def test_an_agents_active_standby_is_never_terminated(api, make_tenant):
    """GIVEN a manual-replica agent whose standby instance runs (tagged as ours, row active)
    WHEN the cleanup runs long after the grace period
    THEN the standby keeps running and stays the agent's standby."""
    client_id, _, agent_id, _, _ = register_agent(make_tenant, manual_replica_enabled=True, auto_switch_enabled=False)
    now = datetime.now(UTC)
    reconcile_agent(agent_repo.get(client_id, agent_id), now)
    [standby] = replica_repo.for_agent(agent_id, include_final=False)
    assert standby.instance_id

    later = now + timedelta(seconds=get_settings().orphan_grace_s * 10)
    outcome = invoke_schedule(api, "cleanup", now=later)

    assert standby.instance_id not in outcome["terminated"]
    assert state_of(standby.instance_id) == "running"
    assert replica_repo.get(agent_id, standby.replica_id).active
    assert AgentTable.get(client_id, agent_id, consistent_read=True).current_replica_id == standby.replica_id
    assert orphan_events(standby.instance_id, later) == []


def test_a_standby_instance_left_behind_by_a_closed_replica_is_an_orphan(api, make_tenant):
    """GIVEN a standby whose replica row was closed but whose instance is still running
    WHEN the cleanup runs after the grace period
    THEN that instance is terminated (its tags point at a replica that no longer owns it)."""
    client_id, _, agent_id, _, _ = register_agent(make_tenant, manual_replica_enabled=True, auto_switch_enabled=False)
    now = datetime.now(UTC)
    reconcile_agent(agent_repo.get(client_id, agent_id), now)
    [standby] = replica_repo.for_agent(agent_id, include_final=False)
    replica_repo.transition(standby, ReplicaStatus.TERMINATED, now)  # the row only: the instance keeps running
    assert state_of(standby.instance_id) == "running"

    outcome = invoke_schedule(api, "cleanup", now=past_grace(now))

    assert standby.instance_id in outcome["terminated"]
    assert state_of(standby.instance_id) in GONE


@pytest.mark.parametrize("tags", [
    pytest.param(None, id="untagged"),
    pytest.param({"Name": "web-1", "team": "payments"}, id="customer-tags"),
    pytest.param({"ManagedBy": "SomeoneElse", "ReplicaId": "rep-x", "AgentId": "ag-x"}, id="other-manager"),
])
def test_an_instance_not_tagged_as_ours_is_never_touched(api, region_agent, tags):
    """GIVEN an instance without ManagedBy=SpotOptimizer
    WHEN the cleanup runs long after the grace period
    THEN it keeps running."""
    instance = launch(tags)
    later = past_grace(datetime.now(UTC))

    outcome = invoke_schedule(api, "cleanup", now=later)

    assert instance not in outcome["terminated"]
    assert state_of(instance) == "running"
    assert orphan_events(instance, later) == []


def test_the_customers_primary_is_never_touched(api, region_agent):
    """GIVEN a registered agent's own (untagged) primary
    WHEN the cleanup runs long after the grace period
    THEN the primary keeps running."""
    _, _, primary = region_agent

    outcome = invoke_schedule(api, "cleanup", now=past_grace(datetime.now(UTC)))

    assert primary not in outcome["terminated"] and state_of(primary) == "running"


def test_a_pre_warmed_standby_is_expired_only_once_past_its_expiry(api, make_tenant):
    """GIVEN a pre-warmed (rebalance) standby that expires in five minutes
    WHEN the cleanup runs before and then after that
    THEN it is kept, then expired: row closed, instance terminated, the agent's slot free again."""
    client_id, _, agent_id, _, _ = register_agent(make_tenant)
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=5)
    standby = start_standby(agent_repo.get(client_id, agent_id), now, replica_type=ReplicaType.REBALANCE,
                            created_by="sentinel", expires_at=expires)
    assert standby.instance_id and standby.expires_at == expires

    before = invoke_schedule(api, "cleanup", now=expires - timedelta(seconds=30))

    assert standby.replica_id not in before["expired"]
    assert replica_repo.get(agent_id, standby.replica_id).active and state_of(standby.instance_id) == "running"

    after = invoke_schedule(api, "cleanup", now=expires + timedelta(seconds=1))

    assert standby.replica_id in after["expired"]
    closed = replica_repo.get(agent_id, standby.replica_id)
    assert closed.status.value == "expired" and closed.terminated_at is not None
    assert state_of(standby.instance_id) in GONE
    assert AgentTable.get(client_id, agent_id, consistent_read=True).current_replica_id is None
