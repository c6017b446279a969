"""Which pools of an agent's pricing report may enter the market data (issue #12, "market data nobody
can poison").

An agent speaks only for what it runs: pools of its own region and of the instance types it may run on
(``AgentRecord.runnable_types``: its own and its declared interchangeable ones), in a standard zone of
that region (``components.aws_regions``) that AWS lists for the account (DescribeAvailabilityZones,
cached per container), of a type the catalogue lists. When AWS cannot be asked, or the type is not in the
catalogue, only pools the market data already knows are taken: a report never creates a pool AWS does not
know. The other pools are dropped and named in the report's
``warnings`` (the report is a fact: its plausible part still counts). The prices it leaves in are
visible to the reporting client's decisions only (``repositories.pools``).
"""

from __future__ import annotations

import time

from components.aws_regions import is_known_region, is_zone_of_region
from components.pool_id import parse_pool_id

from chalicelib import catalogue
from chalicelib.aws import ec2
from chalicelib.observability import logger
from chalicelib.repositories import pools

ZONES_TTL_S = 6 * 3600
_zones: dict[str, tuple[float, frozenset[str]]] = {}


def observed_zones(region: str) -> frozenset[str] | None:
    """The region's availability zones as AWS lists them (cached per container); None when AWS fails."""
    cached = _zones.get(region)
    if cached and time.monotonic() - cached[0] < ZONES_TTL_S:
        return cached[1]
    try:
        zones = frozenset(ec2.availability_zones(region))
    except ec2.Ec2Error as exc:
        logger.warning("availability zones unknown", extra={"region": region, "error": str(exc)})
        return None
    _zones[region] = (time.monotonic(), zones)
    return zones


def catalogued(instance_type: str) -> bool:
    """An instance type AWS offers, as far as the shipped catalogue knows (data/catalogue)."""
    return instance_type in catalogue.catalogue()


def screen(pool_ids: list[str], agent) -> tuple[list[str], list[str]]:
    """The pool ids the agent may report, in order, and one warning per dropped pool.

    A pool of a type the catalogue lacks is taken only when the market data knows it already (the spot-prices job
    priced it: a type newer than the catalogue): an agent's type and its declared interchangeable ones are the
    client's word (well-formed names only), and the pools table is shared, has no TTL and is what the batch jobs
    scan, so made-up types must not add rows to it."""
    region, types = agent.region or "", set(agent.runnable_types)
    kept, warnings = [], []
    for pool_id in pool_ids:
        instance_type, az = parse_pool_id(pool_id)
        if instance_type not in types:
            warnings.append(f"pricing.spot_pools: {pool_id} is not one of the agent's instance types; dropped")
        elif not is_zone_of_region(az, region):
            warnings.append(f"pricing.spot_pools: {pool_id} is not in an availability zone of the agent's "
                            f"region {region!r}; dropped")
        else:
            kept.append(pool_id)
    if not kept:
        return kept, warnings
    zones = observed_zones(region) if is_known_region(region) else None
    uncatalogued = [p for p in kept if not catalogued(parse_pool_id(p)[0])]
    # the market data's word on the pools AWS could not vouch for: all of them, or only the uncatalogued ones
    asked = kept if zones is None else uncatalogued
    known = pools.latest_prices(asked) if asked else {}
    if zones is None:
        unknown = [p for p in kept if p not in known]
    else:
        unknown = [p for p in kept if parse_pool_id(p)[1] not in zones or (p in uncatalogued and p not in known)]
    warnings += [f"pricing.spot_pools: {p} is not a pool AWS lists for {region}; dropped" for p in unknown]
    return [p for p in kept if p not in unknown], warnings
