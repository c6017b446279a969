"""pydantic models of response bodies: used only to generate the OpenAPI document (chalicelib/openapi.py)
and imported only when it is built, never at cold start. Routes name them in ``@bp.route(...,
response="Name")``.

They describe what the views in chalicelib/api (and chalicelib/api/views.py) answer: every field listed
is always present (``null`` where it says so); extra fields are allowed, so adding a field to an answer
never breaks a client that validates against the document. The schemathesis contract test
(tests/contract/test_schemathesis.py) checks every answer of the running app against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Reply(BaseModel):
    """A JSON object; fields beyond the listed ones may appear."""

    model_config = ConfigDict(extra="allow")


Time = str  # ISO-8601 UTC, "Z"


# --- meta -----------------------------------------------------------------------------------------

class OpenApiDocument(Reply):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


class HealthReply(Reply):
    status: Literal["ok", "degraded"]
    checks: dict[str, str]
    stage: str
    version: str


class Success(Reply):
    success: bool


# --- agent protocol -------------------------------------------------------------------------------

class AgentConfig(Reply):
    """Flat agent configuration (legacy GET config shape) with its version."""

    agent_id: str
    config_version: int


class CommandView(Reply):
    id: str
    command_id: str
    command_type: str
    instance_id: str | None
    target_mode: str | None
    target_pool_id: str | None
    target_instance_type: str | None
    priority: int
    terminate_wait_seconds: int | None
    status: str
    attempts: int
    created_at: Time | None
    lease_expires_at: Time | None
    trigger: str | None
    success: bool | None
    message: str | None


class RegisterReply(Success):
    agent_id: str
    client_id: str
    action: str
    verified: bool
    account_id: str | None
    config: AgentConfig
    agent_credential: str | None = None
    warning: str | None = None


class HeartbeatReply(Success):
    status: str
    config_version: int
    commands: list[CommandView]
    server_time: Time


class PendingCommandsReply(Reply):
    commands: list[CommandView]


class CommandResultReply(Success):
    replay: bool
    late: bool
    command: CommandView
    warnings: list[str]


class CommandReply(Success):
    command: CommandView


class PricingReportReply(Success):
    pools: int
    points_written: int
    averaged: int
    duplicates: int
    interpolated: int
    server_priced: int
    warnings: list[str]


class SwitchReportReply(Success):
    switch_id: str
    duplicate: bool
    hourly_savings: float | None
    monthly_savings: float | None
    commands_completed: Any
    warnings: list[str]


class TerminationReply(Success):
    agent_id: str
    status: str
    warnings: list[str]


class InstancesToTerminateReply(Reply):
    instances: list[dict[str, Any]]
    auto_terminate_enabled: bool
    terminate_wait_seconds: int


class CleanupReportReply(Success):
    deleted_snapshots: int
    deleted_amis: int
    failed_count: int
    warnings: list[str]


# --- client ---------------------------------------------------------------------------------------

class ValidateTokenReply(Reply):
    valid: bool
    client_id: str
    name: str


class AccountBinding(Reply):
    account_id: str
    role_arn: str | None
    external_id: str | None
    bound_at: Time | None


class AccountsReply(Reply):
    client_id: str
    external_id: str | None
    # an ExternalId rotation under way: add this id to every role's trust policy (next to the current one), then
    # the operator confirms it; null when none is pending
    pending_external_id: str | None
    pending_external_id_since: Time | None
    accounts: list[AccountBinding]


class ReleasedStandby(Reply):
    replica_id: str
    agent_id: str
    instance_id: str | None
    retired: bool
    error: str | None = None


class ReleasedInAccount(Reply):
    agents: list[str]
    standbys: list[ReleasedStandby]


class UnbindAccountReply(AccountsReply):
    released: ReleasedInAccount | None  # a forced unbinding's work in the account (null: nothing ran there)


class ClientAccountsReply(AccountsReply):
    tenancy: str


class Limits(Reply):
    max_agents: int | None
    max_instances: int | None
    max_standby_usd_per_hour: float | None
    max_instance_vcpus: int | None
    max_switches_per_agent_per_day: int | None
    allow_accelerated_types: bool
    allowed_instance_families: list[str]


class LimitsReply(Reply):
    client_id: str
    limits: Limits


class LimitOverrides(Reply):
    """The client's own overrides (null: the stage's default applies)."""

    max_agents: int | None = None
    max_instances: int | None = None
    max_standby_usd_per_hour: float | None = None
    max_instance_vcpus: int | None = None
    max_switches_per_agent_per_day: int | None = None
    allow_accelerated_types: bool | None = None
    allowed_instance_families: list[str] | None = None


class AdminLimitsReply(LimitsReply):
    overrides: LimitOverrides
    ondemand_discount_percent: float


class Notification(Reply):
    id: str
    kind: str | None
    severity: str | None
    message: str | None
    agent_id: str | None
    is_read: bool
    created_at: Time | None


class NotificationsReply(Reply):
    notifications: list[Notification]
    next_token: str | None


class MarkAllReadReply(Success):
    updated: int
    more: bool  # unread notifications are left past this call's budget: call again


class ForceSwitchReply(Success):
    command: CommandView
    duplicate: bool = Field(description="the same switch of the instance was already queued or running: that "
                                        "command is the answer, nothing new was queued")


# --- admin ----------------------------------------------------------------------------------------

class ClientView(Reply):
    """A client for admins: never the token or its hash."""

    client_id: str
    name: str
    email: str | None
    status: str
    created_at: Time | None
    token_expires_at: Time | None
    ondemand_discount_percent: float | None
    legacy_agents: bool
    rate_limit_per_window: int | None  # the admin's override, if any
    effective_rate_limit: int  # the override, else the stage's limit or what the agent quota's fleet needs
    aws_accounts: list[str]


class CreatedClientReply(ClientView):
    client_token: str
    warning: str


class ClientsReply(Reply):
    clients: list[ClientView]
    next_token: str | None


class RegeneratedTokenReply(Reply):
    client_id: str
    client_token: str
    token_expires_at: Time | None
    warning: str


class ModelVersionView(Reply):
    version: str
    status: str
    sha256: str | None
    created_at: Time | None
    activated_at: Time | None
    metrics: Any
    rejected_because: str | None


class ModelsReply(Reply):
    active_version: str | None
    versions: list[ModelVersionView]


# --- replicas -------------------------------------------------------------------------------------

class ReplicaView(Reply):
    """A replica, flat (chalicelib/api/views.py replica_view)."""

    id: str
    replica_id: str
    agent_id: str
    pool_id: str | None
    az: str | None
    instance_type: str | None
    region: str | None
    instance_id: str | None
    parent_instance_id: str | None
    status: str
    replica_type: str | None
    lifecycle: str | None
    hourly_cost: float | None
    sync_status: str | None
    sync_latency_ms: float | None
    state_transfer_progress: float | None
    error_message: str | None
    created_by: str | None
    interruption_id: str | None
    created_at: Time | None
    updated_at: Time | None
    launched_at: Time | None
    ready_at: Time | None
    promoted_at: Time | None
    terminated_at: Time | None
    expires_at: Time | None


class ReplicasReply(Reply):
    replicas: list[ReplicaView]
    next_token: str | None


class ReplicaConfigReply(Reply):
    agent_id: str
    enabled: bool
    count: int
    manual_replica_enabled: bool
    auto_switch_enabled: bool
    auto_terminate_enabled: bool
    current_replica_id: str | None


class ClientAgentConfigReply(AgentConfig):
    terminated_replicas: Any


class ManualReplicaEnableReply(Success):
    manual_replica_enabled: bool
    auto_switch_enabled: bool
    config_version: int
    replica: ReplicaView | None
    message: str | None


class ManualReplicaDisableReply(Success):
    manual_replica_enabled: bool
    config_version: int
    terminated: Any


# --- interruptions and decisions ------------------------------------------------------------------

class InterruptionView(Reply):
    """One interruption event with its timings and the failover's result."""

    interruption_id: str
    agent_id: str | None
    instance_id: str | None
    pool_id: str | None
    signal_type: str | None
    source: str | None
    status: str | None
    response_action: str | None
    replica_id: str | None
    new_instance_id: str | None
    new_pool_id: str | None
    new_lifecycle: str | None
    handover: Any
    success: bool | None
    failover_time_ms: int | None
    error: Any
    detected_at: Time | None
    termination_time: Time | None
    decided_at: Time | None
    replacement_ready_at: Time | None
    traffic_moved_at: Time | None
    completed_at: Time | None
    old_terminated_at: Time | None


