"""The sentinel against moto, through the real EventBridge handlers: what is ignored, rejected, de-duplicated,
what starts a failover, what happens to standbys, and a burst for one pool.

Events go through the sentinel rules and the event queue's batch shape to ``api.lambda_.invoke("sentinel", …)``
(``tests.e2e.failover_support.deliver``); the burst calls the same registered handler from
threads directly (chalice's test client swaps ``os.environ`` per call, which is not thread-safe — see
``localmode.workflows``). The moto is shared by the whole session: assertions are about this test's agents only.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from chalice.local import LambdaContext

from chalicelib.jobs.replica_coordinator import reconcile_agent
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import interruptions
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories import replicas as replica_repo
from chalicelib.sentinel import handle, on_event
from chalicelib.settings import SENTINEL_FUNCTION, get_settings
from chalicelib.tables import AgentTable, InterruptionTable
from chalicelib.tables.interruptions import SignalClaimTable
from components.replica_coordinator import ReplicaStatus
from components.sentinel import Signal, SignalKind, SignalSource, claim_is_stale, signal_key
from localmode.eventbridge import sqs_event
from tests.conftest import new_instance_id, registration
from tests.e2e.failover_support import (
    ACCOUNT,
    REGION,
    ZONES,
    deliver,
    ec2,
    ec2_event,
    launch_primary,
    rebalance,
    register_agent,
    unique_type,
    wait_for,
    warning,
)

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")

STATE_CHANGE = "EC2 Instance State-change Notification"
MANUAL = {"manual_replica_enabled": True, "auto_switch_enabled": False}


def state_change(instance_id: str, state: str) -> dict:
    return ec2_event(STATE_CHANGE, instance_id, state=state)


def events_of(client_id: str) -> list[InterruptionTable]:
    return list(InterruptionTable.query(client_id, consistent_read=True))


def events_for_instance(instance_id: str) -> list[InterruptionTable]:
    return list(InterruptionTable.scan(InterruptionTable.instance_id == instance_id))


def claim(instance_id: str, group: str) -> SignalClaimTable | None:
    try:
        return SignalClaimTable.get(signal_key(instance_id, group), consistent_read=True)
    except SignalClaimTable.DoesNotExist:
        return None


def agent_row(client_id, agent_id) -> AgentTable:
    return AgentTable.get(client_id, agent_id, consistent_read=True)


def agent_with_standby(make_tenant):
    """A manual-replica agent whose standby was just launched (status launching, instance attached)."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **MANUAL)
    reconcile_agent(agent_repo.get(client_id, agent_id), datetime.now(UTC))
    [standby] = replica_repo.for_agent(agent_id, include_final=False)
    assert standby.status is ReplicaStatus.LAUNCHING and standby.instance_id
    return client_id, agent_id, primary, standby


# --- ignored and rejected -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("handler", "make_event", "group"), [
    pytest.param("sentinel-interruption", warning, "termination", id="warning"),
    pytest.param("sentinel-rebalance", rebalance, "rebalance-recommendation", id="rebalance"),
    pytest.param("sentinel-state-change", lambda i: state_change(i, "terminated"), "termination", id="terminated"),
])
def test_a_signal_for_an_unmanaged_instance_is_ignored_and_writes_nothing(api, aws_tables, handler, make_event,
                                                                          group):
    """GIVEN an instance no agent reported
    WHEN an EC2 event about it arrives
    THEN it is ignored: no claim, no interruption event."""
    instance_id = new_instance_id()

    result = deliver(api, handler, make_event(instance_id))

    assert result == {"action": "ignored", "reason": "unmanaged instance"}
    assert claim(instance_id, group) is None
    assert events_for_instance(instance_id) == []


def malformed(**changes) -> dict:
    """A warning for some instance with top-level fields replaced (``detail_type`` → ``detail-type``)."""
    event = warning(new_instance_id())
    event.update({key.replace("_", "-"): value for key, value in changes.items()})
    return event


