"""Legacy route parity: the table "Legacy route parity" of docs/legacy-compatibility.md lists every method and
path of the legacy backends with the answer the legacy call gets here. This test reads that table and, for every
row, makes the legacy call (the request shapes below are the legacy agent's and dashboard's) against
the app: the route must exist (no missing route, no 405) and answer what the table says (2xx for the calls the
legacy agent and dashboard make, the documented status for the calls refused on purpose).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from chalicelib import model_store
from chalicelib.repositories import activity
from chalicelib.tables import ModelRegistryTable
from tests.api._document import assert_matches_document
from tests.api._support import forget_capacity, iso, now_utc, pricing_body, switch_body
from tests.conftest import Caller, account_instance, registration
from tests.e2e.failover_support import configure, wait_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "legacy-compatibility.md"
SECTION = "## Legacy route parity"
# The legacy API's groups, pairs per group (the never-registered SEF routes included).
PAIRS_PER_SECTION = {"agent": 14, "replica": 9, "client": 20, "admin": 11, "notifications": 3, "ML": 5,
                     "health, SEF": 5}
STATUSES = ("same", "changed", "new path")

# Client routes the client-api and savings helpers build on their branches (issue #13): they fail here.
@dataclass(frozen=True)
class Row:
    section: str
    method: str
    path: str
    status: str
    answer: str
    notes: str


def parity_rows(text: str) -> list[Row]:
    """The rows of the parity table of the doc."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in PAIRS_PER_SECTION:
            rows.append(Row(cells[0], cells[1], cells[2].strip("`"), cells[3], cells[4], cells[5]))
    return rows


ROWS = parity_rows(DOC.read_text())


# --- the world a legacy call is made in -----------------------------------------------------------------

class World:
    """One legacy tenant (legacy agent mode on) with a registered v4 agent whose primary is a real instance of
    the account (eu-west-1a, m5.large) and fresh prices; the rest is made on demand by the rows that need it."""

    def __init__(self, api, admin: Caller, make_tenant):
        self.api, self.admin = api, admin
        forget_capacity(*(f"m5.large.eu-west-1{z}" for z in "abc"))  # earlier tests' refusals: not this tenant's
        self.client_id, self.caller = make_tenant()
        self.instance_id = account_instance("eu-west-1a")
        self.registration = registration(instance_id=self.instance_id, az="eu-west-1a", agent_version="4.0.0")
        status, reply = self.caller.post("/api/agents/register", self.registration)
        assert status == 200, reply
        self.agent_id = reply["agent_id"]
        status, reply = self.caller.post(f"/api/agents/{self.agent_id}/pricing-report", self.pricing())
        assert status == 200, reply
        self._replica: dict | None = None

    def pricing(self) -> dict:
        body = pricing_body(self.instance_id, "m5.large", {"eu-west-1a": 0.040, "eu-west-1b": 0.031,
                                                           "eu-west-1c": 0.035}, on_demand=0.107, current=0.040,
                            collected_at=now_utc())
        body["instance"]["pool_id"] = "m5.large.eu-west-1a"
        body["pricing"]["cheapest_pool"] = {"pool_id": "m5.large.eu-west-1b", "price": 0.031}
        for pool in body["pricing"]["spot_pools"]:
            pool["pool_id"] = f"m5.large.{pool['az']}"
        return body

    def manual_mode(self) -> None:
        configure(self.client_id, self.agent_id, manual_replica_enabled=True, auto_switch_enabled=False)

    def replica(self) -> dict:
        """A standby recorded the legacy agent's way (it launched the EC2 itself and posts the replica)."""
        if self._replica is None:
            self.manual_mode()
            status, reply = self.caller.post(f"/api/agents/{self.agent_id}/replicas", legacy_replica_body(self))
            assert status == 201, reply
            self._replica = reply
        return self._replica

    def command_id(self) -> str:
        status, reply = self.caller.post(f"/api/client/instances/{self.instance_id}/force-switch",
                                         {"target": "ondemand"})
        assert status == 201, reply
        status, pending = self.caller.get(f"/api/agents/{self.agent_id}/pending-commands")  # the agent polls first
        assert status == 200 and reply["command"]["id"] in {c["id"] for c in pending["commands"]}, pending
        return reply["command"]["id"]

    def notification_id(self) -> str:
        return activity.notify(self.client_id, "agent_status", "parity check", now_utc(), agent_id=self.agent_id)

    def model_versions(self, count: int, activate: bool) -> list[str]:
        versions = []
        for _ in range(count):
            manifest = model_manifest()
            status, reply = self.admin.post("/api/admin/ml-models", {
                "manifest": manifest, "artifact_base64": base64.b64encode(ARTIFACT).decode()})
            assert status == 201, reply
            ModelRegistryTable(model_store.MODEL_NAME, manifest["version"]).update(
                actions=[ModelRegistryTable.status.set("pending")])  # what the scorer's validation does
            if activate:
                assert self.admin.post(f"/api/admin/ml-models/{manifest['version']}/activate")[0] == 200
            versions.append(manifest["version"])
        return versions


