"""End-to-end failover under moto: the real sentinel handler, the real state machine execution (from
the one ASL file), the real task handlers, EC2/ELBv2 in moto. Acceptance (a)–(f) of the failover issue.
"""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest

from chalicelib.repositories import interruptions as interruption_repo
from chalicelib.repositories import observations
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable, InstanceTable, InterruptionTable
from tests.conftest import invoke_schedule
from tests.e2e.failover_support import (
    REGION,
    ZONES,
    configure,
    deliver,
    ec2,
    register_agent,
    state_of,
    tags_of,
    wait_for,
    warning,
)

pytestmark = pytest.mark.usefixtures("failover_machine")


def agent_row(client_id, agent_id):
    return AgentTable.get(client_id, agent_id, consistent_read=True)


def only_interruption(client_id) -> InterruptionTable:
    rows = list(InterruptionTable.query(client_id))
    assert len(rows) == 1, [r.attribute_values for r in rows]
    return rows[0]


def test_a_manual_replica_standby_is_promoted_eip_moved_old_terminated_next_standby_launching(api, make_tenant):
    client_id, caller, agent_id, primary, itype = register_agent(
        make_tenant, manual_replica_enabled=True, auto_switch_enabled=False, auto_terminate_enabled=True,
        terminate_wait_seconds=0)
    alloc = ec2().allocate_address(Domain="vpc")["AllocationId"]
    ec2().associate_address(AllocationId=alloc, InstanceId=primary)
    configure(client_id, agent_id, handover="eip", eip_allocation_id=alloc)
    # GIVEN the coordinator has created a standby in another pool and seen it running
    invoke_schedule(api, "replica-coordinator")
    invoke_schedule(api, "replica-coordinator")
    standby_id = agent_row(client_id, agent_id).current_replica_id
    standby = replica_repo.get(agent_id, standby_id)
    assert standby.status.value == "ready" and standby.pool_id != f"{itype}.us-east-1a"
    # WHEN the two-minute warning arrives through EventBridge
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert result["action"] == "failover_started", result
    described = wait_for(result["execution_arn"])
    assert described["status"] == "SUCCEEDED", described
    # THEN the standby is the primary, the EIP points at it, the old instance is terminated
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id == standby.instance_id and agent.current_pool_id == standby.pool_id
    assert replica_repo.get(agent_id, standby_id).status.value == "promoted"
    address = ec2().describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    assert address["InstanceId"] == standby.instance_id
    assert state_of(primary) == "terminated" and state_of(standby.instance_id) == "running"
    # AND the event is recorded with its timings
    event = only_interruption(client_id)
    assert event.status == "resolved" and event.response_action == "promoted-existing-replica"
    assert event.detected_at <= event.decided_at <= event.replacement_ready_at <= event.traffic_moved_at
    assert event.old_terminated_at is not None and event.failover_time_ms is not None
    # AND the next standby is launching in a pool other than the new primary's
    nxt = agent.current_replica_id
    assert nxt and nxt != standby_id
    next_standby = replica_repo.get(agent_id, nxt)
    assert next_standby.instance_id and next_standby.pool_id != standby.pool_id
    assert tags_of(next_standby.instance_id)["ReplicaId"] == nxt
    # AND both agents were told, each on its own instance: prepare_shutdown for the old instance,
    # promote for the new one (a command naming an instance is delivered only to a caller on it)
    def kinds_for(instance_id):
        status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands?instance_id={instance_id}")
        assert status == 200, reply
        return {(c["command_type"], c["instance_id"]) for c in reply["commands"]}

    assert kinds_for(primary) == {("prepare_shutdown", primary)}
    assert kinds_for(standby.instance_id) == {("promote", standby.instance_id)}


