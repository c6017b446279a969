"""Bodies of the decision routes (legacy /decide and /issue-switch-command)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chalicelib.schemas.base import Schema


class DecideRequest(Schema):
    """POST /api/agents/{id}/decide. The legacy body (instance, pricing) is accepted and ignored:
    the decision uses what the tables know, so every path decides alike."""


class IssueSwitchRequest(Schema):
    """POST /api/agents/{id}/issue-switch-command. Without a target, the current decision's is used."""

    target_mode: Literal["spot", "ondemand"] | None = None
    target_pool_id: str | None = Field(default=None, max_length=128)
    urgent: bool = False

    @model_validator(mode="after")
    def _pool_for_spot(self):
        if self.target_mode == "spot" and not self.target_pool_id:
            raise ValueError("target_pool_id is required when target_mode is spot")
        return self
