"""Integration-test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _made_up_types(made_up_types_are_catalogued):
    """Types a test made up count as catalogued (tests.conftest.MADE_UP_TYPE)."""
