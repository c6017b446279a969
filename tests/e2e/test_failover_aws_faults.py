"""AWS faults the failover tasks meet in a real account, injected into the real workflow under moto
(tests/faults.py: the error AWS answers once botocore's own retries are spent): a transaction cancelled for a
concurrent write or throttling, and EC2's eventually consistent listing right after a launch. Each must be
retried or waited out, never turned into the on-demand path, a failed failover or a second launch.
"""

from __future__ import annotations

import pytest

from chalicelib.aws import ec2 as adapter
from chalicelib.repositories import replicas as replica_repo
from tests.e2e.failover_support import deliver, handover_to, register_agent, state_of, wait_for, warning
from tests.e2e.test_failover_leaks import agent_row, assert_nothing_unrecorded, live_ours, only_event
from tests.faults import inject, transaction_touches

pytestmark = pytest.mark.usefixtures("failover_machine")


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"])
@pytest.mark.parametrize("write", ["the replacement row", "the attach after RunInstances"])
def test_a_cancelled_transaction_in_the_spot_launch_is_retried_not_sent_on_demand(
        api, make_tenant, monkeypatch, write, reason):
    """GIVEN the spot launch's transaction is cancelled once for a transient reason (the agent heartbeats every
    10 s during a warning, so a conflict on its row is likely), before or after RunInstances
    WHEN the workflow runs
    THEN the task is retried: resolved on spot, one instance ever launched, nothing unrecorded."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    # create(): [replica row, agent row]; attach_instance(): [instances row, replica row]
    fault = inject(monkeypatch, "TransactWriteItems", "TransactionCanceledException",
                   reasons=[None, reason] if write == "the replacement row" else [reason, None],
                   when=transaction_touches("replicas", "emg-") if write == "the replacement row"
                   else transaction_touches("instances", "i-"))

    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"

    assert len(fault.hits) == 1, "the injected fault did not fire"
    event = only_event(client_id)
    assert (event.status, event.response_action) == ("resolved", "emergency-spot-replacement")
    assert agent_row(client_id, agent_id).instance_id == event.new_instance_id
    assert [r.lifecycle for r in replica_repo.for_agent(agent_id)] == ["spot"]
    assert live_ours(client_id) == [event.new_instance_id]
    assert_nothing_unrecorded(client_id, agent_id)



def test_a_replacement_ec2_does_not_list_yet_is_waited_for_not_given_up(api, make_tenant, monkeypatch):
    """GIVEN EC2's DescribeInstances does not list the just-launched replacement for its first two checks
    (eventual consistency: RunInstances answered, the read side lags)
    WHEN the workflow checks whether it is running
    THEN it waits (the instance is not "lost"): resolved on that spot replacement, no on-demand launch."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    real_describe, hidden = adapter.describe, []

    def lagging(region, instance_ids, **kwargs):
        found = real_describe(region, instance_ids, **kwargs)
        if len(hidden) < 2 and primary not in instance_ids:
            hidden.append(list(instance_ids))
            return {}
        return found

    monkeypatch.setattr(adapter, "describe", lagging)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"

    assert len(hidden) == 2
    event = only_event(client_id)
    assert (event.status, event.response_action) == ("resolved", "emergency-spot-replacement")
    assert state_of(event.new_instance_id) == "running"
    assert [r.lifecycle for r in replica_repo.for_agent(agent_id)] == ["spot"]
    assert live_ours(client_id) == [event.new_instance_id]


@pytest.mark.parametrize(("operation", "code"), [("RunInstances", "RequestLimitExceeded"),
                                                 ("DescribeInstances", "RequestLimitExceeded"),
                                                 ("DescribeInstances", "InternalError")])
