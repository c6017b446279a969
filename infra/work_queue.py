"""The fan-out jobs' queues: a scheduled dispatcher → SQS (+ dead-letter queue) → an ``@app.on_sqs_message`` worker.

One construct, ``WorkQueue``, for each of them (in ``SpotOptimizerStack``), set by a ``QueueSpec``:

* ``DECISIONS``: ``decision-cycle`` → ``spot-optimizer-<stage>-decisions`` → ``decision-worker``; a message names up
  to 25 agents and its cycle, is worth one cycle (300 s), so the age alarm fires past a cycle;
* ``SAVINGS``: ``savings-rollup``/``savings-close`` → ``spot-optimizer-<stage>-savings`` → ``savings-worker``; a
  message names up to 10 clients and its run, is worth an hour (the worker drops it as stale after), and the
  age alarm fires past 30 minutes (the fleet job at :45 would find the run incomplete).

Each holds **the queue** (``chalicelib.settings.<x>_queue_name``, the name app.py's ``@app.on_sqs_message``
consumes; ``chalice deploy`` creates the event source mapping and ``make deploy`` sets its
``ReportBatchItemFailures``: infra/event_source.py). A message is invisible for 6 × the worker's timeout after a
receive (AWS's advice for Lambda event sources), then comes back; after ``MAX_RECEIVE_COUNT`` receives it moves
to **the dead-letter queue** ``<queue>-dlq`` (14 days, to read why). Nothing redrives it: the next dispatch
covers its keys again. A message there raises the **DLQ depth alarm**; a message waiting too long (the worker
failing, throttled or not deployed) the **age alarm**. The queue keeps a message long enough for
``MAX_RECEIVE_COUNT`` receives to move one that keeps failing to the dead-letter queue. SSE-SQS and TLS only,
as the event queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from chalicelib.jobs.decision_cycle import CYCLE_S
from chalicelib.settings import (
    DECISION_WORKER_FUNCTION,
    SAVINGS_WORKER_FUNCTION,
    decision_dead_letter_queue_name,
    decision_queue_name,
    savings_dead_letter_queue_name,
    savings_queue_name,
)
from infra.event_intake import MAX_RECEIVE_COUNT, dead_letter_alarm, oldest_message_alarm
from infra.naming import alarm_name

__all__ = ["DECISIONS", "SAVINGS", "QueueSpec", "WorkQueue"]

DEAD_LETTER_RETENTION = Duration.days(14)


@dataclass(frozen=True)
class QueueSpec:
    """One fan-out queue: its names, its worker, how long a message lives and may wait."""

    label: str  # alarm names: ``<label>-dead-lettered``, ``<label>-waiting``
    queue_name: Callable[[str], str]
    dead_letter_queue_name: Callable[[str], str]
    worker: str
    visibility_timeout_s: int  # 6 × the worker's timeout (.chalice/config.json)
    retention: Duration  # ≥ MAX_RECEIVE_COUNT × visibility timeout
    waiting_alarm_s: int  # the age alarm's threshold
    lost: str  # what a message that waits too long costs (alarm description)
    retried: str  # what happens to a dead-lettered message's keys (alarm description)


DECISIONS = QueueSpec(
    "decisions", decision_queue_name, decision_dead_letter_queue_name, DECISION_WORKER_FUNCTION,
    visibility_timeout_s=180, retention=Duration.hours(1), waiting_alarm_s=CYCLE_S,
    lost=f"waited more than one cycle ({CYCLE_S} s): the agents of such messages are not decided",
    retried="Later cycles decide those agents again")
SAVINGS = QueueSpec(
    "savings", savings_queue_name, savings_dead_letter_queue_name, SAVINGS_WORKER_FUNCTION,
    visibility_timeout_s=720, retention=Duration.hours(2), waiting_alarm_s=1800,
    lost=("waited more than 30 minutes: the fleet job at :45 finds the run incomplete and keeps the fleet's rows, "
          "and after an hour the clients of such messages are dropped as stale until the next run"),
    retried="The next hourly run rolls those clients up again")


class WorkQueue(Construct):
    """A fan-out job's queue, its dead-letter queue and their two alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, spec: QueueSpec, stage: str,
                 alarm_topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        name, dead_letter_name = spec.queue_name(stage), spec.dead_letter_queue_name(stage)
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", queue_name=dead_letter_name,
            retention_period=DEAD_LETTER_RETENTION, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)
        self.queue = sqs.Queue(
            self, "Queue", queue_name=name, retention_period=spec.retention,
            visibility_timeout=Duration.seconds(spec.visibility_timeout_s),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT))

        action = cloudwatch_actions.SnsAction(alarm_topic)
        self.dead_letter_alarm = dead_letter_alarm(
            self, self.dead_letter_queue, action, name=alarm_name(stage, f"{spec.label}-dead-lettered"),
            description=(f"Messages in {dead_letter_name}: the {spec.worker} failed on them {MAX_RECEIVE_COUNT} "
                         f"times (its log group says why). {spec.retried}; delete the messages once the cause "
                         "is fixed."))
        self.age_alarm = oldest_message_alarm(
            self, "OldestMessageAlarm", self.queue, action, name=alarm_name(stage, f"{spec.label}-waiting"),
            description=(f"A message in {name} {spec.lost}. The {spec.worker} is failing, throttled or not "
                         "deployed."),
            threshold_s=spec.waiting_alarm_s)
