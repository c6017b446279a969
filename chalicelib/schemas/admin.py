"""Admin bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool

from chalicelib.schemas.base import Schema


class CreateClientRequest(Schema):
    """POST /api/admin/clients/create."""

    name: str = Field(min_length=1, max_length=100)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    ondemand_discount_percent: float = Field(default=0, ge=0, le=100, allow_inf_nan=False)
    token_ttl_days: int | None = Field(default=None, ge=1, le=3650)
    # Legacy v4 agents (client token on agent routes, no identity document): off unless asked for.
    legacy_agents: StrictBool = False


class LegacyAgentsRequest(Schema):
    """POST /api/admin/clients/{id}/legacy-agents."""

    enabled: StrictBool


class RegenerateTokenRequest(Schema):
    """POST /api/admin/clients/{id}/regenerate-token."""

    token_ttl_days: int | None = Field(default=None, ge=1, le=3650)


class RateLimitRequest(Schema):
    """POST /api/admin/clients/{id}/rate-limit: the client's requests per window (null: the default)."""

    requests_per_window: int | None = Field(ge=1, le=1_000_000)


class ClientStatusRequest(Schema):
    """POST /api/admin/clients/{id}/status."""

    status: Literal["active", "inactive"]
