"""Security walk 17: what an outside tester holding two tenants' client tokens (and their agents' credentials, no
admin key) tries against the listings and the answers after sixteen walks — what one request may make the service
read or ask AWS (a listing's filter that matches nothing of a large partition, an anonymous health check), the
cursors a tenant can make or keep (positioned at another tenant's row, an offset or replica id cursor, one of
thousands of keys, one kept across a suspension or a token regeneration), the filters of the listings given another
tenant's ids or hostile values (page sizes, enumerations, the pools index key), the headers and codes of an answer
about another tenant's id against a made-up one's, a deactivated client's token on the operator's routes, what an
error answer echoes of the request and of the deployment, and the launch inputs a tenant names (a standby's zones,
its reported AMI). Each test is one attack; its docstring says what it tries and what holds (and, when it found
something, what happened before the fix)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from chalicelib.tables.notifications import NotificationTable
from tests.api._support import assert_error
from tests.conftest import Caller, account_instance, dynamodb_calls, new_instance_id, registration
from tests.integration.test_data_cleaner import _notification
from tests.api.test_tenant_isolation import tenant_a as _tenant_a

tenant_a = _tenant_a  # a fixture: A with an agent, instances, a command, a notification and a standby


VARYING_HEADERS = {"x-correlation-id", "x-request-id", "date"}


def _raw(caller: Caller, method: str, path: str, body=None, headers=None) -> tuple[int, dict, object]:
    """(status, headers but the correlation id, JSON body) of one request (``headers`` added to the caller's):
    what may tell two answers apart."""
    kwargs = {"headers": caller.headers(headers)}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    response = getattr(caller.http, method.lower())(path, **kwargs)
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() not in VARYING_HEADERS}
    return response.status_code, headers, json.loads(response.body) if response.body else None


def _queries(calls, table) -> int:
    """How many Query requests of ``calls`` (``dynamodb_calls``) went to ``table``."""
    return sum(1 for op, name, _, _ in calls if op == "Query" and name == table.Meta.table_name)


# --- what one request of a listing may make the service read --------------------------------------------------------


def test_an_unread_filter_over_thousands_of_read_notifications_reads_a_bounded_number_of_rows(make_tenant,
                                                                                            monkeypatch):
    """The attack: a tenant's agents make notifications by the thousand (every termination report of an online agent
    notifies; they live 30 days), the tenant marks them all read, then asks ``/api/notifications?unread=true&limit=1``
    over and over: the filter matches none of them. BEFORE: pynamodb's ``limit`` is the count of items *that passed
    the filter*, so the listing went on Query after Query (each evaluating ``limit`` rows) until it found one unread
    notification or read the whole partition: one API request made one DynamoDB request per read notification
    (thousands of sequential calls: past API Gateway's 29 s, the read units billed to the operator, 1,200 times a
    minute). NOW: a listing reads at most ``paging.PAGE_READS`` requests (the first of ``limit`` rows, each later one
    of ``READ_ROWS``): a page the filter left short has a ``next_token`` that goes on where the reads stopped, and
    following it still finds every unread notification, once. (Here ``READ_ROWS`` is 5, so 40 read notifications
    outrun one request's reads; at its real 1,000 the first page finds the unread one, in two Queries.) Since the
    unread index (``UNREAD_NOTIFICATIONS``) the listing reads the unread rows only; this bound holds the filtered read
    it falls back to until the index is ready (a stage upgraded in place): measured with the index not ready."""
    from chalicelib.repositories import paging, sparse_indexes
    from chalicelib.tables.notifications import UNREAD_NOTIFICATIONS

    ready = sparse_indexes.ready
    monkeypatch.setattr(sparse_indexes, "ready", lambda index: index is not UNREAD_NOTIFICATIONS and ready(index))
    client_id, caller = make_tenant()
    now = datetime.now(UTC)
    unread = _notification(client_id, now - timedelta(days=1, minutes=1), False, "the-unread-one")
    for i in range(40):
        _notification(client_id, now - timedelta(minutes=i), True, f"read{i}")
    with dynamodb_calls() as calls:
        status, reply = caller.get("/api/notifications?unread=true&limit=1")
    assert status == 200, reply
    assert _queries(calls, NotificationTable) == 2 and [n["id"] for n in reply["notifications"]] == [unread], calls
    monkeypatch.setattr(paging, "READ_ROWS", 5)
    with dynamodb_calls() as calls:
        status, reply = caller.get("/api/notifications?unread=true&limit=1")
    assert status == 200, reply
    assert _queries(calls, NotificationTable) == paging.PAGE_READS, calls
    found, token, requests = [n["id"] for n in reply["notifications"]], reply["next_token"], 1
    assert found == [] and token
    while token:
        status, reply = caller.get(f"/api/notifications?unread=true&limit=10&next_token={token}")
        assert status == 200, reply
        found += [n["id"] for n in reply["notifications"]]
        token, requests = reply["next_token"], requests + 1
        assert requests < 20
    assert found == [unread]


def test_a_search_or_a_deleted_fleet_never_makes_a_listing_read_the_whole_partition(make_tenant, monkeypatch):
    """The attack: the same read amplification on the other filtered listings — ``/instances?search=`` naming none of
    the tenant's instances (or ``status=terminated`` when all are live), and ``/agents`` after deleting agents (the
    listing skips deleted ones with a filter), each with ``limit=1``. BEFORE: one Query per row of the tenant's
    partition, in one API request. NOW: at most ``paging.PAGE_READS`` Queries per request (``paging.read_page``;
    ``READ_ROWS`` is 1 here, so six rows outrun them); the page is empty or short, its ``next_token`` goes on, and
    following it lists every row the filter keeps, once."""
    from chalicelib.repositories import paging
    from chalicelib.tables.agents import AgentTable
    from chalicelib.tables.instances import InstanceTable

    monkeypatch.setattr(paging, "READ_ROWS", 1)
    monkeypatch.setattr(paging, "PAGE_READS", 2)
    client_id, caller = make_tenant()
    agent_ids = [caller.post("/api/agents/register", registration())[1]["agent_id"] for _ in range(6)]
    for agent_id in agent_ids[:5]:
        assert caller.call("DELETE", f"/api/client/agents/{agent_id}")[0] == 200
    for path, table in ((f"/api/client/{client_id}/instances?status=all&search=zz9zz&limit=1", InstanceTable),
                        (f"/api/client/{client_id}/instances?status=terminated&limit=1", InstanceTable),
                        (f"/api/client/{client_id}/agents?limit=1", AgentTable),
                        (f"/api/client/{client_id}/agents/decisions?limit=1", AgentTable)):
        with dynamodb_calls() as calls:
            status, reply = caller.get(path)
        assert status == 200, (path, reply)
        # the instance filters match nothing: both reads are made; the live agent may be among the first rows read
        assert _queries(calls, table) == 2 if table is InstanceTable else 1 <= _queries(calls, table) <= 2, (path, calls)
    listed, token, requests = [], None, 0
    while requests == 0 or token:
        status, reply = caller.get(f"/api/client/{client_id}/agents?limit=1" + (f"&next_token={token}" if token else ""))
        assert status == 200, reply
        listed += [a["agent_id"] for a in reply["agents"]]
        token, requests = reply["next_token"], requests + 1
        assert requests < 20
    assert listed == [agent_ids[5]]


# --- cursors a tenant can make or keep --------------------------------------------------------------------------------


def test_a_cursor_of_my_own_partition_positioned_at_another_tenants_row_lists_only_my_rows(make_tenant):
    """The attack: B forges cursors that pass the partition check (B's own client id) but whose other key attributes
    are A's: A's instance id and installation time in the instances listing, A's agent id and logical id in the
    agents listing, A's notification id. DynamoDB takes an exclusive start key as a position, not a row to read, so
    B hopes the page starts "at" A's row and carries it. Holds: every answer is 200 with B's own rows only (or none),
    and nothing of A's — its ids, instance, name — appears."""
    from chalicelib.repositories.paging import encode_token

    a, a_caller = make_tenant()
    a_reg = registration()
    a_agent = a_caller.post("/api/agents/register", a_reg)[1]["agent_id"]
    a_note = a_caller.get("/api/notifications")[1]["notifications"]
    b, b_caller = make_tenant()
    b_caller.post("/api/agents/register", registration())
    forged = {
        f"/api/client/{b}/instances?status=all": {"instance_id": a_reg["instance_id"], "client_id": b,
                                                  "installed_at": "2099-01-01T00:00:00.000000+0000"},
        f"/api/client/{b}/agents": {"client_id": b, "agent_id": a_agent, "logical_agent_id": a_reg["logical_agent_id"]},
        "/api/notifications": {"client_id": b, "notification_id": a_note[0]["id"] if a_note else "20990101T0-x"},
    }
    for path, key in forged.items():
        token = encode_token({name: {"S": value} for name, value in key.items()})
        status, reply = b_caller.get(f"{path}{'&' if '?' in path else '?'}next_token={token}")
        assert status == 200, (path, reply)
        text = str(reply)
        assert a not in text and a_agent not in text and a_reg["logical_agent_id"] not in text, (path, reply)
        rows = next(v for k, v in reply.items() if isinstance(v, list))
        assert all(row.get("instance_id") != a_reg["instance_id"] for row in rows), (path, reply)


@pytest.mark.parametrize("token", ["-1", "1e3", "0x10", "\u0663", "1" * 7, " 5", "5 ", "+5", "NaN"])
def test_an_offset_cursor_that_is_no_small_ascii_number_is_400(make_tenant, token):
    """The attack: the agents history pages by offset (its ``next_token`` is a number): B sends one that
    ``int()`` would read differently from what a check saw (Arabic-Indic digits, a sign, spaces, hex, an
    exponent) or one past any fleet, hoping for a 500 or a slice that wraps round (a negative offset would list
    the fleet's tail). Holds: 400 ``next_token``; a large plain offset is an empty page."""
    client_id, caller = make_tenant()
    caller.post("/api/agents/register", registration())
    status, reply = caller.get(f"/api/client/{client_id}/agents/history?next_token={quote(token)}")
    assert_error(status, reply, 400, field="next_token")
    status, reply = caller.get(f"/api/client/{client_id}/agents/history?next_token=999999")
    assert status == 200 and reply == {"agents": [], "next_token": None}, reply


def test_an_agents_replica_cursor_naming_another_tenants_replica_lists_only_its_own(make_tenant):
    """The attack: the agent's replica list pages by replica id (``next_token`` = the last id shown; rows after it
    by id). B passes the id of A's standby, an empty string and ids that sort before every real one, hoping the
    comparison reaches beyond B's agent. Holds: the list is B's agent's rows only, in every case, and a cursor
    that is no id is 400."""
    a, a_caller = make_tenant()
    a_agent = a_caller.post("/api/agents/register", registration())[1]["agent_id"]
    assert a_caller.post(f"/api/client/agents/{a_agent}/config", {"manual_replica_enabled": True})[0] == 200
    a_replica = a_caller.post(f"/api/agents/{a_agent}/replicas",
                              {"instance_id": account_instance("eu-west-1c"), "pool_id": "m5.large.eu-west-1c"})
    assert a_replica[0] == 201, a_replica
    b, b_caller = make_tenant()
    b_agent = b_caller.post("/api/agents/register", registration())[1]["agent_id"]
    for token in (a_replica[1]["replica_id"], "0", "rep-", "-"):
        status, reply = b_caller.get(f"/api/agents/{b_agent}/replicas?include_terminated=true&next_token={token}")
        assert status == 200 and reply["replicas"] == [], (token, reply)
        assert a_replica[1]["replica_id"] not in str(reply) or token == a_replica[1]["replica_id"], reply
    for token in ("", "rep-x/../..", "rep-\u0663", "*"):
        status, reply = b_caller.get(f"/api/agents/{b_agent}/replicas?next_token={quote(token)}")
        assert_error(status, reply, 400, field="next_token")


def test_a_cursor_kept_across_a_suspension_or_a_token_regeneration_lists_nothing(make_tenant, admin):
    """The attack: a tenant takes a page's ``next_token`` then is suspended (status inactive), or its token is
    regenerated (an employee who left keeps the old token and a cursor). The cursor is a key of the tenant's own
    partition, so nothing in it is secret: B hopes the cursor carries the authority its token lost. Holds: the
    suspended client's token is 403 with the cursor, the old token 401, and neither lists a row; the new token
    (the tenant's own) follows the cursor."""
    client_id, caller = make_tenant()
    for _ in range(3):
        caller.post("/api/agents/register", registration())
    status, page = caller.get(f"/api/client/{client_id}/agents?limit=1")
    assert status == 200 and page["next_token"], page
    path = f"/api/client/{client_id}/agents?limit=1&next_token={page['next_token']}"
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})[0] == 200
    status, reply = caller.get(path)
    assert_error(status, reply, 403)
    assert "agents" not in reply
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "active"})[0] == 200
    status, fresh = admin.post(f"/api/admin/clients/{client_id}/regenerate-token", {})
    assert status == 200, fresh
    status, reply = caller.get(path)
    assert_error(status, reply, 401)
    assert "agents" not in reply
    status, reply = Caller(caller.http, token=fresh["client_token"]).get(path)
    assert status == 200 and len(reply["agents"]) <= 1, reply


