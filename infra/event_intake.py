"""Durable event intake: the sentinel's EventBridge rules → one SQS queue (+ dead-letter queue) → the sentinel.

``EventIntake`` (one per stage, in ``SpotOptimizerStack``) holds:

* **the event queue** ``spot-optimizer-<stage>-events`` (``chalicelib.settings.event_queue_name``, the name
  app.py's ``@app.on_sqs_message`` consumes; ``chalice deploy`` creates the event source mapping). Messages
  are kept 14 days; a message is invisible for 180 s after a receive (at least 6 × the sentinel's 30 s
  timeout, AWS's advice for Lambda event sources), then comes back (the sentinel cuts that to 10 / 30 s after
  a failed first / second receive: ``chalicelib.sentinel.RETRY_DELAYS_S``); after ``MAX_RECEIVE_COUNT`` receives it
  moves to
* **the dead-letter queue** ``spot-optimizer-<stage>-events-dlq`` (14 days), also the rules' own dead-letter
  queue for events EventBridge could not put on the event queue. Redrive: ``make redrive STAGE=<stage>``
  (infra/README.md). A message there raises the **DLQ depth alarm** (to the stack's SNS topic), and one still
  there after ``DEAD_LETTER_AGE_ALARM`` (7 of its 14 days) the **DLQ age alarm**; an event waiting on the event
  queue longer than the two minutes of a spot warning raises the **age alarm**.
* **one rule per pattern** of ``components.sentinel.rules.SENTINEL_RULES`` (interruption warning, rebalance
  recommendation, state change, AWS Health scheduled retirement) on the default bus, each targeting the
  queue. The queue policy lets ``events.amazonaws.com`` send only for these rules (``aws:SourceArn``).

Both queues use SSE-SQS (SQS-managed keys): encrypted at rest, and EventBridge can send to them without a
KMS key policy (a customer key would need one granting ``events.amazonaws.com``). TLS only.

``EventForwarderStack`` (one per extra region, ``-c event_regions=us-east-1,eu-west-1``; infra/main.py): the
same patterns in that region, forwarded to the deploy region's default bus, where the rules above pick the
events up (a forwarded event keeps its source, detail type and original ``region``). The role EventBridge
assumes there may only ``events:PutEvents`` on that one bus. Clients' own accounts forward with
infra/client-account-role.yaml instead (same patterns).
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Duration, Stack, Tags
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from chalicelib.settings import (
    APP_NAME,
    EVENT_QUEUE_VISIBILITY_S,
    event_dead_letter_queue_name,
    event_queue_name,
    forwarded_event_dead_letter_queue_name,
)
from infra.monitoring import allow_alarms, subscribe_email
from infra.nag import Suppression, add_suppressions
from infra.naming import TAG_APP, TAG_STAGE, alarm_name, forwarder_topic_name
from components.sentinel.rules import SENTINEL_RULES
from components.sentinel.signals import TERMINATION_NOTICE_S

__all__ = ["EventIntake", "EventForwarderStack", "FORWARDER_NAG_SUPPRESSIONS", "MAX_RECEIVE_COUNT", "RETRY_ATTEMPTS", "VISIBILITY_TIMEOUT_S",
           "rule_name"]

# Receives before a message goes to the dead-letter queue. AWS advises at least 5 for a Lambda event source:
# a message received while the function is throttled counts too (the sentinel's maximum concurrency equals
# its reserved concurrency, so it should not be, but a cold burst must not dead-letter a warning).
MAX_RECEIVE_COUNT = 5
RETENTION = Duration.days(14)
# A dead-lettered event still there this long is half-way to its expiry (RETENTION, from its first enqueue): the
# DLQ depth alarm fired once, when the first event arrived, and stays in ALARM for every later one, so this second
# alarm says the events are still unredriven before SQS deletes them for good.
DEAD_LETTER_AGE_ALARM = Duration.days(7)
VISIBILITY_TIMEOUT_S = EVENT_QUEUE_VISIBILITY_S
# EventBridge keeps retrying a delivery to the queue this long before the rule's dead-letter queue.
MAX_EVENT_AGE = Duration.hours(24)
# ... retrying it this many times (EventBridge's maximum; its default, like MAX_EVENT_AGE).
RETRY_ATTEMPTS = 185

# cdk-nag findings of a forwarder stack accepted on purpose (infra/nag.py; tests/infra/test_hardening.py).
FORWARDER_NAG_SUPPRESSIONS: tuple[Suppression, ...] = (
    ("DeadLetterQueue/Resource", "AwsSolutions-SQS3",
     "This queue IS a dead-letter queue: the forwarding rules' (each target's EventBridge DeadLetterConfig); "
     "cdk-nag only recognises an SQS redrive target as one. A dead-letter queue of its own would hold what "
     "nobody reads: a message here raises the events-forward-dead-lettered alarm and is kept 14 days for "
     "`make redrive`.", None),
)

# CDK's EventPattern keyword for each key of an EventBridge pattern the sentinel rules use.
_PATTERN_KEYS = {"source": "source", "detail-type": "detail_type", "detail": "detail", "account": "account",
                 "region": "region", "resources": "resources"}


def rule_name(stage: str, rule: str) -> str:
    """``spot-optimizer-<stage>-sentinel-interruption`` (one per region; forwarders reuse the name)."""
    return f"{APP_NAME}-{stage}-{rule}"


def event_pattern(pattern: dict) -> events.EventPattern:
    """A pattern of components/sentinel/rules.py as CDK's EventPattern (synthesised back to the same JSON)."""
    unknown = set(pattern) - set(_PATTERN_KEYS)
    if unknown:
        raise ValueError(f"pattern keys {sorted(unknown)} have no CDK EventPattern field")
    return events.EventPattern(**{_PATTERN_KEYS[key]: value for key, value in pattern.items()})


