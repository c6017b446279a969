"""The replica coordinator against moto: one standby per manual-replica agent, in another pool, never two.

Runs go through the real schedule handler (``invoke_schedule(api, "replica-coordinator")``) except the
concurrency test, which calls ``reconcile_agent`` from several threads at once. The moto is shared by the
whole session: every assertion is about this test's agent and its instances, never global counts.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from chalicelib.aws import ec2 as adapter
from chalicelib.jobs.replica_coordinator import reconcile_agent
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable
from chalicelib.tables.instances import InstanceTable
from tests.conftest import invoke_schedule
from tests.e2e.failover_support import REGION, ec2, register_agent, state_of, tags_of

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")

MANUAL = {"manual_replica_enabled": True, "auto_switch_enabled": False}
LIVE = ["pending", "running", "stopping", "stopped"]


def manual_agent(make_tenant):
    """(client_id, agent_id, primary instance id, primary pool id) of a fresh manual-replica agent in us-east-1a."""
    client_id, _, agent_id, primary, itype = register_agent(make_tenant, **MANUAL)
    return client_id, agent_id, primary, f"{itype}.us-east-1a"


def slot(client_id, agent_id) -> str | None:
    return AgentTable.get(client_id, agent_id, consistent_read=True).current_replica_id


def active(agent_id):
    return replica_repo.for_agent(agent_id, include_final=False)


def instances_tagged_with(agent_id) -> list[str]:
    """This agent's live EC2 instances that we launched (by the AgentId tag)."""
    reply = ec2().describe_instances(Filters=[{"Name": "tag:AgentId", "Values": [agent_id]},
                                              {"Name": "instance-state-name", "Values": LIVE}])
    return [i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]]


@pytest.fixture
def aws_request_semantics(monkeypatch):
    """Two guarantees of the real services that the concurrency test relies on and moto lacks under threads.

    * Each DynamoDB request is atomic. moto evaluates conditions, and rolls a cancelled transaction back by
      restoring whole-table snapshots, without a lock: two threads can lose each other's writes (a replica row
      or the slot claim vanishes). Only DynamoDB requests are serialised; they never nest other calls.
    * RunInstances is idempotent on ClientToken (the adapter sends ``<replica_id>-<lifecycle>``). moto stores
      the token but ignores it, so two runs launching the same replica row would get two instances.
    """
    from moto.core.botocore_stubber import BotocoreStubber

    dynamodb_lock = threading.Lock()
    real_process = BotocoreStubber.process_request

    def process_request(self, request):
        if "://dynamodb." not in request.url:
            return real_process(self, request)
        with dynamodb_lock:
            return real_process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", process_request)

    client = adapter._client("ec2", REGION)
    real_run = client.run_instances
    by_token: dict[str, dict] = {}
    token_lock = threading.Lock()

    def run_instances(**kwargs):
        token = kwargs.get("ClientToken")
        if token is None:
            return real_run(**kwargs)
        with token_lock:
            if token not in by_token:
                by_token[token] = real_run(**kwargs)
            return by_token[token]

    monkeypatch.setattr(client, "run_instances", run_instances)


def the_standby(client_id, agent_id):
    """The one active replica; also checks it holds the agent's slot."""
    replicas = active(agent_id)
    assert len(replicas) == 1, [(r.replica_id, r.status) for r in replicas]
    assert slot(client_id, agent_id) == replicas[0].replica_id
    return replicas[0]


def test_a_manual_replica_agent_gets_one_standby_in_another_pool_with_a_running_tagged_instance(api, make_tenant):
    """GIVEN a manual-replica agent without standby
    WHEN the coordinator runs
    THEN it has exactly one standby, in another pool, with a running EC2 instance tagged as ours."""
    client_id, agent_id, primary, primary_pool = manual_agent(make_tenant)

    invoke_schedule(api, "replica-coordinator")

    standby = the_standby(client_id, agent_id)
    assert standby.replica_type == "manual" and standby.lifecycle == "spot"
    assert standby.pool_id != primary_pool and standby.pool_id.rsplit(".", 1)[0] == primary_pool.rsplit(".", 1)[0]
    assert standby.parent_instance_id == primary
    assert standby.instance_id and standby.instance_id != primary
    assert state_of(standby.instance_id) == "running"
    tags = tags_of(standby.instance_id)
    assert tags["ManagedBy"] == "SpotOptimizer"
    assert (tags["ReplicaId"], tags["AgentId"], tags["ClientId"]) == (standby.replica_id, agent_id, client_id)
    placed = ec2().describe_instances(InstanceIds=[standby.instance_id])["Reservations"][0]["Instances"][0]
    assert placed["Placement"]["AvailabilityZone"] == standby.az == standby.pool_id.rsplit(".", 1)[1]
    row = InstanceTable.get(standby.instance_id, consistent_read=True)
    assert row.role == "standby" and row.replica_id == standby.replica_id and row.is_active
    assert instances_tagged_with(agent_id) == [standby.instance_id]


