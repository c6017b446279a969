"""Failovers whose task Lambdas are slower than the ASL's timeouts, or whose answers are lost (#14's mass
interruption: a throttled, cold or slow Lambda, a slow EC2 API). The real state machine runs in moto, which
enforces TimeoutSeconds in real time, from the one ASL file with every Task's TimeoutSeconds shortened to
``TIMEOUT_S`` (``workflows.render(task_timeout_s=...)``); retries, back-off budgets and fallbacks unchanged.

A stall is injected at the Lambda runtime boundary (moto's Lambda Invoke, which the bridge routes to the
in-process handlers), for this test's tenant only:

- *answer lost*: the handler runs (its writes and launches happen), then its answer is held past the timeout;
- *slow start*: the invocation is held before the handler runs, and released when the test says (a late attempt
  Step Functions stopped waiting for, which then does its work — as a Lambda that outlives its task does).

Asserted: the interruption resolved (spot or on-demand) or, only when on-demand cannot be launched either,
recorded failed loudly; exactly one live replacement (the agent's instance), nothing recorded twice.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from chalicelib.aws import ec2 as adapter
from chalicelib.repositories import replicas as replica_repo
from chalicelib.tables import AgentTable, InterruptionTable, NotificationTable, SystemEventTable
from tests.conftest import aws_client
from tests.e2e.failover_support import REGION, deliver, ec2, handover_to, register_agent, wait_for, warning

TIMEOUT_S = 3
LIVE = ["pending", "running", "stopping", "stopped"]


@pytest.fixture
def slow_machine(failover_machine):
    """The failover machine with every TimeoutSeconds = TIMEOUT_S, started by the sentinel for this test."""
    from chalicelib.settings import get_settings
    from localmode.workflows import ensure_failover_state_machine

    previous = os.environ["FAILOVER_STATE_MACHINE_ARN"]
    arn = ensure_failover_state_machine("dev", task_timeout_s=TIMEOUT_S)
    yield arn
    os.environ["FAILOVER_STATE_MACHINE_ARN"] = previous
    get_settings.cache_clear()


class Stalls:
    """Holds chosen Lambda invocations of one tenant's failover (moto's Lambda Invoke, patched)."""

    def __init__(self, monkeypatch, client_id: str, rule):
        from moto.awslambda_simple.models import LambdaSimpleBackend

        self.client_id, self.rule = client_id, rule
        self.release = threading.Event()
        self.seen: list[tuple[str, str | None, str]] = []  # (function, lifecycle, what was done)
        self.in_flight = 0
        self._idle = threading.Condition()
        original = LambdaSimpleBackend.invoke
        stalls = self

        def invoke(backend, function_name, qualifier, body, headers, response_headers):
            name = function_name.split(":function:")[-1].split(":")[0].removeprefix("spot-optimizer-dev-")
            payload = json.loads(body or "{}")
            mine = isinstance(payload, dict) and payload.get("client_id") == stalls.client_id
            how = stalls.rule(name, payload, [s for s in stalls.seen if s[0] == name]) if mine else None
            if not how:
                return original(backend, function_name, qualifier, body, headers, response_headers)
            stalls.seen.append((name, payload.get("lifecycle"), how))
            with stalls._idle:
                stalls.in_flight += 1
            try:
                if how == "slow start":
                    assert stalls.release.wait(120), "never released"
                result = original(backend, function_name, qualifier, body, headers, response_headers)
                if how == "answer lost":
                    threading.Event().wait(TIMEOUT_S + 2)  # past TimeoutSeconds: States.Timeout, then a retry
                elif how in ("Sandbox.Timedout", "Lambda.Unknown"):  # Lambda's own failure, after the work
                    response_headers["x-amz-function-error"] = "Unhandled"
                    result = json.dumps({"errorType": how, "errorMessage": "Task timed out"}).encode()
                return result
            finally:
                with stalls._idle:
                    stalls.in_flight -= 1
                    stalls._idle.notify_all()

        monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)

    def finish_late_attempts(self) -> None:
        """Let every held invocation run, and wait until all have returned (their answers go nowhere)."""
        self.release.set()
        with self._idle:
            assert self._idle.wait_for(lambda: self.in_flight == 0, timeout=120), "late attempts still running"


def live_ours(client_id) -> list[str]:
    pages = ec2().get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{adapter.TAG_CLIENT}", "Values": [client_id]},
        {"Name": "instance-state-name", "Values": LIVE}])
    return [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]


def ever_launched(client_id) -> list[str]:
    """Every instance we launched for the client, terminated ones included."""
    pages = ec2().get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{adapter.TAG_CLIENT}", "Values": [client_id]}])
    return [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]


def only_event(client_id) -> InterruptionTable:
    rows = list(InterruptionTable.query(client_id, consistent_read=True))
    assert len(rows) == 1, [r.attribute_values for r in rows]
    return rows[0]


def notifications(client_id) -> list[str]:
    return sorted(n.kind for n in NotificationTable.query(client_id))


def audit(client_id, event_type) -> list[SystemEventTable]:
    return [e for e in SystemEventTable.scan(SystemEventTable.client_id == client_id) if e.event_type == event_type]


def history_errors(execution_arn, state: str | None = None) -> list[str]:
    """The errors of an execution's history, in order; only those raised in ``state`` when given."""
    events = aws_client("stepfunctions", REGION).get_execution_history(executionArn=execution_arn,
                                                                       maxResults=1000)["events"]
    errors, current = [], None
    for event in events:
        details = event.get("stateEnteredEventDetails")
        if details:
            current = details["name"]
        for key, details in event.items():
            if key.endswith("EventDetails") and isinstance(details, dict) and "error" in details:
                if state is None or current == state:
                    errors.append(details["error"])
    return errors


