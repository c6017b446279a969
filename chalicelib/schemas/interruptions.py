"""Bodies of the agent's interruption routes (legacy §2.2 #8–#10)."""

from __future__ import annotations

from typing import Literal

from chalicelib.schemas.base import InstanceId, Schema, UtcDatetime


class TerminationImminentRequest(Schema):
    """POST /api/agents/{id}/termination-imminent: the agent saw ``spot/instance-action``."""

    instance_id: InstanceId | None = None
    termination_time: UtcDatetime | None = None
    detected_at: UtcDatetime | None = None


class RebalanceRequest(Schema):
    """POST /api/agents/{id}/rebalance-recommendation: the agent saw ``events/recommendations/rebalance``."""

    instance_id: InstanceId | None = None
    detected_at: UtcDatetime | None = None


class EmergencyReplicaRequest(Schema):
    """POST /api/agents/{id}/create-emergency-replica."""

    signal_type: Literal["termination-notice", "rebalance-recommendation"]
    instance_id: InstanceId | None = None
    termination_time: UtcDatetime | None = None
