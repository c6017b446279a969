"""EventBridge's PutEvents for the embedded AWS (served by ``localmode/routes.py`` in local mode only).

Takes one PutEvents entry (``{"Source", "DetailType", "Detail", "Resources"?, "Time"?}``) or
``{"Entries": [...]}``, turns each into the event EventBridge would deliver, and invokes every
``@app.on_cw_event`` handler whose rule pattern matches (moto's pattern matcher), as the rule's Lambda
target would. Never deployed.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from localmode.invoke import invoke

ACCOUNT = "123456789012"


def rules() -> dict[str, dict]:
    """Handler name → event pattern of every ``@app.on_cw_event`` declaration."""
    from app import app

    return {s.name: s.event_pattern for s in app.event_sources if getattr(s, "event_pattern", None)}


def to_event(entry: dict, region: str) -> dict:
    """The event EventBridge delivers for one PutEvents entry."""
    detail = entry.get("Detail", "{}")
    detail = json.loads(detail) if isinstance(detail, str) else detail
    # EventBridge stamps whole seconds; local mode keeps milliseconds so measured timings are not rounded.
    when = entry.get("Time") or datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"version": "0", "id": entry.get("Id") or str(uuid.uuid4()), "detail-type": entry["DetailType"],
            "source": entry["Source"], "account": ACCOUNT, "time": when, "region": region,
            "resources": entry.get("Resources", []), "detail": detail}


def deliver(event: dict) -> list[dict]:
    """Invoke every matching handler; returns [{handler, result}]."""
    from moto.events.models import EventPattern

    delivered = []
    for name, pattern in rules().items():
        if EventPattern.load(json.dumps(pattern)).matches_event(event):
            delivered.append({"handler": name, "result": invoke(name, event)})
    return delivered


def deliver_all(events: list[dict]) -> list[list[dict]]:
    """``deliver`` for each event: one after another, or side by side (as EventBridge invokes its targets)
    with ``SPOT_LOCAL_PARALLEL_LAMBDAS=1`` (``localmode.invoke``)."""
    import os

    from localmode.invoke import PARALLEL_ENV

    if os.environ.get(PARALLEL_ENV) != "1" or len(events) < 2:
        return [deliver(event) for event in events]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, len(events)), thread_name_prefix="eventbridge") as pool:
        return list(pool.map(deliver, events))