def test_running_the_coordinator_again_creates_nothing_and_marks_the_standby_ready(api, make_tenant):
    """GIVEN a manual-replica agent whose standby was just launched
    WHEN the coordinator runs again
    THEN no second replica or instance exists and the standby is ready."""
    client_id, agent_id, _, _ = manual_agent(make_tenant)
    invoke_schedule(api, "replica-coordinator")
    first = the_standby(client_id, agent_id)
    assert first.status.value == "launching"

    invoke_schedule(api, "replica-coordinator")

    again = the_standby(client_id, agent_id)
    assert again.replica_id == first.replica_id and again.instance_id == first.instance_id
    assert again.status.value == "ready" and again.ready_at is not None
    assert len(replica_repo.for_agent(agent_id)) == 1
    assert instances_tagged_with(agent_id) == [first.instance_id]


def test_four_concurrent_reconciles_of_a_fresh_agent_create_exactly_one_standby(make_tenant, aws_request_semantics):
    """GIVEN a fresh manual-replica agent
    WHEN four coordinator runs reconcile it at the same moment
    THEN exactly one replica row, one held slot and one EC2 instance tagged with the agent exist."""
    client_id, agent_id, _, _ = manual_agent(make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    now = datetime.now(UTC)
    start, errors, done = threading.Barrier(4), [], []

    def run():
        try:
            start.wait(timeout=10)
            done.append(reconcile_agent(agent, now))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == [] and len(done) == 4
    rows = replica_repo.for_agent(agent_id)
    assert len(rows) == 1, [(r.replica_id, r.status, r.instance_id) for r in rows]
    standby = the_standby(client_id, agent_id)
    assert standby.instance_id and instances_tagged_with(agent_id) == [standby.instance_id]
    assert AgentTable.get(client_id, agent_id, consistent_read=True).replica_generation == 1


def test_a_standby_whose_instance_was_terminated_is_failed_and_replaced_on_the_next_run(api, make_tenant):
    """GIVEN a manual-replica agent with a ready standby
    WHEN its EC2 instance is terminated and the coordinator runs
    THEN that replica is failed and a new standby with a new running instance takes the slot."""
    client_id, agent_id, _, primary_pool = manual_agent(make_tenant)
    invoke_schedule(api, "replica-coordinator")
    invoke_schedule(api, "replica-coordinator")
    lost = the_standby(client_id, agent_id)
    ec2().terminate_instances(InstanceIds=[lost.instance_id])

    invoke_schedule(api, "replica-coordinator")

    failed = replica_repo.get(agent_id, lost.replica_id)
    assert failed.status.value == "failed" and lost.instance_id in (failed.error_message or "")
    assert not InstanceTable.get(lost.instance_id, consistent_read=True).is_active
    replacement = the_standby(client_id, agent_id)
    assert replacement.replica_id != lost.replica_id and replacement.instance_id != lost.instance_id
    assert replacement.pool_id != primary_pool and state_of(replacement.instance_id) == "running"
    assert instances_tagged_with(agent_id) == [replacement.instance_id]


def test_a_standby_that_failed_for_capacity_is_replaced_on_the_next_run(api, make_tenant, monkeypatch):
    """GIVEN EC2 has no spot capacity for this agent's first standby launch
    WHEN the coordinator runs
    THEN the replica is failed (slot free, no instance); the next run launches a replacement."""
    client_id, agent_id, _, primary_pool = manual_agent(make_tenant)
    client = adapter._client("ec2", REGION)
    real_run = client.run_instances
    refused = []

    def no_capacity_once(**kwargs):
        tags = {t["Key"]: t["Value"] for spec in kwargs.get("TagSpecifications", []) for t in spec["Tags"]}
        if tags.get("AgentId") == agent_id and not refused:  # other agents in the shared moto are not affected
            refused.append(tags["ReplicaId"])
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no spot"}},
                              "RunInstances")
        return real_run(**kwargs)

    monkeypatch.setattr(client, "run_instances", no_capacity_once)

    invoke_schedule(api, "replica-coordinator")

    assert len(refused) == 1
    first = replica_repo.get(agent_id, refused[0])
    assert first.status.value == "failed" and "InsufficientInstanceCapacity" in first.error_message
    assert first.instance_id is None and slot(client_id, agent_id) is None
    assert active(agent_id) == [] and instances_tagged_with(agent_id) == []

    invoke_schedule(api, "replica-coordinator")

    replacement = the_standby(client_id, agent_id)
    assert replacement.replica_id != first.replica_id
    assert replacement.pool_id != primary_pool and state_of(replacement.instance_id) == "running"
    assert instances_tagged_with(agent_id) == [replacement.instance_id]


