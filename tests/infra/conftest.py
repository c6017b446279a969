"""Fixtures of the infra tests."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from tests.infra.deployed_api import REGION


@pytest.fixture
def aws(monkeypatch):
    """An API Gateway client of an embedded AWS (the post-deploy steps' tests: tests/infra/deployed_api.py)."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("apigateway", region_name=REGION)
