"""Create the tables (with TTL) from the models: used by local mode and tests, never by Lambdas."""

from __future__ import annotations

from pynamodb.attributes import TTLAttribute

from chalicelib.tables import ALL_TABLES


def ttl_attribute_name(table) -> str | None:
    """Name of the model's TTL attribute, if it has one."""
    for name, attr in table.get_attributes().items():
        if isinstance(attr, TTLAttribute):
            return attr.attr_name or name
    return None


def ensure_tables() -> list[str]:
    """Create every missing table and switch its TTL on; returns the names created."""
    created = []
    for table in ALL_TABLES:
        if not table.exists():
            table.create_table(wait=True)
            created.append(table.Meta.table_name)
            if ttl_attribute_name(table):
                table.update_ttl(ignore_update_ttl_errors=False)
    return created