def test_b_auto_switch_agent_without_standby_gets_an_emergency_spot_replacement_in_another_pool(api, make_tenant):
    # GIVEN an auto-switch agent in us-east-1a, no standby; us-east-1b is the cheapest other pool
    client_id, _, agent_id, primary, itype = register_agent(
        make_tenant, prices={"us-east-1a": 0.030, "us-east-1b": 0.031, "us-east-1c": 0.050})
    # WHEN the warning arrives
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    # THEN a spot replacement runs in us-east-1b, tagged as ours, and the agent points at it
    agent = agent_row(client_id, agent_id)
    new = agent.instance_id
    assert new != primary and agent.current_pool_id == f"{itype}.us-east-1b" and agent.current_mode == "spot"
    described = ec2().describe_instances(InstanceIds=[new])["Reservations"][0]["Instances"][0]
    assert described["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert described.get("InstanceLifecycle") == "spot" and described["State"]["Name"] == "running"
    tags = tags_of(new)
    assert tags["ManagedBy"] == "SpotOptimizer" and tags["LogicalAgentId"] == agent.logical_agent_id
    assert tags["ReplicaId"].startswith("emg-")
    event = only_interruption(client_id)
    assert event.response_action == "emergency-spot-replacement" and event.new_instance_id == new
    assert event.status == "resolved" and state_of(primary) == "terminated"  # auto-terminate is on by default


def test_b2_an_agent_of_unknown_mode_is_never_replaced_in_the_pool_being_interrupted(api, make_tenant):
    """A legacy agent that never said its mode (spot_agent.py's claim is not believed) may be on spot: the warning
    proves it. Its replacement goes to another pool, as any spot primary's — here where no price is known (its
    pricing line names no pool), so the zones are tried in order and the interrupted one comes first."""
    client_id, _, agent_id, primary, itype = register_agent(make_tenant, prices={})
    AgentTable(client_id, agent_id).update(actions=[AgentTable.current_mode.set("unknown")])
    InstanceTable(primary).update(actions=[InstanceTable.mode.set("unknown")])  # as its registration writes it
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id != primary and agent.current_pool_id not in (f"{itype}.us-east-1a", None)
    assert only_interruption(client_id).pool_id == f"{itype}.us-east-1a"


def test_c_no_spot_capacity_falls_back_to_on_demand(api, make_tenant, monkeypatch):
    from botocore.exceptions import ClientError

    from chalicelib.aws import ec2 as adapter

    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    client = adapter._client("ec2", REGION)
    real_run = client.run_instances

    def no_spot(**kwargs):
        if "InstanceMarketOptions" in kwargs:
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no spot"}}, "RunInstances")
        return real_run(**kwargs)

    monkeypatch.setattr(client, "run_instances", no_spot)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    agent = agent_row(client_id, agent_id)
    described = ec2().describe_instances(InstanceIds=[agent.instance_id])["Reservations"][0]["Instances"][0]
    assert "InstanceLifecycle" not in described and described["State"]["Name"] == "running"
    assert agent.current_mode == "ondemand" and agent.current_pool_id is None
    event = only_interruption(client_id)
    assert event.response_action == "on-demand-fallback" and event.new_lifecycle == "ondemand"
    # every planned spot pool was tried in the one launch task (the three other zones), each refusal recorded
    failed_spot = [r for r in replica_repo.for_agent(agent_id) if r.lifecycle == "spot"]
    assert [r.status.value for r in failed_spot] == ["failed"] * 3
    assert sorted(r.pool_id for r in failed_spot) == [f"{itype}.{z}" for z in ZONES[1:]]
    refused = observations.for_pools([r.pool_id for r in failed_spot], event.detected_at - timedelta(minutes=1))
    assert {p: [(o.kind.value, o.code, o.source) for o in obs] for p, obs in refused.items()} == {
        r.pool_id: [("launch_refused", "InsufficientInstanceCapacity", "failover")] for r in failed_spot}


def test_c2_a_refused_pool_costs_no_retry_the_next_ranked_pool_is_launched_in_the_same_task(
        api, make_tenant, monkeypatch):
    from botocore.exceptions import ClientError

    from chalicelib import failover
    from chalicelib.aws import ec2 as adapter

    # GIVEN us-east-1b is the cheapest other pool, then us-east-1c, and 1b has no spot capacity
    client_id, _, agent_id, primary, itype = register_agent(
        make_tenant, prices={"us-east-1a": 0.030, "us-east-1b": 0.031, "us-east-1c": 0.040, "us-east-1d": 0.050})
    client = adapter._client("ec2", REGION)
    real_run = client.run_instances
    asked = []

    def no_spot_in_1b(**kwargs):
        asked.append(kwargs["SubnetId"])
        subnet = ec2().describe_subnets(SubnetIds=[kwargs["SubnetId"]])["Subnets"][0]
        if "InstanceMarketOptions" in kwargs and subnet["AvailabilityZone"] == "us-east-1b":
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no spot"}},
                              "RunInstances")
        return real_run(**kwargs)

    monkeypatch.setattr(client, "run_instances", no_spot_in_1b)
    launches = []
    real_launch = failover.launch
    monkeypatch.setattr(failover, "launch", lambda state: launches.append(state["lifecycle"]) or real_launch(state))
    # WHEN the warning arrives
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    # THEN one launch task (no retry, no on-demand) asked 1b, was refused, and launched in 1c
    assert launches == ["spot"] and len(asked) == 2
    agent = agent_row(client_id, agent_id)
    assert agent.current_pool_id == f"{itype}.us-east-1c" and agent.current_mode == "spot"
    event = only_interruption(client_id)
    assert event.response_action == "emergency-spot-replacement" and event.new_pool_id == f"{itype}.us-east-1c"
    spot = {r.pool_id: r for r in replica_repo.for_agent(agent_id)}
    assert spot[f"{itype}.us-east-1b"].status.value == "failed" and spot[f"{itype}.us-east-1c"].status.value == \
        "promoted"
    # AND both outcomes are capacity observations; the refused pool is now in back-off
    seen = observations.for_pools([f"{itype}.us-east-1b", f"{itype}.us-east-1c"],
                                  event.detected_at - timedelta(minutes=1))
    assert [(o.kind.value, o.code) for o in seen[f"{itype}.us-east-1b"]] == \
        [("launch_refused", "InsufficientInstanceCapacity")]
    assert [o.kind.value for o in seen[f"{itype}.us-east-1c"]] == ["launch_succeeded"]
    assert list(observations.backoff(seen, event.completed_at)) == [f"{itype}.us-east-1b"]


