"""The default price source (EC2 spot price history + on-demand), and loading a replay source."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import boto3
from botocore.stub import ANY, Stubber

from spot_agent.pricing import Boto3PriceSource, load_price_source


def test_moto_ec2_gives_the_latest_price_per_az_for_the_type():
    # GIVEN moto's EC2 (boto3 as the agent builds it, no injected client)
    source = Boto3PriceSource(ondemand_price=0.096)
    pools, ondemand = source("m5.large", "us-east-1")
    # THEN one pool per offering AZ, named <type>.<az>, with a float price
    zones = {o["Location"] for o in boto3.client("ec2", region_name="us-east-1").describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": ["m5.large"]}]
    )["InstanceTypeOfferings"]}
    assert {p["az"] for p in pools} == zones and len(pools) == len(zones) >= 2
    assert all(p["pool_id"] == f"m5.large.{p['az']}" and p["instance_type"] == "m5.large" for p in pools)
    assert all(isinstance(p["price"], float) and p["price"] > 0 for p in pools)
    assert ondemand == 0.096


def _history(az, price, ts, product):
    return {"AvailabilityZone": az, "InstanceType": "c5.xlarge", "ProductDescription": product,
            "SpotPrice": price, "Timestamp": ts}


def test_latest_entry_wins_and_the_classic_product_is_the_fallback():
    ec2 = boto3.client("ec2", region_name="eu-west-1")
    stub = Stubber(ec2)
    vpc, classic = "Linux/UNIX (Amazon VPC)", "Linux/UNIX"
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": []},
                      {"InstanceTypes": ["c5.xlarge"], "ProductDescriptions": [vpc], "StartTime": ANY})
    early, late = datetime(2030, 1, 1, tzinfo=timezone.utc), datetime(2030, 1, 1, 1, tzinfo=timezone.utc)
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
        _history("eu-west-1a", "0.0700", early, classic), _history("eu-west-1a", "0.0650", late, classic),
        _history("eu-west-1b", "0.0800", early, classic)]},
        {"InstanceTypes": ["c5.xlarge"], "ProductDescriptions": [classic], "StartTime": ANY})
    with stub:
        pools = Boto3PriceSource(ec2=ec2, ondemand_price=0.2).spot_pools("c5.xlarge", "eu-west-1")
    assert pools == [
        {"pool_id": "c5.xlarge.eu-west-1a", "instance_type": "c5.xlarge", "az": "eu-west-1a", "price": 0.065},
        {"pool_id": "c5.xlarge.eu-west-1b", "instance_type": "c5.xlarge", "az": "eu-west-1b", "price": 0.08}]


def test_on_demand_from_the_pricing_api_is_cached_and_a_failure_is_none():
    pricing = boto3.client("pricing", region_name="us-east-1")
    stub = Stubber(pricing)
    product = {"terms": {"OnDemand": {"T1": {"priceDimensions": {"D1": {"pricePerUnit": {"USD": "0.1920000000"}}}}}}}
    stub.add_response("get_products", {"PriceList": [json.dumps(product)]},
                      {"ServiceCode": "AmazonEC2", "MaxResults": 10, "Filters": ANY})
    stub.add_client_error("get_products", "AccessDeniedException")
    source = Boto3PriceSource(pricing=pricing)
    with stub:
        assert source.ondemand("m5.xlarge", "eu-west-1") == 0.192
        assert source.ondemand("m5.xlarge", "eu-west-1") == 0.192  # cached: no second call
        assert source.ondemand("m5.2xlarge", "eu-west-1") is None  # denied: best-effort None
        assert source.ondemand("m5.2xlarge", "eu-west-1") is None  # failure cached too
    stub.assert_no_pending_responses()


def test_a_replay_price_source_is_loaded_from_module_colon_callable(tmp_path, monkeypatch):
    (tmp_path / "replay_prices.py").write_text(
        "def prices(instance_type, region):\n"
        "    return [{'pool_id': instance_type + '.' + region + 'a', 'instance_type': instance_type,"
        " 'az': region + 'a', 'price': 0.01}], 0.05\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        source = load_price_source("replay_prices:prices")
        assert source("m5.large", "us-east-1") == ([{"pool_id": "m5.large.us-east-1a", "instance_type": "m5.large",
                                                     "az": "us-east-1a", "price": 0.01}], 0.05)
    finally:
        sys.modules.pop("replay_prices", None)
