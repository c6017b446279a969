"""The console given hostile input: links anyone can send (the hash route) and API values written by agents or
other users (hostnames, notification messages). Values are text, never markup; a malformed link still opens
a page. Any script error or CSP violation fails the test (the ``page`` fixture)."""

from __future__ import annotations

import json
import re

import pytest

from tests.browser.conftest import sign_in

pytestmark = pytest.mark.slow

PAYLOAD = '<img src=x onerror="window.__pwned=1">'


@pytest.mark.parametrize("param", ["%E0%A4%A", "%", "i-0%zz"])
def test_a_link_with_a_malformed_escape_still_opens_its_page(page, demo, param):
    """``decodeURIComponent`` throws on these: the console showed a blank page instead of the agent's."""
    sign_in(page, "client", demo.token)
    page.goto(f"{demo.url}/#/agents/{param}")
    page.reload()  # the first render from the hash, not only the hashchange
    page.wait_for_selector("main[data-page=agents] h1")
    assert page.inner_text("main[data-page=agents] h1").endswith(f"/ {param}")


def test_a_link_carrying_markup_shows_it_as_text(page, demo):
    sign_in(page, "client", demo.token)
    page.goto(f"{demo.url}/#/instances/{PAYLOAD.replace(' ', '%20').replace('<', '%3C').replace('>', '%3E')}")
    page.reload()
    page.wait_for_selector("main[data-page=instances] h1")
    assert page.inner_text("main[data-page=instances] h1").endswith(f"/ {PAYLOAD}")
    assert page.query_selector("main img") is None and page.evaluate("window.__pwned") is None


def test_api_values_are_rendered_as_text_and_links_stay_in_the_console(page, demo):
    """A notification whose message, kind and agent id are markup or a ``javascript:`` URL (served here by the
    browser, so this holds whatever the API stores)."""
    rows = [{"id": "n-1", "created_at": "2026-01-01T00:00:00Z", "severity": PAYLOAD, "kind": PAYLOAD,
             "message": PAYLOAD, "agent_id": "javascript:window.__pwned=1//", "is_read": False}]
    page.route(re.compile(r".*/api/notifications\?.*"), lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps({"notifications": rows, "next_token": None})))
    sign_in(page, "client", demo.token)
    page.click("[data-nav=notifications]")
    page.wait_for_selector("table[data-table=notifications] td[data-col=message]")
    assert page.inner_text("table[data-table=notifications] td[data-col=message]") == PAYLOAD
    assert page.inner_text("table[data-table=notifications] td[data-col=kind]") == PAYLOAD
    assert page.query_selector("main img") is None
    href = page.get_attribute("table[data-table=notifications] td[data-col=agent_id] a", "href")
    assert href.startswith("#/agents/")
    page.click("table[data-table=notifications] td[data-col=agent_id] a")
    page.wait_for_selector("main[data-page=agents] h1")
    assert page.evaluate("window.__pwned") is None
