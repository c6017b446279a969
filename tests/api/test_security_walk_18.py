"""Security walk 18: the event and workflow side rather than the HTTP routes — what a tenant holding a client token,
its agents' credentials and its own AWS account bound to the product (the product's role in it, its EC2 and Health
events forwarded to the product's bus, a dead-letter queue of its own the operator redrives) can make the sentinel,
the failover workflow, the fan-out workers and the scheduled market-data jobs do: events naming another tenant's
instance, another region or thousands of instances, replays and out-of-order deliveries, bodies of any size, the
failover executions' names, what a tenant's strings become in a queue message, and how many (region, type) one
tenant's declarations make a job ask AWS about every run. Each test is one attack; its docstring says what it tries
and what holds (and, when it found something, what happened before the fix)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import sentinel
from chalicelib.jobs import decision_cycle
from chalicelib.jobs import placement_scores as placement_job
from chalicelib.jobs import spot_prices as price_job
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import observations
from chalicelib.repositories import replicas as replica_repo
from chalicelib.sentinel import on_event
from chalicelib.settings import get_settings
from chalicelib.tables import InterruptionTable
from chalicelib.tables.interruptions import SignalClaimTable
from components.replica_coordinator import ReplicaStatus
from components.sentinel import signal_key
from tests.api._support import random_instance_type
from tests.conftest import new_instance_id, registration
from tests.e2e.failover_support import ACCOUNT, REGION, ec2_event, rebalance, register_agent, warning

ATTACKER_ACCOUNT = "210987654321"  # a client account bound to the attacker (never the victim's)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _events_of(client_id: str) -> list[InterruptionTable]:
    return list(InterruptionTable.query(client_id, consistent_read=True))


def _claim(instance_id: str, group: str = "termination") -> SignalClaimTable | None:
    try:
        return SignalClaimTable.get(signal_key(instance_id, group), consistent_read=True)
    except SignalClaimTable.DoesNotExist:
        return None


def _retirement(*instance_ids: str, account: str = ACCOUNT) -> dict:
    """An AWS Health scheduled retirement as EventBridge delivers it (tests/integration/test_event_intake.py's)."""
    code = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "AWS Health Event", "source": "aws.health",
            "account": account, "time": _now().strftime("%Y-%m-%dT%H:%M:%SZ"), "region": REGION,
            "resources": list(instance_ids),
            "detail": {"service": "EC2", "eventTypeCode": code, "eventTypeCategory": "scheduledChange",
                       "affectedEntities": [{"entityValue": i} for i in instance_ids]}}


# --- (d) the scheduled market-data jobs: one tenant's declarations against everyone's --------------------------------


