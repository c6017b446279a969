"""The failover state machine: one ASL file, its Task functions, and how its ARNs are filled in.

``failover.asl.json`` is the only definition. infra/ passes ``substitutions(...)`` to CDK as
DefinitionSubstitutions; local mode and the tests call ``render(...)`` and create the same machine in
moto. Task ``FunctionName``s are the Chalice ``@app.lambda_function`` names, deployed by Chalice as
``<app>-<stage>-<name>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from chalicelib.settings import APP_NAME

ASL_PATH = Path(__file__).with_name("failover.asl.json")

# Placeholder (``${<key>Arn}`` in the ASL) → Chalice lambda_function name.
FAILOVER_TASKS = {
    "FailoverPlan": "failover-plan",
    "FailoverLaunch": "failover-launch",
    "FailoverCheckReady": "failover-check-ready",
    "FailoverHandover": "failover-handover",
    "FailoverRecord": "failover-record",
    "FailoverRetire": "failover-retire",
    "FailoverNextStandby": "failover-next-standby",
    "FailoverFailed": "failover-failed",
}


def state_machine_name(stage: str) -> str:
    """Physical name of the failover state machine of a stage."""
    return f"{APP_NAME}-{stage}-failover"


def function_name(task_name: str, stage: str) -> str:
    """Deployed Lambda name of a Chalice function (Chalice's ``<app>-<stage>-<name>`` rule)."""
    return f"{APP_NAME}-{stage}-{task_name}"


def function_arn(task_name: str, stage: str, region: str, account: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{function_name(task_name, stage)}"


def substitutions(stage: str, region: str, account: str) -> dict[str, str]:
    """``{placeholder: function ARN}`` for every Task of the definition."""
    return {f"{key}Arn": function_arn(name, stage, region, account) for key, name in FAILOVER_TASKS.items()}


def definition_text() -> str:
    """The ASL with its ``${...}`` placeholders, as stored."""
    return ASL_PATH.read_text()


def render(stage: str, region: str, account: str) -> str:
    """The ASL with every placeholder replaced (what Step Functions receives)."""
    text = definition_text()
    for key, value in substitutions(stage, region, account).items():
        text = text.replace("${" + key + "}", value)
    json.loads(text)  # fail loudly on a broken file
    return text
