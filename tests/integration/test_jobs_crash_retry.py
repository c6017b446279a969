"""A scheduled job or SQS worker whose Lambda dies after any of its writes, then its next run (or the redelivery).

GIVEN a prepared world in which a job has work (a switch to decide, a standby to launch or to return to, an orphan to
     end, a silent agent, an hour of savings to figure ...)
WHEN the job runs once on a fresh world, counting its mutations: DynamoDB writes (PutItem, UpdateItem, DeleteItem,
     TransactWriteItems, BatchWriteItem) and mutating EC2 / SQS / Step Functions calls (RunInstances,
     TerminateInstances, CreateTags, SendMessageBatch, StartExecution ...) — and, for each k, the job runs on another
     fresh, identical world where the k-th mutation completes and then the process dies (``Crash``, a BaseException
     nothing catches), then the next scheduled run comes (or SQS delivers the same message batch again)
THEN the world's change (every table and EC2: ``snapshot_world``, plus the executions started) equals the clean
     run's once the ids and times that legitimately differ between worlds are normalised: no second launch, no lost
     or doubled command, notification, event, counter or savings figure, no row left in an intermediate state.

The machinery (``Crash``, ``effect``, the normalisation, what counts as a mutation) is tests/crash_support.py's,
shared with the API routes' and the failover tasks' crash suites; here a mutation is also an AWS call, and each world is the only one the fleet-wide
walks of the jobs see (``only_this_world``), so an earlier world's rows never move in a later world's run.

Covered (``JOBS``): the decision worker (redelivery) and the decision cycle's dispatch; the replica coordinator's
standby launch, relaunch of a standby EC2 took, planned return to spot; the cleanup's expiry of a pre-warmed standby,
abandonment of a stuck event, orphan termination; the health monitor's offline move and lease expiry (requeue, time
out); the data cleaner; the savings worker (redelivery) and the roll-up's dispatch (``savings-rollup``, and
``savings-close``: the same function); the savings fleet; the growth snapshot; the market-data jobs on a world's own
instance type: spot-prices (AWS's price history faked at the adapter boundary, the on-demand list price), placement
scores, the pricing aggregator and the risk scorer (their pools under the walk's cap: ``chalicelib/jobs/
pool_walk.py`` is their helper, not a job; its turns past the cap are not exercised here). Left out of the
comparison: a run's own summary event (``summaries``: a run that died wrote none) and a redelivery's progress marks
(``bookkeeping``); rows keyed by a run's own time that record what that run computed (the risk scores' history:
``per_run``) are compared as present or not. Not covered: the sentinel (its own suites) and the failover-* tasks
(another suite's).

EC2 honours RunInstances' ClientToken (the same token launches once: the adapter sends ``<replica>-<lifecycle>``);
moto stores the token and ignores it, so the mutation counter answers a token seen before with its first answer,
as EC2 does. Step Functions' StartExecution is recorded, not run (the failover workflow's own crash handling is
another suite's): a start under a name already started is the same execution, as in AWS.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import pytest

from tests.api._support import snapshot_world
from tests.api.test_crash_retry import World
from tests.crash_support import Crash, _normal_text, audit_split, effect, explain, label, mutating

pytestmark = pytest.mark.slow  # a fresh world per mutation of each job (2 cores)

_ACTIVE: list[list[str]] = []  # the running counter's list of mutations (the recorded StartExecution adds to it)
_CRASH_AT: list[int | None] = [None]
_LAUNCHED: dict[str, dict] = {}  # RunInstances' ClientToken → its first answer (EC2's idempotency)


def _noted(label: str) -> None:
    """One mutation done: counted, and the process dies after it when it is the one to crash at."""
    if not _ACTIVE:
        return
    seen = _ACTIVE[-1]
    seen.append(label)
    if _CRASH_AT[0] is not None and len(seen) == _CRASH_AT[0]:
        raise Crash(f"crashed after mutation {len(seen)}: {label}")


@contextmanager
def mutations(crash_at: int | None = None):
    """Count the mutations made inside (their labels); with ``crash_at`` the one of that number (1-based)
    completes and then ``Crash`` is raised from it."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call
    seen: list[str] = []

    def counted(client, op, params):
        service = client.meta.service_model.service_name
        token = params.get("ClientToken") if (service, op) == ("ec2", "RunInstances") else None
        if token and token in _LAUNCHED:
            result = _LAUNCHED[token]
        else:
            result = original(client, op, params)
            if token:
                _LAUNCHED[token] = result
        if mutating(service, op):
            _noted(label(service, op, params))
        return result

    BaseClient._make_api_call = counted
    _ACTIVE.append(seen)
    _CRASH_AT[0] = crash_at
    try:
        yield seen
    finally:
        BaseClient._make_api_call = original
        _ACTIVE.pop()
        _CRASH_AT[0] = None


