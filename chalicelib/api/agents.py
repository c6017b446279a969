"""Agent protocol routes (docs/ARCHITECTURE.md, "Agent protocol"): same paths and fields as the legacy agent."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import re
import time
from datetime import timedelta
from decimal import Decimal

from components.agent_identity import (
    AgentStatus,
    IdentityDocument,
    InstanceMode,
    Registration,
    account_bound,
    agent_id_for,
    check_identity,
    normalize_logical_agent_id,
    normalize_mode,
)
from components.aws_regions import is_zone_of_region
from components.calculations import switch_impact
from components.capacity import CapacityObservation, ObservationKind
from components.command_tracker.model import SWITCH_TYPES, CommandStatus
from components.data_valve import PricePoint
from components.pool_id import make_pool_id, parse_pool_id, region_of_az

from chalicelib import auth, bootstrap, catalogue, command_queue, quotas, reported_pools, tenancy
from chalicelib.api.common import (
    ApiBlueprint,
    agent_request,
    client_request,
    noted,
    ok,
    quick_agent_admission,
    raw_json,
    utcnow,
    validate,
)
from chalicelib.aws import accounts, ec2
from chalicelib.api.views import command_view, config_view, iso
from chalicelib.clock import MAX_CLOCK_SKEW, MAX_REPORT_AGE, believable, placed
from chalicelib.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError, \
    ServiceUnavailableError
from chalicelib.identity_documents import verify_identity_document
from chalicelib.repositories import activity, agents, observations, pools, switches
from chalicelib.repositories import replicas as replica_repo
from chalicelib.schemas.agents import (
    CleanupReportRequest,
    ExecutedRequest,
    HeartbeatRequest,
    LegacyExecutedRequest,
    PricingReportRequest,
    RegisterRequest,
    SwitchPrices,
    SwitchReportRequest,
    SwitchTiming,
    TerminationRequest,
)
from chalicelib.schemas.base import INSTANCE_ID_PATTERN
from chalicelib.settings import get_settings
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.pools import PricingReportTable
from chalicelib.tables.switches import SwitchTable

bp = ApiBlueprint(__name__)

INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)


def _request():
    return bp.current_request


def _zone_of_region(az: str, region: str | None) -> None:
    """400 unless ``az`` is a standard availability zone of the (known AWS) ``region``."""
    if not is_zone_of_region(az, region):
        raise InvalidInputError(f"az {az!r} is not an availability zone of region {region!r}", field="az")


@bp.route("/api/agents/register", methods=["POST"], response="RegisterReply")
def register():
    """Create or update the agent of (client, logical_agent_id); answer with its config.

    With ``identity_document`` + ``identity_signature`` (from IMDS) the signed document decides the
    account, instance, type, region and zone: the body's claims must match it (403 otherwise), its
    account must be one the client is bound to, and the answer carries a new ``agent_credential`` for
    the agent routes (the previous one stops working). Without them the registration is the legacy v4
    one, allowed only where the client runs in legacy agent mode.

    ``instance_types`` / ``requirements`` declare the types the agent can run on: resolved against the
    catalogue (400 when unusable, nothing written) and stored in its config."""
    client, body = client_request(_request(), RegisterRequest)
    make_pool_id(body.instance_type, body.az)  # validates both (400 with field)
    _zone_of_region(body.az, body.region)
    identity = _verified_identity(client, body)
    types = None
    if body.instance_types or body.requirements:
        types = catalogue.type_config(body.instance_type, body.instance_types,
                                      body.requirements.model_dump() if body.requirements else None)
    mode = normalize_mode(body.mode)
    if mode is InstanceMode.UNKNOWN:  # v3.2 registers no mode: a restart keeps the one known for its instance
        mode = normalize_mode(agents.known_mode(client.client_id, body.instance_id))
    reg = Registration(
        client_id=client.client_id, logical_agent_id=_logical_id(client.client_id, body, mode),
        instance_id=body.instance_id, instance_type=body.instance_type, region=body.region,
        az=body.az, ami_id=body.ami_id, hostname=body.hostname, agent_version=body.agent_version,
        mode=mode, private_ip=body.private_ip, public_ip=body.public_ip)
    # The client's instance-type policy and agent quota (409, nothing written; chalicelib/quotas.py).
    quotas.check_types(client.client_id, [body.instance_type, *((types or {}).get("allowed_instance_types") or ())])
    proven = identity.account_id if identity is not None else None
    credential = None
    if identity is not None:
        credential = auth.new_agent_credential(client.client_id, agent_id_for(client.client_id, reg.logical_agent_id))
        identity = {"account_id": identity.account_id, "credential_hash": auth.hash_secret(credential)}
    now = utcnow()
    # spot_agent.py (X-Client-Token) cannot run a command: none is queued for it (docs/legacy-compatibility.md)
    runs_commands = not auth.speaks_client_token_header(_request().headers)
    claim = agents.unproven_claim(client, reg.instance_id) if identity is not None else None
    digest = hashlib.sha256(json.dumps([client.client_id, runs_commands, raw_json(_request())], sort_keys=True,
                                       default=str).encode()).hexdigest()
    before, moved_from, agent, plan = _register_within_quota(
        client, reg, now, vet=lambda before: _account_move(before, proven, reg), types=types,
        identity=identity, runs_commands=runs_commands, digest=digest)
    if claim is not None:
        _claim_ended(claim, agent, now)
    activity.record_event("agent_registered", f"agent {agent.logical_agent_id} {plan.action.value}",
                          now, client_id=client.client_id, agent_id=agent.agent_id,
                          instance_id=reg.instance_id,
                          metadata={"action": plan.action.value, "verified": identity is not None})
    if moved_from is not None:
        activity.record_event("agent_account_changed", f"agent {agent.logical_agent_id} now runs in AWS account "
                              f"{agent.account_id} (was {moved_from}): proven by its identity document", now,
                              severity="warning", client_id=client.client_id, agent_id=agent.agent_id,
                              instance_id=reg.instance_id, metadata={"from": moved_from, "to": agent.account_id})
    if before is not None and plan.previous_instance_id:
        agent = _unreported_switch(client.client_id, before, agent, now) or agent
    elif before is not None and before.instance_id == reg.instance_id:
        # the repeat of a replacement's registration that died before it recorded its switch finishes it; a legacy
        # process restarted on its instance is not handed again the command it held
        agent = _finish_unreported_switch(client.client_id, before, agent, now) or agent
        if not before.deleted:
            command_queue.abandon_on_restart(before, reg.instance_id, now)
    reply = {"success": True, "agent_id": agent.agent_id, "client_id": client.client_id,
             "action": plan.action.value, "verified": identity is not None,
             "account_id": agent.account_id if identity is not None else None, "config": config_view(agent)}
    if credential is not None:
        reply |= {"agent_credential": credential,
                  "warning": "store agent_credential now: it is shown only once, and replaced by the next "
                             "registration"}
    return ok(reply)


def _account_move(before, proven: str | None, reg: Registration) -> str | None:
    """The agent's previous verified account when this registration moves it to the account ``proven`` (audited by
    the caller), else None; 409 when the move would leave the product acting in the wrong account.

    The agent's account is where the product acts for it: its launches, hand-overs and the retirement of its standbys
    (``tenancy.for_replica`` reads the agent's account, a standby row names none). A registration proving another
    (bound: checked before) account moves the agent there, but not while it has active standbys in the old one:
    they could no longer be ended (409 ``account_changed``, naming them: delete them first). A legacy registration
    proves nothing: on an instance not known to be the agent's it cannot keep the account the agent was proven in
    for an instance of unknown account (409 ``identity_document_required``); a restart on its own instance keeps it,
    and so does the replacement its own switch launched (``_own_switch_lands``: a legacy agent launches it with its
    instance's credentials, in the same account, and registers it before reporting, if it reports at all). A deleted
    agent's revival is checked alike: it keeps the account too (and a standby a delete raced may run on)."""
    if before is None or not before.account_id:
        return None
    if proven is None:
        if not _owned_instance(before.client_id, before, reg.instance_id) and not _own_switch_lands(before, reg):
            raise ConflictError(f"this agent was verified in AWS account {before.account_id}; a registration on "
                                "another instance must carry that instance's identity document and signature",
                                field="identity_document", code="identity_document_required")
        return None
    if proven == before.account_id:
        return None
    standbys = replica_repo.for_agent(before.agent_id, include_final=False)
    if standbys:
        raise ConflictError(f"the instance runs in AWS account {proven}, but this agent's standby(s) "
                            f"{', '.join(r.replica_id for r in standbys)} run in its account {before.account_id}: "
                            "delete them first (DELETE /api/agents/{agent_id}/replicas/{replica_id}), or register "
                            "the instance as another agent (another logical_agent_id)",
                            field="identity_document", code="account_changed")
    return before.account_id


def _own_switch_lands(before, reg: Registration) -> bool:
    """True when ``reg`` (a legacy registration) may be the replacement the agent's own switch launched: a switch
    command of the instance the agent is on, delivered (executing, or completed successfully: its report may have
    been refused), whose target the new instance matches (mode, and the zone for spot), as ``_unreported_switch``
    reads it."""
    store = bootstrap.command_store()
    mode = reg.mode.value
    for cmd in [*store.active_for_agent(before.agent_id, 50), *store.history(before.agent_id, _LOST_REPORT_LOOKBACK)]:
        if cmd.command_type not in SWITCH_TYPES or cmd.instance_id != before.instance_id or cmd.leased_at is None:
            continue
        if not (cmd.status is CommandStatus.EXECUTING
                or (cmd.status is CommandStatus.COMPLETED and cmd.success is not False)):
            continue
        if mode in (cmd.target_mode, "unknown") and (
                cmd.target_mode != "spot" or parse_pool_id(cmd.target_pool_id)[1] == reg.az):
            return True
    return False


ADMISSION_ATTEMPTS = 8  # a fleet booting together: a round that loses the race counts and writes again


def _register_within_quota(client, reg: Registration, now, *, vet, **kwargs):
    """``agents.register`` under the agent quota (a deleted agent registering again counts as a new one) and
    ``vet(before)`` (409s of the agent as it stands, before anything is written; its answer is returned): the
    count and the write are checked again whenever other registrations took the room this one counted in between
    (``AdmissionRaced``), with a short jittered back-off. Returns the agent before, what ``vet`` answered, the
    agent and the plan."""
    for attempt in range(ADMISSION_ATTEMPTS):
        before = agents.get(client.client_id, agent_id_for(client.client_id, reg.logical_agent_id))
        admission = None
        if before is None or before.deleted:
            admission = quotas.check_agents(client.client_id, reviving=before is not None)
        vetted = vet(before)
        try:
            return (before, vetted, *agents.register(client, reg, now, admission=admission, **kwargs))
        except agents.AdmissionRaced:
            if attempt == ADMISSION_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 4)))
    raise AssertionError("unreachable")


