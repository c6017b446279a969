"""The AWS regions the product knows, and which availability zone names belong to which region (pure).

A zone the product launches in is ``<region><letter>`` (``eu-west-1a``). Local and Wavelength zones
(``us-west-2-lax-1a``) are not places the product launches, so market data never names them. The
list is AWS's public region list (docs.aws.amazon.com/global-infrastructure/latest/regions/
aws-regions.html, read 2026); a region opened later is added here, the one place it is defined.

>>> is_zone_of_region("eu-west-1a", "eu-west-1")
True
>>> is_zone_of_region("us-east-1-x001-1a", "us-east-1")
False
"""

from __future__ import annotations

import re

__all__ = ["AWS_REGIONS", "is_known_region", "is_zone_of_region"]

AWS_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-central-1", "ca-west-1", "eu-central-1",
    "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3",
    "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1", "us-east-1", "us-east-2",
    "us-west-1", "us-west-2", "us-gov-east-1", "us-gov-west-1", "cn-north-1", "cn-northwest-1",
})

_ZONE_LETTER = re.compile(r"[a-z]")


def is_known_region(region: object) -> bool:
    """True for a region in :data:`AWS_REGIONS`."""
    return isinstance(region, str) and region in AWS_REGIONS


def is_zone_of_region(az: object, region: object) -> bool:
    """True when ``az`` is a standard availability zone (``<region><letter>``) of a known ``region``."""
    return (is_known_region(region) and isinstance(az, str) and az.startswith(region)  # type: ignore[arg-type]
            and bool(_ZONE_LETTER.fullmatch(az[len(region):])))  # type: ignore[arg-type]
