"""Agent protocol bodies, with the legacy field-name mismatches settled."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, StrictBool, StrictInt, field_validator, model_validator

from components.instance_types import ARCHITECTURES, MAX_INSTANCE_TYPES

from chalicelib.schemas.base import (
    AvailabilityZone,
    INSTANCE_ID_PATTERN,
    FactReport,
    InstanceId,
    InstanceType,
    OnDemandPrice,
    PoolId,
    Price,
    Schema,
    ShortText,
    SpotPrice,
    UtcDatetime,
)

INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)


class TypeRequirements(Schema):
    """What the service needs of an instance type (bounds inclusive), resolved against the catalogue
    (components.instance_types.Requirements; unknown keys are refused, so a typo is not ignored)."""

    model_config = Schema.model_config | {"extra": "forbid"}

    vcpus_min: StrictInt | None = Field(default=None, ge=1, le=1024)
    vcpus_max: StrictInt | None = Field(default=None, ge=1, le=1024)
    memory_gib_min: Price | None = Field(default=None, gt=0, le=32768)
    memory_gib_max: Price | None = Field(default=None, gt=0, le=32768)
    architecture: Literal[ARCHITECTURES] | None = None  # type: ignore[valid-type]
    burstable: StrictBool | None = False
    accelerated: StrictBool | None = False

    @model_validator(mode="after")
    def _bounded(self):
        if self.vcpus_min is None and self.memory_gib_min is None:
            raise ValueError("requirements need vcpus_min or memory_gib_min")
        for name in ("vcpus", "memory_gib"):
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if low is not None and high is not None and low > high:
                raise ValueError(f"{name}_min is above {name}_max")
        return self


InstanceTypeList = Annotated[list[InstanceType], Field(min_length=1, max_length=MAX_INSTANCE_TYPES)]


class RegisterRequest(Schema):
    """POST /api/agents/register. ``instance_types`` / ``requirements`` (optional) declare the types the
    agent can run on besides its own; absent = a stored declaration is kept (the agent's own type only
    for a new agent)."""

    instance_id: InstanceId
    instance_type: ShortText
    region: ShortText
    az: ShortText
    logical_agent_id: str | None = Field(default=None, max_length=128)
    hostname: str | None = Field(default=None, max_length=255)
    ami_id: str | None = Field(default=None, max_length=64)
    # spot_agent.py (the pre-v4 "Agent v4.0") names it ``version``. Its ``current_mode`` is not read: it calls an
    # instance spot only while IMDS serves spot/instance-action, i.e. once an interruption is scheduled.
    agent_version: str | None = Field(default=None, max_length=64,
                                      validation_alias=AliasChoices("agent_version", "version"))
    mode: str | None = Field(default=None, max_length=32)
    private_ip: str | None = Field(default=None, max_length=64)
    public_ip: str | None = Field(default=None, max_length=64)
    instance_types: InstanceTypeList | None = None
    requirements: TypeRequirements | None = None
    # IMDS /latest/dynamic/instance-identity/document (its JSON text, verbatim) and .../signature.
    identity_document: str | None = Field(default=None, max_length=4096)
    identity_signature: str | None = Field(default=None, max_length=1024)


class HeartbeatRequest(Schema):
    """POST /api/agents/{id}/heartbeat. The v3.2 agent names its instance only as the one entry of
    ``monitored_instances``: that is the heartbeat's ``instance_id`` when none is given (so the agent still
    running on an instance the agent left is told apart from the current one, as v4's is)."""

    status: Literal["online", "offline", "disabled"] = "online"
    instance_id: InstanceId | None = None
    instance_type: str | None = Field(default=None, max_length=64)
    mode: str | None = Field(default=None, max_length=32)
    az: str | None = Field(default=None, max_length=64)
    monitored_instances: list[str] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _v3_instance(self):
        if self.instance_id is None and len(self.monitored_instances) == 1 \
                and INSTANCE_ID.fullmatch(self.monitored_instances[0]):
            self.instance_id = self.monitored_instances[0]
        return self


