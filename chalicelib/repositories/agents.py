"""Agents and their instances: registration, heartbeats, config, termination."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pynamodb.attributes import MapAttribute
from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from components.agent_identity import (
    AgentStatus,
    KnownAgent,
    Registration,
    RegistrationAction,
    RegistrationPlan,
    agent_id_for,
    plan_registration,
    registration_refusal,
)
from components.command_tracker.model import AgentTimings, timings_for_agent_version
from components.instance_types import allowed_types
from components.pool_id import make_pool_id
from components.sentinel import heartbeat_bucket

from chalicelib.errors import ConflictError, InvalidInputError, NotFoundError
from chalicelib.repositories.clients import ClientRecord
from chalicelib.repositories.dynamo import (
    cancellation_codes,
    condition_failed,
    delete_each,
    set_or_remove,
    transaction_connection,
)
from chalicelib.repositories import sparse_indexes
from chalicelib.repositories.paging import Page, decode_token, encode_token, read_page
from chalicelib.tables.agents import LIVE, AgentConfigMap, AgentTable
from chalicelib.tables.clients import ClientTable
from chalicelib.tables.instances import LIVE_INSTANCES, InstanceTable

CONFIG_FIELDS = tuple(AgentConfigMap.get_attributes())
LIVE_STATUSES = frozenset({AgentStatus.ONLINE.value, AgentStatus.DEGRADED.value})
GONE_STATUSES = (AgentStatus.DELETED.value, AgentStatus.TERMINATED.value)  # an agent that no longer runs
# After its switch report a legacy v4 agent posts the command's result, ends its threads (5 s each, 30 s per
# call) and sends its final heartbeat: a few minutes at most.
RETIRED_AGENT_STOPS_WITHIN = timedelta(minutes=10)
# A v4 agent heartbeats every 30 s: an agent on a left instance not heard from for four beats has stopped.
KEPT_AGENT_HEARD_WITHIN = timedelta(seconds=120)


@dataclass(frozen=True)
class AgentRecord:
    """An agent as the handlers see it."""

    client_id: str
    agent_id: str
    logical_agent_id: str
    status: str
    instance_id: str | None
    instance_type: str | None
    region: str | None
    az: str | None
    current_mode: str
    current_pool_id: str | None
    hostname: str | None
    agent_version: str | None
    last_heartbeat_at: datetime | None
    registered_at: datetime
    config: dict[str, Any] = field(default_factory=dict)
    config_version: int = 1
    instance_count: int = 1
    last_switch_at: datetime | None = None
    ami_id: str | None = None
    private_ip: str | None = None
    current_replica_id: str | None = None
    last_interruption_at: datetime | None = None
    interruption_count: int = 0
    last_pricing_at: datetime | None = None
    account_id: str | None = None
    credential_hash: str | None = field(default=None, repr=False)
    credential_instance_id: str | None = None
    retired_credential_hash: str | None = field(default=None, repr=False)
    retired_credential_instance_id: str | None = None
    by_retired_credential: bool = False  # authenticated by the retired credential (chalicelib.auth)
    client_suspended: bool = False
    active_commands: int | None = None  # pending + executing commands; None = not counted yet (read the queue)
    kept_agent_seen_at: datetime | None = None
    kept_agent_instance_id: str | None = None
    runs_commands: bool = True  # False: spot_agent.py's protocol, whose agent cannot run a command
    manual_replica_since: datetime | None = None  # when manual-replica mode was last turned on
    manual_replica_off_at: datetime | None = None  # when a config change last turned it off
    config_changed_version: int | None = None  # the client's last config change: its version and time
    config_changed_at: datetime | None = None
    last_force_switch_id: str | None = None  # the guard of force-switch enqueues (repositories/commands.py)
    registration_digest: str | None = None  # the last registration's request, answer and time (tables/agents.py)
    registration_action: str | None = None
    registration_at: datetime | None = None
    updated_at: datetime | None = None
    heartbeat_mode_disputed: str | None = None  # a contradicting heartbeat mode awaiting its confirmation
    deleted_at: datetime | None = None  # when a client's delete made it ``deleted``

    def repeats_registration(self, digest: str | None) -> str | None:
        """What the last registration answered when ``digest`` is its request again and nothing wrote the agent
        since, not even a heartbeat (its answer was lost: a retry, not a restart of a running agent); else None."""
        if not digest or digest != self.registration_digest or self.registration_at is None \
                or self.status != AgentStatus.ONLINE.value:
            return None
        unchanged = self.last_heartbeat_at == self.registration_at == self.updated_at
        return self.registration_action if unchanged else None

    def kept_agent_runs(self, now: datetime) -> bool:
        """An agent on an instance this agent left (kept running) was heard from lately: a poll that names no
        instance may be that agent's."""
        return self.kept_agent_seen_at is not None and now - self.kept_agent_seen_at <= KEPT_AGENT_HEARD_WITHIN

    @property
    def spot_pool_id(self) -> str | None:
        """The spot pool its primary may occupy: None only on on-demand (an on-demand instance shares no spot
        capacity: a standby or a return to spot may use its zone's pool). An agent of unknown mode (a legacy
        agent that never said) may be on spot: its pool is kept out of its replacements' and standbys' way."""
        return None if self.current_mode == "ondemand" else self.current_pool_id

    @property
    def runnable_types(self) -> tuple[str, ...]:
        """The instance types it may run on: its current one first, then its declared interchangeable ones."""
        return allowed_types(self.instance_type, self.config.get("allowed_instance_types"))

    @property
    def timings(self) -> AgentTimings:
        """What its kind of agent (by ``agent_version``: ours, legacy v4, v3.2) does and how long it takes."""
        return timings_for_agent_version(self.agent_version)

    @property
    def switch_types(self) -> tuple[str, ...]:
        """The instance types a switch of this agent may target: a legacy agent launches the type it runs on
        whatever the target pool's type (v4 takes only the zone from ``target_pool_id``), so only its own."""
        if self.timings.launches_pool_type:
            return self.runnable_types
        return self.runnable_types[:1]

    @property
    def manual_replica(self) -> bool:
        return bool(self.config.get("manual_replica_enabled"))

    @property
    def deleted(self) -> bool:
        return self.status in GONE_STATUSES


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, MapAttribute):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _record(row: AgentTable) -> AgentRecord:
    config = {name: _plain(getattr(row.config, name)) for name in CONFIG_FIELDS}
    return AgentRecord(
        client_id=row.client_id, agent_id=row.agent_id, logical_agent_id=row.logical_agent_id,
        status=row.status, instance_id=row.instance_id, instance_type=row.instance_type,
        region=row.region, az=row.az, current_mode=row.current_mode,
        current_pool_id=row.current_pool_id, hostname=row.hostname,
        agent_version=row.agent_version, last_heartbeat_at=row.last_heartbeat_at,
        registered_at=row.registered_at, config=config, config_version=int(row.config_version),
        instance_count=int(row.instance_count or 1), last_switch_at=row.last_switch_at,
        ami_id=row.ami_id, private_ip=row.private_ip, current_replica_id=row.current_replica_id,
        last_interruption_at=row.last_interruption_at, interruption_count=int(row.interruption_count or 0),
        last_pricing_at=row.last_pricing_at, account_id=row.account_id, credential_hash=row.credential_hash,
        credential_instance_id=row.credential_instance_id, retired_credential_hash=row.retired_credential_hash,
        retired_credential_instance_id=row.retired_credential_instance_id,
        client_suspended=bool(row.client_suspended),
        active_commands=None if row.active_commands is None else int(row.active_commands),
        kept_agent_seen_at=row.kept_agent_seen_at, kept_agent_instance_id=row.kept_agent_instance_id,
        runs_commands=row.runs_commands is not False, manual_replica_since=row.manual_replica_since,
        manual_replica_off_at=row.manual_replica_off_at,
        config_changed_version=None if row.config_changed_version is None else int(row.config_changed_version),
        config_changed_at=row.config_changed_at,
        last_force_switch_id=row.last_force_switch_id,
        registration_digest=row.registration_digest, registration_action=row.registration_action,
        registration_at=row.registration_at, updated_at=row.updated_at,
        heartbeat_mode_disputed=row.heartbeat_mode_disputed, deleted_at=row.deleted_at,
    )


def get(client_id: str, agent_id: str) -> AgentRecord | None:
    """The caller's agent, or None (another tenant's id is simply not in the caller's partition)."""
    try:
        return _record(AgentTable.get(client_id, agent_id, consistent_read=True))
    except AgentTable.DoesNotExist:
        return None


