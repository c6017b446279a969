"""Composition root: the adapters handlers use, built lazily once per container.

Tests and local mode call the same getters; nothing is built at import time.
"""

from __future__ import annotations

from functools import cache

from components.command_tracker import LeasePolicy

from chalicelib.repositories.commands import DynamoCommandStore
from chalicelib.settings import get_settings


@cache
def command_store() -> DynamoCommandStore:
    """The CommandStore adapter over DynamoDB."""
    return DynamoCommandStore()


@cache
def lease_policy() -> LeasePolicy:
    """Lease length and retry budget for agent commands (settings)."""
    settings = get_settings()
    return LeasePolicy(base_lease_seconds=settings.command_lease_seconds,
                       max_attempts=settings.command_max_attempts)
