"""Admin routes of the risk-model lifecycle: upload, list, activate, roll back; the presigned upload for
artifacts too big for a request body; and the legacy dashboard's ML routes (docs/legacy-compatibility.md)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import timedelta
from email.parser import BytesParser
from email.policy import HTTP

from pydantic import Field

from chalicelib import auth, model_store
from chalicelib.api.common import ApiBlueprint, admin_request, ok, utcnow
from chalicelib.api.views import iso
from chalicelib.errors import GoneError, InvalidInputError, PayloadTooLargeError
from chalicelib.schemas.base import Schema
from chalicelib.settings import get_settings

bp = ApiBlueprint(__name__)


class UploadModelRequest(Schema):
    """POST /api/admin/ml-models: the joblib artifact (base64) and its JSON manifest."""

    manifest: dict
    artifact_base64: str = Field(min_length=4)


class RegisterUploadRequest(Schema):
    """POST /api/admin/ml-models/register: the upload id of upload-url and the artifact's manifest."""

    upload_id: str = Field(min_length=1, max_length=64)
    manifest: dict


class ActivateSessionRequest(Schema):
    """POST /api/admin/ml-models/activate (legacy): ``{"sessionId": <version>}``."""

    sessionId: str = Field(min_length=1, max_length=128)  # noqa: N815 - the legacy dashboard's key


def _view(v: model_store.ModelVersion) -> dict:
    return {"version": v.version, "status": v.status, "sha256": v.sha256, "created_at": iso(v.created_at),
            "activated_at": iso(v.activated_at), "metrics": v.manifest.get("metrics"),
            "rejected_because": v.rejected_because, "size_bytes": v.size_bytes}


def _legacy(v: model_store.ModelVersion) -> dict:
    """A version in the legacy dashboard's words: an upload "session" is a version."""
    return {"success": True, "sessionId": v.version, **_view(v)}


def _artifact(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("artifact_base64 is not valid base64", field="artifact_base64") from None


def _too_large_hint(exc: PayloadTooLargeError) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{exc.message}: upload bigger models with POST /api/admin/ml-models/upload-url "
                                "(a presigned S3 upload) and then POST /api/admin/ml-models/register",
                                code="payload_too_large")


@bp.route("/api/admin/ml-models", methods=["POST"], response="ModelVersionView")
def upload_model():
    """Store a model version (status ``uploaded``; the risk scorer validates it with scikit-learn)."""
    try:
        body = admin_request(bp.current_request, UploadModelRequest)
    except PayloadTooLargeError as exc:
        raise _too_large_hint(exc) from exc
    return ok(_view(model_store.upload(_artifact(body.artifact_base64), body.manifest, utcnow())), status=201)


@bp.route("/api/admin/ml-models", methods=["GET"], response="ModelsReply")
def list_models():
    """Every version with its status, and which one is active."""
    admin_request(bp.current_request)
    current = model_store.pointer()
    return ok({"active_version": current.active_version if current else None,
               "versions": [_view(v) for v in model_store.versions()]})


@bp.route("/api/admin/ml-models/{version}/activate", methods=["POST"], response="ModelVersionView")
def activate_model(version):
    """Make a validated version the active one (the scorer uses it from its next run)."""
    admin_request(bp.current_request)
    return ok(_view(model_store.activate(version, utcnow())))


@bp.route("/api/admin/ml-models/rollback", methods=["POST"], response="ModelVersionView")
def rollback_model():
    """Re-activate the previously active version."""
    admin_request(bp.current_request)
    return ok(_view(model_store.rollback(utcnow())))


# --- artifacts of any size: presigned S3 upload, then register -------------------------------------------

@bp.route("/api/admin/ml-models/upload-url", methods=["POST"], response="UploadUrlReply")
def upload_url():
    """A presigned S3 POST for one artifact (at most ``max_bytes``), valid for ``expires_in`` seconds. Send the
    file as the form field ``file`` after ``fields``, then register it with its manifest."""
    admin_request(bp.current_request)
    upload_id, presigned = model_store.new_upload()
    return ok({"upload_id": upload_id, "method": "POST", "url": presigned["url"], "fields": presigned["fields"],
               "file_field": "file", "max_bytes": model_store.MAX_ARTIFACT_BYTES,
               "expires_in": model_store.UPLOAD_URL_EXPIRES_S,
               "expires_at": iso(utcnow() + timedelta(seconds=model_store.UPLOAD_URL_EXPIRES_S)),
               "register": "/api/admin/ml-models/register"}, status=201)


@bp.route("/api/admin/ml-models/register", methods=["POST"], response="LegacyModelVersion")
def register_upload():
    """Check the uploaded artifact against its manifest (size, sha256, schema): a new version, ``uploaded``."""
    body = admin_request(bp.current_request, RegisterUploadRequest)
    return ok(_legacy(model_store.register_upload(body.upload_id, body.manifest, utcnow())), status=201)


# --- the legacy dashboard's ML routes (the monolith's) -----------------------------------------------

MULTIPART = "multipart/form-data"
ARTIFACT_SUFFIXES = (".joblib", ".pkl")