@pytest.fixture(autouse=True)
def executions_recorded(monkeypatch):
    """StartExecution recorded, not run (a mutation like any other); a name started before is that execution."""
    from chalicelib.aws import stepfunctions

    started: dict[str, dict] = {}

    def start(name, payload, state_machine_arn=None):
        if name not in started:
            started[name] = payload
            _noted("stepfunctions:StartExecution")
        return f"arn:aws:states:us-east-1:123456789012:execution:failover:{name}"

    monkeypatch.setattr(stepfunctions, "start", start)
    monkeypatch.setattr(stepfunctions, "_status_of", lambda name, arn=None: "RUNNING" if name in started else None)
    return started


# --- each world is the only one the fleet-wide walks see ----------------------------------------------------------

_SEEN: set[str] = set()  # the client ids of the world being run


@pytest.fixture(autouse=True)
def only_this_world(monkeypatch):
    """The jobs walk every agent, client, lease, orphan of the session's one embedded AWS: here, the running
    world's only (each agent or client is handled on its own, so what is asserted of the world is unchanged)."""
    from chalicelib import bootstrap
    from chalicelib.jobs import cleanup, savings_rollup
    from chalicelib.repositories import agents, interruptions
    from chalicelib.repositories import replicas as replica_repo

    def only(every, client_of=lambda row: row.client_id):
        return lambda *a, **k: [row for row in every(*a, **k) if client_of(row) in _SEEN]

    every_type = agents.types_in_use
    for name in ("live_agent_keys", "agents_with_standbys", "silent_live_agents"):
        monkeypatch.setattr(agents, name, only(getattr(agents, name)))
    monkeypatch.setattr(replica_repo, "active_with_expiry", only(replica_repo.active_with_expiry))
    monkeypatch.setattr(interruptions, "stuck", only(interruptions.stuck))
    monkeypatch.setattr(savings_rollup, "_clients", only(savings_rollup._clients))
    monkeypatch.setattr(cleanup, "orphans", only(cleanup.orphans, lambda info: info.tags.get("ClientId")))
    monkeypatch.setattr(cleanup, "_backfill", lambda now: ({}, []))
    from chalicelib.jobs import data_cleaner
    from chalicelib.repositories import clients
    from chalicelib.repositories.paging import Page

    every_page = clients.list_page
    monkeypatch.setattr(clients, "list_page", lambda limit, token: (lambda page: Page(
        [c for c in page.items if c.client_id in _SEEN], page.next_token))(every_page(limit, token)))
    # the raw price points' sweep walks the fleet's pools (their hours rolled up): not a world's
    monkeypatch.setattr(data_cleaner, "_raw_points", lambda now, budget: {"price_points": 0})
    # the market jobs ask AWS of the types agents run and work on the pools priced: the world's (its own type)
    monkeypatch.setattr(agents, "types_in_use", lambda: [(region, itype) for region, itype in every_type()
                                                         if itype in _TYPES])
    from chalicelib.repositories import fleet, pools, savings

    every_priced = pools.priced_page
    monkeypatch.setattr(pools, "priced_page", lambda *a, **k: (lambda page: type(page)(
        [p for p in page.pools if p.instance_type in _TYPES], page.resume_after))(every_priced(*a, **k)))
    # the savings fleet sums the clients a run rolled up (every world's run is the same hour's)
    every_done = savings.done_clients
    monkeypatch.setattr(savings, "done_clients", lambda run: [c for c in every_done(run) if c in _SEEN])
    # the growth snapshot counts the clients and the pools tracked
    every_client = fleet.client_ids
    monkeypatch.setattr(fleet, "client_ids", lambda: (row for row in every_client() if row[0] in _SEEN))
    monkeypatch.setattr(fleet, "PoolTable", type("WorldPools", (), {"count": staticmethod(lambda: sum(
        1 for row in pools.PoolTable.scan(attributes_to_get=["instance_type"]) if row.instance_type in _TYPES))}))
    store = bootstrap.command_store()
    every_lease = type(store).expired_leases
    monkeypatch.setattr(type(store), "expired_leases", lambda self, now, *a, **k: [
        c for c in every_lease(self, now, *a, **k) if c.client_id in _SEEN])
    yield
    _SEEN.clear()
    _TYPES.clear()