# --- the filters of the listings, with another tenant's ids and hostile values --------------------------------------


def test_a_query_parameter_naming_another_tenants_agent_answers_as_a_made_up_one(make_tenant):
    """The attack (walk 7 compared ids in the path only): ids in the query string — ``pricing-history?agent_id=`` of A's
    agent, of B's own deleted agent and of a made-up id; ``switch-history?instance_id=`` of A's instance and of a
    made-up one. A different status, code, message, header or row count would tell B which of A's ids exist, or
    show A's pools' prices. Holds: A's agent id and a made-up one answer the same 404 (B's deleted agent too), and
    the switch history filtered on A's instance answers what a made-up instance id answers: no rows."""
    a, a_caller = make_tenant()
    a_reg = registration()
    a_agent = a_caller.post("/api/agents/register", a_reg)[1]["agent_id"]
    b, b_caller = make_tenant()
    gone = b_caller.post("/api/agents/register", registration())[1]["agent_id"]
    assert b_caller.call("DELETE", f"/api/client/agents/{gone}")[0] == 200
    made_up_agent, made_up_instance = "ag-" + uuid.uuid4().hex, new_instance_id()
    answers = [_raw(b_caller, "GET", f"/api/client/pricing-history?agent_id={agent_id}")
               for agent_id in (a_agent, made_up_agent, gone)]
    for status, _, body in answers:
        assert_error(status, body, 404, field="agent_id")
    assert answers[0][1:] == answers[1][1:] == answers[2][1:], answers
    theirs = _raw(b_caller, "GET", f"/api/client/{b}/switch-history?instance_id={a_reg['instance_id']}")
    made_up = _raw(b_caller, "GET", f"/api/client/{b}/switch-history?instance_id={made_up_instance}")
    assert theirs[0] == made_up[0] == 200 and theirs[2] == made_up[2] == {"switches": [], "next_token": None}
    assert theirs[1] == made_up[1]


