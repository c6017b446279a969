"""Daily: retention beyond what DynamoDB TTL does (issue #13, PRODUCT.md §2 "data-cleaner").

TTL already expires, per table: price points (90 days), pricing reports (30), finished commands (7 after
they finish), notifications (30), decisions, interruptions and the audit log (90), risk scores (30),
observations (14), rollups (92 hourly / 400 daily). Decisions and pricing reports are always written
with their TTL, so nothing is left for them here. This job removes what TTL does not:

- **finished commands** that finished more than ``COMMAND_RETENTION_DAYS`` (7) ago and are still there
  (TTL deletes late, within days; a row without a TTL is never deleted by it);
- **read notifications** older than ``NOTIFICATION_READ_RETENTION_DAYS`` (7; unread ones wait for TTL);
- **raw price points** older than ``PRICE_RAW_RETENTION_DAYS`` (14) of the hours the pricing aggregator
  has rolled up (each scope keeps its newest point before the cutoff: the price still in force).

Bounded and resumable: clients are walked in creation order (the listing index, no scan) at most
``CLEANER_MAX_CLIENTS`` per run, resuming where the last run stopped; at most ``CLEANER_MAX_DELETES``
rows are deleted per run. Every delete is of a row that is already past its retention, so a re-run (or
two runs at once) deletes nothing twice and nothing else.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import activity, agents, clients, commands, job_state
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import price_rollups as rollups
from chalicelib.settings import get_settings

CLIENT_WALK = "cleaner#clients"
CLIENT_PAGE = 50


def _walk_clients(now: datetime, budget: dict) -> dict:
    """Notifications and commands of up to ``CLEANER_MAX_CLIENTS`` clients, from where the walk stopped."""
    settings = get_settings()
    read_cutoff = now - timedelta(days=settings.notification_read_retention_days)
    command_cutoff = now - timedelta(days=settings.command_retention_days)
    token = job_state.cursor(CLIENT_WALK)
    done = {"clients": 0, "notifications": 0, "commands": 0}
    while done["clients"] < settings.cleaner_max_clients and budget["left"] > 0:
        page = clients.list_page(min(CLIENT_PAGE, settings.cleaner_max_clients - done["clients"]), token)
        for client in page.items:
            done["clients"] += 1
            n = activity.delete_read_before(client.client_id, read_cutoff, budget["left"])
            done["notifications"] += n
            budget["left"] -= n
            for agent in agents.all_for_client(client.client_id):
                if budget["left"] <= 0:
                    break
                n = commands.delete_finished_before(agent.agent_id, command_cutoff, budget["left"])
                done["commands"] += n
                budget["left"] -= n
        if budget["left"] <= 0:
            break  # the page may be unfinished: the next run walks it again (its deletes are done)
        token = page.next_token
        if token is None:
            break
    job_state.set_cursor(CLIENT_WALK, token, now)  # None: the next run starts from the first client
    return done


def _raw_points(now: datetime, budget: dict) -> dict:
    """Raw price points past retention in hours already rolled up, pool by pool (bounded, no scan)."""
    settings = get_settings()
    cutoff = now - timedelta(days=settings.price_raw_retention_days)
    pools = pool_repo.pools_in_use(agents.types_in_use(), settings.price_rollup_max_pools)
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
    for name in ("notifications", "commands", "price_points"):
        metrics.add_metric(name=f"DataCleaner.{name}", unit=MetricUnit.Count, value=result[name])
    publish_metrics()
    return result
