"""Shared pieces of every pynamodb table: naming, region, billing, registry.

The pynamodb models in this package are the single source of truth for the tables: local mode,
the tests and infra/ all create tables from them (see ``registry.ALL_TABLES``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pynamodb.attributes import Attribute, UnicodeAttribute
from pynamodb.constants import NUMBER
from pynamodb.expressions.condition import Condition

from chalicelib.settings import table_prefix


def table_name(logical_name: str) -> str:
    """Physical table name for this stage (``spot-optimizer-dev-agents``)."""
    return f"{table_prefix()}{logical_name}"


def region() -> str:
    """Region the tables live in; pynamodb needs it at class creation."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


class BaseMeta:
    """Meta defaults: on-demand billing; the endpoint comes from AWS_ENDPOINT_URL in local mode."""

    region = region()
    billing_mode = "PAY_PER_REQUEST"


class OptionalText(UnicodeAttribute):
    """A nullable string attribute (readability shorthand)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("null", True)
        super().__init__(**kwargs)


class DecimalAttribute(Attribute[Decimal]):
    """A DynamoDB number kept exact as ``Decimal`` (prices and money never pass through float)."""

    attr_type = NUMBER

    def serialize(self, value):
        return str(Decimal(str(value)))

    def deserialize(self, value):
        return Decimal(value)


@dataclass(frozen=True)
class SparseIndex:
    """A sparse global secondary index: a row is in it only while it carries ``key`` (DynamoDB leaves a row without
    the index's key out of the index). Every write that makes a row belong sets ``key`` to ``value(row)``, the one
    that ends it removes it, so a read of the index sees the few rows that belong instead of filtering a tenant's
    whole history. Rows written before the index existed (a stage upgraded in place) get their key from the cleanup
    job's backfill (``chalicelib.repositories.sparse_indexes``); until it has finished, readers use the filtered read.

    ``belongs`` is the condition a row of the index meets (e.g. an active instance); ``name`` keys its backfill."""

    name: str
    model: type
    key: Attribute
    belongs: Callable[[], Condition]
    value: Callable[[Any], str]