class InterruptionsReply(Reply):
    interruptions: list[InterruptionView]
    next_token: str | None


class ClientInterruptionsReply(InterruptionsReply):
    generated_at: Time


class DecisionView(Reply):
    decided_at: Time | None
    source: str | None
    current: Any
    action: str | None
    target: Any
    standby: Any
    risk: Any
    reason: str | None
    expected_cost: Any
    command_id: str | None


class DecisionsReply(Reply):
    decisions: list[DecisionView]
    next_token: str | None


class PoolRisk(Reply):
    pool_id: str
    az: str | None
    price: float | None
    price_at: Time | None
    ondemand_price: float | None
    risk: float | None
    risk_at: Time | None
    risk_source: str | None


class PoolsReply(Reply):
    pools: list[PoolRisk]


# --- agent-side routes (decisions, interruption signals, standbys) --------------------------------

class HealthView(Reply):
    """The sentinel's health score of an agent (components/sentinel/health.py)."""

    score: float
    state: str
    recommendation: str | None


class DecideReply(Reply):
    """POST /api/agents/{agent_id}/decide (legacy contract #1 shape)."""

    instance_id: str | None
    risk_score: float | None
    recommended_action: str
    recommended_mode: Literal["spot", "ondemand"]
    recommended_pool_id: str | None
    recommended_standby_pool_id: str | None
    expected_savings_per_hour: float | None
    allowed: bool
    reason: str | None
    expected_cost: Any


