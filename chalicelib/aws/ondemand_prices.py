"""On-demand list prices per region: the AWS Price List Query API (``pricing:GetProducts``).

The packaged catalogue (``data/catalogue``) carries us-east-1's list price of each type, which is several
percent off elsewhere (p3.2xlarge: 3.06 $/h in us-east-1, 3.305 in eu-west-1), and both the decisions (spot
against on-demand) and the savings baseline compare with it. The spot-prices job asks this port for the
regions and types in use, once a day each, and stores the answer (``repositories.market``).

:class:`OnDemandPrices` has an AWS implementation and a static one (a dict or a JSON file) for local mode and
tests. Every AWS error leaves as ``MarketDataError``; an endpoint without the API (moto answers 404 "Not yet
implemented") is not an error: no price, the catalogue's stays.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws.ec2 import _client, _map_error

# The Price List Query API has endpoints in us-east-1 (and two other regions); it prices every region.
PRICING_ENDPOINT_REGION = "us-east-1"
# Linux, shared tenancy, no pre-installed software, the ordinary (not reservation-capacity) usage.
_FILTERS = (("operatingSystem", "Linux"), ("tenancy", "Shared"), ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"), ("licenseModel", "No License required"))
_NOT_OFFERED = frozenset({"404", "UnsupportedOperation", "InvalidAction", "NotImplemented",
                          "UnknownOperationException"})


class OnDemandPrices(Protocol):
    """The on-demand list price ($/h, Linux) of a type in a region; None when unknown there."""

    def list_price(self, region: str, instance_type: str) -> Decimal | None: ...


def _positive(value) -> Decimal | None:
    try:
        price = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return price if price.is_finite() and price > 0 else None


def price_of_products(price_list: list[str]) -> Decimal | None:
    """The hourly USD on-demand price in a GetProducts answer (each item a JSON document); the lowest when AWS
    lists more than one matching product, None when none carries a positive one."""
    found = []
    for document in price_list:
        try:
            terms = json.loads(document).get("terms", {}).get("OnDemand", {})
        except (ValueError, AttributeError):
            continue
        for term in terms.values() if isinstance(terms, dict) else ():
            dimensions = term.get("priceDimensions") if isinstance(term, dict) else None
            for dimension in dimensions.values() if isinstance(dimensions, dict) else ():
                per_unit = dimension.get("pricePerUnit") if isinstance(dimension, dict) else None
                if isinstance(per_unit, dict) and dimension.get("unit") in ("Hrs", "Hours"):
                    price = _positive(per_unit.get("USD"))
                    if price is not None:
                        found.append(price)
    return min(found) if found else None


class AwsOnDemandPrices:
    """``pricing:GetProducts`` for AmazonEC2, filtered to one type in one region (one call, a few products)."""

    def list_price(self, region: str, instance_type: str) -> Decimal | None:
        filters = [{"Type": "TERM_MATCH", "Field": field, "Value": value}
                   for field, value in (("instanceType", instance_type), ("regionCode", region), *_FILTERS)]
        try:
            answer = _client("pricing", PRICING_ENDPOINT_REGION).get_products(
                ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1", MaxResults=20)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_OFFERED:
                return None
            raise _map_error(exc, "GetProducts") from exc
        except BotoCoreError as exc:
            raise _map_error(exc, "GetProducts") from exc
        return price_of_products(answer.get("PriceList") or [])


class StaticOnDemandPrices:
    """Prices from a dict ``{region: {type: price}}`` or a JSON file of that shape (local mode, tests)."""

    def __init__(self, by_region: dict[str, dict[str, float]] | None = None, path: str | None = None):
        self._given, self._path = by_region, path

    def list_price(self, region: str, instance_type: str) -> Decimal | None:
        prices = self._given if self._given is not None else json.loads(Path(self._path or "").read_text())
        return _positive((prices.get(region) or {}).get(instance_type))
