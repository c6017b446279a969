"""Invoke the app's non-HTTP handlers in-process, as Lambda would (local mode, the demo and the tests)."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from functools import cache

_lock = threading.Lock()


@cache
def _client(stage: str):
    from chalice.test import Client

    from app import app

    return Client(app, stage_name=stage)


def handler_names() -> set[str]:
    """Every handler Lambda could invoke: ``@app.lambda_function``, schedules and event handlers."""
    from app import app

    return set(app.handler_map)


PARALLEL_ENV = "SPOT_LOCAL_PARALLEL_LAMBDAS"


def invoke(name: str, payload: dict, stage: str = "local"):
    """Run one handler with ``payload`` as its event; returns what it returned.

    One call at a time: chalice's test client applies the stage's environment variables to
    ``os.environ`` for the duration of each call. With ``SPOT_LOCAL_PARALLEL_LAMBDAS=1`` (bench/load.py),
    a process whose environment already holds the function's variables (``chalice local --stage local``
    sets them) runs the handler directly, concurrently with other invocations, as Lambda runs them side
    by side; elsewhere the locked path is taken.
    """
    if os.environ.get(PARALLEL_ENV) == "1":
        direct = _direct(name, stage)
        if direct is not None:
            return direct(payload)
    with _lock:
        return _client(stage).lambda_.invoke(name, payload).payload


def run_as(name: str, work, stage: str = "local"):
    """``work()`` as the function ``name`` runs it: with that function's environment, one call at a time (as
    :func:`invoke`). For what a handler computes beyond what its Lambda answers (``localmode.queues``)."""
    lambda_client = _client(stage).lambda_
    config = lambda_client._config  # chalice 1.34's test client keeps the stage's config here
    scoped = config.scope(config.chalice_stage, name)
    with _lock, lambda_client._patched_env_vars(scoped.environment_variables):
        return work()


def _direct(name: str, stage: str):
    """``payload -> result`` without patching the environment, or None when the function's variables
    are not all in ``os.environ`` already (then only the locked path is right)."""
    from chalice.local import LambdaContext

    lambda_client = _client(stage).lambda_
    config = lambda_client._config  # chalice 1.34's test client keeps the stage's config here
    scoped = config.scope(config.chalice_stage, name)
    if any(os.environ.get(key) != value for key, value in scoped.environment_variables.items()):
        return None
    handler = lambda_client._app.handler_map[name]
    return lambda payload: handler(payload, LambdaContext(name, memory_size=scoped.lambda_memory_size))


def function_error(exc: BaseException) -> dict:
    """The body Lambda's Invoke answers when a handler raised (``X-Amz-Function-Error: Unhandled``).
    An error forwarded from another process keeps the type it was raised with (``error_type``)."""
    return {"errorType": getattr(exc, "error_type", type(exc).__name__), "errorMessage": str(exc)}


def scheduled_handlers() -> dict:
    """Name → schedule expression of every ``@app.schedule`` handler."""
    from app import app

    handlers = {}
    for event_source in app.event_sources:
        if type(event_source).__name__ == "ScheduledEventConfig" and getattr(
                event_source, "schedule_expression", None) is not None:
            handlers[event_source.name] = event_source.schedule_expression
    return handlers


def invoke_schedule(name: str, now: datetime, stage: str = "local"):
    """Deliver one 'Scheduled Event' to the named handler; returns its result. The fan-out dispatchers have no
    event source mapping here: their queue is drained through the worker right after them, and the result
    holds the dispatcher's counts and the workers' outcomes (``localmode.queues.after_dispatch``)."""
    from localmode.queues import after_dispatch

    result = invoke(name, schedule_event(name, now, stage), stage)
    return {**result, **after_dispatch(name, now, stage)} if isinstance(result, dict) else result


def schedule_event(name: str, now: datetime, stage: str = "local") -> dict:
    """The 'Scheduled Event' EventBridge sends ``name`` at ``now`` (the event's time is the run's clock)."""
    event = _client(stage).events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                    detail={}, resources=[])
    event["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return event
