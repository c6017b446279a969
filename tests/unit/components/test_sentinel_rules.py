"""The sentinel's EventBridge patterns: one per detail type the parser understands, nothing else."""

from components.sentinel import DETAIL_TYPES, HEALTH_DETAIL_TYPE, LOST_STATES, RETIREMENT_EVENT_CODES
from components.sentinel.rules import SENTINEL_RULES


def test_each_detail_type_the_sentinel_parses_has_exactly_one_rule():
    ec2 = {name: p for name, p in SENTINEL_RULES.items() if p["source"] == ["aws.ec2"]}
    detail_types = [t for pattern in ec2.values() for t in pattern["detail-type"]]
    assert sorted(detail_types) == sorted(DETAIL_TYPES)
    assert set(SENTINEL_RULES) - set(ec2) == {"sentinel-health"}


def test_state_changes_are_those_that_bring_an_instance_up_or_take_it_away():
    assert set(SENTINEL_RULES["sentinel-state-change"]["detail"]["state"]) == LOST_STATES | {"running"}


def test_the_health_rule_is_ec2_scheduled_changes_that_take_the_instance_away():
    health = SENTINEL_RULES["sentinel-health"]
    assert health["source"] == ["aws.health"] and health["detail-type"] == [HEALTH_DETAIL_TYPE]
    assert health["detail"] == {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"],
                                "eventTypeCode": list(RETIREMENT_EVENT_CODES)}
    assert not any("REBOOT" in code for code in RETIREMENT_EVENT_CODES)