ARTIFACTS = Path(__file__).resolve().parents[2] / "ml" / "artifacts"
ARTIFACT = (ARTIFACTS / "risk-model.joblib").read_bytes()


def model_manifest() -> dict:
    manifest = json.loads((ARTIFACTS / "risk-model.json").read_text())
    return dict(manifest, version=f"parity-{uuid.uuid4().hex[:8]}", sha256=hashlib.sha256(ARTIFACT).hexdigest())


def legacy_replica_body(world: World) -> dict:
    return {"instance_id": account_instance("eu-west-1b"), "replica_type": "manual",
            "parent_instance_id": world.instance_id, "pool_id": "m5.large.eu-west-1b", "status": "launching"}


def multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = f"----parity{uuid.uuid4().hex}"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
                    for name, filename, data in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Call:
    """A legacy request: ``who`` is "agent"/"client" (the client token, as the v4 agent and the dashboard send
    it), "admin" (the admin key: the only change admins see) or "none"."""

    who: str
    body: Any = None
    query: str = ""
    raw: tuple[bytes, str] | None = None


def _now(seconds: float = 0) -> str:
    return iso(now_utc() + timedelta(seconds=seconds))


# The legacy request of each row (the agent's bodies, the dashboard's), given the world.
LEGACY_CALLS: dict[tuple[str, str], Callable[[World], Call]] = {
    # 3.1 agent core
    ("POST", "/api/agents/register"): lambda w: Call("agent", registration(
        instance_id=account_instance("eu-west-1a"), az="eu-west-1a", agent_version="4.0.0",
        client_token=w.caller.token, public_ip="203.0.113.7")),
    ("POST", "/api/agents/<agent_id>/heartbeat"): lambda w: Call("agent", {
        "status": "online", "monitored_instances": [w.instance_id], "instance_id": w.instance_id,
        "instance_type": "m5.large", "mode": "spot", "az": "eu-west-1a"}),
    ("GET", "/api/agents/<agent_id>/config"): lambda w: Call("agent"),
    ("GET", "/api/agents/<agent_id>/pending-commands"): lambda w: Call("agent"),
    ("POST", "/api/agents/<agent_id>/commands/<command_id>/executed"): lambda w: Call("agent", {
        "success": True, "message": "switched to on-demand"}),
    ("POST", "/api/agents/<agent_id>/pricing-report"): lambda w: Call("agent", w.pricing()),
    ("POST", "/api/agents/<agent_id>/switch-report"): lambda w: Call("agent", switch_body(
        w.instance_id, account_instance("eu-west-1b"))),
    ("POST", "/api/agents/<agent_id>/termination"): lambda w: Call("agent", {
        "instance_id": w.instance_id, "reason": "spot interruption", "termination_time": _now(120)}),
    ("POST", "/api/agents/<agent_id>/cleanup-report"): lambda w: Call("agent", {
        "timestamp": _now(), "snapshots": {"deleted": ["snap-0123456789abcdef0"], "failed": [],
                                           "cutoff_date": _now(-7 * 86400)},
        "amis": {"deleted_amis": [], "deleted_snapshots": [], "failed": [], "cutoff_date": _now(-30 * 86400)}}),
    ("POST", "/api/agents/<agent_id>/rebalance-recommendation"): lambda w: Call("agent", {
        "instance_id": w.instance_id, "detected_at": _now()}),
    ("GET", "/api/agents/<agent_id>/replica-config"): lambda w: Call("agent"),
    ("POST", "/api/agents/<agent_id>/decide"): lambda w: Call("agent", w.pricing()),
    ("GET", "/api/agents/<agent_id>/switch-recommendation"): lambda w: Call("agent"),
    ("POST", "/api/agents/<agent_id>/issue-switch-command"): lambda w: Call("agent", {}),
    # 3.2 replicas and interruptions
    ("POST", "/api/agents/<agent_id>/replicas"): lambda w: (w.manual_mode(), Call("agent", legacy_replica_body(w)))[1],
    ("GET", "/api/agents/<agent_id>/replicas"): lambda w: Call("agent", query="?status=launching"),
    ("POST", "/api/agents/<agent_id>/replicas/<replica_id>/promote"): lambda w: Call("client", {}),
    ("DELETE", "/api/agents/<agent_id>/replicas/<replica_id>"): lambda w: Call("client"),
    ("PUT", "/api/agents/<agent_id>/replicas/<replica_id>"): lambda w: Call("agent", {
        "instance_id": w.replica()["instance_id"], "status": "syncing"}),
    ("POST", "/api/agents/<agent_id>/replicas/<replica_id>/status"): lambda w: Call("agent", {
        "status": "ready", "sync_started_at": _now(-60), "sync_completed_at": _now(-1)}),
    ("POST", "/api/agents/<agent_id>/replicas/<replica_id>/sync-status"): lambda w: Call("agent", {
        "sync_status": "syncing", "sync_latency_ms": 12, "state_transfer_progress": 40}),
    ("POST", "/api/agents/<agent_id>/create-emergency-replica"): lambda w: Call("agent", {
        "signal_type": "termination-notice", "instance_id": w.instance_id, "termination_time": _now(120)}),
    ("POST", "/api/agents/<agent_id>/termination-imminent"): lambda w: Call("agent", {
        "instance_id": w.instance_id, "termination_time": _now(120), "detected_at": _now()}),
    # 3.3 the client dashboard
    ("GET", "/api/client/validate"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>/agents"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>/agents/decisions"): lambda w: Call("client"),
    ("POST", "/api/client/agents/<agent_id>/toggle-enabled"): lambda w: Call("client", {"enabled": False}),
    ("POST", "/api/client/agents/<agent_id>/settings"): lambda w: Call("client", {
        "auto_switch_enabled": True, "auto_terminate_enabled": True, "replica_enabled": False, "replica_count": 0}),
    ("POST", "/api/client/agents/<agent_id>/config"): lambda w: Call("client", {
        "autoSwitchEnabled": True, "manualReplicaEnabled": False, "autoTerminateEnabled": True,
        "terminateWaitMinutes": 5}),
    ("DELETE", "/api/client/agents/<agent_id>"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>/agents/history"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>/instances"): lambda w: Call("client", query="?status=active&mode=spot"),
    ("GET", "/api/client/instances/<instance_id>/pricing"): lambda w: Call("client"),
    ("GET", "/api/client/instances/<instance_id>/metrics"): lambda w: Call("client"),
    ("GET", "/api/client/instances/<instance_id>/price-history"): lambda w: Call("client", query="?days=7&interval=hour"),
    ("GET", "/api/client/pricing-history"): lambda w: Call("client", query="?days=7"),
    ("GET", "/api/client/instances/<instance_id>/available-options"): lambda w: Call("client"),
    ("POST", "/api/client/instances/<instance_id>/force-switch"): lambda w: Call("client", {
        "target": "pool", "pool_id": "m5.large.eu-west-1b"}),
    ("GET", "/api/client/<client_id>/replicas"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>/savings"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>/switch-history"): lambda w: Call("client"),
    ("GET", "/api/client/<client_id>/stats/charts"): lambda w: Call("client"),
    # 3.4 admin (the legacy dashboard sends no auth; here it needs the admin key)
    ("POST", "/api/admin/clients/create"): lambda w: Call("admin", {"name": f"parity-{uuid.uuid4().hex[:8]}"}),
    ("DELETE", "/api/admin/clients/<client_id>"): lambda w: Call("admin"),
    ("POST", "/api/admin/clients/<client_id>/regenerate-token"): lambda w: Call("admin", {}),
    ("GET", "/api/admin/clients/<client_id>/token"): lambda w: Call("admin"),
    ("GET", "/api/admin/clients"): lambda w: Call("admin"),
    ("GET", "/api/admin/clients/growth"): lambda w: Call("admin", query="?days=30"),
    ("GET", "/api/admin/stats"): lambda w: Call("admin"),
    ("GET", "/api/admin/instances"): lambda w: Call("admin", query="?status=active&mode=spot&region=eu-west-1"),
    ("GET", "/api/admin/agents"): lambda w: Call("admin", query="?status=online"),
    ("GET", "/api/admin/activity"): lambda w: Call("admin"),
    ("GET", "/api/admin/system-health"): lambda w: Call("admin"),
    # 3.5 notifications
    ("GET", "/api/notifications"): lambda w: Call("client", query="?limit=20"),
    ("POST", "/api/notifications/<notif_id>/mark-read"): lambda w: Call("client", {}),
    ("POST", "/api/notifications/mark-all-read"): lambda w: Call("client", {}),
    # 3.6 ML model and decision-engine uploads (the dashboard's multipart `files` form)
    ("POST", "/api/admin/decision-engine/upload"): lambda w: Call("admin", raw=multipart([
        ("files", "ml_based_engine.py", b"class Engine: pass\n")])),
    ("POST", "/api/admin/ml-models/upload"): lambda w: Call("admin", raw=multipart([
        ("files", "risk-model.joblib", ARTIFACT), ("files", "risk-model.json", json.dumps(model_manifest()).encode())])),
    ("POST", "/api/admin/ml-models/activate"): lambda w: Call("admin", {"sessionId": w.model_versions(1, False)[0]}),
    ("POST", "/api/admin/ml-models/fallback"): lambda w: (w.model_versions(2, True), Call("admin", {}))[1],
    ("GET", "/api/admin/ml-models/sessions"): lambda w: Call("admin"),
    # 3.7 health and the SEF routes
    ("GET", "/health"): lambda w: Call("none"),
    ("POST", "/api/agents/<id>/manual-replica/enable"): lambda w: Call("client", {}),
    ("POST", "/api/agents/<id>/manual-replica/disable"): lambda w: Call("client", {}),
    ("POST", "/api/agents/<id>/manual-switch"): lambda w: Call("client", {}),
    ("GET", "/api/agents/<id>/sef-status"): lambda w: Call("agent"),
}


