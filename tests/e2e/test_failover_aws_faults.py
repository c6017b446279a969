"""AWS faults the failover tasks meet in a real account, injected into the real workflow under moto
(tests/faults.py: the error AWS answers once botocore's own retries are spent): a transaction cancelled for a
concurrent write or throttling, and EC2's eventually consistent listing right after a launch. Each must be
retried or waited out, never turned into the on-demand path, a failed failover or a second launch.
"""

from __future__ import annotations

import pytest

from chalicelib.aws import ec2 as adapter
from chalicelib.repositories import replicas as replica_repo
from tests.e2e.failover_support import deliver, register_agent, state_of, wait_for, warning
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
