"""Small helpers shared by the repositories: condition failures and transaction reasons."""

from __future__ import annotations

from functools import cache

from botocore.exceptions import ClientError
from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, PutError, PynamoDBException

from chalicelib.tables.base import region

CONDITION_FAILED = "ConditionalCheckFailedException"


def condition_failed(exc: BaseException) -> bool:
    """True when a put/update/delete failed only because its condition did not hold."""
    return isinstance(exc, PynamoDBException) and exc.cause_response_code == CONDITION_FAILED


def set_or_remove(attribute, value):
    """The update action that stores ``value`` in ``attribute``, or removes the attribute when ``value`` is None."""
    return attribute.set(value) if value is not None else attribute.remove()


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


def cancellation_codes(exc: BaseException) -> list[str | None]:
    """Per-item reasons DynamoDB gave for cancelling a transaction (``TransactionCanceledException``), in the
    transaction's item order: a code (``ConditionalCheckFailed``, ``TransactionConflict``, ``ThrottlingError``…)
    or None for an item that was fine; [] for any other error. The one reading of that answer: pynamodb's parsed
    reasons, or the raw ``CancellationReasons`` of a botocore error that reached us unwrapped."""
    cause = exc.cause if isinstance(exc, PynamoDBException) else exc
    if not isinstance(cause, ClientError) or cause.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return []
    parsed = getattr(cause, "cancellation_reasons", None)  # pynamodb's VerboseClientError
    if parsed is not None:
        return [r.code if r is not None and r.code else None for r in parsed]
    return [r.get("Code") if r.get("Code") not in (None, "None") else None
            for r in cause.response.get("CancellationReasons", [])]


@cache
def transaction_connection() -> Connection:
    """A connection for TransactWrite/TransactGet (endpoint from AWS_ENDPOINT_URL if set).

    Built once per container: each new Connection creates a botocore client (~0.1 s per write otherwise).
    """
    return Connection(region=region())
