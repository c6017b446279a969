"""The legacy switch command against moto EC2 and the real API: launch, report, retire the old one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib import bootstrap
from chalicelib.repositories import agents as agent_repo
from chalicelib.tables.switches import SwitchTable
from tests.agent.conftest import T0, describe, ec2, identity_of, launch_instance, unique_type


def tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


@pytest.fixture
def switching(tenant, make_agent, imds_factory):
    """A started spot agent in us-east-1a; ``force(target, pool, wait)`` queues a force-switch."""
    itype = unique_type()
    old = launch_instance(itype, "us-east-1a")
    agent = make_agent(imds_factory(identity_of(old)))
    agent.start()

    def force(target="spot", pool=f"{itype}.us-east-1b", wait=0):
        status, _ = tenant.caller.post(f"/api/client/agents/{agent.agent_id}/config",
                                       {"auto_terminate_enabled": wait > 0, "terminate_wait_seconds": wait})
        assert status == 200
        body = {"target": target, **({"pool_id": pool} if pool else {})}
        status, reply = tenant.caller.post(f"/api/client/instances/{old['InstanceId']}/force-switch", body)
        assert status == 201, reply
        return reply["command"]["id"]

    return agent, old, itype, force


def new_instance_of(agent) -> dict:
    return describe(agent.state["retired"]["new_instance_id"])


def test_a_spot_switch_launches_a_tagged_copy_in_the_target_pool_and_reports_it(tenant, switching):
    agent, old, itype, force = switching
    cid = force()
    # WHEN the heartbeat delivers the force-switch
    actions = agent.run_due(T0)
    assert f"executed {cid}" in actions and f"reported {cid}" in actions
    # THEN a replacement runs in us-east-1b as a one-time spot copy of the old instance, tagged as ours
    new = new_instance_of(agent)
    assert new["State"]["Name"] == "running" and new["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert new.get("InstanceLifecycle") == "spot" and new["InstanceType"] == itype
    assert new["ImageId"] == old["ImageId"] and new["KeyName"] == old["KeyName"]
    assert {g["GroupId"] for g in new["SecurityGroups"]} == {g["GroupId"] for g in old["SecurityGroups"]}
    assert new["IamInstanceProfile"]["Arn"] == old["IamInstanceProfile"]["Arn"]
    assert new["SubnetId"] != old["SubnetId"] and new["VpcId"] == old["VpcId"]  # a subnet of the 1b zone
    assert tags(new)["ManagedBy"] == "SpotOptimizer" and tags(new)["LogicalAgentId"] == agent.config.logical_agent_id
    assert tags(new)["Name"] == "SpotOptimizer-spot"
    # AND the server recorded the switch with the prices and timings (legacy field names, now read)
    command = bootstrap.command_store().get(agent.agent_id, cid)
    assert command.status.value == "completed" and new["InstanceId"] in command.message
    row = next(r for r in SwitchTable.query(tenant.client_id) if r.command_id == cid)
    assert row.new_instance_id == new["InstanceId"] and row.new_pool_id == f"{itype}.us-east-1b"
    assert float(row.old_price) == 0.031 and float(row.new_price) == 0.029 and row.trigger == "manual"
    assert row.initiated_at <= row.launched_at <= row.ready_at
    assert agent_repo.get(tenant.client_id, agent.agent_id).instance_id == new["InstanceId"]
    # AND the successful spot launch is a capacity observation of the new pool
    from chalicelib.repositories import observations

    pool = f"{itype}.us-east-1b"
    seen = observations.for_pools([pool], row.initiated_at - timedelta(minutes=1))[pool]
    assert [(o.kind.value, o.source) for o in seen] == [("launch_succeeded", "agent")]
    # AND without a wait the old instance keeps running; the agent no longer speaks for it
    assert describe(old["InstanceId"])["State"]["Name"] == "running"
    assert agent.run_due(T0 + timedelta(hours=1)) == []


def test_the_old_instance_is_terminated_only_after_the_wait_without_blocking(tenant, switching):
    from chalicelib.tables.instances import InstanceTable

    agent, old, _, force = switching
    force(wait=120)
    agent.run_due(T0)
    assert describe(old["InstanceId"])["State"]["Name"] == "running"  # the switch did not sleep
    assert InstanceTable.get(old["InstanceId"]).is_active  # not terminated yet: still counted
    assert agent.run_due(T0 + timedelta(seconds=119)) == []
    assert agent.next_due(T0 + timedelta(seconds=119)) == T0 + timedelta(seconds=120)
    assert agent.run_due(T0 + timedelta(seconds=121)) == [f"terminated {old['InstanceId']}", "termination reported"]
    assert describe(old["InstanceId"])["State"]["Name"] in ("shutting-down", "terminated")
    assert agent.state["retire_instance"] is None and agent.state["retired"]["old_terminated_at"]
    # AND the repeated switch report with the termination time made the server stop counting it
    row = InstanceTable.get(old["InstanceId"], consistent_read=True)
    assert not row.is_active and row.terminated_at is not None
    switch = next(r for r in SwitchTable.query(tenant.client_id) if r.old_instance_id == old["InstanceId"])
    assert switch.old_terminated_at == row.terminated_at


def test_switch_to_on_demand_stays_in_the_subnet_without_spot_options(tenant, switching):
    agent, old, itype, force = switching
    cid = force(target="ondemand", pool=None)
    agent.run_due(T0)
    new = new_instance_of(agent)
    assert new.get("InstanceLifecycle") is None and new["SubnetId"] == old["SubnetId"]
    assert tags(new)["Name"] == "SpotOptimizer-ondemand"
    row = next(r for r in SwitchTable.query(tenant.client_id) if r.command_id == cid)
    assert row.new_mode == "ondemand" and float(row.on_demand_price) == 0.096


def test_a_replacement_that_never_runs_is_terminated_and_the_command_fails(switching, monkeypatch):
    agent, old, _, force = switching
    client = ec2()

    class NeverRunning:
        def wait(self, **kwargs):
            raise RuntimeError("Waiter InstanceRunning failed: Max attempts exceeded")

    monkeypatch.setattr(client, "get_waiter", lambda name: NeverRunning())
    agent._ec2 = client
    cid = force()
    agent.run_due(T0)
    command = bootstrap.command_store().get(agent.agent_id, cid)
    assert command.status.value == "failed" and "did not reach running" in command.message
    launched = [r["Instances"][0] for r in client.describe_instances(Filters=[
        {"Name": "tag:SpotOptimizerCommandId", "Values": [cid]}])["Reservations"]]
    assert len(launched) == 1 and launched[0]["State"]["Name"] in ("shutting-down", "terminated")
    assert not agent.retired  # still the agent's instance: heartbeats go on
    assert "heartbeat" in agent.run_due(T0 + timedelta(seconds=agent.config.heartbeat_s))


def test_a_slow_boot_renews_the_lease_while_the_agent_waits(switching, monkeypatch):
    """GIVEN a replacement that takes three waiter slices to reach running WHEN the agent switches THEN it
    renews the command's lease between slices (the server's deadline moves later), and the switch
    completes on the first attempt."""
    from botocore.exceptions import WaiterError

    agent, old, _, force = switching
    client = ec2()
    renewals = []

    class SlowBoot:
        calls = 0

        def wait(self, **kwargs):
            SlowBoot.calls += 1
            if SlowBoot.calls < 3:
                raise WaiterError(name="InstanceRunning", reason="Max attempts exceeded", last_response={})

    real_extend = agent.api.extend_lease

    def extend(agent_id, command_id):
        reply = real_extend(agent_id, command_id)
        renewals.append(reply["command"]["lease_expires_at"])
        return reply

    monkeypatch.setattr(client, "get_waiter", lambda name: SlowBoot())
    monkeypatch.setattr(agent.api, "extend_lease", extend)
    agent._ec2 = client
    cid = force()
    agent.run_due(T0)
    assert SlowBoot.calls == 3 and len(renewals) == 2
    command = bootstrap.command_store().get(agent.agent_id, cid)
    assert command.status.value == "completed" and command.attempts == 1


def test_a_dead_replacement_fails_at_once_without_waiting_out_every_slice(switching, monkeypatch):
    """GIVEN a replacement that reaches a terminal state WHEN the waiter says so THEN no further slice
    runs: the switch fails and the replacement is terminated."""
    from botocore.exceptions import WaiterError

    agent, old, _, force = switching
    client = ec2()
    calls = []

    class Dies:
        def wait(self, **kwargs):
            calls.append(kwargs)
            raise WaiterError(name="InstanceRunning", reason="Waiter encountered a terminal failure state",
                              last_response={})

    monkeypatch.setattr(client, "get_waiter", lambda name: Dies())
    agent._ec2 = client
    cid = force()
    agent.run_due(T0)
    assert len(calls) == 1
    assert bootstrap.command_store().get(agent.agent_id, cid).status.value == "failed"


def test_a_refused_spot_launch_reports_the_aws_error_code_and_the_server_records_the_refusal(switching,
                                                                                              monkeypatch):
    """GIVEN EC2 has no spot capacity in the target pool WHEN the agent switches THEN the command fails with
    botocore's error code in the result, and the server records a launch_refused observation of that pool."""
    from datetime import UTC, datetime

    from botocore.exceptions import ClientError

    from chalicelib.repositories import observations

    agent, _, itype, force = switching
    client = ec2()

    def refuse(**kwargs):
        raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no spot"}}, "RunInstances")

    monkeypatch.setattr(client, "run_instances", refuse)
    agent._ec2 = client
    cid = force()
    agent.run_due(T0)
    command = bootstrap.command_store().get(agent.agent_id, cid)
    assert command.status.value == "failed" and "InsufficientInstanceCapacity" in command.message
    assert agent.state.finished(cid)["error_code"] == "InsufficientInstanceCapacity"
    pool = f"{itype}.us-east-1b"
    [seen] = observations.for_pools([pool], command.created_at - timedelta(minutes=5))[pool]
    assert (seen.kind.value, seen.code, seen.source) == ("launch_refused", "InsufficientInstanceCapacity", "agent")
    assert pool in observations.backoff([pool], datetime.now(UTC))
