"""Step Functions adapter: start the failover workflow exactly once per interruption."""

from __future__ import annotations

import json
from functools import cache

from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.settings import get_settings


@cache
def _client():
    import boto3

    return boto3.session.Session().client(
        "stepfunctions", config=Config(retries={"mode": "standard", "max_attempts": 5},
                                                       connect_timeout=5, read_timeout=10))


def start(name: str, payload: dict, state_machine_arn: str | None = None) -> str:
    """Start an execution named ``name``; a second start with that name returns the first's ARN.

    The name is the interruption id, so an at-least-once redelivery never runs a second workflow.
    """
    arn = state_machine_arn or get_settings().failover_state_machine_arn
    if not arn:
        raise RuntimeError("FAILOVER_STATE_MACHINE_ARN is not configured (infra output, see infra/README.md)")
    try:
        return _client().start_execution(stateMachineArn=arn, name=name,
                                         input=json.dumps(payload, sort_keys=True))["executionArn"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            return execution_arn(arn, name)
        raise


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN Step Functions gives the execution ``name`` of a state machine."""
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def is_running(name: str, state_machine_arn: str | None = None) -> bool:
    """Is the execution ``name`` (an interruption id) running? False when it was never started."""
    return _status_of(name, state_machine_arn) == "RUNNING"


def existing_execution(name: str, state_machine_arn: str | None = None) -> str | None:
    """The ARN of the execution ``name`` (an interruption id) if it was ever started, running or ended; else None."""
    arn = state_machine_arn or get_settings().failover_state_machine_arn
    return execution_arn(arn, name) if _status_of(name, arn) is not None else None


def _status_of(name: str, state_machine_arn: str | None) -> str | None:
    """The execution's status; None when it was never started (or no state machine is configured)."""
    arn = state_machine_arn or get_settings().failover_state_machine_arn
    if not arn:
        return None
    try:
        return status(execution_arn(arn, name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return None
        raise


def status(execution: str) -> str:
    """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED."""
    return _client().describe_execution(executionArn=execution)["status"]
