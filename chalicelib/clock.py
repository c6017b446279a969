"""The one clock every handler reads.

In AWS it is the system clock. Local mode's demo replays recorded history in accelerated time, so
there (stage ``local`` only) the clock can be set: every timestamp the tables record — heartbeats,
instances, interruptions, decisions — is then in the replayed time.
"""

from __future__ import annotations

from datetime import datetime, timezone

_override: datetime | None = None


def now() -> datetime:
    """Aware UTC now (or the local-mode replay time when one is set)."""
    return _override if _override is not None else datetime.now(timezone.utc)


def set_replay_time(when: datetime | None) -> None:
    """Local mode only: pin the clock to ``when`` (None: back to the system clock)."""
    from chalicelib.settings import get_settings

    if not get_settings().local:
        raise RuntimeError("the clock can only be set in local mode")
    global _override
    _override = None if when is None else when.astimezone(timezone.utc)
