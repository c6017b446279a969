"""A failover task that dies after any of its writes, then the same task again with the same input.

GIVEN a prepared world (an agent on its primary, maybe a ready standby; a spot warning delivered through the real
      sentinel, or the replica coordinator's planned return) and its workflow: the ASL
      (chalicelib/workflows/failover.asl.json) walked in-process by ``walk``, its Task states run by the real
      ``@app.lambda_function`` handlers with the input Step Functions would give them (Choice, Pass and Catch's
      ``$.error`` applied as the ASL says; Waits skipped)
WHEN the path runs once on a fresh world, counting each task's writes (DynamoDB writes and the EC2 / ELBv2 / SQS /
     SNS / Step Functions calls that change something: ``tests.crash_support.mutating``) — and, for each k, on
     another fresh, identical world where every task's k-th write completes and then its Lambda dies (``Crash``),
     the task then invoked again with the same input, as the ASL's Retry on ``States.Timeout`` / ``Lambda.Unknown``
     / ``Sandbox.Timedout`` does, and the walk goes on from the retry's output
THEN the retry's output is the clean run's (ids named, times blanked), or the same error name when the clean run
     ended in a caught error; and the world's change (every table, EC2 instances, EIPs, target groups:
     ``snapshot_world``) equals the clean run's: no second launch, no lost terminate, no event, notification or
     counter doubled or lost, no row left half-way.

Paths (``PATHS``): an emergency spot launch (EIP hand-over), the on-demand fallback after every spot pool refused,
the promotion of a ready standby (target-group hand-over, the next standby launched after it), the replica
coordinator's planned return to spot (make-before-break: the on-demand primary retired after the hand-over), and the
failure tasks: nothing launches, the hand-over refused (``handover-failed``), a planned return's hand-over refused
(abandoned), the old primary's terminate refused (after the hand-over) or not permitted (left running), every
replacement lost, a planned return's standby gone before its plan; and the next standby's launch refused.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from chalicelib.workflows import FAILOVER_TASKS, definition_text
from tests.api._support import snapshot_world
from tests.crash_support import Crash, effect, explain, mutating, named, writes
from tests.e2e.failover_support import deliver, handover_to, register_agent, warning

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fleet_jobs_see_this_test_only")]

ASL = json.loads(definition_text())
STAGE = "dev"


# --- the ASL, walked in-process -----------------------------------------------------------------------------------

@dataclass
class Step:
    """One Task state run: its name, the function, its input, and its output or the error it raised."""

    state: str
    function: str
    input: dict
    output: Any = None
    error: str | None = None


def _task(state: str, data: dict) -> dict:
    from localmode.invoke import invoke

    function = FAILOVER_TASKS[ASL["States"][state]["Parameters"]["FunctionName"][2:-4]]
    return invoke(function, json.loads(json.dumps(data)), STAGE)


def _choose(choice: dict, data: dict) -> bool:
    if "And" in choice:
        return all(_choose(c, data) for c in choice["And"])
    key = choice["Variable"].removeprefix("$.")
    if "IsPresent" in choice:
        return (key in data) == choice["IsPresent"]
    for test in ("StringEquals", "BooleanEquals"):
        if test in choice:
            return key in data and data[key] == choice[test]
    raise AssertionError(f"unsupported Choice rule {choice}")


def _rule(rules: list[dict], error: str) -> dict | None:
    return next((r for r in rules if error in r["ErrorEquals"] or "States.ALL" in r["ErrorEquals"]), None)


def walk(payload: dict, *, stop_at: int | None = None, around: Callable | None = None
         ) -> tuple[list[Step], dict | None]:
    """Run the workflow from its start on ``payload``; returns the Task steps run (each attempt: a Retry's too) and,
    with ``stop_at``, the input of Task step number ``stop_at`` (0-based), not run. ``around(step, run)`` wraps
    each Task's run."""
    name, data, steps, attempts = ASL["StartAt"], dict(payload), [], 0
    while name is not None:
        state = ASL["States"][name]
        kind = state["Type"]
        if kind == "Task":
            if stop_at is not None and len(steps) == stop_at:
                return steps, data
            step = Step(name, FAILOVER_TASKS[state["Parameters"]["FunctionName"][2:-4]], data)
            steps.append(step)
            try:
                run = (lambda name=name, data=data: _task(name, data))  # noqa: E731
                step.output = around(step, run) if around else run()
            except Exception as exc:  # noqa: BLE001 - the function's error, as Step Functions sees it
                step.error = getattr(exc, "error_type", type(exc).__name__)
                retry = _rule(state.get("Retry", []), step.error)
                if retry is not None and attempts < retry.get("MaxAttempts", 3):
                    attempts += 1  # the same state, the same input (one Retry rule at a time: enough here)
                    continue
                catch = _rule(state.get("Catch", []), step.error)
                assert catch is not None, f"{name} raised {step.error}, which nothing catches"
                data = {**data, catch["ResultPath"].removeprefix("$."): {
                    "Error": step.error, "Cause": json.dumps({"errorMessage": str(exc), "errorType": step.error})}}
                name, attempts = catch["Next"], 0
                continue
            data, name, attempts = step.output, state["Next"], 0
        elif kind == "Choice":
            name = next((c["Next"] for c in state["Choices"] if _choose(c, data)), state.get("Default"))
        elif kind == "Pass":
            data, name = {**data, state["ResultPath"].removeprefix("$."): state["Result"]}, state["Next"]
        elif kind == "Wait":
            name = state["Next"]
        else:  # Succeed, Fail
            name = None
    assert stop_at is None, f"the workflow ran {len(steps)} tasks, none number {stop_at}"
    return steps, None


# --- worlds -------------------------------------------------------------------------------------------------------

@dataclass
class World:
    ids: dict[str, str]
    payload: dict  # the execution's input, as the sentinel / the coordinator started it
    extra: dict[str, Any] = field(default_factory=dict)


def _started(monkeypatch) -> list[tuple[str, dict]]:
    """StartExecution recorded, not run: the test walks the workflow itself."""
    from chalicelib.aws import stepfunctions

    started: list[tuple[str, dict]] = []
    monkeypatch.setattr(stepfunctions, "start", lambda name, payload, *a, **k: started.append(
        (name, json.loads(json.dumps(payload)))) or f"arn:aws:states:us-east-1:123456789012:execution:x:{name}")
    return started


def _warned(api, monkeypatch, client_id, agent_id, primary, **ids) -> World:
    started, event_id = _started(monkeypatch), str(uuid.uuid4())
    result = deliver(api, "sentinel-interruption", warning(primary, event_id))
    assert result["action"] == "failover_started", result
    [(name, payload)] = started
    return World({"client": client_id, "agent": agent_id, "primary": primary, "interruption": name,
                  "event": event_id, **ids}, payload)


AUTO_TERMINATE = {"auto_terminate_enabled": True, "terminate_wait_seconds": 0}
MANUAL = {"manual_replica_enabled": True, "auto_switch_enabled": False, **AUTO_TERMINATE}


def _spot_launch(api, make_tenant, monkeypatch) -> World:
    """An agent on spot, no standby, its EIP on the primary: the spot replacement launched, the EIP moved."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **AUTO_TERMINATE)
    handover_to(client_id, agent_id, primary, "eip")
    return _warned(api, monkeypatch, client_id, agent_id, primary)


def _ready_standby(client_id, agent_id) -> str:
    from chalicelib.clock import now
    from chalicelib.jobs.replica_coordinator import reconcile_agent
    from chalicelib.repositories import agents as agent_repo
    from chalicelib.repositories import replicas as replica_repo
    from components.replica_coordinator import ReplicaStatus

    for _ in range(2):  # launches the standby; sees it running: ready
        reconcile_agent(agent_repo.get(client_id, agent_id), now())
    agent = agent_repo.get(client_id, agent_id)
    standby = replica_repo.get(agent_id, agent.current_replica_id)
    assert standby is not None and standby.status is ReplicaStatus.READY, standby
    return standby.instance_id


def _promote(api, make_tenant, monkeypatch) -> World:
    """A manual-replica agent on spot with a ready standby, its target group serving the primary."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **MANUAL)
    standby = _ready_standby(client_id, agent_id)
    handover_to(client_id, agent_id, primary, "target-group")
    return _warned(api, monkeypatch, client_id, agent_id, primary, standby=standby)


def _refused(monkeypatch, *, spot_only: bool) -> None:
    """EC2 refuses our replacement launches (every spot one, or every one) for capacity; installed once a test."""
    from chalicelib.aws import ec2 as adapter
    from tests.faults import inject

    if getattr(monkeypatch, "_launches_refused", False):
        return
    monkeypatch._launches_refused = True

    def ours(params) -> bool:
        tags = [t["Key"] for spec in params.get("TagSpecifications", []) for t in spec["Tags"]]
        return adapter.TAG_REPLICA in tags and (not spot_only or "InstanceMarketOptions" in params)

    inject(monkeypatch, "RunInstances", "InsufficientInstanceCapacity", times=10**6, when=ours)


def _on_demand(api, make_tenant, monkeypatch) -> World:
    """An agent on spot, no standby; EC2 refuses every spot launch (each planned pool in turn): on-demand."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **AUTO_TERMINATE)
    _refused(monkeypatch, spot_only=True)
    return _warned(api, monkeypatch, client_id, agent_id, primary)


def _nothing_launches(api, make_tenant, monkeypatch) -> World:
    """EC2 refuses every launch, spot and on-demand: the failure task closes the event."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **AUTO_TERMINATE)
    _refused(monkeypatch, spot_only=False)
    return _warned(api, monkeypatch, client_id, agent_id, primary)


def _refuse(monkeypatch, operation: str, field: str, value: str, code: str = "UnauthorizedOperation") -> None:
    """EC2 refuses ``operation`` whose ``field`` (a value or a list) names ``value``, for the rest of the test
    (one injection per operation, whatever the worlds)."""
    from tests.faults import inject

    refused = monkeypatch.__dict__.setdefault("_refused", {})
    if operation not in refused:
        values = refused[operation] = set()

        def hit(params) -> bool:
            named = params.get(field)
            return any(v in values for v in (named if isinstance(named, list) else [named]))

        inject(monkeypatch, operation, code, times=10**6, when=hit, status=403)
    refused[operation].add(value)


def _eip_of(client_id, agent_id) -> str:
    from chalicelib.tables import AgentTable

    return AgentTable.get(client_id, agent_id, consistent_read=True).config["eip_allocation_id"]


def _handover_refused(api, make_tenant, monkeypatch) -> World:
    """The spot replacement runs, but EC2 refuses to move the EIP to it (twice retried): ``handover-failed``."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **AUTO_TERMINATE)
    handover_to(client_id, agent_id, primary, "eip")
    _refuse(monkeypatch, "AssociateAddress", "AllocationId", _eip_of(client_id, agent_id))
    return _warned(api, monkeypatch, client_id, agent_id, primary)


def _retire_refused(api, make_tenant, monkeypatch) -> World:
    """The failover succeeds, then EC2 refuses to terminate the old primary (not for permissions: an error the
    retire step raises): the failure task records what was left undone after the hand-over."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **AUTO_TERMINATE)
    _refuse(monkeypatch, "TerminateInstances", "InstanceIds", primary, code="IncorrectInstanceState")
    return _warned(api, monkeypatch, client_id, agent_id, primary)


def _planned_return(api, make_tenant, monkeypatch) -> World:
    """A manual-replica agent on on-demand with a ready spot standby whose pool repays leaving on-demand: the
    replica coordinator starts the planned return (make-before-break: the on-demand primary retired after)."""
    from chalicelib.clock import now
    from chalicelib.jobs.replica_coordinator import reconcile_agent
    from chalicelib.repositories import agents as agent_repo
    from tests.integration.test_return_to_spot import on_demand_agent_with_ready_standby

    client_id, _, agent_id, primary, _, standby = on_demand_agent_with_ready_standby(make_tenant)
    started = _started(monkeypatch)
    done = reconcile_agent(agent_repo.get(client_id, agent_id), now())
    assert done["returns_started"] == 1, done
    [(name, payload)] = started
    return World({"client": client_id, "agent": agent_id, "primary": primary, "interruption": name,
                  "standby": standby.instance_id, "replica": standby.replica_id}, payload)


def _planned_return_refused(api, make_tenant, monkeypatch) -> World:
    """The planned return, its EIP on the on-demand primary, EC2 refusing to move it: abandoned, the on-demand
    primary keeps serving."""
    world = _planned_return(api, make_tenant, monkeypatch)
    handover_to(world.ids["client"], world.ids["agent"], world.ids["primary"], "eip")
    _refuse(monkeypatch, "AssociateAddress", "AllocationId", _eip_of(world.ids["client"], world.ids["agent"]))
    return world


def _retire_not_permitted(api, make_tenant, monkeypatch) -> World:
    """IAM will not let us terminate the client's own old primary: it is left running, the client told once."""
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **AUTO_TERMINATE)
    _refuse(monkeypatch, "TerminateInstances", "InstanceIds", primary)
    return _warned(api, monkeypatch, client_id, agent_id, primary)


