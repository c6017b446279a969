"""The failover state machine inside the embedded AWS: created from the one ASL file, with its
Lambda tasks dispatched to the in-process Chalice handlers (moto never runs our code by itself).

Used by local mode and by the tests: moto executes the ASL for real; these
patches only replace the Lambda runtime and, optionally, compress Wait/Retry time.
"""

from __future__ import annotations

import json
import os
import threading
from types import SimpleNamespace

import boto3

from chalicelib.settings import APP_NAME
from chalicelib.workflows import render, state_machine_name

ROLE_NAME = f"{APP_NAME}-local-stepfunctions"
# Every Task's TimeoutSeconds in local mode (SPOT_LOCAL_TASK_TIMEOUT_S; 0 keeps the ASL's own 8–20 s), and no
# retry of a timed-out Task there. In AWS a Task times out together with its Lambda (``lambda_timeout`` is
# generated from the ASL), so its retry replaces a dead attempt. Local mode runs the handlers in its own process
# and cannot stop one: a retry there runs *next to* the timed-out attempt and doubles the work of an emulator
# that is slow because it is busy. With the ASL's own timeouts and retries, 50 simultaneous failovers beside 500
# agents on two cores ended all 50 in the failure path, and 60 s with retries only delayed that (45 of 50;
# docs/benchmarks.md, "Load and mass interruption"). A local timeout therefore goes to the Task's Catch (the
# on-demand fallback on the spot path). The tests of the timeout retries pass their own short value, with them.
LOCAL_TASK_TIMEOUT_S = 60


def _route_lambda(stage: str, run) -> None:
    """moto's Lambda Invoke of ``<app>-<stage>-<name>`` → ``run(name, payload)``; an exception becomes
    the function's error."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    from localmode.invoke import function_error

    prefix = f"{APP_NAME}-{stage}-"

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        name = function_name.split(":function:")[-1].split(":")[0].removeprefix(prefix)
        try:
            result = run(name, json.loads(body or "{}"))
        except Exception as exc:  # noqa: BLE001 - reported to Step Functions as the function's error
            response_headers["x-amz-function-error"] = "Unhandled"
            result = function_error(exc)
        return json.dumps(result).encode()

    LambdaSimpleBackend.invoke = invoke


def install_lambda_bridge(stage: str) -> None:
    """Tests: Lambda invocations (from Step Functions) run the ``@app.lambda_function`` handlers in
    this process."""
    from localmode.invoke import invoke

    _route_lambda(stage, lambda name, payload: invoke(name, payload, stage))


class FunctionError(RuntimeError):
    """The handler raised in the API process; keeps its error type (the state machine's Retry and
    Catch match on it)."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


def forward_lambda_invocations(api_url: str, stage: str = "local") -> None:
    """Local mode: the embedded AWS runs in its own process and hands each Lambda invocation to the
    API process (``POST /_local/lambda/{name}``), where the handlers, the stage's settings and the
    replay clock live."""
    import urllib.request

    def run(name: str, payload: dict):
        request = urllib.request.Request(f"{api_url}/_local/lambda/{name}", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=900) as response:
            result = json.loads(response.read() or b"null")
            if response.headers.get("X-Amz-Function-Error"):
                raise FunctionError(str(result.get("errorType")), str(result.get("errorMessage")))
        return result

    _route_lambda(stage, run)


def compress_time(speed: float | None) -> None:
    """Wait states and Retry back-off last ``1/speed`` of their time (None or 0: no waiting at all)."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    factor = 0.0 if not speed else 1.0 / speed

    def wait_interval(self, env, wait_seconds):
        if wait_seconds > 0 and factor:
            env.program_state_event.wait(wait_seconds * factor)

    WaitFunction._wait_interval = wait_interval
    retrier_decl.time = SimpleNamespace(sleep=lambda s: None if not factor else threading.Event().wait(s * factor),
                                        time=__import__("time").time)


def ensure_failover_state_machine(stage: str, *, task_timeout_s: int | None = None) -> str:
    """Create (once) the failover state machine from the ASL file; sets FAILOVER_STATE_MACHINE_ARN.

    ``task_timeout_s`` (tests): a machine of its own whose every Task times out after that many seconds
    (``render``); moto enforces TimeoutSeconds in real time. Without it, every Task gets local mode's
    ``LOCAL_TASK_TIMEOUT_S`` (see there)."""
    sfn, iam = boto3.client("stepfunctions"), boto3.client("iam")
    region = sfn.meta.region_name
    account = boto3.client("sts").get_caller_identity()["Account"]
    name = state_machine_name(stage) + (f"-timeout{task_timeout_s}s" if task_timeout_s else "")
    existing = [m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"] if m["name"] == name]
    if existing:
        arn = existing[0]
    else:
        try:
            role = iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                            "Principal": {"Service": "states.amazonaws.com"}}]}
            role = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        local_s = int(os.environ.get("SPOT_LOCAL_TASK_TIMEOUT_S", LOCAL_TASK_TIMEOUT_S))
        definition = render(stage, region, account, task_timeout_s=task_timeout_s or local_s or None,
                            retry_timeouts=task_timeout_s is not None or not local_s)
        arn = sfn.create_state_machine(name=name, definition=definition,
                                       roleArn=role)["stateMachineArn"]
    os.environ["FAILOVER_STATE_MACHINE_ARN"] = arn
    from chalicelib.settings import get_settings

    get_settings.cache_clear()
    return arn
