"""components.rate_window: fixed windows and Retry-After."""

import pytest

from components.rate_window import Window, window_of


def test_window_bounds_and_retry_after():
    w = window_of(125.2, 60)
    assert w == Window(120, 180)
    assert w.retry_after(125.2) == 55
    assert w.retry_after(179.9) == 1  # never 0: the header asks for whole seconds
    assert window_of(180, 60).start == 180


def test_window_needs_a_length():
    with pytest.raises(ValueError):
        window_of(1, 0)
