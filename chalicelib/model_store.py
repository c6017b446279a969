"""Risk-model versions: artifact in S3, registry in DynamoDB, an 'active' pointer flipped atomically.

Lifecycle: upload (manifest schema + sha256 checked) → ``uploaded``; the risk scorer,
the only function with scikit-learn, loads each uploaded version and predicts on the manifest's
contract test vector → ``pending`` (or ``rejected`` with the reason); an admin activates a pending
version or rolls back to the previous one by flipping the pointer; the scorer picks it up on its next
run. Nothing restarts. scikit-learn/joblib are imported lazily and only inside ``load_estimator``.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from components.risk_model import FEATURE_NAMES, Manifest, validate_manifest

from chalicelib.aws import s3
from chalicelib.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from chalicelib.repositories.dynamo import save_if, transaction_connection
from chalicelib.tables.risk import ModelRegistryTable

MODEL_NAME = "risk"
POINTER = "_active"
# Artifacts too big for an API request body go straight to S3 with a presigned POST (new_upload), then are
# registered (register_upload): the object is checked where it is and becomes the version's artifact.
UPLOAD_PREFIX = f"models/{MODEL_NAME}/uploads/"
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
UPLOAD_URL_EXPIRES_S = 900
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_cache: dict[str, Any] = {}


@dataclass(frozen=True)
class ModelVersion:
    """One registered version as admins see it."""

    version: str
    status: str
    sha256: str
    created_at: datetime
    activated_at: datetime | None
    manifest: dict
    rejected_because: str | None = None
    size_bytes: int | None = None
    s3_key: str | None = None


def _view(row: ModelRegistryTable) -> ModelVersion:
    return ModelVersion(row.version, row.status, row.sha256 or "", row.created_at, row.activated_at,
                        row.manifest or {}, row.rejected_because,
                        None if row.size_bytes is None else int(row.size_bytes), row.s3_key)


def _checked(artifact: bytes, manifest_data: dict):
    manifest = validate_manifest(manifest_data)
    digest = hashlib.sha256(artifact).hexdigest()
    if digest != manifest.sha256:
        raise InvalidInputError("the artifact's sha256 does not match the manifest", field="manifest.sha256")
    return manifest, digest


def upload(artifact: bytes, manifest_data: dict, now: datetime) -> ModelVersion:
    """Check the manifest and the artifact's sha256, store both; status ``uploaded``."""
    manifest, digest = _checked(artifact, manifest_data)
    key = f"models/{MODEL_NAME}/{manifest.version}/{digest}.joblib"
    s3.put_bytes(key, artifact)
    return _register(manifest.version, digest, len(artifact), key, manifest_data, now)


def new_upload() -> tuple[str, dict]:
    """An upload id and the presigned POST that puts one artifact (at most MAX_ARTIFACT_BYTES) for it."""
    upload_id = uuid.uuid4().hex
    return upload_id, s3.presigned_upload(f"{UPLOAD_PREFIX}{upload_id}", MAX_ARTIFACT_BYTES, UPLOAD_URL_EXPIRES_S)


def register_upload(upload_id: str, manifest_data: dict, now: datetime) -> ModelVersion:
    """Register the artifact put through a presigned upload as a new version (status ``uploaded``): the object
    is read back, its size and sha256 checked against the manifest, and it stays where it is (the scorer
    re-checks the sha256 whenever it loads it, so a later overwrite of the object can never be used)."""
    if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
        raise InvalidInputError("upload_id is not an upload id returned by upload-url", field="upload_id")
    validate_manifest(manifest_data)  # a broken manifest is refused before the artifact is downloaded
    key = f"{UPLOAD_PREFIX}{upload_id}"
    try:
        artifact = s3.get_bytes_at_most(key, MAX_ARTIFACT_BYTES)
    except s3.ObjectTooLarge as exc:
        raise PayloadTooLargeError(f"the artifact is larger than {MAX_ARTIFACT_BYTES} bytes",
                                   field="upload_id") from exc
    if artifact is None:
        raise NotFoundError("nothing was uploaded under this upload_id (or the upload failed)",
                            field="upload_id", code="upload_not_found")
    manifest, digest = _checked(artifact, manifest_data)
    return _register(manifest.version, digest, len(artifact), key, manifest_data, now)


def _register(version: str, digest: str, size: int, key: str, manifest_data: dict, now: datetime) -> ModelVersion:
    row = ModelRegistryTable(MODEL_NAME, version, status="uploaded", s3_key=key, sha256=digest,
                             manifest=manifest_data, created_at=now, size_bytes=size)
    if not save_if(row, ModelRegistryTable.version.does_not_exist()):  # any other failure is the service's (5xx)
        raise ConflictError(f"model version {version} already exists", field="manifest.version",
                            code="duplicate_version")
    return _view(row)