def get_many(client_id: str, agent_ids) -> dict[str, AgentRecord]:
    """The caller's agents of these ids that exist, by id: consistent reads by key, up to 100 per BatchGetItem (one
    request for a page of a listing, not one GetItem per agent on it)."""
    keys = [(client_id, agent_id) for agent_id in dict.fromkeys(agent_ids)]
    if not keys:
        return {}
    return {row.agent_id: _record(row) for row in AgentTable.batch_get(keys, consistent_read=True)}


def require(client_id: str, agent_id: str, *, allow_deleted: bool = False) -> AgentRecord:
    """The caller's agent, or 404 (also for deleted agents unless allowed)."""
    agent = get(client_id, agent_id)
    if agent is None or (agent.deleted and not allow_deleted):
        raise NotFoundError("agent not found", field="agent_id")
    return agent


def _default_config(client: ClientRecord, types: dict[str, Any] | None = None) -> AgentConfigMap:
    return AgentConfigMap(
        auto_switch_enabled=client.default_auto_switch,
        auto_terminate_enabled=client.default_auto_terminate,
        terminate_wait_seconds=client.default_terminate_wait_seconds,
        **{k: v for k, v in (types or {}).items() if v is not None},
    )


def _config_actions(changes: dict[str, Any]) -> list:
    """Set each config field (None removes it)."""
    return [getattr(AgentTable.config, name).remove() if value is None
            else getattr(AgentTable.config, name).set(value) for name, value in changes.items()]


class AdmissionRaced(ConflictError):
    """The client's agent count changed since it was checked (``quotas.check_agents``): check it again."""


def _admission(client_id: str) -> int:
    try:
        return int(ClientTable.get(client_id, consistent_read=True).agent_admissions or 0)
    except ClientTable.DoesNotExist:
        return -1


def _pool_of(reg: Registration) -> str | None:
    try:
        return make_pool_id(reg.instance_type, reg.az)
    except Exception:  # noqa: BLE001 - a malformed type/az was already rejected by the schema
        return None


def _instance_row(reg: Registration, agent_id: str, now: datetime,
                  proven_account_id: str | None = None) -> InstanceTable:
    return InstanceTable(
        reg.instance_id, client_id=reg.client_id, agent_id=agent_id,
        instance_type=reg.instance_type, region=reg.region, az=reg.az, ami_id=reg.ami_id,
        mode=reg.mode.value, pool_id=_pool_of(reg), role="primary", is_active=True,
        installed_at=now, updated_at=now, proven_account_id=proven_account_id,
    )


def register(client: ClientRecord, reg: Registration, now: datetime, *,
             types: dict[str, Any] | None = None,
             identity: dict[str, str] | None = None,
             runs_commands: bool = True, admission: int | None = None,
             digest: str | None = None) -> tuple[AgentRecord, RegistrationPlan]:
    """Create, revive, migrate or refresh the agent of (client, logical id) in one transaction.

    The instance row is only written if it is new or already this client's: an instance id claimed by
    another tenant answers 409 and writes nothing. Nor may the agent take back an instance the product
    replaced, or claim its own standby (``registration_refusal``); the same rule is the transaction's
    condition, so a hand-over racing this call cannot slip between the check and the write.

    ``types`` (config fields of an instance-type declaration, ``catalogue.type_config``) are written with
    the registration and bump ``config_version``; None leaves a stored declaration as it is (a legacy
    agent's re-registration declares nothing and changes nothing).

    ``identity`` (``account_id`` and ``credential_hash`` of a verified registration) replaces the stored
    ones: the previous credential stops working. None (a legacy registration) leaves them as they are.

    ``runs_commands`` False records an agent that cannot run commands (spot_agent.py); each registration says
    it again (an agent that registers in another protocol under the same logical id runs them).

    ``admission`` (``quotas.check_agents``'s answer) is the ceiling of the client row's ``agent_admissions`` for
    this registration (its value read before the agent quota was counted, plus the room the count left): a
    registration that adds an agent (new or revived) bumps it on the condition that it is not past the ceiling,
    else ``AdmissionRaced`` (so is one adding an agent the caller did not count: check again).

    ``digest`` (of the request) is stored with the answer's action: the same request again before the agent's next
    heartbeat answers that action (a retried "created" stays "created", not "refreshed").
    """
    known_row = _refuse_known_instance(client, reg)
    # The product's launch of the instance (a failover's replacement, a promoted standby: the row names its replica)
    # is a fact of the instance, not of the agent that had it: a row written afresh for another agent (or for this
    # one after the row closed) keeps it. Without it, a product-launched instance an agent registered on lost the
    # mark: once that agent was deleted, the data cleaner removed its released row and the cleanup's orphan pass
    # terminated the client's running workload (security walk 21).
    launched_for = known_row.replica_id if known_row is not None else None
    for attempt in range(3):
        current = get(client.client_id, _agent_id(client, reg))
        if admission is None and (current is None or current.deleted):
            raise AdmissionRaced("the agent was deleted meanwhile: its registration counts toward the quota again")
        known = None if current is None else KnownAgent(
            agent_id=current.agent_id, status=AgentStatus(current.status),
            instance_id=current.instance_id, instance_count=current.instance_count)
        plan = plan_registration(known, reg)
        repeated = current.repeats_registration(digest) if current is not None else None
        if repeated and plan.action is RegistrationAction.REFRESHED:
            plan = dataclasses.replace(plan, action=RegistrationAction(repeated))
        try:
            _write_registration(client, reg, plan, current, now, types, identity, runs_commands, admission, digest,
                                launched_for=launched_for, known_row=known_row)
        except TransactWriteError as exc:
            codes = cancellation_codes(exc)
            # pynamodb sends a transaction's puts before its updates: the instance row's put follows a new
            # agent's put, and comes first before an existing agent's update.
            instance_at = 0 if current is not None else 1
            if len(codes) > instance_at and codes[instance_at] == "ConditionalCheckFailed":
                _refuse_known_instance(client, reg)
                raise ConflictError("instance_id belongs to another agent", field="instance_id",
                                    code="instance_conflict") from exc
            if admission is not None and _admission(client.client_id) > admission:
                raise AdmissionRaced("another registration changed the client's agents meanwhile") from exc
            if attempt == 2:
                raise ConflictError("agent registration raced with another call, retry") from exc
            continue
        return require(client.client_id, plan.agent_id), plan
    raise AssertionError("unreachable")


def _agent_id(client: ClientRecord, reg: Registration) -> str:
    return agent_id_for(client.client_id, reg.logical_agent_id)


def _refuse_known_instance(client: ClientRecord, reg: Registration) -> InstanceTable | None:
    """409 when the registration may not take the instance (``registration_refusal``); else the client's own row of
    it as read (None: no row, or another client's)."""
    row = instance_row(reg.instance_id)
    if row is None or row.client_id != client.client_id:
        return None
    agent_id = _agent_id(client, reg)
    if row.agent_id == agent_id and row.released_at is not None and not row.is_active \
            and _revives_on_released(get(client.client_id, agent_id), reg.instance_id, row):
        return row
    left = False
    if row.agent_id == agent_id and row.is_active and row.role == "primary":
        agent = get(client.client_id, agent_id)
        left = agent is not None and agent.instance_id != reg.instance_id and _left_by_switch(agent, row)
    refusal = registration_refusal(agent_id, instance_agent_id=row.agent_id, instance_active=row.is_active,
                                   instance_role=row.role, left_by_switch=left)
    if refusal:
        raise ConflictError(refusal[1], field="instance_id", code=refusal[0])
    return row


def _revives_on_released(agent: AgentRecord | None, instance_id: str, row: InstanceTable | None = None) -> bool:
    """A deleted agent registering again on the instance it ran on when it was deleted: its delete closed that row
    and released it to the client (``soft_delete``, ``released_at``), but nothing replaced the instance. The agent
    there restarting (systemd after a crash, a reboot) is the legacy agent coming back, which the legacy server
    revived under the same id; a 409 ``instance_replaced`` made it exit on every restart, for good. The kept
    instances its switches left (also released by the delete) are still refused: the agent had left them.

    The agent removed by the data cleaner past its retention (``agent`` None) leaves ``row`` only when the product
    launched the instance (``_released_launch``: kept so that the cleanup never takes it for an orphan): the row its
    delete closed as the agent's host (``terminated_at`` and ``released_at`` both the delete's time; a kept instance
    has no termination time) is registered again as a new agent under that id, as an instance whose row went with
    the agent is (before: 409 ``instance_replaced`` at every restart, for good)."""
    if agent is None:
        return row is not None and row.released_at is not None and row.terminated_at == row.released_at
    return agent.deleted and agent.instance_id == instance_id


