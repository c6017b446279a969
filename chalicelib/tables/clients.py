"""Clients (tenants) and the lookup items that make token auth and unique names single GetItems."""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name

CLIENT_LISTING = "client"


class ClientsByCreatedIndex(GlobalSecondaryIndex):
    """Admin listing of clients in creation order without a scan (one small partition)."""

    class Meta:
        index_name = "clients-by-created"
        projection = AllProjection()

    listing = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class AwsAccountBinding(MapAttribute):
    """One AWS account the client's instances live in and the role the product assumes there."""

    account_id = UnicodeAttribute()
    role_arn = UnicodeAttribute()
    external_id = UnicodeAttribute()
    bound_at = UTCDateTimeAttribute()


class ClientTable(Model):
    """One tenant. The token is stored only as its SHA-256 hash."""

    class Meta(BaseMeta):
        table_name = table_name("clients")

    client_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    email = OptionalText()
    status = UnicodeAttribute(default="active")
    token_hash = UnicodeAttribute()
    token_created_at = UTCDateTimeAttribute()
    token_expires_at = UTCDateTimeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    listing = UnicodeAttribute(default=CLIENT_LISTING)
    ondemand_discount_percent = NumberAttribute(default=0)
    default_auto_switch = BooleanAttribute(default=True)
    default_auto_terminate = BooleanAttribute(default=True)
    default_terminate_wait_seconds = NumberAttribute(default=300)
    # Legacy v4 agents (client token on agent routes, registration without an identity document).
    # Missing (clients created before the flag) = off, as for new clients: an operator turns it on.
    legacy_agents = BooleanAttribute(null=True)
    # Requests per rate-limit window for this client (chalicelib/rate_limit.py); unset = the stage default.
    rate_limit_per_window = NumberAttribute(null=True)
    # Tenancy (chalicelib/aws/accounts.py): the accounts bound, and the one ExternalId of this client.
    aws_accounts = ListAttribute(of=AwsAccountBinding, null=True)
    external_id = UnicodeAttribute(null=True)
    # An ExternalId rotation under way (admin API): the id every bound role must accept before it replaces
    # ``external_id`` (and each binding's); until then the current one is used.
    pending_external_id = UnicodeAttribute(null=True)
    pending_external_id_at = UTCDateTimeAttribute(null=True)
    # Admin overrides of the quotas and instance-type policy (None: the settings' defaults; chalicelib/quotas.py).
    max_agents = NumberAttribute(null=True)
    max_instances = NumberAttribute(null=True)
    max_standby_usd_per_hour = NumberAttribute(null=True)
    max_instance_vcpus = NumberAttribute(null=True)
    max_switches_per_agent_per_day = NumberAttribute(null=True)
    allow_accelerated_types = BooleanAttribute(null=True)
    allowed_instance_families = ListAttribute(of=UnicodeAttribute, null=True)
    # Bumped by every registration that adds an agent to the client's count, on the condition that it is still the
    # value read before the agents were counted (chalicelib/quotas.py check_agents): concurrent registrations cannot
    # both pass max_agents. Missing = 0 (clients from before it: nothing to migrate, the count is of the rows).
    agent_admissions = NumberAttribute(null=True)
    # Set by the client's hard delete with the token's revocation, before any row goes
    # (``repositories/clients.revoke_token``): a job that wrote the client's rows after reading it (the savings
    # worker's puts) sees it once its writes are done and removes them, so nothing of the client outlives its delete.
    deleting = BooleanAttribute(null=True)
    deleting_at = UTCDateTimeAttribute(null=True)  # when that delete first started (set once): its audit event's time

    by_created = ClientsByCreatedIndex()


class ClientLookupTable(Model):
    """Unique lookups: ``token#<sha256>`` → client, ``name#<lowercased name>`` → client.

    Written in the same transaction as the client, so a name can never be taken twice and a
    regenerated token is valid (and the old one invalid) the moment the call returns.
    """

    class Meta(BaseMeta):
        table_name = table_name("client-lookups")

    lookup_key = UnicodeAttribute(hash_key=True)
    client_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


def token_lookup_key(token_hash: str) -> str:
    """Lookup key of a token hash."""
    return f"token#{token_hash}"


def name_lookup_key(name: str) -> str:
    """Lookup key of a client name (case-insensitive uniqueness)."""
    return f"name#{name.strip().lower()}"