class AlternativePool(Reply):
    pool_id: str
    price: float | None
    risk: float | None


class SwitchRecommendationReply(Reply):
    """GET /api/agents/{agent_id}/switch-recommendation (legacy contract #2 shape)."""

    decision_type: str
    recommended_pool_id: str | None
    risk_score: float | None
    expected_savings: float | None
    confidence: float | None
    reason: str | None
    auto_switch_enabled: bool
    will_auto_execute: bool
    current_pool: str | None
    alternative_pools: list[AlternativePool]


class IssueSwitchReply(Success):
    """200 ``queued: false`` with the engine's ``reason`` (nothing to do), or 201 with the queued command."""

    queued: bool
    command: CommandView | None = None
    reason: str | None = None
    duplicate: bool | None = Field(None, description="an explicit target's switch already queued or running: "
                                                     "that command is the answer, nothing new was queued")


class SignalReply(Success):
    """What the sentinel did with a signal (``failover_started``, ``duplicate``, ``ignored``, ...)."""

    action: str
    interruption_id: str | None = None
    reason: str | None = None
    message: str | None = None  # the action in a sentence, for the agent's log


class WorkflowRef(Reply):
    action: str


class ReplicaPool(Reply):
    """The legacy ``pool`` object: ``name`` is the pool id (the legacy agent logs it); nulls without a replica."""

    id: str | None
    name: str | None
    az: str | None


