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

from components.pool_id import is_valid_instance_type, make_pool_id, region_of_az
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
    notes: list[str] = field(default_factory=list)  # what loading assumed or left out, printed in the report

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
        unknown = [p for p in pools or () if p not in self.pools]
        if unknown:
            raise ValueError(f"no pool {', '.join(unknown)} in {self.name}; its pools: {', '.join(self.pools)}")
        cols = [self.pools.index(p) for p in pools] if pools else list(range(len(self.pools)))
        rows = [i for i, t in enumerate(self.times) if (start is None or t >= start)
                and (end is None or t < end)]
        keep = self.pools if not pools else pools
        return Trace(self.name, [self.times[i] for i in rows], list(keep),
                     self.available[np.ix_(rows, cols)], self.prices[np.ix_(rows, cols)],
                     self.ondemand_price, self.synthetic,
                     {p: b for p, b in self.advisor_band.items() if p in keep},
                     {p: t for p, t in self.instance_types.items() if p in keep},
                     {p: r for p, r in self.regions.items() if p in keep}, self.price_note, list(self.notes))


def parse_ts(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS``, ISO-8601 or ``...Z`` → aware UTC datetime (naive means UTC); a bare number is
    Unix epoch seconds (milliseconds above 1e11)."""
    text = text.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]*)?", text):
        epoch = float(text)
        return datetime.fromtimestamp(epoch / 1000.0 if epoch > 1e11 else epoch, tz=timezone.utc)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time (UTC 'YYYY-MM-DD HH:MM:SS', ISO-8601 or epoch seconds)") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _open(path: Path):
    """A text handle on a CSV, gzip or not whatever its name says, without a UTF-8 byte-order mark."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def _records(path: Path):
    """(line number, stripped cells) of every row that is not blank; the first is the header."""
    with _open(path) as handle:
        reader = csv.reader(handle)
        for row in reader:
            cells = [c.strip() for c in row]
            if any(cells):
                yield reader.line_num, cells


def _header(path: Path) -> list[str]:
    for _, cells in _records(path):
        return cells
    raise ValueError(f"{path}: empty file (no header row)")


_NUMBER_WORDS = {"": np.nan, "nan": np.nan, "na": np.nan, "null": np.nan, "none": np.nan,
                 "true": 1.0, "false": 0.0}


def _number(cell: str) -> float:
    word = cell.lower()
    return _NUMBER_WORDS[word] if word in _NUMBER_WORDS else float(cell)


def read_wide(path: Path, start_time: datetime | None = None,
              notes: list[str] | None = None) -> tuple[list[datetime], list[str], np.ndarray]:
    """A wide CSV (``ts`` + one column per pool, or ``tick,offset_s`` + columns placed from
    ``start_time``) → times (sorted; of repeated timestamps the last row is kept), pool names, values
    (float). Blank lines are skipped; a column of text only (``product_description``) is not a pool. What
    was skipped is appended to ``notes``."""
    records = _records(path)
    header = next(records, (0, None))[1]
    if header is None:
        raise ValueError(f"{path}: empty file (no header row)")
    offsets = header[:2] == ["tick", "offset_s"]
    if offsets and start_time is None:
        raise ValueError(f"{path}: rows are offsets (tick,offset_s) from an unpublished start: "
                         "give a start time (--start-time)")
    if "scheduled_at_utc" in header and "zone" in header and "created" in header:
        return _read_rounds((cells for _, cells in records), header)
    if not offsets and header[0].lower() not in ("ts", "timestamp", "time"):
        raise ValueError(f"{path}: first column must be 'ts' (or 'tick,offset_s'), got {header[0]!r}")
    skip = 2 if offsets else 1
    columns = header[skip:]
    if len(set(columns)) != len(columns):
        raise ValueError(f"{path}: a column name appears twice: "
                         f"{sorted({c for c in columns if columns.count(c) > 1})}")
    times, cells, lines = [], [], []
    for line, row in records:
        if len(row) < len(header):
            raise ValueError(f"{path}: line {line} has {len(row)} cells, the header {len(header)}")
        try:
            times.append(start_time + timedelta(seconds=float(row[1])) if offsets else parse_ts(row[0]))
        except ValueError as exc:
            raise ValueError(f"{path}: line {line}: {exc}") from None
        cells.append(row[skip:len(header)])
        lines.append(line)
    text = [j for j, c in enumerate(columns) if cells and all(_is_text(r[j]) for r in cells)]
    keep = [j for j in range(len(columns)) if j not in text]
    if text and notes is not None:
        notes.append(f"{Path(path).name}: column(s) {', '.join(columns[j] for j in text)} hold text, not pools: "
                     "left out")
    rows = []
    for line, row in zip(lines, cells):
        values = []
        for j in keep:
            try:
                values.append(_number(row[j]))
            except ValueError:
                raise ValueError(f"{path}: line {line}: column {columns[j]!r}: {row[j]!r} is not a number") from None
        rows.append(values)
    stamps = np.array([t.timestamp() for t in times])
    order = np.argsort(stamps, kind="stable")
    last = np.append(stamps[order][1:] != stamps[order][:-1], True) if len(order) else np.zeros(0, bool)
    if not last.all() and notes is not None:
        notes.append(f"{Path(path).name}: {int((~last).sum())} row(s) with a repeated timestamp: the last row "
                     "of each timestamp kept")
    order = order[last]
    values = np.array(rows, dtype=float).reshape(len(rows), len(keep))[order]
    return [times[i] for i in order], [columns[j] for j in keep], values


def _is_text(cell: str) -> bool:
    try:
        _number(cell)
    except ValueError:
        return True
    return False


def _read_rounds(reader, header: list[str]) -> tuple[list[datetime], list[str], np.ndarray]:
    """The round-per-row probe shape (``scheduled_at_utc,...,zone,requested,created,...``: each round asks
    every zone for instances and counts how many it got) → one 0/1 column per zone, 1 where the round got
    at least one: what one more instance would have found. A zone missing from a round is unknown (NaN)."""
    at, zone, created = (header.index(c) for c in ("scheduled_at_utc", "zone", "created"))
    rounds: dict[str, dict[str, float]] = {}
    for row in reader:
        if not row:
            continue
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


LONG_PRICE_COLUMNS = ("timestamp", "availability_zone", "instance_type", "spot_price")


def _snake(name: str) -> str:
    """``AvailabilityZone`` (the AWS CLI's names) → ``availability_zone``; ``Spot Price`` → ``spot_price``."""
    return re.sub(r"[\s-]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())).lower()


def is_long_price_file(path: Path) -> bool:
    """True for the long format: columns ``timestamp,availability_zone,instance_type,spot_price`` in any order
    (or the AWS CLI's ``Timestamp,AvailabilityZone,InstanceType,SpotPrice``), other columns allowed."""
    return set(LONG_PRICE_COLUMNS) <= {_snake(c) for c in _header(path)}


def read_long_prices(path: Path, instance_types: set[str] | None = None,
                     azs: set[str] | None = None) -> dict[tuple[str, str], list[tuple[datetime, float]]]:
    """(instance type, AZ) → [(time, price)] sorted, from a long price file. With a
    ``product_description`` column, only the Linux/UNIX rows (the product's prices), or the one product
    the file has."""
    records = _records(path)
    header = [_snake(c) for c in next(records)[1]]
    at, zone, kind, price = (header.index(c) for c in LONG_PRICE_COLUMNS)
    product = header.index("product_description") if "product_description" in header else None
    by_product: dict[str, dict[tuple[str, str], list[tuple[datetime, float]]]] = {}
    for line, row in records:
        if len(row) < len(header):
            raise ValueError(f"{path}: line {line} has {len(row)} cells, the header {len(header)}")
        itype, az = row[kind], row[zone]
        if (instance_types and itype not in instance_types) or (azs and az not in azs):
            continue
        name = row[product] if product is not None else ""
        group = "Linux/UNIX" if name.lower().startswith("linux/unix") else name
        try:
            point = (parse_ts(row[at]), float(row[price]))
        except ValueError as exc:
            raise ValueError(f"{path}: line {line}: {exc}") from None
        by_product.setdefault(group, {}).setdefault((itype, az), []).append(point)
    if len(by_product) > 1 and "Linux/UNIX" not in by_product:
        raise ValueError(f"{path}: prices of several products ({', '.join(sorted(by_product))}) and none "
                         "Linux/UNIX: keep one product's rows")
    series = by_product.get("Linux/UNIX", next(iter(by_product.values()), {}))
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
    """On-demand $/h of one instance type from a table (``instance_type,od_price_usd_per_hr``)."""
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        column = "od_price_usd_per_hr"
        if not {"instance_type", column} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: an on-demand table needs columns instance_type,od_price_usd_per_hr")
        for row in reader:
            if row["instance_type"].strip() == instance_type and (row[column] or "").strip():
                return float(row[column])
    raise KeyError(f"{instance_type} not in {path}: give its on-demand price (--ondemand-price)")


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
    notes: list[str] = []
    if availability is not None:
        times, columns, values = read_wide(availability, start_time, notes)
        if instance_type is None and any(not pool_of_column(c)[1] for c in columns):
            instance_type = _infer_type(availability, prices, [c for c in columns if not pool_of_column(c)[1]],
                                        notes)
        named = [pool_of_column(c, instance_type) for c in columns]
        names = [p for p, _ in named]
        avail = (np.nan_to_num(values, nan=0) > 0).astype(np.int8)  # a count of instances obtained counts as 1
        price_matrix = np.full(avail.shape, np.nan)
        if prices is not None:
            price_matrix = _prices_for(prices, times, named, instance_type, notes)
            priced = np.isfinite(price_matrix).any(axis=0)
            if not priced.any():
                raise ValueError(f"no price in {Path(prices).name} for any pool of {Path(availability).name} "
                                 f"({', '.join(names)}; instance type {instance_type or 'not given'}) at its ticks "
                                 f"{times[0].isoformat()} .. {times[-1].isoformat()}" if times else
                                 f"no tick in {availability}")
            if not priced.all():
                notes.append(f"no price in {Path(prices).name} for pool(s) "
                             f"{', '.join(n for n, ok in zip(names, priced) if not ok)}: left out")
                kept = np.flatnonzero(priced)
                named, names = [named[j] for j in kept], [names[j] for j in kept]
                avail, price_matrix = avail[:, kept], price_matrix[:, kept]
            for j, pool in enumerate(names):
                first = int(np.argmax(np.isfinite(price_matrix[:, j])))
                if first > 0:
                    notes.append(f"pool {pool}: no price before {times[first].isoformat()} (the first {first} of "
                                 f"{len(times)} ticks): unavailable until then")
        trace = Trace(name or Path(availability).name, times, names, avail, price_matrix, 0.0,
                      synthetic=False, instance_types=dict(named), regions={p: _region(p) for p in names},
                      notes=notes)
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
        if not is_long_price_file(prices):
            raise ValueError(f"{prices}: without --availability the prices must be the long format "
                             f"({','.join(LONG_PRICE_COLUMNS)})")
        series = read_long_prices(prices, set(instance_types) if instance_types else None)
        if not series:
            raise ValueError(f"no price of {instance_types or 'any type'} in {prices}")
        first = max(min(pts[0][0] for pts in series.values()), start or datetime.min.replace(tzinfo=timezone.utc))
        last = min(max(pts[-1][0] for pts in series.values()), end or datetime.max.replace(tzinfo=timezone.utc))
        times = regular_grid(first, last, step_s)
        names = sorted(f"{t}.{az}" for t, az in series)
        price_matrix = np.column_stack([step_align(series[_split(p)], times) for p in names])
        trace = Trace(name or Path(prices).name, times, names, np.ones(price_matrix.shape, np.int8),
                      price_matrix, 0.0, synthetic=True,
                      instance_types={p: _split(p)[0] for p in names},
                      regions={p: region_of_az(_split(p)[1]) for p in names}, notes=notes)
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


_SIZE = re.compile(r"nano|micro|small|medium|[0-9]*x?large|metal(-[0-9]+xl)?")


def type_in_file_name(path: Path | None) -> str | None:
    """The instance type a release's file name carries (``aws_r5.2xlarge_3az_2023-09-20_probe.csv.gz`` →
    ``r5.2xlarge``), or None."""
    if path is None:
        return None
    stem = Path(path).name
    while (suffix := next((x for x in (".gz", ".gzip", ".csv", ".txt") if stem.lower().endswith(x)), None)):
        stem = stem[: -len(suffix)]
    for token in stem.split("_"):
        if is_valid_instance_type(token) and _SIZE.fullmatch(token.split(".", 1)[1]):
            return token
    return None


def _infer_type(availability: Path, prices: Path | None, azs: list[str], notes: list[str]) -> str | None:
    """The instance type of AZ-named pools when none is given: the one type a long price file has for those
    zones, else the one the file names carry (said in ``notes``); None when neither tells."""
    if prices is not None and is_long_price_file(prices):
        types = sorted({t for t, _ in read_long_prices(prices, None, set(azs))})
        if len(types) > 1:
            raise ValueError(f"{prices} has prices of several instance types for {', '.join(azs)} "
                             f"({', '.join(types)}): choose one with --instance-type")
        if types:
            notes.append(f"instance type {types[0]}: the only one in {Path(prices).name} (--instance-type overrides)")
            return types[0]
    named = {f.name: t for f in (Path(availability), Path(prices) if prices else None)
             if f is not None and (t := type_in_file_name(f))}
    if len(set(named.values())) > 1:
        raise ValueError(f"the file names carry different instance types ({', '.join(f'{t} in {f}' for f, t in named.items())}): "
                         "choose one with --instance-type")
    if named:
        where, itype = next(iter(named.items()))
        notes.append(f"instance type {itype}: read from the file name {where} (--instance-type overrides)")
        return itype
    return None


def _prices_for(path: Path, times: list[datetime], named: list[tuple[str, str]], instance_type: str | None,
                notes: list[str]) -> np.ndarray:
    """Each pool's price at each tick (NaN before its first price, and for a pool the file does not price). A pool
    is found by its name or, for ``<type>.<az>`` pools, by its AZ; a long file's rows by (type, AZ)."""
    azs = [pool.rsplit(".", 1)[-1] if itype and pool != itype else pool for pool, itype in named]
    if is_long_price_file(path):
        series = read_long_prices(path, {instance_type} if instance_type else None, set(azs))
        columns = []
        for (_pool, itype), az in zip(named, azs):
            found = [pts for (t, a), pts in series.items() if a == az and (not itype or t == itype)]
            if len(found) > 1:
                raise ValueError(f"{path} has prices of several instance types for {az}: choose one with "
                                 "--instance-type")
            columns.append(step_align(found[0], times) if found else np.full(len(times), np.nan))
        return np.column_stack(columns) if columns else np.full((len(times), 0), np.nan)
    p_times, p_names, values = read_wide(path, notes=notes)
    if not p_times:
        raise ValueError(f"{path}: no price rows")
    if len(p_times) > 1 and times:
        step = float(np.median(np.diff([t.timestamp() for t in p_times])))
        if times[-1].timestamp() - p_times[-1].timestamp() > 2 * step:
            held = sum(t > p_times[-1] for t in times)
            notes.append(f"prices in {Path(path).name} end at {p_times[-1].isoformat()}, before the last tick "
                         f"{times[-1].isoformat()}: the last price is held for {held} ticks")
    columns = []
    for pool, az in zip((p for p, _ in named), azs):
        col = p_names.index(pool) if pool in p_names else (p_names.index(az) if az in p_names else None)
        columns.append(np.full(len(times), np.nan) if col is None
                       else step_align(list(zip(p_times, values[:, col])), times))
    return np.column_stack(columns) if columns else np.full((len(times), 0), np.nan)


def _ondemand(price: float | None, table: Path | None, instance_type: str | None, trace: Trace) -> float:
    """The on-demand $/h: given, or the type's row of ``table``, or (no table) its us-east-1 list price from the
    shipped 2022 table, said in the trace's notes."""
    if price is not None:
        return float(price)
    types = {t for t in trace.instance_types.values() if t} or ({instance_type} if instance_type else set())
    if not types:
        raise ValueError("no on-demand price: give --ondemand-price, or the pools' --instance-type (its us-east-1 "
                         "list price is looked up)")
    reference = instance_type or sorted(types)[0]
    if table is not None:
        return read_ondemand(table, reference)
    value = read_ondemand(ONDEMAND_2022, reference)
    regions = sorted({r for r in trace.regions.values() if r} - {"us-east-1"})
    trace.notes.append(f"on-demand price {value:g} $/h: the us-east-1 list price of {reference} ({ONDEMAND_2022.name})"
                       + (f"; the pools are in {', '.join(regions)}: give --ondemand-price for that region's price"
                          if regions else ""))
    return value


def p3_9az(**kwargs) -> Trace:
    """The real p3.2xlarge 9-AZ availability + price trace (45 days, 195 s ticks)."""
    return load(P3_9AZ_AVAILABILITY, P3_9AZ_PRICES, instance_type="p3.2xlarge",
                ondemand_table=ONDEMAND_2022, name="aws p3.2xlarge 9 AZs (2023-02-15, real)", **kwargs)


