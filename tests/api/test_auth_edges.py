"""Edge cases of the credentials a request carries (PRODUCT.md §3, §5): odd text in a token or key is
refused with a JSON 401, never a 500."""

from __future__ import annotations

import pytest

from tests.api._support import assert_error
from tests.conftest import Caller, registration

LONE_SURROGATE = "\ud800"  # valid in a JSON string ("\\ud800"), not encodable as UTF-8


@pytest.mark.parametrize("method, path", [("POST", "/api/agents/register"),
                                          ("POST", "/api/notifications/mark-all-read"),
                                          ("POST", "/api/agents/ag-0123abcd/heartbeat")])
def test_a_body_token_that_is_not_valid_unicode_is_401(api, method, path):
    """GIVEN a legacy body ``client_token`` holding a lone surrogate (JSON allows it, UTF-8 does not)
    WHEN a client or agent route is called THEN 401, not a 500 from hashing it."""
    body = {**registration(), "client_token": f"sot_{LONE_SURROGATE}"}
    status, reply = Caller(api.http).call(method, path, body)
    assert_error(status, reply, 401, code="unauthorized")