def _instance_condition(client: ClientRecord, agent_id: str, current: AgentRecord | None, instance_id: str,
                        proven: bool = False, known_row: InstanceTable | None = None):
    """New, or this client's and not one of this agent's replaced instances or standbys, nor (for another
    instance than the agent's own) one it left by its last switch (``_left_by_switch``): the refusal
    ``_refuse_known_instance`` answers, held by the write itself, so a switch committing after that check
    cannot let the old instance take the agent back (the agent's own condition pins the instance read).
    A ``proven`` registration (a signed identity document) may also take the row of another client whose claim
    was never proven (``unproven_claim``)."""
    replaced = (InstanceTable.is_active == False) | (InstanceTable.role == "standby")  # noqa: E712
    own_row = known_row if known_row is not None and known_row.agent_id == agent_id else None
    if _revives_on_released(current, instance_id, own_row):  # its own host, released by its delete: not replaced
        replaced = (InstanceTable.role == "standby") | ((InstanceTable.is_active == False)  # noqa: E712
                                                        & InstanceTable.released_at.does_not_exist())
    if current is not None and current.last_switch_at is not None and current.instance_id != instance_id:
        replaced |= InstanceTable.installed_at < current.last_switch_at
    own_retired = (InstanceTable.agent_id == agent_id) & replaced
    condition = InstanceTable.instance_id.does_not_exist() | ((InstanceTable.client_id == client.client_id)
                                                              & ~own_retired)
    if proven:
        condition |= (InstanceTable.client_id != client.client_id) & InstanceTable.proven_account_id.does_not_exist()
    return condition


def unproven_claim(client: ClientRecord, instance_id: str) -> InstanceTable | None:
    """Another client's row of the instance when nothing proved that client's claim (a legacy registration, a
    legacy agent's switch report or standby): a registration with the signed identity document of an account
    bound to ``client`` takes it over, so a legacy-mode tenant that names an instance id first cannot lock its
    owner out. None when there is no such row."""
    row = instance_row(instance_id)
    if row is None or row.client_id == client.client_id or row.proven_account_id:
        return None
    return row


def _write_registration(client: ClientRecord, reg: Registration, plan: RegistrationPlan,
                        current: AgentRecord | None, now: datetime, types: dict[str, Any] | None = None,
                        identity: dict[str, str] | None = None, runs_commands: bool = True,
                        admission: int | None = None, digest: str | None = None, *,
                        launched_for: str | None = None, known_row: InstanceTable | None = None) -> None:
    pool_id = _pool_of(reg)
    fields = dict(
        logical_agent_id=reg.logical_agent_id, status=plan.status.value, liveness=LIVE,
        hostname=reg.hostname, instance_id=reg.instance_id, instance_type=reg.instance_type,
        region=reg.region, az=reg.az, ami_id=reg.ami_id, private_ip=reg.private_ip,
        public_ip=reg.public_ip, current_mode=reg.mode.value, current_pool_id=pool_id,
        agent_version=reg.agent_version, instance_count=plan.instance_count, updated_at=now,
        last_heartbeat_at=now, heartbeat_bucket=heartbeat_bucket(now),
        client_suspended=None,  # the caller's client token proved it active
        runs_commands=None if runs_commands else False,
        registration_digest=digest, registration_action=plan.action.value if digest else None,
        registration_at=now if digest else None,
        heartbeat_mode_disputed=None,  # the registration says the mode anew
    )
    if identity:
        fields.update(account_id=identity["account_id"], credential_hash=identity["credential_hash"],
                      credential_instance_id=reg.instance_id)
        if current is not None and current.credential_hash and current.credential_instance_id \
                and current.credential_instance_id != reg.instance_id:
            fields.update(retired_credential_hash=current.credential_hash,
                          retired_credential_instance_id=current.credential_instance_id)
    instance_condition = _instance_condition(client, plan.agent_id, current, reg.instance_id, proven=bool(identity),
                                             known_row=known_row)
    previous = _own_previous_instance(client, plan, reg.instance_id)
    instance = _instance_row(reg, plan.agent_id, now, (identity or {}).get("account_id"))
    ran = _running_row(client, plan.agent_id, current, reg.instance_id)
    if ran is not None:  # a restart on the agent's running primary keeps when it started and what its switch said
        # (and, for a promoted standby, its replica and EC2's lifecycle: its baseline counts from the promotion)
        for name in ("installed_at", "last_switch_at", "spot_price", "ondemand_price", "replica_id", "lifecycle"):
            setattr(instance, name, getattr(ran, name))
    elif launched_for:  # the client's row of an instance the product launched: still ours (``register``)
        instance.replica_id = launched_for
    with TransactWrite(connection=transaction_connection()) as tx:
        if current is None:
            row = AgentTable(client.client_id, plan.agent_id, registered_at=now,
                             config=_default_config(client, types), config_version=1, active_commands=0, **fields)
            tx.save(row, condition=AgentTable.agent_id.does_not_exist())
        else:
            actions = [set_or_remove(getattr(AgentTable, k), v) for k, v in fields.items()]
            actions.append(AgentTable.deleted_at.remove())
            if plan.reset_config:
                actions += [AgentTable.config.set(_default_config(client, types)),
                            AgentTable.config_version.add(1)]
            elif types:
                actions += _config_actions(types) + [AgentTable.config_version.add(1)]
            tx.update(AgentTable(client.client_id, plan.agent_id), actions=actions,
                      condition=(AgentTable.status == current.status)
                      & _same(AgentTable.instance_id, current.instance_id))
        tx.save(instance, condition=instance_condition)
        if admission is not None:  # the agent quota's guard (quotas.check_agents: the ceiling of admissions)
            within = (ClientTable.agent_admissions <= admission) | ClientTable.agent_admissions.does_not_exist()
            tx.update(ClientTable(client.client_id), actions=[ClientTable.agent_admissions.add(1)],
                      condition=ClientTable.client_id.exists() & within)
        if previous is not None:  # still this agent's (read above): a race that gives it away fails the write
            tx.update(InstanceTable(previous),
                      actions=[*InstanceTable.close_actions(), InstanceTable.updated_at.set(now),
                               InstanceTable.terminated_at.set(now)],
                      condition=(InstanceTable.client_id == client.client_id)
                      & (InstanceTable.agent_id == plan.agent_id))


def _running_row(client: ClientRecord, agent_id: str, current: AgentRecord | None,
                 instance_id: str) -> InstanceTable | None:
    """The instance row of the agent's active primary when the registration names that instance (a restart of its
    agent, or the repeat of a registration that moved it there): its run so far, which the roll-ups integrate from
    ``installed_at``, and the switch that started it are kept. None otherwise (the row is written afresh)."""
    if current is None or current.instance_id != instance_id:
        return None
    row = instance_row(instance_id)
    if row is None or row.client_id != client.client_id or row.agent_id != agent_id or not row.is_active \
            or row.role != "primary":
        return None
    return row


def _own_previous_instance(client: ClientRecord, plan: RegistrationPlan, instance_id: str) -> str | None:
    """The instance the agent leaves, when its row still names this agent: it is marked inactive with the
    registration. Not when another agent of the client registered on it since (it is that agent's live
    instance now), nor when its row is gone (the data cleaner removed it): nothing to close then."""
    previous = plan.previous_instance_id
    if not previous or previous == instance_id:
        return None
    row = instance_row(previous)
    if row is None or row.client_id != client.client_id or row.agent_id != plan.agent_id:
        return None
    return previous


def _same(attribute, value):
    return attribute.does_not_exist() if value is None else attribute == value


def heartbeat(agent: AgentRecord, *, status: str, instance_id: str | None, instance_type: str | None,
              mode: str | None, az: str | None, now: datetime) -> AgentRecord:
    """Record a heartbeat; patch what the agent says about its instance.

    An instance the product already replaced (inactive, a standby, or another agent's) never moves the
    agent back: a heartbeat in flight from the old instance while a failover promotes the new one
    must not undo the promotion. The instance fields are written only if the agent is still on the
    instance this call read (a hand-over committing meanwhile wins; the heartbeat is then recorded
    against the fresh row).
    """
    for _ in range(3):
        try:
            return _write_heartbeat(agent, status=status, instance_id=instance_id, instance_type=instance_type,
                                    mode=mode, az=az, now=now)
        except _InstanceMoved:
            agent = require(agent.client_id, agent.agent_id)
    raise ConflictError("the agent's instance is changing, retry")


class _InstanceMoved(Exception):
    """The agent's instance changed between reading the row and writing the heartbeat."""


