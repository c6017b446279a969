"""Regional on-demand list prices: the spot-prices job asks the Price List API once a day per (region, type) in use
and the decisions, the savings baseline and the client's views read that region's price; without one, the
catalogue's us-east-1 price serves.

AWS is stubbed at the adapter boundary (``StaticOnDemandPrices``, a failing fake) and the request shape is proven
with botocore's Stubber; moto does not implement the Price List API (404 "Not yet implemented"): no price.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from botocore.stub import Stubber

from chalicelib import catalogue, decisions
from chalicelib.aws import ondemand_prices
from chalicelib.aws.ec2 import TransientAwsError
from chalicelib.aws.ondemand_prices import AwsOnDemandPrices, StaticOnDemandPrices, price_of_products
from chalicelib.jobs import spot_prices as price_job
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import market
from chalicelib.tables.market import MarketFetchTable
from tests.conftest import registration

pytestmark = pytest.mark.usefixtures("aws_tables")
M5 = 0.096  # the catalogue's (us-east-1) list price of m5.large


def _forget_stored():
    for row in MarketFetchTable.scan(MarketFetchTable.kind == market.ONDEMAND):
        row.delete()
    market.forget_listed()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """No cached or stored price in (an earlier test's spot-prices run stores its rows, not due for a day), and no
    stored one out: the session's other tests price m5.large in eu-west-1 at the catalogue's list price."""
    _forget_stored()
    yield
    _forget_stored()


def _product(usd: str, unit: str = "Hrs") -> str:
    """One GetProducts item as AWS sends it: a JSON document with the on-demand term's price dimension."""
    return json.dumps({"product": {"attributes": {"instanceType": "m5.large", "regionCode": "eu-west-1"}},
                       "terms": {"OnDemand": {"T1.JRTCKXETXF": {"priceDimensions": {
                           "T1.JRTCKXETXF.6YS6EN2CT7": {"unit": unit, "pricePerUnit": {"USD": usd}}}}}}})


class Failing:
    def list_price(self, region, instance_type):
        raise TransientAwsError("GetProducts: ThrottlingException: Rate exceeded")


def test_the_answer_is_parsed_to_the_hourly_usd_price():
    assert price_of_products([_product("0.1070000000")]) == Decimal("0.107")
    assert price_of_products([_product("0.12"), _product("0.107")]) == Decimal("0.107")  # the lowest listed
    assert price_of_products([_product("0.0000000000"), _product("5", unit="Quantity"), "not json"]) is None
    assert price_of_products([]) is None


def test_the_request_names_the_type_the_region_and_linux_shared_tenancy(monkeypatch):
    """The exact GetProducts request (botocore's Stubber checks the parameters) and its answer's price."""
    import boto3

    client = boto3.client("pricing", region_name="us-east-1")
    filters = [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in (
        ("instanceType", "m5.large"), ("regionCode", "eu-west-1"), ("operatingSystem", "Linux"), ("tenancy", "Shared"),
        ("preInstalledSw", "NA"), ("capacitystatus", "Used"), ("licenseModel", "No License required"))]
    monkeypatch.setattr(ondemand_prices, "_client", lambda service, region: client)
    with Stubber(client) as stub:
        stub.add_response("get_products", {"PriceList": [_product("0.107")], "FormatVersion": "aws_v1"},
                          {"ServiceCode": "AmazonEC2", "Filters": filters, "FormatVersion": "aws_v1", "MaxResults": 20})
        assert AwsOnDemandPrices().list_price("eu-west-1", "m5.large") == Decimal("0.107")
        stub.add_client_error("get_products", "ThrottlingException", "Rate exceeded", 400)
        with pytest.raises(TransientAwsError):
            AwsOnDemandPrices().list_price("eu-west-1", "m5.large")


def test_an_endpoint_without_the_api_gives_no_price():
    """moto answers 404 "Not yet implemented", as an endpoint without the Price List API would: no price."""
    assert AwsOnDemandPrices().list_price("eu-west-1", "m5.large") is None


def test_the_job_stores_each_regions_price_once_a_day_and_the_product_reads_it():
    now = datetime.now(UTC).replace(microsecond=0)
    source = StaticOnDemandPrices({"eu-west-1": {"m5.large": 0.107}})
    targets = [("eu-west-1", "m5.large"), ("sa-east-1", "m5.large")]
    assert catalogue.ondemand_price("m5.large", "eu-west-1") == M5  # nothing stored yet: the catalogue's

    assert price_job.refresh_ondemand(targets, now, source) == {"fetched": 2, "failed": 0}
    assert price_job.refresh_ondemand(targets, now + timedelta(hours=23), source) == {"fetched": 0, "failed": 0}

    assert catalogue.ondemand_price("m5.large", "eu-west-1") == 0.107
    assert catalogue.ondemand_price("m5.large", "sa-east-1") == M5  # AWS lists none there: the catalogue's
    assert catalogue.ondemand_price("m5.large") == M5  # no region: the catalogue's
    states = market.states(market.ONDEMAND, targets)
    assert states[targets[0]].next_at == now + price_job.ONDEMAND_REFRESH
    assert price_job.refresh_ondemand(targets, now + timedelta(days=1), source)["fetched"] == 2  # a day later


def test_a_failed_fetch_keeps_the_stored_price_and_asks_again_in_an_hour():
    now = datetime.now(UTC).replace(microsecond=0)
    targets = [("ap-south-1", "m5.large")]
    price_job.refresh_ondemand(targets, now - timedelta(days=2), StaticOnDemandPrices({"ap-south-1": {"m5.large": 0.101}}))

    assert price_job.refresh_ondemand(targets, now, Failing()) == {"fetched": 0, "failed": 1}

    state = market.states(market.ONDEMAND, targets)[targets[0]]
    assert (state.price, state.next_at) == (Decimal("0.101"), now + price_job.ONDEMAND_RETRY)
    assert "Rate exceeded" in state.last_error
    assert price_job.refresh_ondemand(targets, now + timedelta(minutes=30), Failing())["failed"] == 0  # not yet due


def test_an_agents_decision_compares_spot_with_its_regions_on_demand_price(make_tenant):
    now = datetime.now(UTC)
    price_job.refresh_ondemand([("eu-west-1", "m5.large")], now, StaticOnDemandPrices({"eu-west-1": {"m5.large": 0.107}}))
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(instance_type="m5.large", region="eu-west-1",
                                                                     az="eu-west-1a"))
    assert status == 200, reply
    _, ondemand = decisions.market(agent_repo.get(client_id, reply["agent_id"]), now)
    assert ondemand == 0.107


