"""Properties of the replica rules: one standby per manual agent, pool choice, failover route, retire time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from components.decision_engine import PoolOption
from components.replica_coordinator import (
    ACTIVE_STATUSES,
    LEGAL_TRANSITIONS,
    FailoverRoute,
    IllegalReplicaTransitionError,
    ReplicaStatus,
    StandbyView,
    StepKind,
    check_transition,
    choose_pool,
    plan_standbys,
    retire_at,
    route_failover,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LAUNCH_TIMEOUT_S = 900
EC2_STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
LIVE_EC2_STATES = frozenset({"pending", "running"})
POOLS = tuple(f"m5.large.us-east-1{z}" for z in "abcdef")
FINAL = frozenset(ReplicaStatus) - ACTIVE_STATUSES


@st.composite
def standby_views(draw) -> list[StandbyView]:
    """A handful of replicas of one agent in any status, with or without instance, EC2 state and expiry."""
    count = draw(st.integers(min_value=0, max_value=6))
    views = []
    for n in range(count):
        instance = draw(st.one_of(st.none(), st.just(f"i-{n:017x}")))
        views.append(StandbyView(
            replica_id=f"rep-{n}",
            status=draw(st.sampled_from(list(ReplicaStatus))),
            pool_id=draw(st.one_of(st.none(), st.sampled_from(POOLS))),
            instance_id=instance,
            # ages straddle the launch timeout; equal creation times happen (same-second ids)
            created_at=NOW - timedelta(seconds=draw(st.sampled_from([0, 1, 60, 899, 900, 901, 3600]))),
            expires_at=draw(st.one_of(st.none(), st.builds(lambda s: NOW + timedelta(seconds=s),
                                                            st.integers(min_value=-7200, max_value=7200)))),
            ec2_state=draw(st.one_of(st.none(), st.sampled_from(EC2_STATES))) if instance else None,
        ))
    return draw(st.permutations(views))


def survives(s: StandbyView) -> bool:
    """Oracle, written from the rules (not the code): an active standby that should still be there afterwards."""
    if not s.active or (s.expires_at is not None and NOW >= s.expires_at):
        return False
    age = (NOW - s.created_at).total_seconds()
    if s.instance_id is None:
        return age < LAUNCH_TIMEOUT_S  # still to be launched
    return s.ec2_state == "running" or (s.ec2_state == "pending" and age < LAUNCH_TIMEOUT_S)


def removed_ids(steps) -> set[str]:
    return {s.replica_id for s in steps
            if s.kind in (StepKind.EXPIRE, StepKind.MARK_FAILED, StepKind.RETIRE_EXTRA)}


@settings(max_examples=300, deadline=None)
@given(standby_views())
def test_keep_one_leaves_exactly_one_live_standby_or_one_create(views):
    steps = plan_standbys(views, keep_one=True, now=NOW)
    creates = [s for s in steps if s.kind is StepKind.CREATE]
    kept = [v for v in views if v.active and v.replica_id not in removed_ids(steps)]
    assert len(creates) <= 1
    assert (len(kept), len(creates)) in ((1, 0), (0, 1)), (steps, views)


@settings(max_examples=300, deadline=None)
@given(standby_views())
def test_keep_one_keeps_the_newest_live_standby_and_retires_only_the_other_live_ones(views):
    steps = plan_standbys(views, keep_one=True, now=NOW)
    live = sorted((v for v in views if survives(v)), key=lambda v: (v.created_at, v.replica_id))
    retired = {s.replica_id for s in steps if s.kind is StepKind.RETIRE_EXTRA}
    if live:
        assert live[-1].replica_id not in removed_ids(steps)
        assert retired == {v.replica_id for v in live[:-1]}
        assert not any(s.kind is StepKind.CREATE for s in steps)
    else:
        assert retired == set()
        assert [s.kind for s in steps].count(StepKind.CREATE) == 1


@settings(max_examples=300, deadline=None)
@given(standby_views())
def test_without_keep_one_nothing_is_created(views):
    steps = plan_standbys(views, keep_one=False, now=NOW)
    assert not any(s.kind is StepKind.CREATE for s in steps)


@settings(max_examples=300, deadline=None)
@given(standby_views(), st.booleans())
def test_exactly_the_active_standbys_past_their_expiry_are_expired(views, keep_one):
    steps = plan_standbys(views, keep_one=keep_one, now=NOW)
    expired = [s.replica_id for s in steps if s.kind is StepKind.EXPIRE]
    due = {v.replica_id for v in views if v.active and v.expires_at is not None and NOW >= v.expires_at}
    assert len(expired) == len(set(expired))
    assert set(expired) == due


@settings(max_examples=300, deadline=None)
@given(standby_views(), st.booleans())
def test_steps_only_touch_active_standbys_and_the_planner_never_raises(views, keep_one):
    steps = plan_standbys(views, keep_one=keep_one, now=NOW)
    active = {v.replica_id for v in views if v.active}
    for step in steps:
        if step.kind is StepKind.CREATE:
            assert step.replica_id is None
        else:
            assert step.replica_id in active
    assert all(s.reason for s in steps)


@settings(max_examples=200, deadline=None)
@given(standby_views())
def test_the_plan_does_not_depend_on_the_order_of_the_rows(views):
    forward = plan_standbys(views, keep_one=True, now=NOW)
    backward = plan_standbys(list(reversed(views)), keep_one=True, now=NOW)
    assert sorted(forward, key=repr) == sorted(backward, key=repr)


# --- choose_pool ------------------------------------------------------------------------------------------------

options = st.lists(
    st.builds(PoolOption,
              pool_id=st.sampled_from(POOLS),
              price=st.one_of(st.none(), st.floats(min_value=0.001, max_value=5, allow_nan=False)),
              risk=st.one_of(st.none(), st.floats(min_value=0, max_value=1, allow_nan=False)),
              available=st.booleans()),
    max_size=8)
ceilings = st.floats(min_value=0, max_value=1, allow_nan=False)
penalties = st.floats(min_value=0, max_value=10, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(options, st.sets(st.sampled_from(POOLS)), ceilings, penalties)
def test_choose_pool_never_returns_an_excluded_unavailable_or_unpriced_pool(opts, exclude, ceiling, penalty):
    chosen = choose_pool(opts, exclude, risk_ceiling=ceiling, penalty_per_hour=penalty)
    usable = [o for o in opts if o.available and o.price is not None and o.pool_id not in exclude]
    if not usable:
        assert chosen is None
        return
    assert chosen is not None and chosen in opts
    assert chosen.pool_id not in exclude and chosen.available and chosen.price is not None


@settings(max_examples=300, deadline=None)
@given(options, st.sets(st.sampled_from(POOLS)), ceilings, st.floats(min_value=0, max_value=1), penalties)
def test_choose_pool_returns_the_cheapest_safe_pool_whenever_one_exists(opts, exclude, ceiling, unknown, penalty):
    chosen = choose_pool(opts, exclude, risk_ceiling=ceiling, unknown_risk=unknown, penalty_per_hour=penalty)

    def risk(o):
        return o.risk if o.risk is not None else unknown

    usable = [o for o in opts if o.available and o.price is not None and o.pool_id not in exclude]
    safe = [o for o in usable if risk(o) <= ceiling]
    candidates = safe or usable
    if safe:
        assert risk(chosen) <= ceiling
    if candidates:
        best = min(o.price + risk(o) * penalty for o in candidates)
        assert chosen.price + risk(chosen) * penalty == best


# --- route_failover ---------------------------------------------------------------------------------------------

routed = st.builds(
    StandbyView,
    replica_id=st.just("rep-1"),
    status=st.sampled_from(list(ReplicaStatus)),
    pool_id=st.one_of(st.none(), st.sampled_from(POOLS)),
    instance_id=st.one_of(st.none(), st.just("i-0standby")),
    created_at=st.just(NOW),
    expires_at=st.none(),
    ec2_state=st.one_of(st.none(), st.sampled_from(EC2_STATES)),  # None: EC2 does not know the instance
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), routed), st.one_of(st.none(), st.sampled_from(POOLS)),
       st.one_of(st.none(), st.sampled_from(POOLS)))
def test_route_failover_promotes_only_a_live_active_standby_in_another_pool(standby, spot_pool, primary_pool):
    route = route_failover(standby, spot_pool, primary_pool)
    promotable = (standby is not None and standby.active and standby.instance_id is not None
                  and standby.pool_id != primary_pool and standby.ec2_state in LIVE_EC2_STATES)
    if promotable:
        assert route is FailoverRoute.PROMOTE
    else:
        assert route is (FailoverRoute.LAUNCH if spot_pool else FailoverRoute.ONDEMAND)


# --- retire_at --------------------------------------------------------------------------------------------------

moments = st.integers(min_value=-3600, max_value=3600).map(lambda s: NOW + timedelta(seconds=s))


@settings(max_examples=300, deadline=None)
@given(moments, st.one_of(st.none(), moments), st.booleans(), st.integers(min_value=-600, max_value=7200))
def test_retire_at_is_none_iff_auto_terminate_is_off_and_never_before_deadline(handover, deadline, auto, wait):
    when = retire_at(handover, deadline, auto_terminate=auto, wait_s=wait)
    assert (when is None) is (not auto)
    if when is not None:
        assert when >= handover
        assert when >= handover + timedelta(seconds=wait)
        if deadline is not None:
            assert when >= deadline
        assert when in {handover + timedelta(seconds=max(wait, 0)), deadline}  # no later than needed


# --- lifecycle ------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(FINAL, key=lambda s: s.value)), st.sampled_from(list(ReplicaStatus)))
def test_final_statuses_have_no_exits(final, wanted):
    assert LEGAL_TRANSITIONS[final] == frozenset()
    try:
        check_transition(final, wanted)
    except IllegalReplicaTransitionError as exc:
        assert (exc.current, exc.wanted) == (final.value, wanted.value)
    else:
        raise AssertionError(f"{final.value} → {wanted.value} was allowed")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(ReplicaStatus)), min_size=1, max_size=8))
def test_any_legal_walk_never_leaves_a_final_status(walk):
    current = ReplicaStatus.LAUNCHING
    for wanted in walk:
        try:
            check_transition(current, wanted)
        except IllegalReplicaTransitionError:
            assert current in FINAL or wanted not in LEGAL_TRANSITIONS[current]
            continue
        assert current not in FINAL
        current = wanted
