"""Risk-model lifecycle against moto: upload → validated by the scorer → activate → used → rollback."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from chalicelib import model_store
from chalicelib.tables import ModelRegistryTable, PoolTable
from tests.conftest import invoke_schedule

ARTIFACTS = Path(__file__).resolve().parents[2] / "ml" / "artifacts"


@pytest.fixture(autouse=True)
def no_active_model_after():
    """The embedded AWS is shared by the whole run: a model left active here would make every later test's
    risk scorer score with it (tests elsewhere expect the evidence estimate when they activated nothing)."""
    yield
    ModelRegistryTable(model_store.MODEL_NAME, model_store.POINTER).delete()


def _upload(admin, manifest, artifact):
    return admin.post("/api/admin/ml-models", {"manifest": manifest,
                                               "artifact_base64": base64.b64encode(artifact).decode()})


def test_upload_validate_activate_score_and_rollback(api, admin, make_tenant):
    from tests.conftest import registration

    artifact = (ARTIFACTS / "risk-model.joblib").read_bytes()
    manifest = json.loads((ARTIFACTS / "risk-model.json").read_text())
    first, second = (dict(manifest, version=f"t-{uuid.uuid4().hex[:6]}") for _ in range(2))
    # GIVEN a pool with a day of prices
    _, caller = make_tenant()
    itype = f"c5.x{uuid.uuid4().hex[:6]}"
    status, reply = caller.post("/api/agents/register", registration(instance_type=itype, az="eu-west-1a"))
    caller.post(f"/api/agents/{reply['agent_id']}/pricing-report", {
        "instance": {"instance_type": itype},
        "pricing": {"on_demand_price": 0.17, "spot_pools": [{"pool_id": f"{itype}.eu-west-1a", "price": 0.07}]}})
    # WHEN two versions are uploaded THEN they wait for validation
    for version in (first, second):
        status, body = _upload(admin, version, artifact)
        assert status == 201 and body["status"] == "uploaded", body
    # an uploaded version cannot be activated before the scorer validated it
    status, body = admin.post(f"/api/admin/ml-models/{first['version']}/activate")
    assert status == 409
    # WHEN the risk scorer runs THEN it validates both with scikit-learn (prior still serves)
    result = invoke_schedule(api, "risk-scorer")
    assert result["validated"][first["version"]] == "pending" and result["model"] is None
    # WHEN the first is activated THEN the next run scores with it
    status, body = admin.post(f"/api/admin/ml-models/{first['version']}/activate")
    assert status == 200 and body["status"] == "active"
    result = invoke_schedule(api, "risk-scorer")
    assert result["model"] == first["version"] and result["scored"]["model"] >= 1
    pool = PoolTable.get(f"{itype}.eu-west-1a")
    assert pool.risk_source == "model" and pool.risk_model_version == first["version"] and 0 <= pool.risk <= 1
    # WHEN the second is activated and then rolled back THEN the first is active again
    assert admin.post(f"/api/admin/ml-models/{second['version']}/activate")[0] == 200
    status, body = admin.post("/api/admin/ml-models/rollback")
    assert status == 200 and body["version"] == first["version"]
    status, listing = admin.get("/api/admin/ml-models")
    assert listing["active_version"] == first["version"]
    assert {v["version"]: v["status"] for v in listing["versions"]}[second["version"]] == "archived"


def test_tampered_artifact_or_broken_manifest_is_refused(admin):
    artifact = (ARTIFACTS / "risk-model.joblib").read_bytes()
    manifest = dict(json.loads((ARTIFACTS / "risk-model.json").read_text()), version=f"x-{uuid.uuid4().hex[:6]}")
    status, body = _upload(admin, manifest, artifact + b"tampered")
    assert status == 400 and body["field"] == "manifest.sha256"
    status, body = _upload(admin, {k: v for k, v in manifest.items() if k != "feature_names"}, artifact)
    assert status == 400 and "feature_names" in (body.get("field") or body["message"])


def test_a_version_that_does_not_reproduce_its_test_vector_is_rejected(api, admin):
    artifact = (ARTIFACTS / "risk-model.joblib").read_bytes()
    manifest = json.loads((ARTIFACTS / "risk-model.json").read_text())
    wrong = dict(manifest, version=f"w-{uuid.uuid4().hex[:6]}",
                 test_vector={**manifest["test_vector"],
                              "probability": 1 - manifest["test_vector"]["probability"]})
    assert _upload(admin, wrong, artifact)[0] == 201
    result = invoke_schedule(api, "risk-scorer")
    assert result["validated"][wrong["version"]] == "rejected"
    status, listing = admin.get("/api/admin/ml-models")
    rejected = {v["version"]: v for v in listing["versions"]}[wrong["version"]]
    assert "test vector" in rejected["rejected_because"]
