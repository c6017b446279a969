"""The pre-v4 agent ``spot_agent.py``'s requests (tests/e2e/legacy_stub.py), one by one: its ``X-Client-Token``
header, its registration (``version``, ``current_mode``, no logical id), its flat pricing line, and the bare list
it reads from pending-commands. The same rules as for every token: unknown is 401, an agent credential is good for
its own agent's routes only, another tenant's agent is 404 and nothing is written on a refusal."""

from __future__ import annotations

from chalicelib.tables import AgentTable
from chalicelib.tables.pools import PricingReportTable
from tests.api._support import assert_error
from tests.conftest import Caller, new_instance_id, registration
from tests.e2e.legacy_stub import HeaderCaller


def stub_registration(instance_id: str, instance_type: str = "m5.large") -> dict:
    return {"hostname": "ip-10-0-0-9", "instance_id": instance_id, "instance_type": instance_type,
            "region": "eu-west-1", "az": "eu-west-1a", "current_mode": "ondemand", "version": "4.0"}


def stub_agent(api, make_tenant):
    client_id, caller = make_tenant()
    stub = HeaderCaller(api.http, token=caller.token)
    instance_id = new_instance_id()
    status, reply = stub.post("/api/agents/register", stub_registration(instance_id))
    assert status == 200, reply
    return client_id, caller, stub, reply["agent_id"], instance_id


def test_the_client_token_header_authenticates_like_a_bearer_token(api, make_tenant):
    """GIVEN a client token sent as ``X-Client-Token`` THEN a client route admits it; an unknown one is 401; an
    agent's route of another client is 404; and an empty header is no token (401)."""
    _, caller = make_tenant()
    status, reply = HeaderCaller(api.http, token=caller.token).get("/api/client/validate")
    assert status == 200 and reply["valid"] is True, reply
    status, reply = HeaderCaller(api.http, token="sot_" + "x" * 43).get("/api/client/validate")
    assert_error(status, reply, 401, code="unauthorized")
    status, reply = Caller(api.http).get("/api/client/validate", headers={"X-Client-Token": "  "})
    assert_error(status, reply, 401, code="unauthorized")
    _, other = make_tenant()
    _, _, _, agent_id, _ = stub_agent(api, make_tenant)
    status, reply = HeaderCaller(api.http, token=other.token).get(f"/api/agents/{agent_id}/config")
    assert_error(status, reply, 404)


def test_an_agent_credential_in_the_client_token_header_is_still_refused_on_client_routes(api, make_tenant):
    """GIVEN an agent credential sent as ``X-Client-Token`` THEN a client route refuses it (403), as it does in a
    Bearer header."""
    _, caller = make_tenant()
    forged = "soa_cl-0123.ag-0123abcd." + "a" * 43
    status, reply = Caller(api.http).get("/api/client/validate", headers={"X-Client-Token": forged})
    assert_error(status, reply, 403, code="agent_credential_refused")


def test_the_stub_registration_is_recorded_without_its_mode_and_with_its_version(api, make_tenant):
    """GIVEN spot_agent.py's registration (``version``, ``current_mode: ondemand`` whatever the instance is, no
    logical id) THEN the agent is registered under its instance id, with agent_version 4.0, mode unknown (its mode
    claim is not believed), and as an agent that runs no commands; a Bearer registration of the same logical id
    (another agent program on the instance) runs them again."""
    client_id, caller, _, agent_id, instance_id = stub_agent(api, make_tenant)
    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert (row.logical_agent_id, row.agent_version, row.current_mode, row.runs_commands) == (
        instance_id, "4.0", "unknown", False)
    status, reply = caller.post("/api/agents/register", registration(
        instance_id=instance_id, logical_agent_id=instance_id, az="eu-west-1a", agent_version="4.0.0"))
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert AgentTable.get(client_id, agent_id, consistent_read=True).runs_commands is None


