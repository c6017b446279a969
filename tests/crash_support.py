"""A Lambda that dies right after one of its writes, and the comparison of two worlds after it.

Shared by the crash-and-retry suites (tests/api/test_crash_retry.py: the API routes;
tests/integration/test_failover_crash_retry.py: the failover workflow's tasks):

- ``writes(crash_at)`` counts the writes made inside by any botocore client (DynamoDB's by default; ``mutating``
  widens it to EC2, ELBv2, SQS, SNS, Step Functions calls that change something) and, with ``crash_at``, lets
  write number ``crash_at`` complete and then raises ``Crash`` (a BaseException: no handler catches it);
- ``effect(before, after, ids)`` is what changed between two snapshots (``tests.api._support.snapshot_world``),
  with the world's ids named and what legitimately differs between two worlds (times, random hex) blanked, so
  that a clean run on one world and a crash+retry on another, identical, world compare equal when they did the
  same thing; ``named`` does the same to a value (a task's output, a route's answer).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable

from tests.api._support import diff_snapshots

WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
# Calls of the other services a task makes that change something (every other call of theirs reads).
_READS = ("Describe", "Get", "List", "Receive", "Query", "Scan", "BatchGet", "TransactGet", "Head")
MUTATING_SERVICES = frozenset({"ec2", "elbv2", "sqs", "sns", "stepfunctions", "s3"})  # botocore service names


class Crash(BaseException):
    """The Lambda process dying (timeout, OOM) right after a write: nothing of the handler runs on."""


def dynamodb_only(service: str, op: str) -> bool:
    return service == "dynamodb" and op in WRITES


def mutating(service: str, op: str) -> bool:
    """A DynamoDB write, or an EC2 / ELBv2 / SQS / SNS / Step Functions call that changes something
    (RunInstances, TerminateInstances, CreateTags, AssociateAddress, RegisterTargets, SendMessage, Publish,
    StartExecution ...)."""
    return dynamodb_only(service, op) or (service in MUTATING_SERVICES and not op.startswith(_READS))


def label(service: str, op: str, params: dict) -> str:
    """A write as the suites name it: ``PutItem:<table>``, ``TransactWriteItems:<table>,<table>``,
    ``ec2:RunInstances``."""
    if op == "TransactWriteItems":
        return "TransactWriteItems:" + ",".join(next(iter(item.values()))["TableName"].rsplit("-", 1)[-1]
                                                for item in params["TransactItems"])
    if op == "BatchWriteItem":
        return "BatchWriteItem:" + ",".join(name.rsplit("-", 1)[-1] for name in params["RequestItems"])
    if service == "dynamodb":
        return f"{op}:{params.get('TableName', '')}"
    return f"{service}:{op}"


@contextmanager
def writes(crash_at: int | None = None, *, counts: Callable[[str, str], bool] = dynamodb_only):
    """Count the writes (``counts(service, operation)``) made inside, as labels (``PutItem:<table>``,
    ``ec2:RunInstances``); with ``crash_at`` the write of that number (1-based) completes and then ``Crash`` is
    raised from it."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call
    seen: list[str] = []

    def counted(client, op, params):
        result = original(client, op, params)
        service = client.meta.service_model.service_name
        if counts(service, op):
            seen.append(label(service, op, params))
            if crash_at is not None and len(seen) == crash_at:
                raise Crash(f"crashed after write {crash_at}: {seen[-1]}")
        return result

    BaseClient._make_api_call = counted
    try:
        yield seen
    finally:
        BaseClient._make_api_call = original


def dynamodb_writes(crash_at: int | None = None):
    """``writes`` of DynamoDB only."""
    return writes(crash_at)


# --- normalising what legitimately differs between two worlds -----------------------------------------------------

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
                   r"|\d{8}T\d{6}\d*")
_HEX = re.compile(r"[0-9a-f]{8,}")
_EPOCH = re.compile(r"^\d{9,}(?:\.\d+)?$")
# A duration written into a message ("serving after 2.6 s"): measured on the world's clock, so blanked like times.
_SECONDS = re.compile(r"\b\d+\.\d+ s\b")
# Attributes measured on the server's clock between two moments of the request (a duration): blanked like times.
_DURATIONS = frozenset({"total_duration_seconds", "failover_time_ms"})
# Values random per world that no world id names: blanked like times (the client row changes with a new agent).
_RANDOM = frozenset({"external_id"})


def _normal_text(text: str, ids: list[tuple[str, str]]) -> str:
    for value, name in ids:
        text = text.replace(value, name)
    return _HEX.sub("<hex>", _SECONDS.sub("<n> s", _TIME.sub("<t>", text)))


def normal(value: Any, ids: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"N"} and _EPOCH.match(str(value["N"])):
            return {"N": "<epoch>"}
        return {_normal_text(k, ids): "<duration>" if k in _DURATIONS else "<random>" if k in _RANDOM
                else normal(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v, ids) for v in value]
    if isinstance(value, str):
        if value.startswith(("{", "[")):  # a JSON attribute (metadata, config): its text is stored as written
            try:
                return json.dumps(normal(json.loads(value), ids), sort_keys=True)
            except ValueError:
                pass
        return _normal_text(value, ids)
    return value


def _order(ids: dict[str, str]) -> list[tuple[str, str]]:
    return sorted(((v, f"<{k}>") for k, v in ids.items() if v), key=lambda pair: -len(pair[0]))


def named(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with the world's ids named and times blanked (as ``effect`` does)."""
    return normal(value, _order(ids))


def effect(before: dict[str, list[str]], after: dict[str, list[str]], ids: dict[str, str]) -> dict[str, Counter]:
    """What changed between two snapshots, per table (and EC2 listing), with the world's ids named and times,
    hashes and epoch numbers blanked: ``{table: Counter({"+ item": n, "- item": n})}``."""
    order = _order(ids)
    changes = {}
    for name, diff in diff_snapshots(before, after).items():
        counted = Counter()
        for sign, items in (("+", diff["added"]), ("-", diff["removed"])):
            for item in items:
                counted[f"{sign} {json.dumps(normal(json.loads(item), order), sort_keys=True)}"] += 1
        changes[name] = counted
    return changes


def audit_split(changes: dict[str, Counter], types: frozenset[str]) -> tuple[dict[str, Counter], Counter]:
    """``changes`` without the added audit events of ``types``, and how many of each type were added."""
    name = next((n for n in changes if n.endswith("-system-events")), None)
    if name is None or not types:
        return changes, Counter()
    kept, logged = Counter(), Counter()
    for item, n in changes[name].items():
        kind = json.loads(item[2:])["event_type"]["S"]
        if item.startswith("+") and kind in types:
            logged[kind] += n
        else:
            kept[item] = n
    return {**changes, name: kept} if kept else {k: v for k, v in changes.items() if k != name}, logged


def explain(clean: dict[str, Counter], crashed: dict[str, Counter]) -> str:
    """The items whose counts differ between two effects, one line each."""
    lines = []
    for name in sorted(set(clean) | set(crashed)):
        a, b = clean.get(name, Counter()), crashed.get(name, Counter())
        for item in sorted(set(a) | set(b)):
            if a[item] != b[item]:
                lines.append(f"{name}: clean x{a[item]} / crash+retry x{b[item]}: {item[:600]}")
    return "\n".join(lines)
