"""Never a 500 for anything a client can send, and nothing written on a 4xx (issue #12).

GIVEN a tenant with a registered agent
WHEN a request carries one of the security review's inputs (2,000 nested brackets, an odd ``limit``,
     a year-9999 timestamp, a number DynamoDB cannot store, a non-ASCII body past the byte limits,
     an oversize path parameter)
THEN the answer is a JSON 4xx ``{error, message, field?}`` and every table is unchanged;
AND an unexpected fault answers a generic JSON 500 that names no internals.
"""

from __future__ import annotations

import json

import pytest

from chalicelib.errors import public_cause, redact
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.conftest import new_instance_id, registration


@pytest.fixture
def tenant(tenant_with_agent):
    _client_id, caller, agent_id, _body = tenant_with_agent
    return caller, agent_id


def _unchanged(call):
    """(status, body) of ``call()``, asserting it wrote nothing to any table."""
    before = snapshot_tables()
    status, body = call()
    assert diff_snapshots(before, snapshot_tables()) == {}, (status, body)
    return status, body


# --- bodies: nesting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["[" * 2000 + "]" * 2000, '{"a":' * 2000 + "1" + "}" * 2000,
                                 '{"a":' + "[" * 100 + "]" * 100 + "}"],
                         ids=["2000-arrays", "2000-objects", "100-deep-parses-but-too-deep"])
def test_deep_nesting_is_400(tenant, raw):
    caller, agent_id = tenant
    status, body = _unchanged(lambda: caller.post(f"/api/agents/{agent_id}/heartbeat", raw=raw))
    expected = "too_deep" if raw.startswith("{") else None  # a top-level array is refused as not an object
    assert_error(status, body, 400, code=expected)


def test_deep_nesting_before_auth_is_400(api):
    """The body is parsed before the token is read: a stranger's deep body is not a 500 either."""
    from tests.conftest import Caller

    stranger = Caller(api.http, token="not-a-token")
    status, body = _unchanged(lambda: stranger.post("/api/agents/register", raw='{"a":' * 2000 + "1" + "}" * 2000))
    assert_error(status, body, 400, code="too_deep")


# --- query parameters ----------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", ["²", "١٢", "9" * 5000, "1e3", " 5", "0", "201", "-1", "12\u00a0"])
@pytest.mark.parametrize("route", ["/api/client/interruptions", "/api/agents/{agent_id}/replicas",
                                   "/api/notifications"])
def test_odd_limit_is_400(tenant, route, limit):
    caller, agent_id = tenant
    from urllib.parse import quote

    status, body = caller.get(route.format(agent_id=agent_id) + "?limit=" + quote(limit))
    assert_error(status, body, 400, code="validation_error", field="limit")


def test_plain_limit_still_works(tenant):
    caller, _ = tenant
    assert caller.get("/api/client/interruptions?limit=7")[0] == 200


@pytest.mark.parametrize("query,field", [
    ("region=" + "x" * 3000 + "&instance_type=m5.large", "region"),
    ("region=mars-north-1&instance_type=m5.large", "region"),
    ("region=eu-west-1&instance_type=" + "m5." + "l" * 3000, "instance_type"),
    ("region=eu-west-1&instance_type=%C3%A9.large", "instance_type"),
    ("region=eu-west-1&instance_type=m5.large%23eu-west-1a", "instance_type"),
], ids=["region-3000", "unknown-region", "type-3000", "type-unicode", "type-with-key-separator"])
def test_pool_query_parameters_are_checked_before_the_index_is_queried(tenant, query, field):
    """The region and type make the pools index's key: an over-long one is a key DynamoDB refuses (a 500 in AWS,
    moto does not check), a made-up one was answered 200 with no pools."""
    caller, _ = tenant
    status, body = caller.get(f"/api/client/pools?{query}")
    assert_error(status, body, 400, code="validation_error", field=field)


def test_a_real_pool_query_still_works(tenant):
    caller, _ = tenant
    status, body = caller.get("/api/client/pools?region=eu-west-1&instance_type=m5.large")
    assert status == 200 and isinstance(body["pools"], list)


# --- timestamps ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                                   "2100-01-01T00:00:00Z", "1999-12-31T23:59:59Z"])
@pytest.mark.parametrize("route,field", [("termination-imminent", "detected_at"),
                                         ("termination-imminent", "termination_time"),
                                         ("rebalance-recommendation", "detected_at"),
                                         ("create-emergency-replica", "termination_time")])
