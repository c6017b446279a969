"""The EventBridge patterns of the sentinel's three rules, written once.

app.py declares one ``@app.on_cw_event`` per entry (the product account's rules); the client-account
template (infra/chalice_policies.py) forwards events matching the same patterns from a client's account to
the product's event bus. A state change only matters when an instance comes up or goes away.
"""

from __future__ import annotations

from components.sentinel.signals import DETAIL_TYPES, SignalKind

__all__ = ["SENTINEL_RULES"]

_DETAIL_TYPE = {kind: detail_type for detail_type, kind in DETAIL_TYPES.items()}
WATCHED_STATES = ("running", "stopping", "stopped", "shutting-down", "terminated")

# Chalice function (rule) name → event pattern.
SENTINEL_RULES: dict[str, dict] = {
    "sentinel-interruption": {"source": ["aws.ec2"], "detail-type": [_DETAIL_TYPE[SignalKind.TERMINATION]]},
    "sentinel-rebalance": {"source": ["aws.ec2"], "detail-type": [_DETAIL_TYPE[SignalKind.REBALANCE]]},
    "sentinel-state-change": {"source": ["aws.ec2"], "detail-type": [_DETAIL_TYPE[SignalKind.STATE_CHANGE]],
                              "detail": {"state": list(WATCHED_STATES)}},
}
