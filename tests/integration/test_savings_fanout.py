"""The savings roll-up's fan-out: the dispatcher sends every client once, the savings-worker rolls each one up as
of the run's time (redelivery writes nothing, a transient failure comes back alone, malformed and stale messages
are dropped), and the fleet job sums the stored client day rows, closing nothing while a client of the run is
missing.

Each test runs at its own day of 2025 (the run's scheduled time; the worker is handed that clock), so its runs
and fleet rows do not meet another test's in the shared embedded AWS; the dispatcher sees this test's tenants
only (the session holds hundreds)."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import QueryError

from components.calculations import day_key

from chalicelib.jobs import savings_fleet, savings_rollup
from chalicelib.repositories import savings
from chalicelib.settings import savings_queue_name
from chalicelib.tables.pools import PricePointTable
from chalicelib.tables.savings import SavingsTable
from localmode.queues import drain, sqs_event
from tests.api._support import random_instance_type
from tests.api.test_savings import _instance

QUEUE = savings_queue_name("dev")
SUMMED = ("actual_cost", "baseline_cost", "spot_seconds", "ondemand_seconds", "instances")


@pytest.fixture
def run_at():
    """This test's run: 10:00 UTC of a day of 2025 no other test of the module uses (the fleet rows are per day and
    a test also runs the next day: three days apart; a random pick collided now and then)."""
    return datetime(2025, 1, 5, 10, tzinfo=UTC) + timedelta(days=3 * next(_RUN_DAYS))


_RUN_DAYS = itertools.count()


@pytest.fixture
def clients_of_this_test(monkeypatch, tenants_of_this_test):
    every = savings_rollup._clients
    monkeypatch.setattr(savings_rollup, "_clients",
                        lambda: [c for c in every() if c.client_id in tenants_of_this_test])


def _tenant_with_spot(make_tenant, run_at, price="0.03"):
    """A client whose agent ran a spot instance from 30 h to 2 h before the run (two days of rows)."""
    client_id, _ = make_tenant()
    pool = f"{random_instance_type()}.eu-west-1a"
    # a point of 2025 kept as if it were recent (pools' reads skip points past their expiry)
    PricePointTable(pool, run_at - timedelta(hours=40), price=Decimal(price), quality="actual", source_agent_id="aws",
                    expires_at=datetime.now(UTC) + timedelta(days=1)).save()
    _instance(client_id, "ag-" + uuid.uuid4().hex[:8], pool, "spot", run_at - timedelta(hours=30),
              run_at - timedelta(hours=2))
    return client_id


def _dispatched(run_at) -> list[dict]:
    """The dispatcher's run and the events the savings-worker would get (one message each)."""
    savings_rollup.run(run_at)
    events: list[dict] = []
    drain(QUEUE, lambda event: events.append(event) or {}, batch_size=1)
    return events


def _rows(scope_key):
    return {r.period: (r.actual_cost, r.baseline_cost, r.closed, r.computed_at) for r in SavingsTable.query(scope_key)}


def _client_state(client_id):
    keys = [savings.client_key(client_id, g) for g in ("hour", "day", "month")]
    return {key: _rows(key) for key in keys}


def _throttled(client_id):
    error = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "Query")
    return QueryError(f"throttled reading {client_id}'s instances", cause=error)


def test_every_client_is_dispatched_once_rolled_up_and_the_fleet_is_the_sum_of_their_stored_days(
        make_tenant, clients_of_this_test, run_at, monkeypatch):
    monkeypatch.setattr(savings_rollup, "CLIENTS_PER_MESSAGE", 2)
    ids = {_tenant_with_spot(make_tenant, run_at, price) for price in ("0.03", "0.04", "0.05")}
    events = _dispatched(run_at)

    sent = [json.loads(e["Records"][0]["body"]) for e in events]
    assert sorted(c for body in sent for c in body["clients"]) == sorted(ids)  # each once
    assert sorted(len(body["clients"]) for body in sent) == [1, 2]
    assert {body["scheduled_at"] for body in sent} == {savings.run_period(run_at)}
    for event in events:
        failures, outcomes = savings_rollup.rollup_batch(event, run_at + timedelta(minutes=3))
        assert failures == [] and outcomes["rolled_up"] == len(json.loads(event["Records"][0]["body"])["clients"])
        assert "failed" not in outcomes and "transient" not in outcomes
    assert sorted(savings.done_clients(savings.run_period(run_at))) == sorted(ids)

    fleet = savings_fleet.run(run_at + timedelta(minutes=45))
    assert (fleet["clients"], fleet["missing"]) == (3, 0) and fleet["writes"] > 0
    lo, hi = day_key(run_at - timedelta(hours=30)), day_key(run_at)
    fleet_days = {r.period: r for r in SavingsTable.query(savings.fleet_key("day"), SavingsTable.period.between(lo, hi))}
    client_days = [SavingsTable.query(savings.client_key(c, "day")) for c in ids]
    expected: dict[str, dict] = {}
    for rows in client_days:
        for row in rows:
            sums = expected.setdefault(row.period, dict.fromkeys(SUMMED, Decimal(0)))
            for name in SUMMED:
                sums[name] += Decimal(getattr(row, name) or 0)
    assert set(fleet_days) == set(expected) and len(expected) == 2  # yesterday and today of the run
    for day, sums in expected.items():
        assert {name: Decimal(getattr(fleet_days[day], name) or 0) for name in SUMMED} == sums
        assert bool(fleet_days[day].closed) == (day < day_key(run_at))
    assert sums["baseline_cost"] > sums["actual_cost"] > 0  # spot saved money

    # the fleet job again: nothing changed, nothing written
    assert savings_fleet.run(run_at + timedelta(minutes=50))["writes"] == 0