def test_a_poll_naming_another_tenants_instance_leases_none_of_its_commands(make_tenant):
    """The attack: B's agent polls its commands naming A's instance (``pending-commands?instance_id=``): the server
    leases commands to the instance a poll names, so B hopes to be handed (or to lease away, so A's agent never
    gets it) a switch A queued for that instance. Holds: B gets none of A's commands and A's command stays pending,
    unleased; A's agent still gets it."""
    from chalicelib import bootstrap

    a, a_caller = make_tenant()
    a_reg = registration()
    a_agent = a_caller.post("/api/agents/register", a_reg)[1]["agent_id"]
    status, forced = a_caller.post(f"/api/client/instances/{a_reg['instance_id']}/force-switch", {"target": "ondemand"})
    assert status == 201, forced
    _, b_caller = make_tenant()
    b_agent = b_caller.post("/api/agents/register", registration())[1]["agent_id"]
    status, reply = b_caller.get(f"/api/agents/{b_agent}/pending-commands?instance_id={a_reg['instance_id']}")
    assert status == 200 and forced["command"]["id"] not in str(reply), reply
    command = bootstrap.command_store().get(a_agent, forced["command"]["id"])
    assert command.status.value == "pending", command
    status, reply = a_caller.get(f"/api/agents/{a_agent}/pending-commands?instance_id={a_reg['instance_id']}")
    assert status == 200 and forced["command"]["id"] in str(reply), reply


