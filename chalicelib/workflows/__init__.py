"""The failover state machine: one ASL file, its Task functions, and how its ARNs are filled in.

``failover.asl.json`` is the only definition. infra/ passes ``substitutions(...)`` to CDK as
DefinitionSubstitutions; local mode and the tests call ``render(...)`` and create the same machine in
moto. Task ``FunctionName``s are the Chalice ``@app.lambda_function`` names, deployed by Chalice as
``<app>-<stage>-<name>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.sentinel import TERMINATION_NOTICE_S

from chalicelib.settings import APP_NAME

ASL_PATH = Path(__file__).with_name("failover.asl.json")
# A slow, throttled or lost task (its TimeoutSeconds passed, or Lambda lost or timed out the invocation) is
# retried like a transient error, within each Task's own budget (the ASL's TimeoutSeconds × attempts).
TIMEOUT_ERRORS = ("States.Timeout", "Lambda.Unknown", "Sandbox.Timedout")
# Lambda refusing an invocation for the function's reserved concurrency. Nothing ran, so each Task retries it longest,
# with full jitter: a mass interruption sends hundreds of executions to one step at once, and retries in step with
# each other would collide again; a failover done late is still one done, where giving up meant on-demand or failed.
THROTTLE_ERRORS = ("Lambda.TooManyRequestsException",)
# When every attempt of Plan and of the spot launch times out, the on-demand launch still starts within this
# many seconds of the execution's start: half the spot warning's notice is left for it.
SPOT_PATH = ("Plan", "LaunchReplacement")
SPOT_PATH_BUDGET_S = TERMINATION_NOTICE_S // 2

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


def function_timeouts() -> dict[str, int]:
    """Chalice function name → the shortest TimeoutSeconds of the Tasks invoking it: its Lambda timeout
    (infra/chalice_policies.py writes it into .chalice/config.json), so Lambda itself ends a slow invocation
    (``Sandbox.Timedout``, retried) instead of leaving it running after Step Functions stopped waiting."""
    found: dict[str, int] = {}
    for state in json.loads(definition_text())["States"].values():
        if state["Type"] == "Task":
            key = state["Parameters"]["FunctionName"].removeprefix("${").removesuffix("Arn}")
            name = FAILOVER_TASKS[key]
            found[name] = min(found.get(name, state["TimeoutSeconds"]), state["TimeoutSeconds"])
    return found


def definition_text() -> str:
    """The ASL with its ``${...}`` placeholders, as stored."""
    return ASL_PATH.read_text()


def render(stage: str, region: str, account: str, *, task_timeout_s: int | None = None,
           retry_timeouts: bool = True) -> str:
    """The ASL with every placeholder replaced (what Step Functions receives).

    Local mode and tests only: ``task_timeout_s`` sets every Task's TimeoutSeconds (moto enforces them in real
    time); ``retry_timeouts=False`` drops the retriers of ``TIMEOUT_ERRORS``, so a timed-out Task goes straight
    to its Catch (local mode, which cannot stop the attempt a retry would replace: localmode/workflows.py)."""
    text = definition_text()
    for key, value in substitutions(stage, region, account).items():
        text = text.replace("${" + key + "}", value)
    definition = json.loads(text)  # fail loudly on a broken file
    if task_timeout_s is None and retry_timeouts:
        return text
    for state in definition["States"].values():
        if state["Type"] != "Task":
            continue
        if task_timeout_s is not None:
            state["TimeoutSeconds"] = task_timeout_s
        if not retry_timeouts:
            state["Retry"] = [r for r in state.get("Retry", []) if not set(r["ErrorEquals"]) <= set(TIMEOUT_ERRORS)]
    return json.dumps(definition, indent=2)


def worst_case_s(state: dict) -> float:
    """How long a Task can take when every attempt times out: TimeoutSeconds per attempt plus the back-off
    between them (``TIMEOUT_ERRORS`` retrier only; transient errors come on top)."""
    timeout = state["TimeoutSeconds"]
    retrier = next(r for r in state["Retry"] if set(TIMEOUT_ERRORS) <= set(r["ErrorEquals"]))
    waits = sum(retrier["IntervalSeconds"] * retrier["BackoffRate"] ** i for i in range(retrier["MaxAttempts"]))
    return timeout * (retrier["MaxAttempts"] + 1) + waits
