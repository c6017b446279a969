"""The legacy dashboard's ML routes (upload as multipart or JSON, activate by sessionId, fallback, sessions, the
refused decision-engine upload) and the presigned S3 upload that lifts the ~190 KiB request-body ceiling."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest
import requests

from chalicelib import model_store
from chalicelib.tables import ModelRegistryTable
from tests.api._document import assert_matches_document
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.conftest import Caller

ARTIFACTS = Path(__file__).resolve().parents[2] / "ml" / "artifacts"
ARTIFACT = (ARTIFACTS / "risk-model.joblib").read_bytes()
MANIFEST = json.loads((ARTIFACTS / "risk-model.json").read_text())


def manifest_for(artifact: bytes = ARTIFACT) -> dict:
    """The shipped manifest under a fresh version, for ``artifact``."""
    return dict(MANIFEST, version=f"legacy-{uuid.uuid4().hex[:8]}", sha256=hashlib.sha256(artifact).hexdigest())


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body as browsers send it: (field, filename or None, content) per part."""
    boundary = f"----legacy{uuid.uuid4().hex}"
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "application/octet-stream" if filename else "text/plain"
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {kind}\r\n\r\n".encode()
                      + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_multipart(caller: Caller, path: str, parts):
    body, content_type = multipart(parts)
    return caller.call("POST", path, raw=body, headers={"Content-Type": content_type})


pytestmark = pytest.mark.usefixtures("keep_the_active_model")


def make_pending(version: str) -> None:
    """What the risk scorer does after checking a version with scikit-learn (tested in
    tests/integration/test_model_lifecycle.py): uploaded → pending."""
    ModelRegistryTable(model_store.MODEL_NAME, version).update(actions=[ModelRegistryTable.status.set("pending")])


def row(version: str) -> ModelRegistryTable:
    return ModelRegistryTable.get(model_store.MODEL_NAME, version, consistent_read=True)


def test_multipart_upload_with_model_and_manifest_files_creates_a_version(admin, chalice_app):
    manifest = manifest_for()
    status, body = post_multipart(admin, "/api/admin/ml-models/upload", [
        ("files", "risk-model.joblib", ARTIFACT), ("files", "risk-model.json", json.dumps(manifest).encode())])
    assert status == 201, body
    assert_matches_document(chalice_app, "POST", "/api/admin/ml-models/upload", status, body)
    assert body["success"] is True and body["sessionId"] == manifest["version"] == body["version"]
    assert body["status"] == "uploaded" and body["size_bytes"] == len(ARTIFACT)
    assert row(manifest["version"]).sha256 == manifest["sha256"]  # the bytes arrived unaltered


def test_multipart_manifest_may_be_a_text_field_and_json_body_works_too(admin):
    manifest = manifest_for()
    status, body = post_multipart(admin, "/api/admin/ml-models/upload", [
        ("files", "model.pkl", ARTIFACT), ("manifest", None, json.dumps(manifest).encode())])
    assert status == 201 and body["sessionId"] == manifest["version"], body
    manifest = manifest_for()
    status, body = admin.post("/api/admin/ml-models/upload", {
        "manifest": manifest, "artifact_base64": base64.b64encode(ARTIFACT).decode()})
    assert status == 201 and body["sessionId"] == manifest["version"], body


@pytest.mark.parametrize("parts, field, code", [
    ([("files", "risk-model.joblib", ARTIFACT)], "manifest", "manifest_required"),  # legacy: no manifest
    ([("files", "engine.py", b"print(1)"), ("files", "m.json", b"{}")], "files", None),
    ([("files", "m.json", b"{}")], "files", None),
    ([("files", "a.joblib", ARTIFACT), ("files", "m.json", b"not json")], "manifest", None),
    ([("files", "a.joblib", ARTIFACT), ("files", "m.json", b"[" * 100_000)], "manifest", None),  # was a 500
    ([("files", "a.joblib", ARTIFACT), ("files", "m.json", b"{}")], "name", None),  # manifest schema
    ([("files", "a.joblib", b"tampered"), ("manifest", None, json.dumps(MANIFEST).encode())], "manifest.sha256",
     None),
])
def test_bad_multipart_uploads_are_400_and_write_nothing(admin, parts, field, code):
    before = snapshot_tables()
    status, body = post_multipart(admin, "/api/admin/ml-models/upload", parts)
    assert_error(status, body, 400, field=field, code=code)
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_a_legacy_admins_version_name_is_refused_with_the_id_to_use_instead(admin):
    """GIVEN a legacy admin's manifest naming the version as people name releases (``v1.0 final ...``: the legacy
    server had no versions, its uploads were sessions with a generated id, so nothing carries over to keep)
    WHEN the legacy dashboard uploads it (multipart ``files``)
    THEN it is refused (400 naming ``version``: a version is a registry key, an S3 folder and the activate route's
    path, so an id), nothing is stored, and the message offers the id to use; that id is then uploaded (201).
    The id is offered, never applied silently: the version is what the admin activates and what the manifest says."""
    suffix = uuid.uuid4().hex[:8]
    manifest = dict(manifest_for(), version=f"v1.0 final {suffix}")
    before = snapshot_tables()
    status, body = post_multipart(admin, "/api/admin/ml-models/upload", [
        ("files", "risk-model.joblib", ARTIFACT), ("files", "risk-model.json", json.dumps(manifest).encode())])
    assert_error(status, body, 400, field="version")
    assert f"'v1.0-final-{suffix}'" in body["message"], body
    assert diff_snapshots(before, snapshot_tables()) == {}
    manifest["version"] = f"v1.0-final-{suffix}"
    status, body = post_multipart(admin, "/api/admin/ml-models/upload", [
        ("files", "risk-model.joblib", ARTIFACT), ("files", "risk-model.json", json.dumps(manifest).encode())])
    assert status == 201 and body["sessionId"] == f"v1.0-final-{suffix}", body


