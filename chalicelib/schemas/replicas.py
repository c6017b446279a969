"""Bodies of the replica, SEF and client-config routes (docs/legacy-compatibility.md, "Legacy route parity")."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, StrictBool, StrictInt, ValidationInfo, field_validator, model_validator

from components.errors import ValidationError
from components.pool_id import is_valid_az, parse_pool_id

from chalicelib.aws.ec2 import TAG_AGENT, TAG_CLIENT, TAG_LOGICAL_AGENT, TAG_MANAGED_BY, TAG_REPLICA, TAG_STAGE
from chalicelib.schemas.agents import InstanceTypeList, TypeRequirements
from chalicelib.schemas.base import FactReport, InstanceId, Price, Schema, UtcDatetime

MAX_TAGS = 20
# Tags we put on every managed instance (cleanup and the failover find instances by them).
RESERVED_TAG_KEYS = frozenset({TAG_MANAGED_BY, TAG_LOGICAL_AGENT, TAG_REPLICA, TAG_AGENT, TAG_CLIENT, TAG_STAGE, "Name"})
EIP_ALLOCATION_PATTERN = r"^eipalloc-[0-9a-f]{8,17}$"
TARGET_GROUP_ARN_PATTERN = (r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:"
                            r"targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{1,32}$")
_TAG_KEY = re.compile(r"^[\w .:/=+\-@]{1,128}$")
_TAG_VALUE = re.compile(r"^[\w .:/=+\-@]{0,256}$")

PositivePrice = Annotated[Price, Field(gt=0, le=100)]


def _pool_id(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_pool_id(value)
        except ValidationError as exc:
            raise ValueError(exc.message) from None
    return value


class CreateReplicaRequest(Schema):
    """POST /api/agents/{id}/replicas.

    Without ``instance_id`` the server launches the standby; with it, the agent already launched it
    (legacy ``create_replica`` command path) and only the row is written.
    """

    pool_id: str | None = Field(default=None, max_length=128)
    exclude_zones: list[str] = Field(default_factory=list, max_length=20)
    max_hourly_cost: PositivePrice | None = None
    tags: dict[str, str] | None = Field(default=None, max_length=MAX_TAGS)
    instance_id: InstanceId | None = None
    replica_type: Literal["manual"] | None = None
    parent_instance_id: InstanceId | None = None
    status: Literal["launching", "syncing", "ready"] | None = None

    _pool = field_validator("pool_id")(_pool_id)

    @field_validator("exclude_zones")
    @classmethod
    def _zones(cls, zones: list[str]) -> list[str]:
        for zone in zones:
            if not is_valid_az(zone):
                raise ValueError(f"invalid availability zone {zone!r}")
        return zones

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (tags or {}).items():
            if not _TAG_KEY.fullmatch(key) or key.lower().startswith("aws:") or key in RESERVED_TAG_KEYS:
                raise ValueError(f"tag key {key!r} is not allowed (1-128 characters, not aws:*, not one of ours)")
            if not _TAG_VALUE.fullmatch(value):
                raise ValueError(f"tag value of {key!r} is not allowed (at most 256 characters)")
        return tags

    @field_validator("status")
    @classmethod
    def _status_needs_instance(cls, status: str | None, info: ValidationInfo) -> str | None:
        if status not in (None, "launching") and info.data.get("instance_id") is None:
            raise ValueError("a status other than launching needs the instance_id the agent launched")
        return status


class PromoteRequest(Schema):
    """POST .../replicas/{rid}/promote (legacy options; the workflow decides how the old primary ends)."""

    demote_old_primary: StrictBool = True
    wait_for_sync: StrictBool = False


class AttachReplicaRequest(FactReport):
    """PUT .../replicas/{rid}: the agent launched the replica's instance."""

    REQUIRED_FACTS = (("instance_id",),)
    instance_id: InstanceId
    status: Literal["syncing", "ready"] = "syncing"
    launched_at: UtcDatetime | None = None


class ReplicaStatusRequest(FactReport):
    """POST .../replicas/{rid}/status (the fields the legacy server had no columns for are accepted);
    the status is the fact, its timestamps and message are dropped with a warning when unreadable."""

    REQUIRED_FACTS = (("status",),)
    # terminated: the agent terminated the standby's instance (agent-backend.py confirms each row it finds
    # terminated in ``replicas?status=terminated``, as its own termination)
    status: Literal["syncing", "ready", "failed", "terminated"]
    sync_started_at: UtcDatetime | None = None
    sync_completed_at: UtcDatetime | None = None
    error_message: str | None = Field(default=None, max_length=500)