PAGINATED = ("/api/notifications", "/api/client/interruptions", "/api/client/{b}/agents", "/api/client/{b}/agents/history",
             "/api/client/{b}/agents/decisions", "/api/client/{b}/instances", "/api/client/{b}/replicas",
             "/api/client/{b}/switch-history", "/api/agents/{agent}/replicas", "/api/agents/{agent}/interruptions",
             "/api/client/agents/{agent}/decisions")


def test_a_page_size_outside_its_bounds_or_not_plain_digits_is_400_on_every_listing(make_tenant):
    """The attack: ``limit`` at and past its bounds on every paginated client and agent listing — 0, the maximum + 1,
    negative, fractional, exponent, hex, signed, padded, non-ASCII digits, empty, a 40-digit number — hoping for a
    500 (DynamoDB refuses a ``Limit`` below 1), an unbounded page (a huge limit, or one ``int()`` reads as huge),
    or a listing that ignores it. Holds: every one is 400 naming ``limit``; the maximum itself is a 200."""
    from chalicelib.settings import get_settings

    b, caller = make_tenant()
    agent = caller.post("/api/agents/register", registration())[1]["agent_id"]
    top = get_settings().max_page_size
    bad = ("0", str(top + 1), "-1", "1.5", "1e2", "0x10", "+5", " 5", "\u0665", "", "9" * 40)
    for route in PAGINATED:
        path = route.format(b=b, agent=agent)
        for value in bad:
            status, reply = caller.get(f"{path}?limit={quote(value)}")
            assert_error(status, reply, 400, field="limit")
        status, reply = caller.get(f"{path}?limit={top}")
        assert status == 200, (path, reply)