class _Market:
    """DescribeSpotPriceHistory at the adapter boundary: no prices, every call remembered."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def __call__(self, region, instance_types, start):
        self.calls.extend((region, t) for t in instance_types)
        return []


def test_one_tenants_many_declared_types_never_keep_the_spot_prices_job_from_another_tenants_pools(aws_tables,
                                                                                                   monkeypatch):
    """The attack: a tenant's 50 agents, each declaring 20 interchangeable types (the schema's and the quota's
    bounds), registered in ``af-south-1`` (any known region is accepted of a legacy registration), are 1,000
    (region, type) of the spot-prices job's targets, every 10 minutes. Before the fix the job asked every target
    each run, in name order: one DescribeSpotPriceHistory each (≈ 0.1-0.3 s from another region) is minutes of work
    against the job's 120 s timeout, so every run timed out inside the attacker's ``af-south-1`` targets and the
    other tenants' ``us-east-1`` pools were never priced again (nor any on-demand list price refreshed). Now a run
    asks at most ``SPOT_PRICES_MAX_PER_RUN`` targets, never-asked then longest-unasked first: the victim's pool is
    asked within ⌈targets / cap⌉ runs, and no run asks more than the cap. (Shown with a cap of 3 and 7 attacker
    targets.)"""
    settings = get_settings()
    if hasattr(settings, "spot_prices_max_per_run"):  # the code before the fix had no such setting
        settings = dataclasses.replace(settings, spot_prices_max_per_run=3)
    monkeypatch.setattr(price_job, "get_settings", lambda: settings)
    attacker = [("af-south-1", random_instance_type()) for _ in range(7)]
    victim = ("us-east-1", random_instance_type())
    targets, market, now = [*attacker, victim], _Market(), _now()

    runs = []
    for run in range(3):  # ⌈8 / 3⌉
        market.calls.clear()
        result = price_job.run(now + timedelta(minutes=10 * run), fetch=market, targets=targets)
        runs.append(list(market.calls))
        assert len(market.calls) <= 3 and result.get("deferred") == len(targets) - len(market.calls), result

    assert any(victim in calls for calls in runs), runs
    assert set(sum(runs, [])) == set(targets)  # every one asked in the three runs: turns, not a favourite


def test_one_tenants_targets_first_by_name_never_starve_another_tenants_placement_scores(aws_tables, monkeypatch):
    """The attack: the same tenant's targets, first by name, against the placement-score job's small budget
    (``PLACEMENT_MAX_PER_RUN``: AWS limits the configurations a day). What holds: the job asks never-asked targets
    first, then the longest unasked, and a target asked waits its interval: the victim's (region, type) is asked in
    the run after the attacker's first ones, never pushed back by them again."""
    capped = dataclasses.replace(get_settings(), placement_max_per_run=2)
    monkeypatch.setattr(placement_job, "get_settings", lambda: capped)
    monkeypatch.setattr(placement_job, "record_observations", lambda found, prefix: len(found))
    from chalicelib.aws.spot_market import StaticPlacementScores

    attacker = [("af-south-1", random_instance_type()) for _ in range(3)]
    victim = ("us-east-1", random_instance_type())
    source, now = StaticPlacementScores({}), _now()

    asked = [placement_job.run(now + timedelta(hours=h), source=source, targets=[*attacker, victim])["asked"]
             for h in range(2)]

    assert f"{victim[0]}#{victim[1]}" in asked[1], asked
    assert all(len(a) <= 2 for a in asked)


@pytest.mark.parametrize("declared", [["m5.*"], ["*"], ["m5.large,c5.large"], ["m5.large\n"],
                                      [f"m5.{n}xlarge" for n in range(2, 30)]])
def test_an_instance_type_with_a_wildcard_or_a_list_or_too_many_never_reaches_describe_spot_price_history(
        make_tenant, declared):
    """The attack: a registration declaring ``m5.*``, ``*``, a comma list, a type with a trailing newline (stripped: the plain name), or more types
    than the bound, so that the spot-prices and placement jobs pass them to DescribeSpotPriceHistory's
    ``InstanceTypes`` / GetSpotPlacementScores (a wildcard or list would price or score what nobody runs, too many
    would be a call per type every run). What holds: the registration is refused (400/409) and nothing of it is a
    target of the market-data jobs; the newline is stripped and the plain type declared."""
    _, caller = make_tenant()
    body = registration(instance_type="m5.large", region="eu-west-1", az="eu-west-1a")

    status, reply = caller.post("/api/agents/register", {**body, "instance_types": declared})

    if declared == ["m5.large\n"]:  # surrounding blanks are stripped by every schema: the plain name is declared
        assert status == 200, reply
        row = agent_repo.get(reply["client_id"], reply["agent_id"])
        assert list(row.config.get("allowed_instance_types") or ["m5.large"]) == ["m5.large"], row.config
        return
    assert status in (400, 409), reply
    assert not {t for _, t in agent_repo.types_in_use()} & {t for t in declared if t != "m5.large"}


# --- (a) events from the tenant's own account ---------------------------------------------------------------------


