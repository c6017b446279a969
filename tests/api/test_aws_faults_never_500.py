"""Routes that call AWS synchronously, with AWS failing on its side (tests/faults.py injects what AWS answers
once botocore's retries are spent): a throttled or unreachable service is a 503 (504 when AWS may have acted) in
the product's JSON error shape with Retry-After, never a 500, and nothing is left half-written: the same request
repeated once AWS answers does what it would have done."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from chalicelib import sentinel
from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import replicas as replica_repo
from tests.api.test_ownership import BOUND
from tests.e2e.failover_support import configure, register_agent, wait_for
from tests.faults import inject
from tests.integration.test_event_intake import events_of, executions_named


def call(caller, method, path, body=None):
    """(status, JSON body, headers) of one request."""
    response = getattr(caller.http, method.lower())(path, headers=caller.headers(), body=json.dumps(body or {}))
    return response.status_code, json.loads(response.body), response.headers


def assert_unavailable(status, reply, headers, expected=503):
    assert status == expected, reply
    assert set(reply) <= {"error", "message", "field"} and reply["error"] and "Traceback" not in reply["message"]
    assert int(headers["Retry-After"]) >= 1


@pytest.mark.parametrize("route", ["server-launched standby excluding a zone", "legacy emergency replica"])
def test_a_standby_whose_zones_ec2_cannot_list_is_a_503_and_takes_no_slot(make_tenant, monkeypatch, route):
    """GIVEN an agent without fresh prices (the standby's pool comes from EC2's zone list) and EC2 throttling
    DescribeAvailabilityZones WHEN a standby is asked for THEN 503 with Retry-After (before: a 500), no replica
    row, the slot free; the same request once EC2 answers creates it."""
    client_id, caller, agent_id, _, _ = register_agent(make_tenant, prices={})
    if route.startswith("server"):
        configure(client_id, agent_id, manual_replica_enabled=True, auto_switch_enabled=False)
        method, path, body = "POST", f"/api/agents/{agent_id}/replicas", {"exclude_zones": ["us-east-1d"]}
    else:
        configure(client_id, agent_id, auto_switch_enabled=True)
        # a risky pool (it has no price, so no scored row): the recommendation calls for a pre-warmed standby
        monkeypatch.setattr(sentinel, "_pool_risk", lambda agent: 0.8)
        method, path, body = "POST", f"/api/agents/{agent_id}/create-emergency-replica", {
            "signal_type": "rebalance-recommendation"}
    fault = inject(monkeypatch, "DescribeAvailabilityZones", "RequestLimitExceeded", message="slow down")

    assert_unavailable(*call(caller, method, path, body))
    assert len(fault.hits) == 1
    assert replica_repo.for_agent(agent_id) == [] and agent_repo.get(client_id, agent_id).current_replica_id is None

    status, reply, _ = call(caller, method, path, body)
    assert status == 201, reply
    assert [r.replica_id for r in replica_repo.for_agent(agent_id)] == [reply["replica_id"]]


@pytest.mark.parametrize(("raised", "expected"), [
    (lambda: ReadTimeoutError(endpoint_url="https://states.us-east-1.amazonaws.com"), 504),
    (lambda: EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com"), 503),
])
def test_a_termination_notice_whose_start_execution_gets_no_answer_is_5xx_and_the_retry_starts_one_workflow(
        make_tenant, failover_machine, monkeypatch, raised, expected):
    """GIVEN Step Functions out of reach (or its answer lost) when the agent reports its two-minute notice
    WHEN the agent posts it THEN 504/503 with Retry-After (before: a 500), the signal claimed; the agent's retry
    starts the one workflow of that claim."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    fault = inject(monkeypatch, "StartExecution", raised=raised)
    path = f"/api/agents/{agent_id}/termination-imminent"

    assert_unavailable(*call(caller, "POST", path, {"instance_id": primary}), expected=expected)
    assert len(fault.hits) == 1
    [claimed] = events_of(client_id)
    assert claimed.status == "detected"

    status, reply, _ = call(caller, "POST", path, {"instance_id": primary})
    assert status == 202 and reply["interruption_id"] == claimed.interruption_id, reply
    [row] = events_of(client_id)
    assert row.status == "handling" and len(executions_named(row.interruption_id)) == 1
    assert wait_for(row.execution_arn)["status"] == "SUCCEEDED"


def test_an_account_binding_sts_throttles_is_a_503_not_a_refused_role(admin, make_tenant, monkeypatch):
    """GIVEN STS throttling AssumeRole WHEN an admin binds an account THEN 503 with Retry-After (before: 409
    role_not_assumable, which told the admin to fix a role that is fine), nothing bound; the retry binds it."""
    client_id, _ = make_tenant()
    body = {"account_id": BOUND, "role_arn": f"arn:aws:iam::{BOUND}:role/SpotOptimizer-dev"}
    fault = inject(monkeypatch, "AssumeRole", "Throttling", message="Rate exceeded")

    assert_unavailable(*call(admin, "POST", f"/api/admin/clients/{client_id}/accounts", body))
    assert len(fault.hits) == 1
    assert admin.get(f"/api/admin/clients/{client_id}")[1].get("accounts", []) == []

    status, reply, _ = call(admin, "POST", f"/api/admin/clients/{client_id}/accounts", body)
    assert status == 201, reply
    admin.call("DELETE", f"/api/admin/clients/{client_id}/accounts/{BOUND}")