# --- the jobs -------------------------------------------------------------------------------------------------------

@dataclass
class Job:
    """A job with work in a prepared world: ``run`` is its invocation (crashed at k), ``retry`` the next
    scheduled run or the redelivery, ``settle`` what follows in both worlds (a queue drained, a later run)."""

    name: str
    prepare: Callable[..., World]
    run: Callable[[World], Any]
    retry: Callable[[World], Any] | None = None
    settle: Callable[[World], Any] = lambda world: None
    # audit event types each run writes about itself, at its end (a summary of what that run did: a run that died
    # wrote none, and its retry's tells what the retry did): left out of the comparison
    summaries: frozenset[str] = frozenset()
    # rows a redelivery writes about itself, and only a redelivery (its progress marks): left out of the comparison
    bookkeeping: tuple[str, ...] = ()
    # (pattern, replacement) applied to every changed item: what legitimately depends on the run's time (a later
    # run tells a longer wait)
    normalise: tuple[tuple[str, str], ...] = ()
    # rows keyed by the run's own time that record what that run computed (a score history's point): a run that
    # died before writing its own has none, its next run writes its own; compared as present or not (one run's
    # row cannot be doubled: its key is the run's time)
    per_run: tuple[str, ...] = ()
    # a scheduled job: its next run comes in the clean world too (an SQS message done is not delivered again)
    scheduled: bool = True
    marks: tuple = ()


def _world(ids: dict[str, str], **extra) -> World:
    return World(None, {k: v for k, v in ids.items() if v}, extra)


# the decision worker: a switch decided, its command queued, its decision row and event

