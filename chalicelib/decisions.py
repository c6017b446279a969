"""Decisions for one agent from what the tables know: prices, risk scores, switches, settings.

Shared by the decision cycle (scheduled) and the legacy ``decide`` / ``switch-recommendation`` /
``issue-switch-command`` routes, so every path decides the same way and records the same evidence.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from components.command_tracker import Command, CommandConflictError, CommandPriority
from components.decision_engine import (
    ONDEMAND,
    Decision,
    DecisionAction,
    DecisionConfig,
    PoolOption,
    Situation,
    decide,
)
from components.risk_model import DEFAULT_ADVISOR_BAND, advisor_prior

from chalicelib import bootstrap, command_queue
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import switches as switch_repo
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.paging import Page, decode_token, encode_token
from chalicelib.settings import get_settings
from chalicelib.tables.risk import DecisionTable

PRICE_FRESH_FOR = timedelta(hours=2)
COOLDOWN_S = 600
SWITCH_OVERHEAD_S = 300  # a replacement boots for ~5 min while the old one still serves
INTERRUPTION_GAP_S = 180  # a fresh launch at a 2-minute warning serves 5 min later
DOWNTIME_PENALTY_DAYS = 24  # an hour down costs a day of on-demand (as in the backtest)


@dataclass(frozen=True)
class Evaluation:
    """A decision with the inputs it was made from."""

    decision: Decision
    situation: Situation
    options: tuple[PoolOption, ...]
    ondemand_price: float | None


class NoMarketDataError(Exception):
    """No price is known for the agent's instance type yet (the agent has not reported)."""


def decision_config(agent: AgentRecord, ondemand_price: float) -> DecisionConfig:
    """The agent's guardrails as a DecisionConfig (legacy agent_configs names)."""
    c = agent.config
    ceiling = float(c.get("risk_threshold", 0.30))
    return DecisionConfig(
        min_savings_percent=float(c.get("min_savings_percent", 15)), risk_ceiling=ceiling,
        risk_recover=round(ceiling * 2 / 3, 6), horizon_s=get_settings().risk_horizon_s,
        min_pool_duration_hours=float(c.get("min_pool_duration_hours", 2)),
        max_switches_per_day=int(c.get("max_switches_per_day", 3)),
        max_switches_per_week=int(c.get("max_switches_per_week", 10)), cooldown_s=COOLDOWN_S,
        switch_overhead_s=SWITCH_OVERHEAD_S, interruption_gap_s=INTERRUPTION_GAP_S,
        downtime_penalty_per_hour=DOWNTIME_PENALTY_DAYS * ondemand_price)


def market(agent: AgentRecord, now: datetime) -> tuple[tuple[PoolOption, ...], float | None]:
    """Pool options of the agent's type and region (one GSI query) and the on-demand price."""
    horizon = get_settings().risk_horizon_s
    options, ondemand = [], None
    for pool in pool_repo.pools_of_type(agent.region or "", agent.instance_type or ""):
        fresh = pool.at is not None and now - pool.at <= PRICE_FRESH_FOR
        risk = pool.risk if pool.risk is not None else advisor_prior(DEFAULT_ADVISOR_BAND, horizon)
        options.append(PoolOption(pool.pool_id, float(pool.price) if fresh and pool.price is not None else None,
                                  risk, available=fresh))
        if pool.ondemand_price is not None:
            ondemand = max(ondemand or 0.0, float(pool.ondemand_price))
    return tuple(options), ondemand


def situation(agent: AgentRecord, now: datetime) -> Situation:
    """Where the agent is and its switches of the last week."""
    current = agent.current_pool_id if agent.current_mode == "spot" and agent.current_pool_id else ONDEMAND
    switches = tuple(s.initiated_at for s in switch_repo.for_agent_since(agent.agent_id, now - timedelta(days=7)))
    return Situation(current=current, since=agent.last_switch_at or agent.registered_at,
                     recent_switches=switches)


def evaluate(agent: AgentRecord, now: datetime) -> Evaluation:
    """Decide for one agent from stored data; NoMarketDataError when no price is known yet."""
    options, ondemand = market(agent, now)
    if ondemand is None or not options:
        raise NoMarketDataError(f"no prices known for {agent.instance_type} in {agent.region} yet")
    where = situation(agent, now)
    decision = decide(where, options, ondemand, now, decision_config(agent, ondemand))
    return Evaluation(decision, where, options, ondemand)


def record(agent: AgentRecord, evaluation: Evaluation, source: str, now: datetime,
           command_id: str | None = None) -> str:
    """Store the decision with its inputs (TTL); returns its key."""
    d = evaluation.decision
    key = f"{now.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{uuid.uuid4().hex[:8]}"
    DecisionTable(
        agent.agent_id, key, client_id=agent.client_id, decided_at=now, source=source,
        current=evaluation.situation.current, action=d.action.value, target=d.target, standby=d.standby,
        reason=d.reason, risk=d.risk, expected_cost=d.expected_cost,
        inputs={"ondemand_price": evaluation.ondemand_price,
                "pools": [{"pool_id": o.pool_id, "price": o.price, "risk": o.risk, "available": o.available}
                          for o in evaluation.options],
                "recent_switches": len(evaluation.situation.recent_switches)},
        command_id=command_id,
        expires_at=now + timedelta(days=get_settings().decision_retention_days)).save()
    return key


def command_for(agent: AgentRecord, decision: Decision, now: datetime, *, trigger: str,
                command_id: str | None = None) -> Command | None:
    """Queue the switch a decision asks for (None for 'stay' or when a command is already active).

    A move to on-demand because every pool is too risky is urgent (ML_URGENT = 50); other switches are
    ML_NORMAL (25). ``command_id`` makes a retried cycle idempotent.
    """
    if decision.action in (DecisionAction.STAY, DecisionAction.REPLACE) or not agent.instance_id:
        return None
    store = bootstrap.command_store()
    if store.active_for_agent(agent.agent_id, limit=1):
        return None
    urgent = decision.action is DecisionAction.TO_ONDEMAND
    command = command_queue.switch_command(
        agent, target_mode="ondemand" if decision.target == ONDEMAND else "spot",
        target_pool_id=decision.target, now=now, command_id=command_id, trigger=trigger,
        priority=CommandPriority.ML_URGENT if urgent else CommandPriority.ML_NORMAL, created_by="decision-engine")
    try:
        store.add(command)
    except CommandConflictError:
        return store.get(agent.agent_id, command.command_id)
    return command


def history(agent_id: str, limit: int, next_token: str | None):
    """An agent's decisions, newest first (paginated)."""
    start = decode_token(next_token, partition_attr="agent_id", partition_value=agent_id,
                         key_attrs=("agent_id", "decision_key"))
    result = DecisionTable.query(agent_id, scan_index_forward=False, limit=limit, last_evaluated_key=start)
    return Page(list(result), encode_token(result.last_evaluated_key))
