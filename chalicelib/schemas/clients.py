"""Client dashboard bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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
