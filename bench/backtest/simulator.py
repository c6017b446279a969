"""Event-exact replay of one policy over the evaluation window, under the same rules for everyone.

Time is continuous; a policy acts only at tick starts. At the start of tick i the simulator

1. delivers warnings: every running spot instance (primary, pending replacement or standby) whose pool
   has ``available[i] == 0`` is told it stops at ``t_i + warning_s`` (a warning on the primary or on a
   pending replacement counts as an interruption; one on a standby does not);
2. asks the policy for an :class:`Action` (see :func:`_Run.apply` for what each action does);
3. advances to ``t_{i+1}``, handling in time order the instants where a replacement starts serving
   (the old primary is terminated right then: make-before-break) and where warned instances stop.

Every instance is billed from its launch to its end at each tick's price; serving time is the union of
the primaries' serving intervals, so downtime is the window length minus it. The policy is handed a
:class:`~bench.backtest.guard.PastOnlyTrace` (unless it declares ``sees_future``) whose cursor follows
the current tick, so reading a later row raises.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from bench.backtest.guard import ObservationLedger, ObservedRow, PastOnlyTrace
from bench.backtest.market import Market
from bench.backtest.model import ONDEMAND, Action, InstanceView, Observation, Rules
from components.capacity import HELD_INTERVAL_S, CapacityObservation, ObservationKind

REFUSAL_CODE = "InsufficientInstanceCapacity"  # what RunInstances answers when a pool has no capacity

INF = math.inf
OD = -1  # column of on-demand in Market.rate


class _Instance:
    """One running instance. ``pool`` is a column index (-1 = on-demand); times are epoch seconds."""

    __slots__ = ("pool", "launched_at", "ready_at", "stop_at", "warned", "serve_from", "_view", "held_at")

    def __init__(self, pool: int, launched_at: float, ready_at: float):
        self.pool, self.launched_at, self.ready_at = pool, launched_at, ready_at
        self.stop_at, self.warned, self.serve_from, self._view = INF, False, None, None
        self.held_at = launched_at  # when a HELD observation was last made for it

    def view(self, names: list[str]) -> InstanceView:
        if self._view is None:
            self._view = InstanceView(names[self.pool] if self.pool >= 0 else ONDEMAND, self.launched_at,
                                      self.ready_at, self.warned, None if self.stop_at == INF else self.stop_at)
        return self._view


@dataclass
class PolicyResult:
    """One policy's outcome over the evaluation window (the JSON fields plus a few diagnostics)."""

    name: str
    cost_usd: float
    ondemand_cost_usd: float
    downtime_s: float
    interruptions: int
    switches: int
    score: float
    launches: int = 0
    failed_launches: int = 0
    score_ratio_to_oracle: float | None = None
    serving_timeline: list[tuple[float, float, str]] | None = None

    @property
    def cost_pct_of_ondemand(self) -> float:
        return 100.0 * self.cost_usd / self.ondemand_cost_usd if self.ondemand_cost_usd else math.nan

    def as_dict(self) -> dict:
        """The issue's per-policy JSON object."""
        return {"cost_usd": self.cost_usd, "ondemand_cost_usd": self.ondemand_cost_usd,
                "cost_pct_of_ondemand": self.cost_pct_of_ondemand, "downtime_s": self.downtime_s,
                "interruptions": self.interruptions, "switches": self.switches, "score": self.score,
                "score_ratio_to_oracle": self.score_ratio_to_oracle}

    def diagnostics(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in ("launches", "failed_launches")}


def simulate(trace, policy, rules: Rules, start: int, end: int, initial: str | None = None, *,
             market: Market | None = None, timeline: bool = False, fleet: int = 1,
             factory=None) -> PolicyResult:
    """Replay ``policy`` over ticks ``[start, end)`` of ``trace`` and score it.

    ``initial`` is where the already-serving first instance sits; by default the policy's own first
    choice (``policy.first_choice(obs)`` if it has one, else ``policy.act(obs).primary`` on the first
    observation with no instance). It must be obtainable at ``start``.

    ``fleet`` > 1 runs that many agents of the policy side by side (``factory()`` makes each further
    one), sharing one :class:`ObservationLedger`: each sees what the others observed. The result is
    the mean per agent (counts rounded).
    """
    market = market or Market(trace)
    ledger = ObservationLedger()
    members = [policy] + [factory() for _ in range(fleet - 1)] if fleet > 1 else [policy]
    if fleet > 1 and factory is None:
        raise ValueError("a fleet needs a factory for its other agents")
    warm = _warmup_start(policy, market, start)
    if warm < start:  # the product was running before the window: its own observations carry over
        _play([_Run(trace, p, rules, warm, start, market, False, ledger, member=k, fleet=fleet)
               for k, p in enumerate(members)], warm, start)
    runs = [_Run(trace, p, rules, start, end, market, timeline, ledger, member=k, fleet=fleet)
            for k, p in enumerate(members)]
    _play(runs, start, end, initial)
    results = [run.result() for run in runs]
    if fleet == 1:
        return results[0]
    mean = lambda attr: sum(getattr(r, attr) for r in results) / fleet  # noqa: E731
    return PolicyResult(policy.name, mean("cost_usd"), mean("ondemand_cost_usd"), mean("downtime_s"),
                        round(mean("interruptions")), round(mean("switches")), mean("score"),
                        round(mean("launches")), round(mean("failed_launches")))