@pytest.mark.parametrize("query", [
    "region=eu-west-1%23x&instance_type=m5.large", "region=eu-west-1&instance_type=m5.large%23eu-west-1a",
    "region=eu-west-1&instance_type=m5.large%00", "region=EU-WEST-1&instance_type=m5.large",
    "region=eu-west-1&instance_type=" + "m" * 70 + ".large", "region=..%2F..&instance_type=m5.large",
])
def test_the_pools_filter_never_reaches_into_another_key_of_the_shared_index(make_tenant, query):
    """The attack: ``/api/client/pools`` queries the pools index under the key ``<region>#<instance_type>``: B puts
    the separator into either half (``eu-west-1#x``, ``m5.large#eu-west-1a``), a NUL, another case, an over-long type,
    a path, hoping to read another key of the shared market index or make DynamoDB refuse the key (a 500). Holds:
    400 naming the parameter."""
    _, caller = make_tenant()
    status, reply = caller.get(f"/api/client/pools?{query}")
    assert_error(status, reply, 400)
    assert reply.get("field") in ("region", "instance_type"), reply


@pytest.mark.parametrize("query", ["status=ACTIVE", "status=active%20", "status=active,all", "status=", "mode=Spot",
                                   "mode=spot%00", "status=terminated%0a", "unread=yes", "include_terminated=2"])
def test_an_enumerated_filter_takes_its_listed_values_only(make_tenant, query):
    """The attack: the enumerated filters (``status``, ``mode``, ``unread``, ``include_terminated``) in another case,
    padded, as a list, empty or with a control character, on every listing that reads them, hoping one is read as
    "no filter" (every row, the deleted and ended ones too) or as a DynamoDB filter value it was not checked as.
    Holds: 400 naming the parameter on each listing that takes it (a listing that takes no such parameter ignores
    it and answers its default page)."""
    b, caller = make_tenant()
    agent = caller.post("/api/agents/register", registration())[1]["agent_id"]
    name = query.split("=")[0]
    takes = {"status": (f"/api/client/{b}/instances", f"/api/client/{b}/replicas"),
             "mode": (f"/api/client/{b}/instances",), "unread": ("/api/notifications",),
             "include_terminated": (f"/api/agents/{agent}/replicas",)}[name]
    for path in takes:
        status, reply = caller.get(f"{path}?{query}")
        assert_error(status, reply, 400, field=name)


# --- what an answer tells: headers and codes of another tenant's ids, error answers ---------------------------------


