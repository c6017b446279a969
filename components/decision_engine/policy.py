"""The decision policy: the placement with the lowest expected cost, with reasons.

Expected cost per hour = price + hazard × what an interruption costs this service (see
:class:`~components.decision_engine.model.DecisionConfig`). On-demand costs its price and never
breaks. A move is made when its saving per hour, over the time the new placement is expected to last,
repays the switch's overlap:

- a warned instance is replaced at once (a ready standby first, else the ranked pools, else
  on-demand), never blocked by any rail;
- on on-demand, the service returns to the best pool at the first decision where the move repays
  itself (on-demand is a bridge, not a destination); rails other than ``risk_recover`` do not hold it;
- on spot, a pool that now costs more than on-demand (in expectation) is left for the best pool (within
  the switch limits) or on-demand; a cheaper pool is taken when it repays the switch and the user's rails
  (minimum saving, minimum time in a pool, switch limits, cooldown) allow.

Every decision lists ``fallbacks``: the next pools (then on-demand) a launch tries, in order, when
the target refuses, so one refused launch costs nothing but the call. Pools the caller marks
unavailable (no fresh price, or in capacity back-off) are never targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from components.decision_engine.costs import expected_hold_hours, expected_hourly_cost, switch_cost
from components.decision_engine.errors import InvalidDecisionInputError
from components.decision_engine.limits import blocked_by_limits, held_long_enough
from components.decision_engine.model import (
    ONDEMAND,
    Decision,
    DecisionAction,
    DecisionConfig,
    PoolOption,
    Situation,
)
from components.decision_engine.standby import choose_standby


def _usable(options: Sequence[PoolOption]) -> tuple[dict[str, PoolOption], dict[str, PoolOption]]:
    """(pools that may be targets, every priced pool incl. the current one's even if marked unavailable)."""
    seen: set[str] = set()
    usable, priced = {}, {}
    for o in options:
        if o.pool_id in seen or o.pool_id == ONDEMAND:
            raise InvalidDecisionInputError(f"duplicate or reserved pool id {o.pool_id!r}", field="pools")
        seen.add(o.pool_id)
        if o.price is not None and o.risk is not None and o.price > 0 and math.isfinite(o.price):
            priced[o.pool_id] = o
            if o.available:
                usable[o.pool_id] = o
    return usable, priced


def decide(situation: Situation, options: Sequence[PoolOption], ondemand_price: float, now: datetime,
           config: DecisionConfig) -> Decision:
    """Decide where the primary should run, what to try if that launch is refused, and the standby.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> pools = [PoolOption("m5.large.eu-west-1a", 0.04, 0.05), PoolOption("m5.large.eu-west-1b", 0.02, 0.05)]
    >>> d = decide(Situation(ONDEMAND, now), pools, 0.096, now, DecisionConfig(standby_enabled=False))
    >>> d.action.value, d.target, d.fallbacks
    ('to_spot', 'm5.large.eu-west-1b', ('m5.large.eu-west-1a',))
    """
    if not ondemand_price > 0:
        raise InvalidDecisionInputError("the on-demand price must be positive", field="ondemand_price")
    usable, priced = _usable(options)
    costs = {pid: expected_hourly_cost(o, config) for pid, o in priced.items()}
    costs[ONDEMAND] = ondemand_price
    # Pools worth being in at all: cheaper than on-demand in expectation, and within the risk rail.
    ranked = [pid for _, pid in sorted((costs[pid], pid) for pid, o in usable.items()
                                       if costs[pid] < ondemand_price and o.risk <= config.risk_ceiling)]
    current = situation.current
    if situation.warned and current != ONDEMAND:
        action, target, fallbacks, reason = _replace(situation, ranked, costs)
    elif current == ONDEMAND:
        action, target, fallbacks, reason = _from_ondemand(situation, usable, ranked, costs, ondemand_price,
                                                           config)
    else:
        action, target, fallbacks, reason = _from_spot(situation, priced, ranked, costs, ondemand_price,
                                                       now, config)
    safe = {pid: usable[pid] for pid in ranked}
    standby, standby_reason = choose_standby(target, safe, {**usable, **priced}, config)
    target_risk = priced[target].risk if target in priced else None
    return Decision(action=action, target=target, standby=standby, reason=f"{reason}; {standby_reason}",
                    fallbacks=tuple(fallbacks),
                    expected_cost={k: round(v, 6) for k, v in costs.items() if math.isfinite(v)},
                    risk=target_risk)


def _replace(situation: Situation, ranked: list[str], costs: dict[str, float]):
    current = situation.current
    others = [pid for pid in ranked if pid != current]
    if situation.standby and situation.standby_ready and situation.standby != current:
        rest = [pid for pid in others if pid != situation.standby]
        return (DecisionAction.REPLACE, situation.standby, [*rest, ONDEMAND],
                f"interruption warning on {current}: promoting the ready standby in {situation.standby}")
    if not others:
        return (DecisionAction.REPLACE, ONDEMAND, [],
                f"interruption warning on {current} and no other pool is cheaper than on-demand in "
                f"expectation: replacing with on-demand")
    best = others[0]
    return (DecisionAction.REPLACE, best, [*others[1:], ONDEMAND],
            f"interruption warning on {current}: replacing in {best} (expected {costs[best]:.4f} $/h)")


def _repays(gain_per_h: float, option: PoolOption, config: DecisionConfig) -> tuple[bool, float, float]:
    hold = expected_hold_hours(option, config)
    cost = switch_cost(option.price, config)
    return gain_per_h * hold > cost, hold, cost


def _from_ondemand(situation: Situation, usable: dict[str, PoolOption], ranked: list[str],
                   costs: dict[str, float], ondemand_price: float, config: DecisionConfig):
    passing = [pid for pid in ranked if usable[pid].risk <= config.risk_recover
               and _repays(ondemand_price - costs[pid], usable[pid], config)[0]
               and (ondemand_price - costs[pid]) / ondemand_price * 100 >= config.min_savings_percent]
    if not passing:
        why = ("no pool is cheaper than on-demand in expectation" if not ranked
               else f"no pool repays the move yet (best {ranked[0]} at {costs[ranked[0]]:.4f} $/h)")
        return DecisionAction.STAY, ONDEMAND, [], f"stay on on-demand: {why}"
    best = passing[0]
    percent = (ondemand_price - costs[best]) / ondemand_price * 100
    return (DecisionAction.TO_SPOT, best, passing[1:],
            f"back to spot in {best}: expected {costs[best]:.4f} $/h vs on-demand {ondemand_price:.4f} $/h "
            f"({percent:.1f}% saved, risk {usable[best].risk:.2f})")


def _from_spot(situation: Situation, priced: dict[str, PoolOption], ranked: list[str],
               costs: dict[str, float], ondemand_price: float, now: datetime, config: DecisionConfig):
    current = situation.current
    here = costs.get(current, math.inf)
    others = [pid for pid in ranked if pid != current]
    too_risky = current in priced and priced[current].risk > config.risk_ceiling
    if not here < ondemand_price or too_risky:
        why = (f"{current} has no current price" if current not in priced
               else f"{current} risk {priced[current].risk:.2f} is above the ceiling {config.risk_ceiling:.2f}"
               if too_risky else f"{current} costs {here:.4f} $/h in expectation, more than on-demand")
        if not others:
            return DecisionAction.TO_ONDEMAND, ONDEMAND, [], f"to on-demand: {why} and no pool is cheaper"
        blocked = blocked_by_limits(situation, now, config)
        if blocked:
            return DecisionAction.TO_ONDEMAND, ONDEMAND, [], f"to on-demand: {why}; no pool switch possible ({blocked})"
        return (DecisionAction.SWITCH_POOL, others[0], [*others[1:], ONDEMAND],
                f"leave {current}: {why}; {others[0]} at {costs[others[0]]:.4f} $/h")
    cheaper = [pid for pid in others if costs[pid] < here]
    if not cheaper:
        return DecisionAction.STAY, current, [], f"stay in {current}: lowest expected cost ({here:.4f} $/h)"
    best = cheaper[0]
    gain = here - costs[best]
    percent = gain / here * 100
    repays, hold, payback = _repays(gain, priced[best], config)
    if not repays:
        return (DecisionAction.STAY, current, [],
                f"stay in {current}: {best} saves {gain:.4f} $/h, {gain * hold:.4f} $ over the {hold:.1f} h it "
                f"is expected to last, less than the {payback:.4f} $ switch")
    if percent < config.min_savings_percent:
        return (DecisionAction.STAY, current, [],
                f"stay in {current}: {best} is only {percent:.1f}% cheaper (< {config.min_savings_percent:g}%)")
    if not held_long_enough(situation, now, config):
        return (DecisionAction.STAY, current, [],
                f"stay in {current}: in this pool for less than {config.min_pool_duration_hours:g} h")
    blocked = blocked_by_limits(situation, now, config)
    if blocked:
        return DecisionAction.STAY, current, [], f"stay in {current}: {blocked}"
    return (DecisionAction.SWITCH_POOL, best, cheaper[1:],
            f"switch {current} → {best}: expected {here:.4f} → {costs[best]:.4f} $/h ({percent:.1f}% saved)")