def _warmup_start(policy, market: Market, start: int) -> int:
    """First tick of the unscored run before the window: ``policy.warmup_s`` back (observed policies only)."""
    seconds = float(getattr(policy, "warmup_s", 0.0) or 0.0)
    if seconds <= 0 or getattr(policy, "observability", "full") != "observed":
        return start
    t = float(market.stamps[start]) - seconds
    return min(start, next(i for i in range(start + 1) if float(market.stamps[i]) >= t))


def _play(runs, start: int, end: int, initial: str | None = None) -> None:
    for run in runs:
        run.begin(initial)
    for i in range(start, end):
        for run in runs:
            run.warn_and_hold(i)
        for run in runs:
            run.step(i)


class _Run:
    def __init__(self, trace, policy, rules: Rules, start: int, end: int, market: Market, timeline: bool,
                 ledger: ObservationLedger | None = None, member: int = 0, fleet: int = 1):
        if not 0 <= start < end <= market.ticks:
            raise ValueError(f"bad window [{start}, {end}) for {market.ticks} ticks")
        self.trace, self.policy, self.rules, self.m = trace, policy, rules, market
        self.start, self.end = start, end
        self.t0, self.t1 = float(market.stamps[start]), market.end_time(end)
        self.names = market.pools
        self.index = {name: j for j, name in enumerate(self.names)}
        self.index[ONDEMAND] = OD
        self.primary: _Instance | None = None
        self.pending: _Instance | None = None
        self.standby: _Instance | None = None
        self.cost = self.serving = 0.0
        self.interruptions = self.switches = self.launches = self.failed = 0
        self.timeline: list[tuple[float, float, str]] | None = [] if timeline else None
        self.tick = start
        self.ledger = ledger if ledger is not None else ObservationLedger()
        self.observed = getattr(policy, "observability", "full") == "observed"
        self.member, self.fleet = member, fleet
        self.delivered = 0  # ledger events already handed to the policy

    # -- bookkeeping -------------------------------------------------------------------------------

    def _col(self, name: str) -> int:
        try:
            return self.index[name]
        except KeyError:
            raise ValueError(f"{self.policy.name}: unknown pool {name!r}") from None

    def _finish(self, inst: _Instance, at: float) -> None:
        """The instance ends at ``at`` (stopped or terminated): bill it and count its serving time."""
        until = min(at, self.t1)
        self.cost += self.m.cost(inst.pool, inst.launched_at, until)
        if inst.serve_from is not None and until > inst.serve_from:
            self.serving += until - max(inst.serve_from, self.t0)
            if self.timeline is not None:
                self.timeline.append((inst.serve_from, until,
                                      self.names[inst.pool] if inst.pool >= 0 else ONDEMAND))

    def _see(self, col: int, kind: ObservationKind, now: float, value: int, code: str | None = None) -> None:
        self.ledger.see(self.tick, col, value)
        self.ledger.add(CapacityObservation(self.names[col], kind, now, code=code, source=f"agent-{self.member}"))

    def _launch(self, col: int, now: float) -> _Instance | None:
        """A launch attempt at the current tick: a spot pool unavailable now fails (nothing, no cost).
        Either answer is an observation of the pool."""
        if col >= 0 and not self.m.available[self.tick, col]:
            self.failed += 1
            self._see(col, ObservationKind.LAUNCH_REFUSED, now, 0, REFUSAL_CODE)
            return None
        self.launches += 1
        if col >= 0:
            self._see(col, ObservationKind.LAUNCH_SUCCEEDED, now, 1)
        return _Instance(col, now, now + self.rules.boot_s)

    def _launch_any(self, cols: list[int], now: float) -> _Instance | None:
        """Try ranked candidates in order in this tick (a ready standby in one of them is promoted)."""
        for col in cols:
            standby = self.standby
            if standby is not None and not standby.warned and standby.pool == col:
                self._promote(now)
                return self.pending
            inst = self._launch(col, now)
            if inst is not None:
                return inst
        return None

    def _promote(self, now: float) -> None:
        """The standby becomes the replacement; it serves ``promote_s`` from now (or once it is ready)."""
        inst, self.standby = self.standby, None
        inst.ready_at = max(inst.ready_at, now + self.rules.promote_s)
        inst._view = None
        self.pending = inst

    # -- one tick ----------------------------------------------------------------------------------

    def _warn(self, i: int, now: float) -> None:
        row = self.m.available[i]
        for role, inst in (("primary", self.primary), ("pending", self.pending), ("standby", self.standby)):
            if inst is not None and inst.pool >= 0 and not inst.warned and not row[inst.pool]:
                inst.warned, inst.stop_at, inst._view = True, now + self.rules.warning_s, None
                self._see(inst.pool, ObservationKind.INTERRUPTION_WARNING, now, 0)
                if role != "standby":
                    self.interruptions += 1

    def _hold(self, i: int, now: float) -> None:
        """Instances running unwarned show their pool is up; every HELD_INTERVAL_S that is a HELD."""
        for inst in (self.primary, self.pending, self.standby):
            if inst is not None and inst.pool >= 0 and not inst.warned:
                self.ledger.see(i, inst.pool, 1)
                if now - inst.held_at >= HELD_INTERVAL_S:
                    inst.held_at = now
                    self.ledger.add(CapacityObservation(self.names[inst.pool], ObservationKind.HELD, now,
                                                        source=f"agent-{self.member}"))

    def apply(self, action: Action, now: float) -> None:
        """Carry out an action at the current tick.

        Primary: if the primary is already in the target pool, nothing is replaced (even when it was
        warned: asking for the pool you are in means riding it out) and any pending replacement is
        cancelled. Else a pending replacement already in the target is kept. Else a replacement is made:
        the standby is promoted if it is in the target (ready, or as soon as it is), otherwise a new
        instance is launched there (which fails if the pool is unavailable now). With no primary left,
        every target but the pending one's means a launch attempt.
        If after that the primary is warned or gone with no replacement coming and a healthy standby
        exists, the standby is promoted anyway (automatic failover). Standby: None terminates it; a
        healthy standby already in the requested pool is kept; otherwise the old one is terminated and a
        new one launched. A standby request for the pool the primary ends up in (only possible after an
        automatic failover) is ignored.
        """
        if not isinstance(action, Action):
            raise TypeError(f"{self.policy.name}: act() must return an Action, got {action!r}")
        target = self._col(action.primary)
        want_standby = None if action.standby is None else self._col(action.standby)
        if want_standby is not None and want_standby == target:
            raise ValueError(f"{self.policy.name}: standby must differ from the primary's pool")
        primary, pending, standby = self.primary, self.pending, self.standby
        if primary is not None and primary.pool == target:
            if pending is not None:
                self._finish(pending, now)
                self.pending = None
        elif not (pending is not None and pending.pool == target):
            if pending is not None:
                self._finish(pending, now)
                self.pending = None
            if standby is not None and not standby.warned and standby.pool == target:
                self._promote(now)
            else:
                self.pending = self._launch_any([target, *(self._col(f) for f in action.fallbacks)], now)
        primary, standby = self.primary, self.standby
        if ((primary is None or primary.warned) and self.pending is None and standby is not None
                and not standby.warned):
            self._promote(now)
        standby = self.standby
        upcoming = self.pending if self.pending is not None else self.primary
        if want_standby is None or (upcoming is not None and upcoming.pool == want_standby):
            if standby is not None:
                self._finish(standby, now)
                self.standby = None
        elif standby is None or standby.warned or standby.pool != want_standby:
            if standby is not None:
                self._finish(standby, now)
            self.standby = self._launch(want_standby, now)

    def _advance(self, until: float) -> None:
        """Handle, in time order, every start-of-serving and stop up to and including ``until``."""
        while True:
            when, kind = INF, -1
            standby, pending, primary = self.standby, self.pending, self.primary
            if standby is not None and standby.stop_at <= until:
                when, kind = standby.stop_at, 0
            if pending is not None:
                if pending.stop_at <= pending.ready_at:
                    if pending.stop_at <= until and pending.stop_at < when:
                        when, kind = pending.stop_at, 1
                elif pending.ready_at <= until and pending.ready_at < when:
                    when, kind = pending.ready_at, 2
            if primary is not None and primary.stop_at <= until and primary.stop_at < when:
                when, kind = primary.stop_at, 3
            if kind < 0:
                return
            if kind == 0:
                self._finish(standby, when)
                self.standby = None
            elif kind == 1:
                self._finish(pending, when)
                self.pending = None
            elif kind == 2:
                if primary is not None:
                    self._finish(primary, when)
                pending.serve_from, pending._view = when, None
                self.primary, self.pending = pending, None
                self.switches += 1
            else:
                self._finish(primary, when)
                self.primary = None

    def _observation(self, i: int, now: float) -> Observation:
        m, names = self.m, self.names
        if self.observed:
            available, history = ObservedRow(self.ledger, i, len(names)), self.history
        else:
            available, history = m.available[i], m.available[: i + 1]
        events = tuple(self.ledger.events[self.delivered:])
        self.delivered = len(self.ledger.events)
        return Observation(
            tick=i, time=self.trace.times[i], now=now, tick_s=float(m.tick_s[i]),
            prices=m.prices[i], available=available,
            history_available=history, history_prices=m.prices[: i + 1],
            primary=None if self.primary is None else self.primary.view(names),
            standby=None if self.standby is None else self.standby.view(names),
            pending=None if self.pending is None else self.pending.view(names),
            ondemand_price=m.ondemand_price, pools=names, observations=events)

    # -- the run -----------------------------------------------------------------------------------

    def begin(self, initial: str | None) -> None:
        """Reset the policy and place the already-serving first instance."""
        policy, start, m = self.policy, self.start, self.m
        self.guarded = None
        if getattr(policy, "sees_future", False):
            policy.reset(self.trace, self.rules, start, eval_end=self.end)
        else:
            self.guarded = PastOnlyTrace(self.trace, start - 1, self.ledger if self.observed else None)
            if self.observed:
                self.history = self.guarded.available
            if hasattr(policy, "join_fleet"):
                policy.join_fleet(self.member, self.fleet)
            policy.reset(self.guarded, self.rules, start)
            self.guarded.cursor.row = start
        self.tick = start
        if initial is None:
            obs = self._observation(start, self.t0)
            chooser = getattr(policy, "first_choice", None)
            initial = chooser(obs) if chooser is not None else policy.act(obs).primary
        ranked = [initial] if isinstance(initial, str) else list(initial)
        col = None
        for name in ranked:
            c = self._col(name)
            if self.observed and c >= 0:  # the honest policy learns the answer of each try
                kind = ObservationKind.LAUNCH_SUCCEEDED if m.available[start, c] else ObservationKind.LAUNCH_REFUSED
                self._see(c, kind, self.t0, int(m.available[start, c]),
                          None if m.available[start, c] else REFUSAL_CODE)
            if c < 0 or m.available[start, c]:
                col = c
                break
        if col is None:
            raise ValueError(f"{policy.name}: first choice {ranked!r} is not obtainable at the start")
        self.primary = _Instance(col, self.t0, self.t0)
        self.primary.serve_from = self.t0

    def warn_and_hold(self, i: int) -> None:
        """Start of tick i, before any agent acts: warnings land, running instances are seen."""
        self.tick = i
        now = float(self.m.stamps[i])
        if self.guarded is not None:
            self.guarded.cursor.row = i
        self._warn(i, now)
        self._hold(i, now)

    def step(self, i: int) -> None:
        """The policy acts at the start of tick i; then time runs to the next tick."""
        m = self.m
        self.tick = i
        now = float(m.stamps[i])
        nxt = float(m.stamps[i + 1]) if i + 1 < m.ticks else self.t1
        self.apply(self.policy.act(self._observation(i, now)), now)
        p = self.primary
        if self.pending is not None or self.standby is not None or (p is not None and p.stop_at <= nxt):
            self._advance(nxt)

    def result(self) -> PolicyResult:
        m = self.m
        for inst in (self.primary, self.pending, self.standby):
            if inst is not None:
                self._finish(inst, self.t1)
        window = self.t1 - self.t0
        downtime = window - self.serving
        downtime = 0.0 if downtime < 1e-6 else downtime  # float dust from summing serving intervals
        ondemand_cost = m.ondemand_price * window / 3600.0
        score = self.cost + self.rules.downtime_penalty_per_hour * downtime / 3600.0
        return PolicyResult(self.policy.name, self.cost, ondemand_cost, downtime, self.interruptions,
                            self.switches, score, self.launches, self.failed,
                            serving_timeline=self.timeline)
