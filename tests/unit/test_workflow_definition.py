"""The failover ASL file against the app: every Task calls a registered function, retries, and has a
way out; every placeholder is substituted. (infra/ and local mode read this same file.)"""

from __future__ import annotations

import json
import re

from chalicelib import workflows

ASL = json.loads(workflows.definition_text())
TASKS = {name: state for name, state in ASL["States"].items() if state["Type"] == "Task"}


def test_every_task_function_is_a_registered_lambda_function(chalice_app):
    registered = {f.name for f in chalice_app.pure_lambda_functions}
    assert set(workflows.FAILOVER_TASKS.values()) <= registered


def test_every_placeholder_is_substituted_and_every_substitution_used():
    placeholders = set(re.findall(r"\$\{(\w+)\}", workflows.definition_text()))
    assert placeholders == set(workflows.substitutions("dev", "us-east-1", "123456789012"))
    assert "${" not in workflows.render("dev", "us-east-1", "123456789012")


def test_every_task_retries_transient_errors_with_backoff():
    for name, state in TASKS.items():
        retry = state["Retry"][0]
        assert {"TransientAwsError", "ConflictError"} <= set(retry["ErrorEquals"]), name
        assert retry["MaxAttempts"] >= 3 and retry["BackoffRate"] > 1, name


