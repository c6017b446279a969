"""The sentinel as its SQS event source invokes it: at-least-once delivery handled once, a poison message
reported alone (the others handled, not redelivered), a failing message retried alone and then handled, and
AWS Health scheduled retirements failed over ahead of time. Through ``api.lambda_.invoke("sentinel", batch)``
with the batch shape of ``localmode.eventbridge.sqs_event`` (moto for everything else)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from chalicelib import sentinel
from chalicelib.sentinel import on_event
from chalicelib.tables import InterruptionTable
from localmode.eventbridge import matching_rules, sqs_event, through_queue
from tests.conftest import aws_client, new_instance_id
from tests.e2e.failover_support import ACCOUNT, REGION, register_agent, wait_for, warning


def invoke(api, batch: dict) -> dict:
    return api.lambda_.invoke("sentinel", batch).payload


def caller(api):
    return lambda name, payload: api.lambda_.invoke(name, payload).payload


def events_of(client_id: str) -> list[InterruptionTable]:
    return list(InterruptionTable.query(client_id, consistent_read=True))


def executions_named(interruption_id: str) -> list[dict]:
    sfn = aws_client("stepfunctions", REGION)
    machines = sfn.list_state_machines()["stateMachines"]
    return [e for m in machines for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]
            if e["name"] == interruption_id]


def empty_event_queue():
    """The stage's event queue in the embedded AWS (infra/event_intake.py creates it in AWS; visibility 180 s, as
    there), emptied of what earlier tests left (PurgeQueue is allowed once a minute): (sqs client, queue URL)."""
    from chalicelib.settings import EVENT_QUEUE_VISIBILITY_S, event_queue_name, get_settings

    client = aws_client("sqs", REGION)
    url = client.create_queue(QueueName=event_queue_name(get_settings().stage),
                              Attributes={"VisibilityTimeout": str(EVENT_QUEUE_VISIBILITY_S)})["QueueUrl"]
    while left := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
                                         ).get("Messages", []):
        for message in left:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return client, url


# --- at least once ---------------------------------------------------------------------------------------


def test_an_event_delivered_twice_is_handled_once(api, make_tenant, failover_machine):
    """GIVEN a warning for a managed primary WHEN SQS delivers it twice (in one batch, and again in a later
    one, as at-least-once delivery may) THEN one interruption, one execution; every copy answers the same."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    event = warning(primary)

    twice = invoke(api, sqs_event([event, dict(event)]))
    later = invoke(api, sqs_event([dict(event)], receive_count=2))

    assert twice == later == {"batchItemFailures": []}
    [row] = events_of(client_id)
    result = on_event(event)  # the stored result of the event id: nothing runs again
    assert result["action"] == "failover_started" and result["interruption_id"] == row.interruption_id
    assert len(executions_named(row.interruption_id)) == 1
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    assert len(events_of(client_id)) == 1


def test_a_poison_message_is_a_batch_item_failure_and_the_others_are_handled(api, make_tenant, failover_machine):
    """GIVEN a batch of a warning, a message that is not JSON and a JSON array WHEN the sentinel runs it
    THEN only the two bad messages are reported (SQS redelivers them, then dead-letters them) and the
    warning starts its failover (its message is deleted: not redelivered)."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    batch = sqs_event([warning(primary), warning(new_instance_id()), warning(new_instance_id())])
    good, poison, array = batch["Records"]
    poison["body"], array["body"] = "{not json", "[]"

    response = invoke(api, batch)

    assert response == {"batchItemFailures": [{"itemIdentifier": poison["messageId"]},
                                              {"itemIdentifier": array["messageId"]}]}
    [row] = events_of(client_id)
    assert row.status == "handling" and len(executions_named(row.interruption_id)) == 1
    wait_for(row.execution_arn)


def test_a_message_whose_handling_fails_is_retried_alone_and_then_handled(api, make_tenant, failover_machine,
                                                                         monkeypatch):
    """GIVEN two warnings in one batch, the first hitting a transient error (DynamoDB, EC2...)
    WHEN the batch runs THEN only the first is reported; the second starts its failover
    AND WHEN SQS delivers the first again THEN it is handled (the failed attempt left no idempotency record)."""
    first_client, _, _, first, _ = register_agent(make_tenant)
    second_client, _, _, second, _ = register_agent(make_tenant)
    real_handle = sentinel.handle
    calls = []

    def flaky(signal, now, **kwargs):
        calls.append(signal.instance_id)
        if signal.instance_id == first and calls.count(first) == 1:
            raise ConnectionError("DynamoDB endpoint unreachable")
        return real_handle(signal, now, **kwargs)

    monkeypatch.setattr(sentinel, "handle", flaky)
    events = [warning(first), warning(second)]
    batch = sqs_event(events)

    response = invoke(api, batch)

    assert response == {"batchItemFailures": [{"itemIdentifier": batch["Records"][0]["messageId"]}]}
    assert events_of(first_client) == []
    [handled] = events_of(second_client)
    assert handled.status == "handling"

    again = invoke(api, sqs_event([events[0]], receive_count=2))

    assert again == {"batchItemFailures": []}
    [retried] = events_of(first_client)
    assert retried.status == "handling" and calls.count(first) == 2
    wait_for(handled.execution_arn)
    wait_for(retried.execution_arn)


def test_when_every_message_fails_the_invocation_fails_and_the_whole_batch_comes_back(api, aws_tables):
    batch = sqs_event([warning(new_instance_id())])
    batch["Records"][0]["body"] = "not an event"
    with pytest.raises(BatchProcessingError):
        invoke(api, batch)


def test_a_rejected_event_is_not_retried(api, aws_tables):
    """An event the sentinel cannot use (a rule would not send it) would fail the same way every time: it is
    answered 'rejected' and deleted, not retried into the dead-letter queue."""
    event = {**warning(new_instance_id()), "detail": {"instance-action": "terminate"}}
    assert invoke(api, sqs_event([event])) == {"batchItemFailures": []}
    assert on_event(event)["action"] == "rejected"


# --- AWS Health scheduled retirement ----------------------------------------------------------------------


def retirement(*instance_ids: str, code: str = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED") -> dict:
    """An AWS Health scheduled-change event as EventBridge delivers it."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "AWS Health Event", "source": "aws.health",
            "account": ACCOUNT, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": REGION, "resources": list(instance_ids),
            "detail": {"eventArn": f"arn:aws:health:{REGION}::event/EC2/{code}/{code}_{uuid.uuid4().hex[:8]}",
                       "service": "EC2", "eventTypeCode": code, "eventTypeCategory": "scheduledChange",
                       "startTime": "Mon, 16 Mar 2026 01:00:00 GMT",
                       "affectedEntities": [{"entityValue": i} for i in instance_ids]}}