def _claim_ended(claim, agent, now) -> None:
    """Tell both clients' audit logs that a proven registration took the instance from an unproven claim (the
    other client learns no more than the instance id it named itself)."""
    ended = (f"instance {claim.instance_id} was registered with a signed identity document of the account that "
             "runs it; this agent's unverified claim on it ended")
    activity.record_event("instance_claim_ended", ended, now, severity="warning", client_id=claim.client_id,
                          agent_id=claim.agent_id, instance_id=claim.instance_id)
    activity.notify(claim.client_id, "instance_claim_ended", ended, now, severity="warning", agent_id=claim.agent_id)
    activity.record_event("instance_claim_taken_over", f"instance {claim.instance_id} was claimed by an unverified "
                          "registration elsewhere; this proven registration took it over", now,
                          client_id=agent.client_id, agent_id=agent.agent_id, instance_id=claim.instance_id)


def _logical_id(client_id: str, body: RegisterRequest, mode: InstanceMode) -> str:
    """The logical id a registration speaks for.

    A registration that names none (spot_agent.py), or names its own instance id while no agent has that logical
    id (v4 without ``LOGICAL_AGENT_ID``, which the legacy installer leaves empty by default: v4 then takes its
    instance id, so the agent a switch or a failover puts on a new instance names the new instance) is the agent
    the instance belongs to (``_agent_of_instance``), else a new one under the instance id, as before."""
    named = body.logical_agent_id
    if named and (named != body.instance_id or agents.get(client_id, agent_id_for(client_id, named)) is not None):
        return normalize_logical_agent_id(named)
    return normalize_logical_agent_id(_agent_of_instance(client_id, body, mode, switches=bool(named)))


def _agent_of_instance(client_id: str, body: RegisterRequest, mode: InstanceMode, *, switches: bool) -> str:
    """The logical id of the agent an instance belongs to: the agent whose active primary it is (a switch reported
    it, or a failover launched it). With ``switches`` (v4 naming its own instance id) also the agent whose instance
    it was or whose standby it is, and for an instance not known here the one agent of the client, itself without a
    logical id of its own, whose switch of the instance it runs is in flight and matches this instance (its type;
    the target's mode and, for spot, zone: what v4 launches), since v4's replacement usually registers before the
    switch is reported, and under auto-terminate instead of it. Else the instance id, as before. Without this the
    agent on the new instance would register as a new agent (default settings, no history) and take the instance
    from the agent that launched it, whose switch is never recorded."""
    instance_id = body.instance_id
    row = agents.get_instance(client_id, instance_id)
    if row is not None and row.agent_id and row.is_active and row.role == "primary":
        owner = agents.get(client_id, row.agent_id)
        if owner is not None and owner.instance_id == instance_id:
            return owner.logical_agent_id
    if row is not None and switches and row.agent_id:
        # an instance an agent left (kept running after its switch, replaced by a failover) or its standby: that
        # agent's, so a restart there is refused as a named agent's is (409), never a second agent on it
        owner = agents.get(client_id, row.agent_id)
        if owner is not None and not owner.deleted:
            return owner.logical_agent_id
    if row is not None or not switches:
        return instance_id  # an instance known here is not a switch's new instance

    def launched_it(agent, cmd) -> bool:
        return (cmd.command_type in SWITCH_TYPES and cmd.status is CommandStatus.EXECUTING
                and cmd.instance_id == agent.instance_id and cmd.leased_at is not None
                and agent.instance_type == body.instance_type and agent.region == body.region
                and mode in (normalize_mode(cmd.target_mode), InstanceMode.UNKNOWN)
                and (cmd.target_mode != "spot" or parse_pool_id(cmd.target_pool_id)[1] == body.az))

    store = bootstrap.command_store()
    launchers = {agent.logical_agent_id for agent in agents.busy_unnamed(client_id)
                 if agent.instance_id != instance_id and agent.timings.reports_after_terminating
                 for cmd in store.active_for_agent(agent.agent_id, 50) if launched_it(agent, cmd)}
    return launchers.pop() if len(launchers) == 1 else instance_id


