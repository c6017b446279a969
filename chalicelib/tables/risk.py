"""Risk scores per pool over time, and the decisions made with them (both expire by TTL)."""

from __future__ import annotations

from pynamodb.attributes import JSONAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name


class RiskScoreTable(Model):
    """Every score the risk scorer wrote (the latest also sits on the pool item)."""

    class Meta(BaseMeta):
        table_name = table_name("risk-scores")

    pool_id = UnicodeAttribute(hash_key=True)
    scored_at = UTCDateTimeAttribute(range_key=True)
    risk = NumberAttribute()
    source = UnicodeAttribute()  # "model" or "prior"
    model_version = OptionalText()
    horizon_s = NumberAttribute()
    expires_at = TTLAttribute()


class DecisionTable(Model):
    """One decision for one agent: inputs, scores, outcome and the reason in words."""

    class Meta(BaseMeta):
        table_name = table_name("decisions")

    agent_id = UnicodeAttribute(hash_key=True)
    decision_key = UnicodeAttribute(range_key=True)  # <decided_at>#<id>: newest last
    client_id = UnicodeAttribute()
    decided_at = UTCDateTimeAttribute()
    source = UnicodeAttribute()  # decision-cycle, decide, switch-recommendation
    current = UnicodeAttribute()
    action = UnicodeAttribute()
    target = UnicodeAttribute()
    standby = OptionalText()
    reason = UnicodeAttribute()
    risk = NumberAttribute(null=True)
    expected_cost = JSONAttribute(null=True)
    inputs = JSONAttribute(null=True)
    command_id = OptionalText()
    expires_at = TTLAttribute()


class ModelRegistryTable(Model):
    """Risk-model versions (artifact in S3) and, under version ``_active``, the active pointer."""

    class Meta(BaseMeta):
        table_name = table_name("model-registry")

    name = UnicodeAttribute(hash_key=True)
    version = UnicodeAttribute(range_key=True)
    status = UnicodeAttribute(default="pending")  # pending, active, archived; the pointer: "pointer"
    s3_key = OptionalText()
    sha256 = OptionalText()
    manifest = JSONAttribute(null=True)
    rejected_because = OptionalText()  # why validation refused the version
    size_bytes = NumberAttribute(null=True)  # the artifact's size (versions uploaded before it: unset)
    active_version = OptionalText()  # only on the pointer item
    previous_version = OptionalText()  # only on the pointer item: for rollback
    created_at = UTCDateTimeAttribute()
    activated_at = UTCDateTimeAttribute(null=True)