def _replacements_lost(api, make_tenant, monkeypatch) -> World:
    """EC2 shows every replacement of ours terminated as soon as it is launched (spot, then on-demand): each is
    given up, closed and terminated, and the failure task records the failover failed."""
    from dataclasses import replace

    from chalicelib.aws import ec2 as adapter

    if not monkeypatch.__dict__.get("_replacements_lost"):
        monkeypatch._replacements_lost = True
        real = adapter.describe

        def describe(region, instance_ids, **kwargs):
            return {i: replace(info, state="terminated")
                    if info.tags.get(adapter.TAG_REPLICA, "").startswith("emg-") else info
                    for i, info in real(region, instance_ids, **kwargs).items()}

        monkeypatch.setattr(adapter, "describe", describe)
    client_id, _, agent_id, primary, _ = register_agent(make_tenant, **AUTO_TERMINATE)
    return _warned(api, monkeypatch, client_id, agent_id, primary)


def _planned_return_standby_gone(api, make_tenant, monkeypatch) -> World:
    """The planned return's standby terminated before the plan: the plan abandons it (nothing launched)."""
    from tests.e2e.failover_support import ec2

    world = _planned_return(api, make_tenant, monkeypatch)
    ec2().terminate_instances(InstanceIds=[world.ids["standby"]])
    return world


