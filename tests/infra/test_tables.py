"""infra/tables.py on a synthetic model: number keys, INCLUDE projection, a local index, streams, no TTL.

The product's models use only string keys and ALL/KEYS_ONLY projections; this proves the generator
handles the rest of what pynamodb can declare. One tiny stack, synthesised once.
"""

from __future__ import annotations

import pytest
from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection, LocalSecondaryIndex
from pynamodb.models import Model

pytestmark = pytest.mark.slow


class ByScore(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-score"
        projection = IncludeProjection(["label", "owner"])

    score = NumberAttribute(hash_key=True)


class ByLabel(LocalSecondaryIndex):
    class Meta:
        index_name = "by-label"
        projection = KeysOnlyProjection()

    shard = UnicodeAttribute(hash_key=True)
    label = UnicodeAttribute(range_key=True)


class Sample(Model):
    class Meta:
        table_name = "sample-table"
        billing_mode = "PAY_PER_REQUEST"
        stream_view_type = "NEW_AND_OLD_IMAGES"

    shard = UnicodeAttribute(hash_key=True)
    seq = NumberAttribute(range_key=True)
    score = NumberAttribute()
    label = UnicodeAttribute()
    owner = UnicodeAttribute(null=True)
    by_score = ByScore()
    by_label = ByLabel()


class WithTtl(Model):
    class Meta:
        table_name = "ttl-table"
        billing_mode = "PAY_PER_REQUEST"

    key = UnicodeAttribute(hash_key=True)
    gone_at = TTLAttribute(attr_name="goneAt")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.tables import create_tables

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = cdk.Stack(app, "sample")
    create_tables(stack, (Sample, WithTtl), removal_policy=cdk.RemovalPolicy.DESTROY, deletion_protection=False)
    resources = Template.from_stack(stack).to_json()["Resources"]
    return {r["Properties"]["TableName"]: r["Properties"] for r in resources.values()
            if r["Type"] == "AWS::DynamoDB::Table"}


def test_number_keys_include_projection_local_index_and_stream(tables):
    props = tables["sample-table"]
    assert {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]} == \
        {("shard", "S"), ("seq", "N"), ("score", "N"), ("label", "S")}
    (gsi,) = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "by-score" and gsi["KeySchema"] == [{"AttributeName": "score", "KeyType": "HASH"}]
    assert gsi["Projection"]["ProjectionType"] == "INCLUDE"
    assert sorted(gsi["Projection"]["NonKeyAttributes"]) == ["label", "owner"]
    (lsi,) = props["LocalSecondaryIndexes"]
    assert lsi["IndexName"] == "by-label" and lsi["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert {(k["AttributeName"], k["KeyType"]) for k in lsi["KeySchema"]} == {("shard", "HASH"), ("label", "RANGE")}
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert "TimeToLiveSpecification" not in props


def test_ttl_uses_the_stored_attribute_name(tables):
    assert tables["ttl-table"]["TimeToLiveSpecification"] == {"AttributeName": "goneAt", "Enabled": True}


def test_refuses_provisioned_tables_and_duplicate_names():
    from infra.tables import table_spec

    class Provisioned(Model):
        class Meta:
            table_name = "provisioned"

        key = UnicodeAttribute(hash_key=True)

    with pytest.raises(ValueError, match="PAY_PER_REQUEST"):
        table_spec(Provisioned)

    import aws_cdk as cdk

    from infra.tables import create_tables

    with pytest.raises(ValueError, match="share a table name"):
        create_tables(cdk.Stack(cdk.App(), "dup"), (WithTtl, WithTtl), removal_policy=cdk.RemovalPolicy.DESTROY,
                      deletion_protection=False)
