"""Invoke the app's non-HTTP handlers in-process, as Lambda would (used by local mode and the demo)."""

from __future__ import annotations

from datetime import datetime
from functools import cache


@cache
def _client():
    from chalice.test import Client

    from app import app

    return Client(app, stage_name="local")


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
    client = _client()
    event = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                            detail={}, resources=[])
    event["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return client.lambda_.invoke(name, event).payload
