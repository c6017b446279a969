"""Small hand-made traces and scripted policies for the backtest tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from bench.backtest import ONDEMAND, Action
from ml.traces import Trace

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def make_trace(available, prices, ondemand=3.0, tick_s=200, pools=None, name="hand-made") -> Trace:
    """Ticks every ``tick_s`` seconds (a list gives each tick's length); one column per pool."""
    available = np.asarray(available, dtype=np.int8)
    prices = np.broadcast_to(np.asarray(prices, dtype=float), available.shape).copy()
    ticks = available.shape[0]
    steps = list(tick_s) if np.ndim(tick_s) else [tick_s] * ticks
    offsets = np.concatenate([[0], np.cumsum(steps[: ticks - 1])])
    times = [T0 + timedelta(seconds=float(o)) for o in offsets]
    pools = pools or [f"us-east-1{c}" for c in "abcdefghijklmnopqrstuvwxyz"[: available.shape[1]]]
    return Trace(name, times, pools, available, prices, ondemand)


class Script:
    """A policy from a function ``obs -> Action`` (or -> pool name); ``first`` is its first choice."""

    def __init__(self, decide, first=None, name="script"):
        self.decide, self.first, self.name = decide, first, name

    def reset(self, trace, rules, eval_start):
        self.trace, self.rules, self.eval_start = trace, rules, eval_start

    def first_choice(self, obs):
        return self.first if self.first is not None else self._action(obs).primary

    def _action(self, obs):
        out = self.decide(obs)
        return Action(out) if isinstance(out, str) else out

    def act(self, obs):
        return self._action(obs)


def stay(pool):
    """Always the same target."""
    return Script(lambda obs: pool, first=pool, name=f"stay-{pool}")


__all__ = ["ONDEMAND", "Script", "make_trace", "stay", "T0"]
