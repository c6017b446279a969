"""Security walk 19: races. Eighteen walks attacked single requests; this one attacks interleavings — two actors
touching the same rows at once, one of them a tenant's request (its client token or its agent's credential), the
other another request, a scheduled job (the health monitor's lease sweep, the decision cycle, the data cleaner, the
replica coordinator), the sentinel or a step of the failover. Each race is made deterministic: a function the first
actor calls between its read and its write is wrapped (``overtaken_at``) so that the second actor runs to completion
right there, then the first finishes. What the rules require is asserted: state transitions are conditional writes or
transactions, nothing is lost or duplicated, a client never causes a 500 (a conflict is a clear 4xx), another tenant's
data is never visible, deleted things stay deleted (no row is resurrected by an unconditional put or update). Each
test is one race; its docstring says what it tries and what holds (and, when it found something, what happened before
the fix)."""

from __future__ import annotations

from typing import Any, Callable


from chalicelib.tables.agents import AgentTable
from tests.api._support import assert_error
from tests.conftest import new_instance_id, registration


def overtaken_at(monkeypatch, owner, name: str, second: Callable[[], Any], *, before: bool = False) -> list:
    """Wrap ``owner.name`` so that its first call (the first actor's) runs ``second`` to completion right after the
    real call returned (``before``: right before it), then goes on. Returns a list that holds ``second``'s answer
    once it ran. Later calls, the second actor's own included, are the real function."""
    real = getattr(owner, name)
    answers: list = []

    def interleaved(*args, **kwargs):
        if answers:
            return real(*args, **kwargs)
        answers.append(None)
        if before:
            answers[0] = second()
            return real(*args, **kwargs)
        result = real(*args, **kwargs)
        answers[0] = second()
        return result

    monkeypatch.setattr(owner, name, interleaved)
    return answers


def agent_row(client_id: str, agent_id: str) -> AgentTable | None:
    try:
        return AgentTable.get(client_id, agent_id, consistent_read=True)
    except AgentTable.DoesNotExist:
        return None


def listed_agents(caller, client_id: str) -> list[str]:
    status, reply = caller.get(f"/api/client/{client_id}/agents")
    assert status == 200, reply
    return [a["agent_id"] for a in reply["agents"]]


def assert_clean_answer(status: int, reply, allowed: tuple[int, ...]) -> None:
    """A race's loser answers one of ``allowed`` (never a 500), a 4xx in the product's error shape."""
    assert status in allowed, (status, reply)
    if status >= 400:
        assert isinstance(reply, dict) and reply.get("error") and reply.get("message"), reply


# --- an agent's reports racing the agent's delete -------------------------------------------------------------------


def test_a_termination_report_racing_the_agents_delete_leaves_it_deleted(tenant_with_agent, monkeypatch):
    """The race: the agent's termination report has read its agent (live) and its instance when the client deletes
    the agent (soft delete: status ``deleted``, modes off, instance inactive); then the report writes the agent
    offline and the instance inactive. The rule: deleted things stay deleted — the report may land (its instance is
    inactive either way) or be refused, but the agent stays ``deleted``, out of the client's listing. BEFORE: the
    report's transaction was conditional only on the agent row existing, so it wrote the deleted agent back
    ``offline`` (200): listed again, counted by the fleet, and never removed by the data cleaner (which removes
    deleted agents). NOW: the write is conditional on the agent not being gone; the report is 404, nothing written."""
    from chalicelib.repositories import agents

    client_id, caller, agent_id, body = tenant_with_agent
    deleted = overtaken_at(monkeypatch, agents, "get_instance",
                           lambda: caller.call("DELETE", f"/api/client/agents/{agent_id}"))
    status, reply = caller.post(f"/api/agents/{agent_id}/termination",
                                {"instance_id": body["instance_id"], "reason": "spot interruption"})
    monkeypatch.undo()
    assert deleted[0][0] == 200, deleted
    assert_clean_answer(status, reply, (200, 404, 409))
    assert agent_row(client_id, agent_id).status == "deleted"
    assert agent_id not in listed_agents(caller, client_id)


