"""Shared schema base and field types."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
InstanceId = Annotated[str, Field(pattern=INSTANCE_ID_PATTERN)]
ShortText = Annotated[str, Field(min_length=1, max_length=255)]
Price = Annotated[float, Field(allow_inf_nan=False)]


class Schema(BaseModel):
    """Lenient about unknown fields (legacy agents send extras), strict about the known ones."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
