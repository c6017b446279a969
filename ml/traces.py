"""Datasets for the backtest and the risk model: availability + prices per pool on one tick grid.

Formats (documented for users in docs/benchmarks.md):

- availability: CSV (optionally gzip), first column ``ts`` (UTC, ``YYYY-MM-DD HH:MM:SS`` or
  ISO-8601), then one 0/1 column per pool; 1 = a spot instance could be obtained at that tick. Or the
  probe-release shape ``tick,offset_s,<pool>...`` (seconds since an anchor the caller gives: the
  release publishes no start time). Columns named ``<az>_<gpu>_<count>`` (that release's naming,
  :data:`PROBE_GPU_TYPES`) become ``<instance type>.<az>`` pools. Or one row per probe round and zone
  (``scheduled_at_utc,...,zone,requested,created,...``, the GCP H100 release): a zone is available in a
  round where it created at least one instance.
- prices, wide: the same shape with $/h per pool per tick.
- prices, long: ``timestamp,availability_zone,instance_type,spot_price`` (a price holds until the
  pool's next row), as in data/spot.
- on-demand table: ``instance_type,od_price_usd_per_hr``.
- Spot Advisor (flat): ``region,os,instance_type,...,interruption_bucket,...``.

Without an availability file, availability is drawn from a documented hazard model
(:func:`synthetic_availability`) with a fixed seed, and the trace says it is synthetic. Without a price
file, ``price_model="advisor"`` gives every pool a constant APPROXIMATE price (:func:`advisor_prices`), and
``price_model="flat"`` gives every pool ``spot_ratio`` × on-demand (for capacity traces outside the Spot Advisor,
such as GCP's); the trace says so in ``price_note``.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from components.pool_id import make_pool_id, region_of_az
from components.risk_model.prior import ADVISOR_BAND_MONTHLY_RATE, DEFAULT_ADVISOR_BAND

DATA = Path(__file__).resolve().parent.parent / "data"  # the repository's data/ (sources: data/SOURCES.md)
P3_9AZ_AVAILABILITY = DATA / "availability" / "aws_p3.2xlarge_9az_2023-02-15_probe.csv.gz"
P3_9AZ_PRICES = DATA / "availability" / "aws_p3.2xlarge_9az_2023-02-15_spot_price.csv.gz"
GPU_USW2_AVAILABILITY = DATA / "availability" / "aws_gpu_us-west-2_2022-10-26_probe.csv.gz"
GCP_H100_AVAILABILITY = DATA / "availability" / "gcp_h100_13zone_2025-10_probe.csv.gz"
EU_WEST_1_PRICES = DATA / "spot" / "eu-west-1_spot_linux_2021-12_2022-06_general-purpose.csv.gz"
ONDEMAND_2022 = DATA / "spot" / "ondemand_us-east-1_linux_2022-06-28.csv"
ADVISOR_2025 = DATA / "spot" / "spot_advisor_2025-06-28_flat.csv.gz"

# The us-west-2 GPU release publishes no start time: round 0 is placed here (its first day; data/SOURCES.md).
GPU_USW2_START = datetime(2022, 10, 26, tzinfo=timezone.utc)
# Column names of that probe release (<az>_<gpu>_<count>) → EC2 instance types (SOURCES.md: k80×1 is p2.xlarge).
PROBE_GPU_TYPES = {"k80_1": "p2.xlarge", "k80_8": "p2.8xlarge", "v100_1": "p3.2xlarge", "v100_8": "p3.16xlarge"}
_GCP_ZONE = re.compile(r"^([a-z]+-[a-z]+[0-9]+)-[a-z]$")
APPROXIMATE_PRICE_NOTE = ("prices are APPROXIMATE: one constant spot price per type = on-demand × (1 − Spot "
                          "Advisor savings %), not a price series")

# The flat price model (a capacity trace without prices and outside the Spot Advisor, e.g. GCP): every pool costs
# this fraction of on-demand at every tick — about the 9-AZ p3.2xlarge trace's mean spot price over its on-demand.
FLAT_SPOT_RATIO = 0.3
FLAT_PRICE_NOTE = ("prices are APPROXIMATE: every pool costs {ratio:g} × on-demand at every tick (flat price model), "
                   "so only capacity separates the pools")

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
    price_note: str = ""  # set when the prices are a model, not a measured series

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
                     {p: r for p, r in self.regions.items() if p in keep}, self.price_note)


def parse_ts(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS``, ISO-8601 or ``...Z`` → aware UTC datetime (naive means UTC)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _open(path: Path):
    return gzip.open(path, "rt", newline="") if str(path).endswith(".gz") else open(path, newline="")


def read_wide(path: Path, start_time: datetime | None = None) -> tuple[list[datetime], list[str], np.ndarray]:
    """A wide CSV (``ts`` + one column per pool, or ``tick,offset_s`` + columns placed from
    ``start_time``) → times, pool names, values (float)."""
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = next(reader)
        offsets = header[:2] == ["tick", "offset_s"]
        if offsets and start_time is None:
            raise ValueError(f"{path}: rows are offsets (tick,offset_s) from an unpublished start: "
                             "give a start time (--start-time)")
        if "scheduled_at_utc" in header and "zone" in header and "created" in header:
            return _read_rounds(reader, header)
        if not offsets and header[0] not in ("ts", "timestamp"):
            raise ValueError(f"{path}: first column must be 'ts' (or 'tick,offset_s'), got {header[0]!r}")
        skip = 2 if offsets else 1
        times, rows = [], []
        for row in reader:
            times.append(start_time + timedelta(seconds=float(row[1])) if offsets else parse_ts(row[0]))
            rows.append([float(x) if x not in ("", "nan", "NaN") else np.nan for x in row[skip:]])
    order = np.argsort([t.timestamp() for t in times], kind="stable")
    return [times[i] for i in order], header[skip:], np.array(rows, dtype=float)[order]


def _read_rounds(reader, header: list[str]) -> tuple[list[datetime], list[str], np.ndarray]:
    """The round-per-row probe shape (``scheduled_at_utc,...,zone,requested,created,...``: each round asks
    every zone for instances and counts how many it got) → one 0/1 column per zone, 1 where the round got
    at least one: what one more instance would have found. A zone missing from a round is unknown (NaN)."""
    at, zone, created = (header.index(c) for c in ("scheduled_at_utc", "zone", "created"))
    rounds: dict[str, dict[str, float]] = {}
    for row in reader:
        rounds.setdefault(row[at], {})[row[zone]] = 1.0 if float(row[created] or 0) > 0 else 0.0
    zones = sorted({z for got in rounds.values() for z in got})
    stamps = sorted(rounds, key=lambda t: parse_ts(t).timestamp())
    values = np.array([[rounds[t].get(z, np.nan) for z in zones] for t in stamps], dtype=float)
    return [parse_ts(t) for t in stamps], zones, values


def pool_of_column(column: str, instance_type: str | None = None) -> tuple[str, str]:
    """(pool id, instance type) of an availability column: ``<az>_<gpu>_<count>`` of the probe release
    becomes ``<type>.<az>``; ``<type>.<az>`` keeps its type; anything else (an AZ) takes ``instance_type``."""
    az, _, gpu = column.partition("_")
    if gpu in PROBE_GPU_TYPES:
        return make_pool_id(PROBE_GPU_TYPES[gpu], az), PROBE_GPU_TYPES[gpu]
    if "." in column and "_" not in column:
        return column, _split(column)[0]
    return column, instance_type or ""


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


def advisor_prices(trace: Trace, ondemand_table: Path = ONDEMAND_2022, advisor: Path = ADVISOR_2025) -> np.ndarray:
    """The price model of a trace without prices: pool p costs ``od(type) × (1 − savings(region, type) / 100)``
    at every tick — the Spot Advisor's average saving against the on-demand list price. APPROXIMATE:
    real spot prices move (the 9-AZ trace's p3.2xlarge ranged 0.9–1.1 $/h across AZs and time)."""
    savings: dict[tuple[str, str], float] = {}
    with _open(advisor) as handle:
        for row in csv.DictReader(handle):
            if row["os"].lower() == "linux":
                savings[(row["region"], row["instance_type"])] = float(row["savings_pct_vs_od"])
    out = np.empty(trace.available.shape)
    for j, pool in enumerate(trace.pools):
        itype, region = trace.instance_types.get(pool, ""), trace.regions.get(pool, "")
        if (region, itype) not in savings:
            raise KeyError(f"no Spot Advisor saving for {itype or '?'} in {region or '?'} (pool {pool})")
        out[:, j] = read_ondemand(ondemand_table, itype) * (1.0 - savings[(region, itype)] / 100.0)
    return out


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
         seed: int = 7, name: str | None = None, start_time: datetime | None = None,
         price_model: str | None = None, spot_ratio: float = FLAT_SPOT_RATIO) -> Trace:
    """Build a Trace from files in the documented formats (see module docstring).

    With an availability file its ticks are the grid and its columns the pools (``start_time`` places
    a ``tick,offset_s`` file; ``instance_types`` keeps the pools of those types); prices (wide or long)
    are aligned to it, or with ``price_model="advisor"`` and no price file come from
    :func:`advisor_prices`. Without one, the grid is every ``step_s`` seconds over the price data, the
    pools are ``<type>.<az>`` of the long file (optionally filtered by ``instance_types``) and
    availability is synthetic.
    """
    if availability is None and prices is None:
        raise ValueError("need --availability and/or --prices")
    if price_model not in (None, "advisor", "flat"):
        raise ValueError(f"unknown price model {price_model!r} (known: advisor, flat)")
    if price_model == "flat" and not 0 < spot_ratio < 1:
        raise ValueError(f"the flat price model's spot/on-demand ratio must be in (0, 1), got {spot_ratio}")
    if price_model and (prices is not None or availability is None):
        raise ValueError("a price model replaces missing prices: use it with --availability and without --prices")
    if price_model == "advisor" and ondemand_table is None and ondemand_price is None:
        ondemand_table = ONDEMAND_2022  # the model's own on-demand reference
    bands_table = read_advisor_bands(advisor) if advisor and Path(advisor).exists() else {}
    if availability is not None:
        times, columns, values = read_wide(availability, start_time)
        named = [pool_of_column(c, instance_type) for c in columns]
        names = [p for p, _ in named]
        avail = np.nan_to_num(values, nan=0).astype(np.int8)
        price_matrix = np.full(avail.shape, np.nan)
        if prices is not None:
            price_matrix = _prices_for(prices, times, names, instance_type)
        trace = Trace(name or Path(availability).name, times, names, avail, price_matrix, 0.0,
                      synthetic=False, instance_types=dict(named), regions={p: _region(p) for p in names})
        if instance_types:
            keep = [p for p in names if trace.instance_types[p] in instance_types]
            if not keep:
                raise ValueError(f"no pool of {instance_types} in {availability}")
            trace = trace.subset(pools=keep)
        if price_model == "advisor":
            trace.prices = advisor_prices(trace, ondemand_table or ONDEMAND_2022,
                                          advisor if advisor and Path(advisor).exists() else ADVISOR_2025)
            trace.price_note = APPROXIMATE_PRICE_NOTE
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
    if price_model == "flat":
        trace.prices = np.full(trace.available.shape, spot_ratio * trace.ondemand_price)
        trace.price_note = FLAT_PRICE_NOTE.format(ratio=spot_ratio)
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
    """The region of an AWS AZ (``us-east-1a``) or of a GCP zone (``us-central1-a`` → ``us-central1``);
    "" for a column that is neither."""
    az = pool.rsplit(".", 1)[-1]
    try:
        return region_of_az(az)
    except Exception:  # noqa: BLE001 - not an AWS AZ name
        match = _GCP_ZONE.match(az)
        return match.group(1) if match else ""


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


