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
    BOOT_SAMPLES,
    DEFAULT_BOOT_S,
    ONDEMAND,
    Decision,
    DecisionAction,
    DecisionConfig,
    PoolOption,
    Situation,
    decide,
    measured_boot_s,
)
from components.price_buckets import floor_to
from components.risk_model import DEFAULT_ADVISOR_BAND, advisor_prior

from chalicelib import bootstrap, catalogue, command_queue
from chalicelib.errors import ConflictError, NotFoundError
from chalicelib.repositories import observations
from chalicelib.repositories.dynamo import save_if
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import switches as switch_repo
from chalicelib.repositories.agents import AgentRecord
from chalicelib.repositories.commands import ForceSwitchRaced
from chalicelib.repositories.paging import Page, decode_token, encode_token
from chalicelib.settings import get_settings
from chalicelib.tables.risk import DecisionTable

PRICE_FRESH_FOR = timedelta(hours=2)
COOLDOWN_S = 600
DOWNTIME_PENALTY_DAYS = 24  # an hour down costs a day of on-demand (as in the backtest)


@dataclass(frozen=True)
class Evaluation:
    """A decision with the inputs it was made from."""

    decision: Decision
    situation: Situation
    options: tuple[PoolOption, ...]
    ondemand_price: float | None


class NoMarketDataError(Exception):
    """No price is known for the agent's instance types yet (the agent has not reported)."""


def boot_s_of(switches) -> float:
    """The agent's boot time from its switches' reports (launch → ready; ``measured_boot_s``'s rule)."""
    return measured_boot_s((s.ready_at - s.launched_at).total_seconds() for s in switches
                           if getattr(s, "launched_at", None) and getattr(s, "ready_at", None))


def decision_config(agent: AgentRecord, ondemand_price: float, boot_s: float = DEFAULT_BOOT_S) -> DecisionConfig:
    """The agent's cost model (its measured boot time) and its rails (legacy agent_configs names)."""
    c = agent.config
    ceiling = float(c.get("risk_threshold", 1.0))
    return DecisionConfig.for_service(
        boot_s, DOWNTIME_PENALTY_DAYS * ondemand_price,
        min_savings_percent=float(c.get("min_savings_percent", 0)), risk_ceiling=ceiling, risk_recover=ceiling,
        horizon_s=get_settings().risk_horizon_s,
        min_pool_duration_hours=float(c.get("min_pool_duration_hours", 0)),
        max_switches_per_day=int(c.get("max_switches_per_day", 3)),
        max_switches_per_week=int(c.get("max_switches_per_week", 10)), cooldown_s=COOLDOWN_S)


def market(agent: AgentRecord, now: datetime, types: tuple[str, ...] | None = None
           ) -> tuple[tuple[PoolOption, ...], float | None]:
    """Pool options of every type the agent may run on (``AgentRecord.runnable_types``: its own and its
    declared interchangeable ones; one GSI query per type), or of ``types``, in its region, and the on-demand
    price.

    The declared types are interchangeable, so their pools compete on price per instance-hour and risk.
    A pool is a possible target only with a fresh price and outside its capacity back-off (a refused
    launch is skipped for a growing window: components.capacity.backoff). The on-demand fallback is the
    agent's current type: a switch to on-demand names no type and every agent (the legacy one too)
    launches the type it runs on. Its price is AWS's list price (the catalogue), never another agent's
    claim; for a type the catalogue does not list, the price this agent itself last reported.

    Market data trust (issue #12): a price an agent reported is used only for its own client's agents
    (``PoolPrice.seen_by``); another tenant's reported pool is a known pool without a price."""
    horizon = get_settings().risk_horizon_s
    options = []
    pools = [p.seen_by(agent.client_id) for t in (types or agent.runnable_types)
             for p in pool_repo.pools_of_type(agent.region or "", t)]
    blocked = observations.backoff([p.pool_id for p in pools], now, viewer=agent.client_id)
    for pool in pools:
        fresh = (pool.at is not None and now - pool.at <= PRICE_FRESH_FOR and pool.pool_id not in blocked
                 and pool.price is not None)
        risk = pool.risk_for(agent.client_id)
        risk = risk if risk is not None else advisor_prior(DEFAULT_ADVISOR_BAND, horizon)
        options.append(PoolOption(pool.pool_id, float(pool.price) if fresh else None, risk, available=fresh))
    ondemand = catalogue.ondemand_price(agent.instance_type, agent.region)
    if ondemand is None and options:
        own = pool_repo.reported_ondemand(agent.agent_id, agent.instance_type)
        ondemand = float(own) if own is not None else None
    return tuple(options), ondemand