def _verified_identity(client, body: RegisterRequest) -> IdentityDocument | None:
    """The registration's verified identity document; None for a legacy registration (legacy mode only)."""
    if body.identity_document is None and body.identity_signature is None:
        if not client.legacy_agents:
            raise InvalidInputError("registration needs the instance identity document and its signature from "
                                    "IMDS (legacy agent mode is off for this client)", field="identity_document",
                                    code="identity_document_required")
        return None
    if body.identity_document is None or body.identity_signature is None:
        missing = "identity_document" if body.identity_document is None else "identity_signature"
        raise InvalidInputError("identity_document and identity_signature go together", field=missing)
    doc = verify_identity_document(body.identity_document, body.identity_signature)
    check_identity(doc, instance_id=body.instance_id, instance_type=body.instance_type, region=body.region,
                   az=body.az)
    usable = [binding["account_id"] for binding in client.aws_accounts]
    if accounts.self_hosted():
        usable.append(accounts.home_account_id())
    if not account_bound(doc.account_id, usable):
        raise ForbiddenError(f"the instance runs in AWS account {doc.account_id}, which is not bound to this client",
                             field="identity_document", code="account_not_bound")
    return doc


def _valid_body(schema):
    """The request body validated against ``schema``, or None (the full path then reports the error after
    authenticating, as it always did)."""
    try:
        return validate(schema, raw_json(_request()))
    except Exception:  # noqa: BLE001 - any client mistake: the full path answers it
        return None


def _quick_heartbeat(agent_id):
    """A heartbeat that changes nothing but its time, in two DynamoDB writes: the gate (admission, rate
    limit; with an agent credential in one transaction with a check of the credential on the agent row) and
    one conditional UpdateItem of the agent row that returns it (agents.quick_heartbeat); the command queue
    is read only when the row counts active commands. None when anything else is going on (the full path)."""
    body = _valid_body(HeartbeatRequest)
    if body is None:
        return None
    request = _request()
    admitted = quick_agent_admission(request, agent_id, raw_json(request))
    if admitted is None:
        return None
    client_id, credential_hash = admitted
    now = utcnow()
    mode = normalize_mode(body.mode).value if body.mode else None
    updated = agents.quick_heartbeat(client_id, agent_id, status=body.status, instance_id=body.instance_id,
                                     instance_type=body.instance_type, mode=mode, az=body.az, now=now,
                                     credential_hash=credential_hash)
    if updated is None:
        return None
    commands = []
    if body.status == "online" and updated.config.get("enabled", True):
        commands = command_queue.deliver_to(updated, now, instance_id=body.instance_id)
    return _heartbeat_reply(updated, commands, now)


def _terminating_left_host(agent, at) -> bool:
    """Under auto-terminate the legacy agent on the instance a switch left is still heard while it does what the
    switch asked: the replacement's agent may register as soon as it boots, while the old one still waits for
    ``running`` (the lease's ``launch_s``), then sleeps the terminate wait, terminates its host and waits for
    ``terminated`` (``terminate_s``) before it reports and stops (``AgentTimings.host_gone_s``: the lease is
    that span after the image some builds make first). Its commands are held meanwhile, but it keeps no instance
    running."""
    if not agent.config.get("auto_terminate_enabled") or agent.last_switch_at is None:
        return False
    gone_s = agent.timings.host_gone_s(int(agent.config.get("terminate_wait_seconds") or 0))
    return at <= agent.last_switch_at + timedelta(seconds=gone_s)


def _kept_agent_news(before, after, now) -> bool:
    """True once an agent on an instance this agent left is heard where it should not be: at once for a kept
    instance (auto-terminate off); under auto-terminate only when it is still heard after its terminate wait and
    termination (seen with the real v4 agent: its heartbeats during the wait claimed a kept instance)."""
    if not after.kept_agent_runs(now) or _terminating_left_host(after, now):
        return False
    return not before.kept_agent_runs(now) or _terminating_left_host(before, before.kept_agent_seen_at)


def _heartbeat_reply(agent, commands, now):
    return ok({"success": True, "status": agent.status, "config_version": agent.config_version,
               "commands": [command_view(c) for c in commands], "server_time": iso(now)})


@bp.route("/api/agents/{agent_id}/heartbeat", methods=["POST"], response="HeartbeatReply")
def heartbeat(agent_id):
    """Liveness plus everything the agent needs for this cycle: pending commands, config version."""
    quick = _quick_heartbeat(agent_id)
    if quick is not None:
        return quick
    client_id, agent, body = agent_request(_request(), agent_id, HeartbeatRequest)
    if body.instance_type and body.az:
        make_pool_id(body.instance_type, body.az)
    if body.instance_type and body.instance_type != agent.instance_type:
        # The recorded type is what standbys, replacements and switches launch: the policy registration applies.
        quotas.check_types(client_id, [body.instance_type])
    if body.az:
        _zone_of_region(body.az, agent.region)
    now = utcnow()
    mode = normalize_mode(body.mode).value if body.mode else None
    updated = agents.heartbeat(agent, status=body.status, instance_id=body.instance_id,
                               instance_type=body.instance_type, mode=mode, az=body.az, now=now)
    commands = []
    if body.status == "online" and updated.config.get("enabled", True):
        commands = command_queue.deliver_to(updated, now, instance_id=body.instance_id)
    if _kept_agent_news(agent, updated, now):
        activity.notify(client_id, "commands_held",
                        f"the agent on {updated.kept_agent_instance_id}, which {agent.logical_agent_id} left and kept "
                        f"running, still runs: commands polled without an instance id are held until it stops",
                        now, severity="warning", agent_id=agent.agent_id)
    if agent.status != updated.status and "offline" in (agent.status, updated.status):
        activity.notify(client_id, "agent_status",
                        f"agent {agent.logical_agent_id} is now {updated.status}", now,
                        agent_id=agent.agent_id)
    return _heartbeat_reply(updated, commands, now)


@bp.route("/api/agents/{agent_id}/config", methods=["GET"], response="AgentConfig")
def config(agent_id):
    """The agent's flags and thresholds (flat, legacy shape) with ``config_version``."""
    _, agent, _ = agent_request(_request(), agent_id)
    return ok(config_view(agent))


@bp.route("/api/agents/{agent_id}/pending-commands", methods=["GET"], response="PendingCommandsReply")
def pending_commands(agent_id):
    """Commands to execute, highest priority first; each delivery takes (or keeps) a lease.

    ``?instance_id=`` names the caller's instance (legacy agents send none: the agent's current one).
    While an agent on an instance the agent left still runs (a switch or promotion under auto-terminate off
    keeps the old instance and its v4 agent, which polls with the same agent id), a poll that names no
    instance may be that one's, which would run the command on the wrong host: it gets nothing (``held``)
    until the kept agent has been silent for ``KEPT_AGENT_HEARD_WITHIN``.

    An agent with nothing to deliver (its row counts no active command, or commands are disabled) is
    answered after one transaction: the gate's admission and a check of the agent row.

    A caller authenticated by ``X-Client-Token`` (spot_agent.py, which iterates the answer as a list) is answered
    the bare list; such an agent is given no command (``AgentRecord.runs_commands``), so the list is empty. A v3.x
    agent is answered the bare list too (``AgentTimings.lists_commands``): the first v3.2 builds iterate the answer
    itself, and every v3.2 build reads a list.
    """
    request = _request()
    listed = auth.speaks_client_token_header(request.headers)

    def answer(commands, **extra):
        return ok([command_view(c) for c in commands] if listed
                  else {"commands": [command_view(c) for c in commands], **extra})

    caller = (request.query_params or {}).get("instance_id")
    if caller is None or INSTANCE_ID.fullmatch(caller):
        idle = agents.idle_condition() if listed else agents.idle_condition() & ~agents.lists_commands_condition()
        if quick_agent_admission(request, agent_id, raw_json(request), agent_condition=idle):
            return answer([])
    client_id, agent, _ = agent_request(request, agent_id)
    listed = listed or agent.timings.lists_commands
    if caller is not None and not INSTANCE_ID.fullmatch(caller):
        raise InvalidInputError("instance_id is not an EC2 instance id", field="instance_id")
    now = utcnow()
    if caller is None and agent.kept_agent_runs(now):
        return answer([], held=f"an agent still runs on {agent.kept_agent_instance_id}, which this agent left: "
                               f"name the polling instance (?instance_id=)")
    commands = []
    if agent.config.get("enabled", True):
        commands = command_queue.deliver_to(agent, now, instance_id=caller)
    return answer(commands)