@pytest.mark.parametrize("event", [
    pytest.param(malformed(detail_type="AWS API Call via CloudTrail"), id="other-detail-type"),
    pytest.param(malformed(detail={"instance-action": "terminate"}), id="no-instance-id"),
    pytest.param(malformed(detail={"instance-id": "vol-0abc1234"}), id="not-an-instance-id"),
    pytest.param(malformed(detail={"instance-id": 1234}), id="instance-id-number"),
    pytest.param(malformed(time="yesterday"), id="bad-time"),
    pytest.param(malformed(detail="i-0abc1234"), id="detail-not-an-object"),
    pytest.param(malformed(detail_type=["EC2 Spot Instance Interruption Warning"]), id="detail-type-a-list"),
])
def test_a_malformed_event_is_rejected_without_failing_the_invocation(api, aws_tables, event):
    """GIVEN an event that is not an EC2 signal we understand
    WHEN it is delivered
    THEN the handler answers 'rejected' with a reason (no exception, so EventBridge does not retry it)."""
    result = deliver(api, "sentinel-interruption", event)

    assert result["action"] == "rejected" and result["reason"]


# --- the event's account ----------------------------------------------------------------------------------------

FOREIGN = "222222222222"


def from_account(event: dict, account: str) -> dict:
    """The event as EventBridge would deliver it had it come from ``account``."""
    return {**event, "account": account}


@pytest.mark.parametrize(("handler", "make_event", "group"), [
    pytest.param("sentinel-interruption", warning, "termination", id="warning"),
    pytest.param("sentinel-rebalance", rebalance, "rebalance-recommendation", id="rebalance"),
    pytest.param("sentinel-state-change", lambda i: state_change(i, "terminated"), "termination", id="terminated"),
])
def test_an_event_about_a_tenants_instance_from_another_account_is_ignored(api, make_tenant, failover_machine,
                                                                          handler, make_event, group):
    """GIVEN tenant A's primary (in the home account, 123456789012)
    WHEN an EC2 event about it arrives from another account (a bound client account forwards its events to
    our bus)
    THEN it is ignored: no claim, no interruption, no failover; the genuine event afterwards still acts."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)

    result = deliver(api, handler, from_account(make_event(primary), FOREIGN))

    assert result == {"action": "ignored", "reason": "the event's account is not the instance's account"}
    assert claim(primary, group) is None
    assert events_of(client_id) == []
    assert agent_row(client_id, agent_id).instance_id == primary
    if handler == "sentinel-interruption":
        genuine = deliver(api, handler, make_event(primary))
        assert genuine["action"] == "failover_started", genuine
        assert wait_for(genuine["execution_arn"])["status"] == "SUCCEEDED"


def test_an_eventbridge_signal_without_an_account_is_ignored(make_tenant):
    """Chalice and EventBridge always carry ``account``; a signal without one proves nothing: ignored."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    signal = Signal(SignalKind.TERMINATION, primary, datetime.now(UTC), SignalSource.EVENTBRIDGE, region=REGION,
                    event_id=str(uuid.uuid4()), deadline=datetime.now(UTC) + timedelta(seconds=120))

    assert handle(signal, datetime.now(UTC))["action"] == "ignored"
    assert events_of(client_id) == []


def test_an_event_about_a_standby_from_another_account_is_ignored(api, make_tenant):
    client_id, agent_id, _, standby = agent_with_standby(make_tenant)

    result = deliver(api, "sentinel-interruption", from_account(warning(standby.instance_id), FOREIGN))

    assert result["action"] == "ignored"
    assert replica_repo.get(agent_id, standby.replica_id).status is ReplicaStatus.LAUNCHING


def test_without_a_verified_account_the_clients_single_binding_is_the_instance_account(
        api, admin, make_tenant, monkeypatch):
    """An agent with no verified account, its client bound to one account in assume-role tenancy: events
    from that account are the instance's (they get past the check: a 'running' state is then ignored as
    such), events from the home account are not."""
    bound = "111111111111"
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    role = f"arn:aws:iam::{bound}:role/SpotOptimizer-dev"
    assert admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": bound, "role_arn": role})[0] == 201
    AgentTable(client_id, agent_id).update(actions=[AgentTable.account_id.remove()])
    monkeypatch.setenv("SPOT_TENANCY", "assume-role")
    get_settings.cache_clear()
    try:
        home = deliver(api, "sentinel-state-change", state_change(primary, "running"))
        theirs = deliver(api, "sentinel-state-change", from_account(state_change(primary, "running"), bound))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert home == {"action": "ignored", "reason": "the event's account is not the instance's account"}
    assert theirs == {"action": "ignored", "reason": "state running"}