def test_every_task_but_the_failure_recorder_catches_into_a_fallback_or_the_failure_path():
    for name, state in TASKS.items():
        if name in ("RecordFailure", "RecordHandoverFailed"):
            assert "Catch" not in state and ASL["States"][state["Next"]]["Type"] == "Fail"
            continue
        targets = {c["Next"] for c in state["Catch"] if c["ErrorEquals"] != ["FailoverSuperseded"]}
        assert targets <= {"UseOnDemand", "RecordFailure", "HandoverFailed", "RecordHandoverFailed"}, name
    fallback = ASL["States"]["HandoverFailed"]
    assert fallback["Default"] == "UseOnDemand" and fallback["Choices"][0]["Next"] == "RecordFailure"
    assert ASL["States"]["LaunchReplacement"]["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                                               "Next": "UseOnDemand"}
    assert ASL["States"]["Plan"]["Catch"][0]["Next"] == "UseOnDemand"
    # a replacement that never becomes ready (or whose check keeps failing) is lost: on-demand, unless it was
    assert ASL["States"]["AwaitReplacement"]["Catch"][0]["Next"] == "HandoverFailed"
    # only a launch that finds nothing left to launch for ends quietly (the event says why)
    for name in ("LaunchReplacement", "LaunchOnDemand"):
        assert TASKS[name]["Catch"][0] == {"ErrorEquals": ["FailoverSuperseded"], "ResultPath": "$.error",
                                           "Next": "NothingToDo"}, name
    assert ASL["States"]["NothingToDo"]["Type"] == "Succeed"


def test_every_task_waits_out_lambda_throttling_longest_with_jitter():
    """A throttled invocation never ran: every Task retries it more often than any other error, its waits
    randomised (full jitter) so that executions throttled together do not retry together."""
    for name, state in TASKS.items():
        [retrier] = [r for r in state["Retry"] if set(workflows.THROTTLE_ERRORS) & set(r["ErrorEquals"])]
        assert retrier["ErrorEquals"] == list(workflows.THROTTLE_ERRORS), name
        assert retrier["JitterStrategy"] == "FULL" and retrier["MaxDelaySeconds"] >= 5, name
        assert retrier["MaxAttempts"] > max(r["MaxAttempts"] for r in state["Retry"] if r is not retrier), name


def test_every_task_retries_its_own_timeout_and_lost_lambda_answers():
    """A slow, throttled or lost task is retried like a transient error (every step is idempotent), a bounded
    number of times: the attempts of a Task end before anything would wait forever."""
    for name, state in TASKS.items():
        [retrier] = [r for r in state["Retry"] if "States.Timeout" in r["ErrorEquals"]]
        assert set(workflows.TIMEOUT_ERRORS) <= set(retrier["ErrorEquals"]), name
        assert 1 <= retrier["MaxAttempts"] <= 3 and 0 < state["TimeoutSeconds"] <= 30, name
        # States.TaskFailed would also match CapacityUnavailable, LaunchError, TrafficNotMoved...: never retried
        assert all("States.TaskFailed" not in r["ErrorEquals"] and "States.ALL" not in r["ErrorEquals"]
                   for r in state["Retry"]), name


def test_a_spot_path_that_only_times_out_starts_on_demand_within_the_budget():
    """Plan and the spot launch, every attempt timed out: the on-demand launch starts within half the warning."""
    worst = sum(workflows.worst_case_s(TASKS[name]) for name in workflows.SPOT_PATH)
    assert worst <= workflows.SPOT_PATH_BUDGET_S == 60
    assert TASKS["Plan"]["Catch"][0]["Next"] == TASKS["LaunchReplacement"]["Catch"][-1]["Next"] == "UseOnDemand"
    # the fallback itself is the most patient launch: it is the last way to keep the workload
    assert workflows.worst_case_s(TASKS["LaunchOnDemand"]) > workflows.worst_case_s(TASKS["LaunchReplacement"])


def test_each_task_function_times_out_no_later_than_its_task(chalice_app):
    """Lambda ends a slow invocation (Sandbox.Timedout, retried) no later than Step Functions stops waiting for it,
    so a timed-out step leaves no invocation running next to its retry (in AWS; local mode has no Lambda timeout,
    the launch fences cover that)."""
    config = json.loads((workflows.ASL_PATH.parents[2] / ".chalice" / "config.json").read_text())
    by_function: dict[str, list[int]] = {}
    for state in TASKS.values():
        key = state["Parameters"]["FunctionName"].strip("${}").removesuffix("Arn")
        by_function.setdefault(workflows.FAILOVER_TASKS[key], []).append(state["TimeoutSeconds"])
    for stage in ("dev", "prod"):
        functions = config["stages"][stage]["lambda_functions"]
        for function, timeouts in by_function.items():
            assert functions[function]["lambda_timeout"] <= min(timeouts), (stage, function)


def test_render_can_shorten_every_task_timeout_for_tests_only():
    fast = json.loads(workflows.render("dev", "us-east-1", "123456789012", task_timeout_s=2))
    normal = json.loads(workflows.render("dev", "us-east-1", "123456789012"))
    assert {s["TimeoutSeconds"] for s in fast["States"].values() if s["Type"] == "Task"} == {2}
    for name, state in normal["States"].items():
        assert {k: v for k, v in fast["States"][name].items() if k != "TimeoutSeconds"} == \
               {k: v for k, v in state.items() if k != "TimeoutSeconds"}
    # traffic that did not move after the promotion is recorded as such, never sent to a second launch
    assert ASL["States"]["Handover"]["Catch"][0] == {"ErrorEquals": ["TrafficNotMoved"], "ResultPath": "$.error",
                                                     "Next": "RecordHandoverFailed"}


def test_every_next_names_a_state():
    names = set(ASL["States"])
    for state in ASL["States"].values():
        for target in [state.get("Next"), state.get("Default")] + [c["Next"] for c in state.get("Choices", [])] \
                + [c["Next"] for c in state.get("Catch", [])]:
            assert target is None or target in names


def test_local_mode_can_render_the_machine_without_timeout_retries_and_keeps_every_other_retrier():
    """Local mode cannot stop a timed-out attempt, so it renders no retrier of the timeout errors
    (localmode/workflows.py); everything else of the definition stays."""
    original = json.loads(workflows.render("dev", "us-east-1", "123456789012"))
    local = json.loads(workflows.render("dev", "us-east-1", "123456789012", task_timeout_s=60, retry_timeouts=False))
    for name, state in original["States"].items():
        if state["Type"] != "Task":
            assert local["States"][name] == state
            continue
        kept = [r for r in state["Retry"] if not set(r["ErrorEquals"]) <= set(workflows.TIMEOUT_ERRORS)]
        assert len(kept) < len(state["Retry"]), name  # the AWS definition retries timeouts on every Task
        assert local["States"][name] == {**state, "Retry": kept, "TimeoutSeconds": 60}
