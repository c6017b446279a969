"""S3 objects of the model bucket."""

from __future__ import annotations

from functools import cache

from chalicelib.settings import get_settings


@cache
def _client():
    import boto3

    return boto3.session.Session().client("s3", region_name=get_settings().region)


def put_bytes(key: str, data: bytes) -> None:
    """Store an object in the model bucket."""
    _client().put_object(Bucket=get_settings().model_bucket, Key=key, Body=data)


def get_bytes(key: str) -> bytes:
    """Read an object from the model bucket."""
    return _client().get_object(Bucket=get_settings().model_bucket, Key=key)["Body"].read()


class ObjectTooLarge(Exception):
    """The object is bigger than the caller accepts (it was not downloaded)."""


def get_bytes_at_most(key: str, max_bytes: int) -> bytes | None:
    """Read an object of the model bucket if it is at most ``max_bytes`` (ObjectTooLarge otherwise, before
    its body is read); None when there is no such object."""
    client = _client()
    try:
        found = client.get_object(Bucket=get_settings().model_bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    if found["ContentLength"] > max_bytes:
        found["Body"].close()
        raise ObjectTooLarge(f"{found['ContentLength']} bytes")
    return found["Body"].read()


def presigned_upload(key: str, max_bytes: int, expires_s: int) -> dict:
    """A presigned POST (``url`` and form ``fields``) that lets its holder put exactly one object at ``key`` of
    at most ``max_bytes``, for ``expires_s`` seconds. Signed locally (no AWS call); the upload itself is an
    ``s3:PutObject`` of this function's role."""
    return _client().generate_presigned_post(
        Bucket=get_settings().model_bucket, Key=key,
        Conditions=[["content-length-range", 1, max_bytes]], ExpiresIn=expires_s)


def ensure_bucket() -> None:
    """Create the model bucket (local mode and tests only; infra/ owns it in AWS)."""
    client, bucket = _client(), get_settings().model_bucket
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