def test_an_event_from_an_account_the_client_has_since_unbound_is_ignored_once_and_starts_nothing(
        api, admin, make_tenant, failover_machine):
    """GIVEN an agent verified in a bound account, which its client then unbinds (the account's stack may still
    forward its events: a queued one, another client keeping the bus open)
    WHEN an interruption warning about its primary arrives from that account, twice (a redelivery)
    THEN it is ignored before any claim: no interruption, no execution (before, a failover started and failed
    ``account_not_bound``); one audit event says so, whatever the redeliveries."""
    from chalicelib.repositories import activity, clients
    from chalicelib.sentinel import UNBOUND_ACCOUNT

    bound = "111111111111"
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    role = f"arn:aws:iam::{bound}:role/SpotOptimizer-dev"
    assert admin.post(f"/api/admin/clients/{client_id}/accounts", {"account_id": bound, "role_arn": role})[0] == 201
    AgentTable(client_id, agent_id).update(actions=[AgentTable.account_id.set(bound)])
    clients.unbind_account(clients.require(client_id), bound)  # as a (forced) unbinding leaves it
    event = from_account(warning(primary), bound)

    first = deliver(api, "sentinel-interruption", event)
    again = deliver(api, "sentinel-interruption", {**event, "id": str(uuid.uuid4())})
    handle_again = handle(Signal(SignalKind.TERMINATION, primary, datetime.fromisoformat(event["time"]),
                                 SignalSource.EVENTBRIDGE, region=REGION, event_id=event["id"], account=bound),
                          datetime.now(UTC))

    assert first == again == {"action": "ignored", "reason": UNBOUND_ACCOUNT}
    assert handle_again["action"] == "ignored"
    assert claim(primary, "termination") is None and events_of(client_id) == []
    ignored = [e for e in activity.recent_events(datetime.now(UTC), limit=500)
               if e.event_type == "event_ignored" and e.instance_id == primary]
    assert len(ignored) == 2  # one per event: the redelivery of the first wrote nothing more


# --- termination of a primary ---------------------------------------------------------------------------------