def test_no_answer_about_another_tenants_id_differs_from_a_made_up_ones_in_its_headers(tenant_a, make_tenant,
                                                                                     chalice_app):
    """The attack (walk 7 compared statuses and bodies): B calls every client and agent route with A's ids, then
    with made-up ids of the same shapes, and compares the *headers*: a ``Retry-After``, a ``Content-Length``, a
    ``Location``, a CSV filename or an ``X-Next-Token`` present for one and not the other would tell B which ids
    are A's. Holds: for every route the two answers carry the same headers with the same values (the length too,
    the ids being of the same length), besides their per-request correlation id."""
    from tests.api.test_security_walk_7 import _shaped_like, paired_calls

    ids, _ = tenant_a
    _, b = make_tenant()
    made_up = _shaped_like(ids)
    differ = []
    for method, path, (real_path, body), (other_path, other_body) in paired_calls(chalice_app, ids, made_up):
        real = _raw(b, method, real_path, body)
        other = _raw(b, method, other_path, other_body)
        if real[:2] != other[:2]:
            differ.append((method, path, real[:2], other[:2]))
    assert differ == []


def test_an_answer_to_a_fault_of_ours_names_no_table_arn_account_or_stage(make_tenant, monkeypatch):
    """The attack: B makes the service fail on its side (here a DynamoDB refusal whose message names the table's ARN,
    the account and the stage, as AWS's messages do) and reads the answer for the deployment: the table name, the
    account id, the function, a stack trace. Holds: 500 ``internal_error`` with the generic message, JSON, and no
    header or body text naming the table, the ARN, the account or the stage; the details go to the log only."""
    from botocore.exceptions import ClientError
    from pynamodb.exceptions import QueryError

    from chalicelib import quotas

    table = "spot-optimizer-dev-agents"
    arn = f"arn:aws:dynamodb:eu-west-1:123456789012:table/{table}"
    refusal = ClientError({"Error": {"Code": "ValidationException", "Message": f"The table {arn} refused the key"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "Query")

    def failing(*args, **kwargs):
        raise QueryError("Failed to query items", cause=refusal)

    monkeypatch.setattr(quotas, "limits", failing)
    _, caller = make_tenant()
    status, headers, body = _raw(caller, "GET", "/api/client/limits")
    assert status == 500 and body == {"error": "internal_error", "message": "internal error; it has been logged"}
    assert headers["content-type"] == "application/json" and headers["x-content-type-options"] == "nosniff"
    text = json.dumps([headers, body]).lower()
    for secret in (table, "123456789012", "arn:aws", "dynamodb", "traceback", "validationexception", "dev-"):
        assert secret not in text, secret


def test_an_error_that_echoes_a_hostile_value_is_inert_json(make_tenant):
    """The attack: reflected content — B sends values that validation messages quote back (a pool id, a zone, a tag
    key) carrying markup and a script, hoping an error answer is rendered as HTML by a browser that opens the API's
    URL (a GET link is not possible here: these are JSON POST bodies, but a console that shows the message would be
    a stored sink). Holds: every such answer is a 400 JSON error (``application/json``, ``nosniff``, a policy of
    ``default-src 'none'``, never framed), and nothing is written."""
    from tests.api._support import snapshot_tables
    from tests.api.test_security_walk_15 import _unchanged_but_rate_limits

    _, caller = make_tenant()
    agent = caller.post("/api/agents/register", registration())[1]["agent_id"]
    assert caller.post(f"/api/client/agents/{agent}/config", {"manual_replica_enabled": True})[0] == 200
    markup = "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>"
    before = snapshot_tables()
    for body in ({"pool_id": markup}, {"exclude_zones": [markup]}, {"tags": {markup: "x"}},
                 {"tags": {"team": markup}}):
        status, headers, reply = _raw(caller, "POST", f"/api/agents/{agent}/replicas", body)
        assert_error(status, reply, 400)
        assert headers["content-type"] == "application/json" and headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["x-frame-options"] == "DENY"
    _unchanged_but_rate_limits(before)


# --- the launch inputs a tenant names -----------------------------------------------------------------------------


def test_a_standby_excluding_every_zone_of_its_region_launches_nothing_and_is_409(api, make_tenant):
    """The attack: a standby create whose ``exclude_zones`` names every zone of the agent's region (and zones of other
    regions), hoping the placement falls back to a pool outside the exclusion — the primary's own pool, another
    region's, or a subnet of the default VPC the tenant did not choose — or fails half-way (a 500 with a replica row
    and no instance). Holds: 409 ``no_pool``, no instance launched, no replica row, the agent's slot free."""
    from tests.api._support import snapshot_tables
    from tests.api.test_security_walk_15 import _unchanged_but_rate_limits
    from tests.e2e.failover_support import REGION, ZONES, ec2, register_agent

    client_id, caller, agent_id, _, _ = register_agent(make_tenant)
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})[0] == 200
    before = snapshot_tables()
    zones = [*ZONES, f"{REGION}e", f"{REGION}f", "eu-west-1a"]
    status, reply = caller.post(f"/api/agents/{agent_id}/replicas", {"exclude_zones": zones})
    assert_error(status, reply, 409, code="no_pool")
    _unchanged_but_rate_limits(before)
    assert ec2().describe_instances(Filters=[{"Name": "tag:AgentId", "Values": [agent_id]}])["Reservations"] == []


