"""Client (customer) routes: everything is scoped to the token's client."""

from __future__ import annotations


from chalicelib import command_queue, quotas
from chalicelib.api.common import ApiBlueprint, client_request, ok, page_params, utcnow
from chalicelib.api.inputs import bool_param
from chalicelib.api.route_doc import Query
from chalicelib.api.views import accounts_view, command_view, iso
from chalicelib.aws import accounts
from chalicelib.errors import ConflictError, NotFoundError
from chalicelib.repositories import activity, agents, clients
from chalicelib.settings import get_settings
from chalicelib.schemas.clients import ForceSwitchRequest

bp = ApiBlueprint(__name__)


def _request():
    return bp.current_request


@bp.route("/api/client/validate", methods=["GET"], response="ValidateTokenReply")
def validate_token():
    """Check a token (dashboard login)."""
    client, _ = client_request(_request())
    return ok({"valid": True, "client_id": client.client_id, "name": client.name})


@bp.route("/api/client/instances/{instance_id}/force-switch", methods=["POST"], response="ForceSwitchReply")
def force_switch(instance_id):
    """Queue a manual switch (priority MANUAL_OVERRIDE = 75, legacy defect fixed) for an instance.

    Sent again while the client's switch of that instance to the same target is still pending or running (a retry:
    the answer was lost, or the Lambda died after the command's write), it answers that command (``duplicate``),
    queueing no second switch, also when the two race (``command_queue.queue_client_switch``)."""
    client, body = client_request(_request(), ForceSwitchRequest)
    instance = agents.get_instance(client.client_id, instance_id)
    if instance is None:
        raise NotFoundError("instance not found", field="instance_id")
    if not instance.is_active:
        raise ConflictError("instance is not active", field="instance_id", code="instance_inactive")
    agent = agents.require(client.client_id, instance.agent_id)
    if agent.instance_id != instance_id:
        # A switch command moves the agent's current primary: an old instance a switch kept running, or a standby,
        # must not queue a switch of another instance than the one named.
        raise ConflictError(f"instance is not the current primary of agent {agent.logical_agent_id} (now "
                            f"{agent.instance_id}): only that one can be switched", field="instance_id",
                            code="not_current_primary")
    if body.pool_id and body.target != "ondemand":
        command_queue.check_switch_target(agent, body.pool_id, field="pool_id")
    target_mode = "ondemand" if body.target == "ondemand" else "spot"
    command, duplicate = command_queue.queue_client_switch(agent, target_mode=target_mode,
                                                          target_pool_id=body.pool_id, now=utcnow())
    # keyed on the command: the answer to a repeat writes it if the first request died before it did
    activity.record_event("force_switch", f"manual switch queued for {instance_id}", command.created_at,
                          client_id=client.client_id, agent_id=agent.agent_id, instance_id=instance_id,
                          metadata={"command_id": command.command_id}, once=f"force_switch:{command.command_id}")
    return ok({"success": True, "duplicate": duplicate, "command": command_view(command)}, status=201)


@bp.route("/api/client/accounts", methods=["GET"], response="ClientAccountsReply")
def aws_accounts():
    """The AWS accounts bound to the caller, and the ExternalId its role in each must require (generated
    once, server-side; deploy the role with it, then the operator binds the role's ARN)."""
    client, _ = client_request(_request())
    client = clients.ensure_external_id(client, accounts.new_external_id())
    return ok({**accounts_view(client), "tenancy": get_settings().tenancy})


@bp.route("/api/client/limits", methods=["GET"], response="LimitsReply")
def limits():
    """The caller's quotas and instance-type policy."""
    client, _ = client_request(_request())
    return ok({"client_id": client.client_id, "limits": quotas.limits(client.client_id)})


@bp.route("/api/notifications", methods=["GET"], response="NotificationsReply", query=[Query("unread", enum=("true", "false"))])
def notifications():
    """The client's notifications, newest first (``unread=true`` to filter)."""
    client, _ = client_request(_request())
    limit, token = page_params(_request())
    unread = bool_param(_request().query_params or {}, "unread", default=False)
    page = activity.notifications_page(client.client_id, limit, token, unread_only=unread)
    return ok({"notifications": [
        {"id": n.notification_id, "kind": n.kind, "severity": n.severity, "message": n.message,
         "agent_id": n.agent_id, "is_read": n.is_read, "created_at": iso(n.created_at)}
        for n in page.items], "next_token": page.next_token})


@bp.route("/api/notifications/{notification_id}/mark-read", methods=["POST"], response="Success")
def mark_read(notification_id):
    """Mark one of the caller's notifications read."""
    client, _ = client_request(_request())
    activity.mark_read(client.client_id, notification_id, utcnow())
    return ok({"success": True})


@bp.route("/api/notifications/mark-all-read", methods=["POST"], response="MarkAllReadReply")
def mark_all_read():
    """Mark the caller's unread notifications read (never another client's), oldest first, at most
    ``activity.MARK_ALL_READ_BUDGET`` per call: ``more`` is true while unread ones are left (call again)."""
    client, _ = client_request(_request())
    updated, more = activity.mark_all_read(client.client_id, utcnow())
    return ok({"success": True, "updated": updated, "more": more})