def test_a_redelivered_message_writes_nothing(make_tenant, clients_of_this_test, run_at):
    client_id = _tenant_with_spot(make_tenant, run_at)
    (event,) = _dispatched(run_at)
    _, first = savings_rollup.rollup_batch(event, run_at + timedelta(minutes=1))
    assert first["rolled_up"] == 1 and first["writes"] > 0
    before = (_client_state(client_id), savings.done_clients(savings.run_period(run_at)))

    _, again = savings_rollup.rollup_batch(event, run_at + timedelta(minutes=20))
    assert again["rolled_up"] == 1 and again["writes"] == 0
    assert (_client_state(client_id), savings.done_clients(savings.run_period(run_at))) == before


def test_a_throttled_client_comes_back_alone_and_a_bug_does_not_stop_the_others(
        make_tenant, clients_of_this_test, run_at, monkeypatch):
    ok, throttled, broken, after = (_tenant_with_spot(make_tenant, run_at) for _ in range(4))
    real = savings_rollup.rollup_client

    def rollup_client(client, now):
        if client.client_id == throttled:
            raise _throttled(client.client_id)
        if client.client_id == broken:
            raise RuntimeError("a bug, not a hiccup")
        return real(client, now)

    monkeypatch.setattr(savings_rollup, "rollup_client", rollup_client)
    at = savings.run_period(run_at)
    event = sqs_event([json.dumps({"scheduled_at": at, "clients": [ok, throttled]}),
                       json.dumps({"scheduled_at": at, "clients": [broken, after]})], QUEUE)
    failures, outcomes = savings_rollup.rollup_batch(event, run_at)

    assert failures == [event["Records"][0]["messageId"]]  # only the throttled client's message comes back
    assert (outcomes["rolled_up"], outcomes["transient"], outcomes["failed"]) == (2, 1, 1)
    assert sorted(savings.done_clients(at)) == sorted([ok, after])
    assert _client_state(ok)[savings.client_key(ok, "day")] and _client_state(after)[savings.client_key(after, "day")]
    assert _client_state(throttled)[savings.client_key(throttled, "day")] == {}
    # the Lambda answers the same partial batch response
    monkeypatch.setattr(savings_rollup.clock, "now", lambda: run_at)
    assert savings_rollup.on_sqs_batch(event) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


def test_malformed_and_stale_messages_are_dropped(make_tenant, clients_of_this_test, run_at, api):
    client_id = _tenant_with_spot(make_tenant, run_at)
    at = savings.run_period(run_at)
    malformed = ["not json", json.dumps({"clients": [client_id]}), json.dumps({"scheduled_at": at, "clients": "x"}),
                 json.dumps({"scheduled_at": at, "clients": [7]}), json.dumps({"scheduled_at": "yesterday", "clients": []})]
    failures, outcomes = savings_rollup.rollup_batch(sqs_event(malformed, QUEUE), run_at)
    assert failures == [] and outcomes == {"malformed": 5}

    stale = sqs_event([json.dumps({"scheduled_at": at, "clients": [client_id]})], QUEUE)
    failures, outcomes = savings_rollup.rollup_batch(stale, run_at + savings_rollup.STALE_AFTER + timedelta(seconds=1))
    assert failures == [] and outcomes == {"stale": 1}
    assert _client_state(client_id)[savings.client_key(client_id, "day")] == {} and savings.done_clients(at) == []
    # through the deployed handler (its clock: now, long after the run): stale too, nothing comes back
    assert api.lambda_.invoke("savings-worker", stale).payload == {"batchItemFailures": []}


def test_the_fleet_job_closes_nothing_while_a_client_of_the_run_is_missing(
        make_tenant, clients_of_this_test, run_at, monkeypatch):
    monkeypatch.setattr(savings_rollup, "CLIENTS_PER_MESSAGE", 1)
    first, second = sorted(_tenant_with_spot(make_tenant, run_at) for _ in range(2))
    day = day_key(run_at)
    for event in _dispatched(run_at):  # a complete run: today's fleet day is open
        savings_rollup.rollup_batch(event, run_at)
    assert savings_fleet.run(run_at)["missing"] == 0
    open_fleet = _rows(savings.fleet_key("day"))
    assert open_fleet[day][2] is None  # not closed

    tomorrow = run_at + timedelta(days=1)
    events = _dispatched(tomorrow)
    done = [e for e in events if json.loads(e["Records"][0]["body"])["clients"] == [first]]
    savings_rollup.rollup_batch(done[0], tomorrow)  # the other client's message is lost (or still waiting)
    result = savings_fleet.run(tomorrow + timedelta(minutes=45))
    assert (result["clients"], result["missing"], result["writes"]) == (1, 1, 0)
    assert _rows(savings.fleet_key("day")) == open_fleet  # the previous fleet rows are kept: the day is not closed

    for event in events:
        if event is not done[0]:
            savings_rollup.rollup_batch(event, tomorrow)
    result = savings_fleet.run(tomorrow + timedelta(minutes=45))
    assert (result["clients"], result["missing"]) == (2, 0) and result["writes"] > 0
    assert _rows(savings.fleet_key("day"))[day][2] is True  # every client closed the day: so is the fleet


