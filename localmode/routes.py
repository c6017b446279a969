"""Routes that exist only in local mode (app.py registers them for the ``local`` stage; never deployed).

- ``POST /_local/eventbridge``: PutEvents entries matching a sentinel rule go to the sentinel as messages of its
  event queue (the SQS batch shape, as in production; ``localmode.eventbridge``).
- ``POST /_local/clock``: pin the server's clock to a replay time (the demo's accelerated history).
- ``POST /_local/capacity``: which AZs a spot launch may succeed in now (the demo's replayed world;
  ``localmode.capacity``).
- ``POST /_local/lambda/{name}``: run a handler as Lambda would; the embedded AWS (its own process)
  sends the state machine's task invocations here.
"""

from __future__ import annotations

import os

from chalice import Blueprint, Response

from components.timeutil import parse_iso

from localmode.eventbridge import deliver_all, to_event

bp = Blueprint(__name__)


def _json(body, status: int = 200, **headers: str) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **headers})


def _error(message: str, status: int = 400, code: str = "validation_error") -> Response:
    return _json({"error": code, "message": message}, status)


@bp.route("/_local/eventbridge", methods=["POST"])
def put_events():
    """Deliver PutEvents entries to the matching handlers; answers what each handler returned."""
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
    return _json({"entries": [{"event_id": ev["id"], "delivered": delivered}
                              for ev, delivered in zip(events, deliver_all(events))]})


@bp.route("/_local/clock", methods=["POST"])
def set_clock():
    """``{"now": ISO}`` pins the clock of this process to the replay time; ``{"now": null}`` releases it."""
    from chalicelib import clock

    try:
        body = bp.current_request.json_body or {}
        when = None if body.get("now") is None else parse_iso(body["now"])
    except Exception:  # noqa: BLE001 - bad JSON or a bad timestamp: the caller's mistake
        return _error("body must be {\"now\": ISO-8601 or null}")
    clock.set_replay_time(when)
    return _json({"now": clock.now().isoformat()})


@bp.route("/_local/lambda/{name}", methods=["POST"])
def invoke_function(name):
    """The body is the event; answers what the handler returned, or its error with
    ``X-Amz-Function-Error`` (as Lambda's Invoke does)."""
    from localmode.invoke import function_error, handler_names, invoke

    if name not in handler_names():
        return _error(f"no function {name}", 404, "not_found")
    try:
        payload = bp.current_request.json_body
    except Exception:  # noqa: BLE001 - chalice raises BadRequestError subclasses for bad JSON
        return _error("body must be JSON")
    try:
        return _json(invoke(name, payload if payload is not None else {}))
    except Exception as exc:  # noqa: BLE001 - the function's error, reported to the caller as Lambda would
        return _json(function_error(exc), **{"X-Amz-Function-Error": "Unhandled"})


@bp.route("/_local/capacity", methods=["POST"])
def set_capacity():
    """``{"offered": [az...] or null, "open": [az...]}``: spot launches of this process's product code
    into an AZ not offered or not open fail with InsufficientInstanceCapacity; ``offered: null`` lifts it."""
    from localmode import capacity

    try:
        body = bp.current_request.json_body or {}
        offered, open_now = body.get("offered"), body.get("open", [])
        if not (offered is None or (isinstance(offered, list) and all(isinstance(z, str) for z in offered))) \
                or not (isinstance(open_now, list) and all(isinstance(z, str) for z in open_now)):
            raise ValueError
    except Exception:  # noqa: BLE001 - bad JSON or bad lists: the caller's mistake
        return _error("body must be {\"offered\": [AZ...] or null, \"open\": [AZ...]}")
    capacity.install()
    capacity.STATE.set(offered, open_now)
    return _json({"offered": None if offered is None else sorted(offered), "open": sorted(open_now)})