class EmergencyReplicaReply(Success):
    """201 when a standby was launched, 200 when the existing one (or the running failover's) is returned, or
    (``success`` false, ``error``) when there is none: the instance is no longer the agent's primary, or the
    rebalance recommendation calls for no pre-warmed standby (``workflow`` is what the sentinel did)."""

    created: bool
    replica_id: str | None
    instance_id: str | None
    status: str | None
    pool: ReplicaPool
    hourly_cost: float | None
    urgency: Literal["critical", "high"]
    workflow: WorkflowRef | None
    error: str | None = None


class CreatedReplicaReply(Success, ReplicaView):
    tags_applied: bool


class PromotionReply(Success):
    """202: the failover workflow promotes the replica."""

    action: str
    interruption_id: str | None
    replica_id: str
    new_instance_id: str | None
    old_instance_id: str | None


class ReplicaStateReply(Success):
    replica_id: str
    status: str


class DeletedReplicaReply(ReplicaStateReply):
    instance_id: str | None
    message: str | None = None  # a standby the product could not terminate (its account unbound): what to do


class ReplicaReportReply(ReplicaStateReply):
    """A replica report's answer: the replica after it, and the agent's warnings as recorded."""

    replica: ReplicaView | None = None
    warnings: list[str] | None = None


class AttachedReplicaReply(ReplicaReportReply):
    instance_id: str | None
    replica: ReplicaView
    warnings: list[str]


class LastInterruption(Reply):
    interruption_id: str
    signal_type: str | None
    status: str | None
    response_action: str | None
    detected_at: Time | None
    failover_time_ms: int | None


class DataQuality(Reply):
    last_pricing_at: Time | None
    pricing_fresh: bool


class SefStatusReply(Reply):
    agent_id: str
    mode: Literal["manual-replica", "auto-switch", "none"]
    health: HealthView
    manual_replica_enabled: bool
    auto_switch_enabled: bool
    auto_terminate_enabled: bool
    terminate_wait_seconds: int
    replica: ReplicaView | None
    last_interruption: LastInterruption | None
    data_quality: DataQuality


# --- client dashboard -----------------------------------------------------------------------------

class SavingsSummary(Reply):
    """The savings repository's summary (chalicelib/repositories/savings.py)."""

    total_savings: float
    total_actual_cost: float
    total_baseline_cost: float
    savings_percent: float
    month_to_date_savings: float
    last_30d_savings: float
    currency: str
    as_of: Time | None


class SavingsMonth(Reply):
    month: str
    baseline_cost: float
    actual_cost: float
    savings: float
    savings_percent: float


class SavingsDay(Reply):
    date: str
    baseline_cost: float
    actual_cost: float
    savings: float
    spot_hours: float
    ondemand_hours: float


class ClientOverviewReply(Reply):
    client_id: str
    name: str
    status: str
    agents_online: int
    agents_total: int
    instances_active: int
    replicas_active: int
    savings: SavingsSummary
    last_sync: Time | None


class ReplicaPrimary(Reply):
    instance_id: str | None
    pool_id: str | None
    instance_type: str | None
    mode: str | None
    agent_id: str
    hostname: str | None


class ClientReplica(ReplicaView):
    primary: ReplicaPrimary | None


class ClientReplicasReply(Reply):
    replicas: list[ClientReplica]
    next_token: str | None


class SwitchRow(Reply):
    switch_id: str
    agent_id: str | None
    old_instance_id: str | None
    new_instance_id: str | None
    from_pool_id: str | None
    to_pool_id: str | None
    from_mode: str | None
    to_mode: str | None
    trigger: str | None
    old_price: float | None
    new_price: float | None
    on_demand_price: float | None
    hourly_impact: float | None
    initiated_at: Time | None
    completed_at: Time | None
    downtime_seconds: float | None
    success: bool


class SwitchHistoryReply(Reply):
    switches: list[SwitchRow]
    next_token: str | None


class DayCost(Reply):
    date: str
    actual_cost: float
    baseline_cost: float


