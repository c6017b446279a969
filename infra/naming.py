"""Physical names of the infra stack's pieces, without importing aws_cdk (wire_outputs.py uses them too).

Names the Lambdas also read (tables, bucket, admin-key parameter, state machine, functions) come from
``chalicelib.settings`` and ``chalicelib.workflows``; only infra-only names live here.
"""

from __future__ import annotations

from chalicelib.settings import APP_NAME

# The Chalice function that gets the ML layer (``@app.schedule(..., name="risk-scorer")``).
RISK_SCORER_FUNCTION = "risk-scorer"


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
