"""A view of a Trace that refuses to show rows after the current tick.

Policies other than the oracle get their trace through :class:`PastOnlyTrace`, so "policies see only
the past" is enforced rather than promised: indexing a row later than the simulator's cursor raises
:class:`FutureAccessError`. The cursor is ``eval_start - 1`` during ``reset`` (a model may learn from
the training part only) and the current tick during ``act``.
"""

from __future__ import annotations

import numpy as np


class FutureAccessError(LookupError):
    """A policy read a row of the trace that lies after the current tick."""


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

    Times, pool names, the on-demand price and the metadata are not secrets (the tick grid is known in
    advance), so they pass through.
    """

    def __init__(self, trace, cursor_row: int):
        self._trace = trace
        self.cursor = _Cursor(cursor_row)
        self.available = GuardedRows(trace.available, self.cursor, "available")
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