def test_ec2_throttling_a_step_is_retried_with_one_instance_launched(api, make_tenant, monkeypatch, operation, code):
    """GIVEN EC2 throttles (or fails on its side) the launch or a readiness check twice
    WHEN the workflow runs THEN the task is retried: resolved on spot, one instance ever launched."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    launched = []
    fault = inject(monkeypatch, operation, code, times=2, status=500 if code == "InternalError" else 400,
                   when=lambda params: operation == "RunInstances" or launched_by_us(params, launched))
    real_launch = adapter.launch

    def recording(spec):
        info = real_launch(spec)
        launched.append(info.instance_id)
        return info

    monkeypatch.setattr(adapter, "launch", recording)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"

    assert len(fault.hits) == 2
    event = only_event(client_id)
    assert (event.status, event.response_action) == ("resolved", "emergency-spot-replacement")
    assert live_ours(client_id) == [event.new_instance_id] and set(launched) == {event.new_instance_id}


def launched_by_us(params, launched) -> bool:
    """A DescribeInstances of the replacement (the readiness check's), once it exists."""
    return bool(launched) and any(launched[0] in f.get("Values", []) for f in params.get("Filters", []))


def _hand_over_against(api, make_tenant, monkeypatch, kind: str, operation: str, code: str, times: int):
    """A registered agent with a ``kind`` hand-over, ``operation`` answering ``code`` ``times`` times, and a warning
    for its primary run through the workflow: (client id, agent id, primary, traffic probe, fault, execution)."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    traffic = handover_to(client_id, agent_id, primary, kind)
    fault = inject(monkeypatch, operation, code, times=times)
    result = deliver(api, "sentinel-interruption", warning(primary))
    return client_id, agent_id, primary, traffic, fault, wait_for(result["execution_arn"])


@pytest.mark.parametrize(("kind", "operation", "code"), [("eip", "AssociateAddress", "RequestLimitExceeded"),
                                                         ("target-group", "RegisterTargets", "Throttling"),
                                                         ("target-group", "DeregisterTargets", "Throttling")])
def test_a_throttled_hand_over_is_retried_as_transient_and_the_failover_succeeds(
        api, make_tenant, monkeypatch, kind, operation, code):
    """GIVEN EC2/ELBv2 throttles the call that moves the traffic four times in a row (more than the two retries
    a refused hand-over gets)
    WHEN the workflow hands over THEN the step is retried like any transient AWS error: resolved, the traffic
    on the replacement, the old instance retired, nothing leaked."""
    client_id, agent_id, primary, traffic, fault, described = _hand_over_against(
        api, make_tenant, monkeypatch, kind, operation, code, times=4)
    assert described["status"] == "SUCCEEDED", described

    assert len(fault.hits) == 4, "the injected throttling did not fire"
    event = only_event(client_id)
    assert (event.status, event.response_action, event.handover) == ("resolved", "emergency-spot-replacement", kind)
    assert event.traffic_moved_at is not None
    assert agent_row(client_id, agent_id).instance_id == event.new_instance_id
    assert traffic() == {event.new_instance_id}
    assert state_of(primary) == "terminated"  # auto-terminate is on by default
    assert live_ours(client_id) == [event.new_instance_id]
    assert_nothing_unrecorded(client_id, agent_id)


@pytest.mark.parametrize(("kind", "operation", "code"), [("eip", "AssociateAddress", "UnauthorizedOperation"),
                                                         ("target-group", "RegisterTargets", "TargetGroupNotFound")])
def test_a_refused_hand_over_still_fails_promptly_as_handover_failed(
        api, make_tenant, monkeypatch, kind, operation, code):
    """GIVEN the call that moves the traffic is refused for good (permission denied, the group is gone)
    WHEN the workflow hands over THEN it is not retried like throttling: after the refusal's own two retries the
    event is ``handover-failed``, the old instance kept serving, the replacement recorded, nothing leaked."""
    client_id, agent_id, primary, traffic, fault, described = _hand_over_against(
        api, make_tenant, monkeypatch, kind, operation, code, times=10)
    assert described["status"] == "FAILED", described

    assert len(fault.hits) == 3, "a refusal is tried three times (two ASL retries), not as often as throttling"
    event = only_event(client_id)
    assert (event.status, event.success, event.response_action) == ("failed", False, "handover-failed")
    replacement = agent_row(client_id, agent_id).instance_id
    assert replacement != primary and event.new_instance_id == replacement and event.traffic_moved_at is None
    assert traffic() == {primary} and state_of(primary) == "running"
    assert live_ours(client_id) == [replacement]
    assert_nothing_unrecorded(client_id, agent_id)


def test_a_hand_over_throttled_past_every_retry_ends_handover_failed_not_a_generic_failure(
        api, make_tenant, monkeypatch):
    """GIVEN AssociateAddress is throttled on every attempt (the transient retries run out)
    WHEN the workflow gives up THEN the event says what is true: ``handover-failed`` (the replacement is the
    primary, the traffic still on the old instance, which is kept), no second instance, the client told."""
    client_id, agent_id, primary, traffic, fault, described = _hand_over_against(
        api, make_tenant, monkeypatch, "eip", "AssociateAddress", "RequestLimitExceeded", times=100)
    assert described["status"] == "FAILED"

    assert len(fault.hits) > 5, "throttling is retried like every transient AWS error"
    event = only_event(client_id)
    assert (event.status, event.success, event.response_action) == ("failed", False, "handover-failed")
    replacement = agent_row(client_id, agent_id).instance_id
    assert replacement != primary and event.new_instance_id == replacement and event.traffic_moved_at is None
    assert traffic() == {primary} and state_of(primary) == "running"
    assert [r.lifecycle for r in replica_repo.for_agent(agent_id)] == ["spot"]
    assert live_ours(client_id) == [replacement]
    assert_nothing_unrecorded(client_id, agent_id)


def _listing_lag_while(monkeypatch, module, step_name):
    """EC2's eventual consistency while the failover step ``step_name`` runs: DescribeInstances does not list an
    instance of ours launched within the last ``LISTING_LAG_S`` (every replacement of the test). Returns the
    DescribeInstances calls that hid something."""
    from datetime import UTC, datetime, timedelta

    from components.replica_coordinator import LISTING_LAG_S

    real_describe_raw, real_step, lagging, hid = adapter._describe_raw, getattr(module, step_name), [], []

    def describe_raw(region, filters, **kwargs):
        found = real_describe_raw(region, filters, **kwargs)
        if not lagging:
            return found
        since = datetime.now(UTC) - timedelta(seconds=LISTING_LAG_S)
        young = [r["InstanceId"] for r in found if r["LaunchTime"].astimezone(UTC) > since
                 and {t["Key"]: t["Value"] for t in r.get("Tags", [])}.get(adapter.TAG_MANAGED_BY)]
        if young:
            hid.append(young)
        return [r for r in found if r["InstanceId"] not in young]

    def step(state):
        lagging.append(True)
        try:
            return real_step(state)
        finally:
            lagging.clear()

    monkeypatch.setattr(adapter, "_describe_raw", describe_raw)
    monkeypatch.setattr(module, step_name, step)
    return hid


def test_the_failure_path_terminates_replacements_ec2_does_not_list_yet_by_their_recorded_ids(
        api, make_tenant, monkeypatch):
    """GIVEN every hand-over fails (the spot replacement's, then the on-demand one's), and while the failure
    path runs EC2 does not list the replacements yet (launched seconds ago: eventually consistent listing)
    WHEN it closes them THEN both are terminated by the instance ids their rows recorded (RunInstances returned
    them to us), not left running for the cleanup job's sweep."""
    from chalicelib import failover

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)

    def broken(state):
        raise RuntimeError("injected: hand-over failed")

    monkeypatch.setattr(failover, "handover", broken)
    hid = _listing_lag_while(monkeypatch, failover, "failed")
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "FAILED"

    assert hid, "the listing lag never hid anything: the test proves nothing"
    replicas = replica_repo.for_agent(agent_id)
    assert sorted(r.lifecycle for r in replicas) == ["ondemand", "spot"] and all(r.own_launch for r in replicas)
    for replica in replicas:
        assert not replica.active and state_of(replica.instance_id) in ("shutting-down", "terminated"), replica
    assert live_ours(client_id) == []
    assert agent_row(client_id, agent_id).instance_id == primary and state_of(primary) == "running"
    assert only_event(client_id).status == "failed"


