"""The EventBridge patterns of the sentinel's rules, written once.

Every rule targets the stage's event queue (``infra/event_intake.py``: EventBridge → SQS with a dead-letter
queue → the one ``@app.on_sqs_message`` sentinel function of app.py). The same patterns are used by the
forwarding rules of the other regions (``infra/event_intake.py``, context ``event_regions``), by the
client-account template (infra/chalice_policies.py: a client's account → the product's bus) and by local
mode (localmode/eventbridge.py). A state change only matters when an instance comes up or goes away; an AWS
Health event only when it schedules the retirement (or stop) of an EC2 instance.
"""

from __future__ import annotations

from components.sentinel.signals import (
    DETAIL_TYPES,
    HEALTH_DETAIL_TYPE,
    HEALTH_SOURCE,
    RETIREMENT_EVENT_CODES,
    SignalKind,
)

__all__ = ["SENTINEL_RULES"]

_DETAIL_TYPE = {kind: detail_type for detail_type, kind in DETAIL_TYPES.items()}
WATCHED_STATES = ("running", "stopping", "stopped", "shutting-down", "terminated")

# Rule name → event pattern.
SENTINEL_RULES: dict[str, dict] = {
    "sentinel-interruption": {"source": ["aws.ec2"], "detail-type": [_DETAIL_TYPE[SignalKind.TERMINATION]]},
    "sentinel-rebalance": {"source": ["aws.ec2"], "detail-type": [_DETAIL_TYPE[SignalKind.REBALANCE]]},
    "sentinel-state-change": {"source": ["aws.ec2"], "detail-type": [_DETAIL_TYPE[SignalKind.STATE_CHANGE]],
                              "detail": {"state": list(WATCHED_STATES)}},
    "sentinel-health": {"source": [HEALTH_SOURCE], "detail-type": [HEALTH_DETAIL_TYPE],
                        "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"],
                                   "eventTypeCode": list(RETIREMENT_EVENT_CODES)}},
}
