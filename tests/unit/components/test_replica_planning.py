"""Replica rules by example: the standby lifecycle, the coordinator's plan, pool choice, failover route, retire time.

The general laws are in tests/property/test_replica_properties.py; these pin the named cases.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from components.decision_engine import PoolOption
from components.replica_coordinator import (
    ACTIVE_STATUSES,
    LEGAL_TRANSITIONS,
    LISTING_LAG_S,
    FailoverRoute,
    IllegalReplicaTransitionError,
    ReplicaStatus,
    StandbyView,
    StepKind,
    check_transition,
    choose_pool,
    plan_standbys,
    rank_pools,
    retire_at,
    route_failover,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FINAL = [ReplicaStatus.PROMOTED, ReplicaStatus.TERMINATED, ReplicaStatus.FAILED, ReplicaStatus.EXPIRED]
PRIMARY_POOL = "m5.large.us-east-1a"
OTHER_POOL = "m5.large.us-east-1b"


def standby(replica_id="rep-1", *, status=ReplicaStatus.READY, pool_id=OTHER_POOL, instance_id="i-0standby",
            age_s=60, expires_in_s=None, ec2_state="running") -> StandbyView:
    return StandbyView(replica_id, status, pool_id, instance_id, NOW - timedelta(seconds=age_s),
                       None if expires_in_s is None else NOW + timedelta(seconds=expires_in_s), ec2_state)


def kinds(steps) -> list[tuple[StepKind, str | None]]:
    return [(s.kind, s.replica_id) for s in steps]


# --- lifecycle ------------------------------------------------------------------------------------------------


def test_every_status_has_an_entry_in_the_transition_table():
    assert set(LEGAL_TRANSITIONS) == set(ReplicaStatus)


@pytest.mark.parametrize("final", FINAL)
@pytest.mark.parametrize("wanted", list(ReplicaStatus))
def test_a_final_status_has_no_exit(final, wanted):
    """GIVEN a promoted/terminated/failed/expired replica WHEN any move is asked THEN it is illegal."""
    with pytest.raises(IllegalReplicaTransitionError) as caught:
        check_transition(final, wanted)
    assert (caught.value.current, caught.value.wanted) == (final.value, wanted.value)


@pytest.mark.parametrize("active", sorted(ACTIVE_STATUSES, key=lambda s: s.value))
@pytest.mark.parametrize("final", FINAL)
def test_an_active_standby_can_reach_every_final_status(active, final):
    check_transition(active, final)


@pytest.mark.parametrize("status", list(ReplicaStatus))
def test_nothing_goes_back_to_launching(status):
    with pytest.raises(IllegalReplicaTransitionError):
        check_transition(status, ReplicaStatus.LAUNCHING)


def test_launching_can_become_ready_directly():
    check_transition(ReplicaStatus.LAUNCHING, ReplicaStatus.READY)


# --- plan_standbys ----------------------------------------------------------------------------------------------


def test_a_manual_agent_without_standby_gets_exactly_one_create():
    assert kinds(plan_standbys([], keep_one=True, now=NOW)) == [(StepKind.CREATE, None)]


def test_an_agent_without_manual_mode_never_gets_a_create():
    assert plan_standbys([], keep_one=False, now=NOW) == []


def test_a_running_launching_standby_is_marked_ready_and_kept():
    s = standby(status=ReplicaStatus.LAUNCHING, ec2_state="running")
    assert kinds(plan_standbys([s], keep_one=True, now=NOW)) == [(StepKind.MARK_READY, "rep-1")]


def test_a_ready_running_standby_needs_nothing():
    assert plan_standbys([standby()], keep_one=True, now=NOW) == []


@pytest.mark.parametrize("state", [None, "shutting-down", "terminated", "stopping", "stopped"])
def test_a_standby_whose_instance_is_gone_is_failed_and_replaced(state):
    s = standby(ec2_state=state)
    assert kinds(plan_standbys([s], keep_one=True, now=NOW)) == [(StepKind.MARK_FAILED, "rep-1"),
                                                                 (StepKind.CREATE, None)]


def test_an_instance_ec2_does_not_list_yet_moments_after_its_launch_is_waited_for_not_failed():
    """GIVEN a standby attached seconds ago that DescribeInstances does not list yet (EC2's eventual consistency)
    THEN it is left alone (no MARK_FAILED, so no retire, no false aws_stopped observation, no second standby);
    once LISTING_LAG_S passed without EC2 listing it, it is gone."""
    young = StandbyView("rep-1", ReplicaStatus.LAUNCHING, OTHER_POOL, "i-0standby", NOW - timedelta(seconds=5),
                        ec2_state=None, launched_at=NOW - timedelta(seconds=LISTING_LAG_S - 1))
    old = StandbyView("rep-1", ReplicaStatus.LAUNCHING, OTHER_POOL, "i-0standby", NOW - timedelta(seconds=5),
                      ec2_state=None, launched_at=NOW - timedelta(seconds=LISTING_LAG_S))
    assert plan_standbys([young], keep_one=True, now=NOW) == []
    assert kinds(plan_standbys([old], keep_one=True, now=NOW)) == [(StepKind.MARK_FAILED, "rep-1"),
                                                                   (StepKind.CREATE, None)]


def test_a_row_without_instance_is_launched_until_the_launch_timeout_then_failed():
    young = standby(status=ReplicaStatus.LAUNCHING, instance_id=None, ec2_state=None, age_s=899)
    old = standby(status=ReplicaStatus.LAUNCHING, instance_id=None, ec2_state=None, age_s=900)
    assert kinds(plan_standbys([young], keep_one=True, now=NOW)) == [(StepKind.LAUNCH, "rep-1")]
    assert kinds(plan_standbys([old], keep_one=True, now=NOW)) == [(StepKind.MARK_FAILED, "rep-1"),
                                                                   (StepKind.CREATE, None)]


def test_an_instance_pending_past_the_launch_timeout_is_failed_and_replaced():
    s = standby(status=ReplicaStatus.LAUNCHING, ec2_state="pending", age_s=901)
    assert kinds(plan_standbys([s], keep_one=True, now=NOW)) == [(StepKind.MARK_FAILED, "rep-1"),
                                                                 (StepKind.CREATE, None)]


def test_two_live_standbys_keep_the_newest():
    older, newer = standby("rep-a", age_s=600), standby("rep-b", age_s=60)
    assert kinds(plan_standbys([newer, older], keep_one=True, now=NOW)) == [(StepKind.RETIRE_EXTRA, "rep-a")]


def test_a_pre_warmed_standby_expires_exactly_at_its_expiry():
    at = standby(expires_in_s=0)
    before = standby(expires_in_s=1)
    assert kinds(plan_standbys([at], keep_one=False, now=NOW)) == [(StepKind.EXPIRE, "rep-1")]
    assert plan_standbys([before], keep_one=False, now=NOW) == []


def test_a_failovers_replacement_is_left_to_its_workflow_while_in_flight():
    """The defect: a failover's replacement row not launched yet was launched by the coordinator too (racing the
    workflow's launch; a refusal here failed the row the workflow was about to use), and once running it counted as
    a second standby, so the agent's own standby (the older one) was retired as the extra. Now the row is the
    workflow's: nothing launched or retired, no new standby while it is in flight."""
    from dataclasses import replace

    own = standby("rep-own", age_s=3600)
    unlaunched = replace(standby("rep-fo", status=ReplicaStatus.LAUNCHING, instance_id=None, ec2_state=None,
                                 age_s=30), failover=True)
    running = replace(standby("rep-fo", status=ReplicaStatus.READY, age_s=120), failover=True)
    assert plan_standbys([unlaunched], keep_one=True, now=NOW) == []  # no launch, no second standby created
    assert plan_standbys([own, unlaunched], keep_one=True, now=NOW) == []
    assert plan_standbys([own, running], keep_one=True, now=NOW) == []
    assert plan_standbys([running], keep_one=True, now=NOW) == []


def test_a_failovers_replacement_left_behind_is_failed_and_the_standby_replaced():
    """A workflow that died: its row without an instance past the launch timeout, or with its instance gone."""
    from dataclasses import replace

    stuck = replace(standby("rep-fo", status=ReplicaStatus.LAUNCHING, instance_id=None, ec2_state=None,
                            age_s=900), failover=True)
    gone = replace(standby("rep-fo", ec2_state="terminated"), failover=True)
    for row in (stuck, gone):
        assert kinds(plan_standbys([row], keep_one=True, now=NOW)) == [(StepKind.MARK_FAILED, "rep-fo"),
                                                                       (StepKind.CREATE, None)]


def test_standbys_in_an_account_no_longer_bound_are_abandoned_once_and_nothing_is_launched_or_created():
    """The defect: the plan retried them every run for ever (the coordinator then failed on the account each time);
    nothing is reachable there any more, so each active standby is abandoned, launched or not, and none created."""
    views = [standby("rep-a"), standby("rep-b", status=ReplicaStatus.LAUNCHING, instance_id=None, ec2_state=None,
                                       age_s=5), standby("rep-c", status=ReplicaStatus.FAILED, ec2_state=None)]
    steps = plan_standbys(views, keep_one=True, now=NOW, lost_account="222222222222")
    assert kinds(steps) == [(StepKind.ABANDON, "rep-a"), (StepKind.ABANDON, "rep-b")]
    assert all("222222222222" in s.reason for s in steps)
    assert plan_standbys([], keep_one=True, now=NOW, lost_account="222222222222") == []


def test_final_standbys_are_left_alone():
    views = [standby(f"rep-{s.value}", status=s, ec2_state="terminated", expires_in_s=-10) for s in FINAL]
    assert plan_standbys(views, keep_one=False, now=NOW) == []
    assert kinds(plan_standbys(views, keep_one=True, now=NOW)) == [(StepKind.CREATE, None)]


# --- choose_pool ------------------------------------------------------------------------------------------------


def test_choose_pool_prefers_a_safe_pool_over_a_cheaper_risky_one():
    safe, risky = PoolOption("p.safe", 0.05, 0.1), PoolOption("p.risky", 0.01, 0.9)
    assert choose_pool([risky, safe], set(), risk_ceiling=0.6) == safe


def test_choose_pool_uses_a_risky_pool_only_when_nothing_safe_is_left():
    risky = PoolOption("p.risky", 0.01, 0.9)
    assert choose_pool([risky, PoolOption("p.safe", 0.05, 0.1)], {"p.safe"}, risk_ceiling=0.6) == risky


def test_choose_pool_skips_excluded_unavailable_and_unpriced_pools():
    options = [PoolOption("p.excluded", 0.01, 0.0), PoolOption("p.gone", 0.01, 0.0, available=False),
               PoolOption("p.unpriced", None, 0.0), PoolOption("p.ok", 0.09, 0.5)]
    assert choose_pool(options, {"p.excluded"}).pool_id == "p.ok"
    assert choose_pool(options[:3], {"p.excluded"}) is None


def test_choose_pool_weighs_risk_by_the_downtime_penalty():
    cheap_risky, dear_safe = PoolOption("p.a", 0.03, 0.5), PoolOption("p.b", 0.05, 0.0)
    assert choose_pool([cheap_risky, dear_safe], set()) == cheap_risky
    assert choose_pool([cheap_risky, dear_safe], set(), penalty_per_hour=1.0) == dear_safe


def test_choose_pool_treats_unknown_risk_as_the_given_default():
    unknown = PoolOption("p.unknown", 0.01, None)
    assert choose_pool([unknown], set(), risk_ceiling=0.4, unknown_risk=0.5) == unknown  # only option left
    assert choose_pool([unknown, PoolOption("p.known", 0.02, 0.3)], set(), risk_ceiling=0.4).pool_id == "p.known"


# --- route_failover ---------------------------------------------------------------------------------------------


def test_a_live_standby_in_another_pool_is_promoted():
    assert route_failover(standby(), OTHER_POOL, PRIMARY_POOL) is FailoverRoute.PROMOTE


def test_a_standby_in_the_primarys_pool_is_not_promoted():
    assert route_failover(standby(pool_id=PRIMARY_POOL), OTHER_POOL, PRIMARY_POOL) is FailoverRoute.LAUNCH


@pytest.mark.parametrize("state", ["shutting-down", "terminated", "stopping", "stopped"])
def test_a_standby_whose_instance_is_going_away_is_not_promoted(state):
    assert route_failover(standby(ec2_state=state), None, PRIMARY_POOL) is FailoverRoute.ONDEMAND


def test_a_standby_ec2_no_longer_knows_is_not_promoted():
    """GIVEN an active standby with an instance id that EC2 did not describe WHEN routing THEN no promotion."""
    assert route_failover(standby(ec2_state=None), OTHER_POOL, PRIMARY_POOL) is FailoverRoute.LAUNCH


def test_no_standby_means_spot_replacement_else_on_demand():
    assert route_failover(None, OTHER_POOL, PRIMARY_POOL) is FailoverRoute.LAUNCH
    assert route_failover(None, None, PRIMARY_POOL) is FailoverRoute.ONDEMAND


@pytest.mark.parametrize("final", FINAL)
def test_a_closed_standby_is_never_promoted(final):
    assert route_failover(standby(status=final), OTHER_POOL, PRIMARY_POOL) is FailoverRoute.LAUNCH


# --- retire_at --------------------------------------------------------------------------------------------------


def test_retire_at_is_none_when_auto_terminate_is_off():
    assert retire_at(NOW, NOW + timedelta(seconds=120), auto_terminate=False, wait_s=0) is None


def test_retire_at_waits_for_the_later_of_the_wait_and_the_deadline():
    deadline = NOW + timedelta(seconds=120)
    assert retire_at(NOW, deadline, auto_terminate=True, wait_s=30) == deadline
    assert retire_at(NOW, deadline, auto_terminate=True, wait_s=300) == NOW + timedelta(seconds=300)
    assert retire_at(NOW, None, auto_terminate=True, wait_s=30) == NOW + timedelta(seconds=30)
    assert retire_at(NOW, None, auto_terminate=True, wait_s=-5) == NOW


# --- capacity back-off ----------------------------------------------------------------------------------------


def test_a_standby_to_launch_in_a_pool_in_back_off_is_failed_and_replaced():
    """GIVEN a manual-replica standby without an instance in a pool in back-off WHEN planned
    THEN it is given up (no launch there) and a new standby is created."""
    waiting = standby(instance_id=None, ec2_state=None, status=ReplicaStatus.LAUNCHING)
    steps = plan_standbys([waiting], keep_one=True, now=NOW, blocked_pools={OTHER_POOL})
    assert kinds(steps) == [(StepKind.MARK_FAILED, "rep-1"), (StepKind.CREATE, None)]
    assert "back-off" in steps[0].reason
    # a pool that is not blocked is launched as before; a running standby is not touched by back-off
    assert kinds(plan_standbys([waiting], keep_one=True, now=NOW, blocked_pools={PRIMARY_POOL})) == \
        [(StepKind.LAUNCH, "rep-1")]
    assert plan_standbys([standby()], keep_one=True, now=NOW, blocked_pools={OTHER_POOL}) == []


def test_rank_pools_orders_safe_before_risky_and_drops_blocked_ones():
    safe_dear, safe_cheap = PoolOption("p.safe-dear", 0.05, 0.1), PoolOption("p.safe-cheap", 0.04, 0.2)
    risky = PoolOption("p.risky", 0.01, 0.9)
    assert [o.pool_id for o in rank_pools([risky, safe_dear, safe_cheap], (), risk_ceiling=0.6)] == \
        ["p.safe-cheap", "p.safe-dear", "p.risky"]
    assert [o.pool_id for o in rank_pools([risky, safe_dear, safe_cheap], {"p.safe-dear"}, risk_ceiling=0.6,
                                          blocked={"p.safe-cheap"})] == ["p.risky"]
    assert choose_pool([risky, safe_cheap], (), risk_ceiling=0.6, blocked={"p.safe-cheap"}) == risky
    assert choose_pool([safe_cheap], (), blocked={"p.safe-cheap"}) is None