def _write_heartbeat(agent: AgentRecord, *, status: str, instance_id: str | None, instance_type: str | None,
                     mode: str | None, az: str | None, now: datetime) -> AgentRecord:
    if _retired_agents_last_word(agent, status=status, instance_id=instance_id, now=now):
        return agent
    if instance_id and instance_id != agent.instance_id:
        row = instance_row(instance_id)
        if row is None and agent.account_id is not None:
            # A verified agent's instances are the ones it proved (registration) or the product recorded for it
            # (a checked switch report, a promotion): naming another must not make it the agent's, whose
            # instance replacements are copied from. A legacy agent is taken on trust, as its registration is.
            raise NotFoundError("instance_id is not an instance of this agent", field="instance_id")
        if row is not None and (row.agent_id != agent.agent_id or not row.is_active or row.role != "primary"
                                or _left_by_switch(agent, row)):
            # The agent left that instance: what runs there no longer speaks for the agent (a legacy
            # agent's final "offline" heartbeat after its switch must not flap the agent offline).
            if row.agent_id == agent.agent_id and status != AgentStatus.OFFLINE.value:
                return _kept_agent_heard(agent, instance_id, now)
            return agent
    _same_placement(agent, instance_id or agent.instance_id, instance_type=instance_type, az=az)
    mode, disputed = _heartbeat_mode(agent, instance_id, mode)
    actions = [AgentTable.status.set(status), *_heartbeat_actions(status, now)]
    patch = [(attribute, value) for attribute, value in ((AgentTable.instance_id, instance_id),
                                                         (AgentTable.instance_type, instance_type),
                                                         (AgentTable.current_mode, mode), (AgentTable.az, az))
             if value]
    actions += [attribute.set(value) for attribute, value in patch]
    if disputed is not None:
        actions.append(set_or_remove(AgentTable.heartbeat_mode_disputed, disputed or None))
    if instance_type and az:
        actions.append(AgentTable.current_pool_id.set(make_pool_id(instance_type, az)))
    condition = AgentTable.agent_id.exists() & ~AgentTable.status.is_in(*GONE_STATUSES)
    if patch:
        condition &= _same(AgentTable.instance_id, agent.instance_id)
    row = AgentTable(agent.client_id, agent.agent_id)
    try:
        row.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if condition_failed(exc):
            current = get(agent.client_id, agent.agent_id)
            if patch and current is not None and current.instance_id != agent.instance_id:
                raise _InstanceMoved from exc
            raise NotFoundError("agent not found", field="agent_id") from exc
        raise
    return _record(row)


def _heartbeat_mode(agent: AgentRecord, instance_id: str | None, mode: str | None) -> tuple[str | None, str | None]:
    """The mode a heartbeat may write, and the dispute to record ("" clears it, None leaves it).

    An instance's lifecycle never changes, and a v4 agent reads it from IMDS at registration and at each beat (both
    unknown: it says ``ondemand``), so either can be a hiccup. A heartbeat of the instance the agent is on that
    contradicts the known mode is not written at once: one beat must not flip what decisions, savings and placement
    read. The next heartbeat saying the same contradicting mode confirms it, and it is written (a registration's
    hiccup is corrected within two beats); a beat agreeing with the known mode ends the dispute. EC2's lifecycle of an
    instance the product launched is never overridden. The disagreement is logged. A move to another instance, or
    an unknown mode, takes the heartbeat's word as before."""
    if not mode or mode == "unknown" or agent.current_mode in (None, "", "unknown", mode):
        return mode, ("" if agent.heartbeat_mode_disputed and mode == agent.current_mode else None)
    if instance_id and instance_id != agent.instance_id:
        return mode, ("" if agent.heartbeat_mode_disputed else None)
    from chalicelib.observability import logger  # imported here, as chalicelib/decisions.py does

    row = instance_row(agent.instance_id) if agent.instance_id else None
    launched = row is not None and row.client_id == agent.client_id and bool(row.lifecycle)
    confirmed = not launched and agent.heartbeat_mode_disputed == mode
    logger.warning("heartbeat mode disagrees with the instance's recorded lifecycle: "
                   + ("confirmed by a second beat, written" if confirmed else "kept"),
                   extra={"agent_id": agent.agent_id, "instance_id": agent.instance_id, "heartbeat_mode": mode,
                          "recorded_mode": agent.current_mode, "ec2_lifecycle": launched})
    if confirmed:
        return mode, ""
    return None, (None if launched or agent.heartbeat_mode_disputed == mode else mode)


def _same_placement(agent: AgentRecord, instance_id: str | None, *, instance_type: str | None,
                    az: str | None) -> None:
    """409 ``placement_mismatch`` (nothing written) when a verified agent's heartbeat gives its instance another
    type or zone than the instances table records for it: what its signed identity document proved, or what the
    product launched or recorded after checking it. An instance never changes zone, and a new type comes with a
    restart whose registration proves it; the agent row's type, zone and pool are what its standbys, replacements,
    decisions and the fleet's exposure counts read. A legacy agent's word is all there is (taken as before)."""
    if agent.account_id is None or not instance_id:
        return
    if (not instance_type or instance_type == agent.instance_type) and (not az or az == agent.az) \
            and instance_id == agent.instance_id:
        return  # restates what the row holds: nothing to check
    row = instance_row(instance_id)
    if row is None:
        return
    for name, said, known in (("instance_type", instance_type, row.instance_type), ("az", az, row.az)):
        if said and known and said != known:
            raise ConflictError(f"{name} {said} is not the {name} of instance {instance_id} ({known}): a new type "
                                "is proven by registering again", field=name, code="placement_mismatch")


def _kept_agent_heard(agent: AgentRecord, instance_id: str, now: datetime) -> AgentRecord:
    """Remember that an agent still runs on ``instance_id``, an instance this agent left (``kept_agent_runs``)."""
    row = AgentTable(agent.client_id, agent.agent_id)
    try:
        row.update(actions=[AgentTable.kept_agent_seen_at.set(now), AgentTable.kept_agent_instance_id.set(instance_id)],
                   condition=AgentTable.agent_id.exists())
    except UpdateError as exc:
        if condition_failed(exc):
            raise NotFoundError("agent not found", field="agent_id") from exc
        raise
    return _record(row)


def _left_by_switch(agent: AgentRecord, row: InstanceTable) -> bool:
    """The instance was the agent's before its last switch (or promotion): under auto-terminate off it stays
    active, and a v4 agent on it (terminate wait 0) keeps running and heartbeating it, but it is no longer the
    agent's instance. An instance registered after that switch is installed later than it."""
    return agent.last_switch_at is not None and row.installed_at is not None and row.installed_at < agent.last_switch_at


def _retired_agents_last_word(agent: AgentRecord, *, status: str, instance_id: str | None, now: datetime) -> bool:
    """True for an ``offline`` heartbeat that names no instance shortly after a switch: the v4 agent sends its
    final heartbeat bare (``{"status": "offline", "monitored_instances": []}``) when it stops, and after a
    switch that terminates its host it stops right after its report, while the new instance's agent runs on.
    Also while an agent on an instance this agent left is still heard (``kept_agent_runs``): a switch recorded
    at the replacement's registration (``_unreported_switch``) leaves the old agent a terminate wait and its
    waiter to run, so its last word can come long after the switch. A current agent that really stops in that
    window is marked offline by the health monitor (its heartbeats stop)."""
    return (status == AgentStatus.OFFLINE.value and not instance_id and agent.status in LIVE_STATUSES
            and agent.last_switch_at is not None
            and (now - agent.last_switch_at <= RETIRED_AGENT_STOPS_WITHIN or agent.kept_agent_runs(now)))


def _heartbeat_actions(status: str, now: datetime) -> list:
    """What every heartbeat writes: its time, and the live-agents index keys. ``liveness`` and the heartbeat
    bucket keep their values on a routine heartbeat, and DynamoDB writes an index only when a key or projected
    attribute changes: the indexes are written when the status leaves or enters online/degraded, or once per
    ``HEARTBEAT_BUCKET_S``, never per heartbeat (neither index projects the heartbeat time or ``updated_at``)."""
    return [AgentTable.last_heartbeat_at.set(now), AgentTable.heartbeat_bucket.set(heartbeat_bucket(now)),
            AgentTable.updated_at.set(now),
            AgentTable.liveness.set(LIVE) if status in LIVE_STATUSES else AgentTable.liveness.remove()]


# --- the request fast paths (chalicelib/api/agents.py): one conditional write instead of read + write ------

def credential_condition(credential_hash: str | None):
    """The row's agent credential is ``credential_hash`` and its client is not suspended (None: no condition
    beyond the row existing, for a caller the client token's gate already admitted)."""
    if credential_hash is None:
        return AgentTable.agent_id.exists()
    return (AgentTable.credential_hash == credential_hash) & (
        AgentTable.client_suspended.does_not_exist() | (AgentTable.client_suspended == False))  # noqa: E712