def _before(world: World, method: str, path: str) -> None:
    """State a row's legacy call needs beyond the world (what the legacy flow had done before)."""
    if path.endswith("/manual-replica/disable"):
        assert world.caller.post(f"/api/agents/{world.agent_id}/manual-replica/enable")[0] == 200
    if path.endswith("/manual-switch"):
        status, reply = world.caller.post(f"/api/agents/{world.agent_id}/manual-replica/enable")
        assert status == 200, reply
        replica = reply["replica"]
        status, reply = world.caller.post(f"/api/agents/{world.agent_id}/replicas/{replica['replica_id']}/status",
                                          {"status": "ready"})
        assert status == 200, reply


def concrete(world: World, path: str) -> str:
    """The legacy path with the world's ids."""
    values = {"agent_id": world.agent_id, "id": world.agent_id, "client_id": world.client_id,
              "instance_id": world.instance_id}
    if "<replica_id>" in path:
        values["replica_id"] = world.replica()["replica_id"]
    if "<command_id>" in path:
        values["command_id"] = world.command_id()
    if "<notif_id>" in path:
        values["notif_id"] = world.notification_id()
    return re.sub(r"<(\w+)>", lambda m: values[m.group(1)], path)


def _missing_route(status: int, body: Any) -> bool:
    """Chalice's answer for a path no route matches (as API Gateway: 403 'Missing Authentication Token')."""
    return status == 403 and isinstance(body, dict) and "Missing Authentication Token" in str(body.get("message"))