def test_a_standby_copies_what_ec2_shows_of_the_primary_never_what_the_tenant_reported(api, make_tenant):
    """The attack: the launch inputs a tenant can write — the registration's ``ami_id`` (and a switch report's), which
    the agent row keeps — set to an AMI that is not the primary's (another tenant's golden image, a public
    backdoored one), hoping the standby's RunInstances takes it, or the network and instance profile that go with
    it. Holds: the standby runs the primary's own AMI, in its VPC, with its security groups and key, as EC2 shows
    the primary in the tenant's account; the reported AMI is nowhere in the launch."""
    from tests.e2e.failover_support import REGION, ZONES, configure, ec2, launch_primary, unique_type

    client_id, caller = make_tenant()
    itype = unique_type()
    primary = launch_primary(itype, ZONES[0])
    foreign_ami = "ami-0f0e0d0c0b0a09080"
    reg = registration(instance_id=primary, instance_type=itype, region=REGION, az=ZONES[0], mode="spot",
                       ami_id=foreign_ami)
    status, reply = caller.post("/api/agents/register", reg)
    assert status == 200, reply
    agent_id = reply["agent_id"]
    report = {"instance": {"instance_type": itype, "region": REGION},
              "pricing": {"on_demand_price": 0.192,
                          "spot_pools": [{"pool_id": f"{itype}.{z}", "price": 0.03} for z in ZONES]}}
    assert caller.post(f"/api/agents/{agent_id}/pricing-report", report)[0] == 200
    configure(client_id, agent_id, manual_replica_enabled=True)
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201, standby
    described = {i["InstanceId"]: i for r in ec2().describe_instances(
        InstanceIds=[primary, standby["instance_id"]])["Reservations"] for i in r["Instances"]}
    source, launched = described[primary], described[standby["instance_id"]]
    assert launched["ImageId"] == source["ImageId"] != foreign_ami
    assert launched.get("VpcId") == source.get("VpcId")
    assert {g["GroupId"] for g in launched["SecurityGroups"]} == {g["GroupId"] for g in source["SecurityGroups"]}
    assert launched.get("KeyName") == source.get("KeyName") and "IamInstanceProfile" not in launched