def idle_condition():
    """Not deleted and nothing to deliver: no active command, or commands disabled."""
    return ~AgentTable.status.is_in(*GONE_STATUSES) & (
        (AgentTable.active_commands == 0) | (AgentTable.config.enabled == False))  # noqa: E712


def lists_commands_condition():
    """The agent row of a v3.x agent (``AgentTimings.lists_commands``, by ``agent_version`` as
    ``timings_for_agent_version`` reads it), which is answered its pending commands as a bare list."""
    return AgentTable.agent_version.startswith("3") | AgentTable.agent_version.startswith("v3")


def check_in(tx, client_id: str, agent_id: str, condition) -> None:
    """Add a condition check of the agent row to a TransactWrite."""
    tx.condition_check(AgentTable, client_id, agent_id, condition=condition)


def quick_heartbeat(client_id: str, agent_id: str, *, status: str, instance_id: str | None,
                    instance_type: str | None, mode: str | None, az: str | None, now: datetime,
                    credential_hash: str | None = None) -> AgentRecord | None:
    """Record a heartbeat that changes nothing but its time: one conditional UpdateItem returning the row.

    The condition is that the agent exists under this client (the key), is not deleted (its status is the
    heartbeat's own, which is never deleted/terminated), holds the credential (when given) and already has
    every instance field the heartbeat states. None when it does not hold: a status change, an instance
    move, an unknown, deleted or foreign agent, a bad credential all take ``heartbeat`` (read, then write),
    which answers each as before."""
    condition = (AgentTable.status == status) & credential_condition(credential_hash)
    for attribute, value in ((AgentTable.instance_id, instance_id), (AgentTable.instance_type, instance_type),
                             (AgentTable.current_mode, mode), (AgentTable.az, az)):
        if value:
            condition &= attribute == value
    actions = _heartbeat_actions(status, now)
    if mode:  # a beat agreeing with the recorded mode ends a dispute of it (``_heartbeat_mode``)
        actions.append(AgentTable.heartbeat_mode_disputed.remove())
    row = AgentTable(client_id, agent_id)
    try:
        row.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if condition_failed(exc):
            return None
        raise
    return _record(row)


def start_counting_commands(agent: AgentRecord) -> None:
    """An agent row from before the command counter whose queue was just read empty: its counter starts at
    0, unless a command was enqueued meanwhile (an enqueue sets it: the condition fails)."""
    try:
        AgentTable(agent.client_id, agent.agent_id).update(
            actions=[AgentTable.active_commands.set(0)],
            condition=AgentTable.agent_id.exists() & AgentTable.active_commands.does_not_exist())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise


def touch_pricing(agent: AgentRecord, now: datetime) -> None:
    """Remember when the agent last reported prices (health scoring). 404 when the agent row is gone since the
    report read it (its client deleted meanwhile): the conditional write failing is that answer, never a 500."""
    try:
        AgentTable(agent.client_id, agent.agent_id).update(
            actions=[AgentTable.last_pricing_at.set(now)], condition=AgentTable.agent_id.exists())
    except UpdateError as exc:
        if condition_failed(exc):
            raise NotFoundError("agent not found", field="agent_id") from exc
        raise


def known_mode(client_id: str, instance_id: str) -> str | None:
    """The mode recorded for this client's instance (EC2's lifecycle when the product launched it), if any."""
    row = instance_row(instance_id)
    return (row.lifecycle or row.mode) if row is not None and row.client_id == client_id else None


def learn_mode(agent: AgentRecord, instance_id: str | None, mode: str, now: datetime) -> bool:
    """An agent whose mode is unknown (the v3.2 agent registers none, and its heartbeats carry none) takes the
    mode its agent reports for the instance it is on (v3.2's pricing report): the agent row and the instance
    row, each only while still unknown and still that instance. False when nothing was learnt."""
    if agent.current_mode != "unknown" or mode == "unknown" or not instance_id or instance_id != agent.instance_id:
        return False
    try:
        AgentTable(agent.client_id, agent.agent_id).update(
            actions=[AgentTable.current_mode.set(mode), AgentTable.updated_at.set(now)],
            condition=(AgentTable.current_mode == "unknown") & (AgentTable.instance_id == instance_id))
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    try:
        InstanceTable(instance_id).update(
            actions=[InstanceTable.mode.set(mode), InstanceTable.updated_at.set(now)],
            condition=(InstanceTable.client_id == agent.client_id) & (InstanceTable.agent_id == agent.agent_id)
            & (InstanceTable.mode == "unknown"))
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
    return True


def mark_terminated(agent: AgentRecord, instance_id: str | None, now: datetime, *, closes: bool = False) -> None:
    """The agent's host is going away: agent offline and (if given) its instance inactive, atomically. The
    instance keeps the time of its first termination report (``if_not_exists``): a re-sent report (an agent's
    retry, or a replay days later) must not move the end of the instance's run, which its savings integrate.
    ``closes``: the report closes an active instance, whose ``termination_reported_at`` is set to ``now``.
    An agent deleted since it was read stays deleted (404, nothing written): the report must not write it back
    ``offline``, which would list it again and keep it from the data cleaner. The agent goes offline only while it
    is on the instance that goes (the one it was read on): a report of an instance it left — a switch or a
    failover's promotion moved it, before the report or while the report ran — closes that instance and leaves the
    agent, which runs on its new host, as it is (as a left instance's final ``offline`` heartbeat does). An agent on
    no instance at all (none recorded) runs on no other host: it goes offline, as the legacy server marked every
    reporting agent."""
    for attempt in range(2):
        own_host = instance_id is None or agent.instance_id is None or instance_id == agent.instance_id
        try:
            _write_terminated(agent, instance_id, now, closes=closes, own_host=own_host)
            return
        except TransactWriteError as exc:
            if cancellation_codes(exc)[:1] != ["ConditionalCheckFailed"]:
                raise
            current = get(agent.client_id, agent.agent_id)
            if current is None or current.deleted:
                raise NotFoundError("agent not found", field="agent_id") from exc
            if attempt or not own_host or current.instance_id == agent.instance_id:
                raise
            if instance_id is None:
                return  # the host it was read on is no longer the agent's: nothing of the agent goes
            agent = current  # moved meanwhile: the instance reported is one it left


def _write_terminated(agent: AgentRecord, instance_id: str | None, now: datetime, *, closes: bool,
                      own_host: bool) -> None:
    reported = [InstanceTable.termination_reported_at.set(now)] if closes else []
    live = AgentTable.agent_id.exists() & ~AgentTable.status.is_in(*GONE_STATUSES)
    with TransactWrite(connection=transaction_connection()) as tx:
        if own_host:
            tx.update(AgentTable(agent.client_id, agent.agent_id),
                      actions=[AgentTable.status.set(AgentStatus.OFFLINE.value),
                               AgentTable.liveness.remove(), AgentTable.updated_at.set(now)],
                      condition=live & _same(AgentTable.instance_id, agent.instance_id))
        else:
            tx.condition_check(AgentTable, agent.client_id, agent.agent_id, condition=live)
        if instance_id:
            tx.update(InstanceTable(instance_id),
                      actions=[*InstanceTable.close_actions(),
                               InstanceTable.terminated_at.set(InstanceTable.terminated_at | now),
                               InstanceTable.updated_at.set(now), *reported],
                      condition=(InstanceTable.client_id == agent.client_id)
                      & (InstanceTable.agent_id == agent.agent_id))


def update_config(agent: AgentRecord, changes: dict[str, Any], now: datetime, *,
                  client_change: bool = False) -> AgentRecord:
    """Set config fields (None clears) and bump ``config_version``, only if nobody changed it meanwhile.

    409 ``config_conflict`` on a lost race; 404 when the agent was deleted meanwhile. Changes the config already
    holds (a retried request) write nothing and bump nothing: a bump tells the agent its config changed.
    ``client_change`` (a client's config route): the new version and ``now`` are written with it
    (``config_changed_version``, ``config_changed_at``), so a repeat can finish what the change left undone.
    """
    if not agent.deleted and all(_plain(agent.config.get(k)) == _plain(v) for k, v in changes.items()):
        return agent
    actions = _config_actions(changes) + [AgentTable.config_version.add(1), AgentTable.updated_at.set(now)]
    if client_change:  # the condition below makes the new version this one's plus one
        actions += [AgentTable.config_changed_version.set(agent.config_version + 1),
                    AgentTable.config_changed_at.set(now)]
    if "manual_replica_enabled" in changes and bool(changes["manual_replica_enabled"]) != agent.manual_replica:
        actions += [AgentTable.manual_replica_since.set(now)] if changes["manual_replica_enabled"] \
            else [AgentTable.manual_replica_since.remove(), AgentTable.manual_replica_off_at.set(now)]
    condition = ((AgentTable.config_version == agent.config_version)
                 & ~AgentTable.status.is_in(*GONE_STATUSES))
    try:
        AgentTable(agent.client_id, agent.agent_id).update(actions=actions, condition=condition)
    except UpdateError as exc:
        if condition_failed(exc):
            require(agent.client_id, agent.agent_id)
            raise ConflictError("the agent's configuration changed concurrently, retry", field="config_version",
                                code="config_conflict") from exc
        raise
    return require(agent.client_id, agent.agent_id)


