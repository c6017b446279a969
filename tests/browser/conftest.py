"""The web console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, apt package
``chromium``; ``make browser`` installs it), headless, against local mode serving a short demo replay
(``python -m localmode.demo --serve``), as a user would open it after ``make demo``.

Never skipped: without Chromium or Playwright the tests fail and say what to install."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from localmode.embedded_aws import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SPOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO_ARGS = ["--days", "0.5", "--agents", "3"]  # ~1.5 min: interruptions, failovers, decisions, notifications


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_"))}
    env.update(extra)
    return env


class Demo:
    """The serving demo: its URLs, secrets, the rows it dumped, and helpers to ask the API or AWS."""

    def __init__(self, url: str, token: str, admin_key: str, aws: str, raw: dict):
        self.url, self.token, self.admin_key, self.aws, self.raw = url, token, admin_key, aws, raw

    def client_id(self) -> str:
        return self.call("GET", "/api/client/validate")["client_id"]

    def call(self, method: str, path: str, body: dict | None = None, *, token: str | None = None,
             admin: bool = False, expect: int | None = None):
        headers = {"Connection": "close"}
        if admin:
            headers["X-Admin-Key"] = self.admin_key
        else:
            headers["Authorization"] = f"Bearer {token or self.token}"
        response = requests.request(method, self.url + path, json=body, headers=headers, timeout=30)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.text)
        else:
            assert response.status_code < 400, (method, path, response.status_code, response.text)
        return response.json()

    def current_primary(self) -> dict:
        """An active primary instance of the dump that is its agent's current one (the API says so: at the demo's
        end a switched-from instance can still be active, awaiting its termination)."""
        return next(i for i in self.raw["instances"] if i["is_active"] and i["role"] == "primary"
                    and self.call("GET", f"/api/client/instances/{i['instance_id']}/pricing")["current_primary"])

    def aws_probe(self, code: str):
        """Run boto3 ``code`` (which prints JSON) against the embedded AWS, in a fresh interpreter."""
        out = subprocess.run([sys.executable, "-c", "import boto3, json\n" + code], capture_output=True,
                             text=True, timeout=60, env=_clean_env(
                                 AWS_ENDPOINT_URL=self.aws, AWS_DEFAULT_REGION="us-east-1",
                                 AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the web console's browser tests need Chromium at {CHROMIUM}: install the Debian package "
                    "'chromium' (make browser does, as root with apt) or set SPOT_CHROMIUM", pytrace=False)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the browser tests need the Python package 'playwright' (requirements-dev.txt)", pytrace=False)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """``python -m localmode.demo --serve`` on a short window; yields once the console is up."""
    _require_browser()
    out = tmp_path_factory.mktemp("demo")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "localmode.demo", *DEMO_ARGS, "--serve", "--port", str(port),
                             "--html", str(out / "report.html"), "--json", str(out / "demo.json")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_clean_env(PYTHONPATH=str(ROOT / "agent")))
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("the demo exited before serving:\n" + "".join(lines[-60:]))
            lines.append(line)
            if "serving until Ctrl-C" in line:
                break
        text = "".join(lines)
        url = re.search(r"Web console: (http://\S+)/", text).group(1)
        token = re.search(r"with its token: (\S+)", text).group(1)
        admin_key = re.search(r"with the admin key:\s+(\S+)", text).group(1)
        aws = re.search(r"embedded AWS: (\S+)", text).group(1)
        raw = json.loads((out / "demo.json").read_text())["raw"]
        yield Demo(url, token, admin_key, aws, raw)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, demo):
    """A fresh tab (own session storage); fails the test on any script error or CSP violation."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("console", lambda msg: problems.append(f"console: {msg.text}")
           if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    tab.set_default_timeout(15_000)
    tab.goto(demo.url + "/")
    yield tab
    context.close()
    assert problems == []


def sign_in(page, kind: str, secret: str) -> None:
    page.check(f"input[name=kind][value={kind}]")
    page.fill("input[name=secret]", secret)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-page=overview]")


def goto(page, demo, route: str, ready: str) -> None:
    """Open ``#/route`` and wait for ``ready`` (a selector) to show."""
    url = f"{demo.url}/#/{route}"
    if page.url == url:
        page.reload()  # the same hash fires no hashchange: load the page's data afresh
    else:
        page.goto(url)
    page.wait_for_selector(ready)


def cells(page, table: str, column: str) -> list[str]:
    return [c.inner_text().strip() for c in page.query_selector_all(f"table[data-table='{table}'] td[data-col='{column}']")]
