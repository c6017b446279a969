"""Small helpers shared by the repositories: condition failures and transaction reasons."""

from __future__ import annotations

from functools import cache

from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError

from chalicelib.tables.base import region

CONDITION_FAILED = "ConditionalCheckFailedException"


def condition_failed(exc: BaseException) -> bool:
    """True when a put/update/delete failed only because its condition did not hold."""
    return isinstance(exc, PynamoDBException) and exc.cause_response_code == CONDITION_FAILED


def cancellation_codes(exc: TransactWriteError) -> list[str | None]:
    """Per-item reasons of a cancelled transaction (``ConditionalCheckFailed`` or None)."""
    return [r.code if r else None for r in (exc.cancellation_reasons or [])]


@cache
def transaction_connection() -> Connection:
    """A connection for TransactWrite/TransactGet (endpoint from AWS_ENDPOINT_URL if set).

    Built once per container: each new Connection creates a botocore client (~0.1 s per write otherwise).
    """
    return Connection(region=region())
