"""AWS faults in the middle of the sentinel's SQS batch (tests/faults.py injects the error AWS answers once
botocore's retries are spent): a Step Functions StartExecution throttled, a DynamoDB write throttled after the
execution started, a throttle after a rebalance was claimed. The failed message must be a batch item failure,
the others handled, and the redelivery must act exactly once (one interruption, one execution, one standby)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.settings import get_settings
from localmode.eventbridge import sqs_event
from tests.api._support import recent_audit_events
from tests.e2e.failover_support import ZONES, rebalance, register_agent, wait_for, warning
from tests.faults import inject, transaction_touches
from tests.integration.test_event_intake import events_of, executions_named, invoke

pytestmark = pytest.mark.usefixtures("failover_machine")


def test_a_start_execution_throttled_mid_batch_comes_back_alone_and_starts_one_workflow(api, make_tenant,
                                                                                        monkeypatch):
    """GIVEN three warnings in one batch, the second's StartExecution throttled (after its claim was written)
    WHEN the sentinel runs the batch, then SQS delivers the second again
    THEN only the second is a batch item failure; the redelivery starts its one execution and nothing twice."""
    tenants = [register_agent(make_tenant) for _ in range(3)]
    (_, _, _, first, _), (hit_client, _, _, hit, _), (_, _, _, third, _) = tenants
    fault = inject(monkeypatch, "StartExecution", "ThrottlingException",
                   when=lambda params: json.loads(params["input"])["instance_id"] == hit)
    events = [warning(first), warning(hit), warning(third)]
    batch = sqs_event(events)

    assert invoke(api, batch) == {"batchItemFailures": [{"itemIdentifier": batch["Records"][1]["messageId"]}]}
    assert len(fault.hits) == 1
    [claimed] = events_of(hit_client)
    assert claimed.status == "detected" and executions_named(claimed.interruption_id) == []
    for client_id, *_ in (tenants[0], tenants[2]):
        [row] = events_of(client_id)
        assert row.status == "handling" and len(executions_named(row.interruption_id)) == 1

    assert invoke(api, sqs_event([events[1]], receive_count=2)) == {"batchItemFailures": []}
    [row] = events_of(hit_client)
    assert row.interruption_id == claimed.interruption_id and row.status == "handling"
    assert len(executions_named(row.interruption_id)) == 1
    for client_id, *_ in tenants:
        assert wait_for(events_of(client_id)[0].execution_arn)["status"] == "SUCCEEDED"


def test_a_write_throttled_after_the_execution_started_is_redelivered_onto_the_same_execution(api, make_tenant,
                                                                                               monkeypatch):
    """GIVEN the execution started, then the event's ``handling`` write is throttled (a crash between the AWS call
    and the DynamoDB write) WHEN SQS delivers the warning again THEN it is recorded on that execution: one
    execution, one interruption, handled."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    fault = inject(monkeypatch, "UpdateItem", "ProvisionedThroughputExceededException",
                   when=lambda params: "interruptions" in params["TableName"]
                   and "handling" in json.dumps(params.get("ExpressionAttributeValues", {})))
    event = warning(primary)
    batch = sqs_event([event])

    with pytest.raises(Exception):  # noqa: B017 - every message failed: the whole batch comes back
        invoke(api, batch)
    assert len(fault.hits) == 1
    [row] = events_of(client_id)
    assert row.status == "detected" and len(executions_named(row.interruption_id)) == 1

    assert invoke(api, sqs_event([event], receive_count=2)) == {"batchItemFailures": []}
    [row] = events_of(client_id)
    assert row.status == "handling" and len(executions_named(row.interruption_id)) == 1
    assert wait_for(row.execution_arn)["status"] == "SUCCEEDED"


def test_a_rebalance_throttled_after_its_claim_prewarms_its_standby_on_redelivery(api, make_tenant, monkeypatch):
    """GIVEN a rebalance recommendation on a risky pool, its standby's write throttled after the claim
    WHEN SQS delivers it again
    THEN the redelivery pre-warms the standby (before: the claim made it a duplicate that did nothing, the event
    stayed ``detected`` and the cleanup job closed it ``abandoned``): one standby, the event resolved."""
    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    pool_repo.save_risk([(f"{itype}.{ZONES[0]}", 0.9, "model", "test")], 3600, datetime.now(UTC))
    assert 0.9 >= get_settings().prewarm_risk_threshold
    fault = inject(monkeypatch, "TransactWriteItems", "ProvisionedThroughputExceededException",
                   when=transaction_touches("replicas"))
    event = rebalance(primary)

    with pytest.raises(Exception):  # noqa: B017 - every message failed: the whole batch comes back
        invoke(api, sqs_event([event]))
    assert len(fault.hits) == 1 and replica_repo.for_agent(agent_id) == []

    assert invoke(api, sqs_event([event], receive_count=2)) == {"batchItemFailures": []}
    [standby] = replica_repo.for_agent(agent_id)
    assert standby.replica_type == "automatic-rebalance" and standby.active
    [row] = events_of(client_id)
    assert (row.status, row.response_action, row.replica_id) == ("resolved", "prewarmed-standby", standby.replica_id)
    # a third delivery (the stored result) changes nothing
    assert invoke(api, sqs_event([event], receive_count=3)) == {"batchItemFailures": []}
    assert len(replica_repo.for_agent(agent_id)) == 1


