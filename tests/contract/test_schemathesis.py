"""Contract test: schemathesis over every operation of /api/openapi.json, against local mode.

Local mode (``python -m localmode.server``: chalice local + the embedded moto AWS) runs in a child
process (this process has moto's in-process mock active). Setup creates a real client token (admin
API), a real instance in the embedded EC2 and a verified registration of it (signed identity document:
a real agent credential). Each generated request carries the credential its operation's ``security``
names. Checks: no 5xx (``not_a_server_error``), every status code documented, every body matching its
documented schema. Deterministic (derandomized hypothesis) and bounded per operation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")  # requirements-dev.txt
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from localmode.embedded_aws import IMAGE_ID, LOCAL_REGION, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
ADMIN_KEY = "contract-admin-key"
ZONE = f"{LOCAL_REGION}a"
MAX_EXAMPLES = 10  # per operation and generation mode (positive, negative): ~60 operations, 1-3 min on 2 cores
# Local-mode tooling routes (never deployed): fuzzing them would move the replay clock, install a
# capacity outage or run scheduled jobs mid-test. They are documented like every route (test_openapi).
NOT_FUZZED = ("/_local/",)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_", "MOTO_"))}
    env.update(extra)
    return env


def _http(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "local mode exited"
        try:
            if _http("GET", f"{url}/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("local mode did not become healthy")


class World:
    """The running local mode and the credentials created in it."""

    def __init__(self, api: str, aws: str):
        self.api, self.aws = api, aws
        self.client_id = self.client_token = self.agent_id = self.agent_credential = self.instance_id = ""
        self.admin_target = ""  # the client the admin routes act on (they regenerate tokens, deactivate...)

    def headers_for(self, operation) -> dict[str, str]:
        """The credential the operation's first security requirement names (none for open routes)."""
        security = operation.definition.raw.get("security") or []
        scheme = next(iter(security[0]), None) if security else None
        return {"clientToken": {"Authorization": f"Bearer {self.client_token}"},
                "agentCredential": {"Authorization": f"Bearer {self.agent_credential}"},
                "adminKey": {"X-Admin-Key": ADMIN_KEY}}.get(scheme, {})

    def known_ids(self, operation) -> dict[str, str]:
        if operation.path.startswith("/api/admin/"):
            return {"client_id": self.admin_target}
        return {"client_id": self.client_id, "agent_id": self.agent_id, "instance_id": self.instance_id}


