"""Headers every API answer carries, not only the console's files: the JSON answers hold client tokens (create,
regenerate), the admin's view of every tenant and each tenant's fleet, so no browser or proxy cache may keep
them, no browser may sniff them into HTML and no page may frame them."""

from __future__ import annotations

import pytest


def _assert_protected(response):
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert headers.get("cache-control") == "no-store", response.headers
    assert headers.get("x-content-type-options") == "nosniff", response.headers
    assert headers.get("x-frame-options") == "DENY", response.headers
    assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), response.headers


def test_a_new_client_token_is_never_cacheable(admin, api):
    response = api.http.post("/api/admin/clients/create", headers=admin.headers(),
                             body='{"name": "headers-probe"}')
    assert response.status_code == 201
    assert b"client_token" in response.body
    _assert_protected(response)


def test_authenticated_client_answers_are_never_cacheable(api, make_tenant):
    client_id, caller = make_tenant()
    for path in ("/api/client/validate", f"/api/client/{client_id}", "/api/notifications",
                 f"/api/client/{client_id}/instances?format=csv"):
        response = api.http.get(path, headers=caller.headers())
        assert response.status_code == 200, path
        _assert_protected(response)


@pytest.mark.parametrize("path,headers", [("/api/client/validate", {}), ("/api/admin/clients", {"X-Admin-Key": "wrong"}),
                                          ("/api/client/validate", {"Authorization": "Bearer sot_nope"})])
def test_error_answers_carry_the_same_headers(api, path, headers):
    response = api.http.get(path, headers=headers)
    assert response.status_code in (401, 403)
    _assert_protected(response)


def test_the_console_files_keep_their_own_policy(api):
    """The console's files are revalidated (no-cache), not re-fetched on every load, and keep their CSP."""
    response = api.http.get("/")
    assert response.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