@pytest.mark.slow
def test_a_failed_warning_comes_back_within_its_two_minutes_not_after_the_queues_timeout(api, make_tenant,
                                                                                        monkeypatch):
    """GIVEN a warning received from the stage's event queue (visibility 180 s, as the queue's) whose StartExecution
    is throttled WHEN the sentinel fails it THEN its visibility is cut to RETRY_DELAYS_S[0] (10 s): SQS delivers it
    again ≈ 10 s later (before: 180 s, past the warning's two minutes); a message on its third receive keeps the
    queue's timeout (a longer outage still has its time before the dead-letter queue)."""
    import time

    from chalicelib import sentinel
    from chalicelib.aws import sqs as sqs_adapter
    from chalicelib.settings import event_queue_name
    from localmode.queues import _record
    from tests.integration.test_event_intake import empty_event_queue

    client, url = empty_event_queue()  # another test's message must not be the one received below
    queue = event_queue_name(get_settings().stage)
    _, _, _, primary, _ = register_agent(make_tenant)
    inject(monkeypatch, "StartExecution", "ThrottlingException", times=2)  # the first and the third receive
    calls = []
    real = sqs_adapter.retry_after
    monkeypatch.setattr(sqs_adapter, "retry_after", lambda q, delays: calls.append(delays) or real(q, delays))

    client.send_message(QueueUrl=url, MessageBody=json.dumps(warning(primary)))
    [message] = client.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    record = _record(message["Body"], queue, message_id=message["MessageId"], receipt_handle=message["ReceiptHandle"],
                     attributes=message["Attributes"])
    with pytest.raises(Exception):  # noqa: B017 - its only message failed: the whole batch comes back
        invoke(api, {"Records": [record]})
    assert calls == [{message["ReceiptHandle"]: sentinel.RETRY_DELAYS_S[0]}]
    assert client.receive_message(QueueUrl=url).get("Messages", []) == []  # not at once
    time.sleep(sentinel.RETRY_DELAYS_S[0] + 1)
    [again] = client.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    assert again["MessageId"] == message["MessageId"] and again["Attributes"]["ApproximateReceiveCount"] == "2"

    third = _record(again["Body"], queue, message_id=again["MessageId"], receipt_handle=again["ReceiptHandle"],
                    attributes={**again["Attributes"], "ApproximateReceiveCount": "3"})
    with pytest.raises(Exception):  # noqa: B017
        invoke(api, {"Records": [third]})
    assert len(calls) == 1
    client.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])  # nothing left for another test


def _audit_of(interruption_id: str) -> list:
    return recent_audit_events("interruption", lambda e: (e.metadata or {}).get("interruption_id") == interruption_id)


@pytest.mark.parametrize("fails", ["the agent's count", "StartExecution", "the audit event"])
def test_a_warning_redelivered_after_a_failure_past_its_claim_counts_and_audits_once(api, make_tenant, monkeypatch,
                                                                                    fails):
    """GIVEN a warning whose processing fails after its claim: the agent's ``interruption_count`` update
    throttled, or StartExecution throttled (after the count), or the audit event's write throttled (after the
    execution started) WHEN SQS delivers it again THEN the agent's count went up exactly once (before: a
    throttled count was never made up, the redelivery being a duplicate) and the audit log holds one
    "failover started" event for it (before: a lost audit write was never made up)."""
    from tests.e2e.test_failover_leaks import agent_row

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    before = int(agent_row(client_id, agent_id).interruption_count or 0)
    operation, code, when = {
        "the agent's count": ("UpdateItem", "ProvisionedThroughputExceededException",
                              lambda p: "agents" in p["TableName"] and "interruption_count" in json.dumps(p)),
        "StartExecution": ("StartExecution", "ThrottlingException", lambda p: True),
        "the audit event": ("PutItem", "ProvisionedThroughputExceededException",
                            lambda p: "system-events" in p["TableName"] or "system_events" in p["TableName"]),
    }[fails]
    faults = [inject(monkeypatch, operation, code, when=when)]
    if fails == "the agent's count":  # a plain update (before) or in a transaction (now): either is throttled once
        faults.append(inject(monkeypatch, "TransactWriteItems", code, when=lambda p: (
            "interruption_count" in json.dumps(p)) and not sum(len(f.hits) for f in faults)))
    event = warning(primary)

    with pytest.raises(Exception):  # noqa: B017 - every message failed: the whole batch comes back
        invoke(api, sqs_event([event]))
    assert sum(len(f.hits) for f in faults) == 1, "the injected fault did not fire"

    assert invoke(api, sqs_event([event], receive_count=2)) == {"batchItemFailures": []}
    [row] = events_of(client_id)
    assert row.status == "handling" and len(executions_named(row.interruption_id)) == 1
    assert int(agent_row(client_id, agent_id).interruption_count or 0) == before + 1
    assert len(_audit_of(row.interruption_id)) == 1
    # a third delivery (the stored result) changes nothing
    assert invoke(api, sqs_event([event], receive_count=3)) == {"batchItemFailures": []}
    assert int(agent_row(client_id, agent_id).interruption_count or 0) == before + 1
    assert len(_audit_of(row.interruption_id)) == 1
    assert wait_for(row.execution_arn)["status"] == "SUCCEEDED"
