import pytest

from components.agent_identity import (
    AgentStatus,
    InstanceMode,
    InvalidLogicalAgentIdError,
    InvalidRegistrationError,
    KnownAgent,
    Registration,
    RegistrationAction,
    agent_id_for,
    normalize_logical_agent_id,
    normalize_mode,
    plan_registration,
)
from components.errors import ValidationError


def reg(instance_id="i-new", logical="web-1", **kw) -> Registration:
    fields = dict(
        client_id="client-1",
        logical_agent_id=logical,
        instance_id=instance_id,
        instance_type="m5.large",
        region="us-east-1",
        az="us-east-1a",
    )
    fields.update(kw)
    return Registration(**fields)


AGENT_ID = agent_id_for("client-1", "web-1")


def test_agent_id_is_deterministic_and_shaped():
    assert agent_id_for("client-1", "web-1") == AGENT_ID
    assert AGENT_ID.startswith("ag-") and len(AGENT_ID) == 27
    assert all(c in "0123456789abcdef" for c in AGENT_ID[3:])


def test_agent_id_separates_client_and_logical_id():
    # GIVEN pairs whose plain concatenation is the same  THEN they get different ids
    assert agent_id_for("ab", "c") != agent_id_for("a", "bc")
    assert agent_id_for("client-1", "web-1") != agent_id_for("client-2", "web-1")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" web-1 ", "web-1"),
        ("i-0abc123", "i-0abc123"),
        ("a/b:c@d.e_f-g", "a/b:c@d.e_f-g"),
        ("x" * 128, "x" * 128),
    ],
)
def test_normalize_logical_agent_id_accepts(raw, expected):
    assert normalize_logical_agent_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "x" * 129, "web 1", "web#1", "wéb", None, 7])
def test_normalize_logical_agent_id_rejects(raw):
    with pytest.raises(InvalidLogicalAgentIdError) as info:
        normalize_logical_agent_id(raw)
    assert info.value.field == "logical_agent_id"
    assert isinstance(info.value, ValidationError)


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        (None, InstanceMode.UNKNOWN),
        ("", InstanceMode.UNKNOWN),
        ("reserved", InstanceMode.UNKNOWN),
        ("unknown", InstanceMode.UNKNOWN),
        ("spot", InstanceMode.SPOT),
        (" SPOT ", InstanceMode.SPOT),
        ("ondemand", InstanceMode.ONDEMAND),
        ("On-Demand", InstanceMode.ONDEMAND),
        ("normal", InstanceMode.ONDEMAND),
        (InstanceMode.SPOT, InstanceMode.SPOT),
    ],
)
def test_normalize_mode(raw, mode):
    assert normalize_mode(raw) is mode


def test_first_registration_creates_with_default_config():
    plan = plan_registration(None, reg())
    assert plan.action is RegistrationAction.CREATED
    assert plan.agent_id == AGENT_ID
    assert (plan.previous_instance_id, plan.reset_config, plan.instance_count, plan.status) == (
        None, True, 1, AgentStatus.ONLINE
    )


def test_created_id_uses_normalized_logical_id():
    assert plan_registration(None, reg(logical="  web-1 ")).agent_id == AGENT_ID


def test_same_instance_refreshes():
    known = KnownAgent(AGENT_ID, AgentStatus.OFFLINE, "i-new", instance_count=2)
    plan = plan_registration(known, reg())
    assert plan.action is RegistrationAction.REFRESHED
    assert (plan.previous_instance_id, plan.reset_config, plan.instance_count, plan.status) == (
        None, False, 2, AgentStatus.ONLINE
    )


def test_new_instance_migrates_and_counts():
    known = KnownAgent(AGENT_ID, AgentStatus.ONLINE, "i-old", instance_count=2)
    plan = plan_registration(known, reg())
    assert plan.action is RegistrationAction.MIGRATED
    assert (plan.agent_id, plan.previous_instance_id, plan.reset_config, plan.instance_count) == (
        AGENT_ID, "i-old", False, 3
    )


@pytest.mark.parametrize("status", [AgentStatus.DELETED, AgentStatus.TERMINATED])
def test_deleted_agent_is_revived_under_the_same_id(status):
    # GIVEN a deleted agent (stored under a legacy-style id) registers again from a new instance
    known = KnownAgent("legacy-uuid-1", status, "i-old", instance_count=1)
    plan = plan_registration(known, reg())
    # THEN it is revived, not duplicated, and its flags are reset
    assert plan.action is RegistrationAction.REVIVED
    assert plan.agent_id == "legacy-uuid-1"
    assert (plan.previous_instance_id, plan.reset_config, plan.instance_count, plan.status) == (
        "i-old", True, 2, AgentStatus.ONLINE
    )


def test_revived_on_same_instance_has_nothing_to_deactivate():
    plan = plan_registration(KnownAgent(AGENT_ID, AgentStatus.DELETED, "i-new"), reg())
    assert plan.action is RegistrationAction.REVIVED and plan.previous_instance_id is None
    assert plan.instance_count == 1


def test_disabled_agent_stays_disabled():
    plan = plan_registration(KnownAgent(AGENT_ID, AgentStatus.DISABLED, "i-old"), reg())
    assert plan.action is RegistrationAction.MIGRATED
    assert plan.status is AgentStatus.DISABLED


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"instance_id": ""}, "instance_id"),
        ({"az": "us-west-2a"}, "az"),
        ({"az": "nowhere"}, "az"),
        ({"instance_type": "large"}, "instance_type"),
        ({"client_id": " "}, "client_id"),
    ],
)
def test_invalid_registration_is_rejected(overrides, field):
    with pytest.raises(InvalidRegistrationError) as info:
        plan_registration(None, reg(**overrides))
    assert info.value.field == field


def test_local_zone_registration_is_accepted():
    plan = plan_registration(None, reg(region="us-west-2", az="us-west-2-lax-1a"))
    assert plan.action is RegistrationAction.CREATED
