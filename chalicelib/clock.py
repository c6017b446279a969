"""The one clock every handler reads.

In AWS it is the system clock. Local mode's demo replays recorded history in accelerated time, so
there (stage ``local`` only) the clock can be set: every timestamp the tables record — heartbeats,
instances, interruptions, decisions — is then in the replayed time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

MAX_CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of ours a reporter's clock may run before its time is not believed
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


def set_replay_time(when: datetime | None) -> None:
    """Local mode only: move the clock to ``when`` (None: back to the system clock)."""
    from chalicelib.settings import get_settings

    if not get_settings().local:
        raise RuntimeError("the clock can only be set in local mode")
    global _replay
    _replay = None if when is None else (when.astimezone(timezone.utc), time.monotonic())
