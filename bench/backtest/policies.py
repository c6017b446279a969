"""The baseline policies and the registry every run draws its policies from.

Baselines see only what an :class:`~bench.backtest.model.Observation` holds (this tick and the past).
Spot pools are compared with on-demand too: a pool is only chosen while its price is below the
on-demand price (never the case in the shipped datasets, but it keeps the baselines sane on others).

Another module can add a policy with :func:`register_policy`; :func:`registered_policies` imports
``bench.backtest.ours`` (the product's decision engine + risk model) and ``bench.backtest.ours_full``
(its full-information ceiling) if they exist, so ``ours`` joins every run without this file naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import numpy as np

from bench.backtest.model import ONDEMAND, Action, Observation, Policy, Rules
from bench.backtest.oracle import OraclePolicy


def _heading(obs: Observation) -> str | None:
    """Where the policy's primary is (or is about to be): a healthy replacement first, else a healthy
    primary; None when only warned instances are left."""
    if obs.pending is not None and not obs.pending.warned:
        return obs.pending.pool
    if obs.primary is not None and not obs.primary.warned:
        return obs.primary.pool
    return None


class _Base:
    name = ""

    def reset(self, trace, rules: Rules, eval_start: int) -> None:
        self.index = {p: j for j, p in enumerate(trace.pools)}


class OnDemandPolicy(_Base):
    """Never spot: the cost reference, with no downtime."""

    name = "ondemand"

    def act(self, obs: Observation) -> Action:
        return Action(ONDEMAND)


class StaticPolicy(_Base):
    """One pool for the whole window: the cheapest available at the first evaluated tick where any is.

    Until then, and whenever that pool is unavailable (after an interruption), it runs on-demand; it goes
    back to the pool as soon as the pool is available again (make-before-break from on-demand).
    """

    name = "static"

    def reset(self, trace, rules: Rules, eval_start: int) -> None:
        super().reset(trace, rules, eval_start)
        self.pool: int | None = None

    def act(self, obs: Observation) -> Action:
        if self.pool is None:
            open_ = np.flatnonzero(obs.available)
            if open_.size == 0:
                return Action(ONDEMAND)
            self.pool = int(open_[np.argmin(obs.prices[open_])])
        return Action(obs.pools[self.pool] if obs.available[self.pool] else ONDEMAND)


class CheapestPolicy(_Base):
    """Always the cheapest available pool: it moves whenever another pool becomes strictly cheaper, and
    on a warning to the cheapest other available pool (on-demand if none)."""

    name = "cheapest"

    def act(self, obs: Observation) -> Action:
        prices = np.where(obs.available == 1, obs.prices, np.inf)
        best = int(np.argmin(prices))
        if not prices[best] < obs.ondemand_price:
            return Action(ONDEMAND)
        current = self.index.get(_heading(obs))
        if current is not None and prices[current] <= prices[best]:
            return Action(obs.pools[current])
        return Action(obs.pools[best])


class PriceCapacityPolicy(_Base):
    """A stand-in for AWS's price-capacity-optimized allocation.

    A pool's capacity score is the fraction of the trailing ``window_h`` hours (current tick included)
    in which it was available. Among the pools available now whose score is within ``tolerance`` of
    the best such score, it picks the cheapest; it stays in its pool while that pool remains in the set
    and is not warned, and moves otherwise (on-demand when no pool is available).
    """

    name = "price_capacity"

    def __init__(self, window_h: float = 6.0, tolerance: float = 0.05):
        self.window_h, self.tolerance = window_h, tolerance

    def reset(self, trace, rules: Rules, eval_start: int) -> None:
        super().reset(trace, rules, eval_start)
        tick_s = float(np.median(trace.tick_seconds())) or 1.0
        self.rows = max(1, int(round(self.window_h * 3600.0 / tick_s)))

    def act(self, obs: Observation) -> Action:
        open_ = obs.available == 1
        if not open_.any():
            return Action(ONDEMAND)
        score = obs.history_available[-self.rows:].mean(axis=0)
        eligible = open_ & (score >= score[open_].max() - self.tolerance)
        prices = np.where(eligible, obs.prices, np.inf)
        best = int(np.argmin(prices))
        if not prices[best] < obs.ondemand_price:
            return Action(ONDEMAND)
        current = self.index.get(_heading(obs))
        if current is not None and eligible[current]:
            return Action(obs.pools[current])
        return Action(obs.pools[best])


POLICIES: dict[str, Callable[[], Policy]] = {
    "ondemand": OnDemandPolicy,
    "static": StaticPolicy,
    "cheapest": CheapestPolicy,
    "price_capacity": PriceCapacityPolicy,
    "oracle": OraclePolicy,
}


def register_policy(name: str, factory: Callable[[], Policy]) -> None:
    """Add (or replace) a policy; ``factory()`` must return a fresh policy object."""
    POLICIES[name] = factory


def registered_policies() -> list[str]:
    """Every policy name, after loading ``bench.backtest.ours`` (and its variant modules) when present;
    ``oracle`` comes last."""
    for name, module in (("ours", "bench.backtest.ours"), ("ours_full", "bench.backtest.ours_full")):
        if name not in POLICIES and importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return [n for n in POLICIES if n not in OPTIONAL and n != "oracle"] + (["oracle"] if "oracle" in POLICIES else [])


# Registered but run only when asked for (--policies): variants reported as such in docs/benchmarks.md.
# ``ours_full`` reads every pool's availability: a ceiling, labelled "not deployable" wherever it is shown.
OPTIONAL = frozenset({"ours_model", "ours_full"})