def test_a_terminated_state_change_of_a_primary_starts_the_failover_and_a_later_warning_is_a_duplicate(
        api, make_tenant, failover_machine):
    """GIVEN a registered agent whose primary EC2 terminated
    WHEN the 'terminated' state change arrives, then the (late) interruption warning
    THEN the first starts one failover that succeeds; the warning is a duplicate of the same event."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    ec2().terminate_instances(InstanceIds=[primary])

    first = deliver(api, "sentinel-state-change", state_change(primary, "terminated"))
    late = deliver(api, "sentinel-interruption", warning(primary))

    assert first["action"] == "failover_started", first
    assert late["action"] == "duplicate" and late["interruption_id"] == first["interruption_id"], late
    assert wait_for(first["execution_arn"])["status"] == "SUCCEEDED"
    [event] = events_of(client_id)
    assert event.interruption_id == first["interruption_id"]
    assert event.signal_type == "state-change:terminated" and event.status == "resolved"
    assert event.termination_time is None  # only a warning carries AWS's deadline
    assert agent_row(client_id, agent_id).instance_id not in (None, primary)


@pytest.mark.parametrize("state", ["pending", "running"])
def test_a_state_change_of_a_primary_that_is_not_going_away_is_ignored(api, make_tenant, state):
    """GIVEN a registered agent WHEN its primary reports pending/running THEN nothing is recorded."""
    client_id, _, _, primary, _ = register_agent(make_tenant)

    result = deliver(api, "sentinel-state-change", state_change(primary, state))

    assert result == {"action": "ignored", "reason": f"state {state}"}
    assert events_of(client_id) == []


# --- standbys -------------------------------------------------------------------------------------------------


def test_a_running_state_change_of_a_launching_standby_marks_it_ready(api, make_tenant):
    """GIVEN a manual-replica agent whose standby is launching
    WHEN EC2 says the standby's instance is running
    THEN the standby is ready, and no interruption is recorded."""
    client_id, agent_id, _, standby = agent_with_standby(make_tenant)

    result = deliver(api, "sentinel-state-change", state_change(standby.instance_id, "running"))

    assert result == {"action": "standby_ready", "replica_id": standby.replica_id}
    ready = replica_repo.get(agent_id, standby.replica_id)
    assert ready.status is ReplicaStatus.READY and ready.ready_at is not None
    assert agent_row(client_id, agent_id).current_replica_id == standby.replica_id
    assert events_of(client_id) == []


def test_a_warning_for_a_standby_marks_it_failed_and_starts_no_failover(api, make_tenant):
    """GIVEN a manual-replica agent with a standby
    WHEN the standby (not the primary) gets the two-minute warning
    THEN the standby is failed and its slot freed for the coordinator; the primary stays, no failover."""
    client_id, agent_id, primary, standby = agent_with_standby(make_tenant)

    result = deliver(api, "sentinel-interruption", warning(standby.instance_id))

    assert result == {"action": "standby_lost", "replica_id": standby.replica_id}
    lost = replica_repo.get(agent_id, standby.replica_id)
    assert lost.status is ReplicaStatus.FAILED and "termination-warning" in lost.error_message
    row = agent_row(client_id, agent_id)
    assert row.current_replica_id is None and row.instance_id == primary
    assert events_of(client_id) == [] and claim(standby.instance_id, "termination") is None


# --- rebalance ------------------------------------------------------------------------------------------------


def test_a_rebalance_on_a_low_risk_pool_is_monitored_without_a_standby(api, make_tenant):
    """GIVEN an agent on a pool whose risk is well below the pre-warm threshold
    WHEN a rebalance recommendation arrives
    THEN the answer is 'monitor': no replica, no instance; the event is resolved with no action."""
    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    risk = get_settings().prewarm_risk_threshold / 4
    pool_repo.save_risk([(f"{itype}.{ZONES[0]}", risk, "model", "test")], 3600, datetime.now(UTC))

    result = deliver(api, "sentinel-rebalance", rebalance(primary))

    assert result["action"] == "monitor" and "replica_id" not in result, result
    assert result["risk_score"] == pytest.approx(risk, abs=1e-4)
    assert replica_repo.for_agent(agent_id) == []
    assert agent_row(client_id, agent_id).current_replica_id is None
    [event] = events_of(client_id)
    assert event.status == "resolved" and event.response_action == "no-action"


# --- the de-duplication window --------------------------------------------------------------------------------


def test_a_signal_after_the_dedup_window_starts_a_new_workflow(make_tenant, failover_machine):
    """GIVEN a warning for the primary was claimed (and handled) one window + 1 minute ago
    WHEN the same signal is handled inside the window THEN it is a duplicate of that event;
    WHEN it is handled after the window THEN it starts a new workflow with a new event, which succeeds."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    window = get_settings().signal_window_s
    now = datetime.now(UTC)
    earlier = now - timedelta(seconds=window + 60)
    old = InterruptionTable(client_id, interruptions.new_interruption_id(earlier), agent_id=agent_id,
                            instance_id=primary, signal_type=SignalKind.TERMINATION.value, source="agent",
                            status="resolved", detected_at=earlier)
    assert interruptions.claim_and_record(old, signal_key(primary, "termination"), earlier, window)[0]

    def signal(at: datetime) -> Signal:
        return Signal(SignalKind.TERMINATION, primary, at, SignalSource.EVENTBRIDGE, region=REGION,
                      event_id=str(uuid.uuid4()), deadline=at + timedelta(seconds=120), action="terminate",
                      account=ACCOUNT)

    inside = earlier + timedelta(seconds=window - 1)
    within = handle(signal(inside), inside)
    assert within == {"action": "duplicate", "interruption_id": old.interruption_id, "status": "resolved"}

    after = handle(signal(now), now)

    assert after["action"] == "failover_started", after
    assert after["interruption_id"] != old.interruption_id
    assert claim(primary, "termination").interruption_id == after["interruption_id"]
    assert wait_for(after["execution_arn"])["status"] == "SUCCEEDED"
    assert {e.interruption_id for e in events_of(client_id)} == {old.interruption_id, after["interruption_id"]}
    assert agent_row(client_id, agent_id).instance_id != primary


def claim_row(client_id: str, instance_id: str, at: datetime) -> InterruptionTable:
    return InterruptionTable(client_id, interruptions.new_interruption_id(at), agent_id="ag-claims",
                             instance_id=instance_id, signal_type="termination-warning", source="eventbridge",
                             detected_at=at)


@pytest.mark.parametrize(("after", "claimed"), [
    (lambda w: timedelta(seconds=-1), False),  # an out-of-order (older) signal
    (lambda w: timedelta(seconds=w - 1), False),
    (lambda w: timedelta(seconds=w) - timedelta(microseconds=1), False),
    (lambda w: timedelta(seconds=w) + timedelta(microseconds=1), True),
    (lambda w: timedelta(seconds=w + 60), True),
], ids=["older-signal", "window-1s", "window-1us", "window+1us", "window+1min"])
def test_the_claim_is_held_for_the_whole_window_and_released_after_it(aws_tables, after, claimed):
    """GIVEN a claim taken at T WHEN another signal of the same key is claimed at T + delta
    THEN it is refused inside the window (no event written) and claimed with its own event after it."""
    window, t = get_settings().signal_window_s, datetime.now(UTC)
    instance_id, client_id = new_instance_id(), f"cl-{uuid.uuid4().hex[:8]}"
    key = signal_key(instance_id, "termination")
    first = claim_row(client_id, instance_id, t)
    assert interruptions.claim_and_record(first, key, t, window) == (True, first.interruption_id)
    later = t + after(window)
    second = claim_row(client_id, instance_id, later)

    result = interruptions.claim_and_record(second, key, later, window)

    if claimed:
        assert result == (True, second.interruption_id)
        assert claim(instance_id, "termination").interruption_id == second.interruption_id
    else:
        assert result == (False, first.interruption_id)
        assert interruptions.get(client_id, second.interruption_id) is None  # no event without its claim