def test_invoke_schedule_runs_dispatcher_workers_and_fleet_job(api, make_tenant, clients_of_this_test, run_at):
    """Local mode's and the tests' ``invoke_schedule``: one call rolls every client up and sums the fleet."""
    from tests.conftest import invoke_schedule

    ids = {_tenant_with_spot(make_tenant, run_at) for _ in range(2)}
    for name in ("savings-rollup", "savings-close"):
        result = invoke_schedule(api, name, run_at)
        assert (result["clients"], result["messages"]) == (2, 1)
        assert result["fleet"]["run"] == savings.run_period(run_at) and result["fleet"]["missing"] == 0
    assert result["rolled_up"] == 2 and result["writes"] == 0  # the second run changed nothing
    assert sorted(savings.done_clients(savings.run_period(run_at))) == sorted(ids)


class _LambdaContext:
    """A Lambda context whose time only passes when a test says so (``spend``)."""

    def __init__(self, timeout_ms: int) -> None:
        self.left = timeout_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left

    def spend(self, ms: int) -> None:
        self.left -= ms


class _Killed(BaseException):
    """Lambda ending the invocation at its time-out: nothing of the handler runs after it (no except Exception)."""


def test_the_worker_stops_before_its_time_out_and_only_the_unfinished_messages_come_back(
        make_tenant, clients_of_this_test, run_at, monkeypatch):
    """The savings-worker's 120 s: each roll-up takes 25 s here, so four clients are done (25 s left: under the
    30 s margin) and the fifth is not started; the message after it is not read. Both come back, and the
    redelivered message rolls up only the client it had not done."""
    first, second = [_tenant_with_spot(make_tenant, run_at) for _ in range(5)], _tenant_with_spot(make_tenant, run_at)
    context = _LambdaContext(120_000)
    real = savings_rollup.rollup_client
    started = []

    def rollup_client(client, now):
        started.append(client.client_id)
        context.spend(25_000)
        return real(client, now)

    monkeypatch.setattr(savings_rollup, "rollup_client", rollup_client)
    monkeypatch.setattr(savings_rollup.clock, "now", lambda: run_at)
    at = savings.run_period(run_at)
    bodies = [json.dumps({"scheduled_at": at, "clients": first}), json.dumps({"scheduled_at": at, "clients": [second]})]
    event = sqs_event(bodies, QUEUE)

    answer = savings_rollup.on_sqs_batch(event, context)

    assert answer == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
    assert started == first[:4] and sorted(savings.done_clients(at)) == sorted(first[:4])
    # SQS delivers both again (another invocation, its own time): only what was not done is rolled up
    started.clear()
    again = sqs_event(bodies, QUEUE, receive_count=2)
    failures, outcomes = savings_rollup.rollup_batch(again, run_at + timedelta(minutes=12), _LambdaContext(120_000))
    assert failures == [] and started == [first[4], second]
    assert (outcomes["rolled_up"], outcomes["already_done"]) == (2, 4)
    assert sorted(savings.done_clients(at)) == sorted([*first, second])


def test_a_client_that_outlasts_the_invocation_is_tried_again_only_after_the_others_of_its_message(
        make_tenant, clients_of_this_test, run_at, monkeypatch):
    """Two clients whose roll-up alone outlasts the function (Lambda ends the invocation in them): each
    redelivery leaves them for last, so the other clients of their message are done all the same."""
    ids = [_tenant_with_spot(make_tenant, run_at) for _ in range(4)]
    ok, slow, slower, after = ids
    real = savings_rollup.rollup_client
    started = []

    def rollup_client(client, now):
        started.append(client.client_id)
        if client.client_id in (slow, slower):
            raise _Killed(client.client_id)
        return real(client, now)

    monkeypatch.setattr(savings_rollup, "rollup_client", rollup_client)
    at = savings.run_period(run_at)
    body = json.dumps({"scheduled_at": at, "clients": ids})
    attempts = []
    for receives in (1, 2, 3):
        started.clear()
        with pytest.raises(_Killed):
            savings_rollup.rollup_batch(sqs_event([body], QUEUE, receive_count=receives), run_at)
        attempts.append(list(started))

    assert attempts[0] == [ok, slow]  # the first delivery, in the message's order, ends in `slow`
    assert attempts[1] == [slower]  # `slow` goes last: `slower` ends this one
    assert attempts[2] == [after, slow]  # both left for last: `after` is done first
    assert sorted(savings.done_clients(at)) == sorted([ok, after])
