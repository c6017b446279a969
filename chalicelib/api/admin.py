"""Admin routes of one client: create, get, token, status, legacy agent mode, rate limit, AWS accounts and their
ExternalId, quotas.
Every route needs ``X-Admin-Key``; the fleet-wide ones are in ``admin_fleet``."""

from __future__ import annotations

import uuid
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError

from components.replica_coordinator import ReplicaStatus

from chalicelib import auth, command_queue, replicas, tenancy
from chalicelib.aws import accounts, event_bus
from chalicelib.api.common import ApiBlueprint, admin_request, ok, utcnow
from chalicelib.api.inputs import bool_param
from chalicelib.api.route_doc import Query
from chalicelib import quotas
from chalicelib.api.views import accounts_view, client_view, iso
from chalicelib.errors import ConflictError, GoneError, InvalidInputError, ServiceUnavailableError, translate
from chalicelib.observability import logger
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


@bp.route("/api/admin/clients/{client_id}/external-id/rotate", methods=["POST"], response="AccountsReply")
def rotate_external_id(client_id):
    """Start rotating the client's ExternalId: a new one is pending (201). While one is pending, a rotate mints no
    other and answers that one (200, idempotent; also the loser of two concurrent rotates, whose write is
    conditional on no pending id): the client may already have deployed it in its trust policies, so a retried or
    concurrent request must name the id it has, never replace it (a 409 would make a retry after a lost answer look
    like a failure; the pending id is visible and ``DELETE .../external-id/pending`` abandons it). Only the rotate
    that minted the pending id records the event and tells the client. The current id stays in use: the client adds
    the pending one to every role's trust policy (the stack's ``NextExternalId``), then the operator confirms
    (``.../external-id/confirm``)."""
    admin_request(_request())
    client = clients.require(client_id)
    client, started = clients.start_external_id_rotation(client, accounts.new_external_id(), utcnow())
    if started:
        activity.record_event("external_id_rotation", f"ExternalId rotation of {client.name} started", utcnow(),
                              severity="warning", client_id=client_id)
        activity.notify(client_id, "external_id_rotation", "A new ExternalId is pending: add it to the trust policy of "
                        "your Spot Optimizer role in every bound account (the stack's NextExternalId); the current "
                        "one keeps working until the operator confirms the change", utcnow(), severity="warning")
    return ok(accounts_view(client), status=201 if started else 200)


@bp.route("/api/admin/clients/{client_id}/external-id/confirm", methods=["POST"], response="AccountsReply")
def confirm_external_id(client_id):
    """Switch to the pending ExternalId once every bound account's role accepts it: each is assumed with it now.
    One refusing is 409 ``external_id_not_accepted`` naming the accounts, nothing changed (the current id stays);
    all accepting, the pending id becomes the client's and every binding's, and the old one is used no more."""
    admin_request(_request())
    client = clients.require(client_id)
    if not client.pending_external_id:
        raise ConflictError("no ExternalId rotation is pending: start one with POST "
                            f"/api/admin/clients/{client_id}/external-id/rotate", code="no_pending_external_id")
    refused = []
    for binding in client.aws_accounts:
        trial = accounts.AwsAccount(binding["account_id"], binding["role_arn"], client.pending_external_id,
                                    accounts.session_name(client_id))
        try:
            accounts.verify(trial)
        except (ClientError, BotoCoreError) as exc:
            if (busy := translate(exc)) is not None:  # STS throttled or out of reach: no verdict, 503/504
                raise busy from exc
            refused.append(binding["account_id"])
    if refused:
        raise ConflictError(f"the role of account(s) {', '.join(refused)} does not accept the pending ExternalId yet: "
                            "add it to the role's trust policy, then confirm again; the current ExternalId stays in "
                            "use", field="pending_external_id", code="external_id_not_accepted")
    client = clients.finish_external_id_rotation(client)
    now = utcnow()
    activity.record_event("external_id_rotated", f"ExternalId of {client.name} rotated "
                          f"({len(client.aws_accounts)} account(s) verified)", now, severity="warning",
                          client_id=client_id)
    activity.notify(client_id, "external_id_rotated", "The new ExternalId is in use: you may now remove the old one "
                    "from your roles' trust policies (the stack: ExternalId = the new id, NextExternalId empty)", now,
                    severity="warning")
    return ok(accounts_view(client))


@bp.route("/api/admin/clients/{client_id}/external-id/pending", methods=["DELETE"], response="AccountsReply")
def cancel_external_id_rotation(client_id):
    """Abandon a pending ExternalId rotation (the current id was never stopped); idempotent."""
    admin_request(_request())
    client = clients.cancel_external_id_rotation(clients.require(client_id))
    activity.record_event("external_id_rotation_cancelled", f"ExternalId rotation of {client.name} cancelled",
                          utcnow(), client_id=client_id)
    return ok(accounts_view(client))