class SyncStatusRequest(FactReport):
    """POST .../replicas/{rid}/sync-status; progress ≥ 100 makes the replica ready."""

    REQUIRED_FACTS = (("sync_status",),)
    sync_status: Literal["initializing", "syncing", "synced", "out-of-sync"]
    sync_latency_ms: StrictInt | None = Field(default=None, ge=0, le=86_400_000)
    state_transfer_progress: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)

    @field_validator("state_transfer_progress", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, (bool, str)):
            raise ValueError("must be a number")
        return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


MAX_TERMINATE_WAIT_S = 86_400


# Fields of the config body: absent = unchanged; ``null`` is only accepted where it clears a value.
class AgentConfigRequest(Schema):
    """POST /api/client/agents/{id}/config: modes (mutually exclusive), auto-terminate, hand-off, thresholds.

    The legacy dashboard's body is accepted too: camelCase keys (``autoSwitchEnabled``,
    ``manualReplicaEnabled``, ``autoTerminateEnabled`` ...) and the wait in minutes
    (``terminateWaitMinutes``, stored as seconds). A key given both ways must agree."""

    enabled: StrictBool = Field(default=None)
    auto_switch_enabled: StrictBool = Field(default=None)
    manual_replica_enabled: StrictBool = Field(default=None)
    auto_terminate_enabled: StrictBool = Field(default=None)
    terminate_wait_seconds: StrictInt = Field(default=None, ge=0, le=MAX_TERMINATE_WAIT_S)
    terminate_wait_minutes: Annotated[Price, Field(ge=0, le=MAX_TERMINATE_WAIT_S / 60)] = Field(
        default=None, validation_alias=AliasChoices("terminate_wait_minutes", "terminateWaitMinutes"))
    handover: Literal["none", "eip", "target-group"] = Field(default=None)
    eip_allocation_id: str | None = Field(default=None, pattern=EIP_ALLOCATION_PATTERN)
    target_group_arn: str | None = Field(default=None, max_length=512, pattern=TARGET_GROUP_ARN_PATTERN)
    target_port: StrictInt | None = Field(default=None, ge=1, le=65_535)
    min_savings_percent: Annotated[Price, Field(ge=0, le=100)] = Field(default=None)
    risk_threshold: Annotated[Price, Field(ge=0, le=1)] = Field(default=None)
    max_switches_per_day: StrictInt = Field(default=None, ge=0, le=100)
    max_switches_per_week: StrictInt = Field(default=None, ge=0, le=700)
    min_pool_duration_hours: Annotated[Price, Field(ge=0, le=720)] = Field(default=None)
    # Interchangeable instance types (``null`` clears): resolved by the route into allowed_instance_types.
    instance_types: InstanceTypeList | None = Field(default=None)
    type_requirements: TypeRequirements | None = Field(default=None)

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data):
        """camelCase keys of the legacy dashboard → the field names (minutes keep their own field)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in cls.model_fields:
            camel = _camel(name)
            if camel == name or camel not in data or name == "terminate_wait_minutes":
                continue
            value = data.pop(camel)
            if name in data and data[name] != value:
                raise ValueError(f"{camel} and {name} disagree")
            data[name] = value
        return data

    @field_validator("manual_replica_enabled")
    @classmethod
    def _exclusive(cls, manual: bool, info: ValidationInfo) -> bool:
        if manual and info.data.get("auto_switch_enabled"):
            raise ValueError("auto_switch_enabled and manual_replica_enabled are mutually exclusive")
        return manual

    @model_validator(mode="after")
    def _something(self):
        if not self.model_fields_set:
            raise ValueError("no setting given")
        if "terminate_wait_minutes" in self.model_fields_set:
            if self.terminate_wait_minutes is None:
                raise ValueError("terminateWaitMinutes must be a number of minutes")
            seconds = round(self.terminate_wait_minutes * 60)
            if "terminate_wait_seconds" in self.model_fields_set and self.terminate_wait_seconds != seconds:
                raise ValueError("terminateWaitMinutes and terminate_wait_seconds disagree")
            self.terminate_wait_seconds = seconds
        return self

    def changes(self) -> dict:
        """Only the fields the body named (``None`` = clear, for the nullable hand-off fields); a wait given
        in minutes is returned in seconds."""
        return self.model_dump(exclude_unset=True, exclude={"terminate_wait_minutes"})
