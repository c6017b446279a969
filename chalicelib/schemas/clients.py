"""Client dashboard bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, StrictInt, model_validator

from chalicelib.schemas.base import Schema


class ForceSwitchRequest(Schema):
    """POST /api/client/instances/{id}/force-switch (MANUAL_OVERRIDE priority)."""

    target: Literal["ondemand", "pool", "spot"]
    pool_id: str | None = Field(default=None, max_length=128)
    new_instance_type: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _pool_for_spot(self):
        if self.target in ("pool", "spot") and not self.pool_id:
            raise ValueError("pool_id is required when target is pool or spot")
        return self


class ToggleEnabledRequest(Schema):
    """POST /api/client/agents/{id}/toggle-enabled: ``enabled`` sets it, an empty body flips it."""

    enabled: StrictBool = Field(default=None)


class AgentSettingsRequest(Schema):
    """POST /api/client/agents/{id}/settings (legacy flags; auto-switch on turns manual-replica off)."""

    auto_switch_enabled: StrictBool = Field(default=None)
    auto_terminate_enabled: StrictBool = Field(default=None)
    replica_enabled: StrictBool = Field(default=None)
    replica_count: StrictInt = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _something(self):
        if not self.model_fields_set:
            raise ValueError("no setting given")
        return self

    def changes(self) -> dict:
        return self.model_dump(exclude_unset=True)
