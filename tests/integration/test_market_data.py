"""Market data from the server itself (issue #11): the spot-prices job, agent reports that no longer
overwrite its prices, and the placement-score job with its rate limit.

The moto is shared by the session: every test prices its own never-seen instance type
(``random_instance_type``) and passes its own targets, so no other test's pools are touched. AWS is
stubbed at the adapter boundary (a fake ``fetch`` / ``PlacementScores``) where moto's data is unusable
(its spot price is 0.00001 $/h at 2006-01-02, and it does not implement GetSpotPlacementScores); the
call shapes are proven through moto and botocore's Stubber.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from botocore.stub import Stubber

from chalicelib.aws import spot_market
from chalicelib.aws.spot_market import (
    LINUX_PRODUCTS,
    AwsPlacementScores,
    PlacementLimitReached,
    SpotPriceRecord,
    StaticPlacementScores,
    TransientAwsError,
)
from chalicelib.jobs import placement_scores as placement_job
from chalicelib.jobs import spot_prices as price_job
from chalicelib.repositories import market
from chalicelib.repositories import pools as pool_repo
from chalicelib.settings import get_settings
from chalicelib.tables.pools import PricePointTable
from components.capacity import CapacityObservation, ObservationKind
from tests.api._support import pricing_body, random_instance_type
from tests.conftest import invoke_schedule, registration

REGION = "eu-west-1"


def now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class FakeMarket:
    """DescribeSpotPriceHistory at the adapter boundary: fixed records, every call remembered."""

    def __init__(self, records: list[SpotPriceRecord]):
        self.records, self.calls = records, []

    def __call__(self, region: str, instance_types: list[str], start: datetime) -> list[SpotPriceRecord]:
        self.calls.append((region, tuple(instance_types), start))
        return [r for r in self.records if r.instance_type in instance_types]


def rec(itype: str, az: str, price: str, ts: datetime, product: str = LINUX_PRODUCTS[0]) -> SpotPriceRecord:
    return SpotPriceRecord(itype, az, product, Decimal(price), ts)


def stored_points(pool_id: str):
    return sorted(PricePointTable.query(pool_id), key=lambda p: p.ts)


# --- the spot-prices job -------------------------------------------------------------------------


def test_job_stores_prices_per_pool_as_source_of_truth(aws_tables):
    """GIVEN AWS price changes of a type in two AZs WHEN the job runs THEN each pool gets its points at
    AWS's timestamps and its latest price = AWS's newest change, marked as the server's, as of the run."""
    itype, now = random_instance_type(), now_s()
    fake = FakeMarket([rec(itype, "eu-west-1a", "0.0500", now - timedelta(hours=3)),
                       rec(itype, "eu-west-1a", "0.0610", now - timedelta(minutes=20)),
                       rec(itype, "eu-west-1b", "0.0420", now - timedelta(hours=5))])
    result = price_job.run(now, fetch=fake, targets=[(REGION, itype)])
    assert result["pools"] == 2 and result["points_written"] == 3 and result["failed"] == []
    assert fake.calls == [(REGION, (itype,), now - timedelta(hours=1))]  # first run: the last hour
    latest = pool_repo.latest_prices([f"{itype}.eu-west-1a", f"{itype}.eu-west-1b"])
    a, b = latest[f"{itype}.eu-west-1a"], latest[f"{itype}.eu-west-1b"]
    assert (a.price, a.at, a.price_source, a.server_priced_at) == (Decimal("0.0610"), now, "aws", now)
    assert b.price == Decimal("0.0420") and b.at == now  # unchanged for 5 h: still today's price
    assert [(p.ts, p.price, p.source_agent_id) for p in stored_points(f"{itype}.eu-west-1a")] == [
        (now - timedelta(hours=3), Decimal("0.0500"), "aws"), (now - timedelta(minutes=20), Decimal("0.0610"), "aws")]
    assert [p.pool_id for p in pool_repo.pools_of_type(REGION, itype)] == [f"{itype}.eu-west-1a", f"{itype}.eu-west-1b"]


