"""The web console (web/): ``GET /`` and its static files, served by the app itself.

web/ reaches the Lambda package through the vendor/web -> ../web symlink (Chalice packages only app.py,
chalicelib/ and vendor/, and puts vendor/'s contents at the package root, next to app.py), exactly as
components/ does; .ci/package-check proves the files are in deployment.zip.

Only the files present under web/ when the app starts are served, by name from a fixed table: a path
segment is a lookup key, never joined onto a file path. Every answer carries the security headers: a
content security policy without inline script (the console has none), no framing, no MIME sniffing.
The console calls the API with relative URLs, so it works under an API Gateway stage prefix too.
"""

from __future__ import annotations

import re
from pathlib import Path

from chalice import Blueprint, Response

from chalicelib.api.common import RESPONSE_HEADERS
from chalicelib.api.route_doc import documented

WEB = Path(__file__).resolve().parents[2] / "web"  # the package root (repo root locally, /var/task on Lambda)

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Every answer's headers (nosniff, no framing, no referrer), with the page's own policy; files are revalidated
# (no-cache), not forbidden from the cache like JSON answers.
SECURITY_HEADERS = {**RESPONSE_HEADERS, "Content-Security-Policy": CSP, "Cross-Origin-Opener-Policy": "same-origin",
                    "Cache-Control": "no-cache"}


def _table(folder: Path, *patterns: str) -> dict[str, Path]:
    """name -> file, for the servable files of one folder (no dot-files, known content types only)."""
    found = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_file() and not path.name.startswith(".") and path.suffix in CONTENT_TYPES:
                found[path.name] = path
    return found


# /console/{name}: the app's own modules, stylesheet and icon; /console/vendor/{name}: web/vendor/ (pinned).
ASSETS = _table(WEB, "*.css", "*.svg", "js/*.js")
VENDOR = _table(WEB / "vendor", "*.js")

LEADING = re.compile(r"^[/\\\s]+")  # what a redirect's path must not start with after its one slash

bp = Blueprint(__name__)


def _media_types(table: dict[str, Path]) -> tuple[str, ...]:
    """The media types a table's files are served as (for the OpenAPI document)."""
    return tuple(sorted({CONTENT_TYPES[p.suffix].split(";")[0] for p in table.values()})) or ("text/javascript",)


def _file(path: Path | None) -> Response:
    if path is None:
        return Response(body={"error": "not_found", "message": "no such console file"}, status_code=404,
                        headers={"Content-Type": "application/json", **SECURITY_HEADERS})
    return Response(body=path.read_text(encoding="utf-8"), status_code=200,
                    headers={"Content-Type": CONTENT_TYPES[path.suffix], **SECURITY_HEADERS})


@bp.route("/", methods=["GET"])
@documented(content=("text/html",), responses={404: None}, auth="none")
def index():
    """The console's single page (sign-in, then every client or admin page). API Gateway also answers the
    stage root without its trailing slash (``…/dev``), where the page's relative URLs would resolve one
    level up: that address is redirected to ``…/dev/``. The Location is a path on this site: one leading
    slash, whatever the request's path began with (``//host``, ``/\\host`` or ``/<tab>/host`` would be another site:
    browsers read a backslash as a slash and drop tabs and newlines)."""
    path = (bp.current_request.context or {}).get("path") or "/"
    if not path.endswith("/"):
        location = "/" + LEADING.sub("", path) + "/"
        return Response(body="", status_code=308, headers={"Location": location, **SECURITY_HEADERS})
    return _file(WEB / "index.html")


@bp.route("/console/{name}", methods=["GET"])
@documented(content=_media_types(ASSETS), responses={404: None}, auth="none")
def asset(name):
    """One of the console's modules (web/js/), its stylesheet or icon."""
    return _file(ASSETS.get(name))


@bp.route("/console/vendor/{name}", methods=["GET"])
@documented(content=_media_types(VENDOR), responses={404: None}, auth="none")
def vendor_asset(name):
    """A pinned third-party file (web/vendor/, see web/SOURCES.md)."""
    return _file(VENDOR.get(name))
