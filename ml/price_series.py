"""Readers for the real spot-price traces in ../shared/data (formats documented in SOURCES.md).

A spot price holds for its pool until the pool's next record, so each pool is a step function.
"""

from __future__ import annotations

import bisect
import csv
import gzip
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"  # ../shared/data beside the repo
EU_WEST_1_PRICES = DATA / "spot" / "eu-west-1_spot_linux_2021-12_2022-06.csv.gz"
ONDEMAND_US_EAST_1 = DATA / "spot" / "ondemand_us-east-1_linux_2022-06-28.csv"


def parse_ts(text: str) -> datetime:
    """ISO-8601 with a trailing Z (or an offset) → aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class PriceSeries:
    """One pool's price as a step function of time."""

    times: list[datetime] = field(default_factory=list)
    prices: list[Decimal] = field(default_factory=list)

    def at(self, when: datetime) -> Decimal | None:
        """The price in force at ``when`` (None before the first record)."""
        i = bisect.bisect_right(self.times, when) - 1
        return self.prices[i] if i >= 0 else None


def load_spot_prices(path: Path, instance_types: set[str]) -> dict[tuple[str, str], PriceSeries]:
    """(instance type, AZ) → price series, from a long-format price file."""
    series: dict[tuple[str, str], PriceSeries] = defaultdict(PriceSeries)
    with gzip.open(path, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["instance_type"] in instance_types:
                s = series[(row["instance_type"], row["availability_zone"])]
                s.times.append(parse_ts(row["timestamp"]))
                s.prices.append(Decimal(row["spot_price"]))
    return dict(series)


def load_ondemand(path: Path) -> dict[str, Decimal]:
    """Instance type → on-demand $/h (Linux, shared tenancy)."""
    with open(path, newline="") as handle:
        return {row["instance_type"]: Decimal(row["od_price_usd_per_hr"]) for row in csv.DictReader(handle)}