def dead_letter_alarm(scope: Construct, queue: sqs.IQueue, action: cloudwatch_actions.SnsAction, *,
                      name: str, description: str) -> cloudwatch.Alarm:
    """``DeadLetterAlarm``: one message in ``queue`` (checked every minute) notifies ``action``, and so does
    its clearing."""
    alarm = cloudwatch.Alarm(
        scope, "DeadLetterAlarm", alarm_name=name, alarm_description=description,
        metric=queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum"),
        threshold=1, evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm


def oldest_message_alarm(scope: Construct, construct_id: str, queue: sqs.IQueue,
                         action: cloudwatch_actions.SnsAction, *, name: str, description: str,
                         threshold_s: int) -> cloudwatch.Alarm:
    """A message older than ``threshold_s`` in ``queue`` (its consumer is failing, throttled or not deployed)
    notifies ``action``, and so does its clearing."""
    alarm = cloudwatch.Alarm(
        scope, construct_id, alarm_name=name, alarm_description=description,
        metric=queue.metric_approximate_age_of_oldest_message(period=Duration.minutes(1), statistic="Maximum"),
        threshold=threshold_s, evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm


def _logical_id(rule: str) -> str:
    return "".join(part.capitalize() for part in rule.split("-")) + "Rule"


class EventIntake(Construct):
    """The stage's event queue, its dead-letter queue, the sentinel's rules and the two alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: str, alarm_topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", queue_name=event_dead_letter_queue_name(stage), retention_period=RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)
        self.queue = sqs.Queue(
            self, "Queue", queue_name=event_queue_name(stage), retention_period=RETENTION,
            visibility_timeout=Duration.seconds(VISIBILITY_TIMEOUT_S),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT))

        self.rules: dict[str, events.Rule] = {}
        for name, pattern in SENTINEL_RULES.items():
            rule = events.Rule(self, _logical_id(name), rule_name=rule_name(stage, name),
                               description=f"Spot Optimizer {stage}: {name} events → the sentinel's event queue",
                               event_pattern=event_pattern(pattern))
            # CDK adds the queue-policy statement for this rule only (aws:SourceArn = the rule), and one on the
            # dead-letter queue for EventBridge's own delivery failures.
            rule.add_target(targets.SqsQueue(self.queue, dead_letter_queue=self.dead_letter_queue,
                                             max_event_age=MAX_EVENT_AGE, retry_attempts=RETRY_ATTEMPTS))
            self.rules[name] = rule

        action = cloudwatch_actions.SnsAction(alarm_topic)
        self.dead_letter_alarm = dead_letter_alarm(
            self, self.dead_letter_queue, action, name=alarm_name(stage, "events-dead-lettered"),
            description=(f"Sentinel events in {event_dead_letter_queue_name(stage)}: they failed "
                         f"{MAX_RECEIVE_COUNT} times. Read them, fix the cause, then `make redrive STAGE={stage}`."))
        self.age_alarm = oldest_message_alarm(
            self, "OldestEventAlarm", self.queue, action, name=alarm_name(stage, "events-waiting"),
            description=(f"An event waited more than {TERMINATION_NOTICE_S} s in {event_queue_name(stage)} "
                         "(the sentinel is failing, throttled or not deployed): a spot warning's window is over."),
            threshold_s=TERMINATION_NOTICE_S)

        self.dead_letter_age_alarm = oldest_message_alarm(
            self, "DeadLetterAgeAlarm", self.dead_letter_queue, action,
            name=alarm_name(stage, "events-dead-letters-expiring"),
            description=(f"A sentinel event has waited {DEAD_LETTER_AGE_ALARM.to_days()} days in "
                         f"{event_dead_letter_queue_name(stage)}: SQS deletes it {RETENTION.to_days()} days after it "
                         f"was first queued, lost for good. Fix the cause, then `make redrive STAGE={stage}`."),
            threshold_s=int(DEAD_LETTER_AGE_ALARM.to_seconds()))

        stack = Stack.of(self)
        CfnOutput(stack, "EventQueueUrl", value=self.queue.queue_url, description="the sentinel's event queue")
        CfnOutput(stack, "EventDeadLetterQueueArn", value=self.dead_letter_queue.queue_arn,
                  description="dead-lettered sentinel events (make redrive STAGE=<stage>)")


class EventForwarderStack(Stack):
    """The sentinel's patterns in one more region, forwarded to the deploy region's default bus, with a
    dead-letter queue in this region for what EventBridge could not put there, and its alarms (a message there; one
    there 7 days)."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: str, deploy_region: str,
                 alarm_email: str | None = None, **kwargs) -> None:
        kwargs.setdefault("description", f"Spot Optimizer {stage}: forward this region's EC2 interruption, "
                                         f"rebalance, state-change and AWS Health retirement events to {deploy_region}")
        super().__init__(scope, construct_id, **kwargs)
        if self.region == deploy_region:
            raise ValueError(f"{construct_id}: the deploy region {deploy_region} needs no forwarder")
        Tags.of(self).add(TAG_APP, APP_NAME)
        Tags.of(self).add(TAG_STAGE, stage)
        bus_arn = f"arn:{Aws.PARTITION}:events:{deploy_region}:{Aws.ACCOUNT_ID}:event-bus/default"
        bus = events.EventBus.from_event_bus_arn(self, "DeployRegionBus", bus_arn)
        self.role = iam.Role(
            self, "ForwardingRole",
            assumed_by=iam.ServicePrincipal("events.amazonaws.com",
                                            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}),
            description=f"EventBridge puts the sentinel's events on the default bus of {deploy_region} (only that bus)")
        # An event EventBridge could not put on the deploy region's bus (that region impaired, the bus policy or
        # the role broken) lands here, in this region (a rule's dead-letter queue must be in its own region),
        # with the original event as the message body. CDK's EventBus target has no retry settings: EventBridge
        # retries such a target with its defaults, 24 h and 185 attempts (= MAX_EVENT_AGE and RETRY_ATTEMPTS
        # that the deploy region's rules set explicitly), then dead-letters.
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", queue_name=forwarded_event_dead_letter_queue_name(stage),
            retention_period=RETENTION, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)
        self.rules: dict[str, events.Rule] = {}
        for name, pattern in SENTINEL_RULES.items():
            rule = events.Rule(self, _logical_id(name), rule_name=rule_name(stage, name),
                               description=f"Spot Optimizer {stage}: {name} events → {deploy_region}'s default bus",
                               event_pattern=event_pattern(pattern))
            # Grants the role events:PutEvents on the bus, and EventBridge SendMessage on the dead-letter
            # queue for this rule only (aws:SourceArn).
            rule.add_target(targets.EventBus(bus, role=self.role, dead_letter_queue=self.dead_letter_queue))
            self.rules[name] = rule

        # A CloudWatch alarm can notify only a topic of its own region: this region's topic, subscribed to
        # the same address as the stage's topic (context alarm_email).
        self.topic = sns.Topic(self, "AlarmTopic", topic_name=forwarder_topic_name(stage),
                               display_name=f"Spot Optimizer {stage} event forwarding", enforce_ssl=True)
        subscribe_email(self.topic, alarm_email)
        allow_alarms(self.topic, stage)
        dlq = forwarded_event_dead_letter_queue_name(stage)
        self.dead_letter_alarm = dead_letter_alarm(
            self, self.dead_letter_queue, cloudwatch_actions.SnsAction(self.topic),
            name=alarm_name(stage, "events-forward-dead-lettered"),
            description=(f"Sentinel events in {dlq} of this region: EventBridge could not forward them to "
                         f"{deploy_region} for 24 h. Read them, fix the cause, then "
                         f"`make redrive STAGE={stage} EVENT_REGIONS=<this region>`."))
        self.dead_letter_age_alarm = oldest_message_alarm(
            self, "DeadLetterAgeAlarm", self.dead_letter_queue, cloudwatch_actions.SnsAction(self.topic),
            name=alarm_name(stage, "events-forward-dead-letters-expiring"),
            description=(f"A sentinel event has waited {DEAD_LETTER_AGE_ALARM.to_days()} days in {dlq} of this "
                         f"region: SQS deletes it after {RETENTION.to_days()} days, lost for good. Fix the cause, then "
                         f"`make redrive STAGE={stage} EVENT_REGIONS=<this region>`."),
            threshold_s=int(DEAD_LETTER_AGE_ALARM.to_seconds()))
        add_suppressions(self, FORWARDER_NAG_SUPPRESSIONS)
        CfnOutput(self, "ForwardDeadLetterQueueUrl", value=self.dead_letter_queue.queue_url,
                  description="events EventBridge could not forward (make redrive STAGE=<stage> EVENT_REGIONS=<region>)")
        CfnOutput(self, "ForwardAlarmTopicArn", value=self.topic.topic_arn,
                  description="the topic of this region's forwarding alarm")