def test_the_claim_repository_agrees_with_claim_is_stale_at_exactly_one_window(aws_tables):
    window, t = get_settings().signal_window_s, datetime.now(UTC)
    instance_id, client_id = new_instance_id(), f"cl-{uuid.uuid4().hex[:8]}"
    key = signal_key(instance_id, "termination")
    assert interruptions.claim_and_record(claim_row(client_id, instance_id, t), key, t, window)[0]
    at = t + timedelta(seconds=window)

    claimed, _ = interruptions.claim_and_record(claim_row(client_id, instance_id, at), key, at, window)

    assert claimed is claim_is_stale(t, at, window)


# --- a burst for one pool -------------------------------------------------------------------------------------


def register_in_pool(make_tenant, itype: str) -> tuple[str, str, str]:
    """(client_id, agent_id, primary) of an agent with a real primary in pool ``itype``.us-east-1a, with prices."""
    client_id, caller = make_tenant()
    primary = launch_primary(itype, ZONES[0])
    status, reply = caller.post("/api/agents/register", registration(instance_id=primary, instance_type=itype,
                                                                     region=REGION, az=ZONES[0], mode="spot"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    report = {"instance": {"instance_type": itype, "region": REGION},
              "pricing": {"on_demand_price": 0.192,
                          "spot_pools": [{"pool_id": f"{itype}.{z}", "price": 0.03 + 0.005 * i}
                                         for i, z in enumerate(ZONES)]}}
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", report)
    assert status == 200, reply
    return client_id, agent_id, primary


def test_a_burst_of_warnings_for_one_pool_starts_one_failover_per_agent_and_all_succeed(
        chalice_app, make_tenant, failover_machine, atomic_moto_requests, monkeypatch):
    """GIVEN five agents on the same spot pool
    WHEN their five interruption warnings arrive at once (five concurrent invocations)
    THEN each invocation answers quickly (nothing sleeps), five executions start and every one succeeds."""
    itype = unique_type()
    fleet = [register_in_pool(make_tenant, itype) for _ in range(5)]
    handler = chalice_app.handler_map[SENTINEL_FUNCTION]
    start = threading.Barrier(len(fleet))
    results: dict[str, dict] = {}
    took: list[float] = []
    errors: list[BaseException] = []
    slept: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        if threading.current_thread() in threads:  # only the deliveries, not moto's execution threads
            slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)

    def invoke(primary: str) -> None:
        event = warning(primary)
        try:
            start.wait(timeout=10)
            began = time.monotonic()
            response = handler(sqs_event([event]), LambdaContext(SENTINEL_FUNCTION, 512))
            took.append(time.monotonic() - began)
            assert response == {"batchItemFailures": []}
            results[primary] = on_event(event)  # the stored result: nothing runs again
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=invoke, args=(primary,)) for _, _, primary in fleet]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == [] and len(results) == len(fleet)
    assert all(r["action"] == "failover_started" for r in results.values()), results
    assert len({r["interruption_id"] for r in results.values()}) == len(fleet)
    assert len({r["execution_arn"] for r in results.values()}) == len(fleet)
    assert slept == []  # the legacy handler slept per signal, so a burst queued up
    assert max(took) < 20, took  # a backstop for any other kind of waiting
    for client_id, agent_id, primary in fleet:
        assert wait_for(results[primary]["execution_arn"], timeout=120)["status"] == "SUCCEEDED"
        [event] = events_of(client_id)
        assert event.interruption_id == results[primary]["interruption_id"] and event.status == "resolved"
        assert event.pool_id == f"{itype}.{ZONES[0]}"
        moved = agent_row(client_id, agent_id)
        assert moved.instance_id != primary and moved.current_pool_id != f"{itype}.{ZONES[0]}"


