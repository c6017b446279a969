"""``POST /_local/eventbridge`` (local mode only): EventBridge's PutEvents for the embedded AWS.

Takes one PutEvents entry (``{"Source", "DetailType", "Detail", "Resources"?, "Time"?}``) or
``{"Entries": [...]}``, turns each into the event EventBridge would deliver, and invokes every
``@app.on_cw_event`` handler whose rule pattern matches (moto's pattern matcher), as the rule's Lambda
target would. app.py registers this blueprint only when the stage is ``local``: it is never deployed.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from functools import cache

from chalice import Blueprint, Response

bp = Blueprint(__name__)
ACCOUNT = "123456789012"


@cache
def _client():
    from chalice.test import Client

    from app import app

    return Client(app, stage_name="local")


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
            delivered.append({"handler": name, "result": _client().lambda_.invoke(name, event).payload})
    return delivered


def _error(message: str) -> Response:
    return Response(body={"error": "validation_error", "message": message}, status_code=400,
                    headers={"Content-Type": "application/json"})


@bp.route("/_local/eventbridge", methods=["POST"])
def put_events():
    """Deliver PutEvents entries to the matching handlers; answers what each handler returned."""
    import os

    try:
        body = bp.current_request.json_body or {}
    except Exception:  # noqa: BLE001 - chalice raises BadRequestError subclasses for bad JSON
        return _error("body must be JSON")
    entries = body.get("Entries", [body]) if isinstance(body, dict) else None
    if not entries or not all(isinstance(e, dict) and e.get("Source") and e.get("DetailType") for e in entries):
        return _error("each entry needs Source and DetailType")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    try:
        events = [to_event(e, region) for e in entries]
    except (ValueError, TypeError):
        return _error("Detail must be a JSON object or a JSON string of one")
    return Response(body={"entries": [{"event_id": ev["id"], "delivered": deliver(ev)} for ev in events]},
                    status_code=200, headers={"Content-Type": "application/json"})
