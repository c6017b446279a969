"""Shared pieces of every pynamodb table: naming, region, billing, registry.

The pynamodb models in this package are the single source of truth for the tables: local mode,
the tests and infra/ all create tables from them (see ``registry.ALL_TABLES``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

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


class SparseKeyed:
    """A model that keeps its sparse index's key itself (mixed in before ``Model``): a row is in a sparse global
    secondary index only while it carries the index's key attribute (DynamoDB leaves a row without it out), so the
    key must follow the row's state on every write, which no writer should have to remember.

    ``sparse_key`` names the key attribute, ``sparse_sources`` the attributes it is derived from, and
    ``sparse_value()`` gives the key a row has now (None: not in the index). Every put derives it in ``serialize``
    (``Model.save``, ``TransactWrite.save`` and ``batch_write`` all serialize a row through it); an update that writes
    a source without writing the key (the model's own actions helpers do both) is refused before it is sent
    (``update``, and ``get_update_kwargs_from_instance`` for a transaction's update), so a writer that forgets
    fails its first test instead of leaving a closed row in the index or an open one out of it."""

    sparse_key: ClassVar[str]
    sparse_sources: ClassVar[frozenset[str]]

    def sparse_value(self) -> str | None:
        raise NotImplementedError

    def serialize(self, null_check: bool = True) -> dict[str, dict[str, Any]]:
        setattr(self, self.sparse_key, self.sparse_value())
        return super().serialize(null_check=null_check)  # type: ignore[misc]

    def update(self, actions: list, *args, **kwargs) -> Any:
        self._keeps_sparse_key(actions)
        return super().update(actions, *args, **kwargs)  # type: ignore[misc]

    def get_update_kwargs_from_instance(self, actions: list, *args, **kwargs) -> dict[str, Any]:
        self._keeps_sparse_key(actions)
        return super().get_update_kwargs_from_instance(actions, *args, **kwargs)  # type: ignore[misc]

    @classmethod
    def _keeps_sparse_key(cls, actions: list) -> None:
        written = {action.values[0].path[0] for action in actions}
        if written & cls.sparse_sources and cls.sparse_key not in written:
            raise ValueError(f"an update of {', '.join(sorted(written & cls.sparse_sources))} on {cls.__name__} must "
                             f"write {cls.sparse_key} too (the model's actions helper does)")


@dataclass(frozen=True)
class SparseIndex:
    """A sparse index of a ``SparseKeyed`` model, as the cleanup job's backfill knows it: rows written before the
    index existed (a stage upgraded in place) lack its key, and the backfill gives the rows that ``belongs`` (the
    condition a row of the index meets, e.g. an active instance) theirs (``chalicelib.repositories.sparse_indexes``);
    until it has finished, readers use the filtered read. ``name`` keys the backfill's progress."""

    name: str
    model: type
    belongs: Callable[[], Condition]

    @property
    def key(self) -> Attribute:
        """The model's attribute the index is keyed on."""
        return getattr(self.model, self.model.sparse_key)

    def value(self, row: Any) -> str | None:
        """The key ``row`` carries in the index (None: none)."""
        return row.sparse_value()
