"""Where the price report's numbers come from.

A *price source* is any callable ``(instance_type, region) -> (pools, ondemand)`` where ``pools`` is
a list of ``{"pool_id", "instance_type", "az", "price"}`` (the latest spot price per AZ) and
``ondemand`` the on-demand $/h or None. It is injectable because the demo replays recorded prices
through real agents; ``SPOT_AGENT_PRICE_SOURCE=module:callable`` does the same for the daemon.

The default asks EC2 (``DescribeSpotPriceHistory``, one call for every AZ instead of the legacy
agent's one call per AZ) and the Pricing API; boto3 honours ``AWS_ENDPOINT_URL``, so it runs
against moto in tests and local mode.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, List, Optional, Tuple

log = logging.getLogger("spot_agent.pricing")

PoolPrices = List[dict]
PriceSource = Callable[[str, str], Tuple[PoolPrices, Optional[float]]]

# The legacy agent's order: VPC product first, then the classic one.
PRODUCTS = ("Linux/UNIX (Amazon VPC)", "Linux/UNIX")
ONDEMAND_CACHE_S = 3600.0


def _boto_config():
    from botocore.config import Config

    return Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})


class Boto3PriceSource:
    """The default price source: EC2 spot price history + on-demand price (config, else Pricing API).

    The on-demand price is best-effort: the Pricing API needs ``pricing:GetProducts`` and only lives
    in a few regions, so a failure yields None (the server then uses its own baseline) rather than
    the legacy agent's invented "3 × average spot" figure.
    """

    def __init__(self, *, ondemand_price: float | None = None, ec2: Any = None, pricing: Any = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.ondemand_price = ondemand_price
        self._ec2, self._pricing = ec2, pricing
        self._monotonic = monotonic
        self._ondemand_cache: dict[tuple[str, str], tuple[float, float | None]] = {}

    def __call__(self, instance_type: str, region: str) -> tuple[PoolPrices, float | None]:
        return self.spot_pools(instance_type, region), self.ondemand(instance_type, region)

    def _ec2_client(self, region: str):
        if self._ec2 is None:
            import boto3

            self._ec2 = boto3.client("ec2", region_name=region, config=_boto_config())
        return self._ec2

    def spot_pools(self, instance_type: str, region: str) -> PoolPrices:
        """The latest spot price of ``instance_type`` in each AZ of the region (empty if none)."""
        ec2 = self._ec2_client(region)
        now = datetime.now(timezone.utc)
        for product in PRODUCTS:
            latest: dict[str, tuple[Any, float]] = {}
            paginator = ec2.get_paginator("describe_spot_price_history")
            # StartTime=now: AWS answers the price in effect now for each AZ.
            for page in paginator.paginate(InstanceTypes=[instance_type], ProductDescriptions=[product],
                                           StartTime=now, PaginationConfig={"MaxItems": 500}):
                for item in page.get("SpotPriceHistory", []):
                    if item.get("ProductDescription", product) != product:
                        continue
                    az, ts = item["AvailabilityZone"], item.get("Timestamp")
                    if az not in latest or (ts is not None and ts > latest[az][0]):
                        latest[az] = (ts, float(item["SpotPrice"]))
            if latest:
                return [{"pool_id": f"{instance_type}.{az}", "instance_type": instance_type, "az": az,
                         "price": price} for az, (_, price) in sorted(latest.items())]
        return []

    def ondemand(self, instance_type: str, region: str) -> float | None:
        """Config value, else the Pricing API (cached an hour, failures included), else None."""
        if self.ondemand_price is not None:
            return self.ondemand_price
        key = (instance_type, region)
        cached = self._ondemand_cache.get(key)
        if cached and self._monotonic() - cached[0] < ONDEMAND_CACHE_S:
            return cached[1]
        try:
            price = self._lookup_ondemand(instance_type, region)
        except Exception as exc:  # noqa: BLE001 - best-effort by design (permissions, region, network)
            log.warning("on-demand price lookup failed for %s in %s: %s", instance_type, region, exc)
            price = None
        self._ondemand_cache[key] = (self._monotonic(), price)
        return price

    def _lookup_ondemand(self, instance_type: str, region: str) -> float | None:
        if self._pricing is None:
            import boto3

            # The Pricing API has no endpoint in most regions; us-east-1 serves every region's prices.
            self._pricing = boto3.client("pricing", region_name="us-east-1", config=_boto_config())
        filters = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
                   "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
        reply = self._pricing.get_products(
            ServiceCode="AmazonEC2", MaxResults=10,
            Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()])
        for raw in reply.get("PriceList", []):
            product = json.loads(raw) if isinstance(raw, str) else raw
            for term in product.get("terms", {}).get("OnDemand", {}).values():
                for dim in term.get("priceDimensions", {}).values():
                    usd = float(dim.get("pricePerUnit", {}).get("USD", 0) or 0)
                    if usd > 0:
                        return usd
        return None


def load_price_source(spec: str) -> PriceSource:
    """``"package.module:callable"`` → the callable (a factory is called once if it takes no args)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"price source must look like 'module:callable', got {spec!r}")
    target = getattr(importlib.import_module(module_name), attr)
    if isinstance(target, type):
        target = target()
    if not callable(target):
        raise ValueError(f"price source {spec!r} is not callable")
    return target