def test_the_refusal_is_recorded_and_the_replacement_skips_the_refused_pool(api, make_tenant, monkeypatch):
    """GIVEN the coordinator's first standby launch is refused for capacity
    THEN a launch_refused observation of that pool is recorded, and the next run (still within the pool's
    back-off) places the replacement in another pool; its success is recorded too."""
    client_id, agent_id, _, primary_pool = manual_agent(make_tenant)
    client = adapter._client("ec2", REGION)
    real_run = client.run_instances
    refused = []

    def no_capacity_once(**kwargs):
        tags = {t["Key"]: t["Value"] for spec in kwargs.get("TagSpecifications", []) for t in spec["Tags"]}
        if tags.get("AgentId") == agent_id and not refused:
            refused.append(tags["ReplicaId"])
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no spot"}},
                              "RunInstances")
        return real_run(**kwargs)

    monkeypatch.setattr(client, "run_instances", no_capacity_once)
    invoke_schedule(api, "replica-coordinator")
    first = replica_repo.get(agent_id, refused[0])
    since = first.created_at - timedelta(minutes=1)
    [seen] = observations.for_pools([first.pool_id], since)[first.pool_id]
    assert (seen.kind.value, seen.code, seen.source) == ("launch_refused", "InsufficientInstanceCapacity",
                                                         "replica-coordinator")
    assert first.pool_id in observations.backoff([first.pool_id], datetime.now(UTC))

    invoke_schedule(api, "replica-coordinator")

    replacement = the_standby(client_id, agent_id)
    assert replacement.pool_id not in (first.pool_id, primary_pool)
    assert [o.kind.value for o in observations.for_pools([replacement.pool_id], since)[replacement.pool_id]] == \
        ["launch_succeeded"]


