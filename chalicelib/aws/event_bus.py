"""The product account's default event bus: which client accounts may send it their EC2 events.

In assume-role tenancy a client's instances live in its own account, where EC2 emits the interruption,
rebalance and state-change events; the client's stack (infra/client-account-role.yaml) forwards them to
our default bus in the stage's region. The bus accepts them only from accounts a client of this stage
binds: one resource-policy statement per account, ``spot-optimizer-<stage>-<account_id>``, added when an
account is bound and removed when no client of the stage binds it any more. Both are idempotent (the bus
policy is read first), so a retry after a failure converges.
"""

from __future__ import annotations

import json

from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.settings import APP_NAME, get_settings

BUS = "default"
# EventBridge: a bus's permission policy is at most 10 KB. A statement is about 220 bytes, so one product
# account's default bus (shared by every stage deployed in that region) admits about 45 client accounts.
POLICY_MAX_BYTES = 10 * 1024
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)


def _client(service: str, region: str):
    """The product's own credentials: the bus is in the product account."""
    import boto3

    return boto3.session.Session().client(service, region_name=region, config=_CONFIG)


def statement_id(account_id: str) -> str:
    """The bus-policy statement of one client account for this stage."""
    return f"{APP_NAME}-{get_settings().stage}-{account_id}"


class PolicyFull(Exception):
    """The bus policy has no room for another account's statement (``POLICY_MAX_BYTES``)."""


def _policy(region: str) -> str:
    return _client("events", region).describe_event_bus(Name=BUS).get("Policy") or ""


def _has_statement(policy: str, account_id: str) -> bool:
    statements = json.loads(policy).get("Statement", []) if policy else []
    return any(s.get("Sid") == statement_id(account_id) for s in statements)


def allowed(account_id: str, region: str | None = None) -> bool:
    """Is there a statement of this stage letting ``account_id`` put events on the bus?"""
    return _has_statement(_policy(region or get_settings().region), account_id)


def _statement_bytes(account_id: str, region: str) -> int:
    """The size of the statement EventBridge stores for ``put_permission`` (compact JSON; the bus owner's
    account id only counts by its 12 digits)."""
    statement = {"Sid": statement_id(account_id), "Effect": "Allow",
                 "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"}, "Action": "events:PutEvents",
                 "Resource": f"arn:aws:events:{region}:{'0' * 12}:event-bus/{BUS}"}
    return len(json.dumps(statement, separators=(",", ":"))) + 1


def allow(account_id: str, region: str | None = None) -> bool:
    """Let ``account_id`` send events to the bus; False when it already could (nothing changed). PolicyFull
    when the policy has no room for it: checked first (local mode's bus has no limit), and AWS's own refusal."""
    region = region or get_settings().region
    policy = _policy(region)
    if _has_statement(policy, account_id):
        return False
    if len(policy or '{"Version":"2012-10-17","Statement":[]}') + _statement_bytes(account_id, region) \
            > POLICY_MAX_BYTES:
        raise PolicyFull(account_id)
    try:
        _client("events", region).put_permission(EventBusName=BUS, Action="events:PutEvents",
                                                 Principal=account_id, StatementId=statement_id(account_id))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "PolicyLengthExceededException":
            raise PolicyFull(account_id) from exc
        raise
    return True


def revoke(account_id: str, region: str | None = None) -> bool:
    """Stop accepting events from ``account_id``; False when there was nothing to remove."""
    region = region or get_settings().region
    if not allowed(account_id, region):
        return False
    _client("events", region).remove_permission(EventBusName=BUS, StatementId=statement_id(account_id))
    return True
