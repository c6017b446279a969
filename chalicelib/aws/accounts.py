"""Which AWS credentials act for a client: the client's own account through its role, or (self-hosted)
the product's own.

A client is bound to the account(s) its instances live in (``ClientRecord.aws_accounts``). For each,
the product assumes the role the client deployed there (``sts:AssumeRole`` with the ExternalId the
product generated for that client: the confused-deputy guard), with a session name naming the stage
and the client, and caches the credentials per container until shortly before they expire.

``SPOT_TENANCY=self-hosted`` (the default in local mode and tests) runs everything in the product's
own ("home") account with the Lambda's credentials; a client bound to other accounts still goes
through their roles. The ownership checks (tags, account/region of ARNs) are the same in both modes.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from botocore.config import Config

from chalicelib.settings import get_settings

if TYPE_CHECKING:  # boto3 itself is imported on first use (not at the API's cold start)
    import boto3

ACCOUNT_ID = re.compile(r"^[0-9]{12}\Z")  # ASCII digits only (\d takes any script's), no trailing newline ($)
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):role/[A-Za-z0-9+=,.@_/-]{1,512}\Z")
EXTERNAL_ID_BYTES = 24
SESSION_SECONDS = 3600
REFRESH_BEFORE_S = 300  # credentials are renewed this long before they expire
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15)


class AccountNotBound(Exception):
    """The client has no usable account binding for this action (nothing is done in any account)."""

    conflict_code = "account_not_bound"  # the API answers 409 (chalicelib.errors.translate)


@dataclass(frozen=True)
class AwsAccount:
    """Where an action runs: ``role_arn`` None means the product's own credentials (home account)."""

    account_id: str
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str = "spot-optimizer"

    @property
    def home(self) -> bool:
        return self.role_arn is None


def new_external_id() -> str:
    """A fresh, unguessable ExternalId (one per client binding; the client puts it in its role's trust policy)."""
    return "so-" + secrets.token_urlsafe(EXTERNAL_ID_BYTES)


def role_account(role_arn: str) -> str | None:
    """The account id of an IAM role ARN, or None when it is not a role ARN."""
    match = ROLE_ARN.match(role_arn or "")
    return match.group(1) if match else None


def session_name(client_id: str) -> str:
    """RoleSessionName naming the stage and the client (CloudTrail in the client's account shows both)."""
    name = re.sub(r"[^\w+=,.@-]", "-", f"spot-optimizer-{get_settings().stage}-{client_id}")
    return name[:64]


@cache
def home_account_id() -> str:
    """The product's own account (STS GetCallerIdentity once per container, or SPOT_HOME_ACCOUNT_ID)."""
    configured = get_settings().home_account_id
    if configured:
        return configured
    return _client("sts", get_settings().region).get_caller_identity()["Account"]


def self_hosted() -> bool:
    return get_settings().tenancy == "self-hosted"


def resolve(client, account_id: str | None = None) -> AwsAccount:
    """The account an action for ``client`` (a ClientRecord) runs in.

    ``account_id`` is the account the agent's instance was verified in, when known. A bound account uses
    its role; in self-hosted mode the home account (or no account given) uses the product's credentials;
    anything else raises AccountNotBound.
    """
    bindings = list(getattr(client, "aws_accounts", None) or ())
    if account_id:
        for binding in bindings:
            if binding["account_id"] == account_id:
                return _bound(client.client_id, binding)
        if self_hosted() and account_id == home_account_id():
            return AwsAccount(account_id)
        raise AccountNotBound(f"account {account_id} is not bound to this client")
    if self_hosted():
        return AwsAccount(home_account_id())
    if len(bindings) == 1:
        return _bound(client.client_id, bindings[0])
    raise AccountNotBound("no AWS account bound to this client" if not bindings
                          else "the client has several AWS accounts and the instance's account is unknown")


def all_for(client) -> list[AwsAccount]:
    """Every account the client's resources may be in (the cleanup job walks them all)."""
    found = [_bound(client.client_id, b) for b in getattr(client, "aws_accounts", None) or ()]
    if self_hosted() and all(a.account_id != home_account_id() for a in found):
        found.append(AwsAccount(home_account_id()))
    return found


def _bound(client_id: str, binding: dict) -> AwsAccount:
    return AwsAccount(binding["account_id"], binding["role_arn"], binding["external_id"], session_name(client_id))


_lock = threading.Lock()
_sessions: dict[tuple[str, str, str], tuple[boto3.session.Session, float]] = {}
_clients: dict[tuple, object] = {}


def _client(service: str, region: str):
    """A client on the product's own credentials (its STS: AssumeRole, GetCallerIdentity)."""
    import boto3

    return boto3.session.Session().client(service, region_name=region, config=_CONFIG)


def _session(account: AwsAccount) -> boto3.session.Session:
    """A boto3 session on the role's credentials, renewed REFRESH_BEFORE_S before they expire."""
    import boto3

    key = (account.role_arn, account.external_id or "", account.session_name)
    with _lock:
        cached = _sessions.get(key)
        if cached and cached[1] - REFRESH_BEFORE_S > time.time():
            return cached[0]
    creds = _client("sts", get_settings().region).assume_role(RoleArn=account.role_arn, RoleSessionName=account.session_name,
                            ExternalId=account.external_id, DurationSeconds=SESSION_SECONDS)["Credentials"]
    session = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                    aws_secret_access_key=creds["SecretAccessKey"],
                                    aws_session_token=creds["SessionToken"])
    with _lock:
        _sessions[key] = (session, creds["Expiration"].timestamp())
        for client_key in [k for k in _clients if k[0] == key]:
            del _clients[client_key]
    return session


def verify(account: AwsAccount) -> None:
    """Assume the role now (botocore errors propagate): a binding is only stored once it works."""
    with _lock:
        _sessions.pop((account.role_arn, account.external_id or "", account.session_name), None)
    _session(account)


def role_client(service: str, region: str, account: AwsAccount):
    """A client of ``service`` in ``region`` acting through the account's role (cached with its session)."""
    session = _session(account)
    key = ((account.role_arn, account.external_id or "", account.session_name), service, region, id(session))
    with _lock:
        client = _clients.get(key)
    if client is None:
        client = session.client(service, region_name=region, config=_CONFIG)
        with _lock:
            _clients[key] = client
    return client


def reset() -> None:
    """Forget cached credentials (tests)."""
    with _lock:
        _sessions.clear()
        _clients.clear()
    home_account_id.cache_clear()
