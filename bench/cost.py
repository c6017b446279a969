"""Cost per agent-month of the control plane, from counted requests at us-east-1 list prices.

    python -m bench.cost [--requests 20] [--json build/cost.json]

What is counted (in-process, moto; nothing leaves the machine):

* The agent's default cadence (``agent/spot_agent/config.py``): one heartbeat every ``heartbeat_s``
  (120 s; it also delivers commands, so a v5 agent sends no pending-commands poll) and one pricing
  report every ``pricing_s`` (3,600 s). The heartbeats are sent one interval apart in the server's
  clock and each report one interval after the previous one, so the index bucket moves and the hourly
  raw report are in the mean at their real rate. A legacy v3 agent polls pending-commands every 15 s
  instead: its per-call cost is printed too.
* Each route is driven through the real handlers (``chalice.test.Client``) and every AWS call is
  counted at botocore. DynamoDB read/write request units come from item sizes (DynamoDB's own
  rules: reads per 4 KB, halved when eventually consistent; writes per 1 KB of the larger of the
  item before and after; transactions twice; one more write per GSI the item is in), the sizes read
  back from the emulator with uncounted calls. Query/Scan use the returned items' sizes (a projected
  scan is charged on the full items in AWS: a lower bound there).
* Lambda GB-s: the function's memory from ``.chalice/config.json`` (prod stage) × (the handler's own
  time measured here + ``DDB_CALL_MS`` per DynamoDB call + ``AWS_CALL_MS`` per other AWS call):
  moto's latency is not DynamoDB's, so it is replaced by a documented per-call figure.
* API Gateway REST requests; Step Functions standard transitions of one failover, counted along the
  path of ``chalicelib/workflows/failover.asl.json``; EventBridge (AWS service events are free, the
  cross-region forwarding rule's events are charged as custom events); SQS (the event-intake queue:
  ``SQS_REQUESTS_PER_EVENT`` per event plus the Lambda poller's idle long polls); CloudWatch (log
  bytes measured per request from the powertools logger and EMF metrics, plus Lambda's START/END/REPORT
  lines; custom metrics, alarms, dashboard).
* Scheduled jobs: each job's ``run()`` is metered at two fleet sizes; its calls, units and time are
  fitted as ``fixed + per-agent × agents`` and the per-run cost, times runs per month, is spread
  over 10, 1,000 and 100,000 agents. The decision cycle is two functions: the dispatcher
  (``decision-cycle``: the live index's keys → SQS, metered; its Query pages and SendMessageBatch calls are
  steps a small fleet never reaches, so they are added per agent from the key size and the message size)
  and the workers (``decision-worker``: one cycle's messages, the dispatch and the queue's receive/delete
  unmetered; its fixed part is per invocation, ``DECISION_WORKER_BATCH_SIZE`` messages each). The savings
  roll-up likewise: the dispatchers (``savings-rollup``, ``savings-close``: the clients' ids → SQS), the
  ``savings-worker`` (its fixed part is per client: the fleet measured is one client, and a fleet of
  ``AGENTS_PER_CLIENT`` agents per client is assumed) and the fleet job (``savings-fleet``: one Query of
  stored day rows per client, added per agent).

Free tiers are ignored. The printed counts are what the code in this checkout does: re-run after a
change to the request path to get the new number.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import math
import os
import re
import statistics
import sys
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# --- us-east-1 list prices: the ONE place (on-demand, standard tiers; free tiers ignored) -------------
PRICES_AS_OF = "2026-12-03 (list prices unchanged since DynamoDB's Nov 2024 on-demand cut; re-check the pages)"
PRICE_SOURCES = {
    "apigw": "https://aws.amazon.com/api-gateway/pricing/",
    "lambda": "https://aws.amazon.com/lambda/pricing/",
    "dynamodb": "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    "stepfunctions": "https://aws.amazon.com/step-functions/pricing/",
    "eventbridge": "https://aws.amazon.com/eventbridge/pricing/",
    "sqs": "https://aws.amazon.com/sqs/pricing/",
    "cloudwatch": "https://aws.amazon.com/cloudwatch/pricing/",
    "s3": "https://aws.amazon.com/s3/pricing/",
}
INF = float("inf")
PRICES = {
    # $ per request by monthly volume tier: (tier size, price)
    "apigw_rest": ((333e6, 3.50e-6), (667e6, 2.80e-6), (19e9, 2.38e-6), (INF, 1.51e-6)),
    "apigw_http": ((300e6, 1.00e-6), (INF, 0.90e-6)),  # HTTP API, for "what it would take"
    "lambda_request": 0.20e-6,
    "lambda_gb_s": ((6e9, 0.0000166667), (9e9, 0.0000150000), (INF, 0.0000133334)),  # x86
    "ddb_rru": 0.125e-6,
    "ddb_wru": 0.625e-6,
    "ddb_storage_gb_month": 0.25,
    "sfn_transition": 0.025e-3,
    "eventbridge_event": 1.00e-6,  # custom / cross-region delivered events; AWS service events free
    "sqs_request": 0.40e-6,
    "logs_ingest_gb": 0.50,
    "metric_month": 0.30,
    "alarm_month": 0.10,
    "dashboard_month": 3.00,
    "s3_get": 0.0004e-3,
    "s3_put": 0.005e-3,
}

# --- assumptions (documented in docs/benchmarks.md) ---------------------------------------------------
SECONDS_PER_MONTH = 30 * 86400
DDB_CALL_MS = 6.0  # one DynamoDB call from Lambda in-region ("single-digit milliseconds")
AWS_CALL_MS = 30.0  # any other AWS API call (EC2, S3, SSM, Step Functions)
LAMBDA_PLATFORM_LOG_BYTES = 350  # START + END + REPORT lines per invocation
SQS_REQUESTS_PER_EVENT = 3  # SendMessage (by EventBridge), ReceiveMessage, DeleteMessage(Batch)
SQS_IDLE_POLLS_PER_MONTH = 5 * 3 * 60 * 24 * 30  # Lambda's 5 pollers, 20 s long polls, always on
SQS_QUEUES_POLLED = 3  # the event queue, the decision queue and the savings queue
AGENTS_PER_CLIENT = 10  # a client's mean fleet (the savings roll-up's unit); its default quota is 50 agents
DDB_PAGE_BYTES = 1024 * 1024  # a Query page without a limit
EVENTS_PER_AGENT_MONTH = {"interruption": 1.0, "rebalance": 1.0, "state_change": 4.0}
FORWARDED_FRACTION = 0.5  # events of instances outside the deploy region, forwarded to its bus
FAILOVER_TASK_MS = 400.0  # one failover task (Lambda, mostly EC2/Step Functions calls)
FAILOVER_BOOT_S = 120  # replacement boot time: how long the readiness loop runs
ALARMS_DEFAULT = 10
DASHBOARDS = 1
FLEETS = (10, 1_000, 100_000)
TARGET = 0.25


# --- pure arithmetic ---------------------------------------------------------------------------------

def tiered(volume: float, tiers) -> float:
    """Cost of a monthly ``volume`` under (tier size, unit price) tiers."""
    cost, left = 0.0, volume
    for size, price in tiers:
        used = min(left, size)
        cost += used * price
        left -= used
        if left <= 0:
            break
    return cost


def read_units(size_bytes: int, consistent: bool) -> float:
    """RRU of reading one item (or one Query/Scan page's bytes): per started 4 KB, half if eventual."""
    units = max(1, math.ceil(size_bytes / 4096))
    return units if consistent else units / 2


def write_units(size_bytes: int) -> int:
    """WRU of writing one item: per started 1 KB."""
    return max(1, math.ceil(size_bytes / 1024))


def _number_size(text: str) -> int:
    digits = len(text.lstrip("-").replace(".", "").lstrip("0").rstrip("0")) or 1
    return (digits + 1) // 2 + 1


def value_size(av: dict) -> int:
    """Bytes of one DynamoDB attribute value (wire format), by DynamoDB's item-size rules."""
    (kind, v), = av.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return _number_size(v)
    if kind == "B":
        return len(v) if isinstance(v, (bytes, bytearray)) else len(base64.b64decode(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(x.encode()) for x in v)
    if kind == "NS":
        return sum(_number_size(x) for x in v)
    if kind == "BS":
        return sum(len(x) for x in v)
    if kind == "L":
        return 3 + sum(1 + value_size(x) for x in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + value_size(x) for k, x in v.items())
    raise ValueError(kind)


def item_size(item: dict | None) -> int:
    return sum(len(k.encode()) + value_size(v) for k, v in (item or {}).items())


@dataclass
class Usage:
    """What one unit of work (a request, a job run, an event) consumed."""

    calls: Counter = field(default_factory=Counter)  # "service:Operation" -> n
    rru: float = 0.0
    wru: float = 0.0
    own_s: float = 0.0  # time outside AWS calls
    log_bytes: float = 0.0  # at the prod log level, EMF included
    log_lines: float = 0.0
    metrics: set = field(default_factory=set)
    rru_by: Counter = field(default_factory=Counter)  # table (or table/index) -> RRU
    wru_by: Counter = field(default_factory=Counter)

    @property
    def ddb_calls(self) -> int:
        return sum(n for k, n in self.calls.items() if k.startswith("dynamodb:"))

    @property
    def other_calls(self) -> int:
        return sum(n for k, n in self.calls.items() if not k.startswith("dynamodb:"))

    def billed_ms(self) -> float:
        return math.ceil(self.own_s * 1000 + self.ddb_calls * DDB_CALL_MS + self.other_calls * AWS_CALL_MS)

    def scaled(self, k: float) -> "Usage":
        return Usage(_times(self.calls, k), self.rru * k, self.wru * k, self.own_s * k, self.log_bytes * k,
                     self.log_lines * k, set(self.metrics), _times(self.rru_by, k), _times(self.wru_by, k))


def _times(counter: Counter, k: float) -> Counter:
    return Counter({n: c * k for n, c in counter.items()})


def mean_usage(samples: list[Usage]) -> Usage:
    """Counts and units averaged over the samples; the handler's own time is their median."""
    n = len(samples)
    out = Usage()
    for s in samples:
        out.calls.update(s.calls)
        out.rru += s.rru
        out.wru += s.wru
        out.own_s += s.own_s
        out.log_bytes += s.log_bytes
        out.log_lines += s.log_lines
        out.metrics |= s.metrics
        out.rru_by.update(s.rru_by)
        out.wru_by.update(s.wru_by)
    mean = out.scaled(1 / n)
    mean.metrics = out.metrics
    mean.own_s = statistics.median(s.own_s for s in samples)  # 2 shared cores: the median resists noise
    return mean


def _lambda_setting(function: str, key: str, default, stage: str = "prod"):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    per_function = config["stages"].get(stage, {}).get("lambda_functions", {}).get(function, {})
    return per_function.get(key, config.get(key, default))


def lambda_memory_gb(function: str, stage: str = "prod") -> float:
    """The function's memory in .chalice/config.json (stage value, else the app default)."""
    return _lambda_setting(function, "lambda_memory_size", 128, stage) / 1024


def lambda_timeout_s(function: str, stage: str = "prod") -> int:
    return _lambda_setting(function, "lambda_timeout", 60, stage)


def failover_transitions(boot_s: int = FAILOVER_BOOT_S) -> tuple[int, int]:
    """(state transitions, Lambda task invocations) of one failover without standby (launch a
    replacement, poll until ready, hand over, record, next standby), walked in the ASL so that a
    renamed or re-wired state breaks the count instead of silently changing it."""
    asl = json.loads((ROOT / "chalicelib" / "workflows" / "failover.asl.json").read_text())
    states = asl["States"]
    wait_s = states["WaitForReplacement"]["Seconds"]
    polls = max(1, math.ceil(boot_s / wait_s))
    path = [asl["StartAt"], "Route", "LaunchReplacement"]
    path += ["AwaitReplacement", "IsReady", "WaitForReplacement"] * (polls - 1)
    path += ["AwaitReplacement", "IsReady", "Handover", "Record", "ShouldRetire", "NextStandby", "Done"]
    for here, there in zip(path, path[1:]):
        state = states[here]
        targets = {state.get("Next"), state.get("Default"), *(c.get("Next") for c in state.get("Choices", []))}
        if there not in targets:
            raise ValueError(f"failover.asl.json: {here} does not lead to {there}")
    tasks = sum(1 for s in path if states[s]["Type"] == "Task")
    return len(path), tasks


# --- the model: usage per agent-month -> $ ------------------------------------------------------------

@dataclass
class Measured:
    """Everything the cost model needs, as measured (or read from the repo)."""

    requests: dict[str, Usage]  # route -> usage per request
    per_agent_month: dict[str, float]  # route -> requests per agent-month
    jobs: dict[str, dict]  # job -> {"fixed": Usage, "per_agent": Usage, "runs_per_month": n, "memory_gb": x}
    event_usage: Usage  # one sentinel invocation (the event intake's consumer)
    api_memory_gb: float
    failover: tuple[int, int]
    alarms: int
    storage_bytes_per_agent: float = 0.0
    notes: list[str] = field(default_factory=list)


def costs(m: Measured, agents: int, apigw: str = "apigw_rest") -> dict[str, float]:
    """$ per agent-month of each term for a fleet of ``agents``."""
    out: dict[str, float] = {}
    req = sum(m.per_agent_month.values())
    out["API Gateway"] = tiered(req * agents, PRICES[apigw]) / agents
    gb_s = sum(m.requests[r].billed_ms() / 1000 * m.api_memory_gb * n for r, n in m.per_agent_month.items())
    out["Lambda (API)"] = req * PRICES["lambda_request"] + tiered(gb_s * agents, PRICES["lambda_gb_s"]) / agents
    rru = sum(m.requests[r].rru * n for r, n in m.per_agent_month.items())
    wru = sum(m.requests[r].wru * n for r, n in m.per_agent_month.items())
    out["DynamoDB reads (API)"] = rru * PRICES["ddb_rru"]
    out["DynamoDB writes (API)"] = wru * PRICES["ddb_wru"]
    out["DynamoDB storage"] = m.storage_bytes_per_agent / 1e9 * PRICES["ddb_storage_gb_month"]

    events = sum(EVENTS_PER_AGENT_MONTH.values())
    interruptions = EVENTS_PER_AGENT_MONTH["interruption"]
    transitions, tasks = m.failover
    out["Step Functions"] = interruptions * transitions * PRICES["sfn_transition"]
    out["EventBridge"] = events * FORWARDED_FRACTION * PRICES["eventbridge_event"]
    out["SQS"] = ((events * SQS_REQUESTS_PER_EVENT + decision_queue_requests() + savings_queue_requests())
                  * PRICES["sqs_request"]
                  + SQS_QUEUES_POLLED * SQS_IDLE_POLLS_PER_MONTH * PRICES["sqs_request"] / agents)
    ev = m.event_usage
    default_gb = lambda_memory_gb("sentinel-interruption")
    event_gb_s = events * ev.billed_ms() / 1000 * default_gb + interruptions * tasks * FAILOVER_TASK_MS / 1000 * default_gb
    out["Lambda (events, failover)"] = ((events + interruptions * tasks) * PRICES["lambda_request"]
                                        + event_gb_s * PRICES["lambda_gb_s"][0][1])
    out["DynamoDB (events)"] = events * (ev.rru * PRICES["ddb_rru"] + ev.wru * PRICES["ddb_wru"])

    job_total = 0.0
    job_logs = 0.0
    for job in m.jobs.values():
        invocations = job_invocations(job, agents)
        run = job["fixed"].scaled(fixed_units(job, agents))
        per = job["per_agent"]
        worked = worked_agents(job, agents)
        usage = Usage(run.calls + per.scaled(worked).calls, run.rru + per.rru * worked,
                      run.wru + per.wru * worked, run.own_s + per.own_s * worked,
                      run.log_bytes + per.log_bytes * worked)
        n = job["runs_per_month"]
        job_total += n * (invocations * PRICES["lambda_request"] + usage.billed_ms() / 1000 * job["memory_gb"]
                          * PRICES["lambda_gb_s"][0][1] + usage.rru * PRICES["ddb_rru"]
                          + usage.wru * PRICES["ddb_wru"]
                          + usage.calls.get("s3:GetObject", 0) * PRICES["s3_get"]
                          + usage.calls.get("s3:PutObject", 0) * PRICES["s3_put"])
        job_logs += n * (usage.log_bytes + invocations * LAMBDA_PLATFORM_LOG_BYTES)
    out["Scheduled jobs"] = job_total / agents

    log_bytes = sum((m.requests[r].log_bytes + LAMBDA_PLATFORM_LOG_BYTES) * n for r, n in m.per_agent_month.items())
    log_bytes += events * (ev.log_bytes + LAMBDA_PLATFORM_LOG_BYTES) + job_logs / agents
    out["CloudWatch Logs"] = log_bytes / 1e9 * PRICES["logs_ingest_gb"]
    out["CloudWatch metrics, alarms, dashboard"] = (len(metric_series(m)) * PRICES["metric_month"]
                                                    + m.alarms * PRICES["alarm_month"]
                                                    + DASHBOARDS * PRICES["dashboard_month"]) / agents
    return out


def job_invocations(job: dict, agents: int) -> int:
    """Invocations of one run: one, or for the decision workers one per ``agents_per_invocation``."""
    per = job.get("agents_per_invocation")
    return max(1, math.ceil(agents / per)) if per else 1


def fixed_units(job: dict, agents: int) -> int:
    """How many times one run pays the job's fixed work: once per invocation, or (the savings worker) per client,
    one every ``agents_per_fixed`` agents."""
    per = job.get("agents_per_fixed")
    return max(1, math.ceil(agents / per)) if per else job_invocations(job, agents)


def savings_queue_requests() -> float:
    """SQS requests per agent-month of the savings queue: per message (``CLIENTS_PER_MESSAGE`` clients of
    ``AGENTS_PER_CLIENT`` agents) a tenth of a SendMessageBatch, a ReceiveMessage and a DeleteMessageBatch per
    batch of ``SAVINGS_WORKER_BATCH_SIZE`` messages; one message per run (hourly and the daily close)."""
    from chalicelib.jobs.savings_rollup import CLIENTS_PER_MESSAGE
    from chalicelib.settings import SAVINGS_WORKER_BATCH_SIZE

    runs = JOBS["savings-rollup"][1] + JOBS["savings-close"][1]
    return runs / (CLIENTS_PER_MESSAGE * AGENTS_PER_CLIENT) * (1 / 10 + 2 / SAVINGS_WORKER_BATCH_SIZE)


def decision_queue_requests() -> float:
    """SQS requests per agent-month of the decision queue: per message (``AGENTS_PER_MESSAGE`` agents) a tenth
    of a SendMessageBatch, and the poller's ReceiveMessage and DeleteMessageBatch per batch of
    ``DECISION_WORKER_BATCH_SIZE`` messages; one message per cycle (every 5 minutes) per that many agents."""
    from chalicelib.jobs.decision_cycle import AGENTS_PER_MESSAGE, CYCLE_S
    from chalicelib.settings import DECISION_WORKER_BATCH_SIZE

    return SECONDS_PER_MONTH / CYCLE_S / AGENTS_PER_MESSAGE * (1 / 10 + 2 / DECISION_WORKER_BATCH_SIZE)


def metric_series(m: Measured) -> set:
    """The distinct custom metrics (name, dimension values) the measured work published."""
    return set().union(*(u.metrics for u in m.requests.values()), m.event_usage.metrics,
                       *(j["fixed"].metrics for j in m.jobs.values()))


def heartbeat_interval_for(m: Measured, agents: int, target: float = TARGET, apigw: str = "apigw_rest") -> float | None:
    """The heartbeat interval (s) at which the total meets ``target`` (None if none up to 1 h)."""
    base = dict(m.per_agent_month)
    try:
        for interval in range(30, 3601, 5):
            m.per_agent_month = {**base, "heartbeat": SECONDS_PER_MONTH / interval}
            if sum(costs(m, agents, apigw).values()) <= target:
                return interval
        return None
    finally:
        m.per_agent_month = base


LIVE_INDEX = "agents/live-agents-by-heartbeat-bucket"
LIVE_BY_POOL = "agents/live-agents-by-pool"
OLD_HEARTBEAT_INDEX_WRU = 3  # before issue #14's index change: live index moved (2) + ALL-projected listing (1)


def _rescaled(u: Usage, table: str, k: float) -> Usage:
    """``u`` with the write units that go to ``table`` multiplied by ``k``."""
    wru_by = Counter(u.wru_by)
    delta = wru_by.get(table, 0) * (k - 1)
    if table in wru_by:
        wru_by[table] *= k
    return dataclasses.replace(u, wru=u.wru + delta, wru_by=wru_by, calls=Counter(u.calls), rru_by=Counter(u.rru_by))


def at_cadence(m: Measured, heartbeat_s: float, pricing_s: float, extra_heartbeat_wru: float = 0.0) -> Measured:
    """The measured model at another agent cadence. Per request everything is as measured except what depends
    on the interval: the live index's bucket moves (one per ``HEARTBEAT_BUCKET_S`` at most, so a share
    min(interval, bucket) / bucket of heartbeats pays them) and the raw pricing report (written once per clock
    hour at most). ``extra_heartbeat_wru`` adds write units to every heartbeat (e.g. the old indexes')."""
    from components.sentinel import HEARTBEAT_BUCKET_S

    hb_now = SECONDS_PER_MONTH / m.per_agent_month["heartbeat"]
    report_now = SECONDS_PER_MONTH / m.per_agent_month["pricing_report"]
    hb = _rescaled(m.requests["heartbeat"], LIVE_INDEX,
                   min(heartbeat_s, HEARTBEAT_BUCKET_S) / min(hb_now, HEARTBEAT_BUCKET_S))
    hb = dataclasses.replace(hb, wru=hb.wru + extra_heartbeat_wru)
    report = _rescaled(m.requests["pricing_report"], "pricing-reports", min(pricing_s, 3600) / min(report_now, 3600))
    return dataclasses.replace(m, requests={**m.requests, "heartbeat": hb, "pricing_report": report},
                               per_agent_month={**m.per_agent_month, "heartbeat": SECONDS_PER_MONTH / heartbeat_s,
                                                "pricing_report": SECONDS_PER_MONTH / pricing_s})


def what_ifs(m: Measured, agents: int) -> list[tuple[str, float]]:
    """Totals per agent-month at other cadences and API kinds, from the measured per-request usage."""
    hb = SECONDS_PER_MONTH / m.per_agent_month["heartbeat"]
    report = SECONDS_PER_MONTH / m.per_agent_month["pricing_report"]
    cases = (
        (f"as measured: heartbeat {hb:.0f} s, prices every {report:.0f} s, REST API", hb, report, "apigw_rest", 0),
        (f"same with the old indexes (+{OLD_HEARTBEAT_INDEX_WRU} WRU per heartbeat)", hb, report, "apigw_rest",
         OLD_HEARTBEAT_INDEX_WRU),
        (f"heartbeat 60 s, prices every {report:.0f} s, REST API", 60, report, "apigw_rest", 0),
        (f"heartbeat 60 s, prices every {report:.0f} s, HTTP API", 60, report, "apigw_http", 0),
        (f"heartbeat {hb:.0f} s, prices every {report:.0f} s, HTTP API", hb, report, "apigw_http", 0),
        ("heartbeat 30 s, prices every 300 s (the old defaults), REST API", 30, 300, "apigw_rest", 0),
        ("the old defaults with the old indexes (before issue #14's change)", 30, 300, "apigw_rest",
         OLD_HEARTBEAT_INDEX_WRU),
    )
    return [(label, sum(costs(at_cadence(m, h, p, extra), agents, apigw).values()))
            for label, h, p, apigw, extra in cases]


# --- measurement (moto, in-process) -------------------------------------------------------------------

class Meter:
    """Counts every AWS call at botocore and prices DynamoDB calls in request units."""

    def __init__(self):
        from botocore.client import BaseClient

        self._base = BaseClient
        self._original = BaseClient._make_api_call
        self._schemas: dict[str, dict] = {}
        self.usage = Usage()
        self._aws_s = 0.0

    # schema and item look-ups go around the meter
    def _schema(self, client, table: str) -> dict:
        if table not in self._schemas:
            t = self._original(client, "DescribeTable", {"TableName": table})["Table"]
            keys = [k["AttributeName"] for k in t["KeySchema"]]
            gsis = [(g["IndexName"], keys + [k["AttributeName"] for k in g["KeySchema"]],
                     g["Projection"]["ProjectionType"], g["Projection"].get("NonKeyAttributes", []))
                    for g in t.get("GlobalSecondaryIndexes", [])]
            self._schemas[table] = {"keys": keys, "gsis": gsis}
        return self._schemas[table]

    def _fetch(self, client, table: str, key: dict) -> dict | None:
        return self._original(client, "GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}).get("Item")

    def _key(self, client, table: str, item: dict) -> dict:
        return {k: item[k] for k in self._schema(client, table)["keys"] if k in item}

    def _charge(self, kind: str, table: str, units: float) -> None:
        name = _short(table)
        if kind == "w":
            self.usage.wru += units
            self.usage.wru_by[name] += units
        else:
            self.usage.rru += units
            self.usage.rru_by[name] += units

    def _write(self, client, table: str, before: dict | None, after: dict | None, factor: int = 1) -> None:
        """A base-table write, and the writes it causes in each GSI: a put when the item enters the
        index, a delete when it leaves, both when its index key changes, an update when a projected
        attribute changes (every attribute for an ALL projection)."""
        size = max(item_size(before), item_size(after))
        self._charge("w", table, write_units(size) * factor)
        for index, keys, projection, included in self._schema(client, table)["gsis"]:
            was = before is not None and all(k in before for k in keys)
            now = after is not None and all(k in after for k in keys)
            projected = (lambda it: it) if projection == "ALL" else (
                lambda it, names=set(keys) | set(included): {k: v for k, v in it.items() if k in names})
            units = 0
            if was and now:
                if any(before[k] != after[k] for k in keys):
                    units = write_units(item_size(projected(before))) + write_units(item_size(projected(after)))
                elif projected(before) != projected(after):
                    units = write_units(item_size(projected(after)))
            elif was:
                units = write_units(item_size(projected(before)))
            elif now:
                units = write_units(item_size(projected(after)))
            if units:
                self._charge("w", f"{table}/{index}", units * factor)

    def _call(self, client, op: str, params: dict):
        service = client.meta.service_model.service_name
        self.usage.calls[f"{service}:{op}"] += 1
        if service != "dynamodb":
            return self._original(client, op, params)
        table = params.get("TableName")
        before = None
        if op in ("UpdateItem", "DeleteItem"):
            before = self._fetch(client, table, params["Key"])
        elif op == "PutItem":
            before = self._fetch(client, table, self._key(client, table, params["Item"]))
        deletes = []
        if op == "BatchWriteItem":
            for t, reqs in params["RequestItems"].items():
                deletes += [(t, self._fetch(client, t, r["DeleteRequest"]["Key"])) for r in reqs if "DeleteRequest" in r]
        try:
            reply = self._original(client, op, params)
        except Exception:
            if op in ("PutItem", "UpdateItem", "DeleteItem"):
                self._charge("w", table, 1)  # a failed conditional write still costs its write
            raise
        consistent = bool(params.get("ConsistentRead"))
        if op == "GetItem":
            self._charge("r", table, read_units(item_size(reply.get("Item")), consistent))
        elif op == "BatchGetItem":
            for t, items in reply.get("Responses", {}).items():
                cons = bool(params["RequestItems"][t].get("ConsistentRead"))
                self._charge("r", t, sum(read_units(item_size(i), cons) for i in items))
        elif op in ("Query", "Scan"):
            where = f"{table}/{params['IndexName']}" if params.get("IndexName") else table
            self._charge("r", where, read_units(sum(item_size(i) for i in reply.get("Items", [])), consistent))
        elif op == "TransactGetItems":
            for r, g in zip(reply.get("Responses", []), params["TransactItems"]):
                self._charge("r", g["Get"]["TableName"], 2 * read_units(item_size(r.get("Item")), True))
        elif op == "PutItem":
            self._write(client, table, before, params["Item"])
        elif op == "UpdateItem":
            self._write(client, table, before, self._fetch(client, table, params["Key"]))
        elif op == "DeleteItem":
            self._write(client, table, before, None)
        elif op == "BatchWriteItem":
            for t, reqs in params["RequestItems"].items():
                for r in reqs:
                    if "PutRequest" in r:
                        self._write(client, t, None, r["PutRequest"]["Item"])
            for t, old in deletes:
                self._write(client, t, old, None)
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                (kind, body), = entry.items()
                t = body["TableName"]
                if kind == "Put":
                    self._write(client, t, None, body["Item"], factor=2)
                elif kind in ("Update", "Delete"):
                    self._write(client, t, None, self._fetch(client, t, body["Key"]), factor=2)
                else:  # ConditionCheck
                    self._charge("w", t, 2)
        return reply

    def __enter__(self):
        meter = self

        def patched(client, op, params):
            started = time.perf_counter()
            try:
                return meter._call(client, op, params)
            finally:
                meter._aws_s += time.perf_counter() - started

        self._base._make_api_call = patched
        return self

    def __exit__(self, *exc):
        self._base._make_api_call = self._original

    def measure(self, work) -> tuple[Usage, object]:
        """Run ``work()`` and return its usage (AWS call time excluded from ``own_s``)."""
        self.usage, self._aws_s = Usage(), 0.0
        _LOGS.reset()
        started = time.perf_counter()
        result = work()
        self.usage.own_s = max(0.0, time.perf_counter() - started - self._aws_s)
        self.usage.log_bytes, self.usage.log_lines = _LOGS.bytes, _LOGS.lines
        self.usage.metrics = set(_LOGS.metrics)
        usage, self.usage = self.usage, Usage()  # calls after this one (set-up between samples) are not its
        return usage, result


class _LogMeter(logging.Handler):
    """Bytes the powertools logger would print at the prod level, plus the EMF metric blobs."""

    PROD_LEVEL = logging.WARNING

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.formatter_of = None
        self.reset()

    def reset(self):
        self.bytes, self.lines, self.metrics = 0, 0, set()

    def emit(self, record):
        if record.levelno >= self.PROD_LEVEL:
            text = self.formatter_of.format(record) if self.formatter_of else record.getMessage()
            self.bytes += len(text) + 1
            self.lines += 1


_LOGS = _LogMeter()


def _install_log_meter(quiet: bool):
    """Meter the powertools logger and EMF metrics; returns the function that undoes it."""
    import chalicelib.observability as obs

    inner = obs.logger._logger
    levels = {}
    for handler in inner.handlers:
        if handler is not _LOGS:
            _LOGS.formatter_of = handler.formatter
            levels[handler] = handler.level
            if quiet:
                handler.setLevel(logging.CRITICAL + 1)  # the bench's own output stays readable
    if _LOGS not in inner.handlers:
        inner.addHandler(_LOGS)
    original = obs.publish_metrics.__wrapped__ if hasattr(obs.publish_metrics, "__wrapped__") else obs.publish_metrics

    def publish():
        if obs.metrics.metric_set:
            blob = obs.metrics.serialize_metric_set()
            _LOGS.bytes += len(json.dumps(blob)) + 1
            _LOGS.lines += 1
            dims = tuple(sorted(obs.metrics.dimension_set.items()))
            _LOGS.metrics |= {(name, dims) for name in obs.metrics.metric_set}
        original()

    publish.__wrapped__ = original
    patched = [m for m in list(sys.modules.values()) if getattr(m, "publish_metrics", None) is original]
    for module in patched:
        module.publish_metrics = publish

    def undo():
        for module in patched:
            module.publish_metrics = original
        inner.removeHandler(_LOGS)
        for handler, level in levels.items():
            handler.setLevel(level)

    return undo


REGION = "eu-west-1"
ITYPE = "m5.large"
ZONES = ("a", "b", "c")


def _json(client, method, path, body=None, headers=None):
    send = getattr(client.http, method)
    kwargs = {"headers": {"Content-Type": "application/json", **(headers or {})}}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    reply = send(path, **kwargs)
    if not 200 <= reply.status_code < 300:
        raise RuntimeError(f"{method.upper()} {path}: {reply.status_code} {reply.body[:300]!r}")
    return json.loads(reply.body)


def _report_body(instance_type: str, instance_id: str, az: str, now: datetime, price: float = 0.035) -> dict:
    pools = [{"pool_id": f"{instance_type}.{REGION}{z}", "price": round(price + i / 1000, 4)}
             for i, z in enumerate(ZONES)]
    return {"instance": {"instance_id": instance_id, "instance_type": instance_type, "region": REGION, "az": az,
                         "mode": "spot", "pool_id": f"{instance_type}.{az}"},
            "pricing": {"on_demand_price": 0.107, "current_spot_price": pools[0]["price"],
                        "cheapest_pool": pools[0], "spot_pools": pools, "collected_at": now.isoformat()}}


def _server_fetch(region, instance_types, start):
    from chalicelib.aws.spot_market import SpotPriceRecord

    now = datetime.now(timezone.utc)
    return [SpotPriceRecord(t, f"{region}{z}", "Linux/UNIX (Amazon VPC)", Decimal("0.0351"), now - timedelta(minutes=1))
            for t in instance_types for z in ZONES]


_QUEUED: list[dict] = []  # the messages of one dispatch, as the worker's SQS events


def _attr(path: str):
    """``"module:name"`` → the object (imported when the bench runs: chalicelib needs its environment first)."""
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _dispatched(job: str, queue_name: str, batch_size: str):
    """Set-up of a fan-out worker's run (unmetered): a dispatch by ``job``'s ``run``, its messages received off the
    queue (the poller's work, not the function's) as the events the worker gets, ``batch_size`` each."""
    def prepare() -> None:
        from chalicelib.settings import get_settings
        from localmode.queues import drain

        _QUEUED.clear()
        _attr(f"chalicelib.jobs.{job}:run")(datetime.now(timezone.utc))
        drain(_attr(f"chalicelib.settings:{queue_name}")(get_settings().stage), _QUEUED.append,
              batch_size=_attr(f"chalicelib.settings:{batch_size}"))

    return prepare


def _work_queued(job: str, handle_batch: str):
    """A fan-out worker's run: every event of the last dispatch through ``job``'s ``handle_batch``."""
    def work(now: datetime) -> None:
        for event in _QUEUED:
            failures, _ = _attr(f"chalicelib.jobs.{job}:{handle_batch}")(event, now)
            assert not failures, failures

    return work


JOBS = {  # chalice function name -> (module or run(now), runs per month, run kwargs)
    "health-monitor": ("health_monitor", 30 * 24 * 60, {}),
    "risk-scorer": ("risk_scorer", 30 * 24 * 4, {}),
    "decision-cycle": ("decision_cycle", 30 * 24 * 12, {}),  # the dispatcher
    "decision-worker": (_work_queued("decision_cycle", "decide_batch"), 30 * 24 * 12, {}),
    "replica-coordinator": ("replica_coordinator", 30 * 24 * 60, {}),
    "cleanup": ("cleanup", 30 * 24 * 6, {}),
    "spot-prices": ("spot_prices", 30 * 24 * 6, {"fetch": _server_fetch}),
    "placement-scores": ("placement_scores", 30 * 24, {}),
    "pricing-aggregator": ("pricing_aggregator", 30 * 24 * 4, {}),
    "data-cleaner": ("data_cleaner", 30, {}),
    "savings-rollup": ("savings_rollup", 30 * 24, {}),  # a dispatcher
    "savings-close": ("savings_rollup", 30, {}),  # a dispatcher
    "savings-worker": (_work_queued("savings_rollup", "rollup_batch"), 30 * 24 + 30, {}),
    "savings-fleet": ("savings_fleet", 30 * 24, {}),
    "growth-snapshot": ("snapshots", 30 * 24 * 4, {}),
}
PREPARE = {  # unmetered set-up before each run of a job
    "decision-worker": _dispatched("decision_cycle", "decision_queue_name", "DECISION_WORKER_BATCH_SIZE"),
    "savings-worker": _dispatched("savings_rollup", "savings_queue_name", "SAVINGS_WORKER_BATCH_SIZE"),
}


class Fleet:
    """A legacy-mode client and its agents, driven through the real routes."""

    def __init__(self, client, admin_key: str, instance_type: str = ITYPE):
        self.client, self.instance_type = client, instance_type
        created = _json(client, "post", "/api/admin/clients/create",
                        {"name": f"cost-{uuid.uuid4().hex[:6]}", "legacy_agents": True}, {"X-Admin-Key": admin_key})
        self.auth = {"Authorization": f"Bearer {created['client_token']}"}
        self.client_id = created["client_id"]
        _json(client, "post", f"/api/admin/clients/{created['client_id']}/rate-limit",
              {"requests_per_window": 1_000_000}, {"X-Admin-Key": admin_key})
        self.agents: list[tuple[str, str, str]] = []

    def grow(self, n: int, report: bool = True) -> None:
        while len(self.agents) < n:
            i = len(self.agents)
            instance_id = f"i-{uuid.uuid4().hex[:17]}"
            az = f"{REGION}{ZONES[i % len(ZONES)]}"
            reg = {"instance_id": instance_id, "instance_type": self.instance_type, "region": REGION, "az": az,
                   "logical_agent_id": f"cost-agent-{i}", "mode": "spot"}
            agent_id = _json(self.client, "post", "/api/agents/register", reg, self.auth)["agent_id"]
            self.agents.append((agent_id, instance_id, az))
            self.heartbeat(i)
            if report:
                self.report(i)

    def heartbeat(self, i: int = 0):
        agent_id, instance_id, az = self.agents[i]
        return _json(self.client, "post", f"/api/agents/{agent_id}/heartbeat",
                     {"status": "online", "instance_id": instance_id, "instance_type": self.instance_type,
                      "mode": "spot", "az": az},
                     self.auth)

    def report(self, i: int = 0, now: datetime | None = None):
        agent_id, instance_id, az = self.agents[i]
        return _json(self.client, "post", f"/api/agents/{agent_id}/pricing-report",
                     _report_body(self.instance_type, instance_id, az, now or datetime.now(timezone.utc)), self.auth)

    def poll(self, i: int = 0):
        agent_id, _, _ = self.agents[i]
        reply = self.client.http.get(f"/api/agents/{agent_id}/pending-commands", headers=self.auth)
        assert reply.status_code == 200, reply.body
        return reply


def _sentinel_event(instance_id: str) -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2", "account": "123456789012", "time": datetime.now(timezone.utc).isoformat(),
            "region": REGION, "resources": [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "instance-action": "terminate"}}


# Both fleets occupy every zone (``ZONES``): else the per-pool work of a pool the larger fleet first occupies (the
# risk scorer's HELD row of it) is fitted as per-agent work.
JOB_FLEETS = (len(ZONES), 3 * len(ZONES))


def measure_app(admin_key: str, requests: int = 20, job_fleets: tuple[int, int] | None = JOB_FLEETS,
                events: bool = True, instance_type: str = ITYPE, quiet: bool = False) -> Measured:
    """Drive the real handlers and jobs under moto (already started, tables created)."""


    from app import app

    undo = _install_log_meter(quiet)
    try:
        return _measure(app, admin_key, requests, job_fleets, events, instance_type)
    finally:
        undo()


def _measure(app, admin_key, requests, job_fleets, events, instance_type) -> Measured:
    import importlib

    from chalice.test import Client

    notes: list[str] = []
    with Client(app, stage_name="dev") as client, Meter() as meter:
        fleet = Fleet(client, admin_key, instance_type)
        fleet.grow(1, report=False)

        def per_request(call, n=requests, before=lambda: None):
            """Mean usage of ``call`` (``before`` runs ahead of each call, unmetered)."""
            before()
            call()  # warm-up: first-use clients and caches are a cold start, not a request's cost
            samples = []
            for _ in range(n):
                before()
                samples.append(meter.measure(call)[0])
            return mean_usage(samples)

        # Pools the job does not price: the legacy path (points, gap fill and pools written), at the
        # agent's cadence (collected_at one pricing interval apart, in the past day).
        step = timedelta(seconds=agent_cadence()["pricing_s"])
        start = datetime.now(timezone.utc) - timedelta(hours=20)
        sent = iter(range(10**6))
        uncovered = per_request(lambda: fleet.report(0, start + next(sent) * step), max(3, requests // 4))
        import chalicelib.jobs.spot_prices as spot_prices

        spot_prices.run(datetime.now(timezone.utc), fetch=_server_fetch, targets=[(REGION, instance_type)])
        usage = {
            "heartbeat": _heartbeats_at_cadence(per_request, fleet, requests),
            "pricing_report": per_request(lambda: fleet.report(0), before=lambda: _report_gap(fleet)),
            "pending_commands": per_request(lambda: fleet.poll(0)),
        }
        usage["pricing_report_unpriced_pools"] = uncovered

        jobs: dict[str, dict] = {}
        samples: dict[str, list[tuple[int, Usage]]] = {name: [] for name in JOBS}
        failed: dict[str, str] = {}
        for size in job_fleets or ():
            fleet.grow(size)
            for name, (module, _, kwargs) in JOBS.items():
                if name in failed:
                    continue
                job = importlib.import_module(f"chalicelib.jobs.{module}").run if isinstance(module, str) else module
                prepare = PREPARE.get(name, lambda: None)
                try:
                    prepare()
                    job(datetime.now(timezone.utc), **kwargs)  # warm-up: first-run backfills
                    prepare()
                    u, _ = meter.measure(lambda job=job, kwargs=kwargs: job(datetime.now(timezone.utc), **kwargs))
                except Exception as exc:  # noqa: BLE001 - a job moto cannot run is reported, not hidden
                    failed[name] = f"{type(exc).__name__}: {exc}"[:160]
                    continue
                samples[name].append((size, u))
        for name, points in samples.items():
            if len(points) < 2:
                continue
            (a, ua), (b, ub) = points
            slope = _per_agent(ua, ub, b - a)
            fixed = _minus(ua, slope.scaled(a))
            fixed.metrics = ua.metrics | ub.metrics
            jobs[name] = {"fixed": fixed, "per_agent": slope, "runs_per_month": JOBS[name][1],
                          "memory_gb": lambda_memory_gb(name)}
        _decision_steps(jobs)
        _savings_steps(jobs)
        _risk_steps(jobs)
        _cleaner_cap(jobs)
        notes += [f"job {n} not measured here: {why}" for n, why in failed.items()]

        event_usage = Usage()
        if events:
            from chalicelib import sentinel
            from localmode.workflows import ensure_failover_state_machine

            ensure_failover_state_machine("dev")
            event_usage, _ = meter.measure(lambda: _try_sentinel(sentinel, fleet, notes))
        else:
            notes.append("sentinel event not measured (events=False)")

        from chalicelib.tables.agents import AgentTable
        from chalicelib.tables.pools import PricingReportTable

        agent_row = next(AgentTable.scan(limit=1))
        report_row = next(PricingReportTable.scan(limit=1))
    agent_bytes = len(json.dumps(agent_row.serialize()))
    report_bytes = len(json.dumps(report_row.serialize()))
    cadence = agent_cadence()
    per_agent_month = {"heartbeat": SECONDS_PER_MONTH / cadence["heartbeat_s"],
                       "pricing_report": SECONDS_PER_MONTH / cadence["pricing_s"]}
    # raw reports kept: one per agent-hour (pools the job prices), retention 30 days
    storage = agent_bytes + 24 * 30 * report_bytes
    return Measured(requests=usage, per_agent_month=per_agent_month, jobs=jobs, event_usage=event_usage,
                    api_memory_gb=lambda_memory_gb("api_handler"), failover=failover_transitions(),
                    alarms=count_alarms(), storage_bytes_per_agent=storage, notes=notes)


def live_index_key_bytes(attributes=("liveness", "heartbeat_bucket")) -> int:
    """Bytes of one entry of an agents index (the table's keys and ``attributes``), from a stored live agent."""
    from chalicelib.tables.agents import AgentTable

    row = next(AgentTable.live_by_heartbeat.query("live", limit=1))
    item = AgentTable.get(row.client_id, row.agent_id).serialize()
    return item_size({k: item[k] for k in ("client_id", "agent_id", *attributes) if k in item})


def _risk_steps(jobs: dict) -> None:
    """The risk scorer's Queries of ``live-agents-by-pool`` return only each agent's client id (a projection), and
    the meter charges returned bytes: DynamoDB reads each agent's whole index entry (eventually consistent), and a
    pool of more than a page of entries takes one more Query per page; added per agent (the few bytes of client ids
    the meter already charged count twice: a rounding error)."""
    if "risk-scorer" in jobs:
        entry = live_index_key_bytes(("current_pool_id", "liveness", "current_mode"))
        per = jobs["risk-scorer"]["per_agent"]
        per.calls["dynamodb:Query"] = per.calls.get("dynamodb:Query", 0) + entry / DDB_PAGE_BYTES
        per.rru += entry / 4096 / 2
        per.rru_by[LIVE_BY_POOL] += entry / 4096 / 2


def _cleaner_cap(jobs: dict) -> None:
    """The data cleaner queries the commands of at most ``CLEANER_MAX_AGENTS`` agents a run (its walk resumes
    there next run): its per-agent work stops growing at that many agents."""
    from chalicelib.settings import get_settings

    if "data-cleaner" in jobs:
        jobs["data-cleaner"]["agents_per_run"] = get_settings().cleaner_max_agents


def worked_agents(job: dict, agents: int) -> int:
    """The agents one run works on: all of them, or at most the job's per-run cap (the data cleaner)."""
    cap = job.get("agents_per_run")
    return min(agents, cap) if cap else agents


def _decision_steps(jobs: dict) -> None:
    """The decision cycle's calls that come in steps no measured fleet reaches: the dispatcher's live-index Query
    pages (eventually consistent reads of the keys) and SendMessageBatch calls (ten messages of
    ``AGENTS_PER_MESSAGE`` each), added per agent; the workers' fixed work is per invocation."""
    from chalicelib.jobs.decision_cycle import AGENTS_PER_MESSAGE
    from chalicelib.settings import DECISION_WORKER_BATCH_SIZE

    if "decision-cycle" in jobs:
        key_bytes = live_index_key_bytes()
        per = jobs["decision-cycle"]["per_agent"]
        per.calls["dynamodb:Query"] = key_bytes / DDB_PAGE_BYTES
        per.calls["sqs:SendMessageBatch"] = 1 / (10 * AGENTS_PER_MESSAGE)
        per.rru = key_bytes / 4096 / 2
        per.rru_by = Counter({LIVE_INDEX: per.rru})
    if "decision-worker" in jobs:
        jobs["decision-worker"]["agents_per_invocation"] = AGENTS_PER_MESSAGE * DECISION_WORKER_BATCH_SIZE


def _savings_steps(jobs: dict) -> None:
    """The savings roll-up's per-client work that a one-client fleet shows as fixed: the dispatchers'
    SendMessageBatch calls (ten messages of ``CLIENTS_PER_MESSAGE`` clients), the fleet job's Query of each client's
    day rows (and its row in the run's done list), added per agent at ``AGENTS_PER_CLIENT``; the workers' fixed
    work is per client, their invocations ``SAVINGS_WORKER_BATCH_SIZE`` messages each."""
    from chalicelib.jobs.savings_rollup import CLIENTS_PER_MESSAGE
    from chalicelib.settings import SAVINGS_WORKER_BATCH_SIZE

    for name in ("savings-rollup", "savings-close"):
        if name in jobs:
            jobs[name]["per_agent"].calls["sqs:SendMessageBatch"] = 1 / (10 * CLIENTS_PER_MESSAGE * AGENTS_PER_CLIENT)
    if "savings-fleet" in jobs:
        per = jobs["savings-fleet"]["per_agent"]
        per.calls["dynamodb:Query"] = per.calls.get("dynamodb:Query", 0) + 1 / AGENTS_PER_CLIENT
        per.rru += 0.5 / AGENTS_PER_CLIENT  # two days' rows, eventually consistent: half a unit
    if "savings-worker" in jobs:
        jobs["savings-worker"]["agents_per_invocation"] = AGENTS_PER_CLIENT * CLIENTS_PER_MESSAGE * SAVINGS_WORKER_BATCH_SIZE
        jobs["savings-worker"]["agents_per_fixed"] = AGENTS_PER_CLIENT


def _heartbeats_at_cadence(per_request, fleet, requests: int) -> Usage:
    """Heartbeats one default interval apart in the server's clock (``chalicelib.clock``), so that the mean
    carries the live index's bucket moves at their real rate (one per ``HEARTBEAT_BUCKET_S`` while the
    interval is shorter). The first measured heartbeat follows a bucket's start by a second, so ``requests``
    intervals spanning whole buckets cross exactly that many boundaries. The rate-limit window is real time."""
    import time as _time

    from chalicelib import clock
    from components.sentinel import heartbeat_bucket

    step = timedelta(seconds=agent_cadence()["heartbeat_s"])
    start = heartbeat_bucket(datetime.now(timezone.utc) - requests * step) + timedelta(seconds=1) - step
    sent = iter(range(10**6))

    def set_clock():
        clock._replay = (start + next(sent) * step, _time.monotonic())

    try:
        return per_request(lambda: fleet.heartbeat(0), requests, before=set_clock)
    finally:
        clock._replay = None


def _report_gap(fleet) -> None:
    """The agent's last report one default interval ago (unmetered), as at the agent's cadence: the raw
    report is then written as often as it would be (once per clock hour at most, ``pools.report_worth_keeping``)."""
    from chalicelib.tables.agents import AgentTable

    AgentTable(fleet.client_id, fleet.agents[0][0]).update(actions=[AgentTable.last_pricing_at.set(
        datetime.now(timezone.utc) - timedelta(seconds=agent_cadence()["pricing_s"]))])


def _try_sentinel(sentinel, fleet, notes):
    try:
        return sentinel.on_event(_sentinel_event(fleet.agents[-1][1]))
    except Exception as exc:  # noqa: BLE001
        notes.append(f"sentinel event not measured: {type(exc).__name__}: {exc}"[:160])
        return None


def _per_agent(a: Usage, b: Usage, agents: int) -> Usage:
    diff = _minus(b, a)
    return diff.scaled(1 / agents) if agents else Usage()


def _minus(a: Usage, b: Usage) -> Usage:
    calls = Counter({k: max(0.0, a.calls.get(k, 0) - b.calls.get(k, 0)) for k in set(a.calls) | set(b.calls)})
    return Usage(calls, max(0.0, a.rru - b.rru), max(0.0, a.wru - b.wru), max(0.0, a.own_s - b.own_s),
                 max(0.0, a.log_bytes - b.log_bytes), max(0.0, a.log_lines - b.log_lines))


def agent_cadence() -> dict[str, float]:
    """The agent's default cadences (agent/spot_agent/config.py)."""
    sys.path.insert(0, str(ROOT / "agent"))
    from spot_agent.config import AgentConfig

    fields = AgentConfig.__dataclass_fields__
    return {"heartbeat_s": fields["heartbeat_s"].default, "pricing_s": fields["pricing_s"].default}


def count_alarms() -> int:
    """CloudWatch alarms the infra app defines (at least ALARMS_DEFAULT, which the issue asks for)."""
    found = sum(len(re.findall(r"\bAlarm\(", p.read_text())) for p in (ROOT / "infra").glob("*.py"))
    return max(found, ALARMS_DEFAULT)


# --- report --------------------------------------------------------------------------------------------

def _short(table: str) -> str:
    """``spot-optimizer-dev-agents/agents-by-logical-id`` -> ``agents/agents-by-logical-id``."""
    return re.sub(r"^spot-optimizer-[a-z0-9]+-", "", table)


def why(term: str, m: Measured, agents: int) -> str:
    """One sentence on where a term's money goes."""
    req = sum(m.per_agent_month.values())
    if term == "API Gateway":
        return (f"{req:,.0f} REST requests per agent-month (a heartbeat every "
                f"{SECONDS_PER_MONTH / m.per_agent_month['heartbeat']:.0f} s) at $3.50 per million, whatever each does")
    if term.startswith("DynamoDB writes"):
        hb = m.requests["heartbeat"]
        return (f"{hb.wru:g} WRU per heartbeat ({_units(hb.wru_by)}) × {m.per_agent_month['heartbeat']:,.0f}: "
                f"the agent row, the rate-limit count, and the live index's bucket move (one per bucket)")
    if term.startswith("CloudWatch metrics"):
        return (f"{len(metric_series(m))} custom metric series at $0.30, {m.alarms} alarms and a dashboard: "
                f"a fixed ${costs(m, 1)[term]:.2f}/month shared by {agents:,} agents")
    if term.startswith("Lambda"):
        return f"{req:,.0f} invocations × (request fee + {m.api_memory_gb:g} GB × billed ms)"
    if term == "Scheduled jobs":
        return "per-run fixed work of every schedule (health monitor and replica coordinator run every minute)"
    return "see the counts above"


def _job_seconds(job: dict, agents: int) -> float:
    """Billed seconds of one run at ``agents`` (a single sequential invocation; the decision workers: all of
    the cycle's invocations together)."""
    run = job["fixed"].scaled(fixed_units(job, agents))
    per = job["per_agent"]
    worked = worked_agents(job, agents)
    usage = Usage(run.calls + per.scaled(worked).calls, own_s=run.own_s + per.own_s * worked)
    return usage.billed_ms() / 1000


def _worker_line(name: str, job: dict) -> str:
    """A fan-out worker at 100,000 agents: one message, one invocation, the run in all and side by side."""
    from chalicelib.jobs.decision_cycle import AGENTS_PER_MESSAGE, CYCLE_S
    from chalicelib.jobs.savings_rollup import CLIENTS_PER_MESSAGE
    from chalicelib.settings import DECISION_WORKER_CONCURRENCY, SAVINGS_WORKER_CONCURRENCY

    per_invocation = job["agents_per_invocation"]
    one = {**job, "agents_per_invocation": per_invocation}
    total = _job_seconds(job, 100_000)
    if name == "savings-worker":
        message, window_s, concurrency = CLIENTS_PER_MESSAGE * AGENTS_PER_CLIENT, 45 * 60, SAVINGS_WORKER_CONCURRENCY
        big = _job_seconds({**one, "agents_per_invocation": 50}, 50)
        unit = (f"{_job_seconds({**one, 'agents_per_invocation': message}, message):.2f} s per message of "
                f"{CLIENTS_PER_MESSAGE} clients × {AGENTS_PER_CLIENT} agents, {big:.2f} s per client of 50 agents "
                f"(10 of them: {10 * big:.1f} s)")
        span = "before the fleet job at :45"
    else:
        message, window_s, concurrency = AGENTS_PER_MESSAGE, CYCLE_S, DECISION_WORKER_CONCURRENCY
        unit = (f"{_job_seconds({**one, 'agents_per_invocation': message}, message):.2f} s per message of "
                f"{message} agents")
        span = "of the cycle"
    return (f"    {unit}, {_job_seconds(one, per_invocation):.1f} s per invocation of {per_invocation} agents "
            f"(timeout {lambda_timeout_s(name)} s); at 100,000 agents {math.ceil(100_000 / message):,} messages, "
            f"{total:,.0f} s in all, ≈ {total / concurrency:,.0f} s of the {window_s} s {span} at {concurrency} at once")


def _units(by: Counter) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(by.items()) if v) or "-"


def _ops(u: Usage) -> str:
    return ", ".join(f"{k.split(':')[1]}×{v:g}" for k, v in sorted(u.calls.items()) if v)


def render(m: Measured) -> str:
    lines = ["Counted per request (DynamoDB calls, request units, handler own time):"]
    for name, u in m.requests.items():
        lines.append(f"  {name:<30} {u.ddb_calls:>5.1f} DDB calls  {u.rru:>6.2f} RRU  {u.wru:>6.2f} WRU  "
                     f"own {u.own_s * 1000:>6.2f} ms  billed ~{u.billed_ms():>4.0f} ms  logs {u.log_bytes:>5.0f} B  [{_ops(u)}]")
    lines.append("Request units by table (index) per request:")
    for name, u in m.requests.items():
        lines.append(f"  {name:<30} RRU {_units(u.rru_by)}; WRU {_units(u.wru_by)}")
    lines.append("Per agent-month: " + ", ".join(f"{k} {v:,.0f}" for k, v in m.per_agent_month.items()))
    transitions, tasks = m.failover
    lines.append(f"One failover: {transitions} state transitions, {tasks} task invocations; API function "
                 f"{m.api_memory_gb:g} GB; alarms {m.alarms}; custom metrics seen {len(metric_series(m))} "
                 f"(EMF name × dimension values: every route an agent calls adds its own)")
    lines.append("Scheduled jobs per run (fixed + per agent):")
    for name, j in m.jobs.items():
        f, p = j["fixed"], j["per_agent"]
        lines.append(f"  {name:<20} {j['runs_per_month']:>6}/month  {f.ddb_calls:>6.1f} + {p.ddb_calls:>5.2f}/agent calls  "
                     f"{f.rru:>7.1f} + {p.rru:>5.2f} RRU  {f.wru:>6.1f} + {p.wru:>5.2f} WRU  "
                     f"own {f.own_s * 1000:>6.1f} + {p.own_s * 1000:>5.2f} ms  "
                     f"{_job_seconds(j, 100_000):>7.0f} s at 100,000 agents (timeout {lambda_timeout_s(name)} s)")
        if j.get("agents_per_invocation"):
            lines.append(_worker_line(name, j))
        if j.get("agents_per_run"):
            cap = j["agents_per_run"]
            lines.append(f"    at most {cap:,} agents a run: 100,000 agents are walked in {math.ceil(100_000 / cap)} "
                         f"runs; uncapped, one run would take "
                         f"{_job_seconds({**j, 'agents_per_run': None}, 100_000):,.0f} s")
    lines.append("")
    lines.append("All fleet sizes ($ per agent-month):")
    lines.append("| term | " + " | ".join(f"{f:,} agents" for f in FLEETS) + " |")
    lines.append("|---|" + "---:|" * len(FLEETS))
    table = {f: costs(m, f) for f in FLEETS}
    for term in sorted(table[FLEETS[1]], key=lambda t: -table[FLEETS[1]][t]):
        lines.append(f"| {term} | " + " | ".join(f"{table[f][term]:.4f}" for f in FLEETS) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(table[f].values()):.4f}**" for f in FLEETS) + " |")
    for fleet in FLEETS:
        c = costs(m, fleet)
        total = sum(c.values())
        top = max(c, key=c.get)
        lines.append("")
        lines.append(f"### {fleet:,} agents: ${total:.4f} per agent-month "
                     f"({'meets' if total <= TARGET else 'misses'} the ${TARGET:.2f} target); dominant: {top} "
                     f"({c[top] / total:.0%}): {why(top, m, fleet)}")
        lines.append("| term | $ per agent-month | share |")
        lines.append("|---|---:|---:|")
        for term, v in sorted(c.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {term} | {v:.4f} | {v / total:.1%} |")
        lines.append(f"| **total** | **{total:.4f}** | |")
        interval = heartbeat_interval_for(m, fleet)
        http = sum(costs(m, fleet, "apigw_http").values())
        lines.append(f"Heartbeat interval meeting ${TARGET:.2f} on the REST API: "
                     f"{f'{interval} s' if interval else 'none up to 1 h'}; same cadence behind an HTTP API: ${http:.4f}")
    lines.append("")
    lines.append("Other cadences and API kinds (the measured per-request usage at other rates, 1,000 agents):")
    for label, total in what_ifs(m, 1_000):
        lines.append(f"  {label}: ${total:.4f}")
    poll = m.requests["pending_commands"]
    legacy = SECONDS_PER_MONTH / 15
    lines.append("")
    lines.append(f"A legacy v3 agent also polls pending-commands every 15 s ({legacy:,.0f}/month): "
                 f"+${legacy * (tiered(1, PRICES['apigw_rest']) + PRICES['lambda_request'] + poll.billed_ms() / 1000 * m.api_memory_gb * PRICES['lambda_gb_s'][0][1] + poll.rru * PRICES['ddb_rru'] + poll.wru * PRICES['ddb_wru']):.4f} per agent-month")
    lines += [f"note: {n}" for n in m.notes]
    lines.append(f"Prices: us-east-1 list, {PRICES_AS_OF}; sources: " + ", ".join(PRICE_SOURCES.values()))
    return "\n".join(lines)


def run(requests: int) -> Measured:
    os.environ.update(AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", SPOT_STAGE="dev", SPOT_TENANCY="self-hosted",
                      POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="INFO")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from moto import mock_aws

    with mock_aws():  # the failover execution is started, not run (its transitions are counted in the ASL)
        import boto3

        from chalicelib.auth import hash_secret
        from chalicelib.settings import get_settings
        from chalicelib.tables.provisioning import ensure_tables
        from localmode.queues import ensure_queues

        ensure_tables()
        ensure_queues()
        admin_key = "cost-admin"
        boto3.client("ssm").put_parameter(Name=get_settings().admin_key_parameter, Type="SecureString",
                                          Value=hash_secret(admin_key), Overwrite=True)
        return measure_app(admin_key, requests, quiet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    measured = run(args.requests)
    print(render(measured))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({str(f): costs(measured, f) for f in FLEETS}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
