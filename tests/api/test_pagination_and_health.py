"""Pagination (``limit``, ``next_token``) on the lists, and the readiness check."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from chalicelib.tables.clients import ClientTable
from tests.api._support import assert_error
from tests.conftest import registration


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def _walk(caller, path, key, limit):
    """Follow next_token to the end; returns (items, pages)."""
    items, pages, token = [], 0, None
    while True:
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&next_token={token}" if token else "")
        status, body = caller.get(url)
        assert status == 200, body
        assert len(body[key]) <= limit
        items += body[key]
        pages += 1
        token = body["next_token"]
        if token is None:
            return items, pages
        assert pages < 10_000, "pagination does not terminate"


@pytest.fixture
def tenant_with_notifications(tenant_with_agent):
    """A tenant with three notifications (a termination of its agent's instance, then two status changes; a
    re-sent termination report notifies no one again)."""
    client_id, caller, agent_id, reg = tenant_with_agent
    for status_now in ("terminate", "online", "offline"):
        if status_now == "terminate":
            status, body = caller.post(f"/api/agents/{agent_id}/termination", {"reason": "test"})
        else:
            status, body = caller.post(f"/api/agents/{agent_id}/heartbeat", {"status": status_now})
        assert status == 200, body
    return client_id, caller


def test_admin_client_list_walks_every_client_once_in_creation_order(admin):
    """GIVEN several clients WHEN the admin lists with limit=1 and follows next_token THEN every client
    appears exactly once, in creation order, one per page."""
    created = []
    for _ in range(3):
        status, body = admin.post("/api/admin/clients/create", {"name": f"page-{uuid.uuid4().hex[:10]}"})
        assert status == 201
        created.append(body["client_id"])
    expected = {row.client_id for row in ClientTable.scan()}

    items, pages = _walk(admin, "/api/admin/clients", "clients", limit=1)
    ids = [c["client_id"] for c in items]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    stamps = [c["created_at"] for c in items]
    assert stamps == sorted(stamps)
    assert ids[-3:] == created
    assert pages in (len(expected), len(expected) + 1)
    assert all("client_token" not in c and "token_hash" not in c for c in items)

    bigger, _ = _walk(admin, "/api/admin/clients", "clients", limit=7)
    assert [c["client_id"] for c in bigger] == ids


def test_notifications_walk_newest_first(tenant_with_notifications):
    """GIVEN three notifications WHEN listed with limit=1 THEN three pages, newest first, no repeats."""
    _, caller = tenant_with_notifications
    items, _ = _walk(caller, "/api/notifications", "notifications", limit=1)
    assert len(items) == 3 and len({n["id"] for n in items}) == 3
    assert [n["created_at"] for n in items] == sorted((n["created_at"] for n in items), reverse=True)
    unread, _ = _walk(caller, "/api/notifications?unread=true", "notifications", limit=2)
    assert len(unread) == 3


@pytest.mark.parametrize("value", ["yes", "", "TRUEE", "2"])
def test_an_unread_filter_that_is_not_a_boolean_is_400_not_every_notification(tenant_with_notifications, value):
    """GIVEN notifications WHEN listed with ``unread`` neither true nor false (nor 1/0) THEN 400 on field unread
    (it read as false, listing read ones too); ``unread=TRUE`` and ``unread=0`` are booleans."""
    _, caller = tenant_with_notifications
    status, reply = caller.get(f"/api/notifications?unread={value}")
    assert_error(status, reply, 400, field="unread")
    assert caller.get("/api/notifications?unread=TRUE")[0] == 200
    assert caller.get("/api/notifications?unread=0")[0] == 200


@pytest.mark.parametrize("token", [
    "!!!not-base64!!!",
    "bm90IGpzb24",                                  # base64 of 'not json'
    _b64([1, 2, 3]),                                # JSON but not an object
    _b64({"listing": "client"}),                    # key value not in DynamoDB's typed shape
    _b64({"listing": {"S": "someone-else"}}),       # another partition
    _b64({"listing": {"S": "client"}}),             # right partition, missing the rest of the key
    _b64({"listing": {"S": "client"}, "client_id": {"N": "1"}, "created_at": {"S": "yesterday"}}),
], ids=["not-base64", "not-json", "json-list", "untyped-value", "other-partition", "partial-key", "bad-types"])
def test_garbage_next_token_on_admin_list_is_400(admin, token):
    """GIVEN a next_token the server never issued WHEN listing clients THEN 400 on field next_token."""
    status, body = admin.get(f"/api/admin/clients?limit=2&next_token={token}")
    assert_error(status, body, 400, field="next_token")


@pytest.mark.parametrize("make_token", [
    lambda cid: "garbage",
    lambda cid: _b64({"client_id": cid}),
    lambda cid: _b64({"client_id": {"S": cid}}),
    lambda cid: _b64({"client_id": {"S": cid}, "notification_id": {"N": "5"}}),
    lambda cid: _b64({"client_id": {"S": cid}, "notification_id": 5}),
    lambda cid: _b64({"client_id": {"S": cid}, "notification_id": {"S": "x"}, "listing": {"S": "client"}}),
], ids=["garbage", "untyped-partition", "partial-key", "numeric-sort-key", "untyped-sort-key", "extra-attr"])
def test_garbage_next_token_on_notifications_is_400(tenant_with_notifications, make_token):
    """GIVEN a malformed next_token for the caller's own partition WHEN listing notifications THEN 400."""
    client_id, caller = tenant_with_notifications
    status, body = caller.get(f"/api/notifications?next_token={make_token(client_id)}")
    assert_error(status, body, 400, field="next_token")