def test_a_cursor_of_many_keys_or_an_oversize_key_is_400_before_dynamodb_is_asked(make_tenant):
    """The attack: cursors built to cost the server before any check refuses them — a JSON object of thousands of
    keys all naming B's partition, a key value past DynamoDB's 1,024 bytes, a value of another type (a number, a
    list, a map), a cursor in standard base64 (``+``, ``/``) — hoping for work per key, a DynamoDB
    ``ValidationException`` (a 500 in AWS; moto does not check) or a cursor read differently by two decoders.
    Holds: each is 400 ``next_token`` and no Query reaches the notifications table; the standard-alphabet cursor
    is read as the very key its URL-safe form names (one key, one answer)."""
    from chalicelib.repositories.paging import encode_token

    client_id, caller = make_tenant()
    own = {"client_id": {"S": client_id}}
    cursors = [encode_token({**own, **{f"k{i}": {"S": "x"} for i in range(3000)}}),
               encode_token({**own, "notification_id": {"S": "x" * 1025}}),
               encode_token({**own, "notification_id": {"N": "1"}}),
               encode_token({**own, "notification_id": {"L": [{"S": "x"}]}}),
               encode_token({**own, "notification_id": {"M": {"S": {"S": "x"}}}}),
               encode_token({**own, "notification_id": {"S": "x", "N": "1"}})]
    for token in cursors:
        with dynamodb_calls() as calls:
            status, reply = caller.get(f"/api/notifications?next_token={quote(token)}")
        assert_error(status, reply, 400, field="next_token")
        assert _queries(calls, NotificationTable) == 0
    key = {**own, "notification_id": {"S": "?>?>?>"}}  # its base64 has "+" and "/" in the standard alphabet
    standard = base64.standard_b64encode(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).decode()
    assert standard.rstrip("=") != encode_token(key)
    answers = [caller.get(f"/api/notifications?next_token={quote(token)}") for token in (standard, encode_token(key))]
    assert answers[0] == answers[1] == (200, {"notifications": [], "next_token": None}), answers


def test_anonymous_health_checks_never_spend_the_accounts_dynamodb_control_plane(api, monkeypatch):
    """The attack: ``/health`` needs no credential, and each answer asked DynamoDB's control plane (``DescribeTable``).
    AWS throttles control-plane calls per account and Region (2,500 a second, shared with every deployment's
    CreateTable/UpdateTable) and asks that their answers be cached. BEFORE: every anonymous request made one
    DescribeTable, so a flood of health checks from anyone spent the operator's account-wide control-plane budget
    (a deployment's table updates throttled; the health check itself flapping to 503). NOW: a container asks at most
    once every ``health.CHECK_SECONDS`` and answers its last result in between; a failed check is still a 503 with
    Retry-After, and is asked again once that time has passed."""
    from chalicelib.api import health
    from chalicelib.tables.clients import ClientTable

    monkeypatch.setattr(health, "_last_check", None)
    with dynamodb_calls() as calls:
        answers = [api.http.get("/health") for _ in range(25)]
    assert {a.status_code for a in answers} == {200}
    assert [op for op, *_ in calls].count("DescribeTable") == 1, calls

    def unavailable():
        raise RuntimeError("DynamoDB did not answer")

    monkeypatch.setattr(ClientTable, "describe_table", unavailable)
    monkeypatch.setattr(health, "CHECK_SECONDS", 0)
    response = api.http.get("/health")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert json.loads(response.body)["checks"] == {"dynamodb": "unavailable"}


def test_a_deactivated_clients_token_is_told_apart_from_garbage_by_no_admin_route(make_tenant, admin, chalice_app):
    """The attack: B's client is deactivated mid-session; B keeps calling the operator's routes with its token in
    either header (and the legacy body), hoping an admin route answers a real-but-inactive client's token otherwise
    than a made-up one (a 403, another code or message: the token still names a client) or, worse, lets it through
    while the client row is being changed. Holds: every admin route answers the same 401 to the deactivated
    client's token, in the Bearer header or the admin header, as to a made-up token, and nothing is written."""
    from tests.api import test_tenant_isolation as isolation
    from tests.api._support import snapshot_tables
    from tests.api.test_security_walk_15 import _unchanged_but_rate_limits

    client_id, caller = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/status", {"status": "inactive"})[0] == 200
    ids = {"client_id": client_id, "account_id": "111111111111", "version": "never-uploaded"}
    made_up = "sot_" + uuid.uuid4().hex * 2
    before = snapshot_tables()
    for path, method in sorted(isolation.app_routes(chalice_app)):
        route = isolation.ROUTES[(path, method)]
        if not route.admin:
            continue
        url = path.format(**ids)
        anonymous = Caller(caller.http)
        for header, shape in (("Authorization", "Bearer {}"), ("X-Admin-Key", "{}")):
            answers = [_raw(anonymous, method, url, {"client_token": token}, {header: shape.format(token)})
                       for token in (caller.token, made_up)]
            assert answers[0][0] == 401 and answers[0] == answers[1], (method, path, header, answers)
    _unchanged_but_rate_limits(before)
