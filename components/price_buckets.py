"""Hourly and daily buckets of a pool's price (the pricing aggregator's arithmetic; pure).

A spot price is a step function: a point holds from its timestamp until the next point. A bucket
``[start, start + seconds)`` therefore summarises the segments that overlap it: the time-weighted
average price, the lowest and highest price in force, the price in force at its end (``last``),
how many raw points fell inside it and how long a price was known (``covered_s``). A bucket with no
raw point of its own still has a price when an earlier one carries into it: that is gap filling,
and the bucket says so (``filled``). A price is carried at most ``max_carry`` past its point (None:
until the next point) and never past ``known_until`` (when the price was last known to be in force).

Every bucket depends only on the points that overlap it, so re-aggregating any sub-window gives the
same buckets (idempotent, and a late point changes only the buckets from its own up to the next
point's: ``affected_starts``). Daily buckets are made from hourly ones (``merge``).

>>> from datetime import datetime, timezone
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> b = price_buckets([(t, Decimal("0.04")), (t + timedelta(minutes=30), Decimal("0.02"))],
...                   t, t + timedelta(hours=2))
>>> [(x.avg, x.low, x.high, x.last, x.filled) for x in b]
[(Decimal('0.03'), Decimal('0.02'), Decimal('0.04'), Decimal('0.02'), False), \
(Decimal('0.02'), Decimal('0.02'), Decimal('0.02'), Decimal('0.02'), True)]
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

__all__ = ["DAY", "HOUR", "Bucket", "affected_starts", "bucket_starts", "changes", "floor_to", "merge",
           "merged_buckets", "price_buckets"]

HOUR = 3600
DAY = 86400
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_QUANTUM = Decimal("1e-10")


@dataclass(frozen=True)
class Bucket:
    """One interval's summary of a price series."""

    start: datetime
    seconds: int
    avg: Decimal  # time-weighted over the covered part
    low: Decimal
    high: Decimal
    last: Decimal  # the price in force at the end of what is covered
    points: int  # raw points inside the bucket
    covered_s: int  # seconds of the bucket with a known price
    filled: bool  # no raw point of its own: its price was carried forward

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)