def test_rerun_is_idempotent_and_starts_where_the_last_run_ended(aws_tables):
    """GIVEN a run WHEN the job runs again and AWS answers the same points (plus the one in effect at
    the start) THEN nothing new is written, the next start is the last run's time, and one new change
    is one new point."""
    itype, now = random_instance_type(), now_s()
    t1 = now - timedelta(minutes=30)
    fake = FakeMarket([rec(itype, "eu-west-1a", "0.0500", t1), rec(itype, "eu-west-1b", "0.0400", t1)])
    price_job.run(now, fetch=fake, targets=[(REGION, itype)])
    later = now + timedelta(minutes=10)
    again = price_job.run(later, fetch=fake, targets=[(REGION, itype)])
    assert again["points_written"] == 0 and again["duplicates"] == 2 and again["pools"] == 2
    assert fake.calls[1][2] == now  # StartTime = the last successful fetch
    assert len(stored_points(f"{itype}.eu-west-1a")) == 1
    assert pool_repo.latest_prices([f"{itype}.eu-west-1a"])[f"{itype}.eu-west-1a"].at == later

    fake.records.append(rec(itype, "eu-west-1a", "0.0550", later - timedelta(minutes=2)))
    third = price_job.run(later + timedelta(minutes=10), fetch=fake, targets=[(REGION, itype)])
    assert third["points_written"] == 1
    assert [p.price for p in stored_points(f"{itype}.eu-west-1a")] == [Decimal("0.0500"), Decimal("0.0550")]
    assert pool_repo.latest_prices([f"{itype}.eu-west-1a"])[f"{itype}.eu-west-1a"].price == Decimal("0.0550")


def test_points_keep_the_valves_plausibility_and_one_product(aws_tables):
    """Implausible prices, ancient timestamps and other types are dropped; where AWS answers both Linux
    labels for an AZ, one (the VPC one) is used, so a pool gets one point per AWS timestamp."""
    itype, now = random_instance_type(), now_s()
    ts = now - timedelta(minutes=5)
    records = [rec(itype, "eu-west-1a", "0.0500", ts), rec(itype, "eu-west-1a", "0.0500", ts, LINUX_PRODUCTS[1]),
               rec(itype, "eu-west-1b", "250", ts),  # above the valve's 100 $/h
               rec(itype, "eu-west-1c", "0.00001", ts),  # below 0.001 $/h (moto's price)
               rec(itype, "eu-west-1c", "0.0300", datetime(2006, 1, 2, tzinfo=UTC)),  # moto's timestamp
               SpotPriceRecord(itype, "eu-west-1c", LINUX_PRODUCTS[0], None, ts),  # not a number
               rec("other.large", "eu-west-1a", "0.0100", ts)]
    points, dropped = price_job.points_from(records, itype, now)
    assert [(p.pool_id, p.price) for p in points] == [(f"{itype}.eu-west-1a", Decimal("0.0500"))]
    assert dropped == 4


def test_a_failing_target_does_not_stop_the_others_and_is_retried_from_the_same_start(aws_tables):
    itype_bad, itype_ok, now = random_instance_type(), random_instance_type(), now_s()
    ok = FakeMarket([rec(itype_ok, "eu-west-1a", "0.0500", now - timedelta(minutes=1))])

    def fetch(region, instance_types, start):
        if instance_types == [itype_bad]:
            raise TransientAwsError("DescribeSpotPriceHistory: RequestLimitExceeded")
        return ok(region, instance_types, start)

    result = price_job.run(now, fetch=fetch, targets=[(REGION, itype_bad), (REGION, itype_ok)])
    assert result["failed"] == [f"{REGION}#{itype_bad}"] and result["pools"] == 1
    state = market.states(market.PRICES, [(REGION, itype_bad)])[(REGION, itype_bad)]
    assert state.last_at is None and "RequestLimitExceeded" in state.last_error
    assert price_job.start_time(state, now + timedelta(minutes=10)) == now + timedelta(minutes=10) - timedelta(hours=1)


def test_job_through_moto_proves_the_call_shape(aws_tables):
    """The real adapter against moto: the call succeeds and moto's prices (0.00001 $/h, 2006) are all
    refused by the data valve, so nothing is stored; the run is recorded as a fetch."""
    now = now_s()
    result = price_job.run(now, targets=[("ap-southeast-2", "m5.large")])
    assert result["failed"] == [] and result["pools"] == 0 and result["dropped"] >= 1
    assert market.states(market.PRICES, [("ap-southeast-2", "m5.large")])[("ap-southeast-2", "m5.large")].last_at == now