class ReportedInstance(Schema):
    """The reporting instance; v3.2 names its mode and pool ``current_mode`` / ``current_pool_id``."""

    instance_id: InstanceId | None = None
    instance_type: str | None = Field(default=None, max_length=64)
    region: str | None = Field(default=None, max_length=64)
    az: str | None = Field(default=None, max_length=64)
    mode: str | None = Field(default=None, max_length=32, validation_alias=AliasChoices("mode", "current_mode"))
    pool_id: str | None = Field(default=None, max_length=128,
                                validation_alias=AliasChoices("pool_id", "current_pool_id"))


class ReportedPool(Schema):
    """One spot pool price; ``pool_id`` or (``instance_type``, ``az``) names it."""

    pool_id: PoolId | None = None
    instance_type: InstanceType | None = None
    az: AvailabilityZone | None = None
    price: SpotPrice

    @model_validator(mode="after")
    def _named(self):
        if not self.pool_id and not (self.instance_type and self.az):
            raise ValueError("a pool needs pool_id or instance_type and az")
        return self


class CheapestPool(Schema):
    pool_id: PoolId | None = None
    price: SpotPrice | None = None


class Pricing(Schema):
    on_demand_price: OnDemandPrice | None = None
    current_spot_price: SpotPrice | None = None
    cheapest_pool: CheapestPool | None = None
    spot_pools: list[ReportedPool] = Field(default_factory=list, max_length=200)
    collected_at: UtcDatetime | None = None


class PricingReportRequest(FactReport):
    """POST /api/agents/{id}/pricing-report: the data valve keeps the plausible points and drops (and
    names) the others; a report with none left is still answered 200."""

    instance: ReportedInstance = Field(default_factory=ReportedInstance)
    pricing: Pricing

    @classmethod
    def reshaped(cls, data):
        """v3.2 sends no ``pricing`` block: ``on_demand_price{price}`` and ``spot_pools`` at the top level,
        read as the block they stand for. spot_agent.py sends one flat line (``instance_type, region, az,
        spot_price, ondemand_price, timestamp``): ``_flat``."""
        if not isinstance(data, dict) or "pricing" in data:
            return data
        if not ({"spot_pools", "on_demand_price"} & data.keys()):
            return cls._flat(data) if {"spot_price", "ondemand_price"} & data.keys() else data
        data = dict(data)
        ondemand = data.pop("on_demand_price", None)
        if isinstance(ondemand, dict):
            ondemand = ondemand.get("price")
        data["pricing"] = {"on_demand_price": ondemand, "spot_pools": data.pop("spot_pools", [])}
        return data

    @staticmethod
    def _flat(data: dict) -> dict:
        """spot_agent.py's report read as its own instance's prices, kept in the raw report only: its code sends the
        constants 0.0416 and 0.0832 for any type ("Example price - replace with real data"), so it names no spot
        pool and writes no price point (docs/legacy-compatibility.md)."""
        return {"instance": {key: data[key] for key in ("instance_type", "region", "az") if key in data},
                "pricing": {"current_spot_price": data.get("spot_price"), "on_demand_price": data.get("ondemand_price"),
                            "collected_at": data.get("timestamp")}}


class ExecutedRequest(FactReport):
    """POST /api/agents/{id}/commands/{cmd}/executed: what the agent did (an oversized message is
    dropped, never the result)."""

    REQUIRED_FACTS = (("success",),)
    success: bool
    message: str | None = Field(default=None, max_length=2000)
    # The AWS error code of a failed command (botocore's ClientError.response["Error"]["Code"]), e.g.
    # InsufficientInstanceCapacity: a capacity refusal of the target pool. Malformed → dropped, warned.
    error_code: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


class LegacyExecutedRequest(ExecutedRequest):
    """POST /api/agents/{id}/mark-command-executed (v3.2 agents; the route legacy never had). v3.2 sends only
    ``command_id``: without ``success`` the outcome is inferred (``command_queue.v3_outcome``)."""

    REQUIRED_FACTS = (("success",), ("command_id",))
    command_id: str = Field(min_length=1, max_length=128)
    success: bool | None = None


class SwitchInstance(Schema):
    instance_id: InstanceId | None = None
    instance_type: InstanceType | None = None
    region: str | None = Field(default=None, max_length=64)
    az: AvailabilityZone | None = None
    ami_id: str | None = Field(default=None, max_length=64)
    mode: str | None = Field(default=None, max_length=32)
    pool_id: PoolId | None = None


