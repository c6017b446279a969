"""Fixed-window rate-limit arithmetic (pure): which window a moment falls in, and how long until the next.

A fixed window is one counter per (client, window); the adapter (chalicelib/rate_limit.py) keeps it in
DynamoDB with one conditional UpdateItem per request.

>>> window_of(125.0, 60)
Window(start=120, end=180)
>>> window_of(125.0, 60).retry_after(125.0)
55
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Window", "window_of"]


@dataclass(frozen=True)
class Window:
    """One counting window ``[start, end)`` in epoch seconds."""

    start: int
    end: int

    def retry_after(self, now_s: float) -> int:
        """Whole seconds until the next window opens (at least 1: the Retry-After header's unit)."""
        return max(1, math.ceil(self.end - now_s))


def window_of(now_s: float, window_s: int) -> Window:
    """The window of length ``window_s`` (> 0) holding ``now_s``."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    start = int(now_s // window_s) * window_s
    return Window(start, start + window_s)