def floor_to(t: datetime, seconds: int) -> datetime:
    """The start of the ``seconds``-long UTC-aligned interval holding ``t``."""
    whole = int((t - _EPOCH) // timedelta(seconds=1))
    return _EPOCH + timedelta(seconds=whole - whole % seconds)


def bucket_starts(start: datetime, end: datetime, seconds: int) -> list[datetime]:
    """Starts of the aligned buckets that begin in ``[floor(start), end)``."""
    first, step = floor_to(start, seconds), timedelta(seconds=seconds)
    out, t = [], first
    while t < end:
        out.append(t)
        t += step
    return out


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _segments(points: Iterable[tuple[datetime, Decimal]], max_carry: timedelta | None,
              known_until: datetime | None) -> tuple[list[datetime], list[tuple[datetime, datetime, Decimal]]]:
    by_ts: dict[datetime, Decimal] = {}
    for ts, price in sorted(points, key=lambda p: (p[0], p[1])):
        by_ts[ts] = Decimal(price)  # one price per instant (the highest on a tie: deterministic)
    stamps = sorted(by_ts)
    segments = []
    for i, ts in enumerate(stamps):
        ends = [stamps[i + 1]] if i + 1 < len(stamps) else []
        if max_carry is not None:
            ends.append(ts + max_carry)
        if known_until is not None:
            ends.append(known_until)
        end = min(ends) if ends else None
        if end is None or end > ts:
            segments.append((ts, end, by_ts[ts]))
    return stamps, segments


def price_buckets(points: Iterable[tuple[datetime, Decimal]], start: datetime, end: datetime, *,
                  seconds: int = HOUR, max_carry: timedelta | None = None,
                  known_until: datetime | None = None) -> list[Bucket]:
    """The buckets starting in ``[floor(start), end)`` that had a known price, oldest first.

    ``points`` are ``(ts, price)`` of one series; include the point in force before ``start`` so the
    first bucket knows its opening price. A price holds until the next point, at most ``max_carry``,
    never past ``known_until``; the last segment with neither bound holds for ever.
    """
    stamps, segments = _segments(points, max_carry, known_until)
    seg_starts = [s[0] for s in segments]
    out: list[Bucket] = []
    for b_start in bucket_starts(start, end, seconds):
        b_end = b_start + timedelta(seconds=seconds)
        # segments overlapping [b_start, b_end): those starting before b_end and ending after b_start
        hi = bisect_right(seg_starts, b_end - timedelta(microseconds=1))
        weighted, covered_us, prices, last = Decimal(0), 0, [], None
        for seg_start, seg_end, price in segments[max(0, _first_overlap(segments, b_start, hi)):hi]:
            lo_t, hi_t = max(seg_start, b_start), b_end if seg_end is None else min(seg_end, b_end)
            if hi_t <= lo_t:
                continue
            length = _us(hi_t - lo_t)
            weighted += price * length
            covered_us += length
            prices.append(price)
            last = price
        if not covered_us:
            continue
        low, high = min(prices), max(prices)
        avg = min(max((weighted / covered_us).quantize(_QUANTUM).normalize(), low), high)
        inside = bisect_right(stamps, b_end - timedelta(microseconds=1)) - bisect_right(
            stamps, b_start - timedelta(microseconds=1))
        out.append(Bucket(b_start, seconds, avg, low, high, last, inside, covered_us // 1_000_000,
                          inside == 0))
    return out


def _first_overlap(segments, b_start: datetime, hi: int) -> int:
    """Index of the first segment (before ``hi``) that may still reach ``b_start``."""
    i = hi
    while i > 0 and (segments[i - 1][1] is None or segments[i - 1][1] > b_start):
        i -= 1
    return i


def merge(buckets: Iterable[Bucket], start: datetime, seconds: int) -> Bucket | None:
    """One bucket ``[start, start + seconds)`` from the smaller buckets inside it (hourly → daily):
    average weighted by covered time, extreme prices, the latest bucket's last price; filled only if
    every part was. None when no part is given."""
    parts = sorted((b for b in buckets if start <= b.start < start + timedelta(seconds=seconds)),
                   key=lambda b: b.start)
    if not parts:
        return None
    low, high = min(b.low for b in parts), max(b.high for b in parts)
    covered = sum(b.covered_s for b in parts)
    if covered:
        avg = sum((b.avg * b.covered_s for b in parts), Decimal(0)) / covered
    else:  # sub-second coverage only: a plain mean
        avg = sum((b.avg for b in parts), Decimal(0)) / len(parts)
    avg = min(max(avg.quantize(_QUANTUM).normalize(), low), high)
    return Bucket(start, seconds, avg, low, high, parts[-1].last, sum(b.points for b in parts), covered,
                  all(b.filled for b in parts))


def merged_buckets(buckets: Iterable[Bucket], start: datetime, end: datetime, seconds: int = DAY) -> list[Bucket]:
    """:func:`merge` for every aligned ``seconds`` interval starting in ``[floor(start), end)``."""
    parts = list(buckets)
    out = []
    for b_start in bucket_starts(start, end, seconds):
        merged = merge(parts, b_start, seconds)
        if merged is not None:
            out.append(merged)
    return out


def affected_starts(stamps: Iterable[datetime], late: datetime, seconds: int = HOUR) -> tuple[datetime, datetime | None]:
    """The buckets a late point at ``late`` can change: from its own bucket to the bucket of the next
    point after it (inclusive; None = every later bucket), given the series' other point times."""
    later = [t for t in stamps if t > late]
    return floor_to(late, seconds), floor_to(min(later), seconds) if later else None


def changes(stored: Mapping[datetime, Bucket], computed: Mapping[datetime, Bucket],
            window: tuple[datetime, datetime]) -> tuple[list[Bucket], list[datetime]]:
    """What to write so the stored buckets of ``[window)`` equal the computed ones: the buckets to put
    (new or different) and the starts to delete (stored, no longer computed). Equal buckets are left
    alone, so a re-run writes nothing."""
    lo, hi = window
    puts = [b for start, b in sorted(computed.items()) if lo <= start < hi and stored.get(start) != b]
    deletes = [start for start in sorted(stored) if lo <= start < hi and start not in computed]
    return puts, deletes
