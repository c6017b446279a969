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
        targets = {c["Next"] for c in state["Catch"]}
        assert targets <= {"UseOnDemand", "RecordFailure", "HandoverFailed", "RecordHandoverFailed"}, name
    fallback = ASL["States"]["HandoverFailed"]
    assert fallback["Default"] == "UseOnDemand" and fallback["Choices"][0]["Next"] == "RecordFailure"
    assert ASL["States"]["LaunchReplacement"]["Catch"][0]["Next"] == "UseOnDemand"
    assert ASL["States"]["Plan"]["Catch"][0]["Next"] == "UseOnDemand"
    # traffic that did not move after the promotion is recorded as such, never sent to a second launch
    assert ASL["States"]["Handover"]["Catch"][0] == {"ErrorEquals": ["TrafficNotMoved"], "ResultPath": "$.error",
                                                     "Next": "RecordHandoverFailed"}


def test_every_next_names_a_state():
    names = set(ASL["States"])
    for state in ASL["States"].values():
        for target in [state.get("Next"), state.get("Default")] + [c["Next"] for c in state.get("Choices", [])] \
                + [c["Next"] for c in state.get("Catch", [])]:
            assert target is None or target in names