def test_timestamp_out_of_range_is_400(tenant, route, field, stamp):
    caller, agent_id = tenant
    body = {field: stamp}
    if route == "create-emergency-replica":
        body["signal_type"] = "termination-notice"
    status, reply = _unchanged(lambda: caller.post(f"/api/agents/{agent_id}/{route}", body))
    assert_error(status, reply, 400, code="validation_error", field=field)


# --- numbers DynamoDB cannot store -----------------------------------------------------------------------

@pytest.mark.parametrize("number", ["1e-200", "1e300", "-1e-131", "1e126", "1" * 39, "1e400", "NaN", "-Infinity"])
def test_unstorable_number_in_config_is_400(tenant, number):
    caller, agent_id = tenant
    raw = '{"risk_threshold": %s}' % number
    status, body = _unchanged(lambda: caller.post(f"/api/client/agents/{agent_id}/config", raw=raw))
    assert_error(status, body, 400, code="validation_error", field="risk_threshold")


def test_unstorable_number_after_valid_rows_writes_nothing(tenant):
    """The half-write: a pricing report whose first pool is fine and whose second is 1e-200 used to
    store the first pool's price before failing on the second."""
    caller, agent_id = tenant
    pools = [{"instance_type": "m5.large", "az": "eu-west-1a", "price": 0.031},
             {"instance_type": "m5.large", "az": "eu-west-1b", "price": 1e-200}]
    body = {"instance": {"instance_type": "m5.large", "region": "eu-west-1", "az": "eu-west-1a"},
            "pricing": {"on_demand_price": 0.107, "spot_pools": pools}}
    status, reply = _unchanged(lambda: caller.post(f"/api/agents/{agent_id}/pricing-report", body))
    assert_error(status, reply, 400, code="validation_error", field="pricing.spot_pools.1.price")


def test_unstorable_number_in_an_ignored_field_is_400(tenant):
    caller, agent_id = tenant
    status, body = _unchanged(lambda: caller.post(f"/api/agents/{agent_id}/heartbeat",
                                                  raw='{"status": "online", "extra": {"n": 1e-300}}'))
    assert_error(status, body, 400, field="extra.n")


def test_storable_extremes_are_accepted(tenant):
    caller, agent_id = tenant
    status, _ = caller.post(f"/api/client/agents/{agent_id}/config", raw='{"risk_threshold": 1e-100}')
    assert status == 200


# --- sizes in UTF-8 bytes ------------------------------------------------------------------------------------

def test_body_over_limit_in_bytes_not_characters_is_413(make_tenant):
    """100,000 characters (under the 256 KiB limit) that are 300,000 bytes of UTF-8."""
    _, caller = make_tenant()
    raw = json.dumps(registration(hostname="€" * 100_000), ensure_ascii=False).encode()
    assert len(raw.decode()) < 256 * 1024 < len(raw)
    status, body = _unchanged(lambda: caller.call("POST", "/api/agents/register", raw=raw))
    assert_error(status, body, 413, code="payload_too_large")


@pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8", "escaped"])
def test_string_over_its_byte_bound_is_413(tenant, ensure_ascii):
    """5,000 emoji: 20 KB of UTF-8 in one string (60 KB once escaped), under the body limit."""
    caller, agent_id = tenant
    raw = json.dumps({"status": "online", "note": "😀" * 5000}, ensure_ascii=ensure_ascii)
    status, body = _unchanged(lambda: caller.post(f"/api/agents/{agent_id}/heartbeat", raw=raw))
    assert_error(status, body, 413, code="payload_too_large", field="note")


def test_huge_key_is_413(tenant):
    caller, agent_id = tenant
    raw = json.dumps({"é" * 200: 1}, ensure_ascii=False)
    status, body = _unchanged(lambda: caller.post(f"/api/agents/{agent_id}/heartbeat", raw=raw))
    assert_error(status, body, 413, code="payload_too_large")


# --- path parameters ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,template,field", [
    ("POST", "/api/agents/{x}/heartbeat", "agent_id"),
    ("GET", "/api/agents/{x}/config", "agent_id"),
    ("POST", "/api/agents/{agent_id}/commands/{x}/executed", "command_id"),
    ("POST", "/api/agents/{agent_id}/replicas/{x}/status", "replica_id"),
    ("POST", "/api/notifications/{x}/mark-read", "notification_id"),
    ("POST", "/api/client/instances/{x}/force-switch", "instance_id"),
    ("GET", "/api/client/{x}/agents", "client_id"),
    ("GET", "/api/client/instances/{x}/metrics", "instance_id"),
    ("DELETE", "/api/client/agents/{x}", "agent_id"),
])
@pytest.mark.parametrize("value", ["a" * 5000, "é" * 20, "a" * 129, "%00", "-leading-dash"],
                         ids=["5000", "unicode", "129", "nul", "dash"])
