"""Alarms and the dashboard of one stage, all alarms notifying the stage's SNS topic.

Everything here is named for the stage (``naming.alarm_name``) and watches only that stage's resources:
the failover state machine (by ARN), the stage's Chalice functions (``spot-optimizer-<stage>-<name>``),
the app's own metrics with the ``stage`` dimension (``chalicelib.observability``). Other constructs add
their own alarms through :meth:`Monitoring.alarm` / :meth:`Monitoring.watch_functions` (the event intake
adds its dead-letter queue and the sentinel there), so every alarm goes to the same topic and dashboard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from chalicelib.jobs.cleanup import STUCK_INTERRUPTIONS_METRIC
from chalicelib.jobs import pricing_aggregator, risk_scorer
from chalicelib.observability import METRICS_NAMESPACE, STAGE_DIMENSION
from chalicelib.settings import APP_NAME
from infra.naming import alarm_name, dashboard_name

PERIOD = Duration.minutes(5)
# CloudWatch: an alarm on a metric math expression takes at most 10 metrics.
MAX_METRICS_PER_ALARM = 10
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def subscribe_email(topic: sns.Topic, alarm_email: str | None) -> None:
    """Subscribe ``alarm_email`` (context ``alarm_email``, infra/main.py) to ``topic``; nothing when None.
    SNS mails a confirmation link first: nothing arrives until the recipient confirms."""
    if not alarm_email:
        return
    if not EMAIL.match(alarm_email):
        raise ValueError(f"alarm_email {alarm_email!r} is not an e-mail address")
    topic.add_subscription(subscriptions.EmailSubscription(alarm_email))


def allow_alarms(topic: sns.Topic, stage: str) -> None:
    """Let the stage's CloudWatch alarms (``naming.alarm_name``, this account and region) publish to ``topic``.
    Its topic policy (``enforce_ssl``) replaces SNS's default one, which is what let the account's alarms publish:
    without this statement every alarm action fails ("no resource-based policy allows the SNS:Publish action")."""
    stack = Stack.of(topic)
    topic.add_to_resource_policy(iam.PolicyStatement(
        sid="AllowThisStagesAlarms", actions=["sns:Publish"], resources=[topic.topic_arn],
        principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
        conditions={"StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": stack.format_arn(
                        service="cloudwatch", resource="alarm", resource_name=alarm_name(stage, "*"),
                        arn_format=ArnFormat.COLON_RESOURCE_NAME)}}))


class Monitoring(Construct):
    """Alarms → ``topic``, and a dashboard named for the stage and region."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: str, region: str, topic: sns.ITopic,
                 state_machine: sfn.IStateMachine, api_name: str, api_stage: str, api_function: str,
                 failover_functions: Iterable[str]) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.topic = topic
        self.alarms: list[cloudwatch.Alarm] = []
        self.watched_functions: set[str] = set()  # every function watch_functions was given
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=dashboard_name(stage, region),
                                              default_interval=Duration.hours(6))

        # --- failover workflow ------------------------------------------------------------------------
        failed = cloudwatch.MathExpression(
            expression="failed + timedOut + aborted", label="failed, timed out or aborted executions",
            using_metrics={"failed": state_machine.metric_failed(period=PERIOD),
                           "timedOut": state_machine.metric_timed_out(period=PERIOD),
                           "aborted": state_machine.metric_aborted(period=PERIOD)},
            period=PERIOD)
        self.alarm("FailedExecutions", failed, threshold=1,
                   description="A failover execution failed, timed out or was aborted: an interruption may not "
                               "have been handled (Step Functions console, execution history).")
        self.dashboard.add_widgets(cloudwatch.GraphWidget(
            title="Failover executions", width=12,
            left=[state_machine.metric_started(period=PERIOD), state_machine.metric_succeeded(period=PERIOD), failed]))

        # --- API ----------------------------------------------------------------------------------------
        # REST API metrics have no API id dimension and Chalice names every stage's API after the app: the
        # Stage dimension (each stage has its own api_gateway_stage, naming.api_gateway_stage_name) is what
        # keeps dev's 5xx out of prod's alarm in one account. Never drop it (tests/infra/test_hardening.py).
        api_dims = {"ApiName": api_name, "Stage": api_stage}
        api_5xx = cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="5XXError", dimensions_map=api_dims,
                                    statistic="Sum", period=PERIOD, label="API 5xx")
        self.alarm("Api5xx", api_5xx, threshold=1,
                   description="The API answered 5xx (no client input may cause one): the API handler's logs.")
        self.dashboard.add_widgets(cloudwatch.GraphWidget(
            title="API", width=12,
            left=[cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="Count", dimensions_map=api_dims,
                                    statistic="Sum", period=PERIOD, label="requests"), api_5xx,
                  cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="4XXError", dimensions_map=api_dims,
                                    statistic="Sum", period=PERIOD, label="API 4xx")],
            right=[cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="Latency", dimensions_map=api_dims,
                                     statistic="p99", period=PERIOD, label="p99 latency (ms)")]))
        self.watch_functions("Api", [api_function], errors=False)

        # --- failover task functions --------------------------------------------------------------------
        self.watch_functions("FailoverTasks", list(failover_functions))

        # --- interruptions nobody handled -----------------------------------------------------------------
        stuck = self.app_metric(STUCK_INTERRUPTIONS_METRIC, Duration.minutes(15), "stuck interruptions")
        self.alarm("StuckInterruptions", stuck, threshold=1,
                   description="The cleanup job found interruptions still 'detected' 15 minutes after the signal "
                               "with no failover running (resolved as abandoned): check those instances.")
        self.dashboard.add_widgets(cloudwatch.GraphWidget(title="Stuck interruptions (abandoned)", width=12,
                                                          left=[stuck]))

        # --- jobs over the priced pools that take them in turns -------------------------------------------
        for name, metric, label, text in (
                ("RiskPoolCap", risk_scorer.POOL_CAP_METRIC, "risk scorer runs at its pool cap",
                 "The risk scorer found more priced pools than RISK_SCORER_MAX_POOLS: its runs take the pools in "
                 "turns, so each pool's risk is refreshed only every few runs. Raise the cap (each pool is ≈ 4 "
                 "DynamoDB calls a run)."),
                ("PriceRollupPoolCap", pricing_aggregator.POOL_CAP_METRIC, "pricing aggregator runs at its pool cap",
                 "The pricing aggregator found more priced pools than PRICE_ROLLUP_MAX_POOLS: its runs take the pools "
                 "in turns, so price roll-ups (the console's charts) lag. Raise the cap.")):
            self.alarm(name, self.app_metric(metric, Duration.hours(1), label), threshold=1, description=text)

    def app_metric(self, name: str, period: Duration, label: str) -> cloudwatch.Metric:
        """The sum of one of the app's own metrics (chalicelib.observability) of this stage over ``period``."""
        return cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name=name,
                                 dimensions_map={"service": APP_NAME, STAGE_DIMENSION: self.stage},
                                 statistic="Sum", period=period, label=label)

    def alarm(self, what: str, metric: cloudwatch.IMetric, *, threshold: float, description: str,
              evaluation_periods: int = 1) -> cloudwatch.Alarm:
        """An alarm named for the stage, ≥ ``threshold``, no data = fine, notifying the topic."""
        alarm = cloudwatch.Alarm(
            self, f"{what}Alarm", alarm_name=alarm_name(self.stage, what), metric=metric, threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"Spot Optimizer {self.stage}: {description}")
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        return alarm

    def watch_functions(self, label: str, function_names: list[str], *, errors: bool = True,
                        throttles: bool = True) -> None:
        """Errors and throttles of deployed Lambda functions (by name: Chalice creates them after this
        stack), summed into one alarm each, plus a dashboard row. CloudWatch math takes ≤ 10 metrics."""
        if len(function_names) > MAX_METRICS_PER_ALARM:
            raise ValueError(f"{label}: at most {MAX_METRICS_PER_ALARM} functions per alarm (got {len(function_names)})")
        self.watched_functions.update(function_names)

        def per_function(metric_name: str) -> dict[str, cloudwatch.IMetric]:
            return {f"m{i}": cloudwatch.Metric(namespace="AWS/Lambda", metric_name=metric_name,
                                               dimensions_map={"FunctionName": name}, statistic="Sum",
                                               period=PERIOD, label=name)
                    for i, name in enumerate(function_names)}

        graphs = []
        for kind, wanted in (("Errors", errors), ("Throttles", throttles)):
            if not wanted:
                continue
            metrics = per_function(kind)
            total = cloudwatch.MathExpression(expression=" + ".join(metrics), using_metrics=metrics,
                                              label=f"{label} {kind.lower()}", period=PERIOD)
            self.alarm(f"{label}{kind}", total, threshold=1,
                       description=f"{kind} of {', '.join(function_names)}: "
                                   + ("the function raised (its log group)." if kind == "Errors" else
                                      "its reserved concurrency (infra/throttling.py) or the account's "
                                      "concurrency exhausted."))
            graphs.append(cloudwatch.GraphWidget(title=f"{label}: {kind.lower()}", width=12,
                                                 left=list(metrics.values())))
        self.dashboard.add_widgets(*graphs)

    def watch_the_rest(self, label: str, function_names: Iterable[str]) -> None:
        """Errors and throttles of every function of ``function_names`` no other alarm watches yet (the scheduled
        jobs: health monitor, replica coordinator, cleanup, decision cycle, ...), ``MAX_METRICS_PER_ALARM`` an
        alarm: ``<label>1Errors``, ``<label>2Errors``, ... A schedule invokes its function asynchronously: a job that
        raises on every run otherwise fails silently (Lambda's two retries end in nothing but the function's log)."""
        rest = sorted(set(function_names) - self.watched_functions)
        for number, start in enumerate(range(0, len(rest), MAX_METRICS_PER_ALARM), start=1):
            self.watch_functions(f"{label}{number}", rest[start:start + MAX_METRICS_PER_ALARM])
