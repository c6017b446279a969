"""``ours``: the product's own decision engine and risk model, as a backtest policy.

At ``reset`` the risk model is trained on the training part of the trace only (rows before the
split: the guarded trace refuses anything later). At every tick the policy builds the same inputs the
decision cycle builds in production — pool options with their price, availability and risk — and calls
``components.decision_engine.decide``; the decision's target and standby become the Action.

Like production, risk is re-scored on a schedule (every ``risk_refresh_s``, the risk scorer's 15
minutes) from the history seen so far, with the features of ``components.risk_model`` (the code the
model was trained with); the decision itself runs at every tick so that an interruption warning is
answered in the tick it arrives, as the sentinel does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from bench.backtest.model import ONDEMAND, Action, Observation, Rules
from bench.backtest.policies import register_policy
from components.decision_engine import DecisionConfig, PoolOption, Situation, decide
from components.risk_model import LOOKBACK_S, UNAVAILABLE_RISK, PoolHistory, advisor_prior, feature_vector
from ml import risk as risk_ml
from ml.traces import Trace

RISK_REFRESH_S = 900.0

# The product's defaults (chalicelib/decisions.py and the legacy agent_configs), with the timing
# constants taken from the rules every policy runs under.
PRODUCT_DEFAULTS = DecisionConfig()


def product_config(rules: Rules, horizon_s: float) -> DecisionConfig:
    """The decision config the product would use for a service with these boot/penalty figures."""
    return replace(PRODUCT_DEFAULTS, horizon_s=horizon_s, switch_overhead_s=rules.boot_s,
                   interruption_gap_s=max(0.0, rules.boot_s - rules.warning_s),
                   downtime_penalty_per_hour=rules.downtime_penalty_per_hour)


class OursPolicy:
    """Decision engine + risk model, with standbys, re-scoring risk every 15 simulated minutes."""

    name = "ours"

    def __init__(self, horizon_s: float = 3600.0, risk_refresh_s: float = RISK_REFRESH_S):
        self.horizon_s, self.risk_refresh_s = horizon_s, risk_refresh_s

    def reset(self, trace, rules: Rules, eval_start: int) -> None:
        self.pools = list(trace.pools)
        self.times = np.array([t.timestamp() for t in trace.times])
        self.regions = [trace.regions.get(p, "") for p in self.pools]
        self.bands = [trace.advisor_band.get(p, 2) for p in self.pools]
        self.ondemand = trace.ondemand_price
        training = Trace(trace.name, list(trace.times[:eval_start]), self.pools,
                         np.asarray(trace.available[:eval_start]), np.asarray(trace.prices[:eval_start]),
                         trace.ondemand_price, trace.synthetic, dict(trace.advisor_band),
                         dict(trace.instance_types), dict(trace.regions))
        try:
            self.model = risk_ml.fit(training, eval_start, horizon_s=self.horizon_s)
        except ValueError:  # e.g. no interruption at all before the split: nothing to learn from
            self.model = None  # the documented Spot Advisor prior serves, as in production
        self.config = product_config(rules, self.horizon_s)
        self.risk = np.full(len(self.pools), np.nan)
        self.risk_at = -np.inf
        self.current: str | None = None
        self.since: datetime | None = None
        self.switches: list[datetime] = []
        by_region = defaultdict(list)
        for j, region in enumerate(self.regions):
            by_region[region].append(j)
        self.region_members = [by_region[r] for r in self.regions]

    def _rescore(self, obs: Observation) -> None:
        """Risk of every pool from the history seen so far (the risk scorer's job)."""
        first = int(np.searchsorted(self.times, obs.now - LOOKBACK_S, side="right")) - 1
        first = max(first, 0)
        rows = slice(first, obs.tick + 1)
        avail = np.asarray(obs.history_available[rows], dtype=float)
        prices = np.asarray(obs.history_prices[rows], dtype=float)
        times = self.times[rows].tolist()
        vectors, obtainable = [], []
        for j in range(len(self.pools)):
            if avail[-1, j] < 1:
                obtainable.append(False)
                continue
            region = avail[:, self.region_members[j]].mean(axis=1)
            history = PoolHistory(times=times, available=avail[:, j].astype(int).tolist(),
                                  prices=prices[:, j].tolist(), region_available_fraction=region.tolist(),
                                  ondemand_price=self.ondemand, advisor_band=self.bands[j])
            vectors.append(feature_vector(history))
            obtainable.append(True)
        if not vectors:
            scores = iter(())
        elif self.model is None:
            scores = iter(advisor_prior(self.bands[j], self.horizon_s) for j, ok in enumerate(obtainable) if ok)
        else:
            scores = iter(self.model.predict_features(np.array(vectors, dtype=float)))
        self.risk = np.array([next(scores) if ok else UNAVAILABLE_RISK for ok in obtainable])
        self.risk_at = obs.now

    def _situation(self, obs: Observation, now: datetime) -> Situation:
        """Where the service is: a booting replacement counts as the placement (it is on its way);
        a warned primary with nothing on the way, or no primary at all, needs replacing."""
        pending, primary, standby = obs.pending, obs.primary, obs.standby
        if pending is not None and not pending.warned:
            current, warned = pending.pool, False
        elif primary is not None:
            current, warned = primary.pool, primary.warned
        else:
            current = self.current or ONDEMAND
            warned = current != ONDEMAND
        usable_standby = standby if standby is not None and not standby.warned else None
        return Situation(current=current, since=self.since or now, recent_switches=tuple(self.switches),
                         warned=warned, standby=usable_standby.pool if usable_standby else None,
                         standby_ready=bool(usable_standby and usable_standby.ready_at <= obs.now))

    def act(self, obs: Observation) -> Action:
        if obs.now - self.risk_at >= self.risk_refresh_s or self.current is None:
            self._rescore(obs)
        now = obs.time if obs.time.tzinfo else obs.time.replace(tzinfo=timezone.utc)
        options = [PoolOption(p, None if not np.isfinite(obs.prices[j]) else float(obs.prices[j]),
                              float(self.risk[j]) if np.isfinite(self.risk[j]) else None,
                              available=bool(obs.available[j]))
                   for j, p in enumerate(self.pools)]
        situation = self._situation(obs, now)
        decision = decide(situation, options, self.ondemand, now, self.config)
        if decision.target != situation.current:
            if decision.voluntary_switch:
                self.switches.append(now)
            self.since = now
        elif self.since is None:
            self.since = now
        self.current = decision.target
        self.last_reason = decision.reason
        return Action(primary=decision.target, standby=decision.standby)


register_policy("ours", OursPolicy)
