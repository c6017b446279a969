"""Local mode's partition-only DynamoDB queries (localmode/embedded_aws.py, ``_query_reads_its_partition``).

moto answers a Query from every item of the table; the embedded AWS hands it only the items of the
queried partition. The answers must be moto's own, item for item and page for page: base table and
index, key conditions on the sort key, filters, both directions, limits and paging.
"""

from __future__ import annotations

import uuid

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.dynamodb.models.table import Table

from localmode import embedded_aws

embedded_aws._query_reads_its_partition()  # installed by tests/conftest.py already; here on its own too

REGION = "us-east-1"


@pytest.fixture(scope="module")
def table():
    client = boto3.client("dynamodb", region_name=REGION)
    name = f"q-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "g", "gs")],
        GlobalSecondaryIndexes=[
            {"IndexName": "by_g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"},
                                                {"AttributeName": "gs", "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": "ALL"}},
            {"IndexName": "by_g_only", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "KEYS_ONLY"}},
        ])
    for p in range(6):
        for s in range(12):
            item = {"pk": {"S": f"p{p}"}, "sk": {"S": f"s{s:02d}"}, "n": {"N": str((p * 7 + s) % 5)}}
            if (p + s) % 3:  # a sparse index: a third of the items carry no index key
                item |= {"g": {"S": f"g{(p * s) % 4}"}, "gs": {"S": f"t{(s * 5) % 7}"}}
            client.put_item(TableName=name, Item=item)
    yield client, name
    client.delete_table(TableName=name)


def _pages(client, request: dict) -> list:
    """Every page of a query: its items and where it stopped."""
    pages, start = [], None
    while True:
        answer = client.query(**request, **({"ExclusiveStartKey": start} if start else {}))
        pages.append((answer["Items"], answer.get("LastEvaluatedKey"), answer["Count"], answer["ScannedCount"]))
        start = answer.get("LastEvaluatedKey")
        if not start or len(pages) > 50:
            return pages


def _moto_own(monkeypatch):
    """moto's Query exactly as shipped, for this block."""
    monkeypatch.setattr(Table, "query", Table.query.moto_query)
    monkeypatch.setattr(Table, "all_items", Table.all_items.moto_all_items)


queries = st.fixed_dictionaries({
    "on": st.sampled_from(["table", "by_g", "by_g_only"]),
    "key": st.integers(0, 6),
    "range": st.sampled_from([None, "begins_with", "between", ">="]),
    "filter": st.booleans(),
    "forward": st.booleans(),
    "limit": st.sampled_from([None, 1, 3, 7]),
})


def _request(name: str, q: dict) -> dict:
    hash_name, hash_value = ("pk", f"p{q['key']}") if q["on"] == "table" else ("g", f"g{q['key']}")
    sort = "sk" if q["on"] == "table" else "gs"
    condition, values = f"{hash_name} = :h", {":h": {"S": hash_value}}
    if q["range"] and q["on"] != "by_g_only":
        condition += {"begins_with": f" AND begins_with({sort}, :a)", "between": f" AND {sort} BETWEEN :a AND :b",
                      ">=": f" AND {sort} >= :a"}[q["range"]]
        values |= {":a": {"S": "s0" if sort == "sk" else "t2"}}
        if q["range"] == "between":
            values[":b"] = {"S": "s09" if sort == "sk" else "t5"}
    request = {"TableName": name, "KeyConditionExpression": condition, "ExpressionAttributeValues": values,
               "ScanIndexForward": q["forward"]}
    if q["on"] != "table":
        request["IndexName"] = q["on"]
    if q["filter"] and q["on"] != "by_g_only":
        request["FilterExpression"] = "n <> :zero"
        values[":zero"] = {"N": "0"}
    if q["limit"]:
        request["Limit"] = q["limit"]
    return request


@settings(max_examples=60)
@given(q=queries)
def test_every_query_answers_as_moto_does(table, q):
    client, name = table
    request = _request(name, q)
    ours = _pages(client, request)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _moto_own(monkeypatch)
        theirs = _pages(client, request)
    assert ours == theirs


def test_a_partition_that_holds_nothing_answers_empty(table):
    client, name = table
    assert client.query(TableName=name, KeyConditionExpression="pk = :h",
                        ExpressionAttributeValues={":h": {"S": "nobody"}})["Items"] == []
    assert client.query(TableName=name, IndexName="by_g", KeyConditionExpression="g = :h",
                        ExpressionAttributeValues={":h": {"S": "nobody"}})["Items"] == []


def test_a_query_reads_only_its_partition(table, monkeypatch):
    """The point of the patch: a query does not walk the table (a scan still does, which shows the count works)."""
    client, name = table
    walked, every_item = [], Table.all_items.moto_all_items

    def counting(self):
        walked.append(self.name)
        return every_item(self)

    monkeypatch.setattr(Table.all_items, "moto_all_items", counting)
    for request in ({"KeyConditionExpression": "pk = :h", "ExpressionAttributeValues": {":h": {"S": "p1"}}},
                    {"IndexName": "by_g", "KeyConditionExpression": "g = :h",
                     "ExpressionAttributeValues": {":h": {"S": "g1"}}}):
        assert client.query(TableName=name, **request)["Items"]
    assert walked == []
    client.scan(TableName=name)
    assert walked == [name]
