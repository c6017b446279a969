"""The server URL the migration guide gives v4 users must still reach the API the way v4 builds its calls:
``urljoin(SERVER_URL, "/api/agents/...")`` (the legacy agent's client), which keeps only the scheme and host of the URL."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin, urlparse

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "legacy-compatibility.md"


def _suggested_urls() -> list[str]:
    """The URLs of the paragraph that tells an operator what to set ``SPOT_OPTIMIZER_SERVER_URL`` to."""
    paragraph = next(p for p in GUIDE.read_text().split("\n\n") if p.startswith("To move an agent"))
    return re.findall(r"`(https?://[^`]+)`", paragraph)


def test_the_guides_server_url_keeps_its_path_when_v4_joins_a_route_to_it():
    urls = _suggested_urls()
    assert urls
    for url in urls:
        joined = urljoin(url, "/api/agents/register")
        assert joined == url.rstrip("/") + "/api/agents/register", (url, joined)
        assert urlparse(url).path in ("", "/"), url
