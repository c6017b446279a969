"""Invoke the app's non-HTTP handlers in-process, as Lambda would (local mode, the demo and the tests)."""

from __future__ import annotations

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


def invoke(name: str, payload: dict, stage: str = "local"):
    """Run one handler with ``payload`` as its event; returns what it returned.

    One call at a time: chalice's test client applies the stage's environment variables to
    ``os.environ`` for the duration of each call.
    """
    with _lock:
        return _client(stage).lambda_.invoke(name, payload).payload


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


def invoke_schedule(name: str, now: datetime):
    """Deliver one 'Scheduled Event' to the named handler; returns its result."""
    event = _client("local").events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                      detail={}, resources=[])
    event["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return invoke(name, event)