def assert_one_replacement_serving(client_id, agent_id, primary):
    """Exactly one live instance of ours: the agent's, recorded as its primary and as the event's replacement."""
    agent = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert agent.instance_id != primary
    assert live_ours(client_id) == [agent.instance_id]
    serving = [r for r in replica_repo.for_agent(agent_id) if r.instance_id == agent.instance_id]
    assert [r.status.value for r in serving] == ["promoted"]
    assert all(not r.active for r in replica_repo.for_agent(agent_id))  # nothing else left open
    event = only_event(client_id)
    assert (event.status, event.success, event.new_instance_id) == ("resolved", True, agent.instance_id)
    # recorded once: one notification, one audit event for the interruption
    assert notifications(client_id) == ["interruption"]
    assert len(audit(client_id, "failover_completed")) == 1
    return event


@pytest.mark.parametrize("lost", ["answer lost", "Sandbox.Timedout", "Lambda.Unknown"])
def test_a_spot_launch_whose_answer_is_lost_is_retried_and_adopts_its_instance(
        api, make_tenant, slow_machine, monkeypatch, lost):
    """GIVEN the spot launch's first attempt launches and attaches its instance, then its answer is lost (held
    past TimeoutSeconds, or Lambda reports the function timed out / failed)
    WHEN the workflow runs
    THEN the retry adopts that instance: resolved on spot, one instance ever launched, recorded once."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    stalls = Stalls(monkeypatch, client_id, lambda name, payload, before: lost if (
        name == "failover-launch" and payload.get("lifecycle") == "spot" and not before) else None)

    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"], timeout=120)
    stalls.finish_late_attempts()

    assert described["status"] == "SUCCEEDED"
    assert ("States.Timeout" if lost == "answer lost" else lost) in history_errors(result["execution_arn"])
    event = assert_one_replacement_serving(client_id, agent_id, primary)
    assert event.response_action == "emergency-spot-replacement"
    assert ever_launched(client_id) == [event.new_instance_id]  # the retry launched nothing
    assert [r.lifecycle for r in replica_repo.for_agent(agent_id)] == ["spot"]


@pytest.mark.parametrize("late_attempts_run", ["after the failover", "while on-demand launches"])
def test_a_spot_path_that_keeps_timing_out_falls_back_to_on_demand_and_late_attempts_leave_nothing(
        api, make_tenant, slow_machine, monkeypatch, late_attempts_run):
    """GIVEN every spot launch attempt is slower than its timeout (held before it starts)
    WHEN the workflow runs
    THEN after the timeout retries it launches on demand and resolves; the late spot attempts, whenever they
    run (after the failover, or in the middle of the on-demand launch), leave no instance running."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)

    def rule(name, payload, before):
        if name != "failover-launch":
            return None
        if payload.get("lifecycle") == "spot":
            return "slow start"
        if late_attempts_run == "while on-demand launches" and not stalls.release.is_set():
            stalls.finish_late_attempts()  # the late spot attempts launch now, next to the on-demand one
        return None

    stalls = Stalls(monkeypatch, client_id, rule)
    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"], timeout=120)
    stalls.finish_late_attempts()

    assert described["status"] == "SUCCEEDED"
    # the spot launch's attempt and its retry; another task may also time out on a loaded machine (3 s) and
    # be retried, which changes nothing asserted here
    assert history_errors(result["execution_arn"], "LaunchReplacement").count("States.Timeout") == 2
    assert [(n, lc) for n, lc, _ in stalls.seen] == [("failover-launch", "spot")] * 2
    event = assert_one_replacement_serving(client_id, agent_id, primary)
    assert event.response_action == "on-demand-fallback"
    replicas = {r.lifecycle: r for r in replica_repo.for_agent(agent_id)}
    if late_attempts_run == "after the failover":
        # they found the event closed: no spot row, no spot instance, ever
        assert set(replicas) == {"ondemand"} and ever_launched(client_id) == [event.new_instance_id]
    else:
        # they launched before the hand-over; the hand-over closed their row and terminated what they started
        assert set(replicas) == {"ondemand", "spot"} and replicas["spot"].status.value in ("failed", "terminated")