class DayCount(Reply):
    date: str
    count: int


class ModeDistribution(Reply):
    spot: int
    ondemand: int


class ChartsReply(Reply):
    savings_trend: list[SavingsDay]
    cost_vs_on_demand: list[DayCost]
    mode_distribution: ModeDistribution
    switches_per_day: list[DayCount]


class AgentRow(Reply):
    """An agent as a dashboard table row (chalicelib/api/views.py agent_row)."""

    agent_id: str
    logical_agent_id: str | None
    hostname: str | None
    status: str
    enabled: bool
    auto_switch_enabled: bool
    auto_terminate_enabled: bool
    manual_replica_enabled: bool
    replica_enabled: bool
    replica_count: int
    terminate_wait_seconds: int
    terminate_wait_minutes: float
    instance_id: str | None
    instance_type: str | None
    mode: str | None
    pool_id: str | None
    region: str | None
    az: str | None
    agent_version: str | None
    last_heartbeat_at: Time | None
    registered_at: Time | None
    last_switch_at: Time | None
    config_version: int


class AgentRowsReply(Reply):
    agents: list[AgentRow]
    next_token: str | None


class AgentDecisions(Reply):
    agent_id: str
    logical_agent_id: str | None
    hostname: str | None
    status: str
    health: HealthView
    decisions: list[DecisionView]
    last_pricing_report_at: Time | None
    pricing_health: Literal["never", "fresh", "stale"]


class AgentDecisionsReply(Reply):
    agents: list[AgentDecisions]
    next_token: str | None


class ToggleEnabledReply(Success):
    enabled: bool
    config_version: int


class AgentSettingsReply(Success):
    config: AgentConfig
    terminated_replicas: list[str]


class NotTerminatedReplica(Reply):
    replica_id: str
    instance_id: str | None
    message: str | None


class DeletedAgentReply(Success):
    agent_id: str
    status: str
    terminated_replicas: list[str]
    # standbys in an account no longer bound: closed, not terminated; the client must end them (absent: none)
    not_terminated_replicas: list[NotTerminatedReplica] | None = None


class InstanceRow(Reply):
    """An instance as a dashboard table row (chalicelib/api/views.py instance_row / instance_view)."""

    instance_id: str
    agent_id: str | None
    instance_type: str | None
    region: str | None
    az: str | None
    pool_id: str | None
    mode: str | None
    status: Literal["active", "terminated"]
    role: str | None
    launched_at: Time | None
    terminated_at: Time | None
    current_price: float | None
    on_demand_price: float | None


class InstanceRowsReply(Reply):
    instances: list[InstanceRow]
    next_token: str | None


class InstancePool(Reply):
    pool_id: str
    instance_type: str | None
    az: str | None
    price: float | None
    savings_percent: float | None
    risk_score: float | None
    observed_at: Time | None = None
    is_current: bool | None = None


class InstancePricingReply(Reply):
    instance_id: str
    instance_type: str | None
    mode: str | None
    pool_id: str | None
    on_demand_price: float | None
    current_price: float | None
    pools: list[InstancePool]
    current_primary: bool  # the agent's current primary: the only instance force-switch acts on


class InstanceMetricsReply(Reply):
    instance_id: str
    status: Literal["active", "terminated"]
    uptime_seconds: int
    switches_7d: int
    switches_30d: int
    savings_30d: float
    savings_total: float


class AvailableOptionsReply(Reply):
    instance_id: str
    pools: list[InstancePool]
    instance_types: list[str]


class PricePoint(Reply):
    t: Time
    price: float | None
    min: float | None
    max: float | None
    last: float | None
    filled: bool
    points: int


class PriceSeries(Reply):
    pool_id: str
    points: list[PricePoint]


class InstancePriceHistoryReply(Reply):
    instance_id: str
    instance_type: str | None
    pool_id: str | None
    interval: Literal["hour", "day"]
    days: int
    on_demand_price: float | None
    series: list[PriceSeries]