def test_the_flat_pricing_line_is_kept_as_a_raw_report_and_writes_no_pool_price(api, make_tenant):
    """GIVEN spot_agent.py's pricing report ``{instance_type, region, az, spot_price, ondemand_price, timestamp}``
    (constants in its code) THEN 200 with no pool stored: the prices are kept in the raw report only."""
    _, _, stub, agent_id, _ = stub_agent(api, make_tenant)
    itype = "m5.large"
    status, reply = stub.post(f"/api/agents/{agent_id}/pricing-report", {
        "instance_type": itype, "region": "eu-west-1", "az": "eu-west-1a", "spot_price": 0.0416,
        "ondemand_price": 0.0832, "timestamp": "2030-01-01T00:00:00.123456"})
    assert status == 200 and reply["pools"] == 0 and reply["points_written"] == 0, reply
    [report] = PricingReportTable.query(agent_id)
    assert (float(report.current_spot_price), float(report.on_demand_price), report.pools_reported) == (
        0.0416, 0.0832, 0)
    assert reply["warnings"] == [], reply  # a timestamp far from the clock only matters for pool prices


def test_pending_commands_is_a_list_for_the_client_token_header_and_an_object_otherwise(api, make_tenant):
    """GIVEN the stub agent's poll (``X-Client-Token``), which iterates the answer as a list THEN it gets ``[]``;
    the same poll with a Bearer token (v4, v3.2, spot-agent) gets ``{"commands": [...]}``."""
    _, caller, stub, agent_id, _ = stub_agent(api, make_tenant)
    status, reply = stub.get(f"/api/agents/{agent_id}/pending-commands")
    assert (status, reply) == (200, []), reply
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and reply == {"commands": []}, reply


def test_no_switch_is_queued_for_the_stub_agent(api, make_tenant):
    """GIVEN the stub agent, whose "switch" sleeps 2 s and reports success WHEN the client forces a switch
    THEN 409 ``agent_runs_no_commands``, nothing is queued or delivered (poll or heartbeat), and its heartbeat's
    ``current_mode`` / ``current_pool_id`` claims change nothing."""
    client_id, caller, stub, agent_id, instance_id = stub_agent(api, make_tenant)
    status, reply = caller.post(f"/api/client/instances/{instance_id}/force-switch", {"target": "ondemand"})
    assert_error(status, reply, 409, code="agent_runs_no_commands")
    status, reply = stub.get(f"/api/agents/{agent_id}/pending-commands")
    assert (status, reply) == (200, []), reply
    status, reply = stub.post(f"/api/agents/{agent_id}/heartbeat", {
        "status": "online", "instance_id": instance_id, "current_mode": "spot", "current_pool_id": "m5.large.eu-west-1b"})
    assert status == 200 and reply["commands"] == [], reply
    row = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert (row.current_mode, row.current_pool_id) == ("unknown", "m5.large.eu-west-1a")  # its claims: not read


def test_a_decision_for_the_stub_agent_queues_no_command(api, make_tenant):
    """GIVEN the stub agent seen on spot (say its mode became known) WHEN a decision moves it to another pool
    THEN no command is queued (its switch would only be reported, never made): the decision stands alone."""
    from datetime import UTC, datetime

    from chalicelib import bootstrap, decisions
    from chalicelib.repositories import agents as agent_repo
    from components.decision_engine import Decision, DecisionAction

    client_id, _, _, agent_id, _ = stub_agent(api, make_tenant)
    AgentTable(client_id, agent_id).update(actions=[AgentTable.current_mode.set("spot"),
                                                    AgentTable.config.auto_switch_enabled.set(True)])
    agent = agent_repo.get(client_id, agent_id)
    move = Decision(DecisionAction.SWITCH_POOL, "m5.large.eu-west-1b", None, "cheaper in b")
    assert decisions.command_for(agent, move, datetime.now(UTC), trigger="model") is None
    assert bootstrap.command_store().active_for_agent(agent_id, 5) == []
    # and the same agent speaking Bearer (another program on the instance) would get it
    AgentTable(client_id, agent_id).update(actions=[AgentTable.runs_commands.remove()])
    bearer = agent_repo.get(client_id, agent_id)
    assert decisions.command_for(bearer, move, datetime.now(UTC), trigger="model") is not None
