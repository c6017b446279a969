"""Daily: retention beyond what DynamoDB TTL does (issue #13).

TTL already expires, per table: price points (90 days), pricing reports (30), finished commands (7 after
they finish), notifications (30), decisions, interruptions and the audit log (90), risk scores (30),
observations (14), rollups (92 hourly / 400 daily). Decisions and pricing reports are always written
with their TTL, so nothing is left for them here. This job removes what TTL does not:

- **finished commands** that finished more than ``COMMAND_RETENTION_DAYS`` (7) ago and are still there
  (TTL deletes late, within days; a row without a TTL is never deleted by it);
- **read notifications** older than ``NOTIFICATION_READ_RETENTION_DAYS`` (7; unread ones wait for TTL), at most
  ``1 / NOTIFICATION_SHARE`` of a run's delete budget per client: a tenant whose agents make more a day than the
  budget (every termination report of an online agent notifies) would otherwise take every run's budget and hold
  the walk at itself, and no client after it would be cleaned again; the rest wait for the walk's next round
  (their TTL, 30 days, is the backstop);
- **raw price points** older than ``PRICE_RAW_RETENTION_DAYS`` (14) of the hours the pricing aggregator
  has rolled up (each scope keeps its newest point before the cutoff: the price still in force).
- **ended instance rows** of every agent walked: inactive rows that ended (``terminated_at``, else their last
  update) more than ``AGENT_RETENTION_DAYS`` (90) ago, but the one the agent row names and a proven instance's
  row with no termination time (it may still run in its owner's account). Without it a live agent's ended
  switches and standbys stay for good, and every hourly savings roll-up of its client reads them back. Each
  row's instance savings day rows (``instance#<client>#<instance>#day``) go just before it (``savings_days``).
- **gone agents**: a deleted or terminated agent whose ``deleted_at`` (else ``updated_at``) is older than
  ``AGENT_RETENTION_DAYS`` (90: the decisions, interruptions and audit log naming it have expired by then), with
  what only it refers to: the savings day rows of the agent and of the instances whose rows name it (first, while
  those rows still say which instances were its), its remaining commands, its replicas (all closed: an agent with an open replica, or an
  active instance row naming it, is kept) and the inactive instance rows that name it; its row goes last, in one
  transaction with the instance row it names, conditional on the agent being unchanged (status, times, instance,
  standby slot), so a re-registration racing the cleaner wins and a stopped removal leaves an agent that still
  registers (its logical id then makes a new agent: the id is derived, nothing else remembers it). Without it a
  client's agent partition, which the quota check, the overview and the histories read whole, only grows.

Bounded and resumable: clients are walked in creation order (the listing index, no scan) and each client's
agents in id order (one partition Query with a range-key condition, no re-read of the agents done), one
commands Query and one instances-by-agent Query (rows installed before the retention cutoff) per agent; a gone agent past its retention costs a consistent read of its row and Queries of its
replicas, commands and instances (the instances-by-agent index) besides. A run walks at most ``CLEANER_MAX_CLIENTS`` clients (200) and
``CLEANER_MAX_AGENTS`` agents (10,000: two calls each, ≈ 12.6 ms at ``python -m bench.cost``'s per-call cost,
≈ 125 s of the 300 s timeout) and deletes at most ``CLEANER_MAX_DELETES`` rows (5,000). Its position is saved in
``job-state`` (``cleaner#clients``): the listing position just before the client it stopped in and the last
of that client's agents it finished; the next run continues exactly there, so a client with more agents
than one run allows is finished over several runs, and after the last client the walk starts again from the
first. An agent (or a client's notifications) whose Query, or whose removal, used up the delete budget is not
counted done and is queried again next run; every row a removal deletes counts against the budget
(``gone_agents``: agents removed, ``gone_agent_rows``: every row of theirs deleted). The raw price points are looked for in the pools the pricing aggregator rolls
up (``pools.priced_page``: priced in the last day, at most ``PRICE_ROLLUP_MAX_POOLS`` a run, in turns past that:
``chalicelib.jobs.pool_walk``, key ``cleaner#pools``): no agent is read.
Every delete is conditional and of a row that is already past its retention (or, for a gone agent's rows,
still closed, inactive and its), so a re-run (or two runs at once) deletes nothing twice and nothing else.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from chalicelib.jobs import pool_walk
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import activity, agents, clients, commands, job_state, replicas, savings
from chalicelib.repositories import price_rollups as rollups
from chalicelib.settings import get_settings

CLIENT_WALK = "cleaner#clients"
RAW_POINTS_WALK = "cleaner#pools"  # job-state key of the raw-point sweep's turns past the cap
CLIENT_PAGE = 50
# A client's read notifications take at most 1/NOTIFICATION_SHARE of a run's delete budget (500 of 5,000).
NOTIFICATION_SHARE = 10


def _walk_clients(now: datetime, budget: dict) -> dict:
    """Notifications and commands of up to ``CLEANER_MAX_CLIENTS`` clients and ``CLEANER_MAX_AGENTS`` agents,
    from exactly where the last run stopped (inside a client too)."""
    settings = get_settings()
    read_cutoff = now - timedelta(days=settings.notification_read_retention_days)
    command_cutoff = now - timedelta(days=settings.command_retention_days)
    gone_cutoff = now - timedelta(days=settings.agent_retention_days)
    at = job_state.position(CLIENT_WALK)
    # ``before``: the listing position just before the client to work on (None: the first client);
    # ``after_agent``: the last of that client's agents done (None: the client is not started).
    before, after_agent = at.get("next_token"), at.get("after_agent")
    done = {"clients": 0, "agents": 0, "notifications": 0, "commands": 0, "instances": 0, "savings_days": 0,
            "gone_agents": 0, "gone_agent_rows": 0}

    def can_go_on() -> bool:
        return (budget["left"] > 0 and done["agents"] < settings.cleaner_max_agents
                and done["clients"] < settings.cleaner_max_clients)

    stopped = False  # inside the listing: ``before``/``after_agent`` say where
    while can_go_on() and not stopped:
        page = clients.list_page(min(CLIENT_PAGE, settings.cleaner_max_clients - done["clients"]), before)
        if not page.items and page.next_token is None and before is not None and done["clients"] == 0:
            before, after_agent = None, None  # the last run ended on the last client: start again
            continue
        for client in page.items:
            if not can_go_on():
                stopped = True
                break
            done["clients"] += 1
            if after_agent is None:
                share = max(1, settings.cleaner_max_deletes // NOTIFICATION_SHARE)
                n = activity.delete_read_before(client.client_id, read_cutoff, min(share, budget["left"]))
                done["notifications"] += n
                budget["left"] -= n
                if budget["left"] <= 0:
                    stopped = True  # its notifications may be unfinished: the next run starts this client again
                    break
            progress = _client_agents(client.client_id, after_agent, command_cutoff, gone_cutoff, budget, done)
            after_agent = progress.last
            if not progress.all:
                stopped = True  # the next run resumes in this client, after ``after_agent``
                break
            before, after_agent = clients.token_after(client), None
        if not stopped and page.next_token is None:
            before, after_agent = None, None  # the walk is complete: the next run starts from the first client
            break
        if not page.items:
            before = page.next_token
    job_state.set_position(CLIENT_WALK, {"next_token": before, "after_agent": after_agent}, now)
    return done


class _Progress(NamedTuple):
    last: str | None  # the last agent done
    all: bool  # every agent of the client is done


def _client_agents(client_id: str, after: str | None, command_cutoff: datetime, gone_cutoff: datetime,
                   budget: dict, done: dict) -> _Progress:
    """The client's agents after ``after``, in id order, one commands Query each (and the removal of a gone agent
    past its retention), while the agent cap and the delete budget last. An agent whose deletes used up the
    budget is not counted done (it may have more)."""
    settings = get_settings()
    walked, more = agents.walk_after(client_id, after, settings.cleaner_max_agents - done["agents"])
    for agent in walked:
        if budget["left"] <= 0:
            return _Progress(after, False)
        done["agents"] += 1
        n = commands.delete_finished_before(agent.agent_id, command_cutoff, budget["left"])
        done["commands"] += n
        budget["left"] -= n
        if budget["left"] <= 0:
            return _Progress(after, False)
        if agent.gone_since is not None and agent.gone_since < gone_cutoff:
            if not _remove_gone(client_id, agent.agent_id, gone_cutoff, budget, done):
                return _Progress(after, False)
        else:  # an agent that stays: its instance rows that ended past the retention (a removal takes them all)
            days_before = done["savings_days"]
            n = agents.delete_ended_instances(client_id, agent.agent_id, agent.instance_id, gone_cutoff,
                                              budget["left"], before_each=_instance_days(client_id, done))
            done["instances"] += n - (done["savings_days"] - days_before)
            budget["left"] -= n
            if budget["left"] <= 0:
                return _Progress(after, False)
        after = agent.agent_id
    return _Progress(after, not more)


def _instance_days(client_id: str, done: dict):
    """``before_each`` of an ended instance row's delete: its savings day rows go first (counted in ``done``)."""
    def delete(instance_id: str, left: int) -> int | None:
        n = savings.delete_days(savings.instance_key(client_id, instance_id), left)
        done["savings_days"] += n or 0
        return n
    return delete


