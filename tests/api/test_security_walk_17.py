"""Security walk 17: what an outside tester holding two tenants' client tokens (and their agents' credentials, no
admin key) tries against the listings and the answers after sixteen walks — what one request of a listing may make
the service read (a filter that matches nothing of a large partition, a page size at its bounds), the cursors a
tenant can make or keep (one of its own listing under another filter, across a suspension or a token regeneration,
the offset and id cursors), the filters of every listing given another tenant's ids or hostile values, the headers
and codes of an answer about another tenant's id against a made-up one's, what an error answer echoes of the request
and of the deployment, and the launch inputs a tenant names (a standby's pool, zones and tags). Each test is one
attack; its docstring says what it tries and what holds (and, when it found something, what happened before the
fix)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.tables.notifications import NotificationTable
from tests.api._support import assert_error
from tests.conftest import dynamodb_calls
from tests.integration.test_data_cleaner import _notification


def _queries(calls, table) -> int:
    """How many Query requests of ``calls`` (``dynamodb_calls``) went to ``table``."""
    return sum(1 for op, name, _, _ in calls if op == "Query" and name == table.Meta.table_name)


# --- what one request of a listing may make the service read --------------------------------------------------------


def test_an_unread_filter_over_thousands_of_read_notifications_reads_one_page_per_request(make_tenant):
    """The attack: a tenant's agents make notifications by the thousand (every termination report of an online agent
    notifies; they live 30 days), the tenant marks them all read, then asks ``/api/notifications?unread=true&limit=1``
    over and over: the filter matches none of them. BEFORE: pynamodb's ``limit`` is the count of items *that passed
    the filter*, so the listing went on Query after Query (each evaluating ``limit`` rows) until it found one unread
    notification or read the whole partition: one API request made one DynamoDB request per read notification
    (thousands of sequential calls: past API Gateway's 29 s, the read units billed to the operator, 1,200 times a
    minute). NOW: one request of a listing is one Query (``paging.first_page``): a page may hold fewer rows than
    ``limit`` (none here) and its ``next_token`` goes on where DynamoDB stopped; following it still finds every
    unread notification."""
    client_id, caller = make_tenant()
    now = datetime.now(UTC)
    unread = _notification(client_id, now - timedelta(days=1, minutes=1), False, "the-unread-one")
    for i in range(40):
        _notification(client_id, now - timedelta(minutes=i), True, f"read{i}")
    with dynamodb_calls() as calls:
        status, reply = caller.get("/api/notifications?unread=true&limit=1")
    assert status == 200, reply
    assert _queries(calls, NotificationTable) == 1, calls
    found, token, requests = [n["id"] for n in reply["notifications"]], reply["next_token"], 1
    while token:
        status, reply = caller.get(f"/api/notifications?unread=true&limit=10&next_token={token}")
        assert status == 200, reply
        found += [n["id"] for n in reply["notifications"]]
        token, requests = reply["next_token"], requests + 1
        assert requests < 20
    assert found == [unread]
