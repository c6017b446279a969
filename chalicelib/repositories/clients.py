"""Clients, their token hashes and unique names."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from pynamodb.expressions.condition import size
from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.errors import ConflictError, NotFoundError
from chalicelib.repositories.dynamo import cancellation_codes, condition_failed, set_or_remove, transaction_connection
from chalicelib.repositories.paging import Page, decode_token, encode_token
from chalicelib.tables.clients import (
    CLIENT_LISTING,
    AwsAccountBinding,
    ClientLookupTable,
    ClientTable,
    name_lookup_key,
    token_lookup_key,
)
from chalicelib.settings import get_settings
from chalicelib.tables.rate_limits import GATE_FIELDS, RateLimitTable, gate_key


@dataclass(frozen=True)
class ClientRecord:
    """What handlers need to know about a tenant."""

    client_id: str
    name: str
    email: str | None
    status: str
    token_hash: str
    token_expires_at: datetime | None
    created_at: datetime
    ondemand_discount_percent: float
    default_auto_switch: bool
    default_auto_terminate: bool
    default_terminate_wait_seconds: int
    legacy_agents: bool = False
    rate_limit_per_window: int | None = None
    aws_accounts: tuple[dict, ...] = ()  # {account_id, role_arn, external_id, bound_at}
    external_id: str | None = None
    pending_external_id: str | None = None  # an ExternalId rotation under way (``rotate_external_id``)
    pending_external_id_at: datetime | None = None
    limits: dict = field(default_factory=dict)  # admin overrides (LIMIT_FIELDS), None = default
    agent_admissions: int = 0  # the agent quota's guard (tables/clients.py)
    deleting: bool = False  # its hard delete has started (``revoke_token``): its rows are going
    deleting_at: datetime | None = None  # when it first started (a repeat of the delete keeps it)


LIMIT_FIELDS = ("max_agents", "max_instances", "max_standby_usd_per_hour", "max_instance_vcpus",
                "max_switches_per_agent_per_day", "allow_accelerated_types", "allowed_instance_families")


def _limit(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return list(value) if isinstance(value, list | tuple) else value


def _record(row: ClientTable) -> ClientRecord:
    return ClientRecord(
        client_id=row.client_id, name=row.name, email=row.email, status=row.status,
        token_hash=row.token_hash, token_expires_at=row.token_expires_at, created_at=row.created_at,
        ondemand_discount_percent=float(row.ondemand_discount_percent or 0),
        default_auto_switch=bool(row.default_auto_switch),
        default_auto_terminate=bool(row.default_auto_terminate),
        default_terminate_wait_seconds=int(row.default_terminate_wait_seconds or 0),
        legacy_agents=bool(row.legacy_agents),
        rate_limit_per_window=int(row.rate_limit_per_window) if row.rate_limit_per_window else None,
        aws_accounts=tuple({"account_id": b.account_id, "role_arn": b.role_arn, "external_id": b.external_id,
                            "bound_at": b.bound_at} for b in row.aws_accounts or ()),
        external_id=row.external_id, pending_external_id=row.pending_external_id,
        pending_external_id_at=row.pending_external_id_at,
        limits={name: _limit(getattr(row, name)) for name in LIMIT_FIELDS},
        agent_admissions=int(row.agent_admissions or 0),
        deleting=bool(row.deleting), deleting_at=row.deleting_at,
    )


def create(*, client_id: str, name: str, email: str | None, token_hash: str,
           token_expires_at: datetime | None, ondemand_discount_percent: float,
           now: datetime, legacy_agents: bool = False, external_id: str | None = None) -> ClientRecord:
    """Create a client, its name guard and its token lookup atomically (409 on a taken name)."""
    row = ClientTable(client_id, name=name.strip(), email=email, status="active",
                      token_hash=token_hash, token_created_at=now, token_expires_at=token_expires_at,
                      created_at=now, listing=CLIENT_LISTING,
                      ondemand_discount_percent=ondemand_discount_percent, legacy_agents=legacy_agents,
                      external_id=external_id)
    name_guard = ClientLookupTable(name_lookup_key(name), client_id=client_id, created_at=now)
    token_guard = ClientLookupTable(token_lookup_key(token_hash), client_id=client_id, created_at=now)
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.save(row, condition=ClientTable.client_id.does_not_exist())
            tx.save(name_guard, condition=ClientLookupTable.lookup_key.does_not_exist())
            tx.save(token_guard, condition=ClientLookupTable.lookup_key.does_not_exist())
            tx.save(_gate_of(row))
    except TransactWriteError as exc:
        reasons = cancellation_codes(exc)
        if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
            raise ConflictError(f"a client named {name!r} already exists", field="name",
                                code="duplicate_name") from exc
        raise
    return _record(row)


def get(client_id: str) -> ClientRecord | None:
    """One client by id, or None."""
    try:
        return _record(ClientTable.get(client_id, consistent_read=True))
    except ClientTable.DoesNotExist:
        return None


def require(client_id: str) -> ClientRecord:
    """One client by id, or 404."""
    client = get(client_id)
    if client is None:
        raise NotFoundError("client not found", field="client_id")
    return client


def client_of_token(token_hash: str) -> str | None:
    """The id of the client a token hash was issued to (one GetItem), or None. The answer never changes for
    a hash (tokens are random, 256 bits), so a container may remember it; whether the token is still the
    client's current one is the gate's to check (chalicelib/rate_limit.py)."""
    try:
        return ClientLookupTable.get(token_lookup_key(token_hash), consistent_read=True).client_id
    except ClientLookupTable.DoesNotExist:
        return None


# --- the client's gate (chalicelib/tables/rate_limits.py): GATE_FIELDS mirrored in the same transaction ----

def fleet_rate_limit(max_agents) -> int | None:
    """The requests per window a fleet of ``max_agents`` needs (``RATE_LIMIT_PER_AGENT`` each); None without a
    max_agents override (the stage's default limit covers the default quota: rate_limit.stage_limit)."""
    return None if max_agents is None else get_settings().rate_limit_per_agent * int(max_agents)


def _gate_of(row: ClientTable) -> RateLimitTable:
    return RateLimitTable(gate_key(row.client_id), client_id=row.client_id,
                          fleet_rate_limit=fleet_rate_limit(row.max_agents),
                          **{name: getattr(row, name) for name in GATE_FIELDS})


def _mirrored(actions: list) -> list:
    """The gate's copy of the actions on GATE_FIELDS among ``actions`` (client-row actions)."""
    return [action for action in actions if action.values[0].path[0] in GATE_FIELDS]  # same names, same types


def ensure_gate(client_id: str) -> bool:
    """Build a missing (or incomplete) gate from the client row; False when the client does not exist, or is being
    deleted (``deleting``: its delete removes the gate before the client row, and a gate built in between would
    outlive the client, with no TTL).

    The gate is written only if the client row still holds what was read (a status or token change racing
    this call makes it a no-op: the caller reads the gate again)."""
    try:
        row = ClientTable.get(client_id, consistent_read=True)
    except ClientTable.DoesNotExist:
        return False
    if row.deleting:
        return False
    condition = ClientTable.client_id.exists() & ClientTable.deleting.does_not_exist()
    for name in (*GATE_FIELDS, "max_agents"):
        value, attribute = getattr(row, name), getattr(ClientTable, name)
        condition &= attribute.does_not_exist() if value is None else attribute == value
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.condition_check(ClientTable, client_id, condition=condition)
            tx.save(_gate_of(row), condition=RateLimitTable.status.does_not_exist())
    except TransactWriteError:
        pass  # changed meanwhile, or built by another call: the caller reads the gate again
    return True


def list_page(limit: int, next_token: str | None) -> Page:
    """Clients in creation order, one page at a time (GSI query, no scan)."""
    start = decode_token(next_token, partition_attr="listing", partition_value=CLIENT_LISTING,
                         key_attrs=("listing", "created_at", "client_id"))
    result = ClientTable.by_created.query(CLIENT_LISTING, limit=limit, last_evaluated_key=start)
    items = [_record(row) for row in result]
    return Page(items, encode_token(result.last_evaluated_key))


def token_after(client: ClientRecord) -> str:
    """The ``list_page`` token of the listing position just after ``client``: a page from it starts at the client
    created next (the data cleaner's resume point between two clients)."""
    return encode_token({"listing": {"S": CLIENT_LISTING},
                         "created_at": {"S": ClientTable.created_at.serialize(client.created_at)},
                         "client_id": {"S": client.client_id}})


def replace_token(client: ClientRecord, *, new_hash: str, expires_at: datetime | None,
                  now: datetime) -> None:
    """Swap the token atomically: the old one stops working when the new one starts."""
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.update(
                ClientTable(client.client_id),
                actions=[ClientTable.token_hash.set(new_hash), ClientTable.token_created_at.set(now),
                         ClientTable.token_expires_at.set(expires_at) if expires_at
                         else ClientTable.token_expires_at.remove()],
                condition=ClientTable.token_hash == client.token_hash,
            )
            tx.delete(ClientLookupTable(token_lookup_key(client.token_hash)))
            tx.save(ClientLookupTable(token_lookup_key(new_hash), client_id=client.client_id,
                                      created_at=now),
                    condition=ClientLookupTable.lookup_key.does_not_exist())
            tx.update(RateLimitTable(gate_key(client.client_id)),
                      actions=[RateLimitTable.token_hash.set(new_hash),
                               RateLimitTable.token_expires_at.set(expires_at) if expires_at
                               else RateLimitTable.token_expires_at.remove()])
    except TransactWriteError as exc:
        raise ConflictError("the token was changed concurrently, retry", code="conflict") from exc


def set_rate_limit(client_id: str, requests_per_window: int | None) -> ClientRecord:
    """Set (or, with None, clear) the client's own rate limit (404 if it does not exist)."""
    return _update_existing(client_id, [ClientTable.rate_limit_per_window.set(requests_per_window)
                                        if requests_per_window else ClientTable.rate_limit_per_window.remove()])


def set_status(client_id: str, status: str) -> ClientRecord:
    """Activate or deactivate a client (404 if it does not exist)."""
    return _update_existing(client_id, [ClientTable.status.set(status)])


def set_legacy_agents(client_id: str, enabled: bool) -> ClientRecord:
    """Turn legacy agent mode on or off (404 if the client does not exist)."""
    return _update_existing(client_id, [ClientTable.legacy_agents.set(enabled)])


def bind_account(client: ClientRecord, *, account_id: str, role_arn: str, external_id: str,
                 now: datetime) -> ClientRecord:
    """Bind (or re-bind with a new role) an AWS account; the client's ExternalId is set once, on first use.
    Conditional on the bindings the caller read: a concurrent change answers 409, nothing half-written."""
    bindings = [b for b in client.aws_accounts if b["account_id"] != account_id]
    bindings.append({"account_id": account_id, "role_arn": role_arn, "external_id": external_id, "bound_at": now})
    return _set_bindings(client, bindings, external_id=external_id)


def unbind_account(client: ClientRecord, account_id: str) -> ClientRecord:
    """Remove an account binding (404 when it is not bound)."""
    bindings = [b for b in client.aws_accounts if b["account_id"] != account_id]
    if len(bindings) == len(client.aws_accounts):
        raise NotFoundError(f"account {account_id} is not bound to this client", field="account_id")
    return _set_bindings(client, bindings)


def _set_bindings(client: ClientRecord, bindings: list[dict], *, external_id: str | None = None) -> ClientRecord:
    maps = [AwsAccountBinding(**b) for b in bindings]
    actions = [ClientTable.aws_accounts.set(maps) if maps else ClientTable.aws_accounts.remove()]
    if external_id and not client.external_id:
        actions.append(ClientTable.external_id.set(external_id))
    current = len(client.aws_accounts)
    condition = ClientTable.client_id.exists() & (
        ClientTable.aws_accounts.does_not_exist() if not current else size(ClientTable.aws_accounts) == current)
    try:
        ClientTable(client.client_id).update(actions=actions, condition=condition)
    except UpdateError as exc:
        if condition_failed(exc):
            raise ConflictError("the client's accounts changed concurrently, retry", code="conflict") from exc
        raise
    return require(client.client_id)


def set_limits(client_id: str, limits: dict) -> ClientRecord:
    """Set (value) or reset to the default (None) the named quota/policy overrides, and the on-demand
    discount (``ondemand_discount_percent``; None resets it to 0)."""
    actions = [set_or_remove(getattr(ClientTable, name), value) for name, value in limits.items()
               if name in LIMIT_FIELDS]
    if "ondemand_discount_percent" in limits:
        actions.append(ClientTable.ondemand_discount_percent.set(limits["ondemand_discount_percent"] or 0))
    fleet = ([set_or_remove(RateLimitTable.fleet_rate_limit, fleet_rate_limit(limits["max_agents"]))]
             if "max_agents" in limits else [])
    return _update_existing(client_id, actions, fleet)


def _update_existing(client_id: str, actions: list, gate_actions: list = ()) -> ClientRecord:
    """Apply ``actions`` to an existing client (404 if it does not exist, nothing created); the record after.
    Actions on GATE_FIELDS, and ``gate_actions``, are applied to the client's gate in the same transaction."""
    gate_actions = [*_mirrored(actions), *gate_actions]
    try:
        if not gate_actions:
            ClientTable(client_id).update(actions=actions, condition=ClientTable.client_id.exists())
        else:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.update(ClientTable(client_id), actions=actions, condition=ClientTable.client_id.exists())
                tx.update(RateLimitTable(gate_key(client_id)), actions=gate_actions)
    except UpdateError as exc:
        if condition_failed(exc):
            raise NotFoundError("client not found", field="client_id") from exc
        raise
    except TransactWriteError as exc:
        if cancellation_codes(exc)[:1] == ["ConditionalCheckFailed"]:
            raise NotFoundError("client not found", field="client_id") from exc
        raise
    return require(client_id)


def revoke_token(client_id: str, token_hash: str, now: datetime) -> None:
    """The token stops working now: its lookup row is deleted, the gate forgets it and the client is inactive
    (client deletion). The client row says inactive too: a gate rebuilt from it (``ensure_gate``, after the
    deletion removed the gate and failed before the row) must not admit the token a container remembers. The row is
    marked ``deleting``: a job that read the client before and writes its rows after this sees it and removes them;
    ``deleting_at`` is the first such call's ``now`` (a repeat of the delete keeps it: its audit event's time)."""
    with TransactWrite(connection=transaction_connection()) as tx:
        tx.delete(ClientLookupTable(token_lookup_key(token_hash)))
        tx.update(ClientTable(client_id), actions=[ClientTable.status.set("inactive"), ClientTable.deleting.set(True),
                                                   ClientTable.deleting_at.set(ClientTable.deleting_at | now)],
                  condition=ClientTable.client_id.exists())
        tx.update(RateLimitTable(gate_key(client_id)),
                  actions=[RateLimitTable.token_hash.remove(), RateLimitTable.status.set("inactive")])


def delete_gate(client_id: str) -> None:
    """Delete the client's gate (the client is being deleted)."""
    RateLimitTable(gate_key(client_id)).delete()


def ensure_external_id(client: ClientRecord, new_id: str) -> ClientRecord:
    """The client's ExternalId, set once (``new_id`` is used only if none exists yet; a race keeps the first)."""
    if client.external_id:
        return client
    try:
        ClientTable(client.client_id).update(actions=[ClientTable.external_id.set(new_id)],
                                             condition=ClientTable.external_id.does_not_exist())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
    return require(client.client_id)


def start_external_id_rotation(client: ClientRecord, new_id: str, now: datetime) -> tuple[ClientRecord, bool]:
    """A pending ExternalId for the client (``new_id``), unless one is pending already: that one is kept, the client
    may have deployed its roles with it (a race keeps the first too: the write is conditional on no pending id).
    The current id keeps being used. Returns (the record after, whether ``new_id`` became the pending id): a caller
    that lost the race, or found one pending, did not start the rotation and reports the pending id it got."""
    if client.pending_external_id:
        return client, False
    try:
        ClientTable(client.client_id).update(
            actions=[ClientTable.pending_external_id.set(new_id), ClientTable.pending_external_id_at.set(now)],
            condition=ClientTable.client_id.exists() & ClientTable.pending_external_id.does_not_exist())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
        return require(client.client_id), False  # 404 when the client went; else the winner's pending id
    return require(client.client_id), True


def finish_external_id_rotation(client: ClientRecord) -> ClientRecord:
    """The pending ExternalId becomes the client's and every binding's, the old one unused from now on. Conditional on
    what the caller verified: the same pending id and the same bindings (account and role, in order); a change
    meanwhile (a binding added, re-bound or removed, the rotation cancelled) is 409, nothing written."""
    pending = client.pending_external_id
    bindings = [AwsAccountBinding(**{**b, "external_id": pending}) for b in client.aws_accounts]
    condition = ClientTable.pending_external_id == pending
    if bindings:
        condition &= size(ClientTable.aws_accounts) == len(bindings)
        for index, binding in enumerate(client.aws_accounts):
            condition &= (ClientTable.aws_accounts[index]["account_id"] == binding["account_id"]) & (
                ClientTable.aws_accounts[index]["role_arn"] == binding["role_arn"])
    else:
        condition &= ClientTable.aws_accounts.does_not_exist()
    actions = [ClientTable.external_id.set(pending), ClientTable.pending_external_id.remove(),
               ClientTable.pending_external_id_at.remove()]
    if bindings:
        actions.append(ClientTable.aws_accounts.set(bindings))
    try:
        ClientTable(client.client_id).update(actions=actions, condition=condition)
    except UpdateError as exc:
        if condition_failed(exc):
            raise ConflictError("the client's accounts or its pending ExternalId changed meanwhile, retry",
                                code="conflict") from exc
        raise
    return require(client.client_id)


def cancel_external_id_rotation(client: ClientRecord) -> ClientRecord:
    """Forget the pending ExternalId (the current one stays in use); idempotent."""
    _update_existing(client.client_id, [ClientTable.pending_external_id.remove(),
                                        ClientTable.pending_external_id_at.remove()])
    return require(client.client_id)


def binding_account(account_id: str, *, besides: str | None = None) -> bool:
    """Does any client (other than ``besides``) bind ``account_id``? (Admin-time walk over the listing index.)"""
    for row in ClientTable.by_created.query(CLIENT_LISTING):
        if row.client_id != besides and any(b.account_id == account_id for b in row.aws_accounts or ()):
            return True
    return False
