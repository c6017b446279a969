"""Local mode and the demo, end to end in child processes (real HTTP, real moto server).

These run in fresh interpreters because the test process itself has moto's in-process mock active.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from localmode.embedded_aws import IMAGE_ID, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_"))}
    env.update(extra)
    return env


def _http(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if _http("GET", f"{url}/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("local mode did not become healthy")


def _ctrl_c_delivered() -> None:
    """In the child before exec: SIGINT back to its default, so Python installs its Ctrl-C handler even
    when the tests run from a non-interactive background shell (which starts children with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_serve_exposes_api_and_inspectable_aws_and_stops_cleanly_on_ctrl_c():
    # GIVEN local mode started as `make serve` does, with an admin key from the environment
    api_port, aws_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "localmode.server", "--api-port", str(api_port),
                             "--aws-port", str(aws_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_ctrl_c_delivered,
                            env=_clean_env(SPOT_OPTIMIZER_ADMIN_KEY="e2e-admin-key"))
    api = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(api, proc)
        # WHEN a newcomer follows the README: create a client, register, heartbeat
        status, client = _http("POST", f"{api}/api/admin/clients/create", {"name": "e2e", "legacy_agents": True},
                               {"X-Admin-Key": "e2e-admin-key"})
        assert status == 201
        auth = {"Authorization": f"Bearer {client['client_token']}"}
        status, reg = _http("POST", f"{api}/api/agents/register",
                            {"instance_id": "i-0abc1234def567890", "instance_type": "m5.large",
                             "region": "eu-west-1", "az": "eu-west-1a", "logical_agent_id": "e2e"}, auth)
        assert status == 200
        status, beat = _http("POST", f"{api}/api/agents/{reg['agent_id']}/heartbeat", {}, auth)
        assert status == 200 and beat["status"] == "online"
        # THEN the embedded AWS answers boto3 on its port with every table and the stored agent
        probe = ("import boto3,json; d=boto3.client('dynamodb'); "
                 "print(json.dumps([sorted(d.list_tables()['TableNames']), "
                 "d.scan(TableName='spot-optimizer-local-agents')['Count']]))")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                             env=_clean_env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{aws_port}",
                                            AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="x",
                                            AWS_SECRET_ACCESS_KEY="x")).stdout
        tables, agents = json.loads(out)
        assert "spot-optimizer-local-agents" in tables and len(tables) >= 12
        assert agents == 1
    finally:
        # WHEN Ctrl-C arrives THEN it stops cleanly
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "local mode stopped" in output