def test_legacy_routes_need_the_admin_key(api):
    anonymous = Caller(api.http)
    status, body = post_multipart(anonymous, "/api/admin/ml-models/upload", [("files", "a.joblib", ARTIFACT)])
    assert_error(status, body, 401)
    for method, path in (("POST", "/api/admin/ml-models/activate"), ("POST", "/api/admin/ml-models/fallback"),
                         ("GET", "/api/admin/ml-models/sessions"), ("POST", "/api/admin/decision-engine/upload"),
                         ("POST", "/api/admin/ml-models/upload-url"), ("POST", "/api/admin/ml-models/register")):
        status, body = anonymous.call(method, path)
        assert_error(status, body, 401)


def test_activate_by_session_id_fallback_and_sessions_flags(admin, chalice_app):
    versions = []
    for _ in range(2):
        manifest = manifest_for()
        status, body = admin.post("/api/admin/ml-models/upload", {
            "manifest": manifest, "artifact_base64": base64.b64encode(ARTIFACT).decode()})
        assert status == 201, body
        versions.append(body["sessionId"])
    first, second = versions
    # not validated yet → 409; unknown → 404; missing sessionId → 400
    assert_error(*admin.post("/api/admin/ml-models/activate", {"sessionId": first}), 409, code="illegal_transition")
    assert_error(*admin.post("/api/admin/ml-models/activate", {"sessionId": "nope"}), 404)
    assert_error(*admin.post("/api/admin/ml-models/activate", {}), 400, field="sessionId")
    for version in versions:
        make_pending(version)
    status, body = admin.post("/api/admin/ml-models/activate", {"sessionId": first})
    assert status == 200 and body["success"] is True and body["status"] == "active", body
    status, body = admin.post("/api/admin/ml-models/activate", {"sessionId": second})
    assert status == 200 and body["sessionId"] == second, body
    assert_matches_document(chalice_app, "POST", "/api/admin/ml-models/activate", status, body)
    status, listing = admin.get("/api/admin/ml-models/sessions")
    assert status == 200 and len(listing["sessions"]) <= 10 and listing["next_token"] is None
    assert_matches_document(chalice_app, "GET", "/api/admin/ml-models/sessions", status, listing)
    flags = {s["sessionId"]: (s["is_live"], s["is_fallback"]) for s in listing["sessions"]}
    assert flags[second] == (True, False) and flags[first] == (False, True)
    mine = [s for s in listing["sessions"] if s["sessionId"] == second][0]
    assert mine["total_size"] == len(ARTIFACT) and mine["files"] == [f"{mine['sha256']}.joblib"]
    # fallback swaps back to the first
    status, body = admin.post("/api/admin/ml-models/fallback")
    assert status == 200 and body["sessionId"] == first and body["status"] == "active", body
    assert_matches_document(chalice_app, "POST", "/api/admin/ml-models/fallback", status, body)
    status, listing = admin.get("/api/admin/ml-models/sessions")
    flags = {s["sessionId"]: (s["is_live"], s["is_fallback"]) for s in listing["sessions"]}
    assert flags[first] == (True, False) and flags[second] == (False, True)


def test_decision_engine_upload_is_refused_with_an_explanation(admin):
    before = snapshot_tables()
    status, body = post_multipart(admin, "/api/admin/decision-engine/upload", [("files", "engine.py", b"x = 1")])
    assert_error(status, body, 410, code="decision_engine_not_uploadable")
    assert "deployed" in body["message"]
    assert_error(*admin.post("/api/admin/decision-engine/upload", {}), 410, code="decision_engine_not_uploadable")
    assert diff_snapshots(before, snapshot_tables()) == {}


