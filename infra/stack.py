"""SpotOptimizerStack: everything of one stage that Chalice does not manage.

Deployed once per stage before ``chalice deploy --stage <stage>``. Single sources:
- tables: generated from ``chalicelib.tables.ALL_TABLES`` (``infra/tables.py``);
- failover state machine: the ASL text of ``chalicelib/workflows/failover.asl.json`` with
  ``chalicelib.workflows.substitutions(...)`` as CloudFormation DefinitionSubstitutions;
- names (tables, bucket, parameter, state machine, functions): ``chalicelib.settings`` /
  ``chalicelib.workflows``, which the Lambdas read too; infra-only names: ``infra/naming.py``.

Also here: the alarms and dashboard (``infra/monitoring.py``) with the topic's e-mail subscription
(context ``alarm_email``), and the cdk-nag AwsSolutions checks (:func:`apply_nag`; every suppression
carries its reason in ``NAG_SUPPRESSIONS``). The event intake (EventBridge → SQS → sentinel) and the
fan-out queues (decision-cycle → SQS → decision-worker, savings-rollup/-close → SQS → savings-worker:
infra/work_queue.py) are constructs of their own, instantiated at the marked lines below.

``chalicelib`` must be imported with ``SPOT_STAGE`` set to the stage (pynamodb fixes table names at
import); ``infra/main.py`` does that, and the stack refuses a mismatch.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Annotations, Aspects, Aws, CfnOutput, Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct

from chalicelib import workflows
from chalicelib.settings import (
    APP_NAME,
    DECISION_WORKER_FUNCTION,
    SAVINGS_WORKER_FUNCTION,
    SENTINEL_FUNCTION,
    get_settings,
    model_bucket_name,
    table_prefix,
)
from chalicelib.tables import ALL_TABLES
from infra.event_intake import EventIntake
from infra.monitoring import Monitoring, allow_alarms, subscribe_email
from infra.nag import Suppression, add_suppressions
from infra.naming import (
    PROD_STAGES,
    TAG_APP,
    TAG_STAGE,
    check_stage_name,
    failover_log_group_name,
    layer_version_name,
    log_retention_days,
    notification_topic_name,
    stack_name,
)
from infra.policies import API_HANDLER, FUNCTIONS, deployed_function_name
from infra.tables import create_tables
from infra.chalice_deployment import api_gateway_stage
from infra.work_queue import DECISIONS, SAVINGS, WorkQueue

ROOT = Path(__file__).resolve().parents[1]
# layers/ml/build.sh installs into layers/ml/build/python; the asset root is the folder holding python/.
DEFAULT_LAYER_DIR = ROOT / "layers" / "ml" / "build"
# The operator overwrites this with the SHA-256 hex of the admin key (infra/README.md). It is not a
# hex digest, so no key can match it: admin routes stay closed until the operator sets the hash.
ADMIN_KEY_PLACEHOLDER = "REPLACE-ME:sha256-hex-of-the-admin-key"
RETENTION = {30: logs.RetentionDays.ONE_MONTH, 90: logs.RetentionDays.THREE_MONTHS}
__all__ = ["SpotOptimizerStack", "LayerMissingError", "layer_ready", "stack_name", "DEFAULT_LAYER_DIR", "apply_nag"]


# cdk-nag (AwsSolutions) findings accepted on purpose: (construct path under the stack, rule, reason,
# applies_to findings or None for the whole rule). Each reason says why; tests/infra/test_hardening.py fails
# on any finding not listed here and on a reason that says nothing.
NAG_SUPPRESSIONS: tuple[Suppression, ...] = (
    ("ModelArtifacts/Resource", "AwsSolutions-S1",
     "The bucket holds only model artifacts and Chalice's deployed state, written by this stage's own roles "
     "(IAM: models/* for the Lambdas); object-level access is auditable with CloudTrail S3 data events. A "
     "server-access-log bucket per stage would itself be an unlogged bucket.", None),
    ("FailoverRole/DefaultPolicy/Resource", "AwsSolutions-IAM5",
     "Added by CDK for Step Functions tracing and logging: the X-Ray actions (PutTraceSegments, "
     "PutTelemetryRecords, GetSampling*) and the CloudWatch Logs vended-delivery actions (CreateLogDelivery, "
     "...) support no resource-level permissions, so IAM accepts only Resource '*'. Invocations are limited "
     "to the 8 failover function ARNs.", ("Resource::*",)),
)


class LayerMissingError(RuntimeError):
    """The ML layer was not built and ``skip_layer`` was not given."""


def removal_policy(stage: str) -> RemovalPolicy:
    """RETAIN in prod (data outlives the stack), DESTROY in every other stage."""
    return RemovalPolicy.RETAIN if stage in PROD_STAGES else RemovalPolicy.DESTROY


def layer_ready(layer_dir: Path) -> bool:
    """True when ``make layer`` produced a layer (``python/sklearn`` under the asset root)."""
    return (Path(layer_dir) / "python" / "sklearn" / "__init__.py").is_file()


def _check_stage(stage: str) -> None:
    # The model bucket's name (stage, account, region) must fit S3's 63 characters in every region, and no
    # stage's names may start with another's (naming.STAGE_NAME).
    check_stage_name(stage)
    settings = get_settings()
    if settings.stage != stage:
        raise RuntimeError(
            f"chalicelib was loaded for SPOT_STAGE={settings.stage!r} but the stack is for {stage!r}: "
            "set os.environ['SPOT_STAGE'] to the stage BEFORE importing chalicelib (infra/main.py does)")
    wrong = [t.Meta.table_name for t in ALL_TABLES if not t.Meta.table_name.startswith(table_prefix())]
    if wrong:
        raise RuntimeError(f"table names {wrong} do not start with the stage's prefix {table_prefix()!r}")


def _ignore_lint(resource, *checks: str) -> None:
    """Resource-level cfn-lint suppression (``Metadata.cfn-lint.config.ignore_checks``)."""
    if resource is not None:
        resource.add_metadata("cfn-lint", {"config": {"ignore_checks": list(checks)}})


class SpotOptimizerStack(Stack):
    """Tables, model bucket, notification topic, admin-key parameter, ML layer, failover state machine."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: str, skip_layer: bool = False,
                 layer_dir: Path | str | None = None, alarm_email: str | None = None, **kwargs) -> None:
        _check_stage(stage)
        layer_dir = Path(layer_dir) if layer_dir is not None else DEFAULT_LAYER_DIR
        build_layer = layer_ready(layer_dir)
        if not build_layer and not skip_layer:
            raise LayerMissingError(
                f"the ML layer is not built ({layer_dir}/python/sklearn is missing): run `make layer` first, "
                "or synthesise without it with `-c skip_layer=true` (not deployable: the risk scorer needs it)")
        kwargs.setdefault("description", f"Spot Optimizer {stage}: tables, model bucket, topic, ML layer, "
                                         "failover state machine (deploy before `chalice deploy`)")
        super().__init__(scope, construct_id, **kwargs)
        self.stage = stage
        settings = get_settings()
        prod = stage in PROD_STAGES
        removal = removal_policy(stage)
        # Every taggable resource carries the stage (infra/naming.py audit_template checks it).
        Tags.of(self).add(TAG_APP, APP_NAME)
        Tags.of(self).add(TAG_STAGE, stage)

        # --- DynamoDB: one table per pynamodb model ---------------------------------------------------
        self.tables = create_tables(self, ALL_TABLES, removal_policy=removal, deletion_protection=prod)

        # --- S3: model artifacts ----------------------------------------------------------------------
        self.model_bucket = s3.Bucket(
            self, "ModelArtifacts",
            # S3 names are global: account and region make it unique (wired into MODEL_BUCKET by wire_outputs).
            bucket_name=model_bucket_name(stage, Aws.ACCOUNT_ID, Aws.REGION),
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            lifecycle_rules=[s3.LifecycleRule(id="old-versions",
                                              noncurrent_version_expiration=Duration.days(365),
                                              abort_incomplete_multipart_upload_after=Duration.days(7))],
            removal_policy=removal,
            # A non-prod stack must be deletable although the bucket holds model versions.
            auto_delete_objects=not prod,
        )

        # --- SNS: notifications -----------------------------------------------------------------------
        self.topic = sns.Topic(self, "NotificationTopic", topic_name=notification_topic_name(stage),
                               display_name=f"Spot Optimizer {stage}", enforce_ssl=True)
        subscribe_email(self.topic, alarm_email)
        allow_alarms(self.topic, stage)  # the stage's alarms notify it (below, and the constructs')

        # --- SSM: admin-key hash (placeholder; the operator overwrites the value) ----------------------
        self.admin_key_parameter = ssm.StringParameter(
            self, "AdminKeyHash",
            parameter_name=settings.admin_key_parameter,
            string_value=ADMIN_KEY_PLACEHOLDER,
            description="SHA-256 hex of the admin key (X-Admin-Key). Placeholder: overwrite it, see infra/README.md",
        )

        # --- Lambda layer: scikit-learn for the risk scorer only --------------------------------------
        self.layer: lambda_.LayerVersion | None = None
        if build_layer:
            self.layer = lambda_.LayerVersion(
                self, "MlLayer",
                layer_version_name=layer_version_name(stage),
                code=lambda_.Code.from_asset(str(layer_dir)),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                compatible_architectures=[lambda_.Architecture.X86_64],
                description="scikit-learn + numpy + scipy + joblib (layers/ml) for the risk-scorer function",
                removal_policy=RemovalPolicy.RETAIN,  # deployed functions keep pointing at old versions
            )
        else:
            Annotations.of(self).add_warning_v2(
                "spot-optimizer:no-ml-layer",
                "synthesised WITHOUT the ML layer (skip_layer=true): run `make layer` before deploying")

        # --- Step Functions: the failover state machine from its one ASL file -------------------------
        task_arns = workflows.substitutions(stage, Aws.REGION, Aws.ACCOUNT_ID)
        self.failover_role = iam.Role(
            self, "FailoverRole",
            assumed_by=iam.ServicePrincipal(
                "states.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}),
            description=f"{workflows.state_machine_name(stage)}: invoke the failover task functions only",
        )
        self.failover_role.add_to_policy(iam.PolicyStatement(
            sid="InvokeFailoverTasks",
            actions=["lambda:InvokeFunction"],
            resources=sorted(set(task_arns.values())),
        ))
        self.failover_logs = logs.LogGroup(
            self, "FailoverLogs",
            log_group_name=failover_log_group_name(workflows.state_machine_name(stage)),
            retention=RETENTION[log_retention_days(stage)],
            removal_policy=removal,
        )
        self.failover = sfn.StateMachine(
            self, "FailoverStateMachine",
            state_machine_name=workflows.state_machine_name(stage),
            definition_body=sfn.DefinitionBody.from_string(workflows.definition_text()),
            definition_substitutions=task_arns,
            role=self.failover_role,
            logs=sfn.LogOptions(destination=self.failover_logs, level=sfn.LogLevel.ALL,
                                include_execution_data=True),
            tracing_enabled=True,
        )

        # --- Alarms and dashboard (infra/monitoring.py) → the topic ------------------------------------
        self.monitoring = Monitoring(
            self, "Monitoring", stage=stage, region=Aws.REGION, topic=self.topic, state_machine=self.failover,
            api_name=APP_NAME, api_stage=api_gateway_stage(stage),
            api_function=deployed_function_name(API_HANDLER, stage),
            failover_functions=[deployed_function_name(name, stage) for name in workflows.FAILOVER_TASKS.values()])

        # --- Event intake (EventBridge → SQS + DLQ → sentinel): infra/event_intake.py ------------------
        # Its own alarms (dead-lettered events, events waiting) notify the topic; the sentinel's errors and
        # throttles are watched with the other functions'.
        self.event_intake = EventIntake(self, "EventIntake", stage=stage, alarm_topic=self.topic)
        self.monitoring.watch_functions("Sentinel", [deployed_function_name(SENTINEL_FUNCTION, stage)])

        # --- Fan-out queues (dispatcher → SQS + DLQ → worker): infra/work_queue.py ------------------------------
        self.decision_queue = WorkQueue(self, "DecisionQueue", spec=DECISIONS, stage=stage, alarm_topic=self.topic)
        self.monitoring.watch_functions("DecisionWorker", [deployed_function_name(DECISION_WORKER_FUNCTION, stage)])
        self.savings_queue = WorkQueue(self, "SavingsQueue", spec=SAVINGS, stage=stage, alarm_topic=self.topic)
        self.monitoring.watch_functions("SavingsWorker", [deployed_function_name(SAVINGS_WORKER_FUNCTION, stage)])

        # --- Every other Chalice function (the scheduled jobs; infra/policies.py FUNCTIONS lists app.py's): ------
        # errors and throttles, so a job failing on every run is not silent. After every other watch.
        self.monitoring.watch_the_rest("Jobs", [deployed_function_name(name, stage) for name in FUNCTIONS])

        # CDK adds DependsOn on a role that is also referenced by GetAtt (cfn-lint W3005, harmless).
        _ignore_lint(self.failover.node.default_child, "W3005")
        provider = self.node.try_find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
        if provider is not None:
            _ignore_lint(provider.node.try_find_child("Handler"), "W3005")

        self._suppress_nag()

        # --- Outputs: wired into .chalice/config.json by infra/wire_outputs.py -------------------------
        CfnOutput(self, "StateMachineArn", value=self.failover.state_machine_arn,
                  description="FAILOVER_STATE_MACHINE_ARN of the Chalice stage")
        CfnOutput(self, "NotificationTopicArn", value=self.topic.topic_arn,
                  description="NOTIFICATION_TOPIC_ARN of the Chalice stage")
        CfnOutput(self, "ModelBucket", value=self.model_bucket.bucket_name,
                  description="MODEL_BUCKET of the Chalice stage")
        CfnOutput(self, "TablePrefix", value=table_prefix(), description="prefix of every DynamoDB table")
        CfnOutput(self, "Region", value=Aws.REGION,
                  description="region of the stack: `make deploy` refuses a Chalice deploy to any other")
        CfnOutput(self, "DashboardName", value=self.monitoring.dashboard.dashboard_name,
                  description="CloudWatch dashboard of the stage")
        CfnOutput(self, "AdminKeyParameter", value=self.admin_key_parameter.parameter_name,
                  description="SSM parameter holding the admin-key SHA-256 (overwrite the placeholder)")
        if self.layer is not None:
            CfnOutput(self, "LayerArn", value=self.layer.layer_version_arn,
                      description="layers of lambda_functions.risk-scorer in .chalice/config.json")

    def _suppress_nag(self) -> None:
        add_suppressions(self, NAG_SUPPRESSIONS)


def apply_nag(scope: IConstruct) -> None:
    """cdk-nag's AwsSolutions pack over ``scope``: an unsuppressed finding becomes an error annotation
    (``infra/main.py`` fails the synth on it; tests/infra/test_hardening.py too)."""
    from cdk_nag import AwsSolutionsChecks

    Aspects.of(scope).add(AwsSolutionsChecks(verbose=True))
