"""Admin routes of one client: create, get, token, status, legacy agent mode, rate limit, AWS accounts, quotas.
Every route needs ``X-Admin-Key``; the fleet-wide ones are in ``admin_fleet``."""

from __future__ import annotations

import uuid
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import auth
from chalicelib.aws import accounts, event_bus
from chalicelib.api.common import ApiBlueprint, admin_request, ok, utcnow
from chalicelib import quotas
from chalicelib.api.views import accounts_view, client_view, iso
from chalicelib.errors import ConflictError, GoneError, InvalidInputError, ServiceUnavailableError, translate
from chalicelib.repositories import activity, agents, clients
from chalicelib.schemas.admin import (
    BindAccountRequest,
    ClientStatusRequest,
    CreateClientRequest,
    LegacyAgentsRequest,
    LimitsRequest,
    RateLimitRequest,
    RegenerateTokenRequest,
)

bp = ApiBlueprint(__name__)


def _request():
    return bp.current_request


@bp.route("/api/admin/clients/create", methods=["POST"], response="CreatedClientReply")
def create_client():
    """Create a client; its token is in this response and nowhere else, ever."""
    body = admin_request(_request(), CreateClientRequest)
    now = utcnow()
    token = auth.new_token()
    expires = now + timedelta(days=body.token_ttl_days) if body.token_ttl_days else None
    client = clients.create(client_id=f"cl-{uuid.uuid4().hex[:16]}", name=body.name,
                            email=body.email, token_hash=auth.hash_secret(token),
                            token_expires_at=expires,
                            ondemand_discount_percent=body.ondemand_discount_percent, now=now,
                             legacy_agents=body.legacy_agents, external_id=accounts.new_external_id())
    activity.record_event("client_created", f"client {client.name} created", now,
                          client_id=client.client_id)
    return ok({**client_view(client), "client_token": token,
               "warning": "store this token now: it is shown only once"}, status=201)


@bp.route("/api/admin/clients/{client_id}/regenerate-token", methods=["POST"], response="RegeneratedTokenReply")
def regenerate_token(client_id):
    """Issue a new token; the old one stops working at once. Agents need the new one."""
    body = admin_request(_request(), RegenerateTokenRequest)
    client = clients.require(client_id)
    now = utcnow()
    token = auth.new_token()
    expires = now + timedelta(days=body.token_ttl_days) if body.token_ttl_days else None
    clients.replace_token(client, new_hash=auth.hash_secret(token), expires_at=expires, now=now)
    activity.record_event("token_regenerated", f"token of {client.name} regenerated", now,
                          severity="warning", client_id=client_id)
    return ok({"client_id": client_id, "client_token": token, "token_expires_at": iso(expires),
               "warning": "every agent of this client must be given the new token"})


@bp.route("/api/admin/clients/{client_id}/token", methods=["GET"], status=410)
def reveal_token(client_id):
    """Legacy 'reveal token': impossible by design, tokens are stored only as hashes."""
    admin_request(_request())
    clients.require(client_id)
    raise GoneError("tokens are stored only as hashes and cannot be revealed; "
                    "use POST /api/admin/clients/{id}/regenerate-token", code="token_not_recoverable")


@bp.route("/api/admin/clients/{client_id}", methods=["GET"], response="ClientView")
def get_client(client_id):
    """One client (no token material)."""
    admin_request(_request())
    return ok(client_view(clients.require(client_id)))


@bp.route("/api/admin/clients/{client_id}/status", methods=["POST"], response="ClientView")
def set_client_status(client_id):
    """Activate or deactivate a client; an inactive client's token and its agents' credentials answer 403
    (the status is copied onto each agent row, which is all an agent credential reads)."""
    body = admin_request(_request(), ClientStatusRequest)
    client = clients.set_status(client_id, body.status)
    agents.set_client_suspended(client_id, body.status != "active")
    activity.record_event("client_status", f"client {client.name} is {body.status}", utcnow(),
                          severity="warning", client_id=client_id)
    return ok(client_view(client))


@bp.route("/api/admin/clients/{client_id}/legacy-agents", methods=["POST"], response="ClientView")
def set_legacy_agents(client_id):
    """Legacy agent mode on or off. On: v4 agents keep working (client token on agent routes, registration
    without an identity document). Off (new clients): agent routes need the agent's own credential."""
    body = admin_request(_request(), LegacyAgentsRequest)
    client = clients.set_legacy_agents(client_id, body.enabled)
    activity.record_event("client_legacy_agents", f"legacy agent mode of {client.name} is "
                          f"{'on' if body.enabled else 'off'}", utcnow(), severity="warning", client_id=client_id)
    return ok(client_view(client))


@bp.route("/api/admin/clients/{client_id}/rate-limit", methods=["POST"], response="ClientView")
def set_client_rate_limit(client_id):
    """Give a client its own API rate limit (requests per window), or null for the stage default."""
    body = admin_request(_request(), RateLimitRequest)
    client = clients.set_rate_limit(client_id, body.requests_per_window)
    activity.record_event("client_rate_limit", f"rate limit of {client.name}: "
                          f"{body.requests_per_window or 'default'}", utcnow(), client_id=client_id)
    return ok(client_view(client))