def _setup(world: World) -> None:
    admin = {"X-Admin-Key": ADMIN_KEY}
    _, client = _http("POST", f"{world.api}/api/admin/clients/create", {"name": "contract"}, admin)
    world.client_id, world.client_token = client["client_id"], client["client_token"]
    world.admin_target = _http("POST", f"{world.api}/api/admin/clients/create", {"name": "contract-admin-target"},
                               admin)[1]["client_id"]
    boot = (f"import boto3; e=boto3.client('ec2'); i='{IMAGE_ID}'; "
            "print(e.run_instances(ImageId=i, InstanceType='m5.large', MinCount=1, MaxCount=1, "
            f"Placement={{'AvailabilityZone': '{ZONE}'}})['Instances'][0]['InstanceId'])")
    world.instance_id = subprocess.run(
        [sys.executable, "-c", boot], capture_output=True, text=True, check=True,
        env=_clean_env(AWS_ENDPOINT_URL=world.aws, AWS_DEFAULT_REGION=LOCAL_REGION, AWS_ACCESS_KEY_ID="x",
                       AWS_SECRET_ACCESS_KEY="x")).stdout.strip()
    from localmode.identity_signer import signed_identity

    document, signature = signed_identity(instance_id=world.instance_id, instance_type="m5.large", az=ZONE)
    status, reg = _http("POST", f"{world.api}/api/agents/register", {
        "instance_id": world.instance_id, "instance_type": "m5.large", "region": LOCAL_REGION, "az": ZONE,
        "logical_agent_id": "contract", "mode": "spot", "identity_document": document,
        "identity_signature": signature}, {"Authorization": f"Bearer {world.client_token}"})
    assert status == 200 and reg["agent_credential"], reg
    world.agent_id, world.agent_credential = reg["agent_id"], reg["agent_credential"]
    _http("POST", f"{world.api}/api/agents/{world.agent_id}/heartbeat", {"status": "online"},
          {"Authorization": f"Bearer {world.agent_credential}"})
    # market data for the agent's pools: the decision routes answer their success bodies, not only 409 no_market_data
    status, _ = _http("POST", f"{world.api}/api/agents/{world.agent_id}/pricing-report", {
        "instance": {"instance_id": world.instance_id, "instance_type": "m5.large", "region": LOCAL_REGION,
                     "az": ZONE, "mode": "spot"},
        "pricing": {"on_demand_price": 0.096, "spot_pools": [
            {"instance_type": "m5.large", "az": ZONE, "price": 0.041},
            {"instance_type": "m5.large", "az": f"{LOCAL_REGION}b", "price": 0.035}]}},
        {"Authorization": f"Bearer {world.agent_credential}"})
    assert status == 200


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # The server's log goes to a file: a pipe nobody reads fills up and blocks chalice local mid-request.
    log = (tmp_path_factory.mktemp("local-mode") / "server.log").open("w+")
    api_port, aws_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "localmode.server", "--api-port", str(api_port),
                             "--aws-port", str(aws_port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=_clean_env(SPOT_OPTIMIZER_ADMIN_KEY=ADMIN_KEY))
    found = World(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{aws_port}")
    try:
        _wait_healthy(found.api, proc)
        _setup(found)
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _fuzz(world: World, operation, mode) -> tuple[Counter, str | None]:
    """Run one operation's generated cases in one generation mode: (statuses seen, failure or None)."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    seen: Counter = Counter()
    known = world.known_ids(operation)
    headers = world.headers_for(operation)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        # every other valid case names the setup's real client, agent and instance ("found" paths too)
        if mode is GenerationMode.POSITIVE and sum(seen.values()) % 2:
            for name, value in known.items():
                if case.path_parameters and name in case.path_parameters:
                    case.path_parameters[name] = value
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        seen[response.status_code] += 1

    try:
        run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Unsatisfiable:  # nothing to make invalid: no parameter and no body (GET /health)
        assert mode is GenerationMode.NEGATIVE, operation.label
    except BaseException as exc:  # noqa: BLE001 - schemathesis raises exception groups; each is reported
        return seen, f"[{mode.value}] {operation.label}: {type(exc).__name__}: {str(exc)[:1500]}"
    return seen, None


@pytest.mark.timeout(600)
def test_every_operation_answers_as_documented_and_never_5xx(world):
    # GIVEN the document local mode serves, and every operation in it but the local-mode tooling
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(f"{world.api}/api/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    # DELETEs last: deleting the setup's agent or the admin's target client first would leave every later
    # operation on them a 404, so their success bodies would never be checked against the document.
    fuzzed = sorted((op for op in operations if not op.path.startswith(NOT_FUZZED)),
                    key=lambda op: op.method.upper() == "DELETE")
    # (schemathesis leaves out the operation that serves the document: it was just fetched and parsed)
    documented = {(m.upper(), p) for p, item in schema.raw_schema["paths"].items() for m in item} \
        - {("GET", "/api/openapi.json")}
    assert {(op.method.upper(), op.path) for op in operations} == documented and len(fuzzed) >= 50
    # WHEN each is called with valid and with invalid inputs, authenticated as its security names
    failures: list[str] = []
    succeeded: set[str] = set()
    for operation in fuzzed:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            started = time.monotonic()
            seen, failure = _fuzz(world, operation, mode)
            failures += [failure] if failure else []
            succeeded |= {operation.label} if any(200 <= code < 300 for code in seen) else set()
            print(f"{mode.value:8} {operation.label} {time.monotonic() - started:.1f}s {dict(seen)}",
                  file=sys.stderr)
    # THEN no 5xx, and every status and body is the documented one
    assert not failures, f"{len(failures)} operation(s) failed:\n" + "\n\n".join(failures)
    # AND the setup's credentials worked (each kind of caller got through on some route)
    assert {"GET /api/client/validate", "POST /api/agents/{agent_id}/heartbeat", "GET /api/admin/clients",
            "GET /health"} <= succeeded
