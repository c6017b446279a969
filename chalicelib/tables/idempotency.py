"""The aws-lambda-powertools Idempotency table, declared here so every table has one definition."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name


class IdempotencyTable(Model):
    """Layout expected by powertools' DynamoDBPersistenceLayer (default attribute names)."""

    class Meta(BaseMeta):
        table_name = table_name("idempotency")

    id = UnicodeAttribute(hash_key=True)
    expiration = TTLAttribute(null=True)
    in_progress_expiration = NumberAttribute(null=True)
    status = OptionalText()
    data = OptionalText()
    validation = OptionalText()
