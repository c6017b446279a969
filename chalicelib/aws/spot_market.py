"""EC2 market data: spot price history and spot placement scores (the scheduled market-data jobs).

Prices: ``DescribeSpotPriceHistory`` (paginated). With a ``StartTime`` AWS answers every price change in
[StartTime, now] *and* the last change before StartTime, i.e. the price in effect at StartTime, so every
fetch carries the current price of every AZ that offers the type, however long ago it last changed.

Placement scores: ``GetSpotPlacementScores`` behind the :class:`PlacementScores` port, with an AWS
implementation and a static one (a dict or a JSON file) for local mode and tests.

Every AWS error of a call leaves as :class:`MarketDataError` (throttling/5xx/network as the
``TransientAwsError`` of ``chalicelib.aws.ec2``, which subclasses it too); "this endpoint does not
implement the action" (moto, a partition without the feature) is not an error: no scores.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError
from components.errors import InvalidPoolIdError
from components.pool_id import parse_pool_id, region_of_az

from chalicelib.aws.ec2 import Ec2Error, TransientAwsError, _client, _map_error

log = logging.getLogger(__name__)

# The agent's products (agent/spot_agent/pricing.py), VPC first: the same price today, two labels.
LINUX_PRODUCTS = ("Linux/UNIX (Amazon VPC)", "Linux/UNIX")
_UNSUPPORTED_CODES = frozenset({"UnsupportedOperation", "InvalidAction", "NotImplemented",
                                "UnknownOperationException", "OptInRequired"})
LIMIT_CODES = frozenset({"MaxConfigLimitExceeded", "MaxConfigLimitExceededException"})

MarketDataError = Ec2Error


class PlacementLimitReached(Ec2Error):
    """AWS refuses new placement-score configurations for now (``MaxConfigLimitExceeded``)."""


@dataclass(frozen=True)
class SpotPriceRecord:
    """One item of DescribeSpotPriceHistory: the price of (type, AZ, product) from ``ts`` on."""

    instance_type: str
    az: str
    product: str
    price: Decimal | None  # None when AWS sent something that is not a number
    ts: datetime  # tz-aware UTC


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _price(text) -> Decimal | None:
    try:
        return Decimal(str(text))
    except (InvalidOperation, ValueError):
        return None


def spot_price_history(region: str, instance_types: Iterable[str], start: datetime,
                       products: Iterable[str] = LINUX_PRODUCTS) -> list[SpotPriceRecord]:
    """Every price change of ``instance_types`` in ``region`` since ``start`` (plus the one in effect at
    ``start``), all pages. Raises MarketDataError (TransientAwsError for throttling/5xx/network)."""
    types, wanted = sorted(set(instance_types)), list(dict.fromkeys(products))
    records: list[SpotPriceRecord] = []
    try:
        pages = _client("ec2", region).get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=types, ProductDescriptions=wanted, StartTime=start)
        for page in pages:
            for item in page.get("SpotPriceHistory", []):
                if not item.get("AvailabilityZone") or item.get("Timestamp") is None:
                    continue
                records.append(SpotPriceRecord(
                    instance_type=item.get("InstanceType", ""), az=item["AvailabilityZone"],
                    product=item.get("ProductDescription", ""), price=_price(item.get("SpotPrice")),
                    ts=_utc(item["Timestamp"])))
    except (ClientError, BotoCoreError) as exc:
        raise _map_error(exc, "DescribeSpotPriceHistory") from exc
    return records


@cache
def _zone_names(region: str) -> dict[str, str]:
    try:
        zones = _client("ec2", region).describe_availability_zones(AllAvailabilityZones=True)
    except (ClientError, BotoCoreError) as exc:
        raise _map_error(exc, "DescribeAvailabilityZones") from exc
    return {z["ZoneId"]: z["ZoneName"] for z in zones.get("AvailabilityZones", [])
            if z.get("ZoneId") and z.get("ZoneName")}


def zone_name(region: str, zone_id: str) -> str | None:
    """``use1-az1`` → ``us-east-1c`` for this account (zone names are shuffled per account; ids are
    not). DescribeAvailabilityZones once per region and container; None for an id it does not list."""
    names = _zone_names(region)
    if zone_id not in names:
        _zone_names.cache_clear()  # a zone opted in since: ask once more
        names = _zone_names(region)
    return names.get(zone_id)


class PlacementScores(Protocol):
    """Port: spot placement scores of one instance type in one region, per AZ."""

    def scores(self, region: str, instance_type: str) -> dict[str, int]:
        """AZ name → score 1..10 (empty when nothing is known). Raises PlacementLimitReached when
        AWS refuses the configuration, MarketDataError on other failures."""
        ...


class AwsPlacementScores:
    """``GetSpotPlacementScores`` for one type, one instance, single-AZ, one region.

    Limits (Amazon EC2 User Guide, "Spot placement score" → Limitations,
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-placement-score.html):

    * *Request configurations limit*: AWS "can limit the number of new request configurations within a
      24-hour period"; once reached, configurations already used in that period may be retried but no
      new one is accepted until the next 24-hour period (error ``MaxConfigLimitExceeded``). AWS
      publishes no number (its own tracker guidance plans for about 10 distinct configurations), so
      the job asks each (region, type) — always the same configuration — at most once per
      ``PLACEMENT_INTERVAL_S`` (6 h) and at most ``PLACEMENT_MAX_PER_RUN`` (10) per run, and stops the
      run and waits 24 h for a configuration AWS refused.
    * *Target capacity limit*: based on the account's recent spot usage; 1 instance stays under it.
    * *Minimum number of instance types*: with fewer than three types AWS returns a low score. We ask
      for the one type the agent runs, so scores are useful relative to each other (AZ against AZ of
      the same type over time), not as absolute probabilities.

    The answer names zones by id (``use1-az1``); they are mapped to this account's zone names with
    DescribeAvailabilityZones (cached). An endpoint that does not implement the action (moto, a
    partition without the feature) yields no scores instead of failing the job.
    """

    def scores(self, region: str, instance_type: str) -> dict[str, int]:
        request = {"InstanceTypes": [instance_type], "TargetCapacity": 1, "SingleAvailabilityZone": True,
                   "RegionNames": [region]}
        found: dict[str, int] = {}
        try:
            pages = _client("ec2", region).get_paginator("get_spot_placement_scores").paginate(**request)
            items = [item for page in pages for item in page.get("SpotPlacementScores", [])]
        except NotImplementedError:  # moto in-process: "action has not been implemented"
            log.warning("GetSpotPlacementScores is not implemented by this endpoint: no scores")
            return {}
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in LIMIT_CODES:
                raise PlacementLimitReached(f"GetSpotPlacementScores: {code}") from exc
            if code in _UNSUPPORTED_CODES or (code == "InternalError" and "not been implemented" in str(exc)):
                log.warning("GetSpotPlacementScores unsupported here (%s): no scores", code)
                return {}
            raise _map_error(exc, "GetSpotPlacementScores") from exc
        except BotoCoreError as exc:
            raise _map_error(exc, "GetSpotPlacementScores") from exc
        for item in items:
            zone = item.get("AvailabilityZoneId")
            score = item.get("Score")
            if not zone or not isinstance(score, int) or not 1 <= score <= 10:
                continue
            name = zone_name(item.get("Region") or region, zone)
            if name:
                found[name] = score
        return found


class StaticPlacementScores:
    """Scores from a dict ``{pool_id: score}`` (``<type>.<az>``): local mode and tests feed it.

    :meth:`from_file` reads the same mapping from a JSON file, re-read when the file changes, so a
    local run can change scores without a restart. Nothing listed → no scores.
    """

    def __init__(self, by_pool: dict[str, int] | None = None, path: str | None = None):
        self._by_pool = dict(by_pool or {})
        self._path = Path(path) if path else None
        self._mtime: float | None = None
        self.calls: list[tuple[str, str]] = []

    @classmethod
    def from_file(cls, path: str) -> StaticPlacementScores:
        return cls(path=path)

    def _load(self) -> dict[str, int]:
        if self._path is None:
            return self._by_pool
        try:
            mtime = self._path.stat().st_mtime
        except OSError:
            return {}
        if mtime != self._mtime:
            self._by_pool = {str(k): int(v) for k, v in json.loads(self._path.read_text()).items()}
            self._mtime = mtime
        return self._by_pool

    def scores(self, region: str, instance_type: str) -> dict[str, int]:
        self.calls.append((region, instance_type))
        found = {}
        for pool_id, score in self._load().items():
            try:
                pool_type, az = parse_pool_id(pool_id)
            except InvalidPoolIdError:
                continue
            if pool_type == instance_type and region_of_az(az) == region:
                found[az] = score
        return found


class NoPlacementScores:
    """Placement scores switched off (``PLACEMENT_SCORES_SOURCE=off``)."""

    def scores(self, region: str, instance_type: str) -> dict[str, int]:
        return {}


__all__ = ["LINUX_PRODUCTS", "AwsPlacementScores", "MarketDataError", "NoPlacementScores",
           "PlacementLimitReached", "PlacementScores", "SpotPriceRecord", "StaticPlacementScores",
           "TransientAwsError", "spot_price_history", "zone_name"]
