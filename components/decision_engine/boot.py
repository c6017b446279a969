"""The agent's boot time (launch → serving), as the cost model uses it.

One rule for production (``chalicelib.decisions``, from the switch reports' timings) and the backtest's
``ours`` (from its own launches): the median of the newest ``BOOT_SAMPLES`` measured boots, however old
they are, and ``DEFAULT_BOOT_S`` until the agent has measured one. An agent that has sat in one pool for
a week keeps its measured boot: forgetting it would price its next interruption as a stranger's.

>>> measured_boot_s([])
300.0
>>> measured_boot_s([100.0, 140.0, 120.0])
120.0
>>> measured_boot_s([900.0] * 5 + [120.0] * 20)   # only the newest 20 count
120.0
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

DEFAULT_BOOT_S = 300.0  # until the agent's own launches have measured it
BOOT_SAMPLES = 20  # newest measured boots the median is taken over
# A boot above this is no boot: production's are measured between two times an agent's clock gave, and a clock that
# jumped between them (NTP syncing mid-switch) "measures" hours; one such sample would be the median of an agent
# with one or two switches, pricing every interruption at hours of downtime. EC2 boots take minutes.
MAX_BOOT_S = 3600.0


def measured_boot_s(boots_oldest_first: Iterable[float]) -> float:
    """Median of the newest ``BOOT_SAMPLES`` boots (seconds, oldest first); invalid ones are ignored: not a finite
    number, negative (ready before launch: a clock that jumped back) or above ``MAX_BOOT_S``. 0 s is a boot (the
    local mode's embedded EC2 runs an instance at once).

    >>> measured_boot_s([120.0, 86_400.0, -5.0])
    120.0
    """
    valid = [float(b) for b in boots_oldest_first if b is not None and math.isfinite(b) and 0 <= b <= MAX_BOOT_S]
    return float(statistics.median(valid[-BOOT_SAMPLES:])) if valid else DEFAULT_BOOT_S