def test_c3_the_plan_skips_a_pool_in_capacity_back_off(api, make_tenant):
    from datetime import datetime, timezone

    from components.capacity import CapacityObservation, ObservationKind

    # GIVEN the cheapest other pool (1b) refused a launch a minute ago
    client_id, _, agent_id, primary, itype = register_agent(
        make_tenant, prices={"us-east-1a": 0.030, "us-east-1b": 0.031, "us-east-1c": 0.040})
    refused_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    observations.record(CapacityObservation(f"{itype}.us-east-1b", ObservationKind.LAUNCH_REFUSED,
                                            refused_at.timestamp(), code="InsufficientInstanceCapacity",
                                            source="agent"), event_id="cmd-earlier")
    # WHEN the warning arrives THEN the replacement goes to 1c without asking EC2 for 1b
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    assert agent_row(client_id, agent_id).current_pool_id == f"{itype}.us-east-1c"
    assert [r.pool_id for r in replica_repo.for_agent(agent_id)] == [f"{itype}.us-east-1c"]


def test_d_duplicate_deliveries_and_the_agent_report_start_exactly_one_workflow(api, make_tenant):
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    event = warning(primary)
    first = deliver(api, "sentinel-interruption", event)
    again = deliver(api, "sentinel-interruption", dict(event))  # at-least-once: same event id
    other_id = deliver(api, "sentinel-interruption", warning(primary))  # same signal, another event id
    status, by_agent = caller.post(f"/api/agents/{agent_id}/termination-imminent",
                                   {"instance_id": primary, "termination_time": event["time"]})
    assert first["action"] == "failover_started"
    assert again == first  # powertools idempotency replays the first result
    assert other_id["action"] == "duplicate" and other_id["interruption_id"] == first["interruption_id"]
    assert status == 202 and by_agent["action"] == "duplicate", by_agent
    assert by_agent["interruption_id"] == first["interruption_id"]
    wait_for(first["execution_arn"])
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = first["execution_arn"].split(":execution:")[1].split(":")[0]
    arn = first["execution_arn"].rsplit(":", 1)[0].replace(":execution:", ":stateMachine:")
    assert machine in arn
    mine = [e for e in sfn.list_executions(stateMachineArn=arn)["executions"]
            if interruption_repo.get(client_id, e["name"]) is not None]
    assert len(mine) == 1
    assert len(list(InterruptionTable.query(client_id))) == 1