def test_bad_path_parameter_is_400(tenant, method, template, field, value):
    caller, agent_id = tenant
    from urllib.parse import quote

    path = template.replace("{agent_id}", agent_id).replace("{x}", quote(value, safe="%"))
    body = {"success": True, "status": "ready"} if method == "POST" else None
    status, reply = _unchanged(lambda: caller.call(method, path, body))
    assert_error(status, reply, 400, code="validation_error", field=field)
    assert value[:50] not in reply["message"]  # the message does not echo what the client sent


@pytest.mark.parametrize("template,field", [("/api/admin/clients/{x}", "client_id"),
                                            ("/api/admin/ml-models/{x}/activate", "version")])
def test_bad_admin_path_parameter_is_400(admin, template, field):
    method = "POST" if template.endswith("activate") else "GET"
    status, reply = _unchanged(lambda: admin.call(method, template.replace("{x}", "z" * 5000), {} if method == "POST"
                                                  else None))
    assert_error(status, reply, 400, field=field)


def test_real_ids_still_pass(tenant):
    caller, agent_id = tenant
    assert caller.get(f"/api/agents/{agent_id}/config")[0] == 200
    assert caller.post(f"/api/agents/{agent_id}/commands/cmd-nope/executed", {"success": True})[0] == 404


# --- our own faults: a generic JSON 500 ------------------------------------------------------------------------

def test_unexpected_fault_is_a_generic_json_500(tenant, monkeypatch):
    caller, _ = tenant
    from chalicelib.api import clients

    def boom(*_a, **_k):
        raise RuntimeError("KeyError in arn:aws:dynamodb:us-east-1:123456789012:table/spot-clients")

    monkeypatch.setattr(clients, "client_request", boom)
    status, body = caller.get("/api/client/validate")
    assert_error(status, body, 500, code="internal_error")
    text = json.dumps(body)
    assert "arn:" not in text and "123456789012" not in text and "Traceback" not in text and "KeyError" not in text


LAMBDA_CAUSE = json.dumps({
    "errorMessage": "An error occurred (UnauthorizedOperation) when calling RunInstances: not authorized "
                    "to perform ec2:RunInstances on arn:aws:ec2:eu-west-1:123456789012:instance/*",
    "errorType": "ClientError",
    "stackTrace": ['  File "/var/task/chalicelib/failover.py", line 66, in launch\n'],
})


def test_failover_cause_shown_to_clients_has_no_internals():
    shown = public_cause({"Error": "ClientError", "Cause": LAMBDA_CAUSE})
    assert shown.startswith("ClientError: An error occurred (UnauthorizedOperation)")
    assert "arn:" not in shown and "123456789012" not in shown and "failover.py" not in shown
    assert public_cause({"Error": "States.TaskFailed", "Cause": "Traceback (most recent call last):\n  x"}) \
        == "States.TaskFailed"
    assert public_cause(None) == "Error"


def test_redact_keeps_the_first_line_only():
    assert redact("capacity refused for account 123456789012\nline two") == "capacity refused for account <account>"


def test_failover_failed_notifies_the_client_without_internals(tenant_with_agent):
    """The failed-failover step's interruption row and notification carry the public cause only."""
    from datetime import datetime, timezone

    from chalicelib import failover
    from chalicelib.repositories import activity, interruptions

    client_id, caller, agent_id, reg = tenant_with_agent
    from chalicelib.tables.interruptions import InterruptionTable

    now = datetime.now(timezone.utc)
    event = InterruptionTable(client_id, interruptions.new_interruption_id(now), agent_id=agent_id,
                              instance_id=reg["instance_id"], signal_type="termination-notice", source="agent",
                              detected_at=now)
    event.save()
    failover.failed({"client_id": client_id, "agent_id": agent_id, "instance_id": reg["instance_id"],
                     "interruption_id": event.interruption_id,
                     "error": {"Error": "ClientError", "Cause": LAMBDA_CAUSE}})
    page = activity.notifications_page(client_id, 50, None)
    texts = json.dumps([getattr(n, "message", "") for n in page.items]) + str(
        interruptions.get(client_id, event.interruption_id).error)
    assert "FAILED" in texts
    assert "arn:" not in texts and "123456789012" not in texts and "stackTrace" not in texts


def test_new_instance_id_helper_is_a_valid_path_parameter():
    from chalicelib.api.inputs import PATH_PARAM

    assert PATH_PARAM.fullmatch(new_instance_id())