def test_next_token_of_tenant_a_is_rejected_for_tenant_b(tenant_with_notifications, make_tenant, admin):
    """GIVEN a next_token issued to tenant A WHEN tenant B presents it THEN 400 (never A's next page)."""
    _, a_caller = tenant_with_notifications
    status, body = a_caller.get("/api/notifications?limit=1")
    assert status == 200 and body["next_token"]
    a_token = body["next_token"]
    _, b_caller = make_tenant()
    status, reply = b_caller.get(f"/api/notifications?limit=1&next_token={a_token}")
    assert_error(status, reply, 400, field="next_token")

    # Nor does a token cross from one list to another.
    status, body = admin.get("/api/admin/clients?limit=1")
    status, reply = b_caller.get(f"/api/notifications?next_token={body['next_token']}")
    assert_error(status, reply, 400, field="next_token")
    status, reply = admin.get(f"/api/admin/clients?next_token={a_token}")
    assert_error(status, reply, 400, field="next_token")


def _raw_b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Key values DynamoDB refuses in an ExclusiveStartKey (ValidationException: a 500 in AWS; moto does not check).
UNUSABLE_KEY_VALUES = {"empty": '""', "over-1024-bytes": json.dumps("x" * 1025), "lone-surrogate": '"\\ud800"'}


@pytest.mark.parametrize("value", list(UNUSABLE_KEY_VALUES.values()), ids=list(UNUSABLE_KEY_VALUES))
def test_a_token_whose_key_value_dynamodb_refuses_is_400(tenant_with_notifications, admin, value):
    """GIVEN a forged next_token of the caller's own partition and list shape whose sort key (or scan key) is empty,
    longer than a DynamoDB key may be, or not text WHEN listing THEN 400 before DynamoDB sees it."""
    client_id, caller = tenant_with_notifications
    for who, path, key in (
            (caller, "/api/notifications", f'{{"client_id": {{"S": "{client_id}"}}, "notification_id": {{"S": {value}}}}}'),
            (caller, f"/api/client/{client_id}/switch-history",
             f'{{"client_id": {{"S": "{client_id}"}}, "switch_key": {{"S": {value}}}}}'),
            (admin, "/api/admin/clients",
             f'{{"listing": {{"S": "client"}}, "created_at": {{"S": {value}}}, "client_id": {{"S": "cl-x"}}}}'),
            (admin, "/api/admin/instances", f'{{"instance_id": {{"S": {value}}}}}'),
            (admin, "/api/admin/activity", f'{{"day": {{"S": "2026-01-01"}}, "event_key": {{"S": {value}}}}}')):
        status, body = who.get(f"{path}?next_token={_raw_b64(key)}")
        assert_error(status, body, 400, field="next_token")


@pytest.mark.parametrize("limit", ["0", "abc", "-1", "201", "1.5", ""])
def test_bad_limit_is_400(admin, tenant_with_notifications, limit):
    """GIVEN a limit that is not an integer in 1..200 WHEN listing THEN 400 on field limit."""
    _, caller = tenant_with_notifications
    for who, path in ((admin, "/api/admin/clients"), (caller, "/api/notifications"),
                      (admin, "/api/admin/activity")):
        status, body = who.get(f"{path}?limit={limit}")
        assert_error(status, body, 400, field="limit")