def test_a_standby_not_yet_launched_in_a_pool_in_back_off_is_given_up_and_placed_elsewhere(make_tenant):
    """GIVEN a standby row without an instance (an earlier launch failed transiently) in a pool that has since
    refused launches WHEN the coordinator runs THEN it does not ask EC2 there again: the row is failed and a new
    standby is launched in another pool."""
    from components.capacity import CapacityObservation, ObservationKind
    from components.replica_coordinator import ReplicaType

    client_id, agent_id, _, primary_pool = manual_agent(make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    now = datetime.now(UTC)
    blocked_pool = primary_pool.replace("us-east-1a", "us-east-1b")
    row = replica_repo.create(agent, replica_id=replica_repo.new_replica_id(now),
                              replica_type=ReplicaType.MANUAL.value, lifecycle="spot", pool_id=blocked_pool,
                              az="us-east-1b", created_by="test", now=now, take_slot=True)
    observations.record(CapacityObservation(blocked_pool, ObservationKind.LAUNCH_REFUSED, now.timestamp(),
                                            code="InsufficientInstanceCapacity", source="test"), event_id="t-1")

    done = reconcile_agent(agent_repo.get(client_id, agent_id), now)

    assert done["mark_failed"] == 1 and done["create"] == 1
    gone = replica_repo.get(agent_id, row.replica_id)
    assert gone.status.value == "failed" and "back-off" in gone.error_message and gone.instance_id is None
    standby = the_standby(client_id, agent_id)
    assert standby.pool_id not in (blocked_pool, primary_pool) and standby.instance_id


@pytest.mark.parametrize("config", [
    pytest.param({"auto_switch_enabled": True, "manual_replica_enabled": False}, id="auto-switch"),
    pytest.param({"auto_switch_enabled": False, "manual_replica_enabled": False}, id="neither"),
])
def test_an_agent_without_manual_replica_gets_no_standby(api, make_tenant, config):
    """GIVEN an agent that is not in manual-replica mode
    WHEN the coordinator runs
    THEN it has no replica, no slot and no instance of ours."""
    client_id, _, agent_id, _, _ = register_agent(make_tenant, **config)

    invoke_schedule(api, "replica-coordinator")
    invoke_schedule(api, "replica-coordinator")

    assert replica_repo.for_agent(agent_id) == []
    assert slot(client_id, agent_id) is None
    assert instances_tagged_with(agent_id) == []


def test_no_pool_for_a_standby_is_logged_as_capacity_not_as_a_fault(make_tenant, monkeypatch):
    """GIVEN a manual-replica agent every other pool of which has just refused a launch (all in back-off) WHEN the
    coordinator runs THEN it creates nothing, counts the step as skipped and logs it at INFO, not WARNING: the
    shortage holds for as long as it lasts and every run would repeat the warning (32 lines of one demo week);
    other skipped steps stay warnings."""
    from chalicelib import replicas
    from chalicelib.jobs import replica_coordinator
    from components.capacity import CapacityObservation, ObservationKind

    client_id, agent_id, _, _ = manual_agent(make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    now = datetime.now(UTC)
    refused = 0
    while others := replicas.candidates(agent, now):  # refuse every pool it would take, until none is left
        for place in others:
            refused += 1
            observations.record(CapacityObservation(place.pool_id, ObservationKind.LAUNCH_REFUSED, now.timestamp(),
                                                    code="InsufficientInstanceCapacity", source="test"),
                                event_id=f"t-{refused}")
        assert refused < 100
    assert refused, "the agent had other pools to take away"
    logged = []
    for level in ("info", "warning"):
        monkeypatch.setattr(replica_coordinator.logger, level,
                            lambda message, *a, level=level, **k: logged.append((level, message)))

    done = reconcile_agent(agent_repo.get(client_id, agent_id), now)

    assert done["skipped"] == 1 and done["create"] == 0 and not active(agent_id)
    assert ("info", "coordinator step skipped") in logged
    assert not [m for level, m in logged if level == "warning"]

    def throttled(*a, **k):
        raise adapter.TransientAwsError("RequestLimitExceeded")

    monkeypatch.setattr(replicas, "ensure_standby", throttled)  # a fault, not capacity: still a warning
    logged.clear()
    assert reconcile_agent(agent_repo.get(client_id, agent_id), now)["skipped"] == 1
    assert logged == [("warning", "coordinator step skipped")]


def _dynamodb_writes_refused():
    """A context in which every DynamoDB write whose condition failed is listed, as (operation, table)."""
    from contextlib import contextmanager

    from botocore.client import BaseClient

    @contextmanager
    def watching():
        original, refused = BaseClient._make_api_call, []

        def call(client, op, params):
            try:
                return original(client, op, params)
            except ClientError as exc:
                if exc.response["Error"]["Code"] in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                    refused.append((op, params.get("TableName", "")))
                raise

        BaseClient._make_api_call = call
        try:
            yield refused
        finally:
            BaseClient._make_api_call = original

    return watching()


def test_a_standby_whose_creation_died_after_the_slot_claim_is_finished_with_its_records_and_no_refused_write(
        make_tenant, monkeypatch):
    """GIVEN the coordinator's run that created a standby died right after the slot's claim (the row ``launching``,
    no instance, neither the ``standby_created`` event nor the ``place_standby`` decision written)
    WHEN the next runs meet it (the first two find EC2 throttled: it stays launching)
    THEN they launch it as before, and the records the crash lost are written, once, at its creation time. The
    defect: the coordinator's launch never wrote them (only a repeat of the client's request did: ``finish_launch``),
    and writing them on every attempt, as that repeat does, costs two conditional writes that fail on every run the
    launch is retried; each run now reads first and writes only what is missing: no write is refused."""
    from chalicelib import replicas
    from chalicelib.repositories import activity
    from chalicelib.tables.risk import DecisionTable

    client_id, agent_id, _, _ = manual_agent(make_tenant)
    now = datetime.now(UTC)

    class Crash(Exception):
        pass

    def crash(*_a, **_k):
        raise Crash("the Lambda died after the slot's claim")

    with monkeypatch.context() as m:
        m.setattr(replicas, "record_creation", crash)
        with pytest.raises(Crash):
            reconcile_agent(agent_repo.get(client_id, agent_id), now)
    [stuck] = active(agent_id)
    assert stuck.instance_id is None and slot(client_id, agent_id) == stuck.replica_id

    def created_events():
        return [e for e in activity.recent_events(datetime.now(UTC), limit=500)
                if e.event_type == "standby_created" and e.agent_id == agent_id]

    def placements():
        return [d for d in DecisionTable.query(agent_id, consistent_read=True) if d.action == "place_standby"]

    real_launch, throttles = adapter.launch, [2]

    def throttled_twice(spec):
        if throttles[0]:
            throttles[0] -= 1
            raise adapter.TransientAwsError("RequestLimitExceeded")
        return real_launch(spec)

    monkeypatch.setattr(adapter, "launch", throttled_twice)
    with _dynamodb_writes_refused() as refused:
        for minute in (1, 2, 3):
            reconcile_agent(agent_repo.get(client_id, agent_id), now + timedelta(minutes=minute))

    assert refused == []
    [standby] = active(agent_id)
    assert standby.replica_id == stuck.replica_id and standby.instance_id and slot(client_id, agent_id) == stuck.replica_id
    [event] = created_events()
    assert event.metadata == {"replica_id": stuck.replica_id} and event.created_at == stuck.created_at
    [decision] = placements()
    assert decision.standby == stuck.pool_id and decision.decided_at == stuck.created_at
    reconcile_agent(agent_repo.get(client_id, agent_id), now + timedelta(minutes=4))
    assert the_standby(client_id, agent_id).status.value == "ready"
    assert len(created_events()) == 1 and len(placements()) == 1
