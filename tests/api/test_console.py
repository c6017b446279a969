"""The web console's static files, served by the app (chalicelib/api/console.py): the page, its modules and
the pinned vendor files with their content types and security headers; nothing outside the table."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from chalicelib.api import console

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def http(api):
    return api.http


def test_index_is_served_with_a_csp_without_inline_script_and_no_framing(http):
    response = http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    page = response.body.decode()
    # no inline script: every <script> has a src, and no inline event handler attribute
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert not re.search(r"\son[a-z]+=", page)
    for url in re.findall(r'(?:src|href)="([^"#]+)"', page):
        asset = http.get("/" + url)
        assert asset.status_code == 200, url
        assert asset.headers["Content-Security-Policy"] == csp


def test_every_module_the_console_imports_is_served_as_javascript(http):
    """Each relative import of each module resolves to a served file (the import graph is whole)."""
    seen, todo = set(), ["main.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = f"/console/{name}"
        response = http.get(path)
        assert response.status_code == 200, path
        assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
        if name.startswith("vendor/"):
            continue
        for target in re.findall(r'from\s+"\./([^"]+)"', response.body.decode()):
            todo.append(target)
    assert {"main.js", "api.js", "ui.js", "vendor/htm-preact-standalone.module.js"} <= seen
    assert {p.name for p in (ROOT / "web" / "js").glob("*.js")} == {n for n in seen if "/" not in n}


@pytest.mark.parametrize("path", ["/console/fetch_vendor.py", "/console/SOURCES.md", "/console/..%2Fapp.py",
                                  "/console/index.html", "/console/vendor/..%2F..%2Fapp.py",
                                  "/console/vendor/chart.umd.js.map", "/console/nope.js"])
def test_only_files_of_the_table_are_served(http, path):
    response = http.get(path)
    assert response.status_code == 404
    assert b"import" not in response.body and b"chalice" not in response.body.lower()


def test_vendor_files_match_their_recorded_hashes():
    """web/SOURCES.md records each vendored file's sha256 (make web-vendor writes both)."""
    sources = (ROOT / "web" / "SOURCES.md").read_text()
    rows = re.findall(r"\| vendor/(\S+) \| (\S+) \| (\S+) \| (https://registry\.npmjs\.org/\S+\.tgz) \| `(sha512-\S+)` \| `([0-9a-f]{64})` \|",
                      sources)
    assert {r[0] for r in rows} == set(console.VENDOR) == {"chart.umd.min.js", "htm-preact-standalone.module.js"}
    for name, _package, _version, _url, _integrity, sha256 in rows:
        assert hashlib.sha256((ROOT / "web" / "vendor" / name).read_bytes()).hexdigest() == sha256, name


def test_the_console_is_packaged_through_the_vendor_symlink():
    """Chalice packages vendor/'s contents at the package root: vendor/web must be a link to web/."""
    link = ROOT / "vendor" / "web"
    assert link.is_symlink() and link.resolve() == (ROOT / "web").resolve()


def test_console_code_calls_only_relative_api_urls_and_keeps_secrets_out_of_urls():
    code = "\n".join(p.read_text() for p in (ROOT / "web" / "js").glob("*.js"))
    assert "localStorage" not in code  # sessionStorage only
    assert "http://" not in code and "https://" not in code
    assert not re.search(r"[?&](token|key|admin_key|client_token)=", code)
    assert "eval(" not in code and "new Function" not in code and "innerHTML" not in code


def _gateway_event(stage_path: str) -> dict:
    """An API Gateway (REST, proxy) event for GET of the stage root as the browser asked for it."""
    return {"resource": "/", "path": "/", "httpMethod": "GET", "headers": {"accept": "text/html"},
            "multiValueHeaders": None, "queryStringParameters": None, "multiValueQueryStringParameters": None,
            "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
            "requestContext": {"resourcePath": "/", "httpMethod": "GET", "path": stage_path, "stage": "api",
                               "identity": {"sourceIp": "203.0.113.9"}}}


@pytest.mark.parametrize("stage_path,status,location", [("/api", 308, "/api/"), ("/api/", 200, None)])
def test_the_stage_root_without_its_slash_is_redirected_to_it(api, chalice_app, stage_path, status, location):
    response = chalice_app(_gateway_event(stage_path), None)
    assert response["statusCode"] == status
    assert response["headers"].get("Location") == location
    assert "Content-Security-Policy" in response["headers"]


@pytest.mark.parametrize("path", ["//evil.example/;x", "//evil.example/%2e%2e;x", "/;x"])
def test_the_redirect_to_the_stage_root_never_leaves_the_site(http, path):
    """chalice local (local mode, the demo) matches ``//evil.example/;x`` to ``/`` (urlparse reads a host and
    a ``;`` parameter) and hands the raw path on: a Location of ``//evil.example/…`` is a protocol-relative
    URL, an open redirect to another site from a link on the console's own origin."""
    response = http.get(path)
    location = response.headers.get("Location")
    if response.status_code == 308:
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    else:
        assert response.status_code in (200, 403, 404)


@pytest.mark.parametrize("stage_path", ["//evil.example", "/\\evil.example", "///evil.example", "/\t/evil.example"])
def test_a_stage_path_naming_another_host_is_kept_on_this_site(api, chalice_app, stage_path):
    response = chalice_app(_gateway_event(stage_path), None)
    assert response["statusCode"] == 308
    assert response["headers"]["Location"] == "/evil.example/"
