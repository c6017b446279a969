"""AWS faults in the fan-out workers (decision-worker, savings-worker) that the older tests do not inject: a
DynamoDB transaction cancelled mid-batch for a concurrent write or throttling (tests/faults.py injects the answer
DynamoDB gives once botocore's retries are spent). Such a message must come back from the queue, and the
redelivery must act exactly once."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import TransactWriteError

from chalicelib import bootstrap
from chalicelib.jobs import decision_cycle
from localmode.queues import sqs_event
from tests.faults import inject, transaction_touches
from tests.integration.test_decision_fanout import QUEUE, _decision_events, _decisions, _fleet, _message

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError"])
def test_a_command_whose_transaction_is_cancelled_comes_back_and_is_queued_once(api, make_tenant, monkeypatch,
                                                                                 reason):
    """GIVEN a batch of two messages, the first agent's command transaction cancelled once (its agent row written
    by a heartbeat at the same moment, or throttled)
    WHEN the worker handles the batch, then SQS delivers the failed message again
    THEN only that message is a batch item failure (the other agent is decided), and the redelivery queues the
    cycle's command and records the decision once."""
    fleet = _fleet(make_tenant, 3)
    switching = sorted(a for a, info in fleet.items() if info["zone"] == "a")
    staying = next(a for a, info in fleet.items() if info["zone"] == "b")
    now = datetime.now(timezone.utc)
    hit, other = switching
    fault = inject(monkeypatch, "TransactWriteItems", "TransactionCanceledException", reasons=[None, reason],
                   when=transaction_touches("commands", f"cmd-dc-{hit}"))
    event = sqs_event([_message([hit, staying], fleet, now), _message([other], fleet, now)], QUEUE)

    answer = api.lambda_.invoke("decision-worker", event).payload

    assert len(fault.hits) == 1
    assert answer == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert bootstrap.command_store().active_for_agent(hit, 5) == [] and _decisions(hit) == []
    assert len(_decisions(staying)) == 1 and len(bootstrap.command_store().active_for_agent(other, 5)) == 1

    again = sqs_event([event["Records"][0]["body"]], QUEUE, receive_count=2)
    assert api.lambda_.invoke("decision-worker", again).payload == {"batchItemFailures": []}
    [command] = bootstrap.command_store().active_for_agent(hit, 5)
    assert [(d.action, d.command_id) for d in _decisions(hit)] == [("switch_pool", command.command_id)]
    assert _decision_events(hit) == [command.command_id]
    assert len(_decisions(staying)) == 1  # decided again on the redelivery: the same record, not a second


def _cancelled(*reasons):
    from pynamodb.exceptions import CancellationReason, VerboseClientError

    cause = VerboseClientError({"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"}},
                               "TransactWriteItems",
                               cancellation_reasons=[CancellationReason(r) if r else None for r in reasons])
    return TransactWriteError("Failed to write transaction items", cause)


def test_a_cancelled_transaction_is_transient_only_when_no_condition_failed():
    assert decision_cycle.retryable(_cancelled(None, "TransactionConflict"))
    assert decision_cycle.retryable(_cancelled("ThrottlingError", None))
    assert decision_cycle.retryable(_cancelled("ProvisionedThroughputExceeded", "TransactionConflict"))
    assert not decision_cycle.retryable(_cancelled("ConditionalCheckFailed", "TransactionConflict"))
    assert not decision_cycle.retryable(_cancelled(None, "ValidationError"))
    assert not decision_cycle.retryable(_cancelled())
    # a whole transaction throttled is not cancelled: its own code says so
    assert decision_cycle.retryable(TransactWriteError("x", ClientError(
        {"Error": {"Code": "ThrottlingException"}}, "TransactWriteItems")))


def test_an_api_call_whose_transaction_is_throttled_is_a_503_and_a_conflict_a_409():
    from chalicelib.errors import translate

    throttled = translate(_cancelled(None, "ThrottlingError"))
    assert (throttled.status, throttled.code, throttled.headers) == (503, "throttled", {"Retry-After": "1"})
    assert (translate(_cancelled("TransactionConflict", None)).status,
            translate(_cancelled("ConditionalCheckFailed", None)).status) == (409, 409)