def test_adapter_request_is_paginated_with_types_products_and_start(monkeypatch):
    """The exact DescribeSpotPriceHistory request, followed over two pages (botocore Stubber)."""
    import boto3

    client = boto3.client("ec2", region_name="sa-east-1")
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    expected = {"InstanceTypes": ["m5.large"], "ProductDescriptions": list(LINUX_PRODUCTS), "StartTime": start}
    item = {"InstanceType": "m5.large", "ProductDescription": LINUX_PRODUCTS[0], "SpotPrice": "0.031",
            "AvailabilityZone": "sa-east-1a", "Timestamp": start}
    with Stubber(client) as stub:
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [item], "NextToken": "p2"}, expected)
        stub.add_response("describe_spot_price_history",
                          {"SpotPriceHistory": [dict(item, AvailabilityZone="sa-east-1b", SpotPrice="0.029")]},
                          dict(expected, NextToken="p2"))
        monkeypatch.setattr(spot_market, "_client", lambda service, region: client)
        records = spot_market.spot_price_history("sa-east-1", ["m5.large"], start)
    assert [(r.az, r.price, r.ts) for r in records] == [("sa-east-1a", Decimal("0.031"), start),
                                                         ("sa-east-1b", Decimal("0.029"), start)]


def test_schedule_is_wired_and_local_mode_runs_it(api):
    from localmode.invoke import scheduled_handlers
    from localmode.schedules import period_seconds

    handlers = scheduled_handlers()
    assert period_seconds(handlers["spot-prices"]) == 600 and period_seconds(handlers["placement-scores"]) == 3600
    assert "targets" in invoke_schedule(api, "spot-prices")  # the handler runs (moto's data: nothing stored)


# --- agent reports against the server's prices ------------------------------------------------------


@pytest.fixture
def typed_agent(make_tenant):
    itype = random_instance_type()
    _, caller = make_tenant()
    reg = registration(instance_type=itype)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    return itype, caller, reply["agent_id"], reg["instance_id"]


def report(caller, agent_id, body):
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", body)
    assert status == 200, reply
    return reply


def test_agent_report_does_not_overwrite_the_servers_price(typed_agent):
    """GIVEN a server price WHEN an agent reports a different one THEN 200 as before, the pool's latest
    price is still the server's, the agent's point is counted (not stored), and its on-demand price is
    not taken (AWS's list price is the one used); the raw report is kept."""
    itype, caller, agent_id, instance_id = typed_agent
    now, pool = now_s(), f"{itype}.eu-west-1a"
    price_job.run(now, fetch=FakeMarket([rec(itype, "eu-west-1a", "0.0610", now - timedelta(hours=2))]),
                  targets=[(REGION, itype)])
    reply = report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.0900, "eu-west-1b": 0.0450},
                                                  on_demand=0.107, collected_at=now + timedelta(seconds=1)))
    assert reply["success"] is True and reply["server_priced"] == 1
    assert reply["pools"] == 1 and reply["points_written"] == 1  # eu-west-1b: not covered by the job
    latest = pool_repo.latest_prices([pool, f"{itype}.eu-west-1b"])
    assert latest[pool].price == Decimal("0.0610") and latest[pool].price_source == "aws"
    assert latest[pool].ondemand_price is None
    reporter = latest[f"{itype}.eu-west-1b"].seen_by(raw_reports(agent_id)[0].client_id)
    assert (reporter.price, reporter.price_source) == (Decimal("0.0450"), "agent")
    assert latest[f"{itype}.eu-west-1b"].price is None  # the shared price: AWS's only
    assert [p.source_agent_id for p in stored_points(pool)] == ["aws"]


def test_agent_prices_count_again_once_the_servers_price_is_stale(typed_agent):
    """Legacy behaviour is kept where the job does not (or no longer) cover a pool: after
    SERVER_PRICE_FRESH_S without a confirming run, an agent's report sets the price again."""
    itype, caller, agent_id, instance_id = typed_agent
    now, pool = now_s(), f"{itype}.eu-west-1a"
    stale = now - timedelta(seconds=get_settings().server_price_fresh_s + 60)
    price_job.run(stale, fetch=FakeMarket([rec(itype, "eu-west-1a", "0.0610", stale - timedelta(hours=1))]),
                  targets=[(REGION, itype)])
    reply = report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.0900}, collected_at=now))
    assert reply["server_priced"] == 0 and reply["pools"] == 1
    latest = pool_repo.latest_prices([pool])[pool].seen_by(raw_reports(agent_id)[0].client_id)
    assert (latest.price, latest.price_source) == (Decimal("0.0900"), "agent")


