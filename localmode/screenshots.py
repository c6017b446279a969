"""Screenshots of the web console for the README (``make screenshots``): a short demo replay served by
local mode (``python -m localmode.demo --serve``), opened in headless Chromium (Playwright driving Debian's
/usr/bin/chromium), one PNG per main page in docs/images/console-*.png.

    python -m localmode.screenshots [--out docs/images] [--days 0.5] [--agents 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from localmode.embedded_aws import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("SPOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _serve_demo(days: float, agents: int, workdir: Path) -> tuple[subprocess.Popen, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_"))}
    env["PYTHONPATH"] = str(ROOT / "agent")
    proc = subprocess.Popen([sys.executable, "-m", "localmode.demo", "--days", str(days), "--agents", str(agents),
                             "--serve", "--port", str(free_port()), "--html", str(workdir / "report.html"),
                             "--json", str(workdir / "demo.json")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    text = ""
    for line in proc.stdout:
        text += line
        if "serving until Ctrl-C" in line:
            break
    else:
        raise SystemExit("the demo stopped before serving:\n" + text[-3000:])
    info = {"url": re.search(r"Web console: (http://\S+)/", text).group(1),
            "token": re.search(r"with its token: (\S+)", text).group(1),
            "admin_key": re.search(r"with the admin key:\s+(\S+)", text).group(1),
            "raw": json.loads((workdir / "demo.json").read_text())["raw"]}
    return proc, info


def shoot(out: Path, info: dict) -> list[Path]:
    from playwright.sync_api import sync_playwright

    raw = info["raw"]
    agent = next((a["agent_id"] for a in raw["agents"] if a["mode"] == "manual-replica"), raw["agents"][0]["agent_id"])
    instance = next(i["instance_id"] for i in raw["instances"] if i["is_active"] and i["role"] == "primary")
    client_pages = [("overview", "overview"), ("agent", f"agents/{agent}"), ("instance", f"instances/{instance}"),
                    ("interruptions", "interruptions"), ("savings", "savings"), ("notifications", "notifications")]
    admin_pages = [("admin-overview", "overview"), ("admin-clients", "clients"), ("admin-models", "models"),
                   ("admin-activity", "activity")]
    written = []
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for kind, secret, pages in (("client", info["token"], client_pages), ("admin", info["admin_key"], admin_pages)):
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(info["url"] + "/")
            if kind == "client":
                page.wait_for_selector("input[name=secret]")
                page.screenshot(path=str(out / "console-signin.png"))
            page.check(f"input[name=kind][value={kind}]")
            page.fill("input[name=secret]", secret)
            page.click("button[type=submit]")
            page.wait_for_selector("[data-page=overview]")
            for name, route in pages:
                page.goto(f"{info['url']}/#/{route}")
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(500)  # charts draw on the next frame
                path = out / f"console-{name}.png"
                page.screenshot(path=str(path), full_page=False)
                written.append(path)
            page.close()
        browser.close()
    return [out / "console-signin.png", *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--days", type=float, default=0.5)
    parser.add_argument("--agents", type=int, default=3)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"Chromium not found at {CHROMIUM}: install the Debian package 'chromium' (make browser)")
    with tempfile.TemporaryDirectory() as tmp:
        proc, info = _serve_demo(args.days, args.agents, Path(tmp))
        try:
            for path in shoot(args.out, info):
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
