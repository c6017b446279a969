"""The one place a pool id (``<instance_type>.<az>``) is built and parsed.

A spot pool is an instance type in one availability zone; prices, risk and
switch targets are all keyed by it, so every caller must agree on the format.

Examples
--------
>>> make_pool_id("m5.large", "us-east-1a")
'm5.large.us-east-1a'
>>> parse_pool_id("m5.large.us-east-1a")
('m5.large', 'us-east-1a')
>>> region_of_az("us-west-2-lax-1a")
'us-west-2'
"""

from __future__ import annotations

import re

from components.errors import InvalidPoolIdError

__all__ = [
    "is_valid_az",
    "is_valid_instance_type",
    "make_pool_id",
    "parse_pool_id",
    "region_of_az",
]

_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")
# us-east-1a, eu-west-1c, local zones such as us-west-2-lax-1a.
_AZ = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-[0-9]+[a-z]")
# Shortest prefix ending in "-<digits>" that is followed by the zone letter or a
# local-zone suffix: us-east-1a -> us-east-1, us-west-2-lax-1a -> us-west-2.
_REGION_PREFIX = re.compile(r"[a-z]{2}(?:-[a-z0-9]+)*?-[0-9]+(?=[a-z]$|-)")


def is_valid_instance_type(value: object) -> bool:
    """True for EC2 instance type names such as ``m5.large`` or ``u-6tb1.metal``."""
    return isinstance(value, str) and bool(_INSTANCE_TYPE.fullmatch(value))


def is_valid_az(value: object) -> bool:
    """True for availability zone names, local zones included."""
    return isinstance(value, str) and bool(_AZ.fullmatch(value))


def make_pool_id(instance_type: str, az: str) -> str:
    """Build a pool id after checking both halves.

    Raises
    ------
    InvalidPoolIdError
        If either part is malformed (``field`` names which one).

    Examples
    --------
    >>> make_pool_id("p3.2xlarge", "eu-west-1c")
    'p3.2xlarge.eu-west-1c'
    """
    if not is_valid_instance_type(instance_type):
        raise InvalidPoolIdError(f"invalid instance type {instance_type!r}", "instance_type")
    if not is_valid_az(az):
        raise InvalidPoolIdError(f"invalid availability zone {az!r}", "az")
    return f"{instance_type}.{az}"


def parse_pool_id(pool_id: str) -> tuple[str, str]:
    """Split a pool id into ``(instance_type, az)``.

    The AZ never contains a dot, so the split is on the *last* dot.

    Raises
    ------
    InvalidPoolIdError
        If the id is not ``<instance_type>.<az>``.

    Examples
    --------
    >>> parse_pool_id("u-6tb1.metal.us-east-1a")
    ('u-6tb1.metal', 'us-east-1a')
    """
    if not isinstance(pool_id, str) or "." not in pool_id:
        raise InvalidPoolIdError(f"invalid pool id {pool_id!r}", "pool_id")
    instance_type, az = pool_id.rsplit(".", 1)
    if not (is_valid_instance_type(instance_type) and is_valid_az(az)):
        raise InvalidPoolIdError(f"invalid pool id {pool_id!r}", "pool_id")
    return instance_type, az


def region_of_az(az: str) -> str:
    """Return the region an availability zone belongs to.

    Examples
    --------
    >>> region_of_az("us-east-1a")
    'us-east-1'
    """
    if not is_valid_az(az):
        raise InvalidPoolIdError(f"invalid availability zone {az!r}", "az")
    match = _REGION_PREFIX.match(az)
    if match is None:  # pragma: no cover - the AZ regex guarantees a prefix
        raise InvalidPoolIdError(f"cannot derive region from {az!r}", "az")
    return match.group(0)
