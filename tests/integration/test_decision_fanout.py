"""The decision cycle's fan-out against moto: the dispatcher (``decision-cycle``) sends the live agents to the
decision queue, the worker (``decision-worker``, app.py's ``@app.on_sqs_message``) decides for them; redelivery,
stale and malformed messages, transient errors (partial batch responses) and SendMessageBatch failures.

Each test's agents are on an instance type of its own, priced by the spot-prices job's store (visible to every
tenant): pool b is the cheapest, so an agent on pool a switches to it and an agent on pool b stays."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import GetError

from components.data_valve import PricePoint

from chalicelib import bootstrap
from chalicelib.aws import sqs
from chalicelib.jobs import decision_cycle
from chalicelib.jobs.decision_cycle import AGENTS_PER_MESSAGE, CYCLE_S
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import pools as pool_repo
from chalicelib.settings import decision_queue_name
from chalicelib.tables import AgentTable, DecisionTable
from localmode.queues import drain, sqs_event
from tests.conftest import registration

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")

EU = "eu-west-1"
PRICES = {"a": 0.040, "b": 0.020, "c": 0.045}
QUEUE = decision_queue_name("dev")
PER_TENANT = 15  # under the quota of 50 agents per client (and registration slows with a client's agents)


def _scheduled_event(api, now: datetime) -> dict:
    event = api.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])
    event["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return event


def _fleet(make_tenant, count: int) -> dict[str, dict]:
    """``count`` auto-switch agents of a new type, alternately on pools a and b, registered 3 h ago, with the
    pools priced and equally risky: agent id → {client_id, caller, zone}."""
    itype = f"m5.f{uuid.uuid4().hex[:8]}xl"
    now = datetime.now(timezone.utc)
    pool_repo.store_server_prices([PricePoint(pool_id=f"{itype}.{EU}{z}", ts=now - timedelta(minutes=1),
                                              price=Decimal(str(p)), source_agent_id=pool_repo.SERVER_SOURCE)
                                   for z, p in PRICES.items()], now)
    pool_repo.save_risk([(f"{itype}.{EU}{z}", 0.02, "model", "test") for z in PRICES], 3600, now)
    fleet: dict[str, dict] = {}
    caller = client_id = None
    for i in range(count):
        if i % PER_TENANT == 0:
            client_id, caller = make_tenant()
        zone = "ab"[i % 2]
        status, reply = caller.post("/api/agents/register", registration(instance_type=itype, az=f"{EU}{zone}",
                                                                         region=EU))
        assert status == 200, reply
        agent_id = reply["agent_id"]
        # its own on-demand price (the type is not in the catalogue), no spot price of its own
        status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", {
            "instance": {"instance_type": itype, "region": EU}, "pricing": {"on_demand_price": 0.096, "spot_pools": []}})
        assert status == 200, reply
        AgentTable(client_id, agent_id).update(actions=[AgentTable.registered_at.set(now - timedelta(hours=3))])
        fleet[agent_id] = {"client_id": client_id, "caller": caller, "zone": zone, "itype": itype}
    return fleet


def _through_the_worker(api) -> tuple[list[dict], list[dict]]:
    """Drain the decision queue through the worker's Lambda handler, two messages an invocation (its mapping
    takes 5, which would make one invocation of these): (the message bodies, the handler's answers)."""
    bodies, answers = [], []

    def deliver(event):
        bodies.extend(json.loads(record["body"]) for record in event["Records"])
        answers.append(api.lambda_.invoke("decision-worker", event).payload)
        return answers[-1]

    drain(QUEUE, deliver, batch_size=2)
    return bodies, answers


def _message(agent_ids, fleet, now: datetime) -> str:
    return json.dumps({"cycle": int(now.timestamp()) // CYCLE_S, "scheduled_at": now.isoformat(),
                       "agents": [[fleet[a]["client_id"], a] for a in agent_ids]})


def _decisions(agent_id: str) -> list:
    return list(DecisionTable.query(agent_id))


def test_a_cycle_of_120_agents_is_dispatched_once_each_and_every_agent_is_decided(api, make_tenant):
    fleet = _fleet(make_tenant, 120)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    cycle = int(now.timestamp()) // CYCLE_S

    result = api.lambda_.invoke("decision-cycle", _scheduled_event(api, now)).payload
    bodies, answers = _through_the_worker(api)

    # the dispatcher: every agent exactly once, at most AGENTS_PER_MESSAGE per message, one cycle
    assert result == {"agents": 120, "messages": math.ceil(120 / AGENTS_PER_MESSAGE)}
    assert len(bodies) == math.ceil(120 / AGENTS_PER_MESSAGE)
    sent = [tuple(key) for body in bodies for key in body["agents"]]
    assert sorted(sent) == sorted((info["client_id"], agent_id) for agent_id, info in fleet.items())
    assert all(len(body["agents"]) <= AGENTS_PER_MESSAGE for body in bodies)
    assert {(body["cycle"], body["scheduled_at"]) for body in bodies} == {(cycle, now.isoformat())}
    # the worker: nothing to deliver again, and every agent decided as of the scheduled time
    assert len(answers) == 3 and all(answer == {"batchItemFailures": []} for answer in answers)
    store = bootstrap.command_store()
    for agent_id, info in fleet.items():
        (decision,) = _decisions(agent_id)
        assert decision.source == "decision-cycle" and decision.decided_at == now
        active = store.active_for_agent(agent_id, 5)
        if info["zone"] == "a":  # the switch to the cheaper pool, under the cycle's command id
            assert decision.action == "switch_pool" and decision.target == f"{info['itype']}.{EU}b"
            assert [(c.command_id, c.target_pool_id) for c in active] == [
                (f"cmd-dc-{agent_id}-{cycle}", f"{info['itype']}.{EU}b")]
            assert decision.command_id == f"cmd-dc-{agent_id}-{cycle}"
        else:
            assert decision.action == "stay" and active == [] and decision.command_id is None


def test_the_schedule_in_tests_and_local_mode_runs_dispatcher_then_worker(api, make_tenant):
    """``invoke_schedule`` (local mode's and the tests') drains the queue through the worker: one call decides."""
    from tests.conftest import invoke_schedule

    fleet = _fleet(make_tenant, 3)
    result = invoke_schedule(api, "decision-cycle")
    assert result["agents"] == 3 and result["messages"] == 1
    assert result["commands_queued"] == sum(info["zone"] == "a" for info in fleet.values()) == 2
    assert result["switch_pool"] == 2 and result["stay"] == 1 and "failed" not in result


def test_a_message_delivered_twice_queues_no_second_command(api, make_tenant):
    fleet = _fleet(make_tenant, 1)
    (agent_id,) = fleet
    info = fleet[agent_id]
    now = datetime.now(timezone.utc)
    body = _message([agent_id], fleet, now)
    assert api.lambda_.invoke("decision-worker", sqs_event([body], QUEUE)).payload == {"batchItemFailures": []}
    [command] = bootstrap.command_store().active_for_agent(agent_id, 5)
    # the agent even carried it out before the redelivery: the cycle's command id still exists, nothing is queued
    caller = info["caller"]
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["command_id"] for c in reply["commands"]] == [command.command_id]
    status, reply = caller.post(f"/api/agents/{agent_id}/commands/{command.command_id}/executed", {"success": True})
    assert status == 200, reply
    assert bootstrap.command_store().active_for_agent(agent_id, 5) == []

    again = sqs_event([body], QUEUE, receive_count=2)
    assert api.lambda_.invoke("decision-worker", again).payload == {"batchItemFailures": []}
    assert [c.command_id for c in bootstrap.command_store().history(agent_id, 10)] == [command.command_id]
    assert bootstrap.command_store().active_for_agent(agent_id, 5) == []
    # and nothing is recorded twice: the first decision (naming its command) stands, one audit event
    assert [(d.action, d.command_id) for d in _decisions(agent_id)] == [("switch_pool", command.command_id)]
    assert _decision_events(agent_id) == [command.command_id]


