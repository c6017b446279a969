"""The decision policy (PRODUCT.md §6): stay, switch pool, go to on-demand or come back, with reasons.

Voluntary moves need a gain of at least ``min_savings_percent`` of the current expected cost (pool →
pool) or of the on-demand price (on-demand → spot), must pay back the switch's overlap within the
minimum pool duration, and respect the minimum time in the current pool, the daily/weekly limits and
the cooldown. Protective moves (leaving a pool that became too risky for on-demand, replacing an
instance that got an interruption warning) are never blocked by those limits and do not count
against them. Every decision carries its reason in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from components.decision_engine.costs import expected_hourly_cost, switch_cost
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


def _usable(options: Sequence[PoolOption]) -> dict[str, PoolOption]:
    seen: set[str] = set()
    usable = {}
    for o in options:
        if o.pool_id in seen or o.pool_id == ONDEMAND:
            raise InvalidDecisionInputError(f"duplicate or reserved pool id {o.pool_id!r}", field="pools")
        seen.add(o.pool_id)
        if o.available and o.price is not None and o.risk is not None and o.price > 0 and math.isfinite(o.price):
            usable[o.pool_id] = o
    return usable


def decide(situation: Situation, options: Sequence[PoolOption], ondemand_price: float, now: datetime,
           config: DecisionConfig) -> Decision:
    """Decide where the primary should run and whether to keep a standby.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> pools = [PoolOption("m5.large.eu-west-1a", 0.04, 0.05), PoolOption("m5.large.eu-west-1b", 0.02, 0.05)]
    >>> d = decide(Situation(ONDEMAND, now), pools, 0.096, now, DecisionConfig(standby_enabled=False))
    >>> d.action.value, d.target
    ('to_spot', 'm5.large.eu-west-1b')
    """
    if not ondemand_price > 0:
        raise InvalidDecisionInputError("the on-demand price must be positive", field="ondemand_price")
    usable = _usable(options)
    costs = {pid: expected_hourly_cost(o, config) for pid, o in usable.items()}
    costs[ONDEMAND] = ondemand_price
    safe = {pid: o for pid, o in usable.items() if o.risk <= config.risk_ceiling}

    if situation.warned and situation.current != ONDEMAND:
        action, target, reason = _replace(situation, safe, costs)
    elif situation.current == ONDEMAND:
        action, target, reason = _from_ondemand(situation, safe, costs, ondemand_price, now, config)
    else:
        action, target, reason = _from_spot(situation, usable, safe, costs, ondemand_price, now, config)

    standby, standby_reason = choose_standby(target, safe, config)
    target_risk = usable[target].risk if target in usable else None
    return Decision(action=action, target=target, standby=standby, reason=f"{reason}; {standby_reason}",
                    expected_cost={k: round(v, 6) for k, v in costs.items() if math.isfinite(v)},
                    risk=target_risk)


def _cheapest(candidates: dict[str, PoolOption], costs: dict[str, float], exclude: str | None = None) -> str | None:
    ranked = sorted((costs[pid], pid) for pid in candidates if pid != exclude)
    return ranked[0][1] if ranked else None


def _replace(situation: Situation, safe: dict[str, PoolOption], costs: dict[str, float]):
    current = situation.current
    if situation.standby and situation.standby_ready and situation.standby != current:
        return (DecisionAction.REPLACE, situation.standby,
                f"interruption warning on {current}: promoting the ready standby in {situation.standby}")
    best = _cheapest(safe, costs, exclude=current)
    if best is None:
        return (DecisionAction.REPLACE, ONDEMAND,
                f"interruption warning on {current} and no other pool is safe: replacing with on-demand")
    return (DecisionAction.REPLACE, best,
            f"interruption warning on {current}: replacing in {best} (expected {costs[best]:.4f} $/h)")


def _from_ondemand(situation: Situation, safe: dict[str, PoolOption], costs: dict[str, float],
                   ondemand_price: float, now: datetime, config: DecisionConfig):
    recovered = {pid: o for pid, o in safe.items() if o.risk <= config.risk_recover}
    best = _cheapest(recovered, costs)
    if best is None:
        why = ("every pool is above the risk ceiling" if not safe
               else f"no pool is below the recovery risk {config.risk_recover:.2f} yet")
        return DecisionAction.STAY, ONDEMAND, f"stay on on-demand: {why}"
    gain = ondemand_price - costs[best]
    percent = gain / ondemand_price * 100
    if percent < config.min_savings_percent:
        return (DecisionAction.STAY, ONDEMAND,
                f"stay on on-demand: {best} would save only {percent:.1f}% (< {config.min_savings_percent:g}%)")
    blocked = blocked_by_limits(situation, now, config)
    if blocked:
        return DecisionAction.STAY, ONDEMAND, f"stay on on-demand: {blocked}"
    return (DecisionAction.TO_SPOT, best,
            f"back to spot in {best}: risk {safe[best].risk:.2f} ≤ {config.risk_recover:.2f}, expected "
            f"{costs[best]:.4f} $/h vs on-demand {ondemand_price:.4f} $/h ({percent:.1f}% saved)")


def _from_spot(situation: Situation, usable: dict[str, PoolOption], safe: dict[str, PoolOption],
               costs: dict[str, float], ondemand_price: float, now: datetime, config: DecisionConfig):
    current = situation.current
    if current not in safe:
        why = (f"{current} has no current price or capacity" if current not in usable
               else f"{current} risk {usable[current].risk:.2f} is above the ceiling {config.risk_ceiling:.2f}")
        best = _cheapest(safe, costs, exclude=current)
        if best is None:
            return DecisionAction.TO_ONDEMAND, ONDEMAND, f"to on-demand: {why} and every pool is above the risk ceiling"
        blocked = blocked_by_limits(situation, now, config)
        if blocked:
            return DecisionAction.TO_ONDEMAND, ONDEMAND, f"to on-demand: {why}; no pool switch possible ({blocked})"
        return DecisionAction.SWITCH_POOL, best, f"leave {current}: {why}; {best} is safe at {costs[best]:.4f} $/h"
    best = _cheapest(safe, costs)
    if best == current:
        return DecisionAction.STAY, current, f"stay in {current}: lowest expected cost ({costs[current]:.4f} $/h)"
    gain = costs[current] - costs[best]
    percent = gain / costs[current] * 100
    if percent < config.min_savings_percent:
        return (DecisionAction.STAY, current,
                f"stay in {current}: {best} is only {percent:.1f}% cheaper (< {config.min_savings_percent:g}%)")
    payback = switch_cost(usable[best].price, config)
    if gain * config.min_pool_duration_hours < payback:
        return (DecisionAction.STAY, current,
                f"stay in {current}: saving {gain:.4f} $/h would not repay the {payback:.4f} $ switch within "
                f"{config.min_pool_duration_hours:g} h")
    if not held_long_enough(situation, now, config):
        return (DecisionAction.STAY, current,
                f"stay in {current}: in this pool for less than {config.min_pool_duration_hours:g} h")
    blocked = blocked_by_limits(situation, now, config)
    if blocked:
        return DecisionAction.STAY, current, f"stay in {current}: {blocked}"
    return (DecisionAction.SWITCH_POOL, best,
            f"switch {current} → {best}: expected {costs[current]:.4f} → {costs[best]:.4f} $/h ({percent:.1f}% saved)")