def test_a_scheduled_retirement_of_a_managed_primary_fails_it_over_ahead_of_time(api, make_tenant,
                                                                               failover_machine):
    """GIVEN a managed primary and an instance nobody manages, both scheduled for retirement in one Health event
    WHEN the event reaches the sentinel through the health rule and the queue
    THEN the primary is failed over now (no two-minute deadline), the other instance is ignored, and a spot
    warning for the primary in the same window is a duplicate (one hand-over)."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    event = retirement(primary, new_instance_id())
    assert matching_rules(event) == ["sentinel-health"]

    (result,) = through_queue([event], caller(api))

    assert result["action"] == "per_instance"
    managed, unmanaged = result["results"]
    assert managed["instance_id"] == primary and managed["action"] == "failover_started", managed
    assert unmanaged["action"] == "ignored" and unmanaged["reason"] == "unmanaged instance"
    [row] = events_of(client_id)
    assert row.signal_type == "scheduled-retirement" and row.termination_time is None
    (late,) = through_queue([warning(primary)], caller(api))
    assert late["action"] == "duplicate" and late["interruption_id"] == row.interruption_id
    assert wait_for(managed["execution_arn"])["status"] == "SUCCEEDED"
    assert len(events_of(client_id)) == 1


def test_a_retirement_naming_more_instances_than_one_invocation_handles_fails_every_managed_one_over(
        api, make_tenant, monkeypatch):
    """GIVEN a Health retirement naming 30 managed primaries (AWS names every instance a retirement affects in one
    event) and 20 instances nobody manages WHEN it reaches the sentinel THEN it is split into parts of at most
    ``MAX_AFFECTED_INSTANCES`` on the event queue and, those handled, each managed primary has its one failover
    (walk 18 rejected such an event: none had one)."""
    from chalicelib.aws import stepfunctions
    from components.sentinel import MAX_AFFECTED_INSTANCES

    empty_event_queue()
    started = []
    monkeypatch.setattr(stepfunctions, "start",
                        lambda name, payload, state_machine_arn=None: started.append(payload["instance_id"])
                        or f"arn:aws:states:{REGION}:{ACCOUNT}:execution:failover:{name}")
    primaries = [register_agent(make_tenant)[3] for _ in range(30)]
    event = retirement(*primaries, *(new_instance_id() for _ in range(20)))

    (result,) = through_queue([event], caller(api))

    assert result == {"action": "split", "parts": 2,
                      "reason": f"2 parts of at most {MAX_AFFECTED_INSTANCES} instances"}
    assert sorted(started) == sorted(primaries)
    (again,) = through_queue([event], caller(api))  # a redelivery: the stored answer, no part sent again
    assert again == result and sorted(started) == sorted(primaries)


def test_a_maintenance_reboot_is_not_a_signal(api, aws_tables):
    event = retirement(new_instance_id(), code="AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED")
    assert matching_rules(event) == []  # the rule does not send it
    assert on_event(event)["action"] == "rejected"  # and the sentinel would not act on it