class PricingHistoryReply(Reply):
    interval: Literal["hour", "day"]
    days: int
    agent_id: str | None
    series: list[PriceSeries]


class ClientSavingsReply(Reply):
    client_id: str
    summary: SavingsSummary
    monthly: list[SavingsMonth]
    daily: list[SavingsDay]


# --- admin fleet ----------------------------------------------------------------------------------

class GrowthDay(Reply):
    date: str
    clients_total: int
    clients_active: int
    agents_total: int
    agents_online: int
    instances_active: int
    total_savings: float


class GrowthReply(Reply):
    days: int
    growth: list[GrowthDay]


class ActiveModel(Reply):
    version: str | None
    source: Literal["model", "prior"]
    previous_version: str | None


class FleetStatsReply(Reply):
    clients_total: int
    clients_active: int
    agents_total: int
    agents_online: int
    instances_active: int
    switches_total: int
    switches_24h: int
    interruptions_24h: int
    pools_tracked: int
    counted_at: Time  # when the growth snapshot counted the figures above (every 15 minutes)
    savings: SavingsSummary
    active_model: ActiveModel


class AgentView(Reply):
    """An agent for dashboards (chalicelib/api/views.py agent_view)."""

    agent_id: str
    logical_agent_id: str | None
    status: str
    instance_id: str | None
    instance_type: str | None
    region: str | None
    az: str | None
    current_mode: str | None
    current_pool_id: str | None
    hostname: str | None
    agent_version: str | None
    last_heartbeat_at: Time | None
    registered_at: Time | None
    config: AgentConfig


class FleetAgent(AgentView):
    client_id: str


class FleetAgentsReply(Reply):
    agents: list[FleetAgent]
    next_token: str | None


class FleetInstance(InstanceRow):
    client_id: str


class FleetInstancesReply(Reply):
    instances: list[FleetInstance]
    next_token: str | None


class AuditEvent(Reply):
    """One audit-log event of the admin feed (chalicelib/api/admin_fleet.py event_view)."""

    event_id: str
    event_type: str
    severity: str | None
    message: str | None
    client_id: str | None
    agent_id: str | None
    instance_id: str | None
    metadata: Any
    created_at: Time | None


class AuditEventsReply(Reply):
    events: list[AuditEvent]
    next_token: str | None


class SystemHealthReply(Reply):
    status: Literal["ok", "degraded"]
    checks: dict[str, str]
    stale_agents: int
    failed_replicas: int
    recent_errors: list[AuditEvent]
    active_model: ActiveModel | None
    checked_at: Time


class AdminClientRow(ClientView):
    agents_total: int
    agents_online: int
    instances_active: int
    total_savings: float


class AdminClientsReply(Reply):
    clients: list[AdminClientRow]
    next_token: str | None


class DeletedClientReply(Success):
    client_id: str
    deleted: dict[str, int]
    terminated_instances: list[str]


# --- risk models: presigned upload and the legacy dashboard's routes -------------------------------

class UploadUrlReply(Reply):
    """201: a presigned S3 POST for one artifact."""

    upload_id: str
    method: Literal["POST"]
    url: str
    fields: dict[str, str]
    file_field: str
    max_bytes: int
    expires_in: int
    expires_at: Time
    register_route: str = Field(alias="register")  # "register" would shadow BaseModel.register


class LegacyModelVersion(Success, ModelVersionView):
    """A version in the legacy dashboard's words: an upload "session" is a version."""

    sessionId: str  # noqa: N815 - the legacy dashboard's key
    size_bytes: int | None


class ModelSession(ModelVersionView):
    sessionId: str  # noqa: N815 - the legacy dashboard's key
    is_live: bool
    is_fallback: bool
    files: list[str]
    total_size: int | None


class ModelSessionsReply(Reply):
    sessions: list[ModelSession]
    next_token: str | None
