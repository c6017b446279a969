"""Run the app's scheduled handlers on their schedule in local mode (no EventBridge here).

Schedules are read from the Chalice app itself (``@app.schedule`` declarations), so a new job is
picked up without touching local mode. ``speed`` compresses time: speed 60 runs a 1-minute job
every second.
"""

from __future__ import annotations

import time
from datetime import datetime

from chalice.app import Rate

from localmode.invoke import invoke_schedule, scheduled_handlers

SECONDS = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}


def period_seconds(expression) -> float:
    """Seconds between runs for a Chalice Rate; a Cron at a fixed minute and hour of every day (``Cron(15, 0,
    "*", "*", "?", "*")``) is daily, any other Cron is treated as hourly in local mode."""
    if isinstance(expression, Rate):
        return expression.value * SECONDS[expression.unit]
    if _fixed(getattr(expression, "minutes", None)) and _fixed(getattr(expression, "hours", None)) \
            and str(getattr(expression, "day_of_month", "*")) in ("*", "?") \
            and str(getattr(expression, "day_of_week", "?")) in ("*", "?"):
        return 86400.0
    return 3600.0


def _fixed(field) -> bool:
    return isinstance(field, int) or (isinstance(field, str) and field.isdigit())


def run_due_jobs(last_run: dict[str, float], speed: float, now: datetime) -> list[str]:
    """Invoke every handler whose (accelerated) period has elapsed; returns the names run."""
    ran = []
    clock = time.monotonic()
    for name, expression in scheduled_handlers().items():
        period = period_seconds(expression) / max(speed, 1.0)
        if name not in last_run or clock - last_run[name] >= period:  # first run: always (no float subtraction)
            last_run[name] = clock
            invoke_schedule(name, now)
            ran.append(name)
    return ran
