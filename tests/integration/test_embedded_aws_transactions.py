"""Local mode's item-level rollback of DynamoDB transactions (localmode/embedded_aws.py).

moto restores a cancelled TransactWriteItems from a deep copy of each table it names; local mode
restores only the items the transaction touched. The outcome must be the same as moto's (and AWS's):
a cancelled transaction changes nothing, a successful one writes every op.
"""

from __future__ import annotations

import uuid

import boto3
import pytest
from moto.dynamodb import models
from moto.dynamodb.models import DynamoDBBackend

from localmode import embedded_aws


@pytest.fixture
def item_level(monkeypatch):
    """The patch applied (tests/conftest.py installs it for the whole session; this keeps the test
    meaningful on its own)."""
    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", DynamoDBBackend.transact_write_items)
    monkeypatch.setattr(models, "copy", models.copy)
    embedded_aws._item_level_transaction_rollback()
    assert getattr(DynamoDBBackend.transact_write_items, "item_level", False)


@pytest.fixture
def tables():
    client = boto3.client("dynamodb", region_name="us-east-1")
    names = {"plain": f"tx-plain-{uuid.uuid4().hex[:8]}", "ranged": f"tx-ranged-{uuid.uuid4().hex[:8]}"}
    client.create_table(TableName=names["plain"], BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    client.create_table(TableName=names["ranged"], BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "S"}])
    client.put_item(TableName=names["plain"], Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    client.put_item(TableName=names["ranged"], Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "1"}})
    yield client, names
    for name in names.values():
        client.delete_table(TableName=name)


def _dump(client, names) -> dict:
    return {kind: sorted(map(str, client.scan(TableName=name)["Items"])) for kind, name in names.items()}


def _cancelled_ops(names) -> list[dict]:
    """An update, a new item in each table, a delete, then a condition that fails: nothing may stay."""
    return [
        {"Update": {"TableName": names["plain"], "Key": {"pk": {"S": "a"}},
                    "UpdateExpression": "SET n = n + :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        {"Put": {"TableName": names["plain"], "Item": {"pk": {"S": "new"}, "n": {"N": "9"}}}},
        {"Put": {"TableName": names["ranged"], "Item": {"pk": {"S": "b"}, "sk": {"S": "1"}}}},
        {"Delete": {"TableName": names["ranged"], "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
        {"ConditionCheck": {"TableName": names["plain"], "Key": {"pk": {"S": "absent"}},
                            "ConditionExpression": "attribute_exists(pk)"}},
    ]


def test_a_cancelled_transaction_changes_nothing_and_keeps_the_table(item_level, tables):
    client, names = tables
    backend = models.dynamodb_backends["123456789012"]["us-east-1"]
    before, table = _dump(client, names), backend.tables[names["plain"]]
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(TransactItems=_cancelled_ops(names))
    assert _dump(client, names) == before
    assert backend.tables[names["plain"]] is table  # restored item by item, not swapped for a copy
    assert client.get_item(TableName=names["ranged"], Key={"pk": {"S": "b"}, "sk": {"S": "1"}}).get("Item") is None


def test_a_successful_transaction_writes_every_op(item_level, tables):
    client, names = tables
    client.transact_write_items(TransactItems=_cancelled_ops(names)[:4])
    plain = client.get_item(TableName=names["plain"], Key={"pk": {"S": "a"}})["Item"]
    assert plain["n"] == {"N": "2"}
    assert client.get_item(TableName=names["plain"], Key={"pk": {"S": "new"}})["Item"]["n"] == {"N": "9"}
    assert client.get_item(TableName=names["ranged"], Key={"pk": {"S": "a"}, "sk": {"S": "1"}}).get("Item") is None
    assert client.get_item(TableName=names["ranged"], Key={"pk": {"S": "b"}, "sk": {"S": "1"}})["Item"]


def test_same_outcome_as_moto_for_an_invalid_transaction(item_level, tables):
    client, names = tables
    before = _dump(client, names)
    twice = [{"Put": {"TableName": names["plain"], "Item": {"pk": {"S": "z"}}}},
             {"Delete": {"TableName": names["plain"], "Key": {"pk": {"S": "z"}}}}]
    with pytest.raises(client.exceptions.ClientError):
        client.transact_write_items(TransactItems=twice)
    assert _dump(client, names) == before
