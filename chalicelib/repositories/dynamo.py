"""Small helpers shared by the repositories: condition failures and transaction reasons."""

from __future__ import annotations

from functools import cache

from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, PutError, PynamoDBException, TransactWriteError

from chalicelib.tables.base import region

CONDITION_FAILED = "ConditionalCheckFailedException"


def condition_failed(exc: BaseException) -> bool:
    """True when a put/update/delete failed only because its condition did not hold."""
    return isinstance(exc, PynamoDBException) and exc.cause_response_code == CONDITION_FAILED


def save_if(row, condition) -> bool:
    """Save ``row`` if ``condition`` holds (always when None); False when it did not, nothing written."""
    try:
        row.save(condition=condition)
    except PutError as exc:
        if condition is not None and condition_failed(exc):
            return False
        raise
    return True


def delete_each(rows, condition, budget: int) -> int:
    """Delete ``rows`` one by one while ``condition`` still holds for each (a row that changed meanwhile
    is skipped), at most ``budget``; returns how many were deleted. Retention jobs use it."""
    deleted = 0
    for row in rows:
        if deleted >= budget:
            break
        try:
            row.delete(condition=condition)
        except DeleteError as exc:
            if condition_failed(exc):
                continue
            raise
        deleted += 1
    return deleted


def cancellation_codes(exc: TransactWriteError) -> list[str | None]:
    """Per-item reasons of a cancelled transaction (``ConditionalCheckFailed`` or None)."""
    return [r.code if r else None for r in (exc.cancellation_reasons or [])]


@cache
def transaction_connection() -> Connection:
    """A connection for TransactWrite/TransactGet (endpoint from AWS_ENDPOINT_URL if set).

    Built once per container: each new Connection creates a botocore client (~0.1 s per write otherwise).
    """
    return Connection(region=region())