def _next_standby_refused(api, make_tenant, monkeypatch) -> World:
    """The promotion of a ready standby, then EC2 refuses the next standby's launch for capacity."""
    from chalicelib.aws import ec2 as adapter
    from tests.faults import inject

    refused = monkeypatch.__dict__.setdefault("_standbys_refused", set())
    if not refused:
        refused.add("")

        def hit(params) -> bool:
            tags = {t["Key"]: t["Value"] for spec in params.get("TagSpecifications", []) for t in spec["Tags"]}
            return tags.get(adapter.TAG_AGENT) in refused

        inject(monkeypatch, "RunInstances", "InsufficientInstanceCapacity", times=10**6, when=hit)
    world = _promote(api, make_tenant, monkeypatch)
    refused.add(world.ids["agent"])
    return world


@dataclass
class Path:
    name: str
    prepare: Callable[..., World]
    tasks: tuple[str, ...]  # the Task states a clean run walks, in order (a retried one again)
    tested: tuple[str, ...] = ()  # the states crashed and retried here (default: each of ``tasks``)

    def cases(self) -> list[int]:
        """The index of each tested state's first run."""
        return [self.tasks.index(state) for state in dict.fromkeys(self.tested or self.tasks)]


PATHS = {p.name: p for p in [
    Path("spot-launch", _spot_launch,
         ("Plan", "LaunchReplacement", "AwaitReplacement", "Handover", "Record", "RetireOld", "NextStandby")),
    Path("on-demand-fallback", _on_demand,
         ("Plan", "LaunchReplacement", "LaunchOnDemand", "AwaitReplacement", "Handover", "Record", "RetireOld",
          "NextStandby")),
    Path("promote-standby", _promote,
         ("Plan", "AwaitReplacement", "Handover", "Record", "RetireOld", "NextStandby")),
    Path("planned-return", _planned_return,
         ("Plan", "AwaitReplacement", "Handover", "Record", "RetireOld", "NextStandby")),
    Path("nothing-launches", _nothing_launches, ("Plan", "LaunchReplacement", "LaunchOnDemand", "RecordFailure"),
         tested=("LaunchOnDemand", "RecordFailure")),
    # the ASL retries TrafficNotMoved twice, then records handover-failed
    Path("handover-refused", _handover_refused,
         ("Plan", "LaunchReplacement", "AwaitReplacement", "Handover", "Handover", "Handover",
          "RecordHandoverFailed"), tested=("Handover", "RecordHandoverFailed")),
    Path("planned-return-refused", _planned_return_refused,
         ("Plan", "AwaitReplacement", "Handover", "Handover", "Handover", "RecordHandoverFailed"),
         tested=("Handover", "RecordHandoverFailed")),
    Path("retire-refused", _retire_refused,
         ("Plan", "LaunchReplacement", "AwaitReplacement", "Handover", "Record", "RetireOld", "RecordFailure"),
         tested=("RetireOld", "RecordFailure")),
    Path("retire-not-permitted", _retire_not_permitted,
         ("Plan", "LaunchReplacement", "AwaitReplacement", "Handover", "Record", "RetireOld", "NextStandby"),
         tested=("RetireOld",)),
    Path("replacements-lost", _replacements_lost,
         ("Plan", "LaunchReplacement", "AwaitReplacement", "LaunchOnDemand", "AwaitReplacement", "RecordFailure"),
         tested=("AwaitReplacement", "RecordFailure")),
    Path("planned-return-standby-gone", _planned_return_standby_gone, ("Plan",)),
    Path("next-standby-refused", _next_standby_refused,
         ("Plan", "AwaitReplacement", "Handover", "Record", "RetireOld", "NextStandby"), tested=("NextStandby",)),
]}


