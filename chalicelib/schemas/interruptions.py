"""Bodies of the agent's interruption routes (termination, rebalance, emergency replica)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from chalicelib.schemas.base import InstanceId, Schema, UtcDatetime


class TerminationImminentRequest(Schema):
    """POST /api/agents/{id}/termination-imminent: the agent saw ``spot/instance-action``. The early 4.0.0 builds of
    agent-v2 send that document's own fields, ``action`` and ``time``: ``time`` is the termination time."""

    instance_id: InstanceId | None = None
    termination_time: UtcDatetime | None = Field(default=None,
                                                 validation_alias=AliasChoices("termination_time", "time"))
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
