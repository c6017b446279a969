"""The sentinel's EventBridge patterns: one per detail type the parser understands, nothing else."""

from components.sentinel import DETAIL_TYPES, LOST_STATES
from components.sentinel.rules import SENTINEL_RULES


def test_each_detail_type_the_sentinel_parses_has_exactly_one_rule():
    detail_types = [t for pattern in SENTINEL_RULES.values() for t in pattern["detail-type"]]
    assert sorted(detail_types) == sorted(DETAIL_TYPES)
    assert all(pattern["source"] == ["aws.ec2"] for pattern in SENTINEL_RULES.values())


def test_state_changes_are_those_that_bring_an_instance_up_or_take_it_away():
    assert set(SENTINEL_RULES["sentinel-state-change"]["detail"]["state"]) == LOST_STATES | {"running"}