def test_serve_runs_the_failover_from_a_local_eventbridge_event_and_the_schedules():
    # GIVEN local mode with a fast clock and an agent on a real instance of the embedded EC2
    api_port, aws_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "localmode.server", "--api-port", str(api_port),
                             "--aws-port", str(aws_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_ctrl_c_delivered,
                            env=_clean_env(SPOT_OPTIMIZER_ADMIN_KEY="k", SPOT_LOCAL_CLOCK_SPEED="600"))
    api = f"http://127.0.0.1:{api_port}"
    aws_env = _clean_env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{aws_port}", AWS_DEFAULT_REGION="us-east-1",
                         AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    boot = (f"import boto3; e=boto3.client('ec2'); i='{IMAGE_ID}'; "
            "print(i, e.run_instances(ImageId=i, InstanceType='m5.large', MinCount=1, MaxCount=1, "
            "Placement={'AvailabilityZone': 'us-east-1a'})['Instances'][0]['InstanceId'])")
    try:
        _wait_healthy(api, proc)
        image, instance = subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True, check=True,
                                         env=aws_env).stdout.split()
        _, client = _http("POST", f"{api}/api/admin/clients/create", {"name": "lm", "legacy_agents": True}, {"X-Admin-Key": "k"})
        auth = {"Authorization": f"Bearer {client['client_token']}"}
        _, reg = _http("POST", f"{api}/api/agents/register", {
            "instance_id": instance, "instance_type": "m5.large", "region": "us-east-1", "az": "us-east-1a",
            "ami_id": image, "logical_agent_id": "lm", "mode": "spot"}, auth)
        agent = reg["agent_id"]
        _http("POST", f"{api}/api/agents/{agent}/pricing-report", {
            "instance": {"instance_type": "m5.large", "region": "us-east-1"},
            "pricing": {"on_demand_price": 0.096, "spot_pools": [
                {"pool_id": f"m5.large.us-east-1{z}", "price": p} for z, p in (("a", .03), ("b", .032))]}}, auth)
        # WHEN a PutEvents-style warning is posted to the local EventBridge endpoint
        status, put = _http("POST", f"{api}/_local/eventbridge", {
            "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
            "Detail": json.dumps({"instance-id": instance, "instance-action": "terminate"})})
        assert status == 200
        delivered = put["entries"][0]["delivered"]
        assert [(d["rule"], d["handler"]) for d in delivered] == [("sentinel-interruption", "sentinel")]
        assert delivered[0]["result"]["action"] == "failover_started"
        # THEN the state machine runs in the embedded AWS and the event resolves with a replacement
        deadline = time.monotonic() + 60
        event = None
        while time.monotonic() < deadline:
            _, listed = _http("GET", f"{api}/api/agents/{agent}/interruptions", None, auth)
            event = listed["interruptions"][0] if listed["interruptions"] else None
            if event and event["old_terminated_at"]:
                break
            time.sleep(0.2)
        assert event and event["status"] == "resolved", event
        assert event["response_action"] == "emergency-spot-replacement" and event["new_pool_id"] == "m5.large.us-east-1b"
        assert event["old_terminated_at"], "the Wait before retiring the old instance runs on the fast clock"
        # AND an event no rule matches is delivered to nobody; a bad entry is a 400
        _, none = _http("POST", f"{api}/_local/eventbridge", {"Source": "aws.s3", "DetailType": "Object Created",
                                                             "Detail": "{}"})
        assert none["entries"][0]["delivered"] == []
        try:
            _http("POST", f"{api}/_local/eventbridge", {"Detail": "{}"})
            raise AssertionError("an entry without Source must be rejected")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
        # AND the demo's capacity endpoint takes two lists of AZs (null lifts the guard); anything else is a 400
        assert _http("POST", f"{api}/_local/capacity", {"offered": ["us-east-1a"], "open": []}) == (
            200, {"offered": ["us-east-1a"], "open": []})
        assert _http("POST", f"{api}/_local/capacity", {"offered": None})[1]["offered"] is None
        for bad in ({"offered": "us-east-1a"}, {"offered": [], "open": [3]}):
            try:
                _http("POST", f"{api}/_local/capacity", bad)
                raise AssertionError(f"{bad} must be refused")
            except urllib.error.HTTPError as exc:
                assert exc.code == 400 and json.loads(exc.read())["error"] == "validation_error"
        # AND the endpoint the embedded AWS hands Lambda tasks to answers as Lambda's Invoke does: the
        # handler's error type comes back (the state machine's Retry/Catch match on it); an unknown
        # function is a 404 and a body that is not JSON a 400
        request = urllib.request.Request(f"{api}/_local/lambda/failover-plan", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["X-Amz-Function-Error"] == "Unhandled"
            assert json.loads(response.read())["errorType"] == "KeyError"
        for path, body, code in (("no-such-function", b"{}", 404), ("failover-plan", b"{not json", 400)):
            try:
                urllib.request.urlopen(urllib.request.Request(
                    f"{api}/_local/lambda/{path}", data=body, method="POST",
                    headers={"Content-Type": "application/json"}), timeout=10)
                raise AssertionError(f"{path} must be refused")
            except urllib.error.HTTPError as exc:
                assert exc.code == code and json.loads(exc.read())["error"]
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output[-3000:]
    # AND the scheduled handlers ran on the fast clock (the coordinator and cleanup among them)
    assert "replica coordinator cycle" in output and "cleanup cycle" in output
