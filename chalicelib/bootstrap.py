"""Composition root: the adapters handlers use, built lazily once per container.

Tests and local mode call the same getters; nothing is built at import time.
"""

from __future__ import annotations

from functools import cache

from components.command_tracker import LeasePolicy, timings_for_agent_version

from chalicelib.repositories.commands import DynamoCommandStore
from chalicelib.settings import get_settings


@cache
def command_store() -> DynamoCommandStore:
    """The CommandStore adapter over DynamoDB."""
    return DynamoCommandStore()


@cache
def lease_policy(agent_version: str | None = None) -> LeasePolicy:
    """Lease length and retry budget for the commands of one kind of agent (by its ``agent_version``):
    the base lease from settings plus what the agent's own steps may take."""
    settings = get_settings()
    return LeasePolicy(base_lease_seconds=settings.command_lease_seconds,
                       max_attempts=settings.command_max_attempts,
                       agent=timings_for_agent_version(agent_version))


@cache
def placement_scores():
    """The PlacementScores adapter of this stage (``PLACEMENT_SCORES_SOURCE``: aws, file or off)."""
    from chalicelib.aws import spot_market

    settings = get_settings()
    if settings.placement_scores_source == "aws":
        return spot_market.AwsPlacementScores()
    if settings.placement_scores_source == "file" and settings.placement_scores_file:
        return spot_market.StaticPlacementScores.from_file(settings.placement_scores_file)
    return spot_market.NoPlacementScores()


@cache
def ondemand_prices():
    """The OnDemandPrices adapter of this stage (``ONDEMAND_PRICES_SOURCE``: aws or file), None when off."""
    from chalicelib.aws import ondemand_prices as prices

    settings = get_settings()
    if settings.ondemand_prices_source == "aws":
        return prices.AwsOnDemandPrices()
    if settings.ondemand_prices_source == "file" and settings.ondemand_prices_file:
        return prices.StaticOnDemandPrices(path=settings.ondemand_prices_file)
    return None