def _parts(request) -> list[tuple[str | None, str | None, bytes]]:
    """(field name, file name, content) of each part of a multipart/form-data body."""
    raw = request.raw_body or b""
    limit = get_settings().max_body_bytes
    if len(raw) > limit:
        raise _too_large_hint(PayloadTooLargeError(f"request body exceeds {limit} bytes"))
    content_type = (request.headers or {}).get("content-type", "")
    message = BytesParser(policy=HTTP).parsebytes(
        b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + raw)
    if not message.is_multipart():
        raise InvalidInputError("the body is not multipart/form-data with a boundary", field="files")
    return [(part.get_param("name", header="content-disposition"), part.get_filename(),
             part.get_payload(decode=True) or b"") for part in message.iter_parts()]


def _legacy_upload_parts(request) -> tuple[bytes, dict]:
    """The artifact and the manifest of a legacy multipart upload: ``files`` holds the model file (.joblib or
    .pkl) and its manifest (.json); the manifest may instead be the text field ``manifest``."""
    artifacts, manifests = [], []
    for name, filename, data in _parts(request):
        lowered = (filename or "").lower()
        if name == "manifest" and not filename:
            manifests.append(data)
        elif name == "files" and lowered.endswith(ARTIFACT_SUFFIXES):
            artifacts.append(data)
        elif name == "files" and lowered.endswith(".json"):
            manifests.append(data)
        elif name == "files":
            raise InvalidInputError(f"unexpected file {filename!r}: send the model (.joblib/.pkl) and its manifest "
                                    "(.json); the decision engine is not uploaded (it is deployed with the app)",
                                    field="files")
    if len(artifacts) != 1:
        raise InvalidInputError("send exactly one model file (.joblib or .pkl) in the form field files",
                                field="files")
    if len(manifests) != 1:
        raise InvalidInputError("send the model's manifest (.json, as a file in files or the field manifest): "
                                "a version is validated against it before it can be activated",
                                field="manifest", code="manifest_required")
    try:
        manifest = json.loads(manifests[0])
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[…" deeper than the parser goes
        raise InvalidInputError("the manifest is not valid JSON", field="manifest") from None
    if not isinstance(manifest, dict):
        raise InvalidInputError("the manifest must be a JSON object", field="manifest")
    return artifacts[0], manifest


@bp.route("/api/admin/ml-models/upload", methods=["POST"], content_types=["application/json", MULTIPART], response="LegacyModelVersion")
def legacy_upload():
    """Legacy upload: multipart ``files`` (model + manifest) or the JSON body of POST /api/admin/ml-models.
    The new version (its ``sessionId``) waits for the scorer's validation, then is activated explicitly."""
    request = bp.current_request
    if (request.headers or {}).get("content-type", "").lower().startswith(MULTIPART):
        auth.require_admin(request.headers)
        artifact, manifest = _legacy_upload_parts(request)
    else:
        try:
            body = admin_request(request, UploadModelRequest)
        except PayloadTooLargeError as exc:
            raise _too_large_hint(exc) from exc
        artifact, manifest = _artifact(body.artifact_base64), body.manifest
    return ok(_legacy(model_store.upload(artifact, manifest, utcnow())), status=201)


@bp.route("/api/admin/ml-models/activate", methods=["POST"], response="LegacyModelVersion")
def legacy_activate():
    """Legacy ``{"sessionId"}`` → that version becomes the active model (no restart: the scorer's next run)."""
    body = admin_request(bp.current_request, ActivateSessionRequest)
    return ok(_legacy(model_store.activate(body.sessionId, utcnow())))


@bp.route("/api/admin/ml-models/fallback", methods=["POST"], response="LegacyModelVersion")
def legacy_fallback():
    """Legacy fallback: re-activate the previously active version (the same as /rollback)."""
    admin_request(bp.current_request)
    return ok(_legacy(model_store.rollback(utcnow())))


@bp.route("/api/admin/ml-models/sessions", methods=["GET"], response="ModelSessionsReply")
def legacy_sessions():
    """The last 10 versions ("upload sessions") with the legacy live/fallback flags, files and size."""
    admin_request(bp.current_request)
    current = model_store.pointer()
    live = current.active_version if current else None
    fallback = current.previous_version if current else None
    sessions = [{**_view(v), "sessionId": v.version, "is_live": v.version == live,
                 "is_fallback": v.version == fallback,
                 "files": [v.s3_key.rsplit("/", 1)[-1]] if v.s3_key else [], "total_size": v.size_bytes}
                for v in model_store.versions()[:10]]
    return ok({"sessions": sessions, "next_token": None})


@bp.route("/api/admin/decision-engine/upload", methods=["POST"], content_types=["application/json", MULTIPART], status=410)
def legacy_decision_engine_upload():
    """Refused on purpose (410): the decision engine is code deployed with the application (reviewed, tested,
    versioned with it), never a file uploaded at run time into a running server."""
    auth.require_admin(bp.current_request.headers)
    raise GoneError("the decision engine is part of the deployed application and cannot be uploaded; deploy a new "
                    "version of the app to change it. Risk models are uploaded with POST /api/admin/ml-models "
                    "(or /api/admin/ml-models/upload-url for large files)", code="decision_engine_not_uploadable")
