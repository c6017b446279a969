"""One reading of a cancelled DynamoDB transaction (``repositories.dynamo.cancellation_codes``): per item, in the
transaction's order, whether pynamodb parsed the answer or a bare botocore error carries it."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import CancellationReason, PutError, TransactWriteError, VerboseClientError

from chalicelib.errors import cancellation_reasons, transient_cancellation
from chalicelib.repositories.dynamo import cancellation_codes

CANCELLED = {"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"}}


def _parsed(*codes):
    cause = VerboseClientError(CANCELLED, "TransactWriteItems",
                               cancellation_reasons=[CancellationReason(c) if c else None for c in codes])
    return TransactWriteError("Failed to write transaction items", cause)


def _raw(*codes):
    return ClientError({**CANCELLED, "CancellationReasons": [{"Code": c or "None"} for c in codes]},
                       "TransactWriteItems")


@pytest.mark.parametrize("make", [_parsed, _raw, lambda *c: TransactWriteError("x", _raw(*c))],
                         ids=["pynamodb", "botocore", "pynamodb around botocore"])
def test_every_shape_of_the_answer_reads_the_same(make):
    error = make(None, "ConditionalCheckFailed", "TransactionConflict")
    assert cancellation_codes(error) == [None, "ConditionalCheckFailed", "TransactionConflict"]
    assert cancellation_reasons(error) == ["ConditionalCheckFailed", "TransactionConflict"]
    assert not transient_cancellation(error)
    assert transient_cancellation(make("TransactionConflict", None))


def test_other_errors_have_no_cancellation_reasons():
    throttled = ClientError({"Error": {"Code": "ThrottlingException"}, "CancellationReasons": [{"Code": "X"}]},
                            "TransactWriteItems")
    for error in (throttled, TransactWriteError("x", throttled), PutError("x"), ValueError("x")):
        assert cancellation_codes(error) == [] and cancellation_reasons(error) == []


def test_a_real_cancellation_from_the_embedded_dynamodb_is_read_per_item():
    client = boto3.client("dynamodb", region_name="us-east-1")
    name = f"tx-codes-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    try:
        with pytest.raises(ClientError) as raised:
            client.transact_write_items(TransactItems=[
                {"Put": {"TableName": name, "Item": {"pk": {"S": "new"}}}},
                {"ConditionCheck": {"TableName": name, "Key": {"pk": {"S": "absent"}},
                                    "ConditionExpression": "attribute_exists(pk)"}}])
        assert cancellation_codes(raised.value) == [None, "ConditionalCheckFailed"]
    finally:
        client.delete_table(TableName=name)
