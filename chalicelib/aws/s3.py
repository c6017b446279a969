"""S3 objects of the model bucket."""

from __future__ import annotations

from functools import cache

import boto3

from chalicelib.settings import get_settings


@cache
def _client():
    return boto3.session.Session().client("s3", region_name=get_settings().region)


def put_bytes(key: str, data: bytes) -> None:
    """Store an object in the model bucket."""
    _client().put_object(Bucket=get_settings().model_bucket, Key=key, Body=data)


def get_bytes(key: str) -> bytes:
    """Read an object from the model bucket."""
    return _client().get_object(Bucket=get_settings().model_bucket, Key=key)["Body"].read()


def ensure_bucket() -> None:
    """Create the model bucket (local mode and tests only; infra/ owns it in AWS)."""
    client, bucket = _client(), get_settings().model_bucket
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