def test_a_health_event_naming_thousands_of_instances_is_split_before_any_is_looked_up(aws_tables, monkeypatch):
    """The attack: an AWS Health retirement from the attacker's account naming 4,000 instance ids (≈ 250 KB: one
    SQS message; the client's own dead-letter queue holds any body it writes there, and the operator redrives it).
    Before walk 18 the sentinel looked each one up (a consistent GetItem each, a failover started for each managed
    one) in one invocation of an 8 s function, and stored a result listing every one under the event id (beyond
    DynamoDB's 400 KB item): the invocation timed out, and every other tenant's spot warning of that batch of ten
    came back with it after the visibility timeout, again and again until the dead-letter queue. Walk 18 rejected an
    event naming more than ``MAX_AFFECTED_INSTANCES``, which also dropped a real retirement of a large fleet (AWS
    names every affected instance in one event). Now such an event is split, before any instance is read, into
    events of at most ``MAX_AFFECTED_INSTANCES`` on the event queue: each invocation does a bounded share (what the
    attacker could have sent as many events of its own anyway), and the stored answer is a count."""
    from chalicelib.settings import event_queue_name
    from components.sentinel.signals import MAX_AFFECTED_INSTANCES
    from localmode.queues import drain
    from tests.integration.test_event_intake import empty_event_queue

    empty_event_queue()
    looked_up = []
    monkeypatch.setattr(sentinel, "_instance", lambda instance_id: looked_up.append(instance_id))
    ids = [f"i-{n:017x}" for n in range(4000)]
    event = _retirement(*ids, account=ATTACKER_ACCOUNT)
    assert len(json.dumps(event)) < 256 * 1024

    result = on_event(event)

    parts = -(-len(ids) // MAX_AFFECTED_INSTANCES)
    assert result["action"] == "split" and result["parts"] == parts, result
    assert looked_up == [] and len(json.dumps(result)) < 200
    batches = []

    def run(batch):
        batches.append(len(batch["Records"]))
        before = len(looked_up)
        response = sentinel.on_sqs_batch(batch)
        assert len(looked_up) - before <= MAX_AFFECTED_INSTANCES * len(batch["Records"])
        return response

    assert drain(event_queue_name(get_settings().stage), run) == parts
    assert sorted(looked_up) == ids  # every instance once, in parts of at most MAX_AFFECTED_INSTANCES
    assert on_event(event) == result  # the event itself is done: a redelivery splits nothing again


def test_a_health_event_of_my_account_naming_another_tenants_primary_moves_nothing_of_it(make_tenant, started):
    """The attack: a Health retirement from the attacker's bound account that names the victim's primary next to an
    instance of its own (Health's ``affectedEntities`` is a list: each instance is handled on its own). What holds:
    the victim's instance is ignored for the event's account (not the instance's): no claim, no interruption, no
    execution; the list does not lend the event's account to every instance it names."""
    victim_id, _, _, victim_primary, _ = register_agent(make_tenant)

    result = on_event(_retirement(new_instance_id(), victim_primary, account=ATTACKER_ACCOUNT))

    assert result["action"] == "per_instance"
    by_instance = {r["instance_id"]: r for r in result["results"]}
    assert by_instance[victim_primary] == {"instance_id": victim_primary, "action": "ignored",
                                           "reason": "the event's account is not the instance's account"}
    assert _events_of(victim_id) == [] and _claim(victim_primary) is None and started == []


def test_a_replayed_event_id_with_another_body_does_nothing_a_second_time(make_tenant, started):
    """The attack: the tenant replays one of its events (an EventBridge archive replay, a dead-letter redrive) with
    the same id and a changed body — another instance, another detail type — hoping the second body is handled as a
    new event. What holds: the sentinel is idempotent on the event id: the second delivery answers the first's
    result and starts, claims and records nothing."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    other_client, _, _, other_primary, _ = register_agent(make_tenant)
    event_id = str(uuid.uuid4())
    first = on_event(rebalance(primary) | {"id": event_id})

    second = on_event(warning(other_primary, event_id=event_id))

    assert second == first
    assert _events_of(other_client) == [] and _claim(other_primary) is None and started == []
    assert len(_events_of(client_id)) == 1


def test_a_huge_detail_is_handled_as_the_event_it_is_and_stored_as_its_small_result(aws_tables):
    """The attack: an event of ≈ 250 KB — a warning whose ``detail`` carries a huge nested object beside the
    instance id — so that the stored idempotency record (or a log line) carries the body, past DynamoDB's item size
    (the event failing forever, with its batch). What holds: the body is parsed once, the instance (unmanaged here)
    is ignored, and the stored record holds the small result and a hash of the id, never the body."""
    from chalicelib.tables.idempotency import IdempotencyTable

    instance = new_instance_id()
    event = warning(instance)
    event["detail"]["padding"] = {f"k{n}": "x" * 200 for n in range(1200)}
    assert len(json.dumps(event)) > 200 * 1024

    assert on_event(event) == {"action": "ignored", "reason": "unmanaged instance"}
    rows = [json.dumps(row.attribute_values, default=str) for row in IdempotencyTable.scan()]
    assert rows and not any("x" * 200 in row or event["id"] in row for row in rows)


def test_an_event_naming_another_region_neither_moves_the_failover_nor_feeds_the_fleets_evidence(make_tenant,
                                                                                               started):
    """The attack: a warning for the tenant's own primary whose ``region`` is another one (``eu-west-3``), so that
    the failover launches its replacement there (in a region the tenant picks, perhaps one the product does not run
    in) or the pool's warning is recorded for every tenant without EC2 having seen the instance. What holds: the
    workflow's input names no region (the failover launches where the agent runs), and EC2 of the named region does
    not know the instance: the warning is its client's evidence only, never the fleet's."""
    client_id, _, _, primary, itype = register_agent(make_tenant)

    result = on_event(warning(primary) | {"region": "eu-west-3"})

    assert result["action"] == "failover_started", result
    [(name, payload)] = started
    assert "region" not in payload and "eu-west-3" not in json.dumps(payload) and payload["client_id"] == client_id
    pool = _events_of(client_id)[0].pool_id
    since = _now() - timedelta(hours=1)
    assert observations.for_pools([pool], since, viewer=observations.FLEET)[pool] == []
    assert [o.kind.value for o in observations.for_pools([pool], since, viewer=client_id)[pool]] \
        == ["interruption_warning"]



@pytest.mark.parametrize("spelling", [str.upper, lambda i: f" {i}", lambda i: f"{i}\n", lambda i: i.replace("i-", "i-0")],
                         ids=["upper", "leading-blank", "trailing-newline", "padded"])
def test_a_variant_spelling_of_another_tenants_instance_id_reaches_nothing(make_tenant, started, spelling):
    """The attack: an event of the attacker's own account (so the account check passes for whatever it names) whose
    instance id is the victim's primary spelt otherwise — upper case, a blank before it, a newline after it, an extra
    zero — hoping a lookup that normalises finds the victim's row while the claim and the account check key on the
    spelling. What holds: the instances table is read with the id as sent: no row, ``unmanaged instance``, and the
    victim's primary has no claim, no interruption and no execution."""
    victim_id, _, _, victim_primary, _ = register_agent(make_tenant)

    result = on_event(warning(spelling(victim_primary)) | {"account": ATTACKER_ACCOUNT})

    assert result["action"] in ("ignored", "rejected"), result
    assert _events_of(victim_id) == [] and _claim(victim_primary) is None and started == []


# --- (b) the failover executions ----------------------------------------------------------------------------------


def test_two_tenants_warnings_of_one_second_are_two_executions_whose_names_no_tenant_chose(make_tenant, started):
    """The attack: two tenants' warnings with the same ``time`` and the same event-chosen strings (the event id of
    one replayed as the other's), hoping the execution name (the one thing that makes a failover run once) derives
    from something a tenant controls, so that one tenant's failover is taken for the other's
    (``ExecutionAlreadyExists`` answers the first's ARN) or its input steered. What holds: each execution is named
    by a fresh interruption id of the service's own making and its input comes from the stored event of its own
    client."""
    a_client, _, _, a_primary, _ = register_agent(make_tenant)
    b_client, _, _, b_primary, _ = register_agent(make_tenant)
    at = "2026-01-01T00:00:00Z"

    first = on_event(warning(a_primary) | {"time": at})
    second = on_event(warning(b_primary) | {"time": at})

    assert first["action"] == second["action"] == "failover_started"
    (a_name, a_input), (b_name, b_input) = started
    assert a_name != b_name and a_name == first["interruption_id"] and b_name == second["interruption_id"]
    assert (a_input["client_id"], a_input["instance_id"]) == (a_client, a_primary)
    assert (b_input["client_id"], b_input["instance_id"]) == (b_client, b_primary)


# --- out-of-order deliveries ----------------------------------------------------------------------------------------


def test_a_running_state_delivered_after_a_standbys_loss_never_brings_it_back(make_tenant):
    """The attack (or EventBridge's own order): a standby's ``terminated`` arrives, then its older ``running``
    (a replay, a retried delivery). If the second were applied the lost standby would be ``ready`` again and a
    failover would promote an instance that is gone. What holds: the lost standby is failed once and the later
    ``running`` is ignored (a standby no longer active)."""
    from chalicelib.jobs.replica_coordinator import reconcile_agent

    client_id, _, agent_id, _, _ = register_agent(make_tenant, manual_replica_enabled=True, auto_switch_enabled=False)
    reconcile_agent(agent_repo.get(client_id, agent_id), _now())
    [standby] = replica_repo.for_agent(agent_id, include_final=False)
    state = "EC2 Instance State-change Notification"

    lost = on_event(ec2_event(state, standby.instance_id, state="terminated"))
    late = on_event(ec2_event(state, standby.instance_id, state="running"))

    assert lost["action"] == "standby_lost" and late == {"action": "ignored", "reason": "standby no longer active"}
    assert replica_repo.get(agent_id, standby.replica_id).status is ReplicaStatus.FAILED


# --- (c) what a tenant's strings become in a queue message ---------------------------------------------------------


def test_a_decision_message_carries_the_services_ids_only_never_a_tenants_strings(make_tenant):
    """The attack: an agent registered with a logical id and hostname built to break or extend the decision queue's
    JSON message (quotes, brackets, a newline, a second ``agents`` key, 60 KB of text), so that its message names
    another tenant's agent, fails to parse (and its 24 neighbours with it) or passes SQS's size. What holds: a
    message carries only each agent's (client id, agent id), ids the service made, and parses back to exactly
    them."""
    client_id, caller = make_tenant()
    hostile = '"]], "agents": [["victim", "agent"]], "x": ["\n'
    status, reply = caller.post("/api/agents/register", registration(logical_agent_id=hostile[:128],
                                                                     hostname=hostile + "h" * 200))
    assert status in (200, 400), reply
    keys = [agent_repo.AgentKey(client_id, a.agent_id) for a in agent_repo.all_for_client(client_id)]
    counted: Counter = Counter()

    bodies = list(decision_cycle.messages(iter(keys), _now(), counted))

    for body in bodies:
        assert hostile not in body and "victim" not in body and len(body) < 4096
        _, _, parsed = decision_cycle.parse_message(body)
        assert all(k in keys for k in parsed)



def test_an_archived_event_replayed_by_the_tenant_is_its_own_evidence_never_the_fleets(make_tenant):
    """The attack: EventBridge archives the tenant's account's events and replays any of them on demand (``StartReplay``,
    no AWS involvement); its forwarding rule sends the replay to the product's bus like the original. The tenant
    replays one real rebalance recommendation of its primary again and again, once per signal window: each replay got
    a new interruption event (the claim is keyed on the handling time) and, as an EventBridge event of the right
    account about an instance EC2 shows in the pool, a new fleet observation. Before the fix one recommendation AWS
    sent once became as many as the tenant liked in the evidence every tenant's risk score and pre-warming read. Now
    an event EventBridge marks as replayed (``replay-name``) counts as its client's evidence only, as the agent's own
    report of it would; the genuine recommendation is still the fleet's."""
    _, _, _, genuine, _ = register_agent(make_tenant)
    client_id, _, _, replayed, _ = register_agent(make_tenant)

    assert on_event(rebalance(genuine))["action"] in ("monitor", "prewarm")
    assert on_event(rebalance(replayed) | {"replay-name": "again"})["action"] in ("monitor", "prewarm")

    since = _now() - timedelta(hours=1)
    [genuine_pool, replayed_pool] = [agent_repo.instance_row(i).pool_id for i in (genuine, replayed)]
    fleet = observations.for_pools([genuine_pool, replayed_pool], since, viewer=observations.FLEET)
    assert [o.kind.value for o in fleet[genuine_pool]] == ["rebalance_recommendation"]
    assert fleet[replayed_pool] == []
    assert [o.kind.value for o in observations.for_pools([replayed_pool], since, viewer=client_id)[replayed_pool]] \
        == ["rebalance_recommendation"]


@pytest.mark.parametrize("client_mark", ["absent", None, False, "trusted"])
def test_an_event_redriven_from_the_tenants_dead_letter_queue_is_its_own_evidence_never_the_fleets(
        make_tenant, started, monkeypatch, client_mark):
    """The attack: the tenant's stack dead-letters into a queue of the tenant's own account, where it writes any body
    (and any message attribute). It writes EventBridge-shaped ``aws.ec2`` events of its own account about its own
    instances (a spot interruption warning, a rebalance recommendation), perhaps with the redrive's mark set to pass
    for unmarked, and waits for the operator's ``redrive --client-role-arn`` (the account matches: they are moved).
    Before the fix the sentinel took them for AWS's word: the warning and the recommendation became fleet
    observations, which every tenant's risk scores and pre-warming read. Now the redrive marks every body it moves
    from a client's queue (overwriting what the body carried) and the sentinel counts a marked event as that client's
    evidence only: its own failover still starts, the fleet sees nothing. A genuine event is still the fleet's."""
    import functools

    from components.sentinel.signals import REDRIVEN_FROM
    from infra import event_source
    from infra.policies import client_role_name
    from tests.api.test_security_walk_12 import EXTERNAL_ID, _drain, _in_account
    from chalicelib.settings import event_queue_name, forwarded_event_dead_letter_queue_name
    from tests.conftest import aws_client

    _, _, _, genuine, _ = register_agent(make_tenant)
    client_id, caller, _, warned, _ = register_agent(make_tenant)
    _, _, _, rebalanced, _ = register_agent(lambda: (client_id, caller))  # a second agent of the same tenant
    stage = f"t{uuid.uuid4().hex[:8]}"  # the session's moto is shared: queues of this test only
    role = client_role_name(stage)
    client_sqs = _in_account(ACCOUNT, role).client("sqs", region_name=REGION)
    dead_letters = client_sqs.create_queue(QueueName=forwarded_event_dead_letter_queue_name(stage))["QueueUrl"]
    mark = {} if client_mark == "absent" else {REDRIVEN_FROM: client_mark}
    for event in (warning(warned), rebalance(rebalanced)):
        client_sqs.send_message(QueueUrl=dead_letters, MessageBody=json.dumps(event | mark), MessageAttributes={
            REDRIVEN_FROM: {"DataType": "String", "StringValue": "false"}})
    sqs = aws_client("sqs", REGION)
    event_queue = sqs.create_queue(QueueName=event_queue_name(stage))["QueueUrl"]
    monkeypatch.setattr(event_source, "redrive_forwarded", functools.partial(event_source.redrive_forwarded, wait_s=0))

    assert event_source.main(["redrive", "--stage", stage, "--region", REGION, "--forwarded-from", REGION,
                              "--client-role-arn", f"arn:aws:iam::{ACCOUNT}:role/{role}",
                              "--external-id", EXTERNAL_ID]) == 0
    answers = {json.loads(body)["detail-type"]: on_event(json.loads(body)) for body in _drain(sqs, event_queue)}
    assert on_event(rebalance(genuine))["action"] in ("monitor", "prewarm")

    assert answers["EC2 Spot Instance Interruption Warning"]["action"] == "failover_started"  # its own failover
    assert answers["EC2 Instance Rebalance Recommendation"]["action"] in ("monitor", "prewarm")
    assert len(started) == 1
    since = _now() - timedelta(hours=1)
    pools = {i: agent_repo.instance_row(i).pool_id for i in (genuine, warned, rebalanced)}
    fleet = observations.for_pools(pools.values(), since, viewer=observations.FLEET)
    assert [o.kind.value for o in fleet[pools[genuine]]] == ["rebalance_recommendation"]
    assert fleet[pools[warned]] == fleet[pools[rebalanced]] == []
    mine = observations.for_pools([pools[warned], pools[rebalanced]], since, viewer=client_id)
    assert [o.kind.value for o in mine[pools[warned]]] == ["interruption_warning"]
    assert [o.kind.value for o in mine[pools[rebalanced]]] == ["rebalance_recommendation"]


@pytest.mark.parametrize("days", [400, -400, -30])
def test_an_event_dated_far_ahead_or_long_ago_is_placed_at_its_receive_time(make_tenant, started, days):
    """The attack: an EventBridge event whose ``time`` is 400 days ahead (or long ago: no queue keeps an event that
    long). Before the fix the sentinel believed it: a warning dated 400 days ahead got a failover deadline and a fleet
    observation in 2028 (counted as recent by every risk score until then), one long ago an observation dated back
    there. Agents' times are bounded (chalicelib/clock.py); now the event's is too: beyond ``MAX_CLOCK_SKEW`` ahead,
    or older than ``sentinel.MAX_EVENT_AGE``, it is the receive time (logged). The failover still starts."""
    client_id, _, _, primary, _ = register_agent(make_tenant)
    dated = _now() + timedelta(days=days)
    before = _now()

    answer = on_event(warning(primary) | {"time": dated.strftime("%Y-%m-%dT%H:%M:%SZ")})

    after = datetime.now(UTC)
    assert answer["action"] == "failover_started"
    [row] = _events_of(client_id)
    assert before <= row.detected_at <= after
    assert before + timedelta(seconds=120) <= row.termination_time <= after + timedelta(seconds=120)
    pool = agent_repo.instance_row(primary).pool_id
    [seen] = observations.for_pools([pool], before - timedelta(days=500), before + timedelta(days=500),
                                    viewer=observations.FLEET)[pool]
    assert before.timestamp() <= seen.at <= after.timestamp()


def test_an_event_a_few_minutes_old_or_within_the_skew_keeps_its_time(make_tenant, started):
    """The bound moves only what cannot be true: a warning a few minutes old (a retried delivery) or a little ahead
    (AWS's clock against ours) keeps the time EventBridge gave."""
    from chalicelib.clock import MAX_CLOCK_SKEW

    for offset in (-timedelta(minutes=10), MAX_CLOCK_SKEW - timedelta(seconds=30)):
        client_id, _, _, primary, _ = register_agent(make_tenant)
        dated = _now() + offset
        on_event(warning(primary) | {"time": dated.strftime("%Y-%m-%dT%H:%M:%SZ")})
        [row] = _events_of(client_id)
        assert row.detected_at == dated
