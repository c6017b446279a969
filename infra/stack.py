"""SpotOptimizerStack: everything of one stage that Chalice does not manage (PRODUCT.md §1).

Deployed once per stage before ``chalice deploy --stage <stage>``. Single sources:
- tables: generated from ``chalicelib.tables.ALL_TABLES`` (``infra/tables.py``);
- failover state machine: the ASL text of ``chalicelib/workflows/failover.asl.json`` with
  ``chalicelib.workflows.substitutions(...)`` as CloudFormation DefinitionSubstitutions;
- names (tables, bucket, parameter, state machine, functions): ``chalicelib.settings`` /
  ``chalicelib.workflows``, which the Lambdas read too.

``chalicelib`` must be imported with ``SPOT_STAGE`` set to the stage (pynamodb fixes table names at
import); ``infra/main.py`` does that, and the stack refuses a mismatch.
"""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import Annotations, Aws, CfnOutput, Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from chalicelib import workflows
from chalicelib.settings import APP_NAME, get_settings, table_prefix
from chalicelib.tables import ALL_TABLES
from infra.event_intake import EventIntake
from infra.naming import failover_log_group_name, layer_version_name, notification_topic_name, stack_name
from infra.tables import create_tables

ROOT = Path(__file__).resolve().parents[1]
# layers/ml/build.sh installs into layers/ml/build/python; the asset root is the folder holding python/.
DEFAULT_LAYER_DIR = ROOT / "layers" / "ml" / "build"
# The operator overwrites this with the SHA-256 hex of the admin key (infra/README.md). It is not a
# hex digest, so no key can match it: admin routes stay closed until the operator sets the hash.
ADMIN_KEY_PLACEHOLDER = "REPLACE-ME:sha256-hex-of-the-admin-key"
PROD_STAGES = frozenset({"prod"})
__all__ = ["SpotOptimizerStack", "LayerMissingError", "layer_ready", "stack_name", "DEFAULT_LAYER_DIR"]


class LayerMissingError(RuntimeError):
    """The ML layer was not built and ``skip_layer`` was not given."""


def removal_policy(stage: str) -> RemovalPolicy:
    """RETAIN in prod (data outlives the stack), DESTROY in every other stage."""
    return RemovalPolicy.RETAIN if stage in PROD_STAGES else RemovalPolicy.DESTROY


def layer_ready(layer_dir: Path) -> bool:
    """True when ``make layer`` produced a layer (``python/sklearn`` under the asset root)."""
    return (Path(layer_dir) / "python" / "sklearn" / "__init__.py").is_file()


def _check_stage(stage: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", stage):
        raise ValueError(f"stage {stage!r}: use lowercase letters, digits and '-' (at most 20)")
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
                 layer_dir: Path | str | None = None, **kwargs) -> None:
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
        Tags.of(self).add("app", APP_NAME)
        Tags.of(self).add("stage", stage)

        # --- DynamoDB: one table per pynamodb model ---------------------------------------------------
        self.tables = create_tables(self, ALL_TABLES, removal_policy=removal, deletion_protection=prod)

        # --- S3: model artifacts ----------------------------------------------------------------------
        self.model_bucket = s3.Bucket(
            self, "ModelArtifacts",
            bucket_name=settings.model_bucket,
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

        self.event_intake = EventIntake(self, "EventIntake", stage=stage, alarm_topic=self.topic)  # rules → SQS + DLQ

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
            retention=logs.RetentionDays.THREE_MONTHS if prod else logs.RetentionDays.ONE_MONTH,
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

        # CDK adds DependsOn on a role that is also referenced by GetAtt (cfn-lint W3005, harmless).
        _ignore_lint(self.failover.node.default_child, "W3005")
        provider = self.node.try_find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
        if provider is not None:
            _ignore_lint(provider.node.try_find_child("Handler"), "W3005")

        # --- Outputs: wired into .chalice/config.json by infra/wire_outputs.py -------------------------
        CfnOutput(self, "StateMachineArn", value=self.failover.state_machine_arn,
                  description="FAILOVER_STATE_MACHINE_ARN of the Chalice stage")
        CfnOutput(self, "NotificationTopicArn", value=self.topic.topic_arn,
                  description="NOTIFICATION_TOPIC_ARN of the Chalice stage")
        CfnOutput(self, "ModelBucket", value=self.model_bucket.bucket_name,
                  description="MODEL_BUCKET of the Chalice stage")
        CfnOutput(self, "TablePrefix", value=table_prefix(), description="prefix of every DynamoDB table")
        CfnOutput(self, "AdminKeyParameter", value=self.admin_key_parameter.parameter_name,
                  description="SSM parameter holding the admin-key SHA-256 (overwrite the placeholder)")
        if self.layer is not None:
            CfnOutput(self, "LayerArn", value=self.layer.layer_version_arn,
                      description="layers of lambda_functions.risk-scorer in .chalice/config.json")