def test_when_on_demand_cannot_launch_either_the_interruption_is_recorded_failed_once_and_loudly(
        api, make_tenant, slow_machine, monkeypatch):
    """GIVEN every launch attempt, spot and on-demand, is slower than its timeout
    WHEN the workflow runs
    THEN it retries each within its budget, then fails the execution (the FailedExecutions alarm) with the
    interruption recorded failed once, the client told (critical), and the late attempts launch nothing."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    stalls = Stalls(monkeypatch, client_id,
                    lambda name, payload, before: "slow start" if name == "failover-launch" else None)

    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"], timeout=180)
    stalls.finish_late_attempts()

    assert described["status"] == "FAILED" and described.get("error") in (None, "FailoverFailed")
    lifecycles = [lc for _, lc, _ in stalls.seen]
    assert lifecycles == ["spot"] * 2 + ["ondemand"] * 4  # 1 + 1 spot retry, 1 + 3 on-demand retries
    event = only_event(client_id)
    assert (event.status, event.success) == ("failed", False) and event.completed_at is not None
    assert event.error and "Traceback" not in event.error
    assert AgentTable.get(client_id, agent_id, consistent_read=True).instance_id == primary
    assert notifications(client_id) == ["interruption_failed"]
    assert len(audit(client_id, "failover_failed")) == 1
    assert live_ours(client_id) == [] and ever_launched(client_id) == []
    assert all(not r.active for r in replica_repo.for_agent(agent_id))


@pytest.mark.parametrize("what_fails", ["every launch", "the hand-over"])
def test_a_retried_failure_recorder_records_notifies_and_pages_once(api, make_tenant, slow_machine, monkeypatch,
                                                                    what_fails):
    """GIVEN no spot pool and no on-demand capacity (or an EIP that cannot move to the promoted replacement), and
    the failure recorder's first answer lost
    WHEN the workflow runs
    THEN the retried recorder finds its own records: one failed event, one notification, one audit entry, one page."""
    from chalicelib.aws import sns

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    if what_fails == "every launch":
        def refused(spec):
            raise adapter.CapacityUnavailable("RunInstances: InsufficientInstanceCapacity: none",
                                              "InsufficientInstanceCapacity")

        monkeypatch.setattr(adapter, "launch", refused)
        action, audited, page = None, "failover_failed", "Spot Optimizer failover FAILED"
    else:
        handover_to(client_id, agent_id, primary, "eip")

        def refused(region, allocation_id, instance_id, **_):
            raise adapter.Ec2Error("AssociateAddress: InvalidAllocationID.NotFound: " + allocation_id)

        monkeypatch.setattr(adapter, "move_eip", refused)
        action, audited, page = "handover-failed", "failover_handover_failed", \
            "Spot Optimizer failover: traffic NOT moved"
    pages = []
    monkeypatch.setattr(sns, "publish", lambda subject, message: pages.append(subject))
    stalls = Stalls(monkeypatch, client_id, lambda name, payload, before: "answer lost" if (
        name == "failover-failed" and not before) else None)

    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"], timeout=120)
    stalls.finish_late_attempts()

    assert described["status"] == "FAILED"
    assert [n for n, _, _ in stalls.seen] == ["failover-failed"]
    assert "States.Timeout" in history_errors(result["execution_arn"])
    event = only_event(client_id)
    assert (event.status, event.success) == ("failed", False)
    assert action is None or event.response_action == action
    assert notifications(client_id) == ["interruption_failed"]
    assert len(audit(client_id, audited)) == 1
    assert pages == [page]
    if what_fails == "every launch":
        assert live_ours(client_id) == []


def test_a_plan_slower_than_its_timeout_is_retried_and_its_late_run_rewrites_nothing(
        api, make_tenant, slow_machine, monkeypatch):
    """GIVEN the plan's first attempt is slower than its timeout (held before it starts)
    WHEN the workflow runs, and that attempt runs after the failover finished
    THEN the retry planned the failover (resolved on spot), and the late plan leaves the outcome as recorded."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    stalls = Stalls(monkeypatch, client_id, lambda name, payload, before: "slow start" if (
        name == "failover-plan" and not before) else None)

    result = deliver(api, "sentinel-interruption", warning(primary))
    described = wait_for(result["execution_arn"], timeout=120)
    before = only_event(client_id).attribute_values
    stalls.finish_late_attempts()

    assert described["status"] == "SUCCEEDED" and [n for n, _, _ in stalls.seen] == ["failover-plan"]
    event = assert_one_replacement_serving(client_id, agent_id, primary)
    assert event.response_action == "emergency-spot-replacement" and event.error is None
    assert event.attribute_values == before