def test_the_standby_spend_quota_prices_an_unpriced_standby_at_its_regions_list_price(monkeypatch):
    """A standby without a recorded price (an on-demand one, or one placed in an unpriced zone) counts at its
    region's list price in the $/h quota, as every other reader of the on-demand price does."""
    from types import SimpleNamespace

    from chalicelib import quotas

    price_job.refresh_ondemand([("eu-west-1", "m5.large")], datetime.now(UTC),
                               StaticOnDemandPrices({"eu-west-1": {"m5.large": 0.107}}))
    agent = SimpleNamespace(agent_id="a-1", client_id="c-1", region="eu-west-1", instance_type="m5.large")
    standby = SimpleNamespace(replica_id="r-1", status=SimpleNamespace(value="ready"), hourly_cost=None,
                              instance_type="m5.large")
    monkeypatch.setattr(quotas, "_client_agents", lambda client_id: [agent])
    monkeypatch.setattr(quotas.replica_repo, "for_agent", lambda agent_id, include_final: [standby])

    assert quotas.standby_spend("c-1") == pytest.approx(0.107)


def test_odd_answers_and_a_missing_price_file_give_no_price_and_fail_nothing(tmp_path):
    """Items whose terms are not the documented objects are skipped; a local price file that is missing or not
    JSON is a failed fetch of that (region, type), retried in an hour, never a failed run."""
    odd = [json.dumps({"terms": {"OnDemand": ["x"]}}), json.dumps({"terms": {"OnDemand": {"T": "x"}}}),
           json.dumps({"terms": {"OnDemand": {"T": {"priceDimensions": {"D": {"unit": "Hrs", "pricePerUnit": 3}}}}}}),
           json.dumps([1, 2])]
    assert price_of_products(odd) is None
    now = datetime.now(UTC).replace(microsecond=0)
    broken = tmp_path / "prices.json"
    broken.write_text("{not json")
    for path in (broken, tmp_path / "missing.json"):
        source = StaticOnDemandPrices(path=str(path))
        assert price_job.refresh_ondemand([("me-south-1", "m5.large")], now, source) == {"fetched": 0, "failed": 1}
        now += timedelta(hours=2)


def test_a_storage_failure_of_the_on_demand_part_leaves_the_spot_price_run_done(monkeypatch):
    real = market.states

    def unreachable(kind, targets):
        if kind == market.ONDEMAND:
            raise OSError("connection reset")
        return real(kind, targets)

    monkeypatch.setattr(market, "states", unreachable)
    result = price_job.run(datetime.now(UTC), fetch=lambda region, types, start: [], targets=[("eu-west-2", "m5.large")])
    assert result["failed"] == [] and result["ondemand"]["error"] == "connection reset"