class NewSwitchInstance(SwitchInstance):
    instance_id: InstanceId


class SwitchPrices(Schema):
    """The agent's ``prices`` block (the legacy server wrongly read ``pricing``; both accepted)."""

    on_demand: OnDemandPrice | None = Field(default=None,
                                            validation_alias=AliasChoices("on_demand", "on_demand_price"))
    old_spot: SpotPrice | None = Field(default=None, validation_alias=AliasChoices("old_spot", "old_spot_price"))
    new_spot: SpotPrice | None = Field(default=None, validation_alias=AliasChoices("new_spot", "new_spot_price"))


class SwitchTiming(Schema):
    """The agent's timing names are canonical; the legacy server's names are accepted too."""

    switch_initiated_at: UtcDatetime | None = Field(
        default=None, validation_alias=AliasChoices("switch_initiated_at", "initiated_at"))
    new_instance_launched_at: UtcDatetime | None = Field(
        default=None, validation_alias=AliasChoices("new_instance_launched_at", "instance_launched_at"))
    new_instance_ready_at: UtcDatetime | None = Field(
        default=None, validation_alias=AliasChoices("new_instance_ready_at", "instance_ready_at"))
    traffic_switched_at: UtcDatetime | None = None
    old_instance_terminated_at: UtcDatetime | None = Field(
        default=None, validation_alias=AliasChoices("old_instance_terminated_at", "old_terminated_at"))


class SwitchSnapshot(Schema):
    used: bool = False


class SwitchReportRequest(FactReport):
    """POST /api/agents/{id}/switch-report: the switch already happened in AWS, so only a report that
    does not say which instance the agent is on now is refused."""

    REQUIRED_FACTS = (("new_instance", "instance_id"), ("success",))
    old_instance: SwitchInstance = Field(default_factory=SwitchInstance)
    new_instance: NewSwitchInstance
    snapshot: SwitchSnapshot = Field(default_factory=SwitchSnapshot)
    prices: SwitchPrices = Field(default_factory=SwitchPrices,
                                 validation_alias=AliasChoices("prices", "pricing"))
    timing: SwitchTiming = Field(default_factory=SwitchTiming)
    trigger: Literal["manual", "model", "auto_switch", "emergency", "ml_recommendation"] = "manual"
    command_id: str | None = Field(default=None, max_length=128)
    success: bool = True


class TerminationRequest(FactReport):
    """POST /api/agents/{id}/termination (an ``instance_id`` that is given must be readable)."""

    REQUIRED_FACTS = (("instance_id",),)
    instance_id: InstanceId | None = None
    reason: str | None = Field(default=None, max_length=500)
    termination_time: UtcDatetime | None = None


class CleanupFailure(Schema):
    """One resource the agent failed to delete: v4 sends ``{"id", "error"}`` (the error's text cut to 500)."""

    id: str | None = Field(default=None, max_length=128)
    error: str | None = None

    @field_validator("error", mode="before")
    @classmethod
    def _cut(cls, value):
        return value[:500] if isinstance(value, str) else value


CleanupFailures = list[str | CleanupFailure]


class CleanupSnapshots(Schema):
    deleted: list[str] = Field(default_factory=list, max_length=1000)
    failed: CleanupFailures = Field(default_factory=list, max_length=1000)
    cutoff_date: str | None = Field(default=None, max_length=64)


class CleanupAmis(Schema):
    deleted_amis: list[str] = Field(default_factory=list, max_length=1000)
    deleted_snapshots: list[str] = Field(default_factory=list, max_length=1000)
    failed: CleanupFailures = Field(default_factory=list, max_length=1000)
    cutoff_date: str | None = Field(default=None, max_length=64)


class CleanupReportRequest(FactReport):
    """POST /api/agents/{id}/cleanup-report."""

    timestamp: UtcDatetime | None = None
    snapshots: CleanupSnapshots = Field(default_factory=CleanupSnapshots)
    amis: CleanupAmis = Field(default_factory=CleanupAmis)