def _decision_events(agent_id: str) -> list[str]:
    from chalicelib.tables import SystemEventTable

    return [e.metadata["command_id"] for e in SystemEventTable.scan(SystemEventTable.agent_id == agent_id)
            if e.event_type == "decision"]


def test_a_worker_that_dies_between_the_command_and_the_record_is_completed_by_the_redelivery(
        api, make_tenant, monkeypatch):
    """GIVEN the first delivery queued the cycle's command, then failed to record the decision (throttled)
    WHEN SQS delivers the message again
    THEN the decision is recorded once, naming the command already queued, and no second command exists."""
    from chalicelib import decisions

    fleet = _fleet(make_tenant, 3)
    agent_id = next(a for a, info in fleet.items() if info["zone"] == "a")  # the one that switches
    now = datetime.now(timezone.utc)
    body = _message([agent_id], fleet, now)
    real_record = decisions.record

    def throttled_record(*args, **kwargs):
        raise _throttled(agent_id)

    monkeypatch.setattr(decisions, "record", throttled_record)
    first = sqs_event([body], QUEUE)
    assert api.lambda_.invoke("decision-worker", first).payload == {
        "batchItemFailures": [{"itemIdentifier": first["Records"][0]["messageId"]}]}
    [command] = bootstrap.command_store().active_for_agent(agent_id, 5)
    assert _decisions(agent_id) == []

    monkeypatch.setattr(decisions, "record", real_record)
    again = sqs_event([body], QUEUE, receive_count=2)
    assert api.lambda_.invoke("decision-worker", again).payload == {"batchItemFailures": []}
    assert [(d.action, d.command_id) for d in _decisions(agent_id)] == [("switch_pool", command.command_id)]
    assert [c.command_id for c in bootstrap.command_store().history(agent_id, 10)] == [command.command_id]
    assert _decision_events(agent_id) == [command.command_id]