def test_an_instance_id_an_agent_reported_is_never_terminated_unlisted(make_tenant, monkeypatch):
    """GIVEN a replica row whose instance id an agent reported (not one our RunInstances returned) and an EC2
    listing that does not show it WHEN the replica is retired THEN nothing is terminated: only the product's own
    launches go by id unlisted; anything else needs DescribeInstances to show our tags."""
    from datetime import UTC, datetime

    from chalicelib import replicas as replica_service
    from chalicelib.repositories import agents as agent_repo
    from chalicelib.repositories.replicas import ReplicaStatus
    from tests.e2e.failover_support import launch_primary, unique_type

    client_id, _, agent_id, _, _ = register_agent(make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    someone_elses = launch_primary(unique_type())  # not ours: no tags of the product
    now = datetime.now(UTC)
    replica = replica_repo.create(agent, replica_id="rep-reported", replica_type="manual", lifecycle="spot",
                                  pool_id=None, az="us-east-1b", created_by="agent", now=now, take_slot=False)
    replica = replica_repo.attach_instance(replica, instance_id=someone_elses, now=now)
    assert replica.own_launch is False
    monkeypatch.setattr(adapter, "describe", lambda region, ids, **_: {})  # the listing lags

    replica_service.retire(replica, ReplicaStatus.TERMINATED, now, "test")
    assert state_of(someone_elses) == "running"


@pytest.mark.parametrize("function", ["failover-plan", "failover-launch", "failover-record"])
def test_a_step_lambda_throttles_eight_times_is_waited_out_not_sent_on_demand(api, make_tenant, monkeypatch, function):
    """GIVEN Lambda throttles a failover step's invocation eight times in a row (a mass interruption sends every
    execution to the same step at once, past its reserved concurrency of 25)
    WHEN the workflow runs THEN Step Functions waits it out (jittered back-off, longer than for other errors):
    resolved on a spot replacement, one instance launched. Before: four retries over 15 s, then the plan's or the
    spot launch's Catch sent the agent on-demand, and a throttled record ended the failover ``failed``."""
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.core.exceptions import JsonRESTError

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    real_invoke, throttled = LambdaSimpleBackend.invoke, []

    def invoke(self, function_name, *args, **kwargs):
        if function_name.endswith(f"-{function}") and len(throttled) < 8:
            throttled.append(function_name)
            error = JsonRESTError("TooManyRequestsException", "Rate Exceeded.")
            error.code = 429
            raise error
        return real_invoke(self, function_name, *args, **kwargs)

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"

    assert len(throttled) == 8, "the injected throttling did not fire"
    event = only_event(client_id)
    assert (event.status, event.response_action) == ("resolved", "emergency-spot-replacement")
    assert [r.lifecycle for r in replica_repo.for_agent(agent_id)] == ["spot"]
    assert live_ours(client_id) == [event.new_instance_id]
    assert_nothing_unrecorded(client_id, agent_id)
