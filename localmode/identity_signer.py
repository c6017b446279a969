"""Local mode's stand-in for AWS's signing of instance identity documents.

There is no AWS to sign in local mode, so the fake IMDS signs with ``identity/local-identity-key.pem``, a
test key shipped in the repository. Its certificate is trusted by the server only in the ``local`` stage
(chalicelib.identity_documents): in dev or prod a document signed with it answers 403.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

KEY_PATH = Path(__file__).resolve().parent / "identity" / "local-identity-key.pem"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account: what local mode's instances run in


@lru_cache(maxsize=1)
def _key():
    return serialization.load_pem_private_key(KEY_PATH.read_bytes(), password=None)


def identity_document(*, instance_id: str, instance_type: str, az: str, region: str | None = None,
                      account_id: str = LOCAL_ACCOUNT_ID, image_id: str | None = None,
                      pending_time: str = "2026-01-01T00:00:00Z") -> str:
    """The document's JSON text, pretty-printed as IMDS serves it."""
    return json.dumps({
        "accountId": account_id, "architecture": "x86_64", "availabilityZone": az,
        "imageId": image_id, "instanceId": instance_id, "instanceType": instance_type,
        "pendingTime": pending_time, "privateIp": None, "region": region or az[:-1], "version": "2017-09-30",
    }, indent=2)


def sign(document: str) -> str:
    """The base64 RSA-SHA256 signature of the document, in lines like IMDS's ``signature``."""
    raw = _key().sign(document.encode("utf-8"), PKCS1v15(), SHA256())
    return base64.encodebytes(raw).decode("ascii").strip()


def signed_identity(**fields: Any) -> tuple[str, str]:
    """``(document, signature)`` for the given instance fields (see `identity_document`)."""
    document = identity_document(**fields)
    return document, sign(document)