def instance_row(instance_id: str) -> InstanceTable | None:
    """The instance row of any tenant (callers compare ``client_id``/``agent_id`` before using it)."""
    try:
        return InstanceTable.get(instance_id, consistent_read=True)
    except InstanceTable.DoesNotExist:
        return None


def close_kept_instances(client_id: str, agent_id: str, current_instance_id: str, keep: int,
                         now: datetime) -> list[str]:
    """Bound the instances an agent's switches left running (auto-terminate off: each old primary stays active).
    Beyond the newest ``keep`` of them (the client's instance quota), the oldest are closed: inactive from now, no
    termination time claimed (the roll-ups count an inactive row without one up to its last change). Without
    this, a client reporting switches to made-up instances (a legacy report is taken on trust) grows its
    active rows, and every hour's savings roll-up, without bound. Returns the ids closed."""
    left = [row for row in InstanceTable.by_agent.query(
        agent_id, scan_index_forward=False,
        filter_condition=(InstanceTable.client_id == client_id) & (InstanceTable.role == "primary")
        & (InstanceTable.is_active == True))  # noqa: E712
        if row.instance_id != current_instance_id]
    closed = []
    for row in left[max(keep, 0):]:
        try:
            row.update(actions=[*InstanceTable.close_actions(), InstanceTable.updated_at.set(now)],
                       condition=(InstanceTable.client_id == client_id) & (InstanceTable.agent_id == agent_id)
                       & (InstanceTable.is_active == True))  # noqa: E712
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            continue  # closed (or re-registered) meanwhile
        closed.append(row.instance_id)
    return closed


def get_instance(client_id: str, instance_id: str) -> InstanceTable | None:
    """An instance row if it belongs to the client (another tenant's instance is 'not found')."""
    try:
        row = InstanceTable.get(instance_id, consistent_read=True)
    except InstanceTable.DoesNotExist:
        return None
    return row if row.client_id == client_id else None


def silent_live_agents(cutoff: datetime):
    """Online/degraded agents whose last heartbeat is older than ``cutoff``, exactly.

    The sparse live index gives the keys of every live agent whose heartbeat bucket is at or before
    ``cutoff``'s (a heartbeat older than ``cutoff`` is in such a bucket; the cutoff's own bucket also holds
    agents that heartbeated after it). Their rows are read by key, consistently, up to 100 per BatchGetItem,
    and the exact ``last_heartbeat_at`` decides."""
    keys = [(key.client_id, key.agent_id) for key in
            AgentTable.live_by_heartbeat.query(LIVE, AgentTable.heartbeat_bucket <= heartbeat_bucket(cutoff))]
    for row in AgentTable.batch_get(keys, consistent_read=True):
        agent = _record(row)
        if agent.status in LIVE_STATUSES and (agent.last_heartbeat_at is None or agent.last_heartbeat_at < cutoff):
            yield agent


def set_liveness(agent: AgentRecord, status: str, now: datetime, *, notification=None) -> bool:
    """Move a live agent to ``status`` unless it heartbeated meanwhile; True if it changed.

    ``notification`` (an unwritten ``NotificationTable`` row: ``activity.notification_row``) is written in the
    same transaction: the client is told of the change exactly when it is made. Written after it, a Lambda that
    died between the two lost the notification for good (the next run finds the agent already moved)."""
    actions = [AgentTable.status.set(status), AgentTable.updated_at.set(now)]
    if status not in LIVE_STATUSES:
        actions.append(AgentTable.liveness.remove())
    condition = (AgentTable.status == agent.status) & (AgentTable.last_heartbeat_at == agent.last_heartbeat_at)
    if notification is None:
        try:
            AgentTable(agent.client_id, agent.agent_id).update(actions=actions, condition=condition)
        except UpdateError as exc:
            if condition_failed(exc):
                return False
            raise
        return True
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.update(AgentTable(agent.client_id, agent.agent_id), actions=actions, condition=condition)
            tx.save(notification, condition=type(notification).notification_id.does_not_exist())
    except TransactWriteError as exc:
        # pynamodb sends puts before updates: the reasons are [notification, agent]
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            return False  # it heartbeated meanwhile (or the same change was made and told already)
        raise
    return True


def agents_with_standbys():
    """Agents that want or hold a standby: manual-replica mode, or a pre-warmed standby (batch job)."""
    condition = ((AgentTable.config.manual_replica_enabled == True)  # noqa: E712
                 | AgentTable.current_replica_id.exists())
    for row in AgentTable.scan(filter_condition=condition):
        if row.status not in GONE_STATUSES:
            yield _record(row)


class AgentKey(NamedTuple):
    """An agent's key (a JSON array of two strings in a decision message)."""

    client_id: str
    agent_id: str


def live_agent_keys():
    """The key of every live agent (online or degraded): the sparse, keys-only live index, one Query page
    (~1 MB of keys) at a time, never the table. The decision cycle's dispatcher sends them on; its worker
    reads each agent and keeps those that are (still) live, enabled and in auto-switch mode (``in_decision_cycle``)."""
    for key in AgentTable.live_by_heartbeat.query(LIVE):
        yield AgentKey(key.client_id, key.agent_id)


def in_decision_cycle(agent: AgentRecord) -> bool:
    """Decided every cycle: live, enabled, its client not suspended, auto-switch on (manual-replica agents are the
    coordinator's), and its mode known: a v3.2 agent registers none and names it in its first pricing report
    (``learn_mode``); deciding before would read it as on-demand and move a spot instance, even into its own pool."""
    return (agent.status in LIVE_STATUSES and bool(agent.config.get("enabled")) and not agent.client_suspended
            and bool(agent.config.get("auto_switch_enabled")) and agent.current_mode != "unknown")


def live_spot_counts(pool_id: str) -> Counter[str]:
    """How many live agents run on spot in the pool, per client (the risk scorer's exposure): one Query of the
    sparse ``live-agents-by-pool`` index (its keys: a page per ~4,000 agents in the pool), whatever the fleet's
    size. Per client, because only some clients' word about where their agents run is proven."""
    return Counter(row.client_id for row in AgentTable.live_by_pool.query(
        pool_id, AgentTable.liveness == LIVE, filter_condition=AgentTable.current_mode == "spot",
        attributes_to_get=["client_id"]))


def types_in_use() -> list[tuple[str, str]]:
    """Every (region, instance type) an agent that is not deleted or terminated runs or may run on (its
    declared interchangeable types): what the market-data jobs ask AWS about (a batch scan of four
    attributes, never a request path)."""
    found = set()
    for row in AgentTable.scan(attributes_to_get=["region", "instance_type", "status", "config"]):
        if row.region and row.instance_type and row.status not in GONE_STATUSES:
            declared = row.config.allowed_instance_types if row.config else None
            found.update((row.region, t) for t in allowed_types(row.instance_type, declared))
    return sorted(found)


def busy_unnamed(client_id: str) -> list[AgentRecord]:
    """The client's agents that may have a command in flight (active commands, or a row from before that counter)
    and whose logical id is an instance id: the agents of legacy v4 processes that run without ``LOGICAL_AGENT_ID``
    (it falls back to the instance id). One partition Query; the filter keeps the answer to those."""
    condition = (AgentTable.logical_agent_id.startswith("i-")
                 & ((AgentTable.active_commands > 0) | AgentTable.active_commands.does_not_exist())
                 & ~AgentTable.status.is_in(*GONE_STATUSES))
    return [_record(row) for row in AgentTable.query(client_id, filter_condition=condition)]


def all_for_client(client_id: str) -> list[AgentRecord]:
    """Every agent row of the client, deleted and terminated ones included (one partition query)."""
    return [_record(row) for row in AgentTable.query(client_id)]


class WalkedAgent(NamedTuple):
    """An agent as the data cleaner's walk reads it: its id, and when it went (deleted or terminated: its
    ``deleted_at``, else its ``updated_at``; None for an agent that is not gone)."""

    agent_id: str
    gone_since: datetime | None
    instance_id: str | None = None  # the instance the agent row names


def _gone_since(status: str, deleted_at: datetime | None, updated_at: datetime | None) -> datetime | None:
    if status not in GONE_STATUSES:
        return None
    return deleted_at or updated_at


