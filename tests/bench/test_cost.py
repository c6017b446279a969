"""bench/cost.py: the arithmetic (units, tiers, a case computed by hand) and that its counts come from
the real handlers (a handler making one more DynamoDB call costs more). In-process moto only."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from bench import cost
from bench.cost import PRICES, Measured, Usage
from tests.conftest import ADMIN_KEY


def test_request_units_follow_dynamodb_rounding():
    assert cost.read_units(1, consistent=True) == 1
    assert cost.read_units(4096, consistent=True) == 1
    assert cost.read_units(4097, consistent=True) == 2
    assert cost.read_units(4097, consistent=False) == 1  # eventually consistent: half
    assert cost.read_units(100, consistent=False) == 0.5
    assert cost.write_units(1) == 1 and cost.write_units(1024) == 1 and cost.write_units(1025) == 2


def test_item_size_counts_names_and_values():
    # "pk"(2) + "abc"(3) + "n"(1) + 123 (3 digits -> 3 bytes) + "m"(1) + map(3 + "x"(1) + 1 + true(1))
    item = {"pk": {"S": "abc"}, "n": {"N": "123"}, "m": {"M": {"x": {"BOOL": True}}}}
    assert cost.item_size(item) == 2 + 3 + 1 + 3 + 1 + (3 + 1 + 1 + 1)
    assert cost.item_size({"b": {"B": b"\x00" * 10}}) == 11
    assert cost.item_size(None) == 0


def test_tiers_charge_each_slice_at_its_price():
    rest = PRICES["apigw_rest"]
    assert cost.tiered(1e6, rest) == pytest.approx(3.50)
    assert cost.tiered(400e6, rest) == pytest.approx(333e6 * 3.50e-6 + 67e6 * 2.80e-6)
    assert cost.tiered(0, rest) == 0


def test_failover_path_is_walked_in_the_state_machine():
    # no wait loop: Plan, Route, LaunchReplacement, AwaitReplacement, IsReady, Handover, Record,
    # ShouldRetire, NextStandby, Done; six of them are tasks
    assert cost.failover_transitions(boot_s=1) == (10, 6)
    transitions, tasks = cost.failover_transitions(boot_s=120)  # 5 s between readiness checks
    assert (transitions, tasks) == (10 + 3 * 23, 6 + 23)


def _by_hand() -> Measured:
    heartbeat = Usage(calls=Counter({"dynamodb:GetItem": 1}), rru=1.0, wru=2.0, own_s=0.004)  # 4 + 6 ms
    return Measured(requests={"heartbeat": heartbeat}, per_agent_month={"heartbeat": 1e6}, jobs={},
                    event_usage=Usage(), api_memory_gb=1.0, failover=(10, 4), alarms=0)


def test_a_case_computed_by_hand():
    """1 M requests/agent-month of 10 ms at 1 GB, 1 RRU + 2 WRU each, one agent."""
    c = cost.costs(_by_hand(), agents=1)
    assert c["API Gateway"] == pytest.approx(3.50)
    assert c["Lambda (API)"] == pytest.approx(1e6 * 0.20e-6 + 1e6 * 0.010 * 1.0 * 0.0000166667)
    assert c["DynamoDB reads (API)"] == pytest.approx(0.125)
    assert c["DynamoDB writes (API)"] == pytest.approx(1.25)
    interruptions = cost.EVENTS_PER_AGENT_MONTH["interruption"]
    assert c["Step Functions"] == pytest.approx(interruptions * 10 * 0.025e-3)
    events = sum(cost.EVENTS_PER_AGENT_MONTH.values())
    # the event queue's 3 requests per event, the decision queue's (a month of 5-minute cycles: a tenth of a
    # SendMessageBatch per message of 25 agents, a receive and a delete per 5 messages), the savings queue's (750
    # runs a month: a tenth of a SendMessageBatch, a receive and a delete per message of 10 clients of 10 agents),
    # the three queues' idle polls
    assert cost.decision_queue_requests() == pytest.approx(8640 / 25 * (1 / 10 + 2 / 5))
    assert cost.savings_queue_requests() == pytest.approx(750 / 100 * (1 / 10 + 2 / 1))
    assert c["SQS"] == pytest.approx((events * 3 + 8640 / 25 * 0.5 + 750 / 100 * 2.1) * 0.40e-6
                                     + 3 * cost.SQS_IDLE_POLLS_PER_MONTH * 0.40e-6)
    assert c["CloudWatch metrics, alarms, dashboard"] == pytest.approx(3.00)  # the dashboard alone


def test_fixed_costs_are_shared_by_the_fleet():
    small, large = cost.costs(_by_hand(), agents=10), cost.costs(_by_hand(), agents=1000)
    assert small["CloudWatch metrics, alarms, dashboard"] == pytest.approx(100 * large["CloudWatch metrics, alarms, dashboard"])
    assert small["DynamoDB writes (API)"] == large["DynamoDB writes (API)"]  # per agent: no sharing


def test_a_slower_heartbeat_costs_less_and_the_interval_search_finds_it():
    m = _by_hand()
    m.per_agent_month = {"heartbeat": cost.SECONDS_PER_MONTH / 30}
    at_30 = sum(cost.costs(m, 1000).values())
    interval = cost.heartbeat_interval_for(m, 1000, target=at_30 / 2)
    assert interval is not None and interval > 30
    m.per_agent_month = {"heartbeat": cost.SECONDS_PER_MONTH / interval}
    assert sum(cost.costs(m, 1000).values()) <= at_30 / 2
    assert m.per_agent_month == {"heartbeat": cost.SECONDS_PER_MONTH / interval}


def test_job_fit_separates_fixed_and_per_agent_work():
    two = Usage(calls=Counter({"dynamodb:Query": 4}), rru=10, wru=4, own_s=0.010)
    six = Usage(calls=Counter({"dynamodb:Query": 12}), rru=18, wru=12, own_s=0.018)
    per = cost._per_agent(two, six, 4)
    assert per.calls["dynamodb:Query"] == 2 and per.rru == 2 and per.wru == 2 and per.own_s == pytest.approx(0.002)
    fixed = cost._minus(two, per.scaled(2))
    assert fixed.calls["dynamodb:Query"] == 0 and fixed.rru == 6 and fixed.wru == 0


def test_the_decision_workers_fixed_work_is_paid_once_per_invocation():
    """One run of the workers is one invocation per 125 agents (5 messages of 25): 100,000 agents are 800."""
    fixed = Usage(calls=Counter({"dynamodb:GetItem": 1}), own_s=0.010)
    per_agent = Usage(calls=Counter({"dynamodb:GetItem": 7}), own_s=0.004)
    worker = {"fixed": fixed, "per_agent": per_agent, "runs_per_month": 1, "memory_gb": 0.5, "agents_per_invocation": 125}
    assert cost.job_invocations(worker, 100_000) == 800 and cost.job_invocations(worker, 10) == 1
    assert cost._job_seconds(worker, 100_000) == pytest.approx(800 * (0.010 + 0.006) + 100_000 * (0.004 + 7 * 0.006))
    single = {k: v for k, v in worker.items() if k != "agents_per_invocation"}
    assert cost.job_invocations(single, 100_000) == 1


def test_a_job_capped_per_run_stops_growing_at_its_cap():
    """The data cleaner queries at most CLEANER_MAX_AGENTS agents a run: its seconds and its cost at 100,000
    agents are those of the cap (the rest of the walk is the next runs')."""
    fixed = Usage(calls=Counter({"dynamodb:Query": 8}), own_s=0.003)
    per_agent = Usage(calls=Counter({"dynamodb:Query": 1}), own_s=0.0006)
    cleaner = {"fixed": fixed, "per_agent": per_agent, "runs_per_month": 30, "memory_gb": 0.5,
               "agents_per_run": 10_000}
    assert cost.worked_agents(cleaner, 100_000) == 10_000 and cost.worked_agents(cleaner, 500) == 500
    assert cost._job_seconds(cleaner, 100_000) == pytest.approx(0.003 + 8 * 0.006 + 10_000 * (0.0006 + 0.006))
    uncapped = {**cleaner, "agents_per_run": None}
    assert cost._job_seconds(uncapped, 100_000) == pytest.approx(0.003 + 8 * 0.006 + 100_000 * (0.0006 + 0.006))


def test_the_savings_workers_fixed_work_is_paid_per_client_and_their_queue_per_message():
    """The fleet measured is one client: the worker's fixed work (the client's own queries) is per client of
    AGENTS_PER_CLIENT agents; an invocation takes SAVINGS_WORKER_BATCH_SIZE messages of CLIENTS_PER_MESSAGE clients."""
    from chalicelib.jobs.savings_rollup import CLIENTS_PER_MESSAGE
    from chalicelib.settings import SAVINGS_WORKER_BATCH_SIZE

    fixed = Usage(calls=Counter({"dynamodb:Query": 5}), own_s=0.020)
    per_agent = Usage(calls=Counter({"dynamodb:Query": 2}), own_s=0.010)
    clients = 100_000 // cost.AGENTS_PER_CLIENT
    worker = {"fixed": fixed, "per_agent": per_agent, "runs_per_month": 1, "memory_gb": 0.5,
              "agents_per_invocation": cost.AGENTS_PER_CLIENT * CLIENTS_PER_MESSAGE * SAVINGS_WORKER_BATCH_SIZE,
              "agents_per_fixed": cost.AGENTS_PER_CLIENT}
    assert cost.fixed_units(worker, 100_000) == clients
    assert cost.job_invocations(worker, 100_000) == clients // (CLIENTS_PER_MESSAGE * SAVINGS_WORKER_BATCH_SIZE)
    assert cost._job_seconds(worker, 100_000) == pytest.approx(clients * (0.020 + 5 * 0.006)
                                                              + 100_000 * (0.010 + 2 * 0.006))
    runs = 30 * 24 + 30  # hourly and the daily close
    assert cost.savings_queue_requests() == pytest.approx(
        runs / (CLIENTS_PER_MESSAGE * cost.AGENTS_PER_CLIENT) * (1 / 10 + 2 / SAVINGS_WORKER_BATCH_SIZE))


def test_memory_comes_from_the_chalice_config():
    assert cost.lambda_memory_gb("api_handler") == 1.0
    assert cost.lambda_memory_gb("spot-prices") == 0.25
    assert cost.lambda_memory_gb("sentinel-interruption") == 0.5  # the app default


@pytest.fixture
def measured_twice(admin_key, monkeypatch):
    """The real handlers measured as they are, then with one more DynamoDB read per heartbeat."""
    itype = f"t{uuid.uuid4().hex[:8]}.large"
    first = cost.measure_app(admin_key, requests=2, job_fleets=None, events=False, instance_type=itype)

    from chalicelib.repositories import agents as agent_repo
    from chalicelib.tables.agents import AgentTable

    real = agent_repo.quick_heartbeat

    def heartbeat_with_an_extra_read(client_id, agent_id, **kwargs):
        AgentTable.get(client_id, agent_id)
        return real(client_id, agent_id, **kwargs)

    monkeypatch.setattr(agent_repo, "quick_heartbeat", heartbeat_with_an_extra_read)
    second = cost.measure_app(admin_key, requests=2, job_fleets=None, events=False,
                              instance_type=f"t{uuid.uuid4().hex[:8]}.large")
    return first, second


def test_counts_come_from_the_handlers(measured_twice):
    first, second = measured_twice
    hb, report = first.requests["heartbeat"], first.requests["pricing_report"]
    assert hb.calls["dynamodb:UpdateItem"] >= 1 and hb.wru >= 1 and hb.rru >= 0
    # the job prices the agent's pools: a report writes no pool, unlike one the job does not cover
    assert report.calls.get("dynamodb:BatchWriteItem", 0) == 0
    unpriced = first.requests["pricing_report_unpriced_pools"]
    # the points by conditional PutItem (never another tenant's or AWS's point); the known pools' price fields by
    # UpdateItem (never a whole-item put over a risk score)
    assert unpriced.calls["dynamodb:PutItem"] >= 3 and unpriced.calls["dynamodb:UpdateItem"] >= 3
    assert unpriced.wru > report.wru
    assert unpriced.wru_by["price-points"] >= 3  # three pools, a point each (plus the valve's gap fill)
    assert unpriced.wru_by["pools"] >= 3
    cadence = cost.agent_cadence()
    assert math.isclose(first.per_agent_month["heartbeat"], cost.SECONDS_PER_MONTH / cadence["heartbeat_s"])
    assert math.isclose(first.per_agent_month["pricing_report"], cost.SECONDS_PER_MONTH / cadence["pricing_s"])
    # at the agent's cadence each hourly report keeps its raw item; a heartbeat writes no listing-index item
    assert report.wru_by["pricing-reports"] == 1
    assert not any(k.startswith("agents/") and k != cost.LIVE_INDEX for k in hb.wru_by), hb.wru_by

    extra = second.requests["heartbeat"]
    assert extra.calls["dynamodb:GetItem"] == hb.calls["dynamodb:GetItem"] + 1
    assert extra.rru > hb.rru
    assert sum(cost.costs(second, 1000).values()) > sum(cost.costs(first, 1000).values())


def test_set_up_between_samples_is_charged_to_no_sample(admin_key):
    """GIVEN a meter WHEN a sample is taken and then more AWS calls are made outside ``measure`` THEN the sample
    keeps only its own calls (the job fits once charged each job's sample with the next job's warm-up run)."""
    from chalicelib.tables.agents import AgentTable

    with cost.Meter() as meter:
        usage, _ = meter.measure(lambda: list(AgentTable.scan(limit=1)))
        before = dict(usage.calls)
        list(AgentTable.scan(limit=1))
        list(AgentTable.scan(limit=1))
    assert dict(usage.calls) == before == {"dynamodb:Scan": 1}


def test_a_routine_heartbeat_writes_no_index_and_a_new_bucket_moves_the_live_one(admin_key):
    """GIVEN an agent WHEN it heartbeats twice in one heartbeat bucket, then once in the next THEN the first two
    write the agent row and the rate-limit count only, the third also moves the agent in the live index
    (delete + put: 2 units), and no heartbeat writes the listing index."""
    import time

    from chalice.test import Client

    from app import app
    from chalicelib import clock
    from components.sentinel import HEARTBEAT_BUCKET_S, heartbeat_bucket

    bucket = heartbeat_bucket(datetime.now(timezone.utc)) + timedelta(seconds=10)
    with Client(app, stage_name="dev") as client, cost.Meter() as meter:
        fleet = cost.Fleet(client, ADMIN_KEY, f"t{uuid.uuid4().hex[:8]}.large")
        fleet.grow(1, report=False)
        used = []
        try:
            for offset in (0, 120, HEARTBEAT_BUCKET_S):
                clock._replay = (bucket + timedelta(seconds=offset), time.monotonic())
                used.append(meter.measure(lambda: fleet.heartbeat(0))[0])
        finally:
            clock._replay = None
    first_same, second_same, moved = used
    assert dict(second_same.wru_by) == {"agents": 1, "rate-limits": 1}, second_same.wru_by
    assert not any(k.startswith("agents/") for k in first_same.wru_by if k != cost.LIVE_INDEX)
    assert dict(moved.wru_by) == {"agents": 1, "rate-limits": 1, cost.LIVE_INDEX: 2}, moved.wru_by


def test_another_cadence_rescales_the_bucket_moves_and_the_raw_report():
    """The live index is moved once per bucket at most: a heartbeat every 30 s pays a quarter of the 120 s
    share per heartbeat, one every 600 s a whole move (2 units); the raw report is kept once per clock hour."""
    hb = Usage(calls=Counter({"dynamodb:UpdateItem": 2}), wru=2.8,
               wru_by=Counter({"agents": 1, "rate-limits": 1, cost.LIVE_INDEX: 0.8}))
    report = Usage(wru=3, wru_by=Counter({"agents": 1, "rate-limits": 1, "pricing-reports": 1}))
    m = Measured(requests={"heartbeat": hb, "pricing_report": report},
                 per_agent_month={"heartbeat": cost.SECONDS_PER_MONTH / 120, "pricing_report": cost.SECONDS_PER_MONTH / 3600},
                 jobs={}, event_usage=Usage(), api_memory_gb=1.0, failover=(10, 4), alarms=0)
    fast = cost.at_cadence(m, 30, 300)
    assert fast.requests["heartbeat"].wru_by[cost.LIVE_INDEX] == pytest.approx(0.2)
    assert fast.requests["heartbeat"].wru == pytest.approx(2.2)
    assert fast.requests["pricing_report"].wru == pytest.approx(2 + 1 / 12)
    assert fast.per_agent_month == {"heartbeat": 86_400, "pricing_report": 8_640}
    slow = cost.at_cadence(m, 600, 3600, extra_heartbeat_wru=3)
    assert slow.requests["heartbeat"].wru == pytest.approx(1 + 1 + 2 + 3)
    assert m.requests["heartbeat"].wru == 2.8  # the measured model is left as it was