# --- capacity observations ------------------------------------------------------------------------------------


def observed(pool_id: str) -> list[tuple[str, str]]:
    from chalicelib.repositories import observations

    since = datetime.now(UTC) - timedelta(hours=1)
    return [(o.kind.value, o.source) for o in observations.for_pools([pool_id], since)[pool_id]]


def test_a_warning_is_one_observation_of_the_pool_whatever_the_redeliveries_and_sources(
        api, make_tenant, failover_machine):
    """GIVEN an agent on spot in us-east-1a WHEN the warning arrives twice (same event id), once more with
    another event id and once from the agent itself THEN its pool has one interruption_warning observation."""
    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    event = warning(primary)
    first = deliver(api, "sentinel-interruption", event)
    deliver(api, "sentinel-interruption", dict(event))
    deliver(api, "sentinel-interruption", warning(primary))
    status, _ = caller.post(f"/api/agents/{agent_id}/termination-imminent",
                            {"instance_id": primary, "termination_time": event["time"]})
    assert first["action"] == "failover_started" and status == 202
    assert observed(f"{itype}.{ZONES[0]}") == [("interruption_warning", "sentinel")]
    wait_for(first["execution_arn"])


def test_a_rebalance_is_observed_once_on_redelivery(api, make_tenant):
    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    event = rebalance(primary)
    first = deliver(api, "sentinel-rebalance", event)
    again = deliver(api, "sentinel-rebalance", dict(event))
    assert first["action"] in ("monitor", "prewarm") and again == first
    assert observed(f"{itype}.{ZONES[0]}") == [("rebalance_recommendation", "sentinel")]


def test_aws_stopping_a_primary_we_did_not_retire_is_an_aws_stopped_observation(api, make_tenant, failover_machine):
    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    result = deliver(api, "sentinel-state-change", state_change(primary, "stopped"))
    assert result["action"] == "failover_started"
    assert observed(f"{itype}.{ZONES[0]}") == [("aws_stopped", "sentinel")]
    wait_for(result["execution_arn"])
    # the old primary, retired by the failover, is terminated by us: its state change adds nothing
    deliver(api, "sentinel-state-change", state_change(primary, "terminated"))
    assert observed(f"{itype}.{ZONES[0]}") == [("aws_stopped", "sentinel")]


def test_a_warning_for_a_standby_is_an_observation_of_the_standby_pool(api, make_tenant):
    client_id, agent_id, primary, standby = agent_with_standby(make_tenant)
    event = warning(standby.instance_id)
    deliver(api, "sentinel-interruption", event)
    deliver(api, "sentinel-interruption", dict(event))
    # (EventBridge times are whole seconds, so the warning may sort before the launch)
    assert sorted(observed(standby.pool_id)) == [("interruption_warning", "sentinel"),
                                                 ("launch_succeeded", "replica-coordinator")]


@pytest.mark.parametrize("agent_first", [True, False], ids=["agent-first", "eventbridge-first"])
def test_a_standbys_rebalance_from_its_agent_and_eventbridge_is_one_observation(api, make_tenant, agent_first):
    """GIVEN a standby the product launched WHEN its rebalance recommendation arrives from its agent and from
    EventBridge (ids of their own), in either order THEN its client's view and the fleet's each count one.
    (Before: the client's view counted it twice, the agent's copy and AWS's under different ids.)"""
    from chalicelib.repositories.observations import FLEET

    client_id, agent_id, _, standby = agent_with_standby(make_tenant)
    agent = agent_repo.get(client_id, agent_id)

    def from_agent():
        handle(Signal(SignalKind.REBALANCE, standby.instance_id, datetime.now(UTC), SignalSource.AGENT,
                      region=agent.region), datetime.now(UTC), on_behalf_of=agent)

    def from_eventbridge():
        deliver(api, "sentinel-rebalance", rebalance(standby.instance_id))

    for copy in ((from_agent, from_eventbridge) if agent_first else (from_eventbridge, from_agent)):
        copy()
    since = datetime.now(UTC) - timedelta(hours=1)
    for viewer in (client_id, FLEET):
        kinds = [o.kind.value for o in observations_for(standby.pool_id, since, viewer)]
        assert kinds.count("rebalance_recommendation") == 1, (viewer, kinds)
    assert replica_repo.get(agent_id, standby.replica_id).active


def observations_for(pool_id: str, since: datetime, viewer: str):
    from chalicelib.repositories import observations

    return observations.for_pools([pool_id], since, viewer=viewer)[pool_id]
