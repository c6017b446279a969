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

from chalicelib.settings import APP_NAME, get_settings

BUS = "default"
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)


def _client(service: str, region: str):
    """The product's own credentials: the bus is in the product account."""
    import boto3

    return boto3.session.Session().client(service, region_name=region, config=_CONFIG)


def statement_id(account_id: str) -> str:
    """The bus-policy statement of one client account for this stage."""
    return f"{APP_NAME}-{get_settings().stage}-{account_id}"


def allowed(account_id: str, region: str | None = None) -> bool:
    """Is there a statement of this stage letting ``account_id`` put events on the bus?"""
    policy = _client("events", region or get_settings().region).describe_event_bus(Name=BUS).get("Policy")
    statements = json.loads(policy).get("Statement", []) if policy else []
    return any(s.get("Sid") == statement_id(account_id) for s in statements)


def allow(account_id: str, region: str | None = None) -> bool:
    """Let ``account_id`` send events to the bus; False when it already could (nothing changed)."""
    region = region or get_settings().region
    if allowed(account_id, region):
        return False
    _client("events", region).put_permission(EventBusName=BUS, Action="events:PutEvents", Principal=account_id,
                                             StatementId=statement_id(account_id))
    return True


def revoke(account_id: str, region: str | None = None) -> bool:
    """Stop accepting events from ``account_id``; False when there was nothing to remove."""
    region = region or get_settings().region
    if not allowed(account_id, region):
        return False
    _client("events", region).remove_permission(EventBusName=BUS, StatementId=statement_id(account_id))
    return True