def situation(agent: AgentRecord, now: datetime) -> tuple[Situation, float]:
    """Where the agent is, its switches of the last week (the rails), and its measured boot time (from
    its newest switches, however old)."""
    current = agent.spot_pool_id or ONDEMAND
    week_ago = now - timedelta(days=7)
    rows = switch_repo.recent_for_agent(agent.agent_id, week_ago, BOOT_SAMPLES)
    return (Situation(current=current, since=agent.last_switch_at or agent.registered_at,
                      recent_switches=tuple(s.initiated_at for s in rows if s.initiated_at >= week_ago)),
            boot_s_of(rows[-BOOT_SAMPLES:]))


def evaluate(agent: AgentRecord, now: datetime) -> Evaluation:
    """Decide for one agent from stored data, among the pools its switch can reach (``switch_types``);
    NoMarketDataError when no price is known yet."""
    options, ondemand = market(agent, now, agent.switch_types)
    if ondemand is None or not options:
        raise NoMarketDataError(f"no prices known for {agent.instance_type} in {agent.region} yet")
    where, boot_s = situation(agent, now)
    decision = decide(where, options, ondemand, now, decision_config(agent, ondemand, boot_s))
    return Evaluation(decision, where, options, ondemand)


def recorded_pools(evaluation: Evaluation, limit: int) -> dict:
    """The candidate pools a decision item keeps (at most ``limit``, so the item stays far below
    DynamoDB's 400 KB whatever the market holds) and how many it left out (``pools_omitted``): the
    pools the decision names first (current, target, standby, fallbacks), then the cheapest available."""
    d = evaluation.decision
    named = [evaluation.situation.current, d.target, d.standby, *d.fallbacks]
    rank = {pid: i for i, pid in enumerate(p for p in named if p)}
    ordered = sorted(evaluation.options, key=lambda o: (rank.get(o.pool_id, len(rank)), not o.available,
                                                        o.price if o.price is not None else float("inf"),
                                                        o.pool_id))
    kept = ordered[:limit]
    return {"pools": [{"pool_id": o.pool_id, "price": o.price, "risk": o.risk, "available": o.available}
                      for o in kept],
            "pools_omitted": len(ordered) - len(kept)}


ASKED_DECISION_BUCKET_S = 60  # a decision an agent or client asks for: one row per agent, source and minute


def record(agent: AgentRecord, evaluation: Evaluation, source: str, now: datetime,
           command_id: str | None = None, once: str | None = None, per_bucket_s: int | None = None) -> str:
    """Store the decision with its inputs (TTL); returns its key.

    With ``once`` (naming the decision, e.g. the cycle) and the same ``now`` the key is the same, so a redelivered
    or retried step records nothing twice: a record that names a command stands (it explains the command
    queued), one that names none is replaced by the retry's (a decision of the same cycle that did queue one).
    With ``per_bucket_s`` (the decisions a request asks for) the key is the start of ``now``'s bucket and the
    source, with the same rule: asking again within the bucket replaces the row, so the request rate never
    sets how many rows an agent keeps."""
    d = evaluation.decision
    at = now
    if per_bucket_s:
        at = floor_to(now, per_bucket_s)
        once = once or source
    key = f"{at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{once or uuid.uuid4().hex[:8]}"
    row = DecisionTable(
        agent.agent_id, key, client_id=agent.client_id, decided_at=now, source=source,
        current=evaluation.situation.current, action=d.action.value, target=d.target, standby=d.standby,
        reason=d.reason, risk=d.risk, expected_cost=d.expected_cost,
        inputs={"ondemand_price": evaluation.ondemand_price,
                **recorded_pools(evaluation, get_settings().decision_record_max_pools),
                "recent_switches": len(evaluation.situation.recent_switches),
                "fallbacks": list(d.fallbacks)},
        command_id=command_id,
        expires_at=now + timedelta(days=get_settings().decision_retention_days))
    save_if(row, (DecisionTable.decision_key.does_not_exist() | DecisionTable.command_id.does_not_exist())
            if once else None)
    return key