# --- large artifacts: the JSON upload is 413, the presigned upload works -----------------------------------

BIG = os.urandom(300 * 1024)  # above the ~190 KiB a base64 artifact can have in a 256 KiB body


def test_a_big_artifact_in_a_request_body_is_413_pointing_at_upload_url(admin):
    manifest = manifest_for(BIG)
    for path in ("/api/admin/ml-models", "/api/admin/ml-models/upload"):
        status, body = admin.post(path, {"manifest": manifest, "artifact_base64": base64.b64encode(BIG).decode()})
        assert_error(status, body, 413)
        assert "upload-url" in body["message"]
    status, body = post_multipart(admin, "/api/admin/ml-models/upload", [
        ("files", "big.joblib", BIG), ("manifest", None, json.dumps(manifest).encode())])
    assert_error(status, body, 413)


def presigned_put(admin, data: bytes) -> dict:
    status, grant = admin.post("/api/admin/ml-models/upload-url", {})
    assert status == 201, grant
    response = requests.post(grant["url"], data=grant["fields"], files={grant["file_field"]: ("model.joblib", data)},
                             timeout=30)
    assert response.status_code in (200, 204), response.text
    return grant


def test_presigned_upload_then_register_makes_a_version_of_a_big_artifact(admin, chalice_app):
    grant = presigned_put(admin, BIG)
    assert grant["max_bytes"] == model_store.MAX_ARTIFACT_BYTES and grant["register"] == "/api/admin/ml-models/register"
    # the size limit is part of the signed policy: S3 refuses a bigger body
    policy = json.loads(base64.b64decode(grant["fields"]["policy"]))
    assert ["content-length-range", 1, model_store.MAX_ARTIFACT_BYTES] in policy["conditions"]
    manifest = manifest_for(BIG)
    status, body = admin.post("/api/admin/ml-models/register", {"upload_id": grant["upload_id"], "manifest": manifest})
    assert status == 201, body
    assert_matches_document(chalice_app, "POST", "/api/admin/ml-models/register", status, body)
    assert body["sessionId"] == manifest["version"] and body["status"] == "uploaded"
    assert body["size_bytes"] == len(BIG) and row(manifest["version"]).sha256 == hashlib.sha256(BIG).hexdigest()
    # registering it again is a duplicate version
    status, again = admin.post("/api/admin/ml-models/register", {"upload_id": grant["upload_id"], "manifest": manifest})
    assert_error(status, again, 409, code="duplicate_version")


def test_register_refuses_a_missing_a_mismatched_or_an_oversized_upload(admin, monkeypatch):
    before = snapshot_tables()
    status, body = admin.post("/api/admin/ml-models/register", {"upload_id": uuid.uuid4().hex,
                                                                "manifest": manifest_for()})
    assert_error(status, body, 404, code="upload_not_found", field="upload_id")
    status, body = admin.post("/api/admin/ml-models/register", {"upload_id": "../../models/risk/x",
                                                                "manifest": manifest_for()})
    assert_error(status, body, 400, field="upload_id")
    grant = presigned_put(admin, ARTIFACT)
    status, body = admin.post("/api/admin/ml-models/register", {"upload_id": grant["upload_id"],
                                                                "manifest": manifest_for(b"other bytes")})
    assert_error(status, body, 400, field="manifest.sha256")
    status, body = admin.post("/api/admin/ml-models/register", {"upload_id": grant["upload_id"], "manifest": {}})
    assert_error(status, body, 400)
    monkeypatch.setattr(model_store, "MAX_ARTIFACT_BYTES", len(ARTIFACT) - 1)
    status, body = admin.post("/api/admin/ml-models/register", {"upload_id": grant["upload_id"],
                                                                "manifest": manifest_for()})
    assert_error(status, body, 413, field="upload_id")
    assert diff_snapshots(before, snapshot_tables()) == {}


def test_a_registry_write_that_fails_for_another_reason_is_not_called_a_duplicate(monkeypatch):
    """Only the failed "version does not exist" condition is a duplicate version (409); a throttled or failed write
    is the service's error, raised as it is (it was answered 409 ``duplicate_version``, telling the operator a
    version existed that did not)."""
    from datetime import UTC, datetime

    import pytest
    from pynamodb.exceptions import PutError

    from chalicelib.errors import ConflictError
    from chalicelib.tables.risk import ModelRegistryTable

    def throttled(self, *args, **kwargs):
        raise PutError("ProvisionedThroughputExceededException")

    monkeypatch.setattr(ModelRegistryTable, "save", throttled)
    with pytest.raises(PutError) as raised:
        model_store._register("v-throttled", "0" * 64, 1, "models/x", {}, datetime.now(UTC))
    assert not isinstance(raised.value, ConflictError)
