"""Physical names of the infra stack's pieces, without importing aws_cdk (wire_outputs.py uses them too).

Names the Lambdas also read (tables, bucket, admin-key parameter, state machine, functions) come from
``chalicelib.settings`` and ``chalicelib.workflows``; only infra-only names live here.

Uniqueness rules (checked on the synthesised template by :func:`audit_template`, tests/infra/test_naming.py):

* a name that is global across AWS accounts (S3 buckets) carries the account id and the region;
* a name that is global within an account (CloudWatch dashboards, IAM roles and policies) carries the
  region (IAM names are left to CloudFormation, which makes them unique);
* every name carries the stage, and every tag set carries ``stage=<stage>``.
"""

from __future__ import annotations

import re

from chalicelib.settings import APP_NAME, model_bucket_name

# Stages whose data outlives the stack (RETAIN, deletion protection) and that `make destroy` refuses
# without CONFIRM=yes.
PROD_STAGES = frozenset({"prod"})
# The Chalice function that gets the ML layer (``@app.schedule(..., name="risk-scorer")``).
RISK_SCORER_FUNCTION = "risk-scorer"
# Tags CDK puts on every taggable resource of the stack (stack.py); the stage tag is mandatory.
TAG_APP, TAG_STAGE = "app", "stage"
# S3 bucket names are at most 63 characters; the longest region name today is 14 (ap-southeast-2).
MAX_BUCKET_NAME, MAX_REGION_NAME = 63, 14
MAX_STAGE_LENGTH = MAX_BUCKET_NAME - len(model_bucket_name("", "0" * 12, "r" * MAX_REGION_NAME))
# A stage name: lowercase letters and digits, no '-'. The stage's IAM grants (infra/policies.py: tables, bucket,
# topic-policy alarms, the client-account role's trust in ``spot-optimizer-<stage>-*`` roles) name its resources
# ``spot-optimizer-<stage>-*``; with a '-' allowed, prod's grants would also match a stage ``prod-eu``'s
# tables (``spot-optimizer-prod-eu-clients``), and prod-eu's function roles would pass prod's client roles' trust.
STAGE_NAME = re.compile(rf"[a-z][a-z0-9]{{0,{MAX_STAGE_LENGTH - 1}}}")


def check_stage_name(stage: str) -> str:
    """``stage`` when it is a valid stage name (``STAGE_NAME``); ValueError otherwise."""
    if not STAGE_NAME.fullmatch(stage):
        raise ValueError(f"stage {stage!r}: use lowercase letters and digits only, no '-' (at most "
                         f"{MAX_STAGE_LENGTH}): every IAM grant names the stage's resources "
                         f"{APP_NAME}-<stage>-*, which must not match another stage's")
    return stage
# Where `make deploy` keeps Chalice's deployed state of a stage, in that stage's model bucket
# (infra/deploy_state.py). The Lambdas' policies only reach ``models/*`` of the bucket.
DEPLOYED_STATE_PREFIX = "chalice/deployed/"


# Log retention of a stage, in days (a CloudWatch Logs retention value): the Chalice functions' log groups
# (``log_retention_in_days`` in .chalice/config.json, written by infra/chalice_policies.py) and the failover
# state machine's (stack.py). Nothing is kept forever.
LOG_RETENTION_DAYS = {"prod": 90}
DEFAULT_LOG_RETENTION_DAYS = 30


def log_retention_days(stage: str) -> int:
    return LOG_RETENTION_DAYS.get(stage, DEFAULT_LOG_RETENTION_DAYS)


def api_gateway_stage_name(stage: str) -> str:
    """The API Gateway stage Chalice deploys the stage's REST API to (``api_gateway_stage``, written into
    .chalice/config.json by infra/chalice_policies.py; also the first path segment of the API's URL).
    REST API metrics have no API-id dimension and Chalice names every stage's API after the app, so the
    ``Stage`` dimension alone keeps two stages of one account apart (infra/monitoring.py ``Api5xx``)."""
    return stage


def stack_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-infra"


def layer_version_name(stage: str) -> str:
    return f"{APP_NAME}-sklearn-{stage}"


def notification_topic_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-notifications"


