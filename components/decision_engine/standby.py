"""Where (and whether) to keep a hot standby: always in a different pool than the primary."""

from __future__ import annotations

from components.decision_engine.costs import expected_hourly_cost, hazard_per_hour
from components.decision_engine.model import ONDEMAND, DecisionConfig, PoolOption


def standby_value_per_hour(primary: PoolOption, config: DecisionConfig) -> float:
    """Expected downtime cost a ready standby avoids per hour on this primary ($/h)."""
    if primary.risk is None:
        return 0.0
    rate = hazard_per_hour(primary.risk, config.horizon_s)
    avoided_s = max(0.0, config.interruption_gap_s - config.promote_s)
    return rate * config.downtime_penalty_per_hour * avoided_s / 3600.0


def choose_standby(target: str, candidates: dict[str, PoolOption], known: dict[str, PoolOption],
                   config: DecisionConfig) -> tuple[str | None, str]:
    """The standby pool for a primary in ``target`` (None when it is not worth it) and why.

    ``candidates`` are the pools a standby may go to (priced, not in back-off, within the rails);
    ``known`` holds the target's own option. A standby pays when the downtime it avoids is worth more
    than it costs; it goes to the candidate with the lowest expected cost other than the primary's
    (co-interruptions cluster by pool), so a pool where standbys keep being lost ranks itself out.
    """
    if not config.standby_enabled or target == ONDEMAND or target not in known:
        return None, "no standby: the primary is on-demand" if target == ONDEMAND else "no standby"
    others = [o for pid, o in candidates.items() if pid != target]
    if not others:
        return None, "no standby: no other pool"
    best = min(others, key=lambda o: (expected_hourly_cost(o, config), o.pool_id))
    value = standby_value_per_hour(known[target], config)
    cost = expected_hourly_cost(best, config)
    if value < config.standby_value_ratio * cost:
        return None, f"no standby: it would avoid {value:.3f} $/h of expected downtime but cost {cost:.3f} $/h"
    return best.pool_id, f"standby in {best.pool_id} ({cost:.3f} $/h) avoids {value:.3f} $/h of expected downtime"