def test_e_a_transient_task_failure_is_retried_and_the_execution_succeeds(api, make_tenant, monkeypatch):
    from chalicelib import failover
    from chalicelib.aws.ec2 import TransientAwsError

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    calls = []
    real_handover = failover.handover

    def flaky(state):
        calls.append(state["interruption_id"])
        if len(calls) == 1:
            raise TransientAwsError("Throttling: rate exceeded")
        return real_handover(state)

    monkeypatch.setattr(failover, "handover", flaky)
    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"])
    assert described["status"] == "SUCCEEDED", described
    assert len(calls) == 2  # failed once, retried once
    assert only_interruption(client_id).status == "resolved"
    assert agent_row(client_id, agent_id).instance_id != primary


def test_e2_a_retried_closing_step_keeps_its_first_completion_time_and_notifies_once(api, make_tenant, monkeypatch):
    from chalicelib import failover
    from chalicelib.aws.ec2 import TransientAwsError
    from chalicelib.repositories import activity
    from chalicelib.tables import NotificationTable

    client_id, _, _, primary, _ = register_agent(make_tenant)
    real_record_event, real_now, failed = activity.record_event, failover._now, []
    monkeypatch.setattr(failover, "_now", lambda: real_now() + timedelta(minutes=len(failed)))

    def flaky(event_type, *args, **kwargs):
        # the closing step dies after its notification was written (its answer lost) and then runs again
        # a minute later: the retry must reuse the first time, so its notification key is the same one
        if event_type == "failover_completed" and not failed:
            failed.append(True)  # from now on the step's clock reads a minute later
            raise TransientAwsError("Throttling: rate exceeded")
        return real_record_event(event_type, *args, **kwargs)

    monkeypatch.setattr(activity, "record_event", flaky)
    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"])
    assert described["status"] == "SUCCEEDED", described
    assert failed, "the closing step never failed: the test proves nothing"
    event = only_interruption(client_id)
    assert event.status == "resolved" and event.completed_at is not None
    sent = [n for n in NotificationTable.query(client_id) if n.kind == "interruption"]
    assert len(sent) == 1 and sent[0].created_at == event.completed_at, [n.attribute_values for n in sent]
    assert failover._completed_at({"client_id": client_id, "interruption_id": event.interruption_id}) \
        == event.completed_at


def test_f_rebalance_prewarms_a_standby_that_expires_when_no_warning_follows(api, make_tenant):
    from datetime import datetime, timedelta, timezone

    from chalicelib.repositories import pools as pool_repo
    from chalicelib.settings import get_settings
    from tests.e2e.failover_support import rebalance

    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    now = datetime.now(timezone.utc)
    pool_repo.save_risk([(f"{itype}.us-east-1a", 0.8, "model", "test")], 3600, now)
    # WHEN a rebalance recommendation arrives for a risky pool
    result = deliver(api, "sentinel-rebalance", rebalance(primary))
    assert result["action"] == "prewarm", result
    replica = replica_repo.get(agent_id, result["replica_id"])
    assert replica.replica_type == "automatic-rebalance" and replica.expires_at is not None
    assert replica.pool_id != f"{itype}.us-east-1a" and state_of(replica.instance_id) == "running"
    assert agent_row(client_id, agent_id).current_replica_id == replica.replica_id
    # WHEN no termination follows and the cleanup runs after the pre-warm window
    later = now + timedelta(seconds=get_settings().prewarm_ttl_s + 60)
    outcome = invoke_schedule(api, "cleanup", now=later)
    # THEN the standby is expired, its instance terminated and the slot free again
    assert replica.replica_id in outcome["expired"]
    assert replica_repo.get(agent_id, replica.replica_id).status.value == "expired"
    assert state_of(replica.instance_id) == "terminated"
    assert agent_row(client_id, agent_id).current_replica_id is None