def walk_after(client_id: str, after: str | None, limit: int) -> tuple[list[WalkedAgent], bool]:
    """Up to ``limit`` of the client's agents (deleted and terminated ones included) in id order, after the id
    ``after`` (None: from the first), with whether more may follow: one partition Query with a range-key
    condition, reading at most ``limit`` rows (the data cleaner's walk inside a client)."""
    if limit <= 0:
        return [], True
    condition = AgentTable.agent_id > after if after is not None else None
    result = AgentTable.query(client_id, condition, limit=limit,
                              attributes_to_get=["client_id", "agent_id", "status", "deleted_at", "updated_at",
                                                 "instance_id"])
    walked = [WalkedAgent(row.agent_id, _gone_since(row.status, row.deleted_at, row.updated_at), row.instance_id)
              for row in result]
    return walked, result.last_evaluated_key is not None


def set_client_suspended(client_id: str, suspended: bool) -> int:
    """Copy the client's (in)active status onto each of its agents (agent credentials read only the agent
    row). The agents are found on the listing index (eventually consistent: an agent registering in the
    same second as the deactivation may be missed; a re-run of the status call catches it). Returns how
    many rows were written."""
    written = 0
    for row in AgentTable.by_logical_id.query(client_id):
        action = AgentTable.client_suspended.set(True) if suspended else AgentTable.client_suspended.remove()
        try:
            AgentTable(client_id, row.agent_id).update(actions=[action], condition=AgentTable.agent_id.exists())
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            continue
        written += 1
    return written


# --- retention of gone agents (the data cleaner, AGENT_RETENTION_DAYS) ------------------------------------

@dataclass(frozen=True)
class GoneAgent:
    """A deleted or terminated agent past its retention, as read just before it is removed: the fields its
    removal is conditional on (any write to the row since, a re-registration first of all, changes one)."""

    client_id: str
    agent_id: str
    status: str
    updated_at: datetime
    deleted_at: datetime | None
    instance_id: str | None
    current_replica_id: str | None


def gone_before(client_id: str, agent_id: str, cutoff: datetime) -> GoneAgent | None:
    """The agent if it is deleted or terminated and went (``deleted_at``, else ``updated_at``) before ``cutoff``;
    None otherwise (also when the row is not there). A consistent read."""
    try:
        row = AgentTable.get(client_id, agent_id, consistent_read=True)
    except AgentTable.DoesNotExist:
        return None
    since = _gone_since(row.status, row.deleted_at, row.updated_at)
    if since is None or since >= cutoff:
        return None
    return GoneAgent(client_id=row.client_id, agent_id=row.agent_id, status=row.status, updated_at=row.updated_at,
                     deleted_at=row.deleted_at, instance_id=row.instance_id, current_replica_id=row.current_replica_id)


def proven_account_of(agent: AgentRecord) -> str | None:
    """The AWS account a signed identity document proved one of the agent's instances runs in (its current
    instance's row first, else the latest installed one's), None when no instance row of the agent records one."""
    rows = [row for row in InstanceTable.by_agent.query(agent.agent_id)
            if row.client_id == agent.client_id and row.proven_account_id]
    if not rows:
        return None
    return max(rows, key=lambda row: (row.instance_id == agent.instance_id, row.installed_at)).proven_account_id


def _instances_naming(agent: GoneAgent) -> list[InstanceTable]:
    return [row for row in InstanceTable.by_agent.query(agent.agent_id) if row.client_id == agent.client_id]


def has_live_instance(agent: GoneAgent, instance_ids=()) -> bool:
    """An active instance row still names the agent: one on the instances-by-agent index, or one of
    ``instance_ids`` (its replicas' instances, read by key) still this agent's. Such an agent is kept."""
    if any(row.is_active for row in _instances_naming(agent)):
        return True
    for instance_id in set(instance_ids):
        row = instance_row(instance_id)
        if row is not None and row.is_active and row.client_id == agent.client_id and row.agent_id == agent.agent_id:
            return True
    return False


def _released_launch(row: InstanceTable) -> bool:
    """An instance the product launched (its row names a replica: a standby's, a failover's replacement) that an
    agent's delete released to its client (``released_at``): it may still run, tagged as ours, and without its row the
    cleanup would take it for an orphan and terminate the client's workload. Its row is kept (such rows are as few
    as the deleted agents' primaries the product launched)."""
    return row.released_at is not None and row.replica_id is not None


_NOT_RELEASED_LAUNCH = InstanceTable.released_at.does_not_exist() | InstanceTable.replica_id.does_not_exist()


def _inactive_and_naming(agent: GoneAgent):
    """Inactive, this agent's, and no released launch of ours (``_released_launch``)."""
    return ((InstanceTable.client_id == agent.client_id) & (InstanceTable.agent_id == agent.agent_id)
            & (InstanceTable.is_active == False) & _NOT_RELEASED_LAUNCH)  # noqa: E712


def delete_inactive_instances(agent: GoneAgent, budget: int) -> int:
    """Delete the instance rows that name the agent and are inactive, but the one its row names (``delete_gone``
    removes that one with the row: a registration reviving the agent updates it, and fails if it is missing), at
    most ``budget``, each on the condition that it still names this agent of this client and is inactive (an
    instance registered since by another agent, or active again, stays). Returns how many were deleted."""
    rows = [row for row in _instances_naming(agent)
            if not row.is_active and not _released_launch(row) and row.instance_id != agent.instance_id]
    return delete_each(rows, _inactive_and_naming(agent), budget)


def _ended_before(client_id: str, agent_id: str, cutoff: datetime):
    """Inactive, this agent's, and ended before ``cutoff``: terminated then, or closed without a termination time
    and unchanged since, unless a signed document proved the instance (it may still run in its owner's account,
    and its row keeps it that owner's) or the product launched it (a standby's or replacement's row names its
    replica: a kept-running one still runs, and without its row the cleanup job would take it for an orphan of
    ours and terminate it; such rows are as few as the product's own launches)."""
    return ((InstanceTable.client_id == client_id) & (InstanceTable.agent_id == agent_id)
            & (InstanceTable.is_active == False) & _NOT_RELEASED_LAUNCH  # noqa: E712
            & ((InstanceTable.terminated_at < cutoff)
               | (InstanceTable.terminated_at.does_not_exist() & (InstanceTable.updated_at < cutoff)
                  & InstanceTable.proven_account_id.does_not_exist() & InstanceTable.replica_id.does_not_exist())))


def delete_ended_instances(client_id: str, agent_id: str, keep: str | None, cutoff: datetime, budget: int,
                           before_each=None) -> int:
    """Delete the agent's instance rows that ended before ``cutoff`` (the data cleaner, ``AGENT_RETENTION_DAYS``)
    but ``keep``, the one its row names (a re-registration updates it): one Query of the instances-by-agent index
    for the rows installed before ``cutoff``, each delete conditional on the row still having ended then (a row
    active again, or changed since, stays). At most ``budget``; returns how many were deleted. Without it a live
    agent's ended switches and standbys stay for good, and every hourly savings roll-up reads them back.

    ``before_each(instance_id, left)``, if given, runs before each row's delete (what only that row refers to goes
    first: a stopped run finds the row again) and returns how many rows it deleted, or None when ``left`` is too
    little (the walk stops there); its rows count against ``budget`` too."""
    condition = _ended_before(client_id, agent_id, cutoff)
    rows = [row for row in InstanceTable.by_agent.query(agent_id, InstanceTable.installed_at < cutoff,
                                                        filter_condition=condition)
            if row.instance_id != keep]
    if before_each is None:
        return delete_each(rows, condition, budget)
    deleted = 0
    for row in rows:
        if deleted >= budget:
            break
        first = before_each(row.instance_id, budget - deleted - 1)
        if first is None:
            break
        deleted += first + delete_each([row], condition, 1)
    return deleted


def instance_ids_of(agent: GoneAgent) -> list[str]:
    """The instances whose rows name the agent (the instances-by-agent index: its primaries, replacements and
    standbys), each confirmed by a consistent read of its row (the index may lag: an instance another agent
    registered since is that agent's now, and is left out)."""
    ids = []
    for instance_id in sorted({row.instance_id for row in _instances_naming(agent)}):
        row = instance_row(instance_id)
        if row is not None and (row.client_id, row.agent_id) == (agent.client_id, agent.agent_id):
            ids.append(instance_id)
    return ids