@bp.route("/api/admin/clients/{client_id}/accounts", methods=["POST"], response="AccountsReply")
def bind_account(client_id):
    """Bind an AWS account to the client: the product will act there through ``role_arn`` with the client's
    ExternalId. The role is assumed once now (409 ``role_not_assumable`` when its trust policy refuses)."""
    body = admin_request(_request(), BindAccountRequest)
    client = clients.require(client_id)
    external_id = client.external_id or accounts.new_external_id()  # stored with the binding, not before
    binding = accounts.AwsAccount(body.account_id, body.role_arn, external_id, accounts.session_name(client_id))
    try:
        accounts.verify(binding)
    except (ClientError, BotoCoreError) as exc:
        if (busy := translate(exc)) is not None:  # STS throttled or out of reach: no verdict on the role, 503/504
            raise busy from exc
        raise ConflictError(f"the role {body.role_arn} cannot be assumed with this client's ExternalId: deploy "
                            "the role with its trust policy first", field="role_arn",
                            code="role_not_assumable") from exc
    _bus_access(body.account_id, allow=True)
    now = utcnow()
    client = clients.bind_account(client, account_id=body.account_id, role_arn=body.role_arn,
                                  external_id=external_id, now=now)
    activity.record_event("account_bound", f"account {body.account_id} bound to {client.name}", now,
                          severity="warning", client_id=client_id, metadata={"role_arn": body.role_arn})
    return ok(accounts_view(client), status=201)


@bp.route("/api/admin/clients/{client_id}/accounts/{account_id}", methods=["DELETE"], response="AccountsReply")
def unbind_account(client_id, account_id):
    """Unbind an AWS account: nothing more is done there for this client."""
    admin_request(_request())
    if not accounts.ACCOUNT_ID.match(account_id or ""):
        raise InvalidInputError("account_id must be 12 digits", field="account_id")
    client = clients.require(client_id)
    if not any(b["account_id"] == account_id for b in client.aws_accounts):
        release_bus_access(account_id, client_id)  # a retry after the bus refused: converge, then say "not bound"
    client = clients.unbind_account(client, account_id)
    activity.record_event("account_unbound", f"account {account_id} unbound from {client.name}", utcnow(),
                          severity="warning", client_id=client_id)
    release_bus_access(account_id, client_id)
    return ok(accounts_view(client))


def release_bus_access(account_id: str, client_id: str) -> None:
    """Close the event bus to the account once no client of the stage but ``client_id`` (which is unbinding it, or
    being deleted) binds it. Asked of the others only: the clients' listing index is eventually consistent, and may
    still show ``client_id``'s binding just after its write (or its row just after its deletion)."""
    if not clients.binding_account(account_id, besides=client_id):
        _bus_access(account_id, allow=False)


def _bus_access(account_id: str, *, allow: bool) -> None:
    """Open (bind) or close (unbind) the stage's event bus to a client account's forwarded EC2 events.

    Binding opens it before the binding is stored: a failure is 503 and nothing is stored. Unbinding
    closes it after: a failure is 503 with the account already unbound; repeating the DELETE closes it
    (then answers 404, the account being unbound). The home account's events are on the bus already."""
    if account_id == accounts.home_account_id():
        return
    try:
        if allow:
            event_bus.allow(account_id)
        else:
            event_bus.revoke(account_id)
    except event_bus.PolicyFull as exc:
        raise ConflictError(f"the product account's event bus admits no more client accounts (its policy is at most "
                            f"{event_bus.POLICY_MAX_BYTES // 1024} KB): unbind an account no client uses, or deploy "
                            "the stage in another account or region (infra/README.md, Known limits)",
                            field="account_id", code="event_bus_full") from exc
    except (ClientError, BotoCoreError) as exc:
        done = "" if allow else "the account is unbound but "
        raise ServiceUnavailableError(f"{done}the event bus could not be updated for this account, retry",
                                      field="account_id", code="event_bus_unavailable",
                                      headers={"Retry-After": "5"}) from exc


@bp.route("/api/admin/clients/{client_id}/limits", methods=["GET"], response="AdminLimitsReply")
def get_limits(client_id):
    """The client's effective quotas and policy, and its own overrides (``null``: the default applies)."""
    admin_request(_request())
    return ok(_limits_reply(clients.require(client_id)))


@bp.route("/api/admin/clients/{client_id}/limits", methods=["POST"], response="AdminLimitsReply")
def set_limits(client_id):
    """Override the client's quotas and instance-type policy (``null`` restores the default), and its
    on-demand discount (``ondemand_discount_percent``, the savings baseline; ``null`` = 0)."""
    body = admin_request(_request(), LimitsRequest)
    client = clients.set_limits(client_id, body.model_dump(exclude_unset=True))
    activity.record_event("client_limits", f"limits of {client.name} changed", utcnow(), severity="warning",
                          client_id=client_id, metadata=body.model_dump(exclude_unset=True))
    return ok(_limits_reply(client))


def _limits_reply(client) -> dict:
    return {"client_id": client.client_id, "limits": quotas.limits(client.client_id),
            "overrides": dict(client.limits), "ondemand_discount_percent": client.ondemand_discount_percent}
