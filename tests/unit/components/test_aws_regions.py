"""components.aws_regions: AZ names are validated against their region."""

import pytest

from components.aws_regions import is_known_region, is_zone_of_region


@pytest.mark.parametrize("az,region", [("us-east-1a", "us-east-1"), ("eu-west-1c", "eu-west-1"),
                                       ("ap-southeast-2b", "ap-southeast-2"), ("us-gov-west-1a", "us-gov-west-1")])
def test_standard_zones_belong_to_their_region(az, region):
    assert is_zone_of_region(az, region)


@pytest.mark.parametrize("az,region", [
    ("us-east-1-x001-1a", "us-east-1"),  # the poisoning report's fake zone
    ("us-west-2-lax-1a", "us-west-2"),  # a local zone: the product does not launch there
    ("us-east-1a", "eu-west-1"),  # another region's zone
    ("us-east-1", "us-east-1"), ("us-east-1ab", "us-east-1"), ("us-east-11a", "us-east-1"),
    ("aa-x-1a", "aa-x-1"),  # unknown region
    ("us-east-1A", "us-east-1"), (None, "us-east-1"), ("us-east-1a", None),
])
def test_other_names_are_refused(az, region):
    assert not is_zone_of_region(az, region)


def test_known_regions():
    assert is_known_region("eu-west-1") and not is_known_region("eu-west-9") and not is_known_region(3)