def test_a_report_removes_the_entries_of_clients_that_stopped_reporting_the_pool(typed_agent):
    """GIVEN a pool whose item holds the entries of 25 other clients not refreshed for 15 days (gone, or moved on)
    and one refreshed yesterday WHEN an agent reports the pool THEN its own entry is written and the stale ones are
    removed, at most ``PRUNED_PER_WRITE`` a write (the next reports take the rest), the recent one kept: the item
    never grows with every client that ever reported there towards DynamoDB's 400 KB."""
    from chalicelib.tables.pools import PoolTable

    itype, caller, agent_id, instance_id = typed_agent
    now, pool = now_s(), f"{itype}.eu-west-1a"
    report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.0900},
                                          collected_at=now - timedelta(hours=4)))
    old = {"price": "0.05", "at": (now - timedelta(days=15)).isoformat(), "recent": []}
    recent = {"price": "0.05", "at": (now - timedelta(days=1)).isoformat(), "recent": []}
    for k in range(25):
        PoolTable(pool).update(actions=[PoolTable.agent_prices[f"cl-gone-{k:02d}"].set(old)])
    PoolTable(pool).update(actions=[PoolTable.agent_prices["cl-recent"].set(recent)])
    report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.0890},
                                          collected_at=now - timedelta(hours=2)))
    entries = set(PoolTable.get(pool, consistent_read=True).agent_prices.as_dict())
    assert {"cl-recent", raw_reports(agent_id)[0].client_id} <= entries
    assert len([c for c in entries if c.startswith("cl-gone-")]) == 25 - pool_repo.PRUNED_PER_WRITE
    report(caller, agent_id, pricing_body(instance_id, itype, {"eu-west-1a": 0.0880},
                                          collected_at=now))
    assert not [c for c in PoolTable.get(pool, consistent_read=True).agent_prices.as_dict() if c.startswith("cl-gone")]


def raw_reports(agent_id: str) -> list:
    from chalicelib.tables.pools import PricingReportTable

    return list(PricingReportTable.query(agent_id))


def test_a_report_the_server_prices_writes_no_pool_and_one_raw_report_an_hour(typed_agent, monkeypatch):
    """Issue #14 (cost): GIVEN the job prices all three pools WHEN an agent reports them twice in one clock hour
    THEN the same legacy answer (server_priced 3, nothing stored), no pool item is written (``updated_at`` as the
    job left it), the agent's ``last_pricing_at`` moves, and the raw report is written once for the hour. The
    handlers' clock is held at the job's time: with the wall clock, an hour that turned between the test's and
    the handler's reading of it made the expected count wrong."""
    from chalicelib import clock
    from chalicelib.tables.agents import AgentTable
    from chalicelib.tables.pools import PoolTable

    itype, caller, agent_id, instance_id = typed_agent
    now = now_s()
    monkeypatch.setattr(clock, "now", lambda: now)
    azs = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    price_job.run(now, fetch=FakeMarket([rec(itype, az, "0.0610", now - timedelta(hours=1)) for az in azs]),
                  targets=[(REGION, itype)])
    before = {az: PoolTable.get(f"{itype}.{az}").updated_at for az in azs}
    for k in range(2):
        reply = report(caller, agent_id, pricing_body(instance_id, itype, dict.fromkeys(azs, 0.09),
                                                      collected_at=now + timedelta(seconds=1 + k)))
        assert (reply["server_priced"], reply["pools"], reply["points_written"]) == (3, 0, 0)
    assert {az: PoolTable.get(f"{itype}.{az}").updated_at for az in azs} == before
    assert len(raw_reports(agent_id)) == 1
    [agent] = [a for a in AgentTable.scan(AgentTable.agent_id == agent_id)]
    assert agent.last_pricing_at is not None


