"""Admin bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, model_validator

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


class BindAccountRequest(Schema):
    """POST /api/admin/clients/{id}/accounts: the account and the role the client deployed in it."""

    account_id: str = Field(pattern=r"^[0-9]{12}$")  # \d would take any script's digits
    role_arn: str = Field(max_length=2048, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")

    @model_validator(mode="after")
    def _same_account(self):
        if self.role_arn.split(":")[4] != self.account_id:
            raise ValueError("role_arn must be a role in account_id")
        return self


class LimitsRequest(Schema):
    """POST /api/admin/clients/{id}/limits: quota and instance-type policy overrides (``null`` = the default)."""

    max_agents: int | None = Field(default=None, ge=0, le=100_000)
    max_instances: int | None = Field(default=None, ge=0, le=100_000)
    max_standby_usd_per_hour: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False)
    max_instance_vcpus: int | None = Field(default=None, ge=1, le=1024)
    max_switches_per_agent_per_day: int | None = Field(default=None, ge=0, le=1440)
    allow_accelerated_types: bool | None = None
    allowed_instance_families: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,15}$")]] | None = Field(
        default=None, max_length=100)
    # The client's discount on on-demand (Savings Plans/RIs): lowers the savings baseline (null: 0).
    ondemand_discount_percent: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)

    @model_validator(mode="after")
    def _something(self):
        if not self.model_fields_set:
            raise ValueError("no limit given")
        return self