def test_g_when_every_path_fails_the_event_is_failed_and_the_client_alerted_never_silent(api, make_tenant,
                                                                                       monkeypatch):
    from botocore.exceptions import ClientError

    from chalicelib.aws import ec2 as adapter
    from chalicelib.tables import NotificationTable

    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    client = adapter._client("ec2", REGION)

    def no_capacity(**kwargs):
        raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}}, "RunInstances")

    monkeypatch.setattr(client, "run_instances", no_capacity)
    # WHEN neither spot nor on-demand capacity exists
    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"])
    # THEN the execution fails loudly: event failed with the cause, a critical notification, agent unchanged
    assert described["status"] == "FAILED"
    event = only_interruption(client_id)
    assert event.status == "failed" and event.success is False and "InsufficientInstanceCapacity" in event.error
    alerts = [n for n in NotificationTable.query(client_id) if n.kind == "interruption_failed"]
    assert len(alerts) == 1 and alerts[0].severity == "critical"
    assert agent_row(client_id, agent_id).instance_id == primary
    assert [r.status.value for r in replica_repo.for_agent(agent_id)] == ["failed"] * 4  # 3 spot pools + on-demand


def test_h_an_agent_that_moved_elsewhere_during_the_failover_keeps_its_new_instance(api, make_tenant, monkeypatch):
    from chalicelib import failover
    from tests.e2e.failover_support import launch_primary

    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    elsewhere = launch_primary(itype, "us-east-1c")
    real_check = failover.check_ready

    def switch_meanwhile(state):
        # the agent finishes a switch of its own while the replacement boots
        AgentTable(client_id, agent_id).update(actions=[AgentTable.instance_id.set(elsewhere)])
        return real_check(state)

    monkeypatch.setattr(failover, "check_ready", switch_meanwhile)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    assert agent_row(client_id, agent_id).instance_id == elsewhere  # not pulled back to the replacement
    event = only_interruption(client_id)
    assert event.status == "resolved" and event.response_action == "no-action"
    [replacement] = [r for r in replica_repo.for_agent(agent_id) if r.replica_id.startswith("emg-")]
    assert replacement.status.value == "terminated" and state_of(replacement.instance_id) == "terminated"


def test_i_a_late_heartbeat_from_the_replaced_instance_does_not_pull_the_agent_back(api, make_tenant):
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    replacement = agent_row(client_id, agent_id).instance_id
    # WHEN the old instance's agent heartbeats once more (it was in flight during the failover)
    status, _ = caller.post(f"/api/agents/{agent_id}/heartbeat",
                            {"status": "online", "instance_id": primary, "az": "us-east-1a", "mode": "spot"})
    # THEN the agent stays on its replacement
    assert status == 200 and agent_row(client_id, agent_id).instance_id == replacement != primary


def test_i_a_heartbeat_that_read_the_agent_before_the_hand_over_does_not_undo_it(api, make_tenant):
    """The race the late heartbeat above does not cover: the heartbeat read the agent row (still on the
    old instance) just before the hand-over committed, and writes just after it."""
    from datetime import datetime, timezone

    from chalicelib.repositories import agents as agent_repo

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    read_before = agent_repo.get(client_id, agent_id)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    replacement = agent_row(client_id, agent_id)
    now = datetime.now(timezone.utc)
    recorded = agent_repo.heartbeat(read_before, status="online", instance_id=primary, instance_type="m5.large",
                                    mode="spot", az="us-east-1a", now=now)
    after = agent_row(client_id, agent_id)
    assert after.instance_id == replacement.instance_id != primary and after.az == replacement.az
    # the old instance no longer speaks for the agent: not even its liveness is written
    assert recorded.instance_id == replacement.instance_id
    assert after.last_heartbeat_at == replacement.last_heartbeat_at and after.status == replacement.status


def test_j_a_replacement_lost_before_the_hand_over_falls_back_to_on_demand(api, make_tenant, monkeypatch):
    from chalicelib import failover
    from components.replica_coordinator import ReplicaStatus

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    real_handover = failover.handover

    def lost_first(state):
        replica = replica_repo.get(state["agent_id"], state["replica_id"])
        if replica.lifecycle == "spot":  # the spot replacement is interrupted right after it came up
            replica_repo.transition(replica, ReplicaStatus.FAILED, replica.updated_at, error_message="interrupted")
        return real_handover(state)

    monkeypatch.setattr(failover, "handover", lost_first)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    event = only_interruption(client_id)
    assert event.status == "resolved" and event.response_action == "on-demand-fallback"
    assert agent_row(client_id, agent_id).current_mode == "ondemand"


