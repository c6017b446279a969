"""Every 5 minutes: decide for each live auto-switch agent, record the decision, queue its command.

One invocation cannot walk a large fleet (≈ 43 ms and 6 DynamoDB calls per agent: past ≈ 5,000 agents it
would time out every cycle, and the agents past that point would never be decided), so the cycle fans out:

* :func:`run`, the scheduled ``decision-cycle`` (the dispatcher), pages through the live agents' keys and
  sends them to the stage's decision queue, ``AGENTS_PER_MESSAGE`` per message, each message naming the
  cycle and its scheduled time;
* :func:`on_sqs_batch`, the ``decision-worker`` (app.py ``@app.on_sqs_message``), decides for the agents of
  each message as of that scheduled time, side by side with the other workers.

Reads prices and the risk scores the risk scorer stored; never imports scikit-learn. Delivery is at least
once: a redelivered message (or a retried dispatch) reuses the cycle's command ids (``cmd-dc-<agent>-<cycle>``)
and decision keys (``<scheduled time>#dc-<cycle>``), so no switch is queued and nothing recorded twice. One agent's failure is logged and counted (``failed``); it never aborts the
others. A message older than one cycle is dropped (``stale``): the next cycle decides its agents on fresh prices.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

from components.timeutil import parse_iso

from chalicelib import clock, decisions
from chalicelib.aws import sqs
from chalicelib.jobs.fanout import (
    NO_BUDGET,
    Budget,
    RetryableError,
    batch_response,
    bodies,
    for_each,
    handle_batch,
    publish_counts,
    retryable,
)
from chalicelib.observability import logged_job, logger
from chalicelib.repositories import activity, agents
from chalicelib.settings import decision_queue_name, get_settings

CYCLE_S = 300
# Agents per message. 25 keys are ~2 KB of body (SQS takes 256 KB) and ~1 s of a worker's time (25 × 43 ms), so
# a message that fails and comes back repeats little work; 100,000 agents are 4,000 messages, 400
# SendMessageBatch calls (≈ 12 s: the whole dispatch ≈ 21 s against its 240 s timeout, `python -m bench.cost`)
# and 800 worker invocations of 5 messages (settings.DECISION_WORKER_BATCH_SIZE).
AGENTS_PER_MESSAGE = 25
def _decide(agent, now: datetime, cycle: int, outcomes: Counter) -> None:
    """Decide for one agent, record the decision, queue its command (NoMarketDataError: no prices)."""
    evaluation = decisions.evaluate(agent, now)
    command = decisions.command_for(agent, evaluation.decision, now, trigger="ml_recommendation",
                                    command_id=f"cmd-dc-{agent.agent_id}-{cycle}")
    decisions.record(agent, evaluation, "decision-cycle", now,
                     command_id=command.command_id if command else None, once=f"dc-{cycle}")
    outcomes[evaluation.decision.action.value] += 1
    if command is not None:
        outcomes["commands_queued"] += 1
        activity.record_event("decision", evaluation.decision.reason, now, client_id=agent.client_id,
                              agent_id=agent.agent_id, metadata={"command_id": command.command_id},
                              once=command.command_id)


# --- the dispatcher ---------------------------------------------------------------------------------

def messages(keys, now: datetime, counted: Counter):
    """The bodies of one cycle's messages, ``{"cycle", "scheduled_at", "agents": [[client_id, agent_id], ...]}``
    (``AGENTS_PER_MESSAGE`` agents each), made as the keys are read; counts the agents in ``counted``."""
    header = {"cycle": int(now.timestamp()) // CYCLE_S, "scheduled_at": now.isoformat()}
    return bodies((list(key) for key in keys), header, "agents", AGENTS_PER_MESSAGE, counted)


@logged_job("decision-cycle")
def run(now: datetime) -> dict[str, int]:
    """Dispatch one cycle: every live agent's key to the decision queue; returns how many agents, messages."""
    counted: Counter = Counter()
    sent = sqs.send_all(decision_queue_name(get_settings().stage), messages(agents.live_agent_keys(), now, counted))
    result = {"agents": counted["agents"], "messages": sent}
    logger.info("decision cycle dispatched", extra=result)
    publish_counts("DecisionCycle", result)
    return result


# --- the worker --------------------------------------------------------------------------------------

def parse_message(body: str) -> tuple[int, datetime, list[agents.AgentKey]]:
    """(cycle, scheduled time, agent keys) of one message; ValueError when it is not one."""
    try:
        data = json.loads(body)
        cycle, scheduled, keys = data["cycle"], parse_iso(data["scheduled_at"]), data["agents"]
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not a decision message: {type(exc).__name__}: {exc}") from exc
    if type(cycle) is not int or not isinstance(keys, list) or not all(
            isinstance(key, list) and len(key) == 2 and all(isinstance(part, str) and part for part in key)
            for key in keys):
        raise ValueError("not a decision message: an integer cycle and agents as [client_id, agent_id] pairs")
    return cycle, scheduled, [agents.AgentKey(*key) for key in keys]


def decide_message(body: str, now: datetime, outcomes: Counter, budget: Budget = NO_BUDGET) -> None:
    """Decide for the agents of one message as of its scheduled time. ValueError: not a decision message;
    RetryableError: some agents hit a transient error (the others are decided), or (OutOfTime) ``budget`` ran
    low before every agent was started (those decided keep their command ids: the redelivery queues nothing twice)."""
    cycle, scheduled, keys = parse_message(body)
    if scheduled + timedelta(seconds=CYCLE_S) < now:
        outcomes["stale"] += len(keys)  # the next cycle (already dispatched) decides them on fresh prices
        return

    def decide(key: agents.AgentKey) -> None:
        try:
            agent = agents.get(key.client_id, key.agent_id)
            if agent is None or not agents.in_decision_cycle(agent):
                outcomes["skipped"] += 1
                return
            _decide(agent, scheduled, cycle, outcomes)
        except decisions.NoMarketDataError:
            outcomes["no_market_data"] += 1

    for_each(keys, decide, outcomes, what="decision", name=lambda key: key.agent_id, budget=budget)


@logged_job("decision-worker")
def decide_batch(event: dict, now: datetime, context=None) -> tuple[list[str], dict[str, int]]:
    """One SQS batch of decision messages: (ids of the messages SQS must deliver again, counts by outcome).

    A malformed message is logged and dropped (it would fail the same way forever); a message whose agents
    hit a transient error, or that the invocation's time (``context``: fanout.Budget) did not reach the end of,
    is a batch item failure; the other messages are done (SQS deletes them)."""
    failures, result = handle_batch(
        event, lambda delivery, outcomes: decide_message(delivery.body, now, outcomes, delivery.budget),
        what="decision", budget=Budget(context))
    publish_counts("DecisionCycle", result)
    return failures, result


def on_sqs_batch(event: dict, context=None) -> dict:
    """Lambda entry point (``decision-worker``): the partial batch response, and only that (Lambda reads
    ``batchItemFailures``; the event source mapping reports them: infra/event_source.py)."""
    failures, _ = decide_batch(event, clock.now(), context)
    return batch_response(failures)


# The worker's shared parts, named here too (tests, localmode.queues).
__all__ = ["RetryableError", "batch_response", "decide_batch", "messages", "on_sqs_batch", "retryable", "run"]
