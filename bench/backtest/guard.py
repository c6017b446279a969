"""Views of a Trace that refuse to show what a policy could not know.

Two guards, both raising instead of trusting the policy:

- the past-only guard (every policy but the oracle);
- the observation guard (policies with ``observability = "observed"``, i.e. ``ours``): from the
  evaluation start on, a pool's availability can be read only at ticks where the fleet saw it —
  it held an instance there (1, or 0 when the warning came), or it tried a launch there (the answer).
  Everything else raises :class:`UnobservedReadError`. The fleet's sightings are kept in an
  :class:`ObservationLedger` shared by every agent of the fleet.

Policies other than the oracle get their trace through :class:`PastOnlyTrace`, so "policies see only
the past" is enforced rather than promised: indexing a row later than the simulator's cursor raises
:class:`FutureAccessError`. The cursor is ``eval_start - 1`` during ``reset`` (a model may learn from
the training part only) and the current tick during ``act``.
"""

from __future__ import annotations

import numpy as np


class FutureAccessError(LookupError):
    """A policy read a row of the trace that lies after the current tick."""


class UnobservedReadError(LookupError):
    """A policy read the availability of a pool at a tick where its fleet did not observe it."""


class ObservationLedger:
    """What a fleet saw: availability per (tick, pool column), and the observations in order."""

    def __init__(self):
        self.cells: dict[tuple[int, int], int] = {}
        self.events: list = []  # components.capacity.CapacityObservation, in the order they were made

    def see(self, tick: int, col: int, value: int) -> None:
        """Record a sighting; a 0 (refused or warned) is never overwritten by a 1 in the same tick."""
        key = (tick, col)
        self.cells[key] = min(value, self.cells.get(key, 1))

    def add(self, observation) -> None:
        self.events.append(observation)


class ObservedRow:
    """This tick's availability, readable only for pools the fleet observed at this tick."""

    def __init__(self, ledger: ObservationLedger, tick: int, width: int):
        self._ledger, self._tick, self._width = ledger, tick, width
        self.shape = (width,)

    def __len__(self) -> int:
        return self._width

    def __getitem__(self, col):
        if not isinstance(col, (int, np.integer)):
            raise UnobservedReadError("observed availability is read one pool at a time")
        value = self._ledger.cells.get((self._tick, int(col) % self._width))
        if value is None:
            raise UnobservedReadError(f"pool column {col} was not observed at tick {self._tick}")
        return value

    def __array__(self, dtype=None, copy=None):
        raise UnobservedReadError("observed availability cannot be read as a whole row")

    def __iter__(self):
        raise UnobservedReadError("observed availability cannot be iterated")


class ObservedHistory:
    """Availability of past ticks, readable as ``[tick, col]`` only where the fleet observed it."""

    def __init__(self, ledger: ObservationLedger, cursor: "_Cursor", base: np.ndarray, eval_start: int):
        self._ledger, self._cursor, self._base, self._start = ledger, cursor, base, eval_start
        self.shape = base.shape

    def __len__(self) -> int:
        return self._cursor.row + 1

    def _training_rows(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        if isinstance(rows, slice):
            span = range(*rows.indices(len(self._base)))
            if not len(span) or max(span) < self._start:
                out = self._base[key].view()
                out.flags.writeable = False
                return out
        return None

    def __getitem__(self, key):
        training = self._training_rows(key)
        if training is not None:
            return training
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, (int, np.integer)) for k in key)):
            raise UnobservedReadError("observed availability history is read one [tick, pool] cell at a time")
        tick, col = (int(k) for k in key)
        if tick > self._cursor.row:
            raise FutureAccessError(f"available: row {tick} read at tick {self._cursor.row}")
        if tick < self._start:
            return int(self._base[tick, col])
        value = self._ledger.cells.get((tick, col))
        if value is None:
            raise UnobservedReadError(f"pool column {col} was not observed at tick {tick}")
        return value

    def __array__(self, dtype=None, copy=None):
        raise UnobservedReadError("observed availability history cannot be read as a whole")


class _Cursor:
    __slots__ = ("row",)

    def __init__(self, row: int):
        self.row = row


class GuardedRows:
    """Row-guarded wrapper of a (ticks, pools) matrix: any index reaching past the cursor raises."""

    def __init__(self, data: np.ndarray, cursor: _Cursor, label: str):
        self._data, self._cursor, self._label = data, cursor, label
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __len__(self) -> int:
        return len(self._data)

    def _last_row(self, key) -> int:
        rows = key[0] if isinstance(key, tuple) else key
        n = len(self._data)
        if rows is Ellipsis or rows is None:
            return n - 1
        if isinstance(rows, slice):
            span = range(*rows.indices(n))
            return max(span) if len(span) else -1
        index = np.asarray(rows)
        if index.dtype == bool:
            hits = np.flatnonzero(index)
            return int(hits.max()) if hits.size else -1
        if index.size == 0:
            return -1
        return int(np.max(np.where(index < 0, index + n, index)))

    def __getitem__(self, key):
        last = self._last_row(key)
        if last > self._cursor.row:
            raise FutureAccessError(f"{self._label}: row {last} read at tick {self._cursor.row}")
        out = self._data[key]
        if isinstance(out, np.ndarray):
            out = out.view()
            out.flags.writeable = False
        return out

    def __array__(self, dtype=None, copy=None):
        return self[: len(self._data)] if dtype is None else self[: len(self._data)].astype(dtype)

    def __iter__(self):
        for i in range(len(self._data)):
            yield self[i]


class PastOnlyTrace:
    """The fields of a Trace, with ``available`` and ``prices`` guarded by the cursor.

    With a ``ledger`` (observed policies), ``available`` rows from ``cursor_row + 1`` on (the
    evaluated part) are readable only where the ledger has a sighting.

    Times, pool names, the on-demand price and the metadata are not secrets (the tick grid is known in
    advance), so they pass through.
    """

    def __init__(self, trace, cursor_row: int, ledger: ObservationLedger | None = None):
        self._trace = trace
        self.cursor = _Cursor(cursor_row)
        if ledger is None:
            self.available = GuardedRows(trace.available, self.cursor, "available")
        else:  # the training part in full, then only what the fleet observed
            self.available = ObservedHistory(ledger, self.cursor, np.asarray(trace.available), cursor_row + 1)
        self.prices = GuardedRows(trace.prices, self.cursor, "prices")
        for name in ("name", "times", "pools", "ondemand_price", "synthetic", "advisor_band",
                     "instance_types", "regions"):
            setattr(self, name, getattr(trace, name))

    @property
    def ticks(self) -> int:
        return self._trace.ticks

    def tick_seconds(self) -> np.ndarray:
        return self._trace.tick_seconds()

    def split_index(self, train_fraction: float) -> int:
        return self._trace.split_index(train_fraction)
