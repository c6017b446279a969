"""README.md's local-mode walk-through, run as written: a newcomer's first terminal session.

Local mode is started as ``make serve`` does (the Makefile's recipe, the README's admin key) on free ports, and
the README's fenced bash blocks are run with bash from the repository: the walk-through of "Local mode" and
the legacy-agent-mode switch of "Agent identity and legacy agent mode". The only edits are the ports
(``API=http://127.0.0.1:8000`` and the embedded AWS's ``http://127.0.0.1:5000``). Around them the harness adds
``set -euo pipefail`` and a ``curl`` that fails on an HTTP error (``--fail-with-body``) and records each answer,
so a command that breaks (a renamed route or field, a body the API refuses, a variable never set) fails here.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from localmode.embedded_aws import free_port
from tests.e2e.test_local_mode import _clean_env, _ctrl_c_delivered, _http, _wait_healthy

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

README_API = "API=http://127.0.0.1:8000"
README_AWS = "http://127.0.0.1:5000"

# Before the README's commands: stop at the first failure; every curl fails on an HTTP error status and appends
# (its URL, its answer) to $ANSWERS as a JSON line.
PREAMBLE = r"""set -euo pipefail
shopt -s inherit_errexit
curl() {
  local url="" arg body
  for arg in "$@"; do case "$arg" in http://*) url="$arg";; esac; done
  body=$(command curl --fail-with-body "$@") || { printf '%s\n' "$body" >&2; echo "curl failed: $url" >&2; return 1; }
  python3 -c 'import json,sys; print(json.dumps({"url": sys.argv[1], "body": sys.argv[2]}))' "$url" "$body" >> "$ANSWERS"
  printf '%s\n' "$body"
}
"""
# After them: what a reader would go on with.
EPILOGUE = """
printf '%s\\n' "$TOKEN" "$AGENT" "$CLIENT_ID" "${NEW:-}" > "$VARS"
"""


def _section(text: str, heading: str) -> str:
    """The markdown section ``heading``, up to the next heading of its level or higher (outside code fences:
    a shell comment is no heading)."""
    lines, level, body, fenced = text.splitlines(keepends=True), None, [], False
    for line in lines:
        fenced ^= line.startswith("```")
        title = None if fenced or line.startswith("```") else re.match(r"(#+) (.*?)\s*$", line)
        if level is None:
            level = len(title.group(1)) if title and title.group(2) == heading else None
        elif title and len(title.group(1)) <= level:
            break
        else:
            body.append(line)
    assert level is not None, f"README.md has no section {heading!r}"
    return "".join(body)


def _bash_blocks(section: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)


def readme_walkthrough(api_port: int, aws_port: int) -> tuple[str, str]:
    """(admin key the README exports, the walk-through's commands on these ports)."""
    readme = (ROOT / "README.md").read_text()
    serve, walk = _bash_blocks(_section(readme, "Local mode (`make serve`)"))
    key = re.search(r"^export SPOT_OPTIMIZER_ADMIN_KEY=(\S+)", serve, flags=re.M)
    assert key and re.search(r"^make serve$", serve, flags=re.M), serve
    legacy = [b for b in _bash_blocks(_section(readme, "Agent identity and legacy agent mode")) if "legacy-agents" in b]
    assert len(legacy) == 1, "the Agent identity section shows how to turn legacy agent mode on"
    assert walk.count(README_API) == 1 and README_AWS in walk, "the walk-through names the API and embedded AWS"
    script = walk.replace(README_API, f"API=http://127.0.0.1:{api_port}").replace(
        README_AWS, f"http://127.0.0.1:{aws_port}")
    return key.group(1), script + "\n" + legacy[0]


def test_the_readme_walkthrough_runs_as_written_against_make_serve(tmp_path):
    # GIVEN local mode started as `make serve` runs it, with the admin key the README exports
    recipe = re.search(r"^serve:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe and recipe.group(1).split() == ["$(BIN)/python", "-m", "localmode.server"], recipe
    api_port, aws_port = free_port(), free_port()
    key, walkthrough = readme_walkthrough(api_port, aws_port)
    proc = subprocess.Popen([sys.executable, "-m", "localmode.server", "--api-port", str(api_port),
                             "--aws-port", str(aws_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_ctrl_c_delivered,
                            env=_clean_env(SPOT_OPTIMIZER_ADMIN_KEY=key))
    api = f"http://127.0.0.1:{api_port}"
    answers, variables = tmp_path / "answers.jsonl", tmp_path / "vars"
    try:
        _wait_healthy(api, proc)
        # WHEN a newcomer runs the README's commands in another terminal, in the repository
        script = tmp_path / "walkthrough.sh"
        script.write_text(PREAMBLE + walkthrough + EPILOGUE)
        run = subprocess.run(["bash", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env=_clean_env(ANSWERS=str(answers), VARS=str(variables)))
        assert run.returncode == 0, f"a README command failed:\n{run.stderr[-4000:]}\n{run.stdout[-2000:]}"
        token, agent, client_id, new_instance = (variables.read_text().splitlines() + [""])[:4]
        said = [(line["url"], json.loads(line["body"])) for line in map(json.loads, answers.read_text().splitlines())]

        def answer(path_end: str, index: int = -1) -> dict:
            found = [body for url, body in said if url.split("?")[0].endswith(path_end)]
            assert found, f"no README command called ...{path_end}: {[u for u, _ in said]}"
            return found[index]

        # THEN each step answers what the README says it does
        assert answer("/api/admin/clients/create")["client_id"] == client_id
        assert answer("/api/admin/clients/create")["client_token"] == token
        assert any(c["client_id"] == client_id for c in answer("/api/admin/clients")["clients"])
        assert answer(f"/clients/{client_id}/rate-limit")["rate_limit_per_window"] == 3000
        assert answer("/api/agents/register")["agent_id"] == agent
        assert "m5a.large" in answer(f"/api/client/agents/{agent}/config", 0)["allowed_instance_types"]
        assert answer(f"/api/agents/{agent}/heartbeat")["status"] == "online"
        assert answer(f"/api/agents/{agent}/config")["allowed_instance_types"][0] == "m5.large"
        assert answer(f"/api/agents/{agent}/pricing-report")["pools"] == 2
        queued = answer("/force-switch")["command"]
        leased = answer(f"/api/agents/{agent}/pending-commands")["commands"]
        assert [(c["id"], c["status"]) for c in leased] == [(queued["id"], "executing")]
        assert leased[0]["lease_expires_at"]
        assert answer(f"/commands/{queued['id']}/executed")["command"]["status"] == "completed"
        assert answer(f"/api/agents/{agent}/switch-report")["success"] is True
        assert answer(f"/api/agents/{agent}/cleanup-report")["deleted_snapshots"] == 1
        assert "switch" in [n["kind"] for n in answer("/api/notifications")["notifications"]]
        assert answer(f"/api/client/agents/{agent}/config")["terminate_wait_seconds"] == 0
        started = answer("/_local/eventbridge")["entries"][0]["delivered"][0]["result"]
        assert started["action"] == "failover_started", started
        assert answer(f"/api/agents/{agent}/interruptions")["interruptions"][0]["interruption_id"] == (
            started["interruption_id"])
        assert answer(f"/api/agents/{agent}/sef-status")["last_interruption"]["interruption_id"] == (
            started["interruption_id"])
        standby = answer(f"/api/agents/{agent}/manual-replica/enable")
        assert standby["manual_replica_enabled"] is True and standby["replica"]["status"] != "failed", standby
        assert answer("/health")["status"] == "ok"
        assert "spot-optimizer-local-agents" in run.stdout  # the embedded AWS's tables, listed with boto3
        assert answer(f"/clients/{client_id}/legacy-agents")["legacy_agents"] is True
        # AND the interruption the README sends is failed over for real ("seconds later resolved")
        auth = {"Authorization": f"Bearer {token}"}
        deadline, event = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            event = _http("GET", f"{api}/api/agents/{agent}/interruptions", None, auth)[1]["interruptions"][0]
            if event["status"] not in ("detected", "handling"):
                break
            time.sleep(0.5)
        assert event and event["status"] == "resolved" and event["response_action"], event
        assert event["instance_id"] == new_instance  # the instance the walk-through booted and switched to
        # AND the web console the README points at is served at the API's root
        with urllib.request.urlopen(f"{api}/", timeout=10) as page:
            assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-3000:]


def test_the_harness_runs_the_readme_commands_unchanged_but_for_the_ports():
    # The walk-through the test runs is README.md's text: only the two addresses differ.
    _, script = readme_walkthrough(18000, 15000)
    readme = (ROOT / "README.md").read_text()
    for line in script.splitlines():
        original = line.replace("API=http://127.0.0.1:18000", README_API).replace(
            "http://127.0.0.1:15000", README_AWS)
        assert original in readme, line
    assert "127.0.0.1:8000" not in script and "127.0.0.1:5000" not in script
