"""Shared schema base and field types."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"


def _not_bool(value: object) -> object:
    """JSON ``true`` is not a price (pydantic would read it as 1.0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
InstanceId = Annotated[str, Field(pattern=INSTANCE_ID_PATTERN)]
ShortText = Annotated[str, Field(min_length=1, max_length=255)]
Price = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


class Schema(BaseModel):
    """Lenient about unknown fields (legacy agents send extras), strict about the known ones."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
