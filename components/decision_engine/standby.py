"""Where (and whether) to keep a hot standby: always in a different pool than the primary."""

from __future__ import annotations

from components.decision_engine.costs import hazard_per_hour
from components.decision_engine.model import ONDEMAND, DecisionConfig, PoolOption


def standby_value_per_hour(primary: PoolOption, config: DecisionConfig) -> float:
    """Expected downtime cost a ready standby avoids per hour on this primary ($/h)."""
    if primary.risk is None:
        return 0.0
    rate = hazard_per_hour(primary.risk, config.horizon_s)
    return rate * config.downtime_penalty_per_hour * config.interruption_gap_s / 3600.0


def choose_standby(target: str, usable: dict[str, PoolOption], config: DecisionConfig) -> tuple[str | None, str]:
    """The standby pool for a primary in ``target`` (None when it is not worth it) and why.

    A standby pays when the downtime it avoids is worth more than it costs; it is placed in the
    cheapest safe pool other than the primary's (co-interruptions cluster by pool).
    """
    if not config.standby_enabled or target == ONDEMAND or target not in usable:
        return None, "no standby: the primary is on-demand" if target == ONDEMAND else "no standby"
    candidates = [o for pid, o in usable.items()
                  if pid != target and o.risk is not None and o.risk <= config.risk_ceiling]
    if not candidates:
        return None, "no standby: no other safe pool"
    best = min(candidates, key=lambda o: (o.price, o.risk, o.pool_id))
    value = standby_value_per_hour(usable[target], config)
    if value < config.standby_value_ratio * best.price:
        return None, (f"no standby: it would avoid {value:.3f} $/h of expected downtime but cost "
                      f"{best.price:.3f} $/h")
    return best.pool_id, (f"standby in {best.pool_id} ({best.price:.3f} $/h) avoids {value:.3f} $/h "
                          f"of expected downtime")