def test_a_message_older_than_a_cycle_is_dropped_and_decides_nothing(api, make_tenant):
    fleet = _fleet(make_tenant, 2)
    scheduled = datetime.now(timezone.utc)
    body = _message(list(fleet), fleet, scheduled)
    # received more than a cycle after its scheduled time (a backlog): dropped, counted, not delivered again
    late = scheduled + timedelta(seconds=CYCLE_S + 5)
    failures, outcomes = decision_cycle.decide_batch(sqs_event([body], QUEUE), late)
    assert failures == [] and outcomes == {"stale": 2}
    old = _message(list(fleet), fleet, scheduled - timedelta(seconds=CYCLE_S + 5))
    assert api.lambda_.invoke("decision-worker", sqs_event([old], QUEUE)).payload == {"batchItemFailures": []}
    for agent_id in fleet:
        assert _decisions(agent_id) == [] and bootstrap.command_store().history(agent_id, 10) == []
    # within the cycle (even near its end) the same message is decided
    failures, outcomes = decision_cycle.decide_batch(sqs_event([body], QUEUE), scheduled + timedelta(seconds=CYCLE_S - 5))
    assert failures == [] and outcomes["switch_pool"] == outcomes["stay"] == 1
    assert all(len(_decisions(agent_id)) == 1 for agent_id in fleet)


def _throttled(agent_id):
    error = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "GetItem")
    return GetError(f"throttled reading {agent_id}", cause=error)


def test_malformed_messages_are_dropped_and_only_a_transient_failure_comes_back(api, make_tenant, monkeypatch):
    fleet = _fleet(make_tenant, 4)
    ok, broken, throttled, after = sorted(fleet)
    now = datetime.now(timezone.utc)
    real_get = agent_repo.get

    def get(client_id, agent_id):
        if agent_id == throttled:
            raise _throttled(agent_id)
        if agent_id == broken:
            raise RuntimeError("a bug, not a hiccup")
        return real_get(client_id, agent_id)

    monkeypatch.setattr(agent_repo, "get", get)
    event = sqs_event(["not json", json.dumps({"cycle": "7", "scheduled_at": now.isoformat(), "agents": []}),
                       json.dumps({"cycle": 1, "scheduled_at": now.isoformat(), "agents": ["ab"]}),
                       _message([ok, broken], fleet, now), _message([throttled, after], fleet, now)], QUEUE)
    answer = api.lambda_.invoke("decision-worker", event).payload

    # only the message whose agent hit throttling is delivered again; the malformed ones are gone (logged)
    assert answer == {"batchItemFailures": [{"itemIdentifier": event["Records"][4]["messageId"]}]}
    # neither the bug nor the throttling stopped the other agents of their messages
    assert len(_decisions(ok)) == len(_decisions(after)) == 1
    assert _decisions(broken) == _decisions(throttled) == []
    failures, outcomes = decision_cycle.decide_batch(event, now)
    assert failures == [event["Records"][4]["messageId"]]
    assert (outcomes["malformed"], outcomes["failed"], outcomes["transient"]) == (3, 1, 1)


def test_transient_errors_are_told_from_bugs():
    assert decision_cycle.retryable(_throttled("a"))
    assert decision_cycle.retryable(ClientError({"Error": {"Code": "InternalServerError"}}, "Query"))
    assert not decision_cycle.retryable(RuntimeError("x"))
    assert not decision_cycle.retryable(ClientError({"Error": {"Code": "ValidationException"}}, "Query"))
    assert not decision_cycle.retryable(GetError("x", cause=ClientError({"Error": {"Code": "ResourceNotFoundException"}},
                                                                        "GetItem")))


