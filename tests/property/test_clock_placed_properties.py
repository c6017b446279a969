"""Properties of ``chalicelib.clock.placed``: where the server puts the times an agent's clock gave for one event
(a switch's start, launch, readiness, hand-over and termination) between when the event can have begun and the
report's receipt. The API tests check chosen clocks (tests/api/test_agent_clock_skew.py, the legacy audit); these
check every clock offset and spread Hypothesis finds."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.clock import placed

T0 = datetime(2026, 12, 7, tzinfo=UTC)
NAMES = ("initiated", "launched", "ready", "switched", "terminated")

seconds = st.integers(-10 * 86_400, 10 * 86_400)
reports = st.fixed_dictionaries({name: st.one_of(st.none(), seconds) for name in NAMES})
windows = st.tuples(st.integers(-3 * 86_400, 0), st.integers(0, 3 * 86_400))  # earliest offset, window length


def _times(offsets: dict) -> dict:
    return {name: None if s is None else T0 + timedelta(seconds=s) for name, s in offsets.items()}


@given(reports, windows)
def test_every_placed_time_is_within_the_window_and_none_stays_none(offsets, window):
    earliest = T0 + timedelta(seconds=window[0])
    latest = earliest + timedelta(seconds=window[1])
    times = _times(offsets)
    result, _, clamped = placed(times, earliest, latest)
    assert result.keys() == times.keys()
    for name, at in result.items():
        assert (at is None) == (times[name] is None)
        assert at is None or earliest <= at <= latest
    assert set(clamped) <= {name for name, at in times.items() if at is not None}


@given(reports, windows)
def test_times_whose_spread_fits_the_window_keep_every_span_and_none_is_clamped(offsets, window):
    """A clock that is only off (not jumping) moves every time alike: when the times' spread fits the window, the
    server moves them together, so every span between two of them (the boot time a switch measures) is the one
    the agent measured, and none is cut to a bound."""
    earliest = T0 + timedelta(seconds=window[0])
    latest = earliest + timedelta(seconds=window[1])
    times = _times(offsets)
    given_times = [at for at in times.values() if at is not None]
    if not given_times or max(given_times) - min(given_times) > latest - earliest:
        return
    result, shift, clamped = placed(times, earliest, latest)
    assert clamped == []
    for name, at in times.items():
        if at is not None:
            assert result[name] - at == shift


@given(reports, windows)
def test_times_already_within_the_window_are_left_as_they_are(offsets, window):
    earliest = T0 + timedelta(seconds=window[0])
    latest = earliest + timedelta(seconds=window[1])
    times = {name: None if at is None else min(max(at, earliest), latest) for name, at in _times(offsets).items()}
    assert placed(times, earliest, latest) == (times, timedelta(0), [])


@given(st.integers(1, 10 * 86_400), st.integers(0, 3_600))
def test_a_clock_behind_by_any_amount_keeps_its_boot_time(behind, boot):
    """A switch reported by a clock ``behind`` seconds slow: started 10 min after its command, ready ``boot`` s after
    its launch, reported a minute after that. Its measured boot is kept, whatever the offset."""
    command = T0
    launched = command + timedelta(minutes=10)
    ready = launched + timedelta(seconds=boot)
    received = ready + timedelta(minutes=1)
    lag = timedelta(seconds=behind)
    result, _, _ = placed({"launched": launched - lag, "ready": ready - lag}, command, received)
    assert result["ready"] - result["launched"] == timedelta(seconds=boot)
    assert command <= result["launched"] <= result["ready"] <= received