@pytest.mark.parametrize("meanwhile", ["another attempt attached its instance", "the row was closed"])
def test_a_launch_that_loses_its_row_terminates_what_it_launched(make_tenant, monkeypatch, meanwhile):
    """GIVEN a launch attempt holding a stale view of its replacement row (no instance yet), and meanwhile another
    attempt attached its own instance (EC2 did not honour the ClientToken, as moto does not) or the hand-over /
    failure path closed the row
    WHEN the stale attempt's own launch comes back
    THEN it terminates the instance it launched (never the row's) and adopts the row's, or gives up."""
    from datetime import UTC, datetime

    from chalicelib import replicas
    from chalicelib.errors import ConflictError
    from chalicelib.repositories import agents as agent_repo
    from components.replica_coordinator import ReplicaStatus

    client_id, _, agent_id, primary, _ = register_agent(make_tenant)
    agent = agent_repo.get(client_id, agent_id)
    now = datetime.now(UTC)
    stale = replica_repo.create(agent, replica_id="emg-stale-spot", replica_type="termination", lifecycle="spot",
                                pool_id=None, az=agent.az, created_by="failover", now=now, take_slot=False)
    other = replicas.launch(agent, stale, now, source_instance_id=primary)  # the other attempt, done first
    if meanwhile == "the row was closed":
        replicas.retire(other, ReplicaStatus.FAILED, now, "failover failed: replacement not serving")
    monkeypatch.setattr(adapter, "_existing_replica", lambda spec: None)  # EC2's list lags: it launches again

    with pytest.raises(ConflictError, match="already failed" if meanwhile == "the row was closed" else "another instance"):
        replica_repo.attach_instance(stale, instance_id=adapter.launch(adapter.LaunchSpec(
            region=REGION, instance_type=agent.instance_type, az=agent.az, lifecycle="spot",
            replica_id="emg-stale-spot", logical_agent_id=agent.logical_agent_id, agent_id=agent_id,
            client_id=client_id, source_instance_id=primary)).instance_id, now=now)  # the row's conflict, named
    adapter.terminate(REGION, [i for i in live_ours(client_id) if i != other.instance_id], client_id=client_id)
    if meanwhile == "the row was closed":
        with pytest.raises(adapter.LaunchError, match="closed while launching"):
            replicas.launch(agent, stale, now, source_instance_id=primary)
        assert live_ours(client_id) == []
    else:
        kept = replicas.launch(agent, stale, now, source_instance_id=primary)
        assert kept.instance_id == other.instance_id
        assert live_ours(client_id) == [other.instance_id]
    assert len(ever_launched(client_id)) == 3  # the later launches happened, and did not survive

