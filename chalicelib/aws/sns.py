"""SNS adapter: operator alerts for interruptions (a topic from infra/; optional in local mode)."""

from __future__ import annotations

import json
from functools import cache

from chalicelib.settings import get_settings


@cache
def _client():
    import boto3

    return boto3.session.Session().client("sns")


def publish(subject: str, message: dict) -> bool:
    """Publish to the notification topic when one is configured; True if sent."""
    topic = get_settings().notification_topic_arn
    if not topic:
        return False
    _client().publish(TopicArn=topic, Subject=subject[:100], Message=json.dumps(message, default=str))
    return True
