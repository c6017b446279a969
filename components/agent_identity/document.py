"""The EC2 instance identity document: parsing it and checking it against what an agent registers.

The signature is checked elsewhere (chalicelib.identity_documents, with AWS's certificates); this
module only reads the signed JSON and compares it with the registration, so a verified document decides
which account, instance, region, zone and type the agent is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from components.agent_identity.errors import IdentityMismatchError, InvalidIdentityDocumentError

__all__ = ["IdentityDocument", "account_bound", "check_identity", "parse_identity_document"]

MAX_DOCUMENT_CHARS = 4096
# ASCII digits only, as an account id is validated everywhere else (chalicelib.aws.accounts.ACCOUNT_ID):
# ``\d`` would take any script's digits (Arabic-Indic ``١٢٣…``, fullwidth ``１２３…``).
_ACCOUNT = re.compile(r"[0-9]{12}")
_INSTANCE = re.compile(r"i-[0-9a-f]{8,17}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
_TEXT = re.compile(r"[A-Za-z0-9._-]{1,64}")
# document key → (IdentityDocument attribute, pattern)
_FIELDS = {
    "accountId": ("account_id", _ACCOUNT),
    "instanceId": ("instance_id", _INSTANCE),
    "region": ("region", _REGION),
    "availabilityZone": ("availability_zone", _TEXT),
    "instanceType": ("instance_type", _TEXT),
}


@dataclass(frozen=True)
class IdentityDocument:
    """The fields of a signed identity document the product relies on."""

    account_id: str
    instance_id: str
    region: str
    availability_zone: str
    instance_type: str
    image_id: str | None = None
    pending_time: str | None = None


def parse_identity_document(text: object) -> IdentityDocument:
    """Read the document's JSON text (as IMDS served it).

    Raises InvalidIdentityDocumentError (a 400 on ``identity_document``) for anything that is not a JSON
    object with the five fields in their EC2 shapes.

    Examples
    --------
    >>> doc = parse_identity_document('{"accountId": "123456789012", "instanceId": "i-0abc12345678", '
    ...     '"region": "eu-west-1", "availabilityZone": "eu-west-1a", "instanceType": "m5.large"}')
    >>> doc.account_id, doc.availability_zone
    ('123456789012', 'eu-west-1a')
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidIdentityDocumentError("must be the identity document's JSON text")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidIdentityDocumentError(f"longer than {MAX_DOCUMENT_CHARS} characters")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidIdentityDocumentError("is not valid JSON") from exc
    except RecursionError:  # "[[[…": nests deeper than the parser goes (a document is one flat object)
        raise InvalidIdentityDocumentError("is not valid JSON: nested too deep") from None
    if not isinstance(data, dict):
        raise InvalidIdentityDocumentError("must be a JSON object")
    values = {}
    for key, (attr, pattern) in _FIELDS.items():
        value = data.get(key)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InvalidIdentityDocumentError(f"{key} is missing or malformed")
        values[attr] = value
    optional = {attr: data.get(key) if isinstance(data.get(key), str) else None
                for key, attr in (("imageId", "image_id"), ("pendingTime", "pending_time"))}
    return IdentityDocument(**values, **optional)


def check_identity(doc: IdentityDocument, *, instance_id: str, instance_type: str, region: str,
                   az: str) -> None:
    """The registration's claims must be the document's: IdentityMismatchError (403) names the first
    field that differs.

    Examples
    --------
    >>> doc = IdentityDocument("123456789012", "i-0abc12345678", "eu-west-1", "eu-west-1a", "m5.large")
    >>> check_identity(doc, instance_id="i-0abc12345678", instance_type="m5.large", region="eu-west-1",
    ...                az="eu-west-1a")
    >>> check_identity(doc, instance_id="i-0abc12345678", instance_type="m5.large", region="eu-west-1",
    ...                az="eu-west-1b")
    Traceback (most recent call last):
    ...
    components.agent_identity.errors.IdentityMismatchError: az: eu-west-1b is not the signed document's eu-west-1a
    """
    for field, claimed, signed in (("instance_id", instance_id, doc.instance_id),
                                   ("instance_type", instance_type, doc.instance_type),
                                   ("region", region, doc.region), ("az", az, doc.availability_zone)):
        if claimed != signed:
            raise IdentityMismatchError(f"{claimed} is not the signed document's {signed}", field)


def account_bound(account_id: str, usable_accounts: Iterable[str]) -> bool:
    """True when the product may act in the document's account for this client: one of its bound accounts,
    or the home account when self-hosted. No usable account → nothing could be done there → refused.

    Examples
    --------
    >>> account_bound("123456789012", []), account_bound("123456789012", ["210987654321", "123456789012"])
    (False, True)
    """
    return account_id in {a for a in usable_accounts if a}
