"""Create the tables (with TTL) from the models: used by local mode and tests, never by Lambdas."""

from __future__ import annotations

from datetime import datetime, timezone

from pynamodb.attributes import TTLAttribute

from chalicelib.tables import ALL_TABLES, SPARSE_INDEXES


def ttl_attribute_name(table) -> str | None:
    """Name of the model's TTL attribute, if it has one."""
    for name, attr in table.get_attributes().items():
        if isinstance(attr, TTLAttribute):
            return attr.attr_name or name
    return None


def ensure_tables() -> list[str]:
    """Create every missing table and switch its TTL on; returns the names created. The sparse indexes of a table
    created here have nothing to backfill: they are recorded ready."""
    from chalicelib.repositories import sparse_indexes

    created = []
    for table in ALL_TABLES:
        if not table.exists():
            table.create_table(wait=True)
            created.append(table.Meta.table_name)
            if ttl_attribute_name(table):
                table.update_ttl(ignore_update_ttl_errors=False)
    for index in SPARSE_INDEXES:
        if index.model.Meta.table_name in created:
            sparse_indexes.mark_ready(index, datetime.now(timezone.utc))
    return created
