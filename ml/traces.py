"""Datasets for the backtest and the risk model: availability + prices per pool on one tick grid.

Formats (documented for users in docs/benchmarks.md):

- availability: CSV (optionally gzip), first column ``ts`` (UTC, ``YYYY-MM-DD HH:MM:SS`` or
  ISO-8601), then one 0/1 column per pool; 1 = a spot instance could be obtained at that tick.
- prices, wide: the same shape with $/h per pool per tick.
- prices, long: ``timestamp,availability_zone,instance_type,spot_price`` (a price holds until the
  pool's next row), as in data/spot.
- on-demand table: ``instance_type,od_price_usd_per_hr``.
- Spot Advisor (flat): ``region,os,instance_type,...,interruption_bucket,...``.

Without an availability file, availability is drawn from a documented hazard model
(:func:`synthetic_availability`) with a fixed seed, and the trace says it is synthetic.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from components.pool_id import region_of_az
from components.risk_model.prior import ADVISOR_BAND_MONTHLY_RATE, DEFAULT_ADVISOR_BAND

DATA = Path(__file__).resolve().parent.parent / "data"  # the repository's data/ (sources: data/SOURCES.md)
P3_9AZ_AVAILABILITY = DATA / "availability" / "aws_p3.2xlarge_9az_2023-02-15_probe.csv.gz"
P3_9AZ_PRICES = DATA / "availability" / "aws_p3.2xlarge_9az_2023-02-15_spot_price.csv.gz"
GPU_USW2_AVAILABILITY = DATA / "availability" / "aws_gpu_us-west-2_2022-10-26_probe.csv.gz"
EU_WEST_1_PRICES = DATA / "spot" / "eu-west-1_spot_linux_2021-12_2022-06_general-purpose.csv.gz"
ONDEMAND_2022 = DATA / "spot" / "ondemand_us-east-1_linux_2022-06-28.csv"
ADVISOR_2025 = DATA / "spot" / "spot_advisor_2025-06-28_flat.csv.gz"

# Monthly interruption frequency of each Spot Advisor bucket: one definition, in the risk model's prior.
ADVISOR_BUCKET_MONTHLY_RATE = tuple(ADVISOR_BAND_MONTHLY_RATE)


@dataclass
class Trace:
    """Pools observed on one tick grid. Row i of each matrix is the state at ``times[i]``."""

    name: str
    times: list[datetime]
    pools: list[str]
    available: np.ndarray  # (ticks, pools) int8, 1 = obtainable
    prices: np.ndarray  # (ticks, pools) float64 $/h, NaN before a pool's first price
    ondemand_price: float
    synthetic: bool = False
    advisor_band: dict[str, int] = field(default_factory=dict)
    instance_types: dict[str, str] = field(default_factory=dict)
    regions: dict[str, str] = field(default_factory=dict)

    @property
    def ticks(self) -> int:
        return len(self.times)

    def tick_seconds(self) -> np.ndarray:
        """Duration of every tick; the last one lasts as long as the median tick."""
        stamps = np.array([t.timestamp() for t in self.times])
        gaps = np.diff(stamps)
        return np.append(gaps, np.median(gaps) if len(gaps) else 0.0)

    def split_index(self, train_fraction: float) -> int:
        """First tick of the evaluated part (the model may only learn from ticks before it)."""
        return min(self.ticks - 1, max(1, int(round(self.ticks * train_fraction))))

    def subset(self, pools: list[str] | None = None, start: datetime | None = None,
               end: datetime | None = None) -> "Trace":
        """The same trace restricted to some pools and/or a time window."""
        cols = [self.pools.index(p) for p in pools] if pools else list(range(len(self.pools)))
        rows = [i for i, t in enumerate(self.times) if (start is None or t >= start)
                and (end is None or t < end)]
        keep = self.pools if not pools else pools
        return Trace(self.name, [self.times[i] for i in rows], list(keep),
                     self.available[np.ix_(rows, cols)], self.prices[np.ix_(rows, cols)],
                     self.ondemand_price, self.synthetic,
                     {p: b for p, b in self.advisor_band.items() if p in keep},
                     {p: t for p, t in self.instance_types.items() if p in keep},
                     {p: r for p, r in self.regions.items() if p in keep})


def parse_ts(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS``, ISO-8601 or ``...Z`` → aware UTC datetime (naive means UTC)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _open(path: Path):
    return gzip.open(path, "rt", newline="") if str(path).endswith(".gz") else open(path, newline="")


def read_wide(path: Path) -> tuple[list[datetime], list[str], np.ndarray]:
    """A wide CSV (``ts`` + one column per pool) → times, pool names, values (float)."""
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header[0] not in ("ts", "timestamp"):
            raise ValueError(f"{path}: first column must be 'ts', got {header[0]!r}")
        times, rows = [], []
        for row in reader:
            times.append(parse_ts(row[0]))
            rows.append([float(x) if x not in ("", "nan", "NaN") else np.nan for x in row[1:]])
    order = np.argsort([t.timestamp() for t in times], kind="stable")
    return [times[i] for i in order], header[1:], np.array(rows, dtype=float)[order]


def is_long_price_file(path: Path) -> bool:
    """True for the ``timestamp,availability_zone,instance_type,spot_price`` format."""
    with _open(path) as handle:
        header = handle.readline().strip().split(",")
    return header[:4] == ["timestamp", "availability_zone", "instance_type", "spot_price"]


def read_long_prices(path: Path, instance_types: set[str] | None = None,
                     azs: set[str] | None = None) -> dict[tuple[str, str], list[tuple[datetime, float]]]:
    """(instance type, AZ) → [(time, price)] sorted, from a long price file."""
    series: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    with _open(path) as handle:
        for row in csv.DictReader(handle):
            itype, az = row["instance_type"], row["availability_zone"]
            if (instance_types and itype not in instance_types) or (azs and az not in azs):
                continue
            series.setdefault((itype, az), []).append((parse_ts(row["timestamp"]), float(row["spot_price"])))
    for points in series.values():
        points.sort()
    return series


def step_align(points: list[tuple[datetime, float]], times: list[datetime]) -> np.ndarray:
    """Sample a step function (price holds until the next point) at each tick; NaN before the first."""
    stamps = np.array([p[0].timestamp() for p in points])
    values = np.array([p[1] for p in points])
    idx = np.searchsorted(stamps, [t.timestamp() for t in times], side="right") - 1
    out = np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan)
    return out


def read_ondemand(path: Path, instance_type: str) -> float:
    """On-demand $/h of one instance type from a table."""
    with _open(path) as handle:
        for row in csv.DictReader(handle):
            if row["instance_type"] == instance_type:
                return float(row["od_price_usd_per_hr"])
    raise KeyError(f"{instance_type} not in {path}")


def read_advisor_bands(path: Path) -> dict[tuple[str, str], int]:
    """(region, instance type) → Spot Advisor interruption bucket 0..4 (Linux)."""
    bands = {}
    with _open(path) as handle:
        for row in csv.DictReader(handle):
            if row["os"].lower() == "linux":
                bands[(row["region"], row["instance_type"])] = int(row["interruption_bucket"])
    return bands


def regular_grid(start: datetime, end: datetime, step_s: int) -> list[datetime]:
    """Tick times every ``step_s`` seconds in [start, end)."""
    count = int((end - start).total_seconds() // step_s)
    return [start + timedelta(seconds=i * step_s) for i in range(count)]


def synthetic_availability(times: list[datetime], pools: list[str], bands: dict[str, int],
                           price_ratio: np.ndarray, seed: int = 7, mean_outage_s: float = 1800.0,
                           price_slope: float = 2.0) -> np.ndarray:
    """Draw availability for price-only datasets from a documented hazard model.

    Outages of pool p start as a Poisson process with hourly rate
    ``λ_p(t) = r_band / 730 × (1 + price_slope × max(0, price_ratio_p(t) − 0.3))``, where ``r_band`` is
    the monthly interruption rate of the pool's Spot Advisor bucket (ADVISOR_BUCKET_MONTHLY_RATE, ×
    730 h/month) and ``price_ratio`` = spot / on-demand; an outage lasts an exponential time with mean
    ``mean_outage_s``. Pools draw independently with a fixed seed, so a run is reproducible.
    """
    rng = np.random.default_rng(seed)
    ticks = len(times)
    dt = np.diff([t.timestamp() for t in times] + [times[-1].timestamp() + (
        times[-1] - times[-2]).total_seconds() if ticks > 1 else 300.0])
    avail = np.ones((ticks, len(pools)), dtype=np.int8)
    for j, pool in enumerate(pools):
        base = ADVISOR_BUCKET_MONTHLY_RATE[bands.get(pool, DEFAULT_ADVISOR_BAND)] / 730.0
        down_until = -1.0
        for i in range(ticks):
            now = times[i].timestamp()
            if now < down_until:
                avail[i, j] = 0
                continue
            ratio = price_ratio[i, j] if np.isfinite(price_ratio[i, j]) else 0.3
            rate_per_s = base * (1 + price_slope * max(0.0, ratio - 0.3)) / 3600.0
            if rng.random() < 1 - np.exp(-rate_per_s * dt[i]):
                down_until = now + rng.exponential(mean_outage_s)
                avail[i, j] = 0
    return avail


def load(availability: Path | None = None, prices: Path | None = None, *,
         instance_types: list[str] | None = None, ondemand_price: float | None = None,
         ondemand_table: Path | None = None, instance_type: str | None = None,
         advisor: Path | None = ADVISOR_2025, pools: list[str] | None = None,
         start: datetime | None = None, end: datetime | None = None, step_s: int = 300,
         seed: int = 7, name: str | None = None) -> Trace:
    """Build a Trace from files in the documented formats (see module docstring).

    With an availability file its ticks are the grid and its columns the pools; prices (wide or long)
    are aligned to it. Without one, the grid is every ``step_s`` seconds over the price data, the pools
    are ``<type>.<az>`` of the long file (optionally filtered by ``instance_types``) and availability is
    synthetic.
    """
    if availability is None and prices is None:
        raise ValueError("need --availability and/or --prices")
    bands_table = read_advisor_bands(advisor) if advisor and Path(advisor).exists() else {}
    if availability is not None:
        times, names, values = read_wide(availability)
        avail = np.nan_to_num(values, nan=0).astype(np.int8)
        price_matrix = np.full(avail.shape, np.nan)
        if prices is not None:
            price_matrix = _prices_for(prices, times, names, instance_type)
        types = {p: instance_type or "" for p in names}
        trace = Trace(name or Path(availability).name, times, names, avail, price_matrix, 0.0,
                      synthetic=False, instance_types=types,
                      regions={p: _region(p) for p in names})
    else:
        series = read_long_prices(prices, set(instance_types) if instance_types else None)
        first = max(min(pts[0][0] for pts in series.values()), start or datetime.min.replace(tzinfo=timezone.utc))
        last = min(max(pts[-1][0] for pts in series.values()), end or datetime.max.replace(tzinfo=timezone.utc))
        times = regular_grid(first, last, step_s)
        names = sorted(f"{t}.{az}" for t, az in series)
        price_matrix = np.column_stack([step_align(series[_split(p)], times) for p in names])
        trace = Trace(name or Path(prices).name, times, names, np.ones(price_matrix.shape, np.int8),
                      price_matrix, 0.0, synthetic=True,
                      instance_types={p: _split(p)[0] for p in names},
                      regions={p: region_of_az(_split(p)[1]) for p in names})
    trace.ondemand_price = _ondemand(ondemand_price, ondemand_table, instance_type, trace)
    trace.advisor_band = {p: bands_table.get((trace.regions[p], trace.instance_types[p] or instance_type or ""),
                                             DEFAULT_ADVISOR_BAND)
                          for p in trace.pools}
    if pools:
        trace = trace.subset(pools=pools)
    if start or end:
        trace = trace.subset(start=start, end=end)
    if trace.synthetic:
        ratio = trace.prices / trace.ondemand_price
        trace.available = synthetic_availability(trace.times, trace.pools, trace.advisor_band, ratio, seed)
        trace.available[~np.isfinite(trace.prices)] = 0
    return trace


def _split(pool: str) -> tuple[str, str]:
    instance_type, az = pool.rsplit(".", 1)
    return instance_type, az


def _region(pool: str) -> str:
    az = pool.rsplit(".", 1)[-1]
    try:
        return region_of_az(az)
    except Exception:  # noqa: BLE001 - a column that is not an AZ name has no region
        return ""


def _prices_for(path: Path, times: list[datetime], names: list[str], instance_type: str | None) -> np.ndarray:
    if is_long_price_file(path):
        series = read_long_prices(path, {instance_type} if instance_type else None, set(names))
        by_az = {az: pts for (_, az), pts in series.items()}
        return np.column_stack([step_align(by_az[n], times) if n in by_az else np.full(len(times), np.nan)
                                for n in names])
    p_times, p_names, values = read_wide(path)
    cols = [p_names.index(n) for n in names]
    points = {n: list(zip(p_times, values[:, c])) for n, c in zip(names, cols)}
    return np.column_stack([step_align(points[n], times) for n in names])


def _ondemand(price: float | None, table: Path | None, instance_type: str | None, trace: Trace) -> float:
    if price is not None:
        return float(price)
    types = {t for t in trace.instance_types.values() if t} or ({instance_type} if instance_type else set())
    if table is None or not types:
        raise ValueError("need --ondemand-price, or --ondemand-table with --instance-type")
    reference = instance_type or sorted(types)[0]
    return read_ondemand(table, reference)


def p3_9az(**kwargs) -> Trace:
    """The real p3.2xlarge 9-AZ availability + price trace (45 days, 195 s ticks)."""
    return load(P3_9AZ_AVAILABILITY, P3_9AZ_PRICES, instance_type="p3.2xlarge",
                ondemand_table=ONDEMAND_2022, name="aws p3.2xlarge 9 AZs (2023-02-15, real)", **kwargs)


