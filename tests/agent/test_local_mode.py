"""The real daemon (``spot-agent run`` in a child process) against the real local mode (``chalice local``
+ embedded moto server, in another child process) and the fake IMDS: nothing in-process or stubbed
between the agent and the API.

Story: agent A registers, heartbeats and reports prices; a client force-switches its instance; A
launches the replacement in the embedded EC2, reports the switch and the result, terminates the old
instance after the wait and goes quiet. Agent B starts on the replacement (same logical id, so the
same agent), sees a two-minute notice in IMDS and reports it; the failover workflow answers with
``prepare_shutdown``, which B drains and acknowledges.
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
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from localmode.embedded_aws import free_port, image_id
from localmode.fake_imds import FakeImds

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "spot-agent"
ADMIN_KEY = "agent-e2e-admin-key"
REGION = "us-east-1"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PRICES = '''
def prices(instance_type, region):
    """Recorded prices: us-east-1b is the cheapest pool."""
    pools = [{"pool_id": f"{instance_type}.{region}{z}", "instance_type": instance_type,
              "az": f"{region}{z}", "price": p} for z, p in (("a", 0.031), ("b", 0.029), ("c", 0.035))]
    return pools, 0.096
'''


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_", "POWERTOOLS_"))}
    env.update(extra)
    return env


def _http(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait(what: str, check, timeout: float = 60, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args} exited while waiting for {what}"
        try:
            value = check()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _state(state_dir: Path) -> dict:
    return json.loads((state_dir / "state.json").read_text())


@pytest.fixture
def local_mode(tmp_path):
    """``localmode.server`` in its own session, output to a file (a pipe nobody reads could fill up, and its
    children would hold it open), stopped with SIGTERM (SIGINT is ignored under a non-interactive
    background shell), its whole process group killed if it does not stop."""
    api_port, aws_port = free_port(), free_port()
    with (tmp_path / "local-mode.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "localmode.server", "--api-port", str(api_port),
                                 "--aws-port", str(aws_port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True,
                                env=_clean_env(SPOT_OPTIMIZER_ADMIN_KEY=ADMIN_KEY, SPOT_LOCAL_CLOCK_SPEED="60"))
    api = f"http://127.0.0.1:{api_port}"
    try:
        _wait("local mode", lambda: _http("GET", f"{api}/health")[0] == 200, 90, [proc])
        yield api, f"http://127.0.0.1:{aws_port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (chalice local, the embedded AWS)
        except ProcessLookupError:
            pass
        proc.wait()


class Daemon:
    """``spot-agent run`` as systemd would start it (environment only), logs to a file."""

    def __init__(self, tmp: Path, name: str, env: dict):
        self.state_dir, self.log = tmp / f"state-{name}", tmp / f"{name}.log"
        self.proc = subprocess.Popen([str(SCRIPT), "run"], env={**env, "SPOT_AGENT_STATE_DIR": str(self.state_dir)},
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("w"))

    def state(self) -> dict:
        return _state(self.state_dir)

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def test_the_daemon_end_to_end_against_local_mode(local_mode, tmp_path):
    api, aws = local_mode
    aws_kw = dict(endpoint_url=aws, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    ec2, ddb = boto3.client("ec2", **aws_kw), boto3.client("dynamodb", **aws_kw)

    # GIVEN a client, and its spot instance X in the embedded EC2 (with SG, key) described by a fake IMDS
    status, client = _http("POST", f"{api}/api/admin/clients/create", {"name": "agent-e2e"}, {"X-Admin-Key": ADMIN_KEY})
    assert status == 201
    auth = {"Authorization": f"Bearer {client['client_token']}"}
    image = image_id(ec2)
    sg = ec2.create_security_group(GroupName=f"app-{uuid.uuid4().hex[:6]}", Description="app")["GroupId"]
    ec2.create_key_pair(KeyName="e2e")
    old = ec2.run_instances(ImageId=image, InstanceType="m5.large", MinCount=1, MaxCount=1, KeyName="e2e",
                            SecurityGroupIds=[sg], Placement={"AvailabilityZone": "us-east-1a"},
                            InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
                            )["Instances"][0]
    identity = {"instance_id": old["InstanceId"], "instance_type": "m5.large", "az": "us-east-1a", "ami_id": image,
                "local_ipv4": old.get("PrivateIpAddress"), "instance_life_cycle": "spot"}
    (tmp_path / "e2e_prices.py").write_text(PRICES)
    drained = tmp_path / "drained.txt"
    env = _clean_env(
        SPOT_OPTIMIZER_SERVER_URL=api, SPOT_OPTIMIZER_CLIENT_TOKEN=client["client_token"], LOGICAL_AGENT_ID="e2e-web",
        AWS_REGION=REGION, AWS_ENDPOINT_URL=aws, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
        SPOT_AGENT_HEARTBEAT_S="0.5", SPOT_AGENT_PRICING_S="1", SPOT_AGENT_NOTICE_S="0.3", SPOT_AGENT_REBALANCE_S="1",
        SPOT_AGENT_PRICE_SOURCE="e2e_prices:prices",
        # this checkout's agent first (the venv's editable install may point at another checkout)
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "agent")]),
        SPOT_AGENT_DRAIN_HOOK=f'echo "$SPOT_COMMAND_TYPE $SPOT_COMMAND_ID" >> {drained}')

    with FakeImds(identity) as imds_a, FakeImds({}) as imds_b:
        a = Daemon(tmp_path, "a", {**env, "SPOT_AGENT_IMDS_ENDPOINT": imds_a.url})
        b = None
        try:
            # WHEN agent A starts THEN it registers, heartbeats online and reports prices
            agent_id = _wait("registration", lambda: a.state().get("agent_id"), procs=[a.proc])
            # manual control before the first price report: the decision cycle (every 5 s at this clock
            # speed, no minimum stay by default) would otherwise move X itself before the client does
            status, _ = _http("POST", f"{api}/api/client/agents/{agent_id}/config",
                              {"auto_switch_enabled": False, "auto_terminate_enabled": True,
                               "terminate_wait_seconds": 1}, auth)
            assert status == 200
            key = {"client_id": {"S": client["client_id"]}, "agent_id": {"S": agent_id}}
            row = _wait("online", lambda: (r := ddb.get_item(TableName="spot-optimizer-local-agents", Key=key)
                                           .get("Item")) and r.get("last_heartbeat_at") and r)
            assert row["status"]["S"] == "online" and row["instance_id"]["S"] == old["InstanceId"]
            _wait("a price report", lambda: ddb.query(
                TableName="spot-optimizer-local-pricing-reports", KeyConditionExpression="agent_id = :a",
                ExpressionAttributeValues={":a": {"S": agent_id}})["Count"] >= 1)

            # WHEN the client force-switches X to the us-east-1b pool
            status, forced = _http("POST", f"{api}/api/client/instances/{old['InstanceId']}/force-switch",
                                   {"target": "spot", "pool_id": "m5.large.us-east-1b"}, auth)
            assert status == 201
            cid = forced["command"]["id"]
            # THEN A executes it, the server acknowledges the result, and A retires from X
            state = _wait("switch acknowledged", lambda: (s := a.state())["retired"] and not s["unacked"] and s,
                          procs=[a.proc])
            new_id = state["retired"]["new_instance_id"]
            command = ddb.get_item(TableName="spot-optimizer-local-commands",
                                   Key={"agent_id": {"S": agent_id}, "command_id": {"S": cid}})["Item"]
            assert command["status"]["S"] == "completed"
            new = ec2.describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0]
            assert new["Placement"]["AvailabilityZone"] == "us-east-1b" and new["State"]["Name"] == "running"
            assert {t["Key"]: t["Value"] for t in new["Tags"]}["LogicalAgentId"] == "e2e-web"
            switches = ddb.scan(TableName="spot-optimizer-local-switches")["Items"]
            assert [s["new_instance_id"]["S"] for s in switches if s.get("command_id", {}).get("S") == cid] == [new_id]
            # AND after the 1-s wait A terminates X itself
            _wait("old instance terminated", lambda: ec2.describe_instances(InstanceIds=[old["InstanceId"]])[
                "Reservations"][0]["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated"))

            # WHEN agent B starts on the replacement, and IMDS there shows a two-minute notice
            imds_b.identity.update({"instance_id": new_id, "instance_type": "m5.large", "az": "us-east-1b",
                                    "region": REGION, "ami_id": image, "instance_life_cycle": "spot"})
            b = Daemon(tmp_path, "b", {**env, "SPOT_AGENT_IMDS_ENDPOINT": imds_b.url})
            assert _wait("B registered", lambda: b.state().get("agent_id"), procs=[b.proc]) == agent_id
            when = (datetime.now(timezone.utc) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
            imds_b.set_instance_action("terminate", when)
            # THEN B reports it at once and the server starts the failover for the replacement
            _wait("notice reported", lambda: b.state()["notices"]["instance_action_time"] == when, procs=[b.proc])
            status, listed = _http("GET", f"{api}/api/agents/{agent_id}/interruptions", None, auth)
            event = listed["interruptions"][0]
            assert event["instance_id"] == new_id and event["source"] == "agent"
            assert event["signal_type"].startswith("termination")
            # AND the workflow's prepare_shutdown for the replacement is drained by B and acknowledged
            _wait("drained", lambda: drained.exists() and drained.read_text().startswith("prepare_shutdown"),
                  timeout=90, procs=[b.proc])
            _wait("B retired", lambda: (s := b.state())["retired"] and not s["unacked"], procs=[b.proc])
        finally:
            codes = [d.stop() for d in (a, b) if d is not None]
    # AND both daemons stop cleanly on SIGTERM, having logged JSON lines with their identity
    assert codes == [0, 0]
    lines = a.logs()
    assert any(line.get("agent_id") == agent_id and line.get("instance_id") == old["InstanceId"] for line in lines)
    assert any("replacement" in line["msg"] and new_id in line["msg"] for line in lines)
    assert any(line["msg"] == "stopped" for line in b.logs())