def _remove_gone(client_id: str, agent_id: str, cutoff: datetime, budget: dict, done: dict) -> bool:
    """Remove a deleted or terminated agent gone before ``cutoff`` with what only it refers to: its commands, its
    closed replicas and the inactive instance rows that name it, then its row with the instance row it names, in
    one transaction conditional on nothing having changed the agent (a re-registration racing this wins). An
    agent with an open replica or an active instance row is kept. The row goes last, so a run stopped by the
    budget leaves the agent to find again (and registrable: its own instance row is still there). False when
    the budget ran out before its row went (the agent is not done)."""
    gone = agents.gone_before(client_id, agent_id, cutoff)
    if gone is None:
        return True
    standbys = replicas.for_agent(agent_id)
    if any(r.active for r in standbys) or agents.has_live_instance(gone, [r.instance_id for r in standbys
                                                                         if r.instance_id]):
        return True
    entity_days = [savings.instance_key(client_id, i) for i in agents.instance_ids_of(gone)]
    entity_days.append(savings.agent_key(client_id, agent_id))
    for delete in (*(lambda left, key=key: savings.delete_days(key, left) for key in entity_days),
                   lambda left: commands.delete_all(agent_id, left),
                   lambda left: replicas.delete_closed(agent_id, left),
                   lambda left: agents.delete_inactive_instances(gone, left)):
        n = delete(budget["left"])
        if n is None:  # an entity's day rows are more than the budget left: next run
            return False
        done["gone_agent_rows"] += n
        budget["left"] -= n
        if budget["left"] <= 0:
            return False
    if budget["left"] < 2:  # the row and its instance's row go together
        return False
    n = agents.delete_gone(gone)
    if n:
        done["gone_agents"] += 1
        done["gone_agent_rows"] += n
        budget["left"] -= n
    return True


