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

from pydantic import BaseModel, ConfigDict


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
    accounts: list[AccountBinding]


class ClientAccountsReply(AccountsReply):
    tenancy: str


class Limits(Reply):
    max_agents: int | None
    max_instances: int | None
    max_standby_usd_per_hour: float | None
    max_instance_vcpus: int | None
    allow_accelerated_types: bool
    allowed_instance_families: list[str]


class LimitsReply(Reply):
    client_id: str
    limits: Limits


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


class ForceSwitchReply(Success):
    command: CommandView


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
    rate_limit_per_window: int | None
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


class ActivityEvent(Reply):
    event_type: str
    severity: str | None
    message: str | None
    client_id: str | None
    agent_id: str | None
    instance_id: str | None
    created_at: Time | None


class ActivityReply(Reply):
    events: list[ActivityEvent]


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
