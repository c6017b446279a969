"""Admin routes of the risk-model lifecycle: upload, list, activate, roll back."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field

from chalicelib import model_store
from chalicelib.api.common import ApiBlueprint, admin_request, ok, utcnow
from chalicelib.api.views import iso
from chalicelib.errors import InvalidInputError
from chalicelib.schemas.base import Schema

bp = ApiBlueprint(__name__)


class UploadModelRequest(Schema):
    """POST /api/admin/ml-models: the joblib artifact (base64) and its JSON manifest."""

    manifest: dict
    artifact_base64: str = Field(min_length=4)


def _view(v: model_store.ModelVersion) -> dict:
    return {"version": v.version, "status": v.status, "sha256": v.sha256, "created_at": iso(v.created_at),
            "activated_at": iso(v.activated_at), "metrics": v.manifest.get("metrics"),
            "rejected_because": v.rejected_because}


@bp.route("/api/admin/ml-models", methods=["POST"], response="ModelVersionView")
def upload_model():
    """Store a model version (status ``uploaded``; the risk scorer validates it with scikit-learn)."""
    body = admin_request(bp.current_request, UploadModelRequest)
    try:
        artifact = base64.b64decode(body.artifact_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("artifact_base64 is not valid base64", field="artifact_base64") from None
    return ok(_view(model_store.upload(artifact, body.manifest, utcnow())), status=201)


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
