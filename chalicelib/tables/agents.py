"""Agents with their configuration; keyed by (client_id, agent_id) so tenancy is in the key."""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name

LIVE = "live"


class AgentConfigMap(MapAttribute):
    """Per-agent switching and replica settings (legacy ``agent_configs`` folded in)."""

    enabled = BooleanAttribute(default=True)
    auto_switch_enabled = BooleanAttribute(default=True)
    auto_terminate_enabled = BooleanAttribute(default=True)
    terminate_wait_seconds = NumberAttribute(default=300)
    manual_replica_enabled = BooleanAttribute(default=False)
    replica_enabled = BooleanAttribute(default=False)
    replica_count = NumberAttribute(default=0)
    # Safety rails a user may set; the defaults leave the expected-cost arithmetic in charge
    # (components.decision_engine.DecisionConfig): no minimum saving, no risk ceiling, no minimum stay.
    min_savings_percent = NumberAttribute(default=0)
    risk_threshold = NumberAttribute(default=1.0)
    max_switches_per_day = NumberAttribute(default=3)
    max_switches_per_week = NumberAttribute(default=10)
    min_pool_duration_hours = NumberAttribute(default=0)
    # Traffic hand-off on failover: "none", "eip" (allocation id) or "target-group" (ARN + port).
    handover = UnicodeAttribute(default="none")
    eip_allocation_id = UnicodeAttribute(null=True)
    target_group_arn = UnicodeAttribute(null=True)
    target_port = NumberAttribute(null=True)
    # Interchangeable instance types (components.instance_types): the declared list and requirements as
    # given, and the types they resolve to (the agent's own first). Unset = the agent's own type only.
    instance_types = ListAttribute(of=UnicodeAttribute, null=True)
    type_requirements = MapAttribute(null=True)
    allowed_instance_types = ListAttribute(of=UnicodeAttribute, null=True)


class AgentsByLogicalIdIndex(GlobalSecondaryIndex):
    """Agents of a client ordered by their logical id (listing): keys and ``status`` only, so that a heartbeat,
    which rewrites ``last_heartbeat_at`` and ``updated_at``, never rewrites it. The listing filters on
    ``status`` here and reads the rows it shows by key."""

    class Meta:
        index_name = "agent-keys-by-logical-id"
        projection = IncludeProjection(["status"])

    client_id = UnicodeAttribute(hash_key=True)
    logical_agent_id = UnicodeAttribute(range_key=True)


class LiveAgentsByHeartbeatIndex(GlobalSecondaryIndex):
    """Sparse: only agents that are online or degraded, by the bucket of their last heartbeat (health
    monitor). The bucket (``components.sentinel.heartbeat_bucket``) changes once per bucket, not per
    heartbeat, so a routine heartbeat leaves the index alone; the monitor reads the rows of the buckets up to
    its cutoff's and compares ``last_heartbeat_at`` itself."""

    class Meta:
        index_name = "live-agents-by-heartbeat-bucket"
        projection = KeysOnlyProjection()

    liveness = UnicodeAttribute(hash_key=True)
    heartbeat_bucket = UTCDateTimeAttribute(range_key=True)


class LiveAgentsByPoolIndex(GlobalSecondaryIndex):
    """Sparse: live agents (online or degraded) that run in a known pool, by pool, with their mode. The risk
    scorer counts each scored pool's live spot agents per client with one Query (``agents.live_spot_counts``), never
    a scan of the fleet. Keys and ``current_mode`` only: a heartbeat that leaves the pool, the liveness and the
    mode alone never rewrites it."""

    class Meta:
        index_name = "live-agents-by-pool"
        projection = IncludeProjection(["current_mode"])

    current_pool_id = UnicodeAttribute(hash_key=True)
    liveness = UnicodeAttribute(range_key=True)


