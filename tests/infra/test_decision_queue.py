"""The decision cycle's fan-out in the synthesised template: the decision queue and its dead-letter queue (redrive,
retention, visibility against the worker's timeout, TLS, encryption), their alarms, and the worker's event
source in app.py on that queue. Expected values come from chalicelib.settings, chalicelib.jobs.decision_cycle
and .chalice/config.json, not from infra/ (the IAM side is tests/infra/test_policies.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chalice.config import Config

from chalicelib.settings import (
    DECISION_WORKER_BATCH_SIZE,
    DECISION_WORKER_CONCURRENCY,
    decision_dead_letter_queue_name,
    decision_queue_name,
)
from infra.naming import alarm_name
from tests.infra._support import of_type

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"


@pytest.fixture(scope="module")
def infra(tmp_path_factory):
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.stack import SpotOptimizerStack

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return Template.from_stack(SpotOptimizerStack(app, "spot-optimizer-dev-infra", stage=STAGE, skip_layer=True)).to_json()


@pytest.fixture(scope="module")
def queues(infra):
    by_name = {r["Properties"]["QueueName"]: (logical, r["Properties"]) for logical, r in
               of_type(infra, "AWS::SQS::Queue").items()}
    return by_name[decision_queue_name(STAGE)], by_name[decision_dead_letter_queue_name(STAGE)]


def _worker_timeout() -> int:
    return Config(chalice_stage=STAGE, function_name="decision-worker", config_from_disk=json.loads(
        (ROOT / ".chalice" / "config.json").read_text())).lambda_timeout


def test_the_decision_queue_dead_letters_after_five_receives_encrypted(queues):
    (queue_id, queue), (dlq_id, dlq) = queues
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 5}
    assert "RedrivePolicy" not in dlq
    for props in (queue, dlq):
        assert props["SqsManagedSseEnabled"] is True
    # a message is worth one cycle, but lives long enough to be received 5 times (and so reach the DLQ)
    assert queue["MessageRetentionPeriod"] >= 5 * queue["VisibilityTimeout"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600 > queue["MessageRetentionPeriod"]


def test_a_message_stays_invisible_at_least_six_worker_timeouts_and_comes_back_within_a_cycle(queues):
    from chalicelib.jobs.decision_cycle import CYCLE_S

    (_, queue), _ = queues
    assert 6 * _worker_timeout() <= queue["VisibilityTimeout"] < CYCLE_S


def test_a_batch_of_messages_fits_the_workers_timeout_with_room():
    """5 messages × 25 agents × ~43 ms (docs/benchmarks.md) ≈ 5 s: the timeout leaves a margin of 5 or more."""
    from chalicelib.jobs.decision_cycle import AGENTS_PER_MESSAGE

    assert DECISION_WORKER_BATCH_SIZE * AGENTS_PER_MESSAGE * 0.043 * 5 <= _worker_timeout()


def test_both_decision_queues_refuse_plain_http(infra, queues):
    ids = {queues[0][0], queues[1][0]}
    policies = {p["Properties"]["Queues"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
                for p in of_type(infra, "AWS::SQS::QueuePolicy").values()
                if p["Properties"]["Queues"][0]["Ref"] in ids}
    assert set(policies) == ids
    for statements in policies.values():
        assert [s["Condition"] for s in statements if s["Effect"] == "Deny"] == [
            {"Bool": {"aws:SecureTransport": "false"}}]
        assert [s for s in statements if s["Effect"] == "Allow"] == []  # only this account's roles, by IAM


def test_dead_lettered_and_waiting_decisions_alarm_on_the_stacks_topic(infra, queues):
    (queue_id, _), (dlq_id, _) = queues
    (topic_id,) = of_type(infra, "AWS::SNS::Topic")
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in of_type(infra, "AWS::CloudWatch::Alarm").values()}
    dead = alarms[alarm_name(STAGE, "decisions-dead-lettered")]
    assert dead["MetricName"] == "ApproximateNumberOfMessagesVisible" and dead["Threshold"] == 1
    assert dead["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    waiting = alarms[alarm_name(STAGE, "decisions-waiting")]
    assert waiting["MetricName"] == "ApproximateAgeOfOldestMessage" and waiting["Threshold"] == 300
    assert waiting["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    for alarm in (dead, waiting, alarms[alarm_name(STAGE, "DecisionWorkerErrors")]):
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]


def test_the_worker_consumes_the_queue_the_stack_creates_in_small_bounded_batches(chalice_app):
    (source,) = [s for s in chalice_app.event_sources if getattr(s, "name", None) == "decision-worker"]
    assert type(source).__name__ == "SQSEventConfig"
    assert source.queue == decision_queue_name(STAGE)
    assert (source.batch_size, source.maximum_concurrency) == (DECISION_WORKER_BATCH_SIZE, DECISION_WORKER_CONCURRENCY)
    assert source.handler_string == "app.decision_worker"
