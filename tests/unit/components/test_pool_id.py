import pytest

from components.errors import InvalidPoolIdError, ValidationError
from components.pool_id import make_pool_id, parse_pool_id, region_of_az


@pytest.mark.parametrize(
    ("instance_type", "az"),
    [
        ("m5.large", "us-east-1a"),
        ("p3.2xlarge", "eu-west-1c"),
        ("u-6tb1.metal", "us-west-2-lax-1a"),
        ("t3.micro", "ap-northeast-1d"),
    ],
)
def test_make_and_parse_round_trip(instance_type, az):
    # GIVEN a valid instance type and AZ
    # WHEN a pool id is built and parsed back
    pool_id = make_pool_id(instance_type, az)
    # THEN it has the <type>.<az> shape and parses to the same parts
    assert pool_id == f"{instance_type}.{az}"
    assert parse_pool_id(pool_id) == (instance_type, az)


@pytest.mark.parametrize(
    ("instance_type", "az", "field"),
    [
        ("M5.large", "us-east-1a", "instance_type"),
        ("m5", "us-east-1a", "instance_type"),
        ("m5.large ", "us-east-1a", "instance_type"),
        ("m5.large\n", "us-east-1a", "instance_type"),
        ("m5.large", "us-east-1a\n", "az"),
        ("m5.large", "us-east-\u0661a", "az"),
        ("m5.large", "us-east-1", "az"),
        ("m5.large", "useast1a", "az"),
        ("m5.large", "us-east-1a.x", "az"),
        ("m5.large", "", "az"),
    ],
)
def test_make_pool_id_rejects_malformed_parts(instance_type, az, field):
    # GIVEN a malformed half  WHEN building  THEN the error names the offending field
    with pytest.raises(InvalidPoolIdError) as info:
        make_pool_id(instance_type, az)
    assert info.value.field == field
    assert isinstance(info.value, ValidationError)


@pytest.mark.parametrize(
    "bad", ["", "m5large", "m5.large", "m5.large.", ".us-east-1a", "m5.large.us-east-1", None, 42]
)
def test_parse_pool_id_rejects_malformed_ids(bad):
    with pytest.raises(InvalidPoolIdError) as info:
        parse_pool_id(bad)
    assert info.value.field == "pool_id"


def test_parse_splits_on_last_dot():
    # GIVEN an instance type that itself contains a dot
    # THEN only the last dot separates the AZ
    assert parse_pool_id("c6gn.16xlarge.sa-east-1b") == ("c6gn.16xlarge", "sa-east-1b")


@pytest.mark.parametrize(
    ("az", "region"),
    [
        ("us-east-1a", "us-east-1"),
        ("eu-west-1c", "eu-west-1"),
        ("us-west-2-lax-1a", "us-west-2"),
        ("ap-southeast-2b", "ap-southeast-2"),
        ("us-gov-west-1a", "us-gov-west-1"),
    ],
)
def test_region_of_az(az, region):
    assert region_of_az(az) == region


def test_region_of_az_rejects_a_region_name():
    with pytest.raises(InvalidPoolIdError):
        region_of_az("us-east-1")