def test_a_resent_report_writes_no_pool_and_a_storing_one_keeps_its_raw_report(typed_agent):
    """GIVEN pools the job does not price WHEN a report stores agent prices THEN its raw report is kept
    (the audit of agent prices); WHEN the same report is sent again (a retry: exact duplicates) THEN
    nothing is stored and no pool item is rewritten."""
    from chalicelib.tables.pools import PoolTable

    itype, caller, agent_id, instance_id = typed_agent
    body = pricing_body(instance_id, itype, {"eu-west-1a": 0.05, "eu-west-1b": 0.06}, collected_at=now_s())
    first = report(caller, agent_id, body)
    assert first["pools"] == 2 and first["points_written"] == 2
    assert [r.pools_stored for r in raw_reports(agent_id)] == [2]
    written = {az: PoolTable.get(f"{itype}.{az}").updated_at for az in ("eu-west-1a", "eu-west-1b")}
    again = report(caller, agent_id, body)
    assert again["duplicates"] == 2 and again["points_written"] == 0
    assert {az: PoolTable.get(f"{itype}.{az}").updated_at for az in written} == written


# --- placement scores --------------------------------------------------------------------------------


@pytest.fixture
def observations(monkeypatch):
    """The observations store (another branch) replaced by a recorder of ``record`` calls."""
    recorded: list[tuple[CapacityObservation, str]] = []
    fake = types.ModuleType("chalicelib.repositories.observations")

    def record(obs, *, event_id, client_id=None, agent_id=None, instance_id=None):
        recorded.append((obs, event_id))

    fake.record = record
    monkeypatch.setitem(sys.modules, "chalicelib.repositories.observations", fake)
    return recorded


def test_placement_job_records_one_observation_per_az(aws_tables, observations):
    itype, now = random_instance_type(), now_s()
    source = StaticPlacementScores({f"{itype}.eu-west-1a": 7, f"{itype}.eu-west-1b": 2,
                                    f"{itype}.us-east-1a": 9, "other.large.eu-west-1a": 5})
    result = placement_job.run(now, source=source, targets=[(REGION, itype)])
    assert result["asked"] == [f"{REGION}#{itype}"] and result["observations"] == 2
    assert [(o.pool_id, o.kind, o.value, o.at, o.source) for o, _ in observations] == [
        (f"{itype}.eu-west-1a", ObservationKind.PLACEMENT_SCORE, 7.0, now.timestamp(), "placement-scores"),
        (f"{itype}.eu-west-1b", ObservationKind.PLACEMENT_SCORE, 2.0, now.timestamp(), "placement-scores")]
    assert len({event_id for _, event_id in observations}) == 2
    assert all(event_id.startswith(f"placement-scores:{REGION}#{itype}:") for _, event_id in observations)


def test_placement_rate_limit_second_run_within_the_window_queries_nothing(aws_tables, observations):
    itype, now = random_instance_type(), now_s()
    source = StaticPlacementScores({f"{itype}.eu-west-1a": 7})
    placement_job.run(now, source=source, targets=[(REGION, itype)])
    second = placement_job.run(now + timedelta(minutes=59), source=source, targets=[(REGION, itype)])
    assert second["asked"] == [] and second["skipped"] == 1 and len(source.calls) == 1
    interval = timedelta(seconds=get_settings().placement_interval_s)
    assert placement_job.run(now + interval - timedelta(seconds=1), source=source,
                             targets=[(REGION, itype)])["asked"] == []
    assert placement_job.run(now + interval, source=source, targets=[(REGION, itype)])["asked"] == [f"{REGION}#{itype}"]
    assert len(source.calls) == 2 and len(observations) == 2


def test_placement_cap_per_run_takes_the_longest_unasked_first(aws_tables, observations, monkeypatch):
    capped = dataclasses.replace(get_settings(), placement_max_per_run=2)
    monkeypatch.setattr(placement_job, "get_settings", lambda: capped)
    targets = [(REGION, random_instance_type()) for _ in range(3)]
    source, now = StaticPlacementScores({}), now_s()
    first = placement_job.run(now, source=source, targets=targets)
    assert len(first["asked"]) == 2
    second = placement_job.run(now + timedelta(hours=1), source=source, targets=targets)
    left = [f"{r}#{t}" for r, t in targets if f"{r}#{t}" not in first["asked"]]
    assert second["asked"] == left  # the one the cap left out; the others wait for their interval


def test_placement_limit_reached_stops_the_run_and_rests_the_configuration(aws_tables, observations):
    a, b, now = random_instance_type(), random_instance_type(), now_s()
    asked = []

    class Limited:
        def scores(self, region, instance_type):
            asked.append(instance_type)
            raise PlacementLimitReached("GetSpotPlacementScores: MaxConfigLimitExceeded")

    result = placement_job.run(now, source=Limited(), targets=sorted([(REGION, a), (REGION, b)]))
    assert result["limited"] is True and len(asked) == 1 and result["observations"] == 0
    state = market.states(market.PLACEMENT, [(REGION, asked[0])])[(REGION, asked[0])]
    assert state.next_at == now + timedelta(hours=24) and "MaxConfigLimitExceeded" in state.last_error