def test_limit_bounds_are_accepted(admin):
    """GIVEN limit 1 and the maximum 200 WHEN listing THEN 200 with at most that many items."""
    for limit in (1, 200):
        status, body = admin.get(f"/api/admin/clients?limit={limit}")
        assert status == 200 and 1 <= len(body["clients"]) <= limit


def test_activity_feed_is_bounded_by_limit(admin, make_tenant):
    """GIVEN more events than the limit WHEN the activity feed is read THEN at most ``limit``, newest first."""
    _, caller = make_tenant()
    for _ in range(3):
        assert caller.post("/api/agents/register", registration())[0] == 200
    status, body = admin.get("/api/admin/activity?limit=2")
    assert status == 200 and len(body["events"]) == 2
    stamps = [e["created_at"] for e in body["events"]]
    assert stamps == sorted(stamps, reverse=True)


def test_health_is_ok_without_auth(api):
    """GIVEN the running app WHEN /health is called without any credentials THEN 200 status ok."""
    response = api.http.get("/health")
    assert response.status_code == 200
    body = json.loads(response.body)
    assert body["status"] == "ok" and body["checks"] == {"dynamodb": "ok"} and body["stage"] == "dev"
    assert response.headers.get("X-Correlation-Id")


def test_correlation_id_is_echoed(api):
    """GIVEN an X-Correlation-Id WHEN any route answers THEN the same id comes back."""
    response = api.http.get("/health", headers={"X-Correlation-Id": "trace-123"})
    assert response.headers["X-Correlation-Id"] == "trace-123"


def test_unknown_route_is_not_a_500(api):
    """GIVEN a path the app does not serve WHEN called THEN a 4xx, not a server error."""
    response = api.http.get("/api/does-not-exist")
    assert 400 <= response.status_code < 500


def test_mark_all_read_is_bounded_per_call_and_says_when_more_are_left(tenant_with_notifications, monkeypatch):
    """GIVEN more unread notifications than one call marks (an agent can create thousands: every termination report
    notifies) WHEN mark-all-read is called THEN it marks at most its budget, oldest first, and answers ``more`` until
    none are left: one request never runs past API Gateway's timeout (a 504)."""
    from chalicelib.repositories import activity

    monkeypatch.setattr(activity, "MARK_ALL_READ_BUDGET", 2)
    _, caller = tenant_with_notifications
    status, body = caller.post("/api/notifications/mark-all-read", {})
    assert status == 200 and body == {"success": True, "updated": 2, "more": True}, body
    unread, _ = _walk(caller, "/api/notifications?unread=true", "notifications", limit=50)
    everything, _ = _walk(caller, "/api/notifications", "notifications", limit=50)
    assert [n["id"] for n in unread] == [max(n["id"] for n in everything)]  # the oldest two were marked
    status, body = caller.post("/api/notifications/mark-all-read", {})
    assert status == 200 and body == {"success": True, "updated": 1, "more": False}, body
    status, body = caller.post("/api/notifications/mark-all-read", {})
    assert body == {"success": True, "updated": 0, "more": False}, body
    assert _walk(caller, "/api/notifications?unread=true", "notifications", limit=50)[0] == []


def test_mark_all_read_never_writes_back_a_notification_removed_meanwhile(tenant_with_notifications, monkeypatch):
    """GIVEN a notification removed (its TTL, the data cleaner) after mark-all-read's query read it WHEN the call
    marks it THEN the row stays gone (an unconditioned UpdateItem wrote it back as a stub with no message) and the
    others are marked."""
    from chalicelib.repositories import activity
    from chalicelib.tables import NotificationTable

    client_id, caller = tenant_with_notifications
    rows = list(NotificationTable.query(client_id, consistent_read=True))
    gone = rows[0]
    real_query = NotificationTable.query

    def query_then_remove(*args, **kwargs):
        found = list(real_query(*args, **kwargs))
        NotificationTable(client_id, gone.notification_id).delete()
        return iter(found)

    monkeypatch.setattr(NotificationTable, "query", query_then_remove)
    updated, more = activity.mark_all_read(client_id, gone.created_at)
    monkeypatch.undo()
    assert (updated, more) == (len(rows) - 1, False)
    left = {r.notification_id: r for r in NotificationTable.query(client_id, consistent_read=True)}
    assert gone.notification_id not in left and len(left) == len(rows) - 1
    assert all(r.is_read for r in left.values())
