"""Verifying an EC2 instance identity document's signature against AWS's regional certificates.

The agent sends the document exactly as IMDS served it (``/latest/dynamic/instance-identity/document``)
and its base64 RSA-SHA256 signature (``.../signature``). The certificates ship with the product in
``data/aws_identity_certs/<region>.pem`` (source: data/SOURCES.md), packaged through
``vendor/data/aws_identity_certs`` as the catalogue is. The PKCS7 forms (``pkcs7``, ``rsa2048``) are not
accepted: ``cryptography`` cannot verify a PKCS7 signature, and the plain signature proves the same.

Local mode has no AWS to sign: its fake IMDS signs with ``localmode/identity/local-identity-key.pem``, and
that certificate is trusted only when the stage is ``local`` (settings.local), never in dev or prod.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from components.agent_identity import IdentityDocument, parse_identity_document

from chalicelib.errors import ForbiddenError, InvalidInputError
from chalicelib.settings import get_settings

if TYPE_CHECKING:  # cryptography (~20 ms) is imported when a document is first verified, not at cold start
    from cryptography import x509

_ROOT = Path(__file__).resolve().parents[1]
CERT_DIR = _ROOT / "data" / "aws_identity_certs"
LOCAL_CERT = _ROOT / "localmode" / "identity" / "local-identity-cert.pem"
MAX_SIGNATURE_CHARS = 1024
# the document's region shape (components/agent_identity/document.py ``_REGION``), ASCII digits only as there
_REGION_FILE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")


@lru_cache(maxsize=64)
def region_certificate(region: str) -> x509.Certificate | None:
    """AWS's certificate for the region's plain signature, or None for a region not shipped."""
    if not _REGION_FILE.fullmatch(region):
        return None
    path = CERT_DIR / f"{region}.pem"
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()) if path.is_file() else None


@lru_cache(maxsize=1)
def local_certificate() -> x509.Certificate | None:
    """Local mode's test certificate (None in a Lambda package, which does not ship localmode/)."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(LOCAL_CERT.read_bytes()) if LOCAL_CERT.is_file() else None


def decode_signature(signature: object) -> bytes:
    """The signature's bytes (IMDS wraps the base64 in lines); 400 on anything else."""
    if not isinstance(signature, str) or not signature.strip() or len(signature) > MAX_SIGNATURE_CHARS:
        raise InvalidInputError("must be the base64 signature of the identity document",
                                field="identity_signature")
    try:
        return base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("is not valid base64", field="identity_signature") from exc


def trusted_certificates(region: str) -> list[x509.Certificate]:
    """AWS's certificate of the region, plus the local test certificate in the local stage only."""
    certs = [region_certificate(region)]
    if get_settings().local:
        certs.append(local_certificate())
    return [c for c in certs if c is not None]


def verify_identity_document(document: object, signature: object) -> IdentityDocument:
    """The parsed document once its signature verifies: 400 for a malformed document or signature,
    403 (``identity_not_verified``) when no trusted certificate verifies it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    doc = parse_identity_document(document)
    raw = decode_signature(signature)
    for cert in trusted_certificates(doc.region):
        try:
            cert.public_key().verify(raw, str(document).encode("utf-8"), PKCS1v15(), SHA256())
        except (InvalidSignature, ValueError, TypeError):
            continue
        return doc
    raise ForbiddenError(f"the identity document's signature does not verify against AWS's certificate "
                         f"for {doc.region}", field="identity_signature", code="identity_not_verified")
