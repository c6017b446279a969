"""Closed replicas are history with a retention: DynamoDB's TTL deletes them, so an agent's partition (read whole
by the failover and every minute by the replica coordinator) holds its recent standbys, not every one it had."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.settings import get_settings
from chalicelib.tables.provisioning import ttl_attribute_name
from chalicelib.tables.replicas import ReplicaTable
from components.replica_coordinator import ReplicaStatus
from tests.conftest import aws_client
from tests.e2e.failover_support import register_agent

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def agent(make_tenant):
    client_id, _, agent_id, _, _ = register_agent(make_tenant, manual_replica_enabled=True, auto_switch_enabled=False)
    return agent_repo.get(client_id, agent_id)


def standby(agent, n: int, *, take_slot: bool = False):
    return replica_repo.create(agent, replica_id=f"r-{NOW:%Y%m%d%H%M%S}-{n:04d}", replica_type="manual",
                               lifecycle="spot", pool_id=None, az=None, created_by="test", now=NOW,
                               take_slot=take_slot)


def stored_purge_at(replica) -> datetime | None:
    return ReplicaTable.get(replica.agent_id, replica.replica_id, consistent_read=True).purge_at


def test_the_replicas_table_has_its_ttl_switched_on(aws_tables):
    """Local mode and tests create the table from the model, the stack too (infra/tables.py): both read this."""
    assert ttl_attribute_name(ReplicaTable) == "purge_at"
    described = aws_client("dynamodb", ReplicaTable.Meta.region).describe_time_to_live(TableName=ReplicaTable.Meta.table_name)
    assert described["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "purge_at"}


@pytest.mark.parametrize("closed_as", [ReplicaStatus.TERMINATED, ReplicaStatus.FAILED, ReplicaStatus.EXPIRED])
def test_a_closed_replica_is_purged_after_the_event_retention(agent, closed_as):
    replica = standby(agent, 1)
    assert stored_purge_at(replica) is None  # an open replica is never purged

    closed_at = NOW + timedelta(hours=5)
    replica_repo.transition(replica, closed_as, closed_at)

    days = get_settings().event_retention_days
    assert stored_purge_at(replica) == closed_at + timedelta(days=days)


def test_a_promoted_replica_is_purged_after_the_event_retention(agent):
    replica = replica_repo.attach_instance(standby(agent, 1), instance_id="i-0promoted0000001", now=NOW)
    promoted_at = NOW + timedelta(minutes=30)

    assert replica_repo.promote(agent, replica, old_instance_id=agent.instance_id, new_az="us-east-1b",
                                new_pool_id=None, new_mode="spot", now=promoted_at)

    assert stored_purge_at(replica) == promoted_at + timedelta(days=get_settings().event_retention_days)


def test_open_replicas_are_read_without_the_closed_history(agent):
    closed = [replica_repo.transition(standby(agent, n), ReplicaStatus.TERMINATED, NOW) for n in range(1, 4)]
    live = standby(agent, 9, take_slot=True)

    assert [r.replica_id for r in replica_repo.for_agent(agent.agent_id, include_final=False)] == [live.replica_id]
    assert {r.replica_id for r in replica_repo.for_agent(agent.agent_id)} == {live.replica_id,
                                                                             *(r.replica_id for r in closed)}
