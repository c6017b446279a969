"""The two agents of atharva0608/ml-final-v3 written for its "Backend v6.0" (``agent/backend/spot_agent_v4.py``,
"4.0.0", and ``new-version/agent/spot_optimizer_agent_v5_production.py``, "5.0.1-production"): their requests as
their code builds them, one by one. They are not clients of the legacy server: part of what they call it never
served (``commands/pending``, ``action-result``, ``termination-report``, ``emergency-status``, ``shutdown``) and
v5's pricing body is not its report. What is asserted is what the legacy server would have given them: the routes
it served answer 2xx, the foreign pricing body a 400, never a 500, nothing written. (A route no server has is a
JSON 404 ``route_not_found`` from API Gateway and local mode: tests/api/test_unknown_route.py.)"""

from __future__ import annotations

import uuid

from chalicelib.tables.pools import PricingReportTable
from tests.api._support import assert_error
from tests.conftest import new_instance_id


def _v6_registration(instance_id: str, version: str) -> dict:
    """Both register without ``client_token`` in the body (Bearer header only)."""
    return {"logical_agent_id": f"web-{uuid.uuid4().hex[:8]}", "instance_id": instance_id,
            "instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1a", "mode": "spot",
            "hostname": "ip-10-0-0-7", "ami_id": "ami-12345678", "agent_version": version,
            "private_ip": "10.0.0.7", "public_ip": None}


def test_spot_agent_v4_for_backend_v6_is_answered_as_the_legacy_server_answered_it(make_tenant):
    """GIVEN ml-final-v3's ``spot_agent_v4.py`` WHEN it registers, heartbeats ``{status}``, reads its config, reports
    a rebalance notice ``{notice_time}`` and a termination notice as one (``immediate: true``), asks ``decide`` with
    its pricing body THEN the legacy routes answer 2xx (``decide`` 200, or 409 while the product has no price for the
    pools: the agent logs either). (Its ``emergency-status`` poll the legacy server never served.)"""
    _, caller = make_tenant()
    instance_id = new_instance_id()
    status, reply = caller.post("/api/agents/register", _v6_registration(instance_id, "4.0.0"))
    assert status == 200, reply
    agent_id = reply["agent_id"]
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "online"})[0] == 200
    assert caller.get(f"/api/agents/{agent_id}/config")[0] == 200
    for body in ({"notice_time": "2030-01-01T00:02:00Z"}, {"notice_time": "2030-01-01T00:02:00Z", "immediate": True}):
        status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation", body)
        assert status == 200 and reply["success"] is True, reply
    status, reply = caller.post(f"/api/agents/{agent_id}/decide", {
        "spot_pools": [{"pool_id": "m5.large.eu-west-1a", "instance_type": "m5.large", "az": "eu-west-1a",
                        "price": 0.04, "is_current": True}],
        "ondemand_price": 0.107, "current_az": "eu-west-1a"})
    assert status in (200, 409), reply
    assert caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": "offline"})[0] == 200


def test_spot_optimizer_agent_v5_production_gets_no_500_and_writes_no_foreign_pricing(make_tenant):
    """GIVEN ml-final-v3's ``spot_optimizer_agent_v5_production.py`` WHEN it registers, heartbeats with its
    inventory, posts its pricing body (``pricing_data_array``) and a rebalance notice THEN registration, heartbeat and
    the rebalance notice answer 2xx and the pricing body is a 400 (nothing stored). (Its ``commands/pending``,
    ``action-result``, ``termination-report`` and ``shutdown`` the legacy server never served.)"""
    _, caller = make_tenant()
    instance_id = new_instance_id()
    body = _v6_registration(instance_id, "5.0.1-production") | {"cloud_account": "", "project_id": "default"}
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    status, reply = caller.post(f"/api/agents/{agent_id}/heartbeat", {
        "status": "online", "inventory_snapshot": {"instances": [], "count": 0},
        "health_metrics": {"uptime": 10, "cpu_percent": 0, "memory_percent": 0}, "reconnect": False})
    assert status == 200, reply
    status, reply = caller.post(f"/api/agents/{agent_id}/pricing-report", {
        "agent_id": agent_id, "timestamp": "2030-01-01T00:00:00",
        "pricing_data_array": [{"instance_type": "m5.large", "az": "eu-west-1a", "pool_id": "m5.large.eu-west-1a",
                                "spot_price": 0.04, "timestamp": "2030-01-01T00:00:00"}]})
    assert_error(status, reply, 400)
    assert list(PricingReportTable.query(agent_id)) == []
    status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation", {
        "cloud_instance_id": instance_id, "notice_type": "REBALANCE", "notice_time": "2030-01-01T00:00:00"})
    assert status == 200, reply
