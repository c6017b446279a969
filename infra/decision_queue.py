"""The decision cycle's fan-out queue: ``decision-cycle`` (the dispatcher) → SQS (+ dead-letter queue) → ``decision-worker``.

``DecisionQueue`` (one per stage, in ``SpotOptimizerStack``) holds:

* **the decision queue** ``spot-optimizer-<stage>-decisions`` (``chalicelib.settings.decision_queue_name``, the
  name app.py's ``@app.on_sqs_message`` consumes; ``chalice deploy`` creates the event source mapping, and
  ``make deploy`` sets its ``ReportBatchItemFailures``: infra/event_source.py). A message names up to 25 agents
  and the cycle it belongs to; it is invisible for 180 s after a receive (6 × the worker's 30 s timeout, AWS's
  advice for Lambda event sources), then comes back; after ``MAX_RECEIVE_COUNT`` receives it moves to
* **the dead-letter queue** ``spot-optimizer-<stage>-decisions-dlq`` (14 days, to read why). Nothing redrives
  it: its agents are decided again by the next cycles. A message there raises the **DLQ depth alarm**; a
  message waiting longer than a cycle (the worker failing, throttled or not deployed: its agents are dropped
  as stale, undecided) raises the **age alarm**.

A message is worth one cycle (the worker drops older ones), so the queue keeps messages an hour: long enough
for ``MAX_RECEIVE_COUNT`` receives (5 × 180 s) to move a message that keeps failing to the dead-letter queue.
Both queues use SSE-SQS and TLS only, as the event queue.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from chalicelib.jobs.decision_cycle import CYCLE_S
from chalicelib.settings import decision_dead_letter_queue_name, decision_queue_name
from infra.event_intake import MAX_RECEIVE_COUNT, dead_letter_alarm, oldest_message_alarm
from infra.naming import alarm_name

__all__ = ["DecisionQueue", "RETENTION", "VISIBILITY_TIMEOUT_S"]

RETENTION = Duration.hours(1)
DEAD_LETTER_RETENTION = Duration.days(14)
VISIBILITY_TIMEOUT_S = 180


class DecisionQueue(Construct):
    """The stage's decision queue, its dead-letter queue and their two alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: str, alarm_topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", queue_name=decision_dead_letter_queue_name(stage),
            retention_period=DEAD_LETTER_RETENTION, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)
        self.queue = sqs.Queue(
            self, "Queue", queue_name=decision_queue_name(stage), retention_period=RETENTION,
            visibility_timeout=Duration.seconds(VISIBILITY_TIMEOUT_S),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT))

        action = cloudwatch_actions.SnsAction(alarm_topic)
        self.dead_letter_alarm = dead_letter_alarm(
            self, self.dead_letter_queue, action, name=alarm_name(stage, "decisions-dead-lettered"),
            description=(f"Decision messages in {decision_dead_letter_queue_name(stage)}: the decision-worker failed "
                         f"on them {MAX_RECEIVE_COUNT} times (its log group says why). Later cycles decide those "
                         "agents again; delete the messages once the cause is fixed."))
        self.age_alarm = oldest_message_alarm(
            self, "OldestMessageAlarm", self.queue, action, name=alarm_name(stage, "decisions-waiting"),
            description=(f"A decision message waited more than one cycle ({CYCLE_S} s) in "
                         f"{decision_queue_name(stage)}: the decision-worker is failing, throttled or not "
                         "deployed, and the agents of such messages are not decided."),
            threshold_s=CYCLE_S)