def test_placement_adapter_failure_degrades_without_failing_the_job(aws_tables, observations):
    """A failing (region, type) is retried after an hour and the others go on; moto, which does not
    implement GetSpotPlacementScores, gives no scores rather than an error."""
    bad, good, now = random_instance_type(), random_instance_type(), now_s()

    class Flaky:
        def scores(self, region, instance_type):
            if instance_type == bad:
                raise TransientAwsError("GetSpotPlacementScores: RequestLimitExceeded")
            return {"eu-west-1c": 4}

    result = placement_job.run(now, source=Flaky(), targets=[(REGION, bad), (REGION, good)])
    assert result["failed"] == [f"{REGION}#{bad}"] and result["observations"] == 1
    assert market.states(market.PLACEMENT, [(REGION, bad)])[(REGION, bad)].next_at == now + timedelta(hours=1)

    assert AwsPlacementScores().scores("eu-west-1", "m5.large") == {}  # moto: not implemented
    moto_run = placement_job.run(now, source=AwsPlacementScores(), targets=[("eu-west-1", random_instance_type())])
    assert moto_run["failed"] == [] and moto_run["observations"] == 0 and len(moto_run["asked"]) == 1


def test_placement_without_the_observations_store_records_nothing_and_does_not_fail(aws_tables, monkeypatch):
    monkeypatch.setitem(sys.modules, "chalicelib.repositories.observations", None)  # import fails
    itype, now = random_instance_type(), now_s()
    result = placement_job.run(now, source=StaticPlacementScores({f"{itype}.eu-west-1a": 7}),
                               targets=[(REGION, itype)])
    assert result["asked"] == [f"{REGION}#{itype}"] and result["observations"] == 0 and result["failed"] == []


def test_aws_placement_adapter_request_shape_and_zone_id_mapping(monkeypatch):
    """The exact GetSpotPlacementScores request; AvailabilityZoneId → this account's zone name through
    DescribeAvailabilityZones; MaxConfigLimitExceeded → PlacementLimitReached."""
    import boto3

    client = boto3.client("ec2", region_name="eu-west-1")
    monkeypatch.setattr(spot_market, "_client", lambda service, region: client)
    spot_market._zone_names.cache_clear()
    request = {"InstanceTypes": ["m5.large"], "TargetCapacity": 1, "SingleAvailabilityZone": True,
               "RegionNames": ["eu-west-1"]}
    with Stubber(client) as stub:
        stub.add_response("get_spot_placement_scores", {"SpotPlacementScores": [
            {"Region": "eu-west-1", "AvailabilityZoneId": "euw1-az3", "Score": 8},
            {"Region": "eu-west-1", "AvailabilityZoneId": "euw1-az1", "Score": 3},
            {"Region": "eu-west-1", "AvailabilityZoneId": "euw1-az9", "Score": 5}]}, request)
        stub.add_response("describe_availability_zones", {"AvailabilityZones": [
            {"ZoneName": "eu-west-1a", "ZoneId": "euw1-az3"}, {"ZoneName": "eu-west-1b", "ZoneId": "euw1-az1"}]},
            {"AllAvailabilityZones": True})
        stub.add_response("describe_availability_zones", {"AvailabilityZones": [
            {"ZoneName": "eu-west-1a", "ZoneId": "euw1-az3"}, {"ZoneName": "eu-west-1b", "ZoneId": "euw1-az1"}]},
            {"AllAvailabilityZones": True})  # an unknown id asks once more
        assert AwsPlacementScores().scores("eu-west-1", "m5.large") == {"eu-west-1a": 8, "eu-west-1b": 3}
        stub.add_client_error("get_spot_placement_scores", "MaxConfigLimitExceeded", expected_params=request)
        with pytest.raises(PlacementLimitReached):
            AwsPlacementScores().scores("eu-west-1", "m5.large")
        stub.add_client_error("get_spot_placement_scores", "UnsupportedOperation", expected_params=request)
        assert AwsPlacementScores().scores("eu-west-1", "m5.large") == {}
    spot_market._zone_names.cache_clear()
