"""On-demand is a bridge, not a destination: when a manual-replica agent moves back to spot.

A manual-replica agent whose primary fell back to on-demand keeps a spot standby beside it. Paying for
both is the worst of both: the coordinator hands the primary over to the standby (the failover
workflow's promotion, planned: nothing is lost if it is abandoned) as soon as the decision engine says
that leaving on-demand for the standby's pool repays itself. No threshold of its own: the engine's
expected-cost arithmetic decides (pools in capacity back-off or above the agent's risk rail are never
among the pools it would move to), and this only checks that the standby is one of them and can serve.
A ready standby in a pool that cannot take the primary back (it was placed while every priced pool was in
back-off, say, in a zone without a price) while another pool can is re-placed there (``replace_in``):
otherwise the agent would pay for both until that standby is lost. (The coordinator waits out a
standby pool's capacity back-off instead: that passes.)
"""

from __future__ import annotations

from dataclasses import dataclass

from components.decision_engine import ONDEMAND, Decision, DecisionAction
from components.replica_coordinator.model import ReplicaStatus, StandbyView

__all__ = ["ReturnPlan", "plan_return"]


@dataclass(frozen=True)
class ReturnPlan:
    """Whether to hand the on-demand primary over to its standby now, and why (in words); ``replace_in``:
    the pool the engine would return to, where the standby should be instead of its own."""

    go: bool
    reason: str
    pool_id: str | None = None
    replace_in: str | None = None


def plan_return(standby: StandbyView | None, decision: Decision, *, on_demand: bool,
                busy: str | None = None) -> ReturnPlan:
    """Return to spot through ``standby`` when the engine's ``decision`` (made for the agent as it is:
    on on-demand) moves it to spot and the standby's pool is one of the pools that repay the move.

    ``busy`` names a hand-over already under way for the agent (no second one is started).

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> s = StandbyView("rep-1", ReplicaStatus.READY, "m5.large.us-east-1b", "i-1", t, ec2_state="running")
    >>> d = Decision(DecisionAction.TO_SPOT, "m5.large.us-east-1c", None, "back to spot in c",
    ...              fallbacks=("m5.large.us-east-1b",), expected_cost={"m5.large.us-east-1b": 0.04, "ondemand": 0.1})
    >>> plan_return(s, d, on_demand=True).go
    True
    >>> plan_return(s, Decision(DecisionAction.TO_SPOT, "m5.large.us-east-1c", None, "c"), on_demand=True).replace_in
    'm5.large.us-east-1c'
    >>> plan_return(s, Decision(DecisionAction.STAY, ONDEMAND, None, "stay on on-demand: x"), on_demand=True).reason
    'stay on on-demand: x'
    """
    if not on_demand:
        return ReturnPlan(False, "the primary runs on spot")
    if busy:
        return ReturnPlan(False, f"a hand-over is already under way ({busy})")
    if standby is None or not standby.active or not standby.pool_id:
        return ReturnPlan(False, "no standby to return to")
    if standby.status is not ReplicaStatus.READY or standby.ec2_state != "running" or not standby.instance_id:
        return ReturnPlan(False, f"standby {standby.replica_id} is not ready to serve yet")
    if decision.action is not DecisionAction.TO_SPOT:
        return ReturnPlan(False, decision.reason)
    passing = [p for p in (decision.target, *decision.fallbacks) if p != ONDEMAND]
    if standby.pool_id not in passing:
        return ReturnPlan(False, f"stay on on-demand: the standby's pool {standby.pool_id} does not repay the "
                                 f"move (no fresh price, in capacity back-off, above the risk rail, or too "
                                 f"expensive in expectation); the engine would go to {decision.target}",
                          replace_in=decision.target)
    costs = decision.expected_cost
    here, there = costs.get(ONDEMAND), costs.get(standby.pool_id)
    why = (f"expected {there:.4f} $/h vs on-demand {here:.4f} $/h ({(here - there) / here * 100:.1f}% saved)"
           if here and there is not None else "the engine's expected cost is lower than on-demand")
    return ReturnPlan(True, f"returned to spot by promoting standby {standby.replica_id} in {standby.pool_id}: "
                            f"{why}, and the move repays itself over the time the pool is expected to last",
                      standby.pool_id)
