"""DynamoDB tables generated from the pynamodb models (``chalicelib.tables.ALL_TABLES``).

Nothing here names a table, a key or an index: every value is read from the model classes, so a
change to a model changes the stack on the next synth. Local mode and the tests create the same
tables from the same models (``chalicelib.tables.provisioning``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct
from pynamodb.indexes import GlobalSecondaryIndex, LocalSecondaryIndex

from chalicelib.tables.provisioning import ttl_attribute_name

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_PROJECTIONS = {
    "ALL": dynamodb.ProjectionType.ALL,
    "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
    "INCLUDE": dynamodb.ProjectionType.INCLUDE,
}


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # "S" | "N" | "B"


@dataclass(frozen=True)
class IndexSpec:
    name: str
    kind: str  # "global" | "local"
    hash_key: Key
    range_key: Key | None
    projection: str  # "ALL" | "KEYS_ONLY" | "INCLUDE"
    non_key_attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """What a pynamodb model says about its table, in plain values."""

    model_name: str
    table_name: str
    hash_key: Key
    range_key: Key | None
    indexes: tuple[IndexSpec, ...] = field(default=())
    ttl_attribute: str | None = None
    billing_mode: str = "PAY_PER_REQUEST"
    stream_view_type: str | None = None


def _key(attribute) -> Key:
    if attribute.attr_type not in _ATTRIBUTE_TYPES:
        raise ValueError(f"attribute {attribute.attr_name!r} has type {attribute.attr_type!r}; "
                         "a DynamoDB key must be S, N or B")
    return Key(attribute.attr_name, attribute.attr_type)


def _optional_key(attribute) -> Key | None:
    return _key(attribute) if attribute is not None else None


def _index_spec(model, index) -> IndexSpec:
    meta = index.Meta
    projection = getattr(meta, "projection", None)
    if projection is None:
        raise ValueError(f"{model.__name__}: index {meta.index_name!r} declares no projection")
    if isinstance(index, GlobalSecondaryIndex):
        kind = "global"
    elif isinstance(index, LocalSecondaryIndex):
        kind = "local"
    else:  # pragma: no cover - pynamodb has only these two
        raise TypeError(f"{model.__name__}: unknown index kind {type(index).__name__}")
    attributes = list(meta.attributes.values())  # pynamodb collects the index's key attributes here
    hash_attrs = [a for a in attributes if a.is_hash_key]
    range_attrs = [a for a in attributes if a.is_range_key]
    if len(hash_attrs) != 1 or len(range_attrs) > 1:
        raise ValueError(f"{model.__name__}: index {meta.index_name!r} needs one hash key and at most one "
                         f"range key, has {len(hash_attrs)} and {len(range_attrs)}")
    return IndexSpec(
        name=meta.index_name,
        kind=kind,
        hash_key=_key(hash_attrs[0]),
        range_key=_key(range_attrs[0]) if range_attrs else None,
        projection=projection.projection_type,
        non_key_attributes=tuple(getattr(projection, "non_key_attributes", None) or ()),
    )


def table_spec(model) -> TableSpec:
    """Read a pynamodb model class into a :class:`TableSpec`."""
    meta = model.Meta
    billing = getattr(meta, "billing_mode", None) or "PROVISIONED"
    if billing != "PAY_PER_REQUEST":
        raise ValueError(f"{model.__name__}: billing_mode {billing!r}; every table is PAY_PER_REQUEST")
    return TableSpec(
        model_name=model.__name__,
        table_name=meta.table_name,
        hash_key=_key(model._hash_key_attribute()),
        range_key=_optional_key(model._range_key_attribute()),
        indexes=tuple(_index_spec(model, index) for _, index in sorted(model._indexes.items())),
        ttl_attribute=ttl_attribute_name(model),
        billing_mode=billing,
        stream_view_type=getattr(meta, "stream_view_type", None),
    )


def _attribute(key: Key | None) -> dynamodb.Attribute | None:
    if key is None:
        return None
    return dynamodb.Attribute(name=key.name, type=_ATTRIBUTE_TYPES[key.type])


def construct_id(spec: TableSpec) -> str:
    """Stable logical id per model (``AgentTable`` → ``AgentTable``), independent of the stage."""
    return spec.model_name


def create_table(scope: Construct, spec: TableSpec, *, removal_policy: RemovalPolicy,
                 deletion_protection: bool) -> dynamodb.Table:
    """One ``AWS::DynamoDB::Table`` from a :class:`TableSpec`."""
    table = dynamodb.Table(
        scope,
        construct_id(spec),
        table_name=spec.table_name,
        partition_key=_attribute(spec.hash_key),
        sort_key=_attribute(spec.range_key),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True),
        time_to_live_attribute=spec.ttl_attribute,
        stream=dynamodb.StreamViewType(spec.stream_view_type) if spec.stream_view_type else None,
        removal_policy=removal_policy,
        deletion_protection=deletion_protection,
    )
    for index in spec.indexes:
        projection = dict(projection_type=_PROJECTIONS[index.projection],
                          non_key_attributes=list(index.non_key_attributes) or None)
        if index.kind == "global":
            table.add_global_secondary_index(index_name=index.name, partition_key=_attribute(index.hash_key),
                                             sort_key=_attribute(index.range_key), **projection)
        else:
            if index.hash_key != spec.hash_key or index.range_key is None:
                raise ValueError(f"{spec.model_name}: local index {index.name!r} must share the table's "
                                 "hash key and have a range key")
            table.add_local_secondary_index(index_name=index.name, sort_key=_attribute(index.range_key),
                                            **projection)
    return table


def create_tables(scope: Construct, models, *, removal_policy: RemovalPolicy,
                  deletion_protection: bool) -> dict[str, dynamodb.Table]:
    """Every table of ``models`` (``ALL_TABLES``), keyed by model class name."""
    specs = [table_spec(model) for model in models]
    names = [spec.table_name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"two models share a table name: {duplicates}")
    return {spec.model_name: create_table(scope, spec, removal_policy=removal_policy,
                                          deletion_protection=deletion_protection)
            for spec in specs}
