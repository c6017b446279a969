"""The replayed world: real p3.2xlarge availability and spot prices in 9 AZs, read at replay time.

The trace (``data/availability``, 195-s ticks) says, for every pool, whether spot capacity
could be obtained and at what price. The demo turns that into what AWS would do: a pool that becomes
unavailable under a running instance interrupts it (two-minute warning), and a spot launch into an
unavailable pool fails with InsufficientInstanceCapacity.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from ml import traces

INSTANCE_TYPE = "p3.2xlarge"


@dataclass
class TraceWorld:
    """Availability and prices of every pool of the trace, looked up by time."""

    trace: traces.Trace

    @classmethod
    def load(cls) -> "TraceWorld":
        return cls(traces.p3_9az())

    @property
    def zones(self) -> list[str]:
        return list(self.trace.pools)

    @property
    def ondemand_price(self) -> float:
        return float(self.trace.ondemand_price)

    def region_of(self, az: str) -> str:
        return az[:-1]

    def pool_id(self, az: str) -> str:
        return f"{INSTANCE_TYPE}.{az}"

    def _tick(self, when: datetime) -> int:
        return max(0, bisect.bisect_right(self.trace.times, when) - 1)

    def available(self, az: str, when: datetime) -> bool:
        return bool(self.trace.available[self._tick(when), self.trace.pools.index(az)])

    def lost_between(self, az: str, start: datetime, end: datetime) -> bool:
        """True when the pool had no capacity at any trace tick in [start, end) (never for an AZ outside it)."""
        if az not in self.trace.pools:
            return False
        col = self.trace.pools.index(az)
        first, last = self._tick(start), max(self._tick(end - timedelta(microseconds=1)), self._tick(start))
        return bool((self.trace.available[first:last + 1, col] == 0).any())

    def price(self, az: str, when: datetime) -> float | None:
        value = float(self.trace.prices[self._tick(when), self.trace.pools.index(az)])
        return None if math.isnan(value) else round(value, 4)

    def region_prices(self, region: str, when: datetime) -> list[dict]:
        """What DescribeSpotPriceHistory would answer for the type in a region at ``when``."""
        return [{"pool_id": self.pool_id(az), "instance_type": INSTANCE_TYPE, "az": az, "price": p}
                for az in self.zones if self.region_of(az) == region and (p := self.price(az, when)) is not None]

    def default_week(self) -> datetime:
        """Start of the default replay window: the trace's second week (busy, every pool moving)."""
        return self.trace.times[0] + timedelta(days=7)
