"""Properties of agent identity: stable, collision-free ids and monotonic registration plans."""

import re
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from components.agent_identity import (
    AgentStatus,
    InvalidLogicalAgentIdError,
    KnownAgent,
    Registration,
    RegistrationAction,
    agent_id_for,
    normalize_logical_agent_id,
    plan_registration,
)

ID_SHAPE = re.compile(r"^ag-[0-9a-f]{24}$")
LOGICAL_CHARS = "abcXYZ0189._:@/-"
ALLOWED = set(string.ascii_letters + string.digits + "._:@/-")
logical_ids = st.text(alphabet=LOGICAL_CHARS, min_size=1, max_size=128)
client_ids = st.text(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(client_ids, st.text(max_size=60))
def test_agent_id_is_deterministic_and_well_formed(client, logical):
    first = agent_id_for(client, logical)
    assert first == agent_id_for(client, logical)
    assert ID_SHAPE.match(first)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(client_ids, st.text(max_size=30)), unique=True, max_size=50))
def test_agent_id_is_injective_over_samples(pairs):
    ids = {agent_id_for(c, lg) for c, lg in pairs}
    assert len(ids) == len(pairs)


@settings(max_examples=200, deadline=None)
@given(logical_ids, st.text(alphabet=" \t\n", max_size=3), st.text(alphabet=" \t", max_size=3))
def test_normalize_strips_and_is_idempotent(logical, before, after):
    normalized = normalize_logical_agent_id(before + logical + after)
    assert normalized == logical
    assert normalize_logical_agent_id(normalized) == normalized


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=20).filter(lambda s: any(c not in ALLOWED and not c.isspace() for c in s))
)
def test_normalize_rejects_any_foreign_character(value):
    try:
        normalize_logical_agent_id(value)
    except InvalidLogicalAgentIdError as exc:
        assert exc.field == "logical_agent_id"
    else:  # pragma: no cover - the property failing
        raise AssertionError(f"accepted {value!r}")


instance_ids = st.sampled_from(["i-1", "i-2", "i-3"])
known_agents = st.one_of(
    st.none(),
    st.builds(
        KnownAgent,
        agent_id=st.just("ag-stored"),
        status=st.sampled_from(list(AgentStatus)),
        instance_id=st.one_of(st.none(), instance_ids),
        instance_count=st.integers(1, 50),
    ),
)


@settings(max_examples=200, deadline=None)
@given(known=known_agents, instance_id=instance_ids, logical=logical_ids)
def test_registration_plan_invariants(known, instance_id, logical):
    reg = Registration("client-1", logical, instance_id, "m5.large", "us-east-1", "us-east-1a")
    plan = plan_registration(known, reg)
    if known is None:
        # a new agent's id is the derived one, so registering twice cannot create two agents
        assert plan.agent_id == agent_id_for("client-1", logical)
        assert plan.action is RegistrationAction.CREATED
        return
    assert plan.agent_id == known.agent_id
    assert plan.instance_count >= known.instance_count
    moved = known.instance_id is not None and known.instance_id != instance_id
    assert plan.previous_instance_id == (known.instance_id if moved else None)
    assert plan.instance_count == known.instance_count + (1 if moved else 0)
    assert plan.reset_config == (known.status in {AgentStatus.DELETED, AgentStatus.TERMINATED})
    assert plan.status in {AgentStatus.ONLINE, AgentStatus.DISABLED}