def _error_name(exc: BaseException) -> str:
    return getattr(exc, "error_type", type(exc).__name__)


def _outcome(output, error: str | None, ids: dict[str, str]) -> Any:
    return {"error": error} if error else named(output, ids)


@dataclass
class Run:
    """What each task of one walk did: its writes, its change of the world (normalised) and its outcome."""

    states: list[str] = field(default_factory=list)
    writes: list[list[str]] = field(default_factory=list)
    effects: list[dict] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)


def _walked(world: World, *, crash: Callable[[int], int | None] = lambda index: None) -> Run:
    """Walk the world's workflow; task number ``index`` first dies after its write ``crash(index)`` (None: it runs
    once, cleanly) and then runs again with the same input. Records each task's writes (its first attempt's), its
    change of the world over both attempts and the outcome that counts (the last attempt's)."""
    run = Run()

    def around(step: Step, attempt: Callable[[], Any]):
        k = crash(len(run.states))
        run.states.append(step.state)
        before = snapshot_world()
        output, raised = None, None
        with writes(k, counts=mutating) as seen:
            try:
                output = attempt()
            except Crash:
                pass
            except Exception as exc:  # noqa: BLE001 - recorded, then raised on for the walk's Catch
                raised = exc
        run.writes.append(seen)
        if k is not None:  # the same input again
            assert len(seen) == k and raised is None, f"{step.state}: no crash at write {k} of {seen} ({raised!r})"
            try:
                output = attempt()
            except Exception as exc:  # noqa: BLE001
                raised = exc
        run.effects.append(effect(before, snapshot_world(), world.ids))
        run.outcomes.append(_outcome(output, raised and _error_name(raised), world.ids))
        if raised is not None:
            raise raised
        return output

    walk(world.payload, around=around)
    return run


