"""The vocabulary shared by the simulator, the policies and the oracle.

Everything a policy may know at the start of a tick is in an :class:`Observation`; everything it may
ask for is an :class:`Action`. Keeping the two small and frozen is what lets every policy be scored
under the same rules: a policy cannot reach into the simulator's state, and the rows it is handed stop
at the current tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from components.capacity import CapacityObservation

ONDEMAND = "ondemand"


@dataclass(frozen=True)
class Rules:
    """The timing and penalty constants of the benchmark (seconds, $/h).

    ``warning_s`` is AWS's two-minute interruption notice; ``boot_s`` is how long a fresh launch costs
    before it serves; ``promote_s`` is how long a ready hot standby takes to take over.
    """

    downtime_penalty_per_hour: float
    boot_s: float = 300.0
    promote_s: float = 15.0
    warning_s: float = 120.0

    def __post_init__(self):
        if self.boot_s < 0 or self.promote_s < 0 or self.warning_s < 0 or self.downtime_penalty_per_hour < 0:
            raise ValueError(f"rules must be non-negative: {self}")

    @classmethod
    def for_ondemand_price(cls, ondemand_price: float, **overrides) -> "Rules":
        """The issue's default: downtime costs 24 × the on-demand price per hour."""
        overrides.setdefault("downtime_penalty_per_hour", 24.0 * ondemand_price)
        return cls(**overrides)


@dataclass(frozen=True)
class InstanceView:
    """A read-only snapshot of one running instance. Times are epoch seconds (UTC).

    ``ready_at`` is when it serves (primary / replacement) or can take over (standby); ``stop_at`` is
    set once an interruption warning arrived (``warned``), None otherwise.
    """

    pool: str
    launched_at: float
    ready_at: float
    warned: bool
    stop_at: float | None


@dataclass(frozen=True)
class Observation:
    """What a policy sees at the start of tick ``tick``.

    ``available``/``prices`` are this tick's rows (availability already 0 where the price is unknown, so a
    launch attempt's outcome is known, as RunInstances would answer). ``history_available`` and
    ``history_prices`` are read-only views of rows ``[0, tick]`` — the current row included, never a
    later one. ``primary`` is the instance serving now (None after it stopped with nothing ready to
    take over), ``pending`` a replacement still booting or being promoted, ``standby`` the hot standby.
    ``now`` is ``time`` as epoch seconds, ``tick_s`` this tick's length.

    ``observations`` are the capacity observations the policy's fleet made since its previous tick
    (launches refused or succeeded, interruption warnings, instances held), the same records production
    writes. A policy with ``observability = "observed"`` gets ``available`` and ``history_available``
    as views that raise :class:`~bench.backtest.guard.UnobservedReadError` on any cell the fleet did not
    see: it must live on ``observations`` like the product does.
    """

    tick: int
    time: datetime
    now: float
    tick_s: float
    prices: np.ndarray
    available: np.ndarray
    history_available: np.ndarray
    history_prices: np.ndarray
    primary: InstanceView | None
    standby: InstanceView | None
    pending: InstanceView | None
    ondemand_price: float
    pools: list[str]
    observations: tuple[CapacityObservation, ...] = ()


@dataclass(frozen=True)
class Action:
    """Where the primary should be (a pool name or ONDEMAND) and where to keep a hot standby (or None).

    ``fallbacks`` are tried in order, in the same tick, when launching the primary's replacement is
    refused (the failover task walking its ranked candidates); ONDEMAND among them always succeeds.

    A primary different from the current one makes the simulator build a replacement (make-before-break:
    the old instance serves until the new one does). The standby must be in another pool than the
    primary: one pool cannot back itself up.
    """

    primary: str
    standby: str | None = None
    fallbacks: tuple[str, ...] = ()

    def __post_init__(self):
        if self.standby is not None and self.standby == self.primary:
            raise ValueError(f"standby must differ from the primary's pool, both are {self.primary!r}")
        object.__setattr__(self, "fallbacks", tuple(self.fallbacks))


class Policy(Protocol):
    """A placement policy. ``reset`` once per run, then ``act`` at the start of every evaluated tick.

    ``reset`` receives a trace whose rows from ``eval_start`` on cannot be read (rows up to the current
    tick open as the run advances), so a model may learn from the training part only. A policy whose
    class sets ``sees_future = True`` (the oracle) gets the whole trace and ``eval_end`` as well.
    A policy whose class sets ``observability = "observed"`` sees availability only where its fleet
    looked (see :class:`Observation`); its ``first_choice`` may return a ranked list, of which the
    first pool obtainable at the start serves.
    """

    name: str

    def reset(self, trace, rules: Rules, eval_start: int) -> None: ...

    def act(self, obs: Observation) -> Action: ...