def versions() -> list[ModelVersion]:
    """Every registered version (the pointer excluded), newest first."""
    rows = [r for r in ModelRegistryTable.query(MODEL_NAME) if r.version != POINTER]
    return sorted((_view(r) for r in rows), key=lambda v: v.created_at, reverse=True)


def pointer() -> ModelRegistryTable | None:
    """The active pointer item, if a version was ever activated."""
    try:
        return ModelRegistryTable.get(MODEL_NAME, POINTER, consistent_read=True)
    except ModelRegistryTable.DoesNotExist:
        return None


def _get(version: str) -> ModelRegistryTable:
    try:
        return ModelRegistryTable.get(MODEL_NAME, version, consistent_read=True)
    except ModelRegistryTable.DoesNotExist:
        raise NotFoundError(f"model version {version} not found", field="version") from None


def activate(version: str, now: datetime) -> ModelVersion:
    """Point the scorer at a validated (``pending`` or ``archived``) version, atomically."""
    row = _get(version)
    if row.status not in ("pending", "archived"):
        raise ConflictError(f"version {version} is {row.status}; only validated versions can be activated",
                            code="illegal_transition")
    current = pointer()
    previous = current.active_version if current else None
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.update(ModelRegistryTable(MODEL_NAME, version),
                      actions=[ModelRegistryTable.status.set("active"), ModelRegistryTable.activated_at.set(now)],
                      condition=ModelRegistryTable.status == row.status)
            if previous and previous != version:
                tx.update(ModelRegistryTable(MODEL_NAME, previous),
                          actions=[ModelRegistryTable.status.set("archived")])
            new_pointer = ModelRegistryTable(MODEL_NAME, POINTER, status="pointer", active_version=version,
                                             previous_version=previous, created_at=now, activated_at=now)
            tx.save(new_pointer, condition=(ModelRegistryTable.active_version == previous) if previous
                    else ModelRegistryTable.version.does_not_exist())
    except TransactWriteError as exc:
        raise ConflictError("the active model changed concurrently, retry", code="conflict") from exc
    return _view(_get(version))


def rollback(now: datetime) -> ModelVersion:
    """Re-activate the previously active version."""
    current = pointer()
    if current is None or not current.previous_version:
        raise ConflictError("there is no previous model version to roll back to", code="no_previous_version")
    return activate(current.previous_version, now)


def load_estimator(row: ModelRegistryTable):
    """Download, verify and unpickle a version (cached per sha256). Needs the scikit-learn layer."""
    if row.sha256 in _cache:
        return _cache[row.sha256]
    import joblib  # noqa: PLC0415 - only the risk scorer has scikit-learn (layers/ml)

    data = s3.get_bytes(row.s3_key)
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise ValueError(f"artifact of {row.version} does not match its sha256")
    estimator = joblib.load(io.BytesIO(data))
    _cache[row.sha256] = estimator
    return estimator


def check_version(row: ModelRegistryTable) -> str | None:
    """Load an uploaded version and predict on the contract test vector; None if it works, else why."""
    try:
        manifest: Manifest = validate_manifest(row.manifest or {})
        if manifest.test_vector is None:
            return "the manifest has no test_vector to check the artifact against"
        features, expected = manifest.test_vector
        estimator = load_estimator(row)
        vector = [float("nan") if x is None else float(x) for x in features]
        probability = float(estimator.predict_proba([vector])[0][1])
    except Exception as exc:  # noqa: BLE001 - any failure rejects the version, with its reason
        return f"{type(exc).__name__}: {exc}"
    if tuple(manifest.feature_names) != FEATURE_NAMES:
        return "feature names differ from the scorer's"
    if abs(probability - expected) > 1e-6:
        return f"predicts {probability:.6f} on the test vector, the manifest says {expected:.6f}"
    return None


def validate_uploaded(now: datetime) -> dict[str, str]:
    """Move every ``uploaded`` version to ``pending`` or ``rejected`` (run by the risk scorer)."""
    outcome = {}
    for row in ModelRegistryTable.query(MODEL_NAME, filter_condition=ModelRegistryTable.status == "uploaded"):
        problem = check_version(row)
        status = "pending" if problem is None else "rejected"
        row.update(actions=[ModelRegistryTable.status.set(status)] +
                   ([ModelRegistryTable.rejected_because.set(problem)] if problem else []),
                   condition=ModelRegistryTable.status == "uploaded")
        outcome[row.version] = status
    return outcome


def active_estimator() -> tuple[str, Any] | None:
    """(version, estimator) of the active model, or None when none is active (the prior serves)."""
    current = pointer()
    if current is None or not current.active_version:
        return None
    row = _get(current.active_version)
    return row.version, load_estimator(row)