class _FlakySqs:
    """send_message_batch answers some entries Failed (as SQS does under throttling) ``failures`` times."""

    def __init__(self, failures: int, sender_fault: bool = False):
        self.failures, self.sender_fault, self.sent, self.calls = failures, sender_fault, [], 0

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's keyword names
        self.calls += 1
        failed = Entries[:1] if self.failures > 0 else []
        self.failures -= 1
        self.sent += [e["MessageBody"] for e in Entries if e not in failed]
        return {"Successful": [{"Id": e["Id"]} for e in Entries if e not in failed],
                "Failed": [{"Id": e["Id"], "Code": "ThrottlingException", "SenderFault": self.sender_fault}
                           for e in failed]}


def test_entries_sendmessagebatch_reports_failed_are_sent_again_or_raised(monkeypatch):
    monkeypatch.setattr(sqs, "queue_url", lambda name: f"https://sqs.local/{name}")
    bodies = [f"m{i}" for i in range(23)]
    flaky = _FlakySqs(failures=2)
    monkeypatch.setattr(sqs, "_client", lambda: flaky)
    assert sqs.send_all("q", bodies, backoff_s=0) == 23 and sorted(flaky.sent) == sorted(bodies)
    assert flaky.calls == 3 + 2  # three batches (10, 10, 3), the first one twice more for its failed entry

    stubborn = _FlakySqs(failures=99)
    monkeypatch.setattr(sqs, "_client", lambda: stubborn)
    with pytest.raises(sqs.SendError, match="1 message"):
        sqs.send_all("q", bodies, backoff_s=0)
    assert stubborn.calls == sqs.SEND_ATTEMPTS

    refused = _FlakySqs(failures=99, sender_fault=True)  # a bad request is not sent again
    monkeypatch.setattr(sqs, "_client", lambda: refused)
    with pytest.raises(sqs.SendError):
        sqs.send_all("q", bodies, backoff_s=0)
    assert refused.calls == 1


def test_a_dispatch_whose_messages_cannot_be_sent_fails(api, make_tenant, monkeypatch):
    """The scheduled invocation fails (and is retried), rather than leaving agents undecided unnoticed."""
    _fleet(make_tenant, 2)
    monkeypatch.setattr(sqs, "queue_url", lambda name: f"https://sqs.local/{name}")
    monkeypatch.setattr(sqs, "_client", lambda: _FlakySqs(failures=99))
    monkeypatch.setattr(sqs, "SEND_ATTEMPTS", 1)
    with pytest.raises(sqs.SendError):
        decision_cycle.run(datetime.now(timezone.utc))


class _LambdaContext:
    """A Lambda context whose time passes only when the test spends it."""

    def __init__(self, timeout_ms: int) -> None:
        self.left = timeout_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left


def test_the_worker_starts_no_message_it_has_no_time_for_and_returns_it(api, make_tenant, monkeypatch):
    """The decision-worker's 30 s: each agent takes 12 s here, so after the first message 6 s are left (under the
    7.5 s margin): the second message is not started and comes back, unread."""
    fleet = _fleet(make_tenant, 4)
    first, second = sorted(fleet)[:2], sorted(fleet)[2:]
    now = datetime.now(timezone.utc)
    context = _LambdaContext(30_000)
    real_get = agent_repo.get

    def get(client_id, agent_id):
        context.left -= 12_000
        return real_get(client_id, agent_id)

    monkeypatch.setattr(agent_repo, "get", get)
    monkeypatch.setattr(decision_cycle.clock, "now", lambda: now)
    event = sqs_event([_message(first, fleet, now), _message(second, fleet, now)], QUEUE)

    assert decision_cycle.on_sqs_batch(event, context) == {
        "batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert all(len(_decisions(agent_id)) == 1 for agent_id in first)
    assert all(_decisions(agent_id) == [] for agent_id in second)


def test_a_batch_never_holds_more_than_sendmessagebatchs_total_size(monkeypatch):
    """SendMessageBatch refuses a batch whose messages add up to more than 256 KiB (each may be that large alone): the
    parts of a split AWS Health event copy its ``detail``, so ten of them may exceed it. Batches are cut by size too,
    in order, every body sent once."""
    monkeypatch.setattr(sqs, "queue_url", lambda name: f"https://sqs.local/{name}")
    bodies = [f"{i:03d}" + "x" * 60_000 for i in range(12)] + ["small"] * 3
    plain = _FlakySqs(failures=0)
    monkeypatch.setattr(sqs, "_client", lambda: plain)
    assert sqs.send_all("q", bodies, backoff_s=0) == len(bodies) and plain.sent == bodies
    sizes = [sum(len(b.encode()) for b in batch) for batch in sqs.batches(bodies)]
    assert max(sizes) <= sqs.BATCH_BYTES and plain.calls == len(sizes) == 3  # 4 big a batch (5 would pass 256 KiB)
    assert [len(b) for b in sqs.batches(f"m{i}" for i in range(23))] == [10, 10, 3]
