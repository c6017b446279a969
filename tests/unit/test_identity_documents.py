"""Identity document verification: AWS's shipped certificates, local mode's test certificate only in the
local stage, and every malformed input a 4xx (never a 500)."""

from __future__ import annotations

import base64
import json

import pytest

from components.agent_identity import (
    IdentityDocument,
    IdentityMismatchError,
    InvalidIdentityDocumentError,
    account_bound,
    check_identity,
    parse_identity_document,
)

from chalicelib import identity_documents
from chalicelib.errors import ApiError, translate
from chalicelib.settings import Settings
from localmode.identity_signer import identity_document, sign, signed_identity

FIELDS = dict(instance_id="i-0abc1234567890def", instance_type="m5.large", az="eu-west-1a", region="eu-west-1")


@pytest.fixture
def local_stage(monkeypatch):
    real = identity_documents.get_settings()
    monkeypatch.setattr(identity_documents, "get_settings",
                        lambda: Settings(**{**real.__dict__, "stage": "local"}))


def status_of(call) -> tuple[int, str | None, str | None]:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the translation is what is under test
        call()
    error = translate(caught.value)
    assert isinstance(error, ApiError), caught.value
    return error.status, error.code, error.field


def test_every_shipped_region_has_an_aws_certificate():
    assert identity_documents.region_certificate("us-east-1") is not None
    assert identity_documents.region_certificate("eu-west-1") is not None
    assert len(list(identity_documents.CERT_DIR.glob("*.pem"))) >= 30
    assert identity_documents.region_certificate("xx-nowhere-9") is None
    assert identity_documents.region_certificate("../../etc/passwd") is None


def test_a_valid_local_document_verifies_in_the_local_stage(local_stage):
    document, signature = signed_identity(**FIELDS)
    doc = identity_documents.verify_identity_document(document, signature)
    assert doc == IdentityDocument("123456789012", FIELDS["instance_id"], "eu-west-1", "eu-west-1a", "m5.large",
                                   image_id=None, pending_time="2026-01-01T00:00:00Z")


def test_the_local_test_certificate_is_not_trusted_outside_the_local_stage():
    """GIVEN a document signed with local mode's key WHEN the dev stage verifies it THEN 403: only AWS's
    certificate of the region counts there."""
    document, signature = signed_identity(**FIELDS)
    assert status_of(lambda: identity_documents.verify_identity_document(document, signature)) == \
        (403, "identity_not_verified", "identity_signature")


def test_a_tampered_document_does_not_verify(local_stage):
    document, signature = signed_identity(**FIELDS)
    tampered = document.replace("123456789012", "210987654321")
    assert status_of(lambda: identity_documents.verify_identity_document(tampered, signature))[:2] == \
        (403, "identity_not_verified")


def test_a_signature_of_another_document_does_not_verify(local_stage):
    document = identity_document(**FIELDS)
    other = sign(identity_document(**{**FIELDS, "instance_type": "c5.large"}))
    assert status_of(lambda: identity_documents.verify_identity_document(document, other))[0] == 403


def test_the_wrong_regions_certificate_does_not_verify(monkeypatch):
    """GIVEN a document signed by another key WHEN only AWS's real certificate of its region is trusted
    THEN 403 (and a region without a shipped certificate is 403 too, not a 500)."""
    document, signature = signed_identity(**FIELDS)
    monkeypatch.setattr(identity_documents, "trusted_certificates",
                        lambda region: [identity_documents.region_certificate("us-east-1")])
    assert status_of(lambda: identity_documents.verify_identity_document(document, signature))[0] == 403
    monkeypatch.undo()
    unknown, unknown_sig = signed_identity(**{**FIELDS, "az": "zz-nowhere-9a", "region": "zz-nowhere-9"})
    assert status_of(lambda: identity_documents.verify_identity_document(unknown, unknown_sig))[0] == 403


@pytest.mark.parametrize("signature", ["", "   ", "not base64!!", "@@@@", "A" * 2000, 12, None])
def test_garbage_signatures_are_400(signature, local_stage):
    document = identity_document(**FIELDS)
    assert status_of(lambda: identity_documents.verify_identity_document(document, signature)) == \
        (400, "validation_error", "identity_signature")


def test_a_signature_of_the_wrong_length_is_403_not_500(local_stage):
    document = identity_document(**FIELDS)
    short = base64.b64encode(b"\x00" * 7).decode()
    assert status_of(lambda: identity_documents.verify_identity_document(document, short))[0] == 403


@pytest.mark.parametrize("document", [
    "", "not json", "[]", "{}", json.dumps({"accountId": "1234", "instanceId": "i-0abc12345678",
                                           "region": "eu-west-1", "availabilityZone": "eu-west-1a",
                                           "instanceType": "m5.large"}),
    json.dumps({"accountId": "123456789012", "instanceId": "vol-1", "region": "eu-west-1",
                "availabilityZone": "eu-west-1a", "instanceType": "m5.large"}),
    "{" * 5000, 42, None,
])
def test_malformed_documents_are_400(document, local_stage):
    signature = sign("x")
    assert status_of(lambda: identity_documents.verify_identity_document(document, signature)) == \
        (400, "validation_error", "identity_document")


ARABIC_INDIC_ACCOUNT = "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662"  # ١٢٣٤٥٦٧٨٩٠١٢


@pytest.mark.parametrize("fields", [
    {**FIELDS, "account_id": ARABIC_INDIC_ACCOUNT},  # twelve digits, but not ASCII ones (\d takes any script's)
    {**FIELDS, "account_id": "12345678901\uff12"},  # a fullwidth ２ at the end
    {**FIELDS, "region": "eu-west-\u0661"},  # the region's number in Arabic-Indic
])
def test_a_signed_document_with_non_ascii_digits_in_an_id_is_400(fields, local_stage):
    """GIVEN a document whose signature verifies but whose account id (or region number) is written in
    another script's digits THEN 400 on identity_document, as an account id is refused everywhere else."""
    document, signature = signed_identity(**fields)
    assert status_of(lambda: identity_documents.verify_identity_document(document, signature)) == \
        (400, "validation_error", "identity_document")
    with pytest.raises(InvalidIdentityDocumentError):
        parse_identity_document(document)


def test_parse_rejects_a_non_string():
    with pytest.raises(InvalidIdentityDocumentError):
        parse_identity_document({"accountId": "123456789012"})


@pytest.mark.parametrize(("field", "claim"), [("instance_id", "i-0fff1234567890abc"), ("instance_type", "c5.large"),
                                              ("region", "eu-west-2"), ("az", "eu-west-1b")])
def test_every_claim_must_match_the_signed_document(field, claim):
    doc = parse_identity_document(identity_document(**FIELDS))
    claims = {**{k: v for k, v in FIELDS.items()}, field: claim}
    with pytest.raises(IdentityMismatchError) as caught:
        check_identity(doc, **claims)
    assert caught.value.field == field
    assert (translate(caught.value).status, translate(caught.value).code) == (403, "identity_mismatch")


def test_an_account_must_be_one_the_product_may_act_in_for_the_client():
    assert not account_bound("123456789012", [])
    assert account_bound("123456789012", ["123456789012", "210987654321"])
    assert not account_bound("123456789012", ["210987654321"])