def command_for(agent: AgentRecord, decision: Decision, now: datetime, *, trigger: str,
                command_id: str | None = None, requested: bool = False) -> Command | None:
    """Queue the switch a decision asks for (None for 'stay' or when a command is already active).

    A move to on-demand because every pool is too risky is urgent (ML_URGENT = 50); other switches are
    ML_NORMAL (25). ``command_id`` makes a retried cycle idempotent. Written on the condition that no switch of
    the agent was queued since its row was read (``last_force_switch_id``, as ``command_queue.queue_client_switch``)
    and that it is still enabled: client requests (issue-switch-command) racing past the empty queue, or one racing
    the decision cycle, queue one switch, not one each (a legacy agent runs every switch a poll hands it); the
    losers find the queue taken, as a request after it would (None). ``requested`` (a client's request): an agent
    disabled or deleted meanwhile is its 409 / 404; the cycle just queues nothing for it.
    """
    if decision.action in (DecisionAction.STAY, DecisionAction.REPLACE) or not agent.instance_id \
            or not agent.runs_commands:  # spot_agent.py cannot switch: the decision is recorded, nothing queued
        return None
    store = bootstrap.command_store()
    active = store.active_for_agent(agent.agent_id, limit=1)
    if active:  # the same decision retried finds its own command; any other active command wins
        return active[0] if command_id and active[0].command_id == command_id else None
    if requested:  # a client's new switch, whoever chose its target: refused at the daily bound, as its force-switch
        # is (before walk 22 queued as the engine's, whose report the bound lets past)
        command_queue.within_daily_switches(agent, now)
    urgent = decision.action is DecisionAction.TO_ONDEMAND
    command = command_queue.switch_command(
        agent, target_mode="ondemand" if decision.target == ONDEMAND else "spot",
        target_pool_id=decision.target, now=now, command_id=command_id, trigger=trigger,
        priority=CommandPriority.ML_URGENT if urgent else CommandPriority.ML_NORMAL,
        created_by=command_queue.DECISION_ENGINE)
    try:
        store.add(command, force_switch_after=agent.last_force_switch_id)
    except CommandConflictError:
        return store.get(agent.agent_id, command.command_id)
    except ForceSwitchRaced:
        return None
    except (ConflictError, NotFoundError):  # disabled or deleted since it was read
        if requested:
            raise
        return None
    return command


def history(agent_id: str, limit: int, next_token: str | None):
    """An agent's decisions, newest first (paginated)."""
    start = decode_token(next_token, partition_attr="agent_id", partition_value=agent_id,
                         key_attrs=("agent_id", "decision_key"))
    result = DecisionTable.query(agent_id, scan_index_forward=False, limit=limit, last_evaluated_key=start)
    return Page(list(result), encode_token(result.last_evaluated_key))


# --- Moves the replica coordinator makes for manual-replica agents (issue #11) ---------------------
# A planned return from on-demand and every standby placement are decisions too, recorded with their
# reason under a key derived from the move, so an at-least-once run rewrites the same item.

def record_move(agent: AgentRecord, *, move_id: str, at: datetime, source: str, action: str, target: str,
                standby: str | None, reason: str, risk: float | None = None,
                expected_cost: dict | None = None, inputs: dict | None = None, once: bool = False) -> str:
    """Store one move (``action`` e.g. ``to_spot``, ``place_standby``) with its reason; returns its key. With
    ``once`` a move already stored under its key (same time and id: a repeated step) is left as it is."""
    key = _move_key(at, move_id)
    current = agent.spot_pool_id or ONDEMAND
    save_if(DecisionTable(agent.agent_id, key, client_id=agent.client_id, decided_at=at, source=source,
                          current=current, action=action, target=target, standby=standby, reason=reason, risk=risk,
                          expected_cost=expected_cost, inputs=inputs,
                          expires_at=at + timedelta(days=get_settings().decision_retention_days)),
            DecisionTable.decision_key.does_not_exist() if once else None)
    return key


def _move_key(at: datetime, move_id: str) -> str:
    return f"{at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{move_id}"


def move_recorded(agent_id: str, move_id: str, at: datetime) -> bool:
    """Is the move ``record_move(move_id=..., at=...)`` stores already there? One small read (see
    ``activity.event_recorded``)."""
    try:
        DecisionTable.get(agent_id, _move_key(at, move_id), attributes_to_get=["decision_key"])
    except DecisionTable.DoesNotExist:
        return False
    return True


def record_standby_placement(agent: AgentRecord, replica_id: str, pool_id: str | None, why: str,
                             now: datetime) -> str | None:
    """"standby placed in Y (why); X in back-off until …": the other pools of the type that standby
    placement skipped. Never fails the placement (logged)."""
    from chalicelib.observability import logger

    try:
        pools = [p.pool_id for p in pool_repo.pools_of_type(agent.region or "", agent.instance_type or "")]
        blocked = observations.backoff([p for p in pools if p != pool_id], now, viewer=agent.client_id)
        skipped = "; ".join(f"{p} in back-off until {until.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                            for p, until in sorted(blocked.items()))
        reason = f"standby placed in {pool_id} ({why})" + (f"; {skipped}" if skipped else "")
        target = agent.spot_pool_id or ONDEMAND
        return record_move(agent, move_id=replica_id, at=now, source="replica-placement", action="place_standby",
                           target=target, standby=pool_id, reason=reason, once=True,
                           inputs={"replica_id": replica_id,
                                   "backoff_until": {p: u.isoformat() for p, u in blocked.items()}})
    except Exception as exc:  # noqa: BLE001 - recording the reason never fails the placement
        logger.warning("standby placement not recorded", extra={"agent_id": agent.agent_id, "error": str(exc)})
        return None
