"""The fan-out queues in the synthesised template (the decision cycle's, the savings roll-up's): each queue and its
dead-letter queue (redrive, retention, visibility against the worker's timeout, TLS, encryption), their alarms,
and the worker's event source in app.py on that queue. Expected values come from chalicelib.settings, the jobs
and .chalice/config.json, not from infra/ (the IAM side is tests/infra/test_policies.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from chalice.config import Config

from chalicelib import settings as s
from chalicelib.jobs.decision_cycle import AGENTS_PER_MESSAGE, CYCLE_S
from chalicelib.jobs.savings_rollup import CLIENTS_PER_MESSAGE, STALE_AFTER
from infra.naming import alarm_name
from tests.infra._support import of_type

ROOT, STAGE = Path(__file__).resolve().parents[2], "dev"
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Expected:
    worker: str
    handler: str
    queue: str
    dead_letter_queue: str
    label: str
    batch_size: int
    concurrency: int
    worth_s: int  # how long a message is worth handling (the worker drops it as stale after)
    waiting_s: int  # the age alarm's threshold
    work_s: float  # one invocation's work, worst case (docs/benchmarks.md)


QUEUES = {
    # 5 messages × 25 agents × ~43 ms ≈ 5 s
    "decisions": Expected("decision-worker", "app.decision_worker", s.decision_queue_name(STAGE),
                          s.decision_dead_letter_queue_name(STAGE), "decisions", s.DECISION_WORKER_BATCH_SIZE,
                          s.DECISION_WORKER_CONCURRENCY, CYCLE_S, CYCLE_S,
                          s.DECISION_WORKER_BATCH_SIZE * AGENTS_PER_MESSAGE * 0.043),
    # 1 message × 10 clients of 50 agents (the default quota) × ~2 s ≈ 20 s
    "savings": Expected("savings-worker", "app.savings_worker", s.savings_queue_name(STAGE),
                        s.savings_dead_letter_queue_name(STAGE), "savings", s.SAVINGS_WORKER_BATCH_SIZE,
                        s.SAVINGS_WORKER_CONCURRENCY, int(STALE_AFTER.total_seconds()), 1800,
                        s.SAVINGS_WORKER_BATCH_SIZE * CLIENTS_PER_MESSAGE * 2.0),
}
KINDS = sorted(QUEUES)


@pytest.fixture(scope="module")
def infra(tmp_path_factory):
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.stack import SpotOptimizerStack

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return Template.from_stack(SpotOptimizerStack(app, "spot-optimizer-dev-infra", stage=STAGE, skip_layer=True)).to_json()


def _queues(infra, kind: str):
    by_name = {r["Properties"]["QueueName"]: (logical, r["Properties"]) for logical, r in
               of_type(infra, "AWS::SQS::Queue").items()}
    return by_name[QUEUES[kind].queue], by_name[QUEUES[kind].dead_letter_queue]


def _worker_timeout(kind: str) -> int:
    return Config(chalice_stage=STAGE, function_name=QUEUES[kind].worker, config_from_disk=json.loads(
        (ROOT / ".chalice" / "config.json").read_text())).lambda_timeout


@pytest.mark.parametrize("kind", KINDS)
def test_the_queue_dead_letters_after_five_receives_encrypted(infra, kind):
    (queue_id, queue), (dlq_id, dlq) = _queues(infra, kind)
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 5}
    assert "RedrivePolicy" not in dlq
    for props in (queue, dlq):
        assert props["SqsManagedSseEnabled"] is True
    # a message is worth a cycle (an hour), but lives long enough to be received 5 times (and so reach the DLQ)
    assert queue["MessageRetentionPeriod"] >= 5 * queue["VisibilityTimeout"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600 > queue["MessageRetentionPeriod"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_message_stays_invisible_six_worker_timeouts_and_comes_back_while_it_is_worth_handling(infra, kind):
    (_, queue), _ = _queues(infra, kind)
    assert 6 * _worker_timeout(kind) <= queue["VisibilityTimeout"] < QUEUES[kind].worth_s


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_of_messages_fits_the_workers_timeout_with_room(kind):
    """The worst case of one invocation (docs/benchmarks.md) with a margin of 5 or more."""
    assert QUEUES[kind].work_s * 5 <= _worker_timeout(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_both_queues_refuse_plain_http(infra, kind):
    queues = _queues(infra, kind)
    ids = {queues[0][0], queues[1][0]}
    policies = {p["Properties"]["Queues"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
                for p in of_type(infra, "AWS::SQS::QueuePolicy").values()
                if p["Properties"]["Queues"][0]["Ref"] in ids}
    assert set(policies) == ids
    for statements in policies.values():
        assert [s["Condition"] for s in statements if s["Effect"] == "Deny"] == [
            {"Bool": {"aws:SecureTransport": "false"}}]
        assert [s for s in statements if s["Effect"] == "Allow"] == []  # only this account's roles, by IAM


@pytest.mark.parametrize("kind", KINDS)
def test_dead_lettered_and_waiting_messages_alarm_on_the_stacks_topic(infra, kind):
    expected = QUEUES[kind]
    (queue_id, _), (dlq_id, _) = _queues(infra, kind)
    (topic_id,) = of_type(infra, "AWS::SNS::Topic")
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in of_type(infra, "AWS::CloudWatch::Alarm").values()}
    dead = alarms[alarm_name(STAGE, f"{expected.label}-dead-lettered")]
    assert dead["MetricName"] == "ApproximateNumberOfMessagesVisible" and dead["Threshold"] == 1
    assert dead["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    waiting = alarms[alarm_name(STAGE, f"{expected.label}-waiting")]
    assert waiting["MetricName"] == "ApproximateAgeOfOldestMessage" and waiting["Threshold"] == expected.waiting_s
    assert waiting["Threshold"] <= expected.worth_s
    assert waiting["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    errors = alarm_name(STAGE, "".join(part.title() for part in expected.worker.split("-")) + "Errors")
    for alarm in (dead, waiting, alarms[errors]):
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]


@pytest.mark.parametrize("kind", KINDS)
def test_the_worker_consumes_the_queue_the_stack_creates_in_small_bounded_batches(chalice_app, kind):
    expected = QUEUES[kind]
    (source,) = [s for s in chalice_app.event_sources if getattr(s, "name", None) == expected.worker]
    assert type(source).__name__ == "SQSEventConfig"
    assert source.queue == expected.queue
    assert (source.batch_size, source.maximum_concurrency) == (expected.batch_size, expected.concurrency)
    assert source.handler_string == expected.handler
