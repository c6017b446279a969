"""Shared schema base and field types."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from components.data_valve import validate_ondemand_price, validate_spot_price
from components.errors import ValidationError as DomainValidationError
from components.pool_id import is_valid_az, is_valid_instance_type, parse_pool_id

INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"


def _not_bool(value: object) -> object:
    """JSON ``true`` is not a price (pydantic would read it as 1.0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


# Timestamps a client may send: anything outside is a typo or an attack, and near datetime's own limits
# (year 1 / 9999) adding a lease or a retention period overflows.
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST_TIMESTAMP = datetime(2100, 1, 1, tzinfo=timezone.utc)


def _utc(value: datetime) -> datetime:
    try:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("timestamp out of range") from None
    if not EARLIEST_TIMESTAMP <= value < LATEST_TIMESTAMP:
        raise ValueError(f"timestamp must be from {EARLIEST_TIMESTAMP.year} to {LATEST_TIMESTAMP.year - 1} (UTC)")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
InstanceId = Annotated[str, Field(pattern=INSTANCE_ID_PATTERN)]
ShortText = Annotated[str, Field(min_length=1, max_length=255)]
Price = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


def _domain_check(check):
    """A components validator as a pydantic one (its message becomes the field's error)."""
    def _validate(value):
        try:
            check(value)
        except DomainValidationError as exc:
            raise ValueError(getattr(exc, "message", None) or str(exc)) from None
        return value
    return AfterValidator(_validate)


def _shaped(predicate, what: str):
    """A components shape predicate (``is_valid_az`` ...) as a pydantic validator."""
    def _validate(value):
        if not predicate(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value
    return AfterValidator(_validate)


# Plausible values (the data valve's ranges, components.pool_id's shapes): one definition each.
SpotPrice = Annotated[Price, _domain_check(validate_spot_price)]
OnDemandPrice = Annotated[Price, _domain_check(validate_ondemand_price)]
InstanceType = Annotated[str, Field(max_length=64), _shaped(is_valid_instance_type, "instance type")]
AvailabilityZone = Annotated[str, Field(max_length=64), _shaped(is_valid_az, "availability zone")]
PoolId = Annotated[str, Field(max_length=128), _domain_check(parse_pool_id)]


class Schema(BaseModel):
    """Lenient about unknown fields (legacy agents send extras), strict about the known ones."""

    # defer_build: a model's validator is built when it first validates, not when its module is imported
    # (building all of them cost ~100 ms of every cold start; a function validates only a few).
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, defer_build=True)


_MAX_DROPS = 20


class FactReport(Schema):
    """The body of a report of something that already happened (a switch, a termination, a cleanup,
    a command's result, a replica's status).

    Refusing such a report would not undo the event, only lose its record. So a secondary field that
    is malformed or implausible is dropped (stored as unknown) and named in ``warnings``, and a list
    element is dropped whole. Only the paths in ``REQUIRED_FACTS``, which tie the report to its agent
    and instance, can make it fail with 400.
    """

    REQUIRED_FACTS: ClassVar[tuple[tuple[str, ...], ...]] = ()
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What was dropped, as ``path: reason (value)`` lines."""
        return list(self._warnings)

    @classmethod
    def reshaped(cls, data: Any) -> Any:
        """An older agent's shape of the same report in this schema's names (before any drop, so the warnings
        name this schema's fields); the body as it is by default."""
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _keep_what_is_plausible(cls, data: Any, handler):
        warnings: list[str] = []
        data = cls.reshaped(data)
        for _ in range(_MAX_DROPS):
            try:
                report = handler(data)
            except ValidationError as exc:
                if not isinstance(data, dict):
                    raise
                data, dropped = _without_invalid(data, exc.errors(), cls.REQUIRED_FACTS)
                if not dropped:
                    raise
                warnings.extend(dropped)
                continue
            report._warnings = warnings
            return report
        return handler(data)  # still invalid after every drop: the last error stands


def _without_invalid(data: dict, errors: list[dict], required) -> tuple[dict, list[str]]:
    """A copy of ``data`` without the values the errors point at (the whole element for a list
    item); errors on required paths and on missing fields drop nothing."""
    data = copy.deepcopy(data)
    targets: dict[tuple, str] = {}
    for error in errors:
        loc = tuple(error.get("loc") or ())
        if not loc or error.get("type") == "missing":
            continue
        if any(loc[:len(r)] == r or r[:len(loc)] == loc for r in required):
            continue
        cut = max((i for i, part in enumerate(loc) if isinstance(part, int)), default=len(loc) - 1)
        target = _existing_prefix(data, loc[:cut + 1])
        if target and not any(r[:len(target)] == target for r in required):
            targets.setdefault(target, f"{'.'.join(map(str, loc))}: {error.get('msg')} "
                                       f"({_short(error.get('input'))}); dropped")
    # A target inside another one goes with it. Its prefixes are looked up, not every other target compared
    # (that was quadratic: a 15 KB cleanup report of 5,000 bad ids cost seconds of CPU).
    kept = [t for t in targets if not any(t[:n] in targets for n in range(1, len(t)))]
    for target in sorted(kept, key=lambda t: [(1, p) if isinstance(p, int) else (0, str(p)) for p in t],
                         reverse=True):
        parent = data
        for part in target[:-1]:
            parent = parent[part]
        del parent[target[-1]]
    return data, [targets[t] for t in kept]


def _existing_prefix(data, loc: tuple) -> tuple:
    """The longest prefix of ``loc`` that names a value present in ``data``."""
    node, path = data, []
    for part in loc:
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) \
                and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        else:
            break
    return tuple(path)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