def _prepare_decision(make_tenant, api):
    from tests.integration.test_decision_fanout import _fleet

    [(agent_id, info)] = _fleet(make_tenant, 1).items()  # on pool a, pool b cheaper: it switches
    now = datetime.now(UTC)
    body = json.dumps({"cycle": int(now.timestamp()) // 300, "scheduled_at": now.isoformat(),
                       "agents": [[info["client_id"], agent_id]]})
    return _world({"client": info["client_id"], "agent": agent_id, "itype": info["itype"],
                   "cycle": str(int(now.timestamp()) // 300)}, api=api, body=body, now=now)


def _decision_delivery(receives: int):
    def deliver(world):
        from chalicelib.settings import decision_queue_name
        from localmode.queues import sqs_event

        event = sqs_event([world.extra["body"]], decision_queue_name("dev"), receive_count=receives)
        answer = world.extra["api"].lambda_.invoke("decision-worker", event).payload
        assert answer == {"batchItemFailures": []}, answer
    return deliver


def _decision_dispatch(world):
    from chalicelib.jobs import decision_cycle

    decision_cycle.run(world.extra["now"])


def _drain_decisions(world):
    from chalicelib.settings import decision_queue_name
    from localmode.queues import drain

    drain(decision_queue_name("dev"), lambda event: world.extra["api"].lambda_.invoke("decision-worker", event).payload)


# the replica coordinator

MANUAL = {"manual_replica_enabled": True, "auto_switch_enabled": False}


def _coordinator_at(minutes: int):
    def run(world):
        from chalicelib.jobs import replica_coordinator

        replica_coordinator.run(world.extra["now"] + timedelta(minutes=minutes))
    return run


def _prepare_manual(make_tenant, api):
    from tests.e2e.failover_support import register_agent

    client_id, _, agent_id, primary, itype = register_agent(make_tenant, **MANUAL)
    return _world({"client": client_id, "agent": agent_id, "old": primary, "itype": itype}, now=datetime.now(UTC))


def _prepare_lost_standby(make_tenant, api):
    """A manual-replica agent whose ready standby EC2 took away (a spot reclaim nobody heard of)."""
    from chalicelib.jobs import replica_coordinator
    from chalicelib.repositories import replicas as replica_repo
    from tests.e2e.failover_support import aws_reclaims

    world = _prepare_manual(make_tenant, api)
    _SEEN.add(world.ids["client"])
    for minutes in (-3, -2):
        replica_coordinator.run(world.extra["now"] + timedelta(minutes=minutes))
    [standby] = replica_repo.for_agent(world.ids["agent"], include_final=False)
    assert standby.status.value == "ready", standby
    aws_reclaims(standby.instance_id)
    world.ids.update(replica=standby.replica_id, new=standby.instance_id)
    return world


def _prepare_return(make_tenant, api):
    """A manual-replica agent on on-demand beside its ready spot standby, the standby's pool now safe: the
    coordinator hands it over (a planned signal, an execution started, a ``to_spot`` decision)."""
    from tests.integration.test_return_to_spot import on_demand_agent_with_ready_standby

    client_id, _, agent_id, primary, itype, standby = on_demand_agent_with_ready_standby(make_tenant)
    return _world({"client": client_id, "agent": agent_id, "old": primary, "itype": itype,
                   "replica": standby.replica_id, "new": standby.instance_id}, now=datetime.now(UTC))


# the cleanup job: a pre-warmed standby expired, an event stuck in detected abandoned; an orphan ended

def _prepare_expired(make_tenant, api):
    """An agent whose pre-warmed standby expired (no termination followed its rebalance recommendation), and an
    interruption event of it stuck in ``detected`` for 20 minutes (no execution, no claim)."""
    from chalicelib import replicas
    from chalicelib.repositories import agents as agent_repo
    from chalicelib.repositories.interruptions import new_interruption_id
    from chalicelib.settings import get_settings
    from chalicelib.tables.interruptions import InterruptionTable
    from components.replica_coordinator import ReplicaType
    from tests.e2e.failover_support import register_agent

    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    now = datetime.now(UTC)
    standby = replicas.start_standby(agent_repo.get(client_id, agent_id), now, replica_type=ReplicaType.REBALANCE,
                                     created_by="sentinel", expires_at=now + timedelta(minutes=5))
    later = now + timedelta(seconds=get_settings().orphan_grace_s + 60)
    stuck = InterruptionTable(client_id, new_interruption_id(later - timedelta(minutes=20)), agent_id=agent_id,
                              instance_id=primary, pool_id=f"{itype}.us-east-1a",
                              signal_type="termination-notice", source="eventbridge", status="detected",
                              detected_at=later - timedelta(minutes=20))
    stuck.save()
    return _world({"client": client_id, "agent": agent_id, "old": primary, "itype": itype,
                   "replica": standby.replica_id, "new": standby.instance_id, "event": stuck.interruption_id},
                  now=later)


def _prepare_orphan(make_tenant, api):
    """An agent's instance tagged as ours, naming a replica no table knows, past the launch → attach grace."""
    from chalicelib.settings import get_settings
    from tests.e2e.failover_support import register_agent
    from tests.integration.test_cleanup import launch

    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    orphan = launch({"ManagedBy": "SpotOptimizer", "ReplicaId": f"rep-gone-{uuid.uuid4().hex[:8]}",
                     "AgentId": agent_id, "ClientId": client_id, "SpotOptimizerStage": "dev"})
    later = datetime.now(UTC) + timedelta(seconds=get_settings().orphan_grace_s + 60)
    return _world({"client": client_id, "agent": agent_id, "old": primary, "itype": itype, "orphan": orphan},
                  now=later)


def _cleanup_at(minutes: int):
    def run(world):
        from chalicelib.jobs import cleanup

        cleanup.run(world.extra["now"] + timedelta(minutes=minutes))
    return run


def _then(*runs):
    def run(world):
        for each in runs:
            each(world)
    return run


# the health monitor: an agent silent past the offline threshold, a delivered command past its lease

def _prepare_silent(make_tenant, api):
    from components.sentinel import HealthThresholds, heartbeat_bucket

    from chalicelib.tables import AgentTable
    from tests.api.test_crash_retry import _switching_world

    world = _switching_world(make_tenant, version="5.0.0")  # a delivered (executing) switch
    now = datetime.now(UTC) + timedelta(hours=2)  # the lease long past
    silent = now - timedelta(seconds=HealthThresholds().offline_after_s + 100)
    AgentTable(world.ids["client"], world.ids["agent"]).update(actions=[
        AgentTable.last_heartbeat_at.set(silent), AgentTable.heartbeat_bucket.set(heartbeat_bucket(silent))])
    world.extra["now"] = now
    return world


def _prepare_timing_out(make_tenant, api):
    """As ``_prepare_silent``, the delivered switch on its last attempt: its lease's expiry times it out (the
    client notified)."""
    from chalicelib.tables.commands import CommandTable

    world = _prepare_silent(make_tenant, api)
    row = CommandTable.get(world.ids["agent"], world.ids["command"], consistent_read=True)
    row.update(actions=[CommandTable.attempts.set(row.max_attempts)])
    return world


def _monitor_at(minutes: int):
    def run(world):
        from chalicelib.jobs import health_monitor

        health_monitor.run(world.extra["now"] + timedelta(minutes=minutes))
    return run


# the data cleaner: a deleted agent past its retention with what only it refers to, a staying agent's finished
# command, ended instance row (and its savings days) and its client's read notification past theirs

def _prepare_retention(make_tenant, api):
    from chalicelib.tables.instances import InstanceTable
    from tests.conftest import new_instance_id
    from tests.integration.test_data_cleaner import _command, _notification
    from tests.integration.test_data_cleaner_gone_agents import _days, _deleted_agent, _replica

    client_id, _, gone, gone_body, kept, kept_body = _deleted_agent(make_tenant)
    then = datetime.now(UTC)
    standby, ended = new_instance_id(), new_instance_id()
    _command(gone, client_id, "completed", then, then, "done")
    _command(gone, client_id, "pending", then, None, "pending")
    _command(kept, client_id, "completed", then, then, "kept-done")
    _notification(client_id, then, True, "read")
    replica_id = _replica(gone, client_id, "terminated", then, "closed", standby)
    InstanceTable(ended, client_id=client_id, agent_id=kept, role="primary", is_active=False, installed_at=then,
                  updated_at=then, terminated_at=then).save()
    for agent_or_instance in (f"agent#{client_id}#{gone}", f"instance#{client_id}#{standby}",
                              f"instance#{client_id}#{ended}"):
        _days(f"{agent_or_instance}#day", client_id, then, 1, 2)
    return _world({"client": client_id, "agent": gone, "kept": kept, "old": gone_body["instance_id"],
                   "kept_instance": kept_body["instance_id"], "new": standby, "ended": ended,
                   "replica": replica_id}, now=then + timedelta(days=91))


def _cleaner_at(days: int):
    def run(world):
        from chalicelib.jobs import data_cleaner

        data_cleaner.run(world.extra["now"] + timedelta(days=days))
    return run


# the savings roll-up: the dispatcher (its run row, the message), the worker (the client's hour/day/month rows)

_RUN_AT = datetime(2024, 3, 6, 10, tzinfo=UTC)  # no other test's savings run (tests/integration/test_savings_*)


def _prepare_savings(make_tenant, api):
    from chalicelib.repositories import savings
    from chalicelib.tables.savings import SavingsTable
    from tests.integration.test_savings_fanout import _tenant_with_spot

    client_id = _tenant_with_spot(make_tenant, _RUN_AT)
    try:  # an earlier world's run row: each world's dispatch writes its own
        SavingsTable.get(savings.RUNS_KEY, savings.run_period(_RUN_AT)).delete()
    except SavingsTable.DoesNotExist:
        pass
    body = json.dumps({"scheduled_at": savings.run_period(_RUN_AT), "clients": [client_id]})
    return _world({"client": client_id}, api=api, body=body)


def _savings_delivery(receives: int):
    def deliver(world):
        from chalicelib.jobs import savings_rollup
        from chalicelib.settings import savings_queue_name
        from localmode.queues import sqs_event

        failures, _ = savings_rollup.rollup_batch(sqs_event([world.extra["body"]], savings_queue_name("dev"),
                                                            receive_count=receives), _RUN_AT)
        assert failures == [], failures
    return deliver


def _savings_dispatch(world):
    from chalicelib.jobs import savings_rollup

    savings_rollup.run(_RUN_AT)


def _drain_savings(world):
    from chalicelib.jobs import savings_rollup
    from chalicelib.settings import savings_queue_name
    from localmode.queues import drain

    drain(savings_queue_name("dev"), lambda event: {"batchItemFailures": [
        {"itemIdentifier": i} for i in savings_rollup.rollup_batch(event, _RUN_AT)[0]]})


# the market-data jobs (spot prices, placement scores, pricing aggregator, risk scorer): an agent of an instance type
# of the world's own (pools are named by type: no other world's), priced by AWS (a fake DescribeSpotPriceHistory)
# in three zones; their time is one of the session's, a few minutes past an hour, so that a run and its next never
# straddle an hour (an hour completed between them would be a roll-up's difference, not a crash's)

_MARKET_AT = datetime.now(UTC).replace(minute=5, second=0, microsecond=0) + timedelta(hours=1)
_MARKET_ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
_TYPES: set[str] = set()  # the instance types of the world being run (the market jobs' pools are theirs only)


def _aws_prices(itype: str):
    """DescribeSpotPriceHistory of ``itype`` at the adapter boundary: three price changes a zone in the last six
    hours (the same answer whatever the start: a change already stored is a duplicate)."""
    from decimal import Decimal

    from chalicelib.aws.spot_market import LINUX_PRODUCTS, SpotPriceRecord

    def fetch(region, instance_types, start):
        return [SpotPriceRecord(itype, az, LINUX_PRODUCTS[0], Decimal(f"0.0{4 + z}{h}"),
                                _MARKET_AT - timedelta(hours=6 - 2 * h, minutes=20))
                for z, az in enumerate(_MARKET_ZONES) for h in range(3) if itype in instance_types]
    return fetch


def _prepare_market(make_tenant, api, *, priced: bool = True):
    """An agent on spot on an instance type of its own; with ``priced`` its type's pools priced by an earlier run of
    the spot-prices job (no agent price report: the points' times are the job's, not the wall clock's)."""
    from chalicelib.jobs import spot_prices
    from tests.e2e.failover_support import register_agent

    client_id, _, agent_id, primary, itype = register_agent(make_tenant, prices={})
    _TYPES.add(itype)
    if priced:
        spot_prices.run(_MARKET_AT - timedelta(minutes=10), fetch=_aws_prices(itype))
    return _world({"client": client_id, "agent": agent_id, "old": primary, "itype": itype}, now=_MARKET_AT)


def _prepare_unpriced(make_tenant, api):
    return _prepare_market(make_tenant, api, priced=False)


def _spot_prices_at(minutes: int):
    def run(world):
        from chalicelib.jobs import spot_prices

        spot_prices.run(world.extra["now"] + timedelta(minutes=minutes), fetch=_aws_prices(world.ids["itype"]))
    return run


def _placement_at(minutes: int):
    def run(world):
        from chalicelib.aws.spot_market import StaticPlacementScores
        from chalicelib.jobs import placement_scores

        scores = StaticPlacementScores({f"{world.ids['itype']}.{az}": 3 + 2 * z for z, az in enumerate(_MARKET_ZONES)})
        placement_scores.run(world.extra["now"] + timedelta(minutes=minutes), source=scores)
    return run


def _aggregator_at(minutes: int):
    def run(world):
        from chalicelib.jobs import pricing_aggregator

        pricing_aggregator.run(world.extra["now"] + timedelta(minutes=minutes))
    return run


def _risk_at(minutes: int):
    def run(world):
        from chalicelib.jobs import risk_scorer

        risk_scorer.run(world.extra["now"] + timedelta(minutes=minutes))
    return run


# the savings fleet: the fleet's day and month rows summed from the clients' day rows of the last roll-up

def _prepare_fleet(make_tenant, api):
    """The savings world with its roll-up done (dispatched, the client's message rolled up), the fleet's rows of the
    window gone (they are every client's: an earlier world's run wrote them)."""
    from chalicelib.jobs.savings_rollup import window
    from chalicelib.repositories import savings
    from chalicelib.tables.savings import SavingsTable

    world = _prepare_savings(make_tenant, api)
    _SEEN.add(world.ids["client"])
    _savings_dispatch(world)
    _drain_savings(world)
    start, _ = window(_RUN_AT)
    with SavingsTable.batch_write() as batch:
        for granularity in ("day", "month"):
            for row in SavingsTable.query(savings.fleet_key(granularity), SavingsTable.period >= start.strftime("%Y-%m")):
                batch.delete(row)
    return world


def _fleet_at(minutes: int):
    def run(world):
        from chalicelib.jobs import savings_fleet

        savings_fleet.run(_RUN_AT + timedelta(minutes=minutes))
    return run


# the growth snapshot: the fleet's counts for the admin stats and today's growth row (both the fleet's: an earlier
# world's are removed first)

def _prepare_growth(make_tenant, api):
    from chalicelib.repositories import fleet, savings
    from chalicelib.tables.jobs import JobStateTable
    from chalicelib.tables.savings import SavingsTable
    from components.calculations import day_key
    from tests.e2e.failover_support import register_agent

    client_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    _TYPES.add(itype)
    # the run and the next one (15 min later) count into one UTC day's row, whatever the time the test runs at
    now = datetime.now(UTC)
    now = min(now, datetime.combine(now.date(), datetime.min.time(), UTC) + timedelta(hours=23, minutes=40))
    for row in (SavingsTable(savings.GROWTH_KEY, day_key(now.date())), JobStateTable(fleet.FLEET_COUNTS)):
        row.delete()
    return _world({"client": client_id, "agent": agent_id, "old": primary, "itype": itype}, now=now)


def _growth_at(minutes: int):
    def run(world):
        from chalicelib.jobs import snapshots

        snapshots.run(world.extra["now"] + timedelta(minutes=minutes))
    return run


JOBS = [
    Job("decision-worker", _prepare_decision, _decision_delivery(1), _decision_delivery(2), scheduled=False),
    Job("decision-cycle-dispatch", _prepare_decision, _decision_dispatch, settle=_drain_decisions),
    Job("replica-coordinator-launch", _prepare_manual, _coordinator_at(0), _coordinator_at(1), _coordinator_at(2)),
    Job("replica-coordinator-relaunch", _prepare_lost_standby, _coordinator_at(0), _coordinator_at(1),
        _coordinator_at(2)),
    # a return a run died in is resumed: the same signal again (the sentinel finishes its claim), its decision once
    Job("replica-coordinator-return", _prepare_return, _coordinator_at(0), _coordinator_at(1)),
    # the coordinator runs every minute: the next runs after a cleanup that died are its, then the cleanup's
    Job("cleanup-expire-and-sweep", _prepare_expired, _cleanup_at(0), _then(_coordinator_at(1), _cleanup_at(10)),
        summaries=frozenset({"cleanup"}), normalise=((r"still detected \d+ min", "still detected <n> min"),)),
    # the orphan tagged with the time it was found, its event written at that time, then terminated
    Job("cleanup-orphan", _prepare_orphan, _cleanup_at(0), _cleanup_at(10), summaries=frozenset({"cleanup"})),
    # the offline notification is written with the move (one transaction)
    Job("health-monitor", _prepare_silent, _monitor_at(0), _monitor_at(1)),
    # the timed-out command's notification is written in its transaction
    Job("health-monitor-timeout", _prepare_timing_out, _monitor_at(0), _monitor_at(1)),
    # a redelivered message notes each client it starts (``savings.mark_started``, kept a day): its own progress
    # the walk's position (a listing token naming the world's client) is the job's own: left out
    Job("data-cleaner", _prepare_retention, _cleaner_at(0), _cleaner_at(1), bookkeeping=("cleaner#clients",)),
    Job("savings-worker", _prepare_savings, _savings_delivery(1), _savings_delivery(2), scheduled=False,
        bookkeeping=('#started"',)),
    Job("savings-rollup-dispatch", _prepare_savings, _savings_dispatch, settle=_drain_savings),
    Job("savings-fleet", _prepare_fleet, _fleet_at(45), _fleet_at(105)),
    Job("growth-snapshot", _prepare_growth, _growth_at(0), _growth_at(15)),
    # the on-demand list price's claim holds the (region, type) a few minutes, not the hour a failure waits
    Job("spot-prices", _prepare_unpriced, _spot_prices_at(0), _spot_prices_at(10)),
    Job("placement-scores", _prepare_unpriced, _placement_at(0), _placement_at(60)),
    Job("pricing-aggregator", _prepare_market, _aggregator_at(0), _aggregator_at(15)),
    # the score history's point of a run (keyed by the pool and the run's time) is that run's: one that died before
    # its scores has none, as a run that never came (its next run scores the pools again, the pool items updated)
    Job("risk-scorer", _prepare_market, _risk_at(0), _risk_at(15), per_run=('"scored_at"',)),
]


def _run(job: Job, make_tenant, api, started: dict, crash_at: int | None):
    """Prepare a world, run the job (crashing after mutation ``crash_at``, then its retry), settle; returns the
    world, the mutations of the first run and the normalised effect (the executions started included)."""
    _SEEN.clear()
    _TYPES.clear()
    world = job.prepare(make_tenant, api)
    _SEEN.add(world.ids["client"])
    before, had = snapshot_world(), set(started)
    with mutations(crash_at) as done:
        try:
            job.run(world)
            crashed = False
        except Crash:
            crashed = True
    assert crashed == (crash_at is not None), f"no crash at mutation {crash_at} of {done}"
    if crashed or (job.scheduled and job.retry):
        (job.retry or job.run)(world)
    job.settle(world)
    changes = effect(before, snapshot_world(), world.ids)
    order = sorted(((v, f"<{k}>") for k, v in world.ids.items()), key=lambda pair: -len(pair[0]))
    executions = Counter(f"+ {_normal_text(name, order)}" for name in set(started) - had)
    if executions:
        changes["stepfunctions:executions"] = executions
    if job.normalise:
        def normal(item: str) -> str:
            for pattern, replacement in job.normalise:
                item = re.sub(pattern, replacement, item)
            return item
        changes = {table: Counter({normal(item): n for item, n in counted.items()})
                   for table, counted in changes.items()}
    if job.per_run:
        changes = {table: Counter({item: 1 if any(mark in item for mark in job.per_run) else n
                                   for item, n in counted.items()}) for table, counted in changes.items()}
    if job.bookkeeping:
        changes = {table: Counter({item: n for item, n in counted.items()
                                   if not any(mark in item for mark in job.bookkeeping)})
                   for table, counted in changes.items()}
        changes = {table: counted for table, counted in changes.items() if counted}
    return world, done, changes


@pytest.mark.parametrize("job", [pytest.param(job, marks=job.marks) for job in JOBS], ids=lambda job: job.name)
def test_a_job_that_dies_after_any_mutation_then_runs_again_ends_as_one_clean_run(job, make_tenant, api,
                                                                                  executions_recorded):
    _, done, clean = _run(job, make_tenant, api, executions_recorded, None)
    assert done, "the job changes nothing in its world"
    clean, _ = audit_split(clean, job.summaries)
    failures = []
    for k in range(1, len(done) + 1):
        _, _, crashed = _run(job, make_tenant, api, executions_recorded, k)
        crashed, _ = audit_split(crashed, job.summaries)
        if crashed != clean:
            failures.append(f"k={k} ({done[k - 1]}):\n{explain(clean, crashed)}")
    assert not failures, f"mutations of a clean run: {done}\n" + "\n".join(failures)