@bp.route("/api/admin/clients/{client_id}/accounts/{account_id}", methods=["DELETE"], response="UnbindAccountReply",
          query=[Query("force", enum=("true", "false"),
                       description="unbind although agents or standbys still run there: their standbys are retired, "
                                   "the agents' modes turned off")])
def unbind_account(client_id, account_id):
    """Unbind an AWS account: nothing more is done there for this client.

    While live agents or active standbys of the client are in that account, 409 ``account_in_use`` naming them
    (unbound, the product could neither fail them over nor end the standbys it launched, which would run on,
    billed and managed-looking). ``?force=true`` unbinds anyway: first every such agent's modes go off and its
    account is pinned (nothing more is attempted, nor resolved to another account), then each standby is retired
    through the usual retire path while the role still works (best effort: the reply's ``released`` says which
    were retired and which were not, to be ended by hand), then the binding goes."""
    request = _request()
    admin_request(request)
    force = bool_param(request.query_params or {}, "force", default=False)
    if not accounts.ACCOUNT_ID.match(account_id or ""):
        raise InvalidInputError("account_id must be 12 digits", field="account_id")
    client = clients.require(client_id)
    if not any(b["account_id"] == account_id for b in client.aws_accounts):
        release_bus_access(account_id, client_id)  # a retry after the bus refused: converge, then say "not bound"
        clients.unbind_account(client, account_id)  # 404
    use = tenancy.in_account(client, account_id)
    if (use.agents or use.standbys or use.unknown) and not force:
        raise ConflictError(f"account {account_id} is in use: {_in_use(use)}; stop them first, or unbind with "
                            "?force=true (the standbys are retired, the agents' modes turned off)",
                            field="account_id", code="account_in_use")
    now = utcnow()
    released = _release(client, account_id, use, now) if use.agents or use.standbys or use.unknown else None
    client = clients.unbind_account(client, account_id)
    activity.record_event("account_unbound", f"account {account_id} unbound from {client.name}"
                          + (f" (forced: {_in_use(use)})" if released else ""), now,
                          severity="warning", client_id=client_id, metadata=released)
    release_bus_access(account_id, client_id)
    return ok({**accounts_view(client), "released": released})


def _in_use(use: tenancy.AccountUse) -> str:
    """What an account still holds, named (at most ten of each, then how many more)."""
    def names(items, name, plural):
        listed = ", ".join(items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
        return f"{len(items)} {name if len(items) == 1 else plural} ({listed})"

    parts = []
    if use.agents:
        parts.append(names([a.logical_agent_id for a in use.agents], "live agent", "live agents"))
    if use.standbys:
        parts.append(names([r.replica_id for r in use.standbys], "active standby", "active standbys"))
    if use.unknown:
        parts.append(names([a.logical_agent_id for a in use.unknown], "live agent", "live agents")
                     + " of unknown account (legacy, no identity document: possibly there)")
    return " and ".join(parts)


def _release(client, account_id: str, use: tenancy.AccountUse, now) -> dict:
    """A forced unbinding's work in the account, before the binding goes: the agents stop (their pending commands
    cancelled), the standbys are retired (each on its own: one that EC2 refuses is reported, not fatal), and the
    client is told."""
    for agent in [*use.agents, *use.unknown]:  # one of unknown account is pinned too: it stays unresolved, as now
        agents.leave_account(agent, account_id, now)
        # disabled, it is delivered nothing: a switch still pending would wait for ever, then run once re-enabled
        command_queue.cancel_pending(agent, now, f"account {account_id} was unbound from the client")
    standbys = []
    for replica in use.standbys:
        entry = {"replica_id": replica.replica_id, "agent_id": replica.agent_id, "instance_id": replica.instance_id}
        try:
            replicas.retire(replica, ReplicaStatus.TERMINATED, now, f"account {account_id} unbound")
        except Exception as exc:  # noqa: BLE001 - best effort: reported, the unbinding goes on
            logger.warning("standby not retired on a forced unbinding",
                           extra={"replica_id": replica.replica_id, "account_id": account_id, "error": str(exc)})
            entry |= {"retired": False, "error": getattr(exc, "message", None) or type(exc).__name__}
        else:
            entry["retired"] = True
        standbys.append(entry)
    released = {"agents": [a.agent_id for a in [*use.agents, *use.unknown]], "standbys": standbys}
    left = [s["replica_id"] for s in standbys if not s["retired"]]
    activity.notify(client.client_id, "account_unbound",
                    f"AWS account {account_id} was unbound: {len(use.agents)} agent(s) there no longer managed, "
                    f"{len(standbys) - len(left)} standby(s) retired"
                    + (f", {len(left)} could not be ({', '.join(left)}): end them in that account" if left else ""),
                    now, severity="warning")
    return released


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