def _raw_points(now: datetime, budget: dict) -> dict:
    """Raw price points past retention in hours already rolled up, pool by pool (the aggregator's pools,
    bounded; no agent read)."""
    settings = get_settings()
    cutoff = now - timedelta(days=settings.price_raw_retention_days)
    pools = pool_walk.next_pools(RAW_POINTS_WALK, now, settings.price_rollup_max_pools).pools  # in turns past the cap
    states = rollups.rollup_states([p.pool_id for p in pools]) if pools else {}
    deleted = 0
    for pool in pools:
        state = states.get(pool.pool_id)
        if budget["left"] <= 0 or state is None or state.since is None:
            continue
        upto = min(cutoff, state.through)
        if upto <= state.since:
            continue
        n = rollups.delete_raw_before(pool.pool_id, state.since, upto, budget["left"])
        deleted += n
        budget["left"] -= n
    return {"price_points": deleted}


@logged_job("data-cleaner")
def run(now: datetime) -> dict:
    """One daily run; returns what it deleted."""
    budget = {"left": get_settings().cleaner_max_deletes}
    result = {**_walk_clients(now, budget), **_raw_points(now, budget)}
    result["budget_exhausted"] = budget["left"] <= 0
    logger.info("data cleaner", extra=result)
    for name in ("notifications", "commands", "instances", "savings_days", "price_points", "gone_agents",
                 "gone_agent_rows"):
        metrics.add_metric(name=f"DataCleaner.{name}", unit=MetricUnit.Count, value=result[name])
    publish_metrics()
    return result
