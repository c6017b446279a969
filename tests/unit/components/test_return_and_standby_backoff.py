"""Issue #11 by example: when an on-demand manual-replica agent returns to its spot standby
(``plan_return``), and how the capacity back-off grows with losses that relaunches do not wash out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from components.capacity import DEFAULT_BACKOFF, BackoffPolicy, CapacityObservation, ObservationKind
from components.decision_engine import ONDEMAND, Decision, DecisionAction, DecisionConfig, PoolOption, Situation, decide
from components.replica_coordinator import ReplicaStatus, StandbyView, plan_return

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A, B, C = "m5.large.us-east-1a", "m5.large.us-east-1b", "m5.large.us-east-1c"
K = ObservationKind


def standby(pool=B, status=ReplicaStatus.READY, ec2_state="running") -> StandbyView:
    return StandbyView("rep-1", status, pool, "i-standby", NOW, ec2_state=ec2_state)


def engine(options, ondemand=0.096) -> Decision:
    """The decision cycle's arithmetic for an agent on on-demand (a 5-minute boot, a day's penalty per hour down)."""
    config = DecisionConfig.for_service(300.0, 24 * ondemand, standby_enabled=False)
    return decide(Situation(ONDEMAND, NOW), options, ondemand, NOW, config)


def test_the_standby_pool_passing_the_engine_returns_with_the_expected_costs_in_the_reason():
    d = engine([PoolOption(A, 0.030, 0.02), PoolOption(B, 0.035, 0.02)])
    plan = plan_return(standby(B), d, on_demand=True)
    assert plan.go and plan.pool_id == B
    assert plan.reason.startswith(f"returned to spot by promoting standby rep-1 in {B}: expected ")
    assert "vs on-demand 0.0960 $/h" in plan.reason


def test_a_standby_pool_the_engine_does_not_move_to_keeps_on_demand():
    # B is unavailable to the engine (capacity back-off or no fresh price): A passes, B does not
    d = engine([PoolOption(A, 0.030, 0.02), PoolOption(B, 0.020, 0.02, available=False)])
    assert d.action is DecisionAction.TO_SPOT and d.target == A
    plan = plan_return(standby(B), d, on_demand=True)
    assert not plan.go and f"the standby's pool {B} does not repay the move" in plan.reason
    assert plan.replace_in == A  # where the standby should be to take the primary back


def test_every_pool_too_risky_keeps_on_demand_with_the_engines_reason():
    d = engine([PoolOption(A, 0.030, 0.99), PoolOption(B, 0.035, 0.99)])
    plan = plan_return(standby(B), d, on_demand=True)
    assert not plan.go and plan.reason == d.reason and plan.reason.startswith("stay on on-demand")
    assert plan.replace_in is None


@pytest.mark.parametrize(("view", "kwargs", "why"), [
    (standby(), {"on_demand": False}, "the primary runs on spot"),
    (standby(), {"on_demand": True, "busy": "planned-return int-1 is handling"}, "already under way"),
    (None, {"on_demand": True}, "no standby"),
    (standby(status=ReplicaStatus.LAUNCHING), {"on_demand": True}, "not ready"),
    (standby(ec2_state="shutting-down"), {"on_demand": True}, "not ready"),
])
def test_no_return_without_an_on_demand_primary_a_ready_running_standby_and_no_hand_over_under_way(view, kwargs, why):
    d = engine([PoolOption(A, 0.030, 0.02), PoolOption(B, 0.035, 0.02)])
    plan = plan_return(view, d, **kwargs)
    assert not plan.go and why in plan.reason


def lost_every_two_hours(losses: int, kind=K.INTERRUPTION_WARNING) -> list[CapacityObservation]:
    """A pool granting an instance (launch succeeded) and taking it back two hours later, ``losses`` times."""
    out = []
    for n in range(losses):
        out += [CapacityObservation("p", K.LAUNCH_SUCCEEDED, n * 7200.0),
                CapacityObservation("p", kind, n * 7200.0 + 7000.0)]
    return out


@pytest.mark.parametrize("kind", [K.INTERRUPTION_WARNING, K.AWS_STOPPED])
def test_a_loss_starts_the_back_off_with_or_without_loss_memory(kind):
    [_, loss] = lost_every_two_hours(1, kind)
    for policy in (DEFAULT_BACKOFF, BackoffPolicy(loss_memory_s=0)):
        assert policy.until([loss], now=loss.at) == loss.at + 600.0


def test_the_back_off_grows_with_every_loss_of_the_day_where_no_memory_would_restart():
    obs = lost_every_two_hours(4)
    last = obs[-1].at
    assert BackoffPolicy(loss_memory_s=0).until(obs, now=last) == last + 600.0  # each relaunch wiped the streak
    assert DEFAULT_BACKOFF.until(obs, now=last) == last + 600.0 * 2 ** 3  # 4th loss of the day: 80 min


def test_losses_older_than_a_day_are_forgotten_and_refusals_still_clear_on_success():
    obs = lost_every_two_hours(1)
    late = obs[-1].at + 25 * 3600.0
    later = [CapacityObservation("p", K.LAUNCH_SUCCEEDED, late), CapacityObservation("p", K.INTERRUPTION_WARNING,
                                                                                    late + 100.0)]
    assert DEFAULT_BACKOFF.until(obs + later, now=late + 100.0) == late + 700.0
    refusals = [CapacityObservation("p", K.LAUNCH_REFUSED, 0.0), CapacityObservation("p", K.LAUNCH_REFUSED, 700.0),
                CapacityObservation("p", K.LAUNCH_SUCCEEDED, 1000.0)]
    assert DEFAULT_BACKOFF.until(refusals, now=1100.0) is None


def test_with_losses_start_off_only_refusals_open_a_window_and_losses_still_count_nothing():
    # the backtest variant "losses start no back-off": a warning leaves the pool open (its risk estimate
    # carries the loss); a refusal still closes it for the base window
    from components.capacity import BackoffPolicy

    policy = BackoffPolicy(losses_start=False)
    warned = [CapacityObservation(A, K.INTERRUPTION_WARNING, 0.0), CapacityObservation(A, K.AWS_STOPPED, 60.0)]
    assert policy.until(warned, now=120.0) is None and DEFAULT_BACKOFF.until(warned, now=120.0) == 60.0 + 1200.0
    refused = [*warned, CapacityObservation(A, K.LAUNCH_REFUSED, 180.0)]
    assert policy.until(refused, now=200.0) == 180.0 + 600.0