def test_a_heartbeat_racing_the_agents_delete_never_revives_it(tenant_with_agent, monkeypatch):
    """The race: a heartbeat that changes the agent (``offline``: a status change takes the read-then-write path) has read the
    agent when the client deletes it; then the heartbeat writes. Holds: the heartbeat's write is conditional on the
    agent not being gone (404), and the agent stays ``deleted`` and unlisted."""
    from chalicelib.repositories import agents

    client_id, caller, agent_id, _ = tenant_with_agent
    deleted = overtaken_at(monkeypatch, agents, "heartbeat",
                           lambda: caller.call("DELETE", f"/api/client/agents/{agent_id}"), before=True)
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "offline"})
    monkeypatch.undo()
    assert deleted[0][0] == 200, deleted
    assert_error(status, reply, 404)
    assert agent_row(client_id, agent_id).status == "deleted"
    assert agent_id not in listed_agents(caller, client_id)


def test_a_heartbeat_moving_instance_racing_the_agents_delete_never_revives_it(tenant_with_agent, monkeypatch):
    """The race: a heartbeat naming another instance (a legacy agent's word: the agent moves there) has read the
    agent when it is deleted. Holds: 404, the agent stays deleted, and the instance it named is not the agent's."""
    from chalicelib.repositories import agents

    client_id, caller, agent_id, body = tenant_with_agent
    moved_to = new_instance_id()
    deleted = overtaken_at(monkeypatch, agents, "heartbeat",
                           lambda: caller.call("DELETE", f"/api/client/agents/{agent_id}"), before=True)
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat",
                                {"status": "online", "instance_id": moved_to, "instance_type": "m5.large",
                                 "az": "eu-west-1a"})
    monkeypatch.undo()
    assert deleted[0][0] == 200, deleted
    assert_error(status, reply, 404)
    row = agent_row(client_id, agent_id)
    assert row.status == "deleted" and row.instance_id == body["instance_id"]


def test_a_pricing_report_racing_the_agents_delete_answers_cleanly(tenant_with_agent, monkeypatch):
    """The race: a pricing report has stored its points and is about to note when the agent last reported
    (``touch_pricing``) when the agent is deleted. Holds: a clean answer, and the agent stays deleted."""
    from chalicelib.repositories import agents

    client_id, caller, agent_id, body = tenant_with_agent
    deleted = overtaken_at(monkeypatch, agents, "touch_pricing",
                           lambda: caller.call("DELETE", f"/api/client/agents/{agent_id}"), before=True)
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", {
        "instance": {"instance_id": body["instance_id"], "instance_type": "m5.large", "az": "eu-west-1a"},
        "pricing": {"on_demand_price": 0.107, "spot_pools": [{"pool_id": "m5.large.eu-west-1a", "price": 0.0362}]}})
    monkeypatch.undo()
    assert deleted[0][0] == 200, deleted
    assert_clean_answer(status, reply, (200, 404))
    assert agent_row(client_id, agent_id).status == "deleted"


def test_a_switch_report_racing_the_agents_delete_leaves_no_active_instance_behind(make_tenant, monkeypatch):
    """The race: the agent's switch report (its switch happened in AWS) has read the agent and is about to record
    the switch — the switch row, the new instance's row (active), the agent moved there — when the client deletes the
    agent (its instance made inactive, status ``deleted``). Serially either order leaves no active instance of the
    deleted agent: report then delete closes the new instance; delete then report is 404. The rule: deleted things
    stay deleted, nothing of the agent is active again. BEFORE: the switch's transaction was conditional only on the
    agent row existing (and the switch being new): it moved the deleted agent to the new instance and wrote that
    instance's row active (200), so the deleted agent had an active instance again, integrated by every hourly
    savings roll-up and listed among the client's active instances. NOW: the agent's part of the transaction is
    conditional on the agent not being gone; the report is 404, nothing written."""
    from chalicelib.repositories import switches
    from tests.api._support import switch_body

    client_id, caller = make_tenant()
    body = registration()
    agent_id = caller.post("/api/agents/register", body)[1]["agent_id"]
    new = new_instance_id()
    deleted = overtaken_at(monkeypatch, switches, "record",
                           lambda: caller.call("DELETE", f"/api/client/agents/{agent_id}"), before=True)
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report", switch_body(body["instance_id"], new))
    monkeypatch.undo()
    assert deleted[0][0] == 200, deleted
    assert_clean_answer(status, reply, (200, 404, 409))
    assert agent_row(client_id, agent_id).status == "deleted"
    status, listed = caller.get(f"/api/client/{client_id}/instances?status=active")
    assert status == 200 and listed["instances"] == [], listed