def failover_log_group_name(state_machine_name: str) -> str:
    # /aws/vendedlogs/ keeps Step Functions from growing the account's CloudWatch Logs resource policy.
    return f"/aws/vendedlogs/states/{state_machine_name}"


def event_forwarder_stack_name(stage: str, region: str) -> str:
    """The stack forwarding one more region's sentinel events to the deploy region (infra/event_intake.py)."""
    return f"{APP_NAME}-{stage}-events-{region}"


def forwarder_topic_name(stage: str) -> str:
    """The SNS topic of a forwarder stack's alarm (one per region: an alarm notifies only its own region)."""
    return f"{APP_NAME}-{stage}-events-forward-alarms"


def redrive_operator_role_name(stage: str) -> str:
    """The product-account role an operator creates (by hand, no path) to redrive a client stack's dead-letter
    queue: the client-account role trusts only principals named ``spot-optimizer-<stage>-*`` (infra/README.md,
    "Dead-lettered events and the redrive"). No Chalice function is called this."""
    return f"{APP_NAME}-{stage}-redrive-operator"


def dashboard_name(stage: str, region: str) -> str:
    """CloudWatch dashboards are global in an account: the region keeps two regions' stages apart."""
    return f"{APP_NAME}-{stage}-{region}"


def alarm_name(stage: str, what: str) -> str:
    return f"{APP_NAME}-{stage}-{what}"


def deployed_state_key(stage: str) -> str:
    """Object key of ``.chalice/deployed/<stage>.json`` in the stage's model bucket."""
    return f"{DEPLOYED_STATE_PREFIX}{stage}.json"


# --- the audit of a synthesised template (plain dicts: no aws_cdk) ---------------------------------

# CloudFormation type → (name property, pseudo parameters the name must contain).
GLOBAL_NAMES = {
    "AWS::S3::Bucket": ("BucketName", ("AWS::AccountId", "AWS::Region")),
    "AWS::CloudWatch::Dashboard": ("DashboardName", ("AWS::Region",)),
    "AWS::IAM::Role": ("RoleName", ("AWS::Region",)),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName", ("AWS::Region",)),
    "AWS::IAM::InstanceProfile": ("InstanceProfileName", ("AWS::Region",)),
    "AWS::IAM::User": ("UserName", ("AWS::Region",)),
    "AWS::IAM::Group": ("GroupName", ("AWS::Region",)),
}


def _refs(value) -> set[str]:
    """Every ``Ref`` target inside an intrinsic-function value."""
    if isinstance(value, dict):
        found = {value["Ref"]} if set(value) == {"Ref"} else set()
        for item in value.values():
            found |= _refs(item)
        return found
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value)) if value else set()
    return set()


def _literal_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "".join(_literal_text(v) for v in value.values())
    if isinstance(value, list):
        return "".join(_literal_text(v) for v in value)
    return ""


def audit_template(template: dict, stage: str) -> list[str]:
    """Problems of a synthesised template: a global name without its account/region part or without the
    stage, a resource whose tags lack ``stage=<stage>``. Empty when the template is fine."""
    problems = []
    for logical_id, resource in template.get("Resources", {}).items():
        kind, props = resource.get("Type", ""), resource.get("Properties", {}) or {}
        if kind in GLOBAL_NAMES:
            prop, needed = GLOBAL_NAMES[kind]
            if prop in props:
                missing = [p for p in needed if p not in _refs(props[prop])]
                if missing:
                    problems.append(f"{logical_id} ({kind}) {prop} lacks {missing}: a second deployer collides")
                if f"-{stage}-" not in f"-{_literal_text(props[prop])}-":
                    problems.append(f"{logical_id} ({kind}) {prop} does not name the stage {stage!r}")
        tags = props.get("Tags")
        if tags is None:
            continue
        pairs = ({t.get("Key"): t.get("Value") for t in tags} if isinstance(tags, list)
                 else dict(tags) if isinstance(tags, dict) else {})
        if pairs.get(TAG_STAGE) != stage:
            problems.append(f"{logical_id} ({kind}) is tagged without {TAG_STAGE}={stage}: {sorted(pairs)}")
    return problems