def _result(client_id: str, agent, command_id: str, body: ExecutedRequest, success: bool | None = None,
            message: str | None = None):
    now = utcnow()
    outcome = command_queue.record_result(agent.agent_id, command_id,
                                          success=body.success if success is None else success,
                                          message=body.message or message, now=now, error_code=body.error_code)
    warnings = noted(body.warnings, f"result of command {command_id}", now, client_id=client_id,
                     agent_id=agent.agent_id)
    return ok({"success": True, "replay": outcome.replay, "late": outcome.late,
               "command": command_view(outcome.command), "warnings": warnings})


@bp.route("/api/agents/{agent_id}/commands/{command_id}/executed", methods=["POST"], response="CommandResultReply")
def command_executed(agent_id, command_id):
    """The agent's result for a delivered command: idempotent, and recorded even when it arrives after
    the lease ran out (``late``), since the agent did act."""
    client_id, agent, body = agent_request(_request(), agent_id, ExecutedRequest)
    return _result(client_id, agent, command_id, body)


@bp.route("/api/agents/{agent_id}/mark-command-executed", methods=["POST"], response="CommandResultReply")
def mark_command_executed(agent_id):
    """The v3.2 agent's result call, which the legacy server never served. v3.2 posts it, with ``command_id``
    only, after every command it took, done or not: the outcome is then inferred from its switch report."""
    client_id, agent, body = agent_request(_request(), agent_id, LegacyExecutedRequest)
    success, message = (body.success, None) if body.success is not None \
        else command_queue.v3_outcome(agent.agent_id, body.command_id)
    return _result(client_id, agent, body.command_id, body, success, message)


@bp.route("/api/agents/{agent_id}/commands/{command_id}/extend", methods=["POST"], response="CommandReply")
def extend_command_lease(agent_id, command_id):
    """The agent is still working on the command: renew its lease (409 once it was taken back)."""
    client_id, agent, _ = agent_request(_request(), agent_id)
    return ok({"success": True, "command": command_view(command_queue.extend(agent, command_id, utcnow()))})


def _reported_points(body: PricingReportRequest, agent, ts, warnings: list[str]):
    """The report's pools as price points: each already plausible (the schema dropped the others) and
    one the agent may speak for (``reported_pools.screen``: its region, its types, zones AWS lists)."""
    prices: dict[str, Decimal] = {}
    for pool in body.pricing.spot_pools:
        pool_id = pool.pool_id or make_pool_id(pool.instance_type, pool.az)
        prices.setdefault(pool_id, Decimal(str(pool.price)))
    kept, dropped = reported_pools.screen(list(prices), agent)
    warnings += dropped
    return {pid: PricePoint(pool_id=pid, ts=ts, price=prices[pid], source_agent_id=agent.agent_id)
            for pid in kept}


@bp.route("/api/agents/{agent_id}/pricing-report", methods=["POST"], response="PricingReportReply")
def pricing_report(agent_id):
    """Spot prices of every AZ for the agent's type, through the data valve into the price store. The
    plausible points of pools the agent may speak for (its region and types, zones AWS lists:
    chalicelib/reported_pools.py) are kept; the others are dropped and named in ``warnings``. A pool
    whose price comes from the server's own spot-prices job (fresh) keeps it: the agent's point is only
    counted (``server_priced``). A kept price is used by this client's decisions only. The reported
    on-demand price is kept in the raw report only (AWS's list price is the one decisions use).

    Cost (issue #14): one BatchGetItem of the reported pools, writes only for pools the job does not
    price (points + changed pools), the raw report item only when agent prices were stored or once per
    agent-hour (``pools.report_worth_keeping``) or for a retry whose first attempt died before writing it
    (``pools.report_kept``), and the agent's ``last_pricing_at``."""
    client_id, agent, body = agent_request(_request(), agent_id, PricingReportRequest)
    now = utcnow()
    warnings = body.warnings
    ts = body.pricing.collected_at or now
    points: dict[str, PricePoint] = {}
    if believable(ts, now, MAX_REPORT_AGE):
        points = _reported_points(body, agent, ts, warnings)
    elif body.pricing.spot_pools:
        warnings.append(f"pricing.collected_at: {iso(ts)} is too far from the server clock; "
                        f"all {len(body.pricing.spot_pools)} pool prices dropped")
    ondemand = _decimal(body.pricing.on_demand_price)
    current = _decimal(body.pricing.current_spot_price)
    own_type = body.instance.instance_type or agent.instance_type
    settings = get_settings()
    admissions = pools.admit_points(list(points.values()), now, client_id=client_id,
                                    server_window=timedelta(seconds=settings.server_price_fresh_s)) \
        if points else {}
    server_priced = [pid for pid, a in admissions.items() if a.outcome == pools.SERVER_PRICED]
    admissions = {pid: a for pid, a in admissions.items() if a.outcome != pools.SERVER_PRICED}
    cheapest = body.pricing.cheapest_pool
    stored = sum(1 for a in admissions.values() if pools.changed(a))
    outcomes = [a.outcome for a in admissions.values()]
    # A retry finds the points its first attempt stored as exact duplicates: the raw report is still kept
    # when that attempt died before writing it (test_crash_retry).
    retried = not stored and "exact_duplicate" in outcomes and not pools.report_kept(agent.agent_id, ts)
    # Before the raw report (which ``agent.last_pricing_at`` as read decides): an agent row gone since it was read
    # (its client deleted meanwhile) is 404 here, and no raw report of it is written after its client's rows went.
    agents.touch_pricing(agent, now)
    if pools.report_worth_keeping(agent.last_pricing_at, now, stored) or retried:
        pools.save_report(PricingReportTable(
            agent.agent_id, now, client_id=client_id, instance_id=body.instance.instance_id,
            instance_type=own_type, region=body.instance.region or agent.region,
            az=body.instance.az or agent.az, mode=body.instance.mode, pool_id=body.instance.pool_id,
            on_demand_price=ondemand, current_spot_price=current,
            cheapest_pool_id=cheapest.pool_id if cheapest else None,
            cheapest_price=cheapest.price if cheapest else None,
            pools_reported=len(body.pricing.spot_pools), pools_stored=len(admissions),
            collected_at=ts), now, settings.report_retention_days)
    # The v3.2 agent names its mode only here (instance.current_mode): an unknown mode is learnt from it.
    agents.learn_mode(agent, body.instance.instance_id, normalize_mode(body.instance.mode).value, now)
    return ok({"success": True, "pools": len(admissions),
               "points_written": sum(len(a.upserts) for a in admissions.values()),
               "averaged": outcomes.count("averaged"),
               "duplicates": outcomes.count("exact_duplicate"),
               "interpolated": sum(a.filled for a in admissions.values()),
               "server_priced": len(server_priced),
               "warnings": noted(warnings, "pricing report", now, client_id=client_id,
                                 agent_id=agent.agent_id)})