@pytest.mark.parametrize("path_name", list(PATHS))
def test_each_task_that_died_after_any_write_then_ran_again_ends_as_one_clean_run(
        path_name, api, make_tenant, monkeypatch):
    """World 0 runs the path cleanly; world k (a fresh, identical one) crashes every tested task after its k-th
    write (those with as many) and runs it again, then goes on: each task's change and outcome must be the clean
    run's. One world per k rather than per (task, k): a task that diverged shows in its own comparison first."""
    path = PATHS[path_name]
    clean = _walked(path.prepare(api, make_tenant, monkeypatch))
    assert tuple(clean.states) == path.tasks, clean.outcomes
    tested = set(path.cases())
    failures = []
    for k in range(1, max(len(clean.writes[i]) for i in tested) + 1):
        crashed = _walked(path.prepare(api, make_tenant, monkeypatch),
                          crash=lambda index, k=k: k if index in tested and k <= len(clean.writes[index]) else None)
        for index, state in enumerate(crashed.states):
            if index not in tested or k > len(clean.writes[index]):
                continue
            where = f"{state} k={k} ({clean.writes[index][k - 1]})"
            if crashed.outcomes[index] != clean.outcomes[index]:
                failures.append(f"{where}: output {crashed.outcomes[index]}\n   clean {clean.outcomes[index]}")
            if crashed.effects[index] != clean.effects[index]:
                failures.append(f"{where}:\n{explain(clean.effects[index], crashed.effects[index])}")
        if tuple(crashed.states) != path.tasks:
            failures.append(f"k={k}: the walk went {crashed.states}")
    writes_of = "\n".join(f"  {path.tasks[i]}: {clean.writes[i]}" for i in sorted(tested))
    assert not failures, f"writes of a clean run:\n{writes_of}\n" + "\n".join(failures)
