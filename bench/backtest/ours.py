"""``ours``: the product's decision engine and risk scoring, seeing only what production can see.

The policy declares ``observability = "observed"``: the simulator hands it the prices of every pool
but the availability of a pool only where its fleet looked (instances it held, launches it tried);
any other read raises. What it knows of capacity is the list of
:class:`components.capacity.CapacityObservation` the simulator reports — the records production
writes — and, like production:

- every ``risk_refresh_s`` (the risk scorer's 15 minutes) it scores every pool from a
  :class:`components.risk_model.PoolEvidence` (the one feature function) with the risk model, or
  the evidence fallback when no model is given;
- pools in capacity back-off (``components.capacity.DEFAULT_BACKOFF``) are not targets;
- the boot time in the cost model is the one it measured on its own launches (until the first
  launch: the product's default, ``components.decision_engine.DEFAULT_BOOT_S``);
- it calls ``components.decision_engine.decide`` at every tick and turns the decision's target,
  fallbacks and standby into the Action.

By default risk comes from the evidence estimate (``components.risk_model.evidence_risk``, what the
risk scorer stores when no model is active). ``ours_model`` trains the scikit-learn model on the part
before the split (``ml.train``'s pipeline) and scores with it; docs/benchmarks.md reports both.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from bench.backtest.model import ONDEMAND, Action, Observation, Rules
from bench.backtest.policies import register_policy
from components.capacity import DEFAULT_BACKOFF, NEGATIVE_KINDS, BackoffPolicy, CapacityObservation, ObservationKind
from components.decision_engine import DecisionConfig, PoolOption, Situation, decide, measured_boot_s
from components.risk_model import PoolEvidence, evidence_risk, feature_vector
from ml import risk as risk_ml
from ml.traces import Trace

RISK_REFRESH_S = 900.0


class OursPolicy:
    """Decision engine + observation-based risk, re-scored every 15 simulated minutes (only then, like
    production's scheduled risk scorer; the back-off after a refusal or warning is immediate in both)."""

    name = "ours"
    observability = "observed"

    def __init__(self, horizon_s: float = 3600.0, risk_refresh_s: float = RISK_REFRESH_S, model=None,
                 train: bool = False, backoff: BackoffPolicy = DEFAULT_BACKOFF, rails: dict | None = None,
                 evidence_params: dict | None = None, ondemand_backoff: str = "all",
                 rescore_on_setback: bool = False, warmup_s: float = 0.0):
        """``backoff`` and ``rails`` (extra ``DecisionConfig`` fields) default to the product's; the
        validation protocol (bench/backtest/validate.py) varies them. ``evidence_params`` (keyword arguments
        of ``evidence_hazard``), ``ondemand_backoff`` (which back-offs hold while on on-demand: ``all``,
        the product's; ``losses``, not refusals; ``none``) and ``rescore_on_setback`` (rescore at once on a
        refusal or warning, which production's scheduled scorer does not) are the variants of
        bench/backtest/variants.py."""
        if ondemand_backoff not in ("all", "losses", "none"):
            raise ValueError(f"ondemand_backoff must be all, losses or none, not {ondemand_backoff!r}")
        self.horizon_s, self.risk_refresh_s, self.given_model, self.train = horizon_s, risk_refresh_s, model, train
        self.backoff, self.rails = backoff, dict(rails or {})
        self.evidence_params, self.ondemand_backoff = dict(evidence_params or {}), ondemand_backoff
        self.rescore_on_setback = rescore_on_setback
        self.warmup_s = warmup_s
        self.member, self.fleet = 0, 1

    def join_fleet(self, member: int, fleet: int) -> None:
        self.member, self.fleet = member, fleet

    def reset(self, trace, rules: Rules, eval_start: int) -> None:
        self.pools = list(trace.pools)
        self.index = {p: j for j, p in enumerate(self.pools)}
        self.regions = [trace.regions.get(p, "") for p in self.pools]
        self.bands = [int(trace.advisor_band.get(p, 2)) for p in self.pools]
        self.times = np.array([t.timestamp() for t in trace.times])
        self.ondemand = trace.ondemand_price
        self.model = self.given_model
        if self.model is None and self.train:
            self.model = self._fit(trace, eval_start)
        self.penalty = rules.downtime_penalty_per_hour
        self.warning_s = rules.warning_s
        self.boots: list[float] = []
        self.log: dict[str, list[CapacityObservation]] = defaultdict(list)
        self.risk = np.full(len(self.pools), np.nan)
        self.risk_at = -np.inf
        self.since: datetime | None = None
        self.switches: list[datetime] = []
        self.current: str | None = None
        self.last_reason = ""
        self._seen_instances: set[tuple[str, float]] = set()

    def _fit(self, trace, eval_start: int):
        """The risk model trained on the part before the split (``ml.train``'s pipeline: rows from the
        observations a probe fleet would have made there, never the availability as features)."""
        training = Trace(trace.name, list(trace.times[:eval_start]), self.pools,
                         np.asarray(trace.available[:eval_start]), np.asarray(trace.prices[:eval_start]),
                         trace.ondemand_price, trace.synthetic, dict(trace.advisor_band),
                         dict(trace.instance_types), dict(trace.regions))
        try:
            return risk_ml.fit(training, eval_start, horizon_s=self.horizon_s)
        except ValueError:  # e.g. no interruption before the split: the evidence fallback serves, as in production
            return None

    # -- what production knows -------------------------------------------------------------------

    def _learn(self, obs: Observation) -> None:
        for o in obs.observations:
            self.log[o.pool_id].append(o)
        for inst in (obs.pending, obs.primary, obs.standby):
            if inst is None or (inst.pool, inst.launched_at) in self._seen_instances:
                continue
            # first sight of a launch of ours: its boot as launched (a standby promoted later gets a
            # new ready time; the first placement was serving from the start and measures nothing)
            self._seen_instances.add((inst.pool, inst.launched_at))
            if inst.ready_at - inst.launched_at > 0:
                self.boots.append(inst.ready_at - inst.launched_at)

    def boot_s(self) -> float:
        """Production's rule (``components.decision_engine.measured_boot_s``) over its own launches."""
        return measured_boot_s(self.boots)

    def evidence(self, j: int, now: float, history_prices) -> PoolEvidence:
        """The same PoolEvidence the risk scorer builds in production."""
        region = self.regions[j]
        first = max(0, int(np.searchsorted(self.times, now - 24 * 3600.0, side="right")) - 1)
        last = int(np.searchsorted(self.times, now, side="right"))
        prices = np.asarray(history_prices[first:last, j], dtype=float)
        keep = np.isfinite(prices)
        return PoolEvidence(
            now=now, observations=tuple(self.log.get(self.pools[j], ())),
            region_observations=tuple(o for k, p in enumerate(self.pools) if k != j and self.regions[k] == region
                                      for o in self.log.get(p, ())),
            price_times=tuple(self.times[first:last][keep].tolist()), prices=tuple(prices[keep].tolist()),
            ondemand_price=self.ondemand, advisor_band=self.bands[j])

    def _rescore(self, obs: Observation) -> None:
        evidences = [self.evidence(j, obs.now, obs.history_prices) for j in range(len(self.pools))]
        if self.model is None:
            self.risk = np.array([evidence_risk(e, self.horizon_s, **self.evidence_params) for e in evidences])
        else:
            self.risk = self.model.predict_features(np.array([feature_vector(e) for e in evidences], dtype=float))
        self.risk_at = obs.now

    def _backoff(self, now: float) -> set[str]:
        blocked = set(self.backoff.blocked(self.log, now))
        if self.ondemand_backoff == "all" or self.current not in (None, ONDEMAND):
            return blocked
        if self.ondemand_backoff == "none":
            return set()
        return {p for p in blocked if _last_setback(self.log.get(p, ()), now) is not ObservationKind.LAUNCH_REFUSED}

    # -- deciding --------------------------------------------------------------------------------

    def config(self) -> DecisionConfig:
        return DecisionConfig.for_service(self.boot_s(), self.penalty, warning_s=self.warning_s,
                                          horizon_s=self.horizon_s, **self.rails)

    def _options(self, obs: Observation) -> list[PoolOption]:
        blocked = self._backoff(obs.now)
        return [PoolOption(p, float(obs.prices[j]) if np.isfinite(obs.prices[j]) else None,
                           float(self.risk[j]) if np.isfinite(self.risk[j]) else None,
                           available=p not in blocked)
                for j, p in enumerate(self.pools)]

    def first_choice(self, obs: Observation) -> list[str]:
        """Ranked pools (then on-demand): the simulator starts in the first one that launches."""
        self._learn(obs)
        self._rescore(obs)
        now = _aware(obs.time)
        decision = decide(Situation(ONDEMAND, now), self._options(obs), self.ondemand, now,
                          replace(self.config(), hold_cap_h=1e9))
        ranked = [decision.target, *decision.fallbacks] if decision.target != ONDEMAND else []
        if self.fleet > 1 and ranked:  # agents of a fleet spread over the best pools
            k = self.member % len(ranked)
            ranked = ranked[k:] + ranked[:k]
        return [*ranked, ONDEMAND]

    def _situation(self, obs: Observation, now: datetime) -> Situation:
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

    def _await(self, booting, obs: Observation) -> Action:
        """Let the only replacement finish booting: like production, which queues no new command while
        one is in flight (``chalicelib.decisions.command_for``). Redirecting it now would restart the
        boot with nothing serving, i.e. trade a known remaining boot for a full one plus a launch that
        may be refused; a warning on it is what makes the next decision."""
        self.current = booting.pool
        self.last_reason = f"waiting for the replacement in {booting.pool} to boot (nothing else serves)"
        standby = obs.standby
        keep = standby.pool if standby is not None and not standby.warned and standby.pool != booting.pool else None
        return Action(primary=booting.pool, standby=keep)

    def act(self, obs: Observation) -> Action:
        self._learn(obs)
        setback = self.rescore_on_setback and any(o.negative for o in obs.observations)
        if obs.now - self.risk_at >= self.risk_refresh_s or setback:
            self._rescore(obs)
        now = _aware(obs.time)
        booting = _sole_replacement(obs)
        if booting is not None:
            return self._await(booting, obs)
        situation = self._situation(obs, now)
        decision = decide(situation, self._options(obs), self.ondemand, now, self.config())
        if decision.target != situation.current:
            if decision.voluntary_switch:
                self.switches.append(now)
            self.since = now
        elif self.since is None:
            self.since = now
        self.current = decision.target
        self.last_reason = decision.reason
        standby = decision.standby if decision.standby != decision.target else None
        return Action(primary=decision.target, standby=standby,
                      fallbacks=tuple(f for f in decision.fallbacks if f != decision.target))


def _last_setback(observations, now: float):
    """Kind of the pool's latest refusal, warning or AWS stop at or before ``now`` (None: none)."""
    latest = max((o for o in observations if o.at <= now and o.kind in NEGATIVE_KINDS), key=lambda o: o.at, default=None)
    return None if latest is None else latest.kind



def _sole_replacement(obs: Observation):
    """The replacement booting while nothing else will serve (no primary, or a warned one), else None."""
    pending, primary = obs.pending, obs.primary
    if pending is None or pending.warned or (primary is not None and not primary.warned):
        return None
    return pending


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class OursModelPolicy(OursPolicy):
    """``ours`` with the trained risk model instead of the evidence estimate."""

    name = "ours_model"

    def __init__(self, **kwargs):
        super().__init__(train=True, **kwargs)


register_policy("ours", OursPolicy)
register_policy("ours_model", OursModelPolicy)
