"""The one clock every handler reads.

In AWS it is the system clock. Local mode's demo replays recorded history in accelerated time, so
there (stage ``local`` only) the clock can be set: every timestamp the tables record — heartbeats,
instances, interruptions, decisions — is then in the replayed time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

MAX_CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of ours a reporter's clock may run before its time is not believed
MAX_REPORT_AGE = timedelta(days=1)  # how late a report of what an agent saw or did may arrive (its resends included)
_replay: tuple[datetime, float] | None = None  # (replay time, monotonic time it was set)


def now() -> datetime:
    """Aware UTC now; in a local-mode replay, the replay time plus the real time since it was set
    (so the product's own processing still shows up in the timings it records)."""
    if _replay is None:
        return datetime.now(timezone.utc)
    at, since = _replay
    return at + timedelta(seconds=time.monotonic() - since)


def believable(at: datetime, now: datetime, max_age: timedelta) -> bool:
    """Is a time a reporter gave plausible: not older than ``max_age``, not ahead of ours past ``MAX_CLOCK_SKEW``?"""
    return now - max_age <= at <= now + MAX_CLOCK_SKEW


def placed(times: dict[str, datetime | None], earliest: datetime, latest: datetime
           ) -> tuple[dict[str, datetime | None], timedelta, list[str]]:
    """The times a reporter gave for one event, within ``[earliest, latest]``: what the server knows of when the event
    can have happened (``latest``: by the time the report was received; ``earliest``: not before the server asked for
    it, nor longer ago than a report may be late). Clamped, never refused: the event did happen, only its clock is
    wrong.

    A clock that is off moves all of a report's times alike. So when every given time lies beyond the same bound, all
    are moved together until the newest is ``latest`` (a report follows its last event); when only some do (a clock
    a minute behind whose first times precede the command, one a few seconds ahead whose last ones follow the
    receive), all are moved together just enough to bring them within, if their spread fits: their spans, such as
    the launch → ready boot time a switch measures, are kept. A time still outside after that (one wild value, a
    clock that jumped mid-event) is the bound it crossed. Returns the times, the common shift (zero when none) and
    the names of the times clamped to a bound (None stays None)."""
    given = {name: at for name, at in times.items() if at is not None}
    shift = timedelta(0)
    if given:
        oldest, newest = min(given.values()), max(given.values())
        if oldest > latest or newest < earliest:
            shift = latest - newest
        elif oldest < earliest and newest + (earliest - oldest) <= latest:
            shift = earliest - oldest
        elif newest > latest and oldest - (newest - latest) >= earliest:
            shift = latest - newest
    clamped = []
    result = dict(times)
    for name, at in given.items():
        moved = at + shift
        result[name] = min(max(moved, earliest), latest)
        if result[name] != moved:
            clamped.append(name)
    return result, shift, clamped


def set_replay_time(when: datetime | None) -> None:
    """Local mode only: move the clock to ``when`` (None: back to the system clock)."""
    from chalicelib.settings import get_settings

    if not get_settings().local:
        raise RuntimeError("the clock can only be set in local mode")
    global _replay
    _replay = None if when is None else (when.astimezone(timezone.utc), time.monotonic())
