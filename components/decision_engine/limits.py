"""Switch limits: per day, per week, cooldown, minimum time in a pool."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from components.decision_engine.model import DecisionConfig, Situation


def switches_within(switches: Iterable[datetime], now: datetime, window: timedelta) -> int:
    """How many of the switches happened in (now − window, now]."""
    return sum(1 for s in switches if now - window < s <= now)


def blocked_by_limits(situation: Situation, now: datetime, config: DecisionConfig) -> str | None:
    """Why a voluntary switch may not happen now (None when it may)."""
    day = switches_within(situation.recent_switches, now, timedelta(days=1))
    if day >= config.max_switches_per_day:
        return f"daily switch limit reached ({day}/{config.max_switches_per_day})"
    week = switches_within(situation.recent_switches, now, timedelta(days=7))
    if week >= config.max_switches_per_week:
        return f"weekly switch limit reached ({week}/{config.max_switches_per_week})"
    last = max((s for s in situation.recent_switches if s <= now), default=None)
    if last is not None and (now - last).total_seconds() < config.cooldown_s:
        return f"cooling down after the last switch ({int((now - last).total_seconds())} s < {int(config.cooldown_s)} s)"
    return None


def held_long_enough(situation: Situation, now: datetime, config: DecisionConfig) -> bool:
    """True once the agent has been in its current placement for the minimum pool duration."""
    return (now - situation.since).total_seconds() >= config.min_pool_duration_hours * 3600.0