def _terminate_as_iam_allows(monkeypatch):
    """EC2's TerminateInstances under the product's IAM policy (infra/policies.py ec2_terminate / ec2_retire),
    which moto does not enforce: our stage's instances, or the client's own tagged for retirement."""
    from botocore.exceptions import ClientError

    from chalicelib.aws import ec2 as adapter

    client = adapter._client("ec2", REGION)
    real = client.terminate_instances

    def terminate_instances(InstanceIds, **kwargs):  # noqa: N803 (boto3's keyword)
        for instance_id in InstanceIds:
            tags = tags_of(instance_id)
            ours = tags.get(adapter.TAG_MANAGED_BY) == adapter.MANAGED_BY and tags.get(adapter.TAG_STAGE) == adapter.stage()
            if not ours and tags.get(adapter.TAG_RETIRE) != adapter.stage():
                raise ClientError({"Error": {"Code": "UnauthorizedOperation",
                                             "Message": "You are not authorized to perform this operation."}},
                                  "TerminateInstances")
        return real(InstanceIds=InstanceIds, **kwargs)

    monkeypatch.setattr(client, "terminate_instances", terminate_instances)


def _fail_over_a_manual_replica_agent(api, make_tenant, *, retire_tag: bool):
    client_id, _, agent_id, primary, _ = register_agent(
        make_tenant, manual_replica_enabled=True, auto_switch_enabled=False, auto_terminate_enabled=True,
        terminate_wait_seconds=0)
    if retire_tag:  # the client opts its instance in (its launch template would)
        from chalicelib.aws import ec2 as adapter
        ec2().create_tags(Resources=[primary], Tags=[{"Key": adapter.TAG_RETIRE, "Value": adapter.stage()}])
    invoke_schedule(api, "replica-coordinator")
    invoke_schedule(api, "replica-coordinator")
    standby_id = agent_row(client_id, agent_id).current_replica_id
    assert replica_repo.get(agent_id, standby_id).status.value == "ready"
    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"])
    assert described["status"] == "SUCCEEDED", described
    return client_id, agent_id, primary, standby_id


def test_k_a_clients_own_old_instance_iam_will_not_retire_is_left_running_the_client_told_the_standby_renewed(
        api, make_tenant, monkeypatch):
    from chalicelib.aws import ec2 as adapter
    from chalicelib.tables import NotificationTable

    _terminate_as_iam_allows(monkeypatch)
    # WHEN a failover's auto-terminate reaches the client's own, untagged old primary (IAM refuses it)
    client_id, agent_id, primary, standby_id = _fail_over_a_manual_replica_agent(api, make_tenant, retire_tag=False)
    # THEN the failover stands: the event is resolved, the old instance still runs and is said to
    event = only_interruption(client_id)
    assert event.status == "resolved" and event.success is True and event.old_terminated_at is None
    assert "not terminated" in event.error
    assert state_of(primary) == "running"
    told = [n for n in NotificationTable.query(client_id) if primary in n.message and "not terminated" in n.message]
    assert len(told) == 1 and told[0].severity == "warning" and adapter.TAG_RETIRE in told[0].message
    assert not [n for n in NotificationTable.query(client_id) if n.kind == "interruption_failed"]
    # AND the agent still gets its next standby (the step after the retire ran)
    agent = agent_row(client_id, agent_id)
    assert agent.instance_id == replica_repo.get(agent_id, standby_id).instance_id
    assert agent.current_replica_id and agent.current_replica_id != standby_id


def test_k2_a_clients_own_old_instance_tagged_for_retirement_is_terminated(api, make_tenant, monkeypatch):
    _terminate_as_iam_allows(monkeypatch)
    client_id, agent_id, primary, standby_id = _fail_over_a_manual_replica_agent(api, make_tenant, retire_tag=True)
    event = only_interruption(client_id)
    assert event.status == "resolved" and event.old_terminated_at is not None and not event.error
    assert state_of(primary) == "terminated"
    assert agent_row(client_id, agent_id).current_replica_id not in (None, standby_id)
