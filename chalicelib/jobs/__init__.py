"""Scheduled jobs: each ``run(now)`` is one cycle, invoked by an ``@app.schedule`` handler in app.py."""

from __future__ import annotations

from datetime import datetime

from components.timeutil import parse_iso

from chalicelib import clock


def scheduled_time(event) -> datetime:
    """The time EventBridge scheduled this run for (local mode's fast clock sets it); now if absent."""
    text = getattr(event, "time", None) or (event.get("time") if isinstance(event, dict) else None)
    try:
        return parse_iso(text)
    except (TypeError, ValueError):
        return clock.now()
