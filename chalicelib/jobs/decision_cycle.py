"""Every 5 minutes: decide for each live auto-switch agent, record the decision, queue its command.

Reads prices and the risk scores the risk scorer stored; never imports scikit-learn. A cycle that is
retried (at-least-once scheduling) reuses the same command ids, so no switch is queued twice. One
agent's failure is logged and counted (``failed``); it never aborts the cycle for the others.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from chalicelib import decisions
from chalicelib.observability import MetricUnit, logged_job, logger, metrics, publish_metrics
from chalicelib.repositories import activity, agents

CYCLE_S = 300


def _decide(agent, now: datetime, cycle: int, outcomes: Counter) -> None:
    """Decide for one agent, record the decision, queue its command (NoMarketDataError: no prices)."""
    evaluation = decisions.evaluate(agent, now)
    command = decisions.command_for(agent, evaluation.decision, now, trigger="ml_recommendation",
                                    command_id=f"cmd-dc-{agent.agent_id}-{cycle}")
    decisions.record(agent, evaluation, "decision-cycle", now,
                     command_id=command.command_id if command else None)
    outcomes[evaluation.decision.action.value] += 1
    if command is not None:
        outcomes["commands_queued"] += 1
        activity.record_event("decision", evaluation.decision.reason, now, client_id=agent.client_id,
                              agent_id=agent.agent_id, metadata={"command_id": command.command_id})


@logged_job("decision-cycle")
def run(now: datetime) -> dict[str, int]:
    """One cycle over every live auto-switch agent; returns counts by outcome."""
    outcomes: Counter = Counter()
    cycle = int(now.timestamp()) // CYCLE_S
    for agent in agents.auto_switch_agents():
        try:
            _decide(agent, now, cycle, outcomes)
        except decisions.NoMarketDataError:
            outcomes["no_market_data"] += 1
        except Exception:  # noqa: BLE001 - one agent's failure never aborts the cycle for the others
            logger.exception("decision failed", extra={"agent_id": agent.agent_id})
            outcomes["failed"] += 1
    result = dict(outcomes)
    logger.info("decision cycle", extra={"outcomes": result})
    for name, count in result.items():
        metrics.add_metric(name=f"DecisionCycle.{name}", unit=MetricUnit.Count, value=count)
    publish_metrics()
    return result