def _switch_id(agent_id: str, new_instance_id: str) -> str:
    return "sw-" + hashlib.sha256(f"{agent_id}\x00{new_instance_id}".encode()).hexdigest()[:20]


def _decimal(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _reported_old_instance(body: dict) -> str | None:
    """The old instance a switch report names (the instance a retired credential must have been issued to)."""
    old = body.get("old_instance") if isinstance(body, dict) else None
    instance_id = old.get("instance_id") if isinstance(old, dict) else None
    return instance_id if isinstance(instance_id, str) else None


def _old_instance_terminated(client_id: str, agent, body: SwitchReportRequest):
    """The old agent's repeated report, by its retired credential: only the termination time of a switch
    already recorded from that instance (anything else is 403 and writes nothing)."""
    old, new, timing = body.old_instance, body.new_instance, body.timing  # old: the credential's (auth checked)
    terminated = timing.old_instance_terminated_at
    switch_id = _switch_id(agent.agent_id, new.instance_id)
    key = switches.recorded_key(agent.agent_id, switch_id)
    if terminated is None or key is None or not switches.record_old_termination(
            client_id, key, old_instance_id=old.instance_id,
            terminated_at=terminated, deactivate=bool(agent.config.get("auto_terminate_enabled")), now=utcnow()):
        raise ForbiddenError("a replaced credential may only report its instance's termination after a switch",
                             code="agent_credential_replaced")
    return ok({"success": True, "switch_id": switch_id, "duplicate": True, "hourly_savings": None,
               "monthly_savings": None, "commands_completed": [], "warnings": []})


def _switch_began_after(agent, old_instance_id: str | None, command, now):
    """The earliest a reported switch can have started, as the server knows it: not before the switch command it
    executes was created (the one the report names, else the oldest switch command of its old instance among the
    agent's newest: legacy agents name none, and a retried report finds it completed by its first attempt), and not
    longer ago than a report may be late (``MAX_REPORT_AGE``, as for prices)."""
    if command is None:
        command = min((c for c in bootstrap.command_store().history(agent.agent_id, _LOST_REPORT_LOOKBACK)
                       if c.command_type in SWITCH_TYPES and c.instance_id == old_instance_id),
                      key=lambda c: c.created_at, default=None)
    earliest = now - MAX_REPORT_AGE
    if command is not None and command.command_type in SWITCH_TYPES and earliest < command.created_at <= now:
        return command.created_at
    return earliest


def _placed_timing(timing: SwitchTiming, earliest, now, warnings: list[str]) -> None:
    """The switch's times where the server knows it happened (``clock.placed``): between ``earliest``
    (``_switch_began_after``) and the receive time. Never refused (the switch happened): a skewed clock's times are
    moved together, so the boot time they measure is kept, and any one still outside is that bound; past
    ``MAX_CLOCK_SKEW`` both are named in ``warnings``. The switch's place in the history, the new instance's
    installation and the old one's termination (the savings roll-up integrates between them) and the week's switch
    rails of the decision cycle all read these times: the agent's clock must not move them."""
    reported = {name: getattr(timing, name) for name in SwitchTiming.model_fields}
    times, shift, clamped = placed(reported, earliest, now)
    if abs(shift) > MAX_CLOCK_SKEW:
        side = "behind" if shift > timedelta(0) else "ahead of"
        warnings.append(f"timing: the agent's clock is about {abs(shift.total_seconds()) / 3600:.1f} h {side} the "
                        "server's; its times are moved by as much, into when the switch can have happened")
    for name in clamped:
        if abs(times[name] - reported[name] - shift) > MAX_CLOCK_SKEW:
            what = "in the future; the server's receive time" if times[name] == now else \
                f"before the switch can have started; {iso(earliest)}"
            warnings.append(f"timing.{name}: {iso(reported[name])} is {what} is used")
    for name, at in times.items():
        setattr(timing, name, at)


def _owned_instance(client_id: str, agent, instance_id: str | None) -> bool:
    """True when ``instance_id`` is (or was) one of this agent's instances."""
    if not instance_id or instance_id == agent.instance_id:
        return True
    row = agents.get_instance(client_id, instance_id)
    return row is not None and row.agent_id == agent.agent_id


def _check_replacement(agent, old_instance_id: str | None, new) -> None:
    """A verified agent's switch makes the new instance the agent's (the source of its launches, the instance a
    failover retires, a holder its hand-over may take an EIP or target group from), so EC2 must show it live in
    the agent's account and region, tagged by the product's agent as the replacement of the agent's old instance
    (``ec2.TAG_REPLACES``), and not another client's or stage's: 409 ``not_owned`` otherwise, nothing written.
    Where the report says what it is (type, zone, pool, spot or on-demand: the agent row's placement, which its
    replacements copy and the fleet's exposure counts), EC2 must agree: 409 ``placement_mismatch`` otherwise.
    An instance already this agent's (a repeated report) is not asked about again; a legacy agent's report is
    taken on trust, as its registration is."""
    new_instance_id = new.instance_id
    if agent.account_id is None or _owned_instance(agent.client_id, agent, new_instance_id):
        return
    refused = ConflictError(f"new_instance {new_instance_id} is not a live instance in the agent's account in "
                            f"{agent.region} launched to replace {old_instance_id}",
                            field="new_instance.instance_id", code="not_owned")
    if not agent.region:
        raise refused
    try:
        info = ec2.describe(agent.region, [new_instance_id], account=tenancy.for_agent(agent)).get(new_instance_id)
    except ec2.Ec2Error as exc:  # EC2 trouble is ours (503); a refusal such as account_not_bound is a 409
        if getattr(exc, "conflict_code", None):
            raise
        raise ServiceUnavailableError("EC2 did not answer as expected, retry shortly", code="ec2_unavailable",
                                      headers={"Retry-After": "5"}) from exc
    if info is None or info.state in ("shutting-down", "terminated") \
            or info.tags.get(ec2.TAG_REPLACES) != old_instance_id \
            or info.tags.get(ec2.TAG_CLIENT) not in (None, agent.client_id) \
            or info.tags.get(ec2.TAG_STAGE) not in (None, ec2.stage()):
        raise refused
    _same_placement_as(new, info)


def _same_placement_as(new, info: ec2.InstanceInfo) -> None:
    """409 ``placement_mismatch`` naming the first field of the report's new instance that EC2 contradicts."""
    mode = normalize_mode(new.mode).value
    said = (("instance_type", new.instance_type, info.instance_type), ("az", new.az, info.az),
            ("pool_id", new.pool_id, info.pool_id),
            ("mode", mode if mode in ("spot", "ondemand") else None, info.lifecycle))
    for name, claimed, actual in said:
        if claimed and actual and claimed != actual:
            raise ConflictError(f"new_instance.{name} {claimed} is not what EC2 shows for {new.instance_id} "
                                f"({actual})", field=f"new_instance.{name}", code="placement_mismatch")


def _fill_prices(client_id, old_pool, new_pool, old_mode, new_mode, prices, warnings):
    """Prices the report lacks (or had dropped) from the server's own latest pool prices (those this
    client may see) and AWS's on-demand list price."""
    wanted = {name: pool for name, pool, mode in (("old_spot", old_pool, old_mode), ("new_spot", new_pool, new_mode))
              if mode == "spot" and pool and getattr(prices, name) is None}
    known = {pid: k.seen_by(client_id) for pid, k in pools.latest_prices(list(wanted.values())).items()} \
        if wanted else {}
    filled = {"on_demand": _decimal(prices.on_demand), "old_spot": _decimal(prices.old_spot),
              "new_spot": _decimal(prices.new_spot)}
    for name, pool in wanted.items():
        if known.get(pool) and known[pool].price is not None:
            filled[name] = known[pool].price
            warnings.append(f"prices.{name}: unknown in the report; the server's latest price of {pool} is used")
    if filled["on_demand"] is None:
        itype, az = parse_pool_id(old_pool or new_pool) if old_pool or new_pool else (None, None)
        od = catalogue.ondemand_price(itype, region_of_az(az)) if itype else None
        if od is not None:
            filled["on_demand"] = _decimal(od)
            warnings.append("prices.on_demand: unknown in the report; the server's on-demand price is used")
    return filled


@bp.route("/api/agents/{agent_id}/switch-report", methods=["POST"], response="SwitchReportReply")
def switch_report(agent_id):
    """Record a completed switch with its prices, timings and hourly savings impact.

    The switch already happened in AWS, so the report is always recorded: an implausible field is
    dropped (and named in ``warnings``), a missing price comes from the server's own prices. Only a
    report that names no new instance, or an old instance that is not this agent's, is refused. The
    switch command of the old instance is completed by the report (legacy agents name no command).

    After the switch the old instance's agent terminates its instance and sends the report once more with
    the termination time, by when the new instance's agent may have registered and replaced the credential:
    that credential (issued to the old instance) is accepted here for that one purpose — a switch already
    recorded from that instance — and nothing else (``_old_instance_terminated``)."""
    client_id, agent, body = agent_request(_request(), agent_id, SwitchReportRequest,
                                           retired_instance=_reported_old_instance)
    old, new, timing = body.old_instance, body.new_instance, body.timing
    now = utcnow()
    warnings = body.warnings
    command = bootstrap.command_store().get(agent.agent_id, body.command_id) if body.command_id else None
    _placed_timing(timing, _switch_began_after(agent, old.instance_id or agent.instance_id, command, now), now,
                   warnings)
    if agent.by_retired_credential:
        return _old_instance_terminated(client_id, agent, body)
    if not _owned_instance(client_id, agent, old.instance_id):
        raise NotFoundError("old_instance is not an instance of this agent", field="old_instance.instance_id")
    _check_replacement(agent, old.instance_id or agent.instance_id, new)
    command_id = body.command_id
    if command_id and command is None:
        warnings.append(f"command_id: {command_id!r} is not a command of this agent; not linked")
        command_id = None
    old_mode = normalize_mode(old.mode or agent.current_mode).value
    new_mode = normalize_mode(new.mode).value
    old_pool = old.pool_id or (make_pool_id(old.instance_type, old.az) if old.instance_type and old.az
                               else agent.current_pool_id)
    new_pool = new.pool_id or (make_pool_id(new.instance_type, new.az)
                               if new.instance_type and new.az else None)
    prices = _fill_prices(client_id, old_pool, new_pool, old_mode, new_mode, body.prices, warnings)
    impact = switch_impact(old_mode=old_mode, new_mode=new_mode, old_spot_price=prices["old_spot"],
                           new_spot_price=prices["new_spot"], ondemand_price=prices["on_demand"])
    initiated = (timing.switch_initiated_at or timing.new_instance_launched_at
                 or timing.new_instance_ready_at)
    if initiated is None:
        warnings.append("timing.switch_initiated_at: missing; the server's receive time is used")
        initiated = now
    switch_id = _switch_id(agent.agent_id, new.instance_id)
    # ready before the start (a clock that jumped back mid-switch): no duration, rather than a negative downtime
    duration = ((timing.new_instance_ready_at - initiated).total_seconds()
                if timing.new_instance_ready_at and timing.new_instance_ready_at >= initiated else None)
    stored_key = switches.recorded_key(agent.agent_id, switch_id)
    row = SwitchTable(
        client_id, stored_key or switches.switch_key(initiated, switch_id),
        switch_id=switch_id,
        agent_id=agent.agent_id, command_id=command_id, trigger=body.trigger,
        old_instance_id=old.instance_id or agent.instance_id,
        old_instance_type=old.instance_type or agent.instance_type, old_az=old.az or agent.az,
        old_mode=old_mode, old_pool_id=old_pool,
        new_instance_id=new.instance_id, new_instance_type=new.instance_type, new_az=new.az,
        new_mode=new_mode, new_pool_id=new_pool, new_ami_id=new.ami_id,
        on_demand_price=prices["on_demand"], old_price=impact.old_price, new_price=impact.new_price,
        hourly_savings=impact.hourly_savings, monthly_savings=impact.monthly_savings,
        initiated_at=initiated, launched_at=timing.new_instance_launched_at,
        ready_at=timing.new_instance_ready_at, traffic_switched_at=timing.traffic_switched_at,
        old_terminated_at=timing.old_instance_terminated_at, total_duration_seconds=duration,
        snapshot_used=body.snapshot.used, success=body.success, recorded_at=now)
    new_instance = InstanceTable(
        new.instance_id, client_id=client_id, agent_id=agent.agent_id,
        instance_type=new.instance_type or agent.instance_type, region=new.region or agent.region,
        az=new.az, ami_id=new.ami_id, mode=new_mode, pool_id=new_pool, role="primary",
        spot_price=prices["new_spot"] if new_mode == "spot" else None,
        ondemand_price=prices["on_demand"], is_active=True, installed_at=initiated, updated_at=now,
        last_switch_at=now)
    # As the legacy server's fix: the old instance only counts as gone under auto-terminate with a termination time.
    deactivate = (row.old_instance_id if agent.config.get("auto_terminate_enabled")
                  and timing.old_instance_terminated_at else None)
    # A new switch counts against the agent's day (a repeat is answered as one, whatever the count).
    # A switch the service commanded (a delivered switch command of the old instance: the decision cycle's, the
    # client's; one switch a command, ``command_queue.delivered_switch_of``) is recorded past that count: it happened,
    # and a legacy agent never sends a refused report again.
    limits = None if stored_key else quotas.limits(client_id)
    created = switches.record(
        row, agent_client_id=client_id, agent_id=agent.agent_id, new_instance=new_instance, deactivate_old=deactivate,
        now=now, daily_cap=None if limits is None else int(limits["max_switches_per_agent_per_day"]),
        commanded=functools.partial(command_queue.delivered_switch_of, agent.agent_id, row.old_instance_id))
    # The work of the first report past its transaction is finished by a repeat, each part once: the Lambda may have
    # died after the transaction, and the agent then sends the same report again (an inferred switch did its own).
    recorded = row if created else switches.stored(client_id, row.switch_key)
    recorded = None if recorded is None or recorded.inferred else recorded
    if recorded is not None and deactivate is None:  # the old instance runs on: the agent lists at most the quota's
        agents.close_kept_instances(client_id, agent.agent_id, new.instance_id,
                                    int((limits or quotas.limits(client_id))["max_instances"]), now)
    # A legacy agent's switch recorded at the replacement's registration (its agent was thought dead): this report
    # replaces it (only a legacy agent's switch is ever inferred: no conditional write for the others' repeats).
    superseded = (not created and agent.timings.reports_after_terminating
                  and switches.supersede_inferred(row, client_id=client_id, deactivate_old=deactivate, now=now))
    completed = []
    if body.success:
        completed = [c.command_id for c in command_queue.complete_switches_of(
            agent.agent_id, row.old_instance_id, message=f"switch to {new.instance_id} reported", now=now)]
    if recorded is not None:
        _switch_news(recorded, client_id, agent)
    return ok({"success": True, "switch_id": switch_id, "duplicate": not (created or superseded),
               "hourly_savings": None if impact.hourly_savings is None else float(impact.hourly_savings),
               "monthly_savings": None if impact.monthly_savings is None else float(impact.monthly_savings),
               "commands_completed": completed,
               "warnings": noted(warnings, "switch report", now, client_id=client_id,
                                 agent_id=agent.agent_id, instance_id=new.instance_id)})


def _switch_news(row: SwitchTable, client_id: str, agent) -> None:
    """A recorded switch's capacity observation (its new pool launched) and its client's notification, each keyed on
    the switch and the first report's set-once times, so the report that recorded it and every repeat write them
    once: a repeat finishes what a first report that died after its transaction left undone."""
    if row.success and row.new_mode == "spot" and row.new_pool_id:
        observations.record(CapacityObservation(row.new_pool_id, ObservationKind.LAUNCH_SUCCEEDED,
                                                (row.launched_at or row.initiated_at).timestamp(), source="agent"),
                            event_id=f"switch:{row.switch_id}", client_id=client_id, agent_id=agent.agent_id,
                            instance_id=row.new_instance_id, reported=True)
    _notify_switch(row, client_id, agent)


def _notify_switch(row: SwitchTable, client_id: str, agent) -> None:
    """The client's notification of a recorded switch with its saving, once per switch (keyed on it and its set-once
    record time), whichever report or registration records it or repeats."""
    if row.hourly_savings is not None:
        activity.notify(client_id, "switch", f"{agent.logical_agent_id} switched to {row.new_pool_id or row.new_mode}: "
                        f"{row.hourly_savings:+} $/h", row.recorded_at, agent_id=agent.agent_id,
                        once=f"switch:{row.switch_id}")


def _unreported_switch(client_id: str, before, agent, now):
    """Record the switch a legacy agent ran but can never report; the agent as it is then (None: none).

    v4 (and v3.2) run a switch with a terminate wait to its end on the command thread: sleep the wait (v3.2 and the
    early 4.0.0 builds: their own TERMINATE_WAIT_TIME, whatever the command's), terminate
    the old instance, wait for ``terminated``, then report and post the result. The old instance is the agent's
    own host, so the process dies in that wait: the report and the result never come, only a bare ``offline``
    heartbeat at SIGTERM. The replacement's agent, registering under the same logical id, is the evidence: the
    switch command of the instance the agent left, delivered and still leased, whose target (mode, and the zone
    for spot: v4 launches its own type there) the new instance matches, is recorded with the server's prices
    (initiated at the delivery, ready at the registration) and completed. A report that does come later (the
    agent survived) is a duplicate of it.

    Without the wait, v4 posts the command's result and its report: a report refused (429, a transient 503) after
    its result was accepted is not sent again, so the switch command of the left instance completed successfully,
    with no switch recorded under the new instance's id, is the same evidence (``_reported_switch_lost``)."""
    if not before.timings.reports_after_terminating:
        return None
    old_id = before.instance_id

    def lands_here(cmd) -> bool:
        return (cmd.command_type in SWITCH_TYPES and cmd.instance_id == old_id and cmd.leased_at is not None
                and agent.current_mode in (cmd.target_mode, "unknown")  # v3.2 registers no mode
                and (cmd.target_mode != "spot" or parse_pool_id(cmd.target_pool_id)[1] == agent.az))

    def matches(cmd) -> bool:
        # v3.2 and the early 4.0.0 builds terminate by their own settings: a command without a wait may end with
        # its host too (the last v4 builds then report, and their report replaces this record)
        terminates = cmd.terminate_wait_seconds > 0 or not before.timings.waits_as_commanded
        return cmd.status is CommandStatus.EXECUTING and terminates and lands_here(cmd)

    cmd = next((c for c in bootstrap.command_store().active_for_agent(agent.agent_id, 50) if matches(c)), None)
    if cmd is None:
        cmd = _reported_switch_lost(agent, lands_here)
    if cmd is None:
        return None
    warnings: list[str] = []
    old_mode, new_mode = before.current_mode or "unknown", cmd.target_mode  # what the command launched
    old_pool = before.current_pool_id or (make_pool_id(before.instance_type, before.az)
                                          if before.instance_type and before.az else None)
    new_pool = make_pool_id(agent.instance_type, agent.az)
    prices = _fill_prices(client_id, old_pool, new_pool, old_mode, new_mode, SwitchPrices(), warnings)
    impact = switch_impact(old_mode=old_mode, new_mode=new_mode, old_spot_price=prices["old_spot"],
                           new_spot_price=prices["new_spot"], ondemand_price=prices["on_demand"])
    switch_id, initiated = _switch_id(agent.agent_id, agent.instance_id), cmd.leased_at
    stored_key = switches.recorded_key(agent.agent_id, switch_id)
    row = SwitchTable(
        client_id, stored_key or switches.switch_key(initiated, switch_id),
        switch_id=switch_id, agent_id=agent.agent_id, command_id=cmd.command_id,
        trigger="manual" if cmd.priority >= 50 else "model",  # v4's own rule for its report
        old_instance_id=old_id, old_instance_type=before.instance_type, old_az=before.az, old_mode=old_mode,
        old_pool_id=old_pool, new_instance_id=agent.instance_id, new_instance_type=agent.instance_type,
        new_az=agent.az, new_mode=new_mode, new_pool_id=new_pool, new_ami_id=agent.ami_id,
        on_demand_price=prices["on_demand"], old_price=impact.old_price, new_price=impact.new_price,
        hourly_savings=impact.hourly_savings, monthly_savings=impact.monthly_savings, initiated_at=initiated,
        ready_at=now, total_duration_seconds=(now - initiated).total_seconds(), snapshot_used=False, success=True,
        recorded_at=now, inferred=True)
    new_instance = InstanceTable(
        agent.instance_id, client_id=client_id, agent_id=agent.agent_id, instance_type=agent.instance_type,
        region=agent.region, az=agent.az, ami_id=agent.ami_id, mode=new_mode, pool_id=new_pool, role="primary",
        spot_price=prices["new_spot"] if new_mode == "spot" else None, ondemand_price=prices["on_demand"],
        is_active=True, installed_at=initiated, updated_at=now, last_switch_at=now)
    # the service's switch (its delivered command): recorded past the daily bound but counted, as a reported one is, so
    # the client's next switch command at the bound is refused (before walk 22 uncounted: a client's force-switches
    # and its agent's registrations recorded switches without bound)
    created = switches.record(row, agent_client_id=client_id, agent_id=agent.agent_id, new_instance=new_instance,
                              deactivate_old=None, now=now, commanded=True,
                              daily_cap=None if stored_key else int(
                                  quotas.limits(client_id)["max_switches_per_agent_per_day"]))
    _inferred_switch_done(client_id, agent, row if created else switches.stored(client_id, row.switch_key), now,
                          warnings)
    return agents.require(client_id, agent.agent_id)


# How many of an agent's newest commands a replacement's registration reads for the switch whose report was lost.
_LOST_REPORT_LOOKBACK = 5


def _reported_switch_lost(agent, lands_here):
    """The switch command whose result was accepted but whose report never landed (refused, and v4 does not send it
    again): among the agent's newest commands, one completed successfully that ``lands_here``, while no switch is
    recorded under the new instance's id (a report that did land recorded it there). None otherwise."""
    cmd = next((c for c in bootstrap.command_store().history(agent.agent_id, _LOST_REPORT_LOOKBACK)
                if c.status is CommandStatus.COMPLETED and c.success is not False and lands_here(c)), None)
    if cmd is None or switches.recorded_key(agent.agent_id, _switch_id(agent.agent_id, agent.instance_id)):
        return None
    return cmd


def _inferred_switch_done(client_id: str, agent, row: SwitchTable | None, now, warnings: list[str]) -> None:
    """What follows an inferred switch's record: its command completed, the audit event and the client's notification
    (each keyed on the switch and its set-once record time, so a repeat writes what a first attempt left, once)."""
    if row is None or not row.inferred:
        return  # a report of the switch came first (or replaced this record): it did all of this
    command_queue.complete_switches_of(agent.agent_id, row.old_instance_id, now=now,
                                       message=f"switch to {row.new_instance_id}: its agent registered (the old "
                                               f"instance's agent stops with its host before reporting)")
    activity.record_event("switch_inferred", f"{agent.logical_agent_id}: switch {row.old_instance_id} -> "
                          f"{row.new_instance_id} recorded from the new instance's registration", row.recorded_at,
                          client_id=client_id, agent_id=agent.agent_id, instance_id=row.new_instance_id,
                          metadata={"command_id": row.command_id, "switch_id": row.switch_id, "warnings": warnings},
                          once=f"switch_inferred:{row.switch_id}")
    _notify_switch(row, client_id, agent)


def _finish_unreported_switch(client_id: str, before, agent, now):
    """A legacy agent's registration of the instance it is already on: possibly the repeat of its replacement's
    registration, whose Lambda died after the registration's transaction, before or while it recorded the switch it
    inferred (``_unreported_switch``). What that left undone is done now, each part once; the agent as it is then
    (None: nothing to do). The switch is looked up only when the agent row names a switch or counts commands."""
    if not before.timings.reports_after_terminating:
        return None
    switch_id = _switch_id(agent.agent_id, agent.instance_id)
    key = switches.recorded_key(agent.agent_id, switch_id) if before.last_switch_at is not None else None
    if key is not None:
        row = switches.stored(client_id, key)
        if row is not None and row.inferred:
            warnings: list[str] = []
            _fill_prices(client_id, row.old_pool_id, row.new_pool_id, row.old_mode, row.new_mode, SwitchPrices(),
                         warnings)  # the warnings the first attempt's audit event names
            _inferred_switch_done(client_id, agent, row, now, warnings)
            return agents.require(client_id, agent.agent_id)
        return None
    if before.active_commands == 0:
        return None
    for cmd in bootstrap.command_store().active_for_agent(agent.agent_id, 50):
        if cmd.command_type not in SWITCH_TYPES or cmd.status is not CommandStatus.EXECUTING \
                or not cmd.instance_id or cmd.instance_id == agent.instance_id:
            continue
        left = agents.get_instance(client_id, cmd.instance_id)  # closed by the registration that moved the agent
        if left is not None and left.agent_id == agent.agent_id and left.role == "primary" and not left.is_active:
            return _unreported_switch(client_id, dataclasses.replace(
                before, instance_id=left.instance_id, instance_type=left.instance_type, az=left.az,
                current_mode=left.mode, current_pool_id=left.pool_id), agent, now)
    return None


@bp.route("/api/agents/{agent_id}/termination", methods=["POST"], response="TerminationReply")
def termination(agent_id):
    """The agent's host is being terminated: agent offline, instance inactive, client notified. Idempotent: a
    re-sent report keeps the first termination time and notifies no one again (the audit log records each). The
    notification is keyed on the instance and the time the first report closed it (``termination_reported_at``),
    so a re-sent report writes it when the first one died between its transaction and the notification."""
    client_id, agent, body = agent_request(_request(), agent_id, TerminationRequest)
    instance_id = body.instance_id or agent.instance_id
    instance = agents.get_instance(client_id, instance_id) if instance_id else None
    owned = instance is not None and instance.agent_id == agent.agent_id
    if body.instance_id and not owned:
        raise NotFoundError("instance not found", field="instance_id")
    now = utcnow()
    closes = owned and instance.is_active
    news = (closes or instance.termination_reported_at is not None) if owned \
        else agent.status != AgentStatus.OFFLINE.value
    agents.mark_terminated(agent, instance_id if owned else None, now, closes=closes)
    if news:
        at = now if closes or not owned else instance.termination_reported_at
        activity.notify(client_id, "termination",
                        f"instance {instance_id} of {agent.logical_agent_id} is terminating", at,
                        severity="warning", agent_id=agent.agent_id,
                        once=f"termination:{instance_id}" if owned else None)
    # the message is ours: the agent's free-text reason goes in the metadata, never read as the audit log's words
    activity.record_event("agent_termination", f"{agent.logical_agent_id} reported instance {instance_id} terminating",
                          now, severity="warning", client_id=client_id, agent_id=agent.agent_id,
                          instance_id=instance_id,
                          metadata={"termination_time": iso(body.termination_time), "reason": body.reason})
    return ok({"success": True, "agent_id": agent.agent_id, "status": "offline",
               "warnings": noted(body.warnings, "termination report", now, client_id=client_id,
                                 agent_id=agent.agent_id, instance_id=instance_id)})


@bp.route("/api/agents/{agent_id}/instances-to-terminate", methods=["GET"], response="InstancesToTerminateReply")
def instances_to_terminate(agent_id):
    """Instances the agent should terminate itself: always none. The product terminates the standbys it launched
    and the instances its failovers replaced; a switch's old instance is terminated by the switching agent under
    auto-terminate and kept, the customer's, without it. It never asks an agent to terminate an instance. Served
    for the v4 variant ``agent-backend.py``, which polls it every minute (a 404 is logged as an error each time)
    and would terminate what it lists."""
    _, agent, _ = agent_request(_request(), agent_id)
    return ok({"instances": [], "auto_terminate_enabled": bool(agent.config.get("auto_terminate_enabled")),
               "terminate_wait_seconds": int(agent.config.get("terminate_wait_seconds") or 0)})


@bp.route("/api/agents/{agent_id}/cleanup-report", methods=["POST"], response="CleanupReportReply")
def cleanup_report(agent_id):
    """Log the agent's AMI/snapshot cleanup (legacy ``cleanup_logs``)."""
    client_id, agent, body = agent_request(_request(), agent_id, CleanupReportRequest)
    now = utcnow()
    failed = len(body.snapshots.failed) + len(body.amis.failed)
    activity.record_event(
        "cleanup_report", f"{agent.logical_agent_id} cleaned {len(body.snapshots.deleted)} snapshots "
        f"and {len(body.amis.deleted_amis)} AMIs", now, client_id=client_id,
        agent_id=agent.agent_id, severity="warning" if failed else "info",
        metadata=body.model_dump(mode="json"))
    return ok({"success": True, "deleted_snapshots": len(body.snapshots.deleted),
               "deleted_amis": len(body.amis.deleted_amis), "failed_count": failed,
               "warnings": noted(body.warnings, "cleanup report", now, client_id=client_id,
                                 agent_id=agent.agent_id)})