def test_the_table_lists_every_legacy_pair_once_with_a_known_status():
    pairs = [(r.method, r.path) for r in ROWS]
    assert len(pairs) == len(set(pairs)) == sum(PAIRS_PER_SECTION.values())
    assert {s: sum(r.section == s for r in ROWS) for s in PAIRS_PER_SECTION} == PAIRS_PER_SECTION
    assert {r.status for r in ROWS} <= set(STATUSES)
    assert all(r.answer == "2xx" or re.fullmatch(r"[1-5][0-9]{2}", r.answer) for r in ROWS)
    assert all(r.notes for r in ROWS if r.status != "same"), "a changed or new row must say why"
    assert set(LEGACY_CALLS) == set(pairs), "every row needs its legacy request, and only rows have one"


def _param(row: Row):
    return pytest.param(row, id=f"{row.method} {row.path}")


@pytest.mark.slow
@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_the_legacy_call_is_served_as_documented(api, admin, make_tenant, failover_machine, keep_the_active_model,
                                                 chalice_app, row):
    world = World(api, admin, make_tenant)
    _before(world, row.method, row.path)
    call = LEGACY_CALLS[(row.method, row.path)](world)
    url = concrete(world, row.path) + call.query
    who = {"agent": world.caller, "client": world.caller, "admin": admin, "none": Caller(api.http)}[call.who]
    if call.raw is not None:
        data, content_type = call.raw
        status, body = who.call(row.method, url, raw=data, headers={"Content-Type": content_type})
    else:
        status, body = who.call(row.method, url, call.body)
    workflow = isinstance(body, dict) and (body.get("workflow") or body)
    if workflow and workflow.get("action") == "failover_started":  # let the workflow finish inside this test
        wait_for(workflow["interruption_id"])
    assert not _missing_route(status, body), (row, status, body)
    assert status != 405, (row, status, body)
    if row.answer == "2xx":
        assert 200 <= status < 300, (row, status, body)
        # AND the body is the one /api/openapi.json documents (many of these never succeed under fuzzing)
        assert_matches_document(chalice_app, row.method, url, status, body)
    else:
        assert status == int(row.answer), (row, status, body)
        assert isinstance(body, dict) and body.get("error") and body.get("message"), body