def delete_gone(agent: GoneAgent) -> int:
    """Delete the agent row if nothing changed it since ``gone_before`` read it (status, times, instance, standby
    slot): a re-registration, which rewrites ``updated_at``, wins. The instance row the agent row names goes in
    the same transaction when it still names this agent and is inactive (while the agent row is there, so is
    the instance row a registration would update). Returns how many rows were deleted (0: something changed)."""
    condition = ((AgentTable.status == agent.status) & (AgentTable.updated_at == agent.updated_at)
                 & _same(AgentTable.deleted_at, agent.deleted_at) & _same(AgentTable.instance_id, agent.instance_id)
                 & _same(AgentTable.current_replica_id, agent.current_replica_id))
    own = instance_row(agent.instance_id) if agent.instance_id else None
    with_own = own is not None and own.client_id == agent.client_id and own.agent_id == agent.agent_id \
        and not _released_launch(own)
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.delete(AgentTable(agent.client_id, agent.agent_id), condition=condition)
            if with_own:
                tx.delete(InstanceTable(agent.instance_id), condition=_inactive_and_naming(agent))
    except TransactWriteError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            return 0
        raise
    return 2 if with_own else 1


# --- client dashboard reads (the listing index: one Query per page, never a scan) ------------------

_LISTING_KEY = ("client_id", "agent_id", "logical_agent_id")


def page_for_client(client_id: str, limit: int, next_token: str | None) -> Page:
    """A client's agents that are not deleted, by logical id (a page may hold fewer than ``limit``
    agents when deleted ones were skipped; ``next_token`` is then still set).

    The listing index holds keys and status only (a heartbeat must not rewrite it): one Query for the page's
    keys, one BatchGetItem for its rows, which are shown in the index's order (a row deleted in between is
    left out)."""
    start = decode_token(next_token, partition_attr="client_id", partition_value=client_id, key_attrs=_LISTING_KEY)
    page = read_page(AgentTable, lambda size, at: AgentTable.by_logical_id.query(
        client_id, filter_condition=~AgentTable.status.is_in(*GONE_STATUSES), page_size=size, last_evaluated_key=at),
        limit=limit, start=start, key_attrs=_LISTING_KEY)
    keys = [(client_id, key.agent_id) for key in page.items]
    rows = {row.agent_id: row for row in AgentTable.batch_get(keys) if row.status not in GONE_STATUSES} if keys else {}
    return Page([_record(rows[agent_id]) for _, agent_id in keys if agent_id in rows], page.next_token)


_BY_CLIENT_KEY = ("instance_id", "client_id", "installed_at")
_LIVE_KEY = ("instance_id", "live_client_id", "installed_at")


def instances_page(client_id: str, limit: int, next_token: str | None, *, active: bool | None = None,
                   mode: str | None = None, search: str | None = None) -> Page:
    """A client's instances, newest first, filtered by activity, mode and a substring of the instance id or type.
    The active ones come from the live index once it is ready (its own token shape: a token of the other listing
    is a 400), everything else from the instances-by-client index."""
    live = active is True and sparse_indexes.ready(LIVE_INSTANCES)
    index, partition, key = ((InstanceTable.live, "live_client_id", _LIVE_KEY) if live
                             else (InstanceTable.by_client, "client_id", _BY_CLIENT_KEY))
    start = decode_token(live_token(next_token, client_id) if live else next_token, partition_attr=partition,
                         partition_value=client_id, key_attrs=key)
    condition = None
    for part in ((InstanceTable.is_active == active) if active is not None and not live else None,
                 (InstanceTable.mode == mode) if mode else None,
                 (InstanceTable.instance_id.contains(search) | InstanceTable.instance_type.contains(search))
                 if search else None):
        if part is not None:
            condition = part if condition is None else condition & part
    return read_page(InstanceTable, lambda size, at: index.query(
        client_id, scan_index_forward=False, filter_condition=condition, page_size=size, last_evaluated_key=at),
        limit=limit, start=start, key_attrs=key)


def live_token(next_token: str | None, client_id: str) -> str | None:
    """An active listing's token as the live index reads it: one of the history's shape (issued while the index was
    not ready, a page before its backfill ended; or a ``status=all`` page's) is the same position of the client's
    instances (``installed_at``, then the instance) and is read as the caller's live key. Only a token of the
    caller's own partition is translated (another client's stays a 400 in ``decode_token``)."""
    if not next_token:
        return next_token
    try:
        key = decode_token(next_token, partition_attr="client_id", partition_value=client_id,
                           key_attrs=_BY_CLIENT_KEY)
    except InvalidInputError:
        return next_token  # the live shape, or no token of ours: decode_token answers it
    return encode_token({"instance_id": key["instance_id"], "live_client_id": key["client_id"],
                         "installed_at": key["installed_at"]})


def active_instances(client_id: str) -> list[InstanceTable]:
    """A client's active instances (primaries and standbys): one Query of the live index, which holds only them,
    once it is ready; on a stage still backfilling it, the filtered Query of the client's whole instance history."""
    if sparse_indexes.ready(LIVE_INSTANCES):
        return list(InstanceTable.live.query(client_id))
    return list(InstanceTable.by_client.query(client_id, filter_condition=LIVE_INSTANCES.belongs()))


def active_instance_count(client_id: str) -> int:
    """How many instances of the client are active (``active_instances``, counted)."""
    if sparse_indexes.ready(LIVE_INSTANCES):
        return InstanceTable.live.count(client_id)
    return InstanceTable.by_client.count(client_id, filter_condition=LIVE_INSTANCES.belongs())


MODES_OFF = {"enabled": False, "auto_switch_enabled": False, "manual_replica_enabled": False,
             "replica_enabled": False, "replica_count": 0}


def leave_account(agent: AgentRecord, account_id: str, now: datetime) -> None:
    """The agent's account is being unbound from its client (a forced unbinding): every mode off, so no switch,
    standby or replica is attempted any more, and its account pinned to ``account_id``, so that nothing it does
    resolves to another of the client's accounts (an agent with no verified account would otherwise fall back to
    the client's single remaining binding). A verified re-registration in a bound account undoes the pin."""
    try:
        AgentTable(agent.client_id, agent.agent_id).update(
            actions=[AgentTable.account_id.set(account_id), AgentTable.updated_at.set(now),
                     AgentTable.config_version.add(1), *_config_actions(MODES_OFF)],
            condition=AgentTable.agent_id.exists())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise


def soft_delete(agent: AgentRecord, now: datetime) -> AgentRecord:
    """Status ``deleted`` with every mode off, its instance inactive (when it is still this agent's), and every
    other instance row of the agent still active closed too: the primaries its switches left running (auto-terminate
    off; no termination time claimed, as ``close_kept_instances``). Nothing closes them once the agent is gone: they
    stayed live for good (the client's active instances, its savings roll-up integrating them up to now, the data
    cleaner keeping them). Each row it closes is marked ``released_at``: the instances keep running as the client's
    own (the cleanup never takes one the product launched for an orphan). Idempotent: a deleted agent stays as it
    is; a repeat finishes a close a failure left."""
    _close_kept(agent, now)
    if agent.instance_id:
        try:
            InstanceTable(agent.instance_id).update(
                actions=[*InstanceTable.close_actions(), InstanceTable.terminated_at.set(now),
                         InstanceTable.updated_at.set(now), InstanceTable.released_at.set(now)],
                condition=(InstanceTable.client_id == agent.client_id) & (InstanceTable.agent_id == agent.agent_id)
                & (InstanceTable.is_active == True))  # noqa: E712
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
    if agent.status == AgentStatus.DELETED.value:
        return agent
    try:
        AgentTable(agent.client_id, agent.agent_id).update(
            actions=[AgentTable.status.set(AgentStatus.DELETED.value), AgentTable.liveness.remove(),
                     AgentTable.deleted_at.set(now), AgentTable.updated_at.set(now),
                     AgentTable.config_version.add(1), *_config_actions(MODES_OFF)],
            condition=AgentTable.agent_id.exists())
    except UpdateError as exc:
        if condition_failed(exc):
            raise NotFoundError("agent not found", field="agent_id") from exc
        raise
    return require(agent.client_id, agent.agent_id, allow_deleted=True)


def _close_kept(agent: AgentRecord, now: datetime) -> None:
    """Close the agent's active instance rows other than the one it names (each on the condition that it is still
    this agent's and active: a row another agent registered since is left alone)."""
    mine = (InstanceTable.client_id == agent.client_id) & (InstanceTable.agent_id == agent.agent_id) \
        & (InstanceTable.is_active == True)  # noqa: E712
    for row in InstanceTable.by_agent.query(agent.agent_id, filter_condition=mine):
        if row.instance_id == agent.instance_id:
            continue
        try:
            row.update(actions=[*InstanceTable.close_actions(), InstanceTable.updated_at.set(now),
                                InstanceTable.released_at.set(now)], condition=mine)
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