class AgentTable(Model):
    """One logical agent. Its id is derived from (client, logical id), see components.agent_identity."""

    class Meta(BaseMeta):
        table_name = table_name("agents")

    client_id = UnicodeAttribute(hash_key=True)
    agent_id = UnicodeAttribute(range_key=True)
    logical_agent_id = UnicodeAttribute()
    status = UnicodeAttribute(default="offline")
    liveness = OptionalText()
    hostname = OptionalText()
    instance_id = OptionalText()
    instance_type = OptionalText()
    region = OptionalText()
    az = OptionalText()
    ami_id = OptionalText()
    private_ip = OptionalText()
    public_ip = OptionalText()
    current_mode = UnicodeAttribute(default="unknown")
    current_pool_id = OptionalText()
    agent_version = OptionalText()
    instance_count = NumberAttribute(default=1)
    registered_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    last_heartbeat_at = UTCDateTimeAttribute(null=True)
    heartbeat_bucket = UTCDateTimeAttribute(null=True)  # start of last_heartbeat_at's bucket: written with it
    last_pricing_at = UTCDateTimeAttribute(null=True)
    last_switch_at = UTCDateTimeAttribute(null=True)
    last_switch_id = OptionalText()  # the switch that set last_switch_at: a repeated report cannot record it twice
    # The UTC day of the agent's last recorded switch and how many it recorded that day: the daily switch bound
    # (chalicelib/repositories/switches.py ``record``), a condition of each switch's own transaction.
    switch_day = OptionalText()
    switch_day_count = NumberAttribute(null=True)
    deleted_at = UTCDateTimeAttribute(null=True)
    config = AgentConfigMap(default=AgentConfigMap)
    config_version = NumberAttribute(default=1)
    current_replica_id = OptionalText()  # the standby slot: set only by a conditional transaction
    replica_generation = NumberAttribute(default=0)
    last_interruption_at = UTCDateTimeAttribute(null=True)
    interruption_count = NumberAttribute(default=0)
    # Verified identity (chalicelib.identity_documents): the AWS account of the signed document, and the
    # SHA-256 of the agent credential issued with it (never the credential itself).
    account_id = OptionalText()
    credential_hash = OptionalText()
    # The instance that credential was issued to, and the credential before it with its instance: after a
    # switch the old instance's agent reports its termination once more, after the new instance's agent has
    # registered (chalicelib/api/agents.py, switch_report: that one report only).
    credential_instance_id = OptionalText()
    retired_credential_hash = OptionalText()
    retired_credential_instance_id = OptionalText()
    # Copy of "the client is inactive", so an agent credential is checked with this row's GetItem alone.
    client_suspended = BooleanAttribute(null=True)
    # Pending + executing commands (chalicelib/repositories/commands.py keeps it in the same transaction as
    # each command's enqueue and finish): 0 lets a heartbeat or poll skip the queue Query. Missing (rows from
    # before the counter) = unknown: the queue is read, and set to 0 once it is seen empty.
    active_commands = NumberAttribute(null=True)
    # The last heartbeat naming an instance the agent left that still runs (a switch or promotion under
    # auto-terminate off), and that instance: a v4 agent there polls pending-commands naming no instance.
    kept_agent_seen_at = UTCDateTimeAttribute(null=True)
    kept_agent_instance_id = OptionalText()
    # False: the agent registered in spot_agent.py's protocol (X-Client-Token), which cannot run a command (its
    # "switch" sleeps 2 s and reports success): none is queued for it or delivered to it. Missing: it can.
    runs_commands = BooleanAttribute(null=True)
    # When manual-replica mode was last turned on (written with that config change): the time and key of its
    # audit event, so a repeat of an enable that died after the config write still writes it, once.
    manual_replica_since = UTCDateTimeAttribute(null=True)
    # When a config change last turned it off (written with that change): the time and key of the
    # ``manual_replica_disabled`` event, so a repeat of a disable that died after the config write still writes it.
    manual_replica_off_at = UTCDateTimeAttribute(null=True)
    # The client's last config change (chalicelib/api/replicas.py ``apply_config``), written with it: the
    # config_version it made and when, the time and key of its audit event, so a repeat of a change that died
    # after the config write still writes that event (and its other follow-ups), once.
    config_changed_version = NumberAttribute(null=True)
    config_changed_at = UTCDateTimeAttribute(null=True)
    # The client's last force-switch queued for this agent: each force-switch's enqueue is conditional on it being
    # the one read before the queue was, so two identical force-switches racing cannot both queue.
    last_force_switch_id = OptionalText()
    # A heartbeat mode contradicting current_mode, not written yet: the next heartbeat saying it again writes it
    # (repositories/agents.py ``_heartbeat_mode``: one beat is an IMDS hiccup, two agree on the instance).
    heartbeat_mode_disputed = OptionalText()
    # The last registration: a digest of its request, what it answered, and when. The same request again before the
    # agent's first heartbeat since (a retry whose answer was lost) answers as that one did.
    registration_digest = OptionalText()
    registration_action = OptionalText()
    registration_at = UTCDateTimeAttribute(null=True)

    by_logical_id = AgentsByLogicalIdIndex()
    live_by_heartbeat = LiveAgentsByHeartbeatIndex()
    live_by_pool = LiveAgentsByPoolIndex()
