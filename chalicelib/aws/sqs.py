"""SQS adapter: the fan-out dispatchers (decision cycle, savings roll-up) send their messages here, and the
sentinel sets a retried event's visibility (the queues are infra/'s)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import cache

from botocore.config import Config

BATCH = 10  # SendMessageBatch's limit
BATCH_BYTES = 256 * 1024  # SendMessageBatch's limit on the sum of its messages' sizes (a message's own is the same)
SEND_ATTEMPTS = 4  # an entry SQS reports as Failed is sent again this many times in all, then raised


class SendError(Exception):
    """Some messages could not be sent: the caller fails, nothing is silently lost."""


@cache
def _client():
    import boto3

    return boto3.session.Session().client(
        "sqs", config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=10))


@cache
def queue_url(name: str) -> str:
    """The URL of the queue ``name`` (asked once per container)."""
    return _client().get_queue_url(QueueName=name)["QueueUrl"]


def send_all(queue: str, bodies: Iterable[str], *, backoff_s: float = 0.2) -> int:
    """Send every body to ``queue``, up to ten per SendMessageBatch within its size limit; returns how many were sent.

    SendMessageBatch answers 200 with some entries ``Failed`` (throttled, SQS-side errors): those are sent
    again with a growing pause, and still failing after ``SEND_ATTEMPTS`` they raise SendError (the caller's
    invocation fails and is retried; a message already sent is harmless twice: its receiver is idempotent)."""
    url, sent = queue_url(queue), 0
    for batch in batches(bodies):
        entries = {str(i): body for i, body in enumerate(batch)}
        for attempt in range(SEND_ATTEMPTS):
            if attempt:
                time.sleep(backoff_s * 2 ** (attempt - 1))
            reply = _client().send_message_batch(QueueUrl=url, Entries=[
                {"Id": i, "MessageBody": body} for i, body in entries.items()])
            for ok in reply.get("Successful", []):
                entries.pop(ok["Id"], None)
                sent += 1
            failed = reply.get("Failed", [])
            if not entries:
                break
            if any(entry.get("SenderFault") for entry in failed):  # a bad request fails the same way again
                break
        if entries:
            codes = sorted({entry.get("Code", "?") for entry in reply.get("Failed", [])})
            raise SendError(f"{len(entries)} message(s) not sent to {queue} ({', '.join(codes)}); {sent} sent")
    return sent


def batches(bodies: Iterable[str]) -> Iterable[list[str]]:
    """The bodies in order, in batches of at most ``BATCH`` whose sizes add up to at most ``BATCH_BYTES`` (a body
    larger than that alone is a batch of its own, which SQS refuses: the caller's SendError)."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode("utf-8"))
        if batch and (len(batch) == BATCH or size + length > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += length
    if batch:
        yield batch


def ensure_queue(name: str, visibility_timeout_s: int | None = None) -> str:
    """Create the queue (local mode and tests only; infra/ owns it in AWS); returns its URL."""
    attributes = {"VisibilityTimeout": str(visibility_timeout_s)} if visibility_timeout_s is not None else {}
    return _client().create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def retry_after(queue: str, delays: dict[str, int]) -> int:
    """Make received messages of ``queue`` visible again after their own delay (receipt handle → seconds)
    instead of the queue's visibility timeout; returns how many SQS accepted. A handle SQS refuses (the
    message was deleted, or received again meanwhile) keeps the queue's timeout: nothing is lost either way."""
    url, entries, accepted = queue_url(queue), list(delays.items()), 0
    for start in range(0, len(entries), BATCH):
        reply = _client().change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
            for i, (handle, seconds) in enumerate(entries[start:start + BATCH])])
        accepted += len(reply.get("Successful", []))
    return accepted
