"""The one definition of every risk-model feature (names and order: ``FEATURE_NAMES``).

Two ways to compute the same numbers:

- :func:`feature_vector` — the features at the LAST element of a history, read straight from their
  definitions. This is what the risk scorer calls for "now".
- :func:`feature_rows` — the features at EVERY element of a history, each computed as if the history
  ended there, in one O(n) pass with rolling windows. Training and the backtest use it; tests check
  that row ``i`` equals ``feature_vector(history.prefix(i + 1))`` exactly.

Both use only elements at or before the one they describe (no look-ahead). Sums over windows are
kept in integers (region shares in millionths), so both ways give bit-identical floats.

Missing data: when the spot price now (or the on-demand price) is unknown, the price features are
NaN, which scikit-learn's HistGradientBoostingClassifier treats as "missing". A history shorter
than a window uses what it has (so a single element has availability 1.0 or 0.0 in every window
and no price change).

Examples
--------
>>> from components.risk_model.model import PoolHistory
>>> h = PoolHistory(times=(0.0, 1800.0, 3600.0), available=(1, 0, 1), prices=(1.0, 1.0, 1.2),
...                 region_available_fraction=(1.0, 0.5, 1.0), ondemand_price=3.0, advisor_band=4)
>>> v = dict(zip(FEATURE_NAMES, feature_vector(h)))
>>> v["pool_availability_6h"], v["drops_24h"], v["last_outage_h"], round(v["price_change_1h"], 6)
(0.6666666666666666, 1.0, 0.5, 0.2)
>>> feature_rows(h)[-1] == feature_vector(h)
True
"""

from __future__ import annotations

import math

from components.risk_model.model import FEATURE_NAMES, LOOKBACK_S, WINDOWS_S, PoolHistory

__all__ = ["FEATURE_NAMES", "feature_rows", "feature_vector"]

_MICRO = 1_000_000
_NAN = float("nan")
_TWO_PI = 2.0 * math.pi
_W1, _W6, _W24 = WINDOWS_S["1h"], WINDOWS_S["6h"], WINDOWS_S["24h"]


# ---- final formulas, shared by both ways of computing -------------------------------------------

def _micro(share: float) -> int:
    return round(share * _MICRO)


def _known(price: float | None) -> bool:
    return price is not None and not math.isnan(price)


def _ratio(price: float | None, ondemand: float) -> float:
    if not _known(price) or not ondemand > 0 or math.isinf(ondemand):
        return _NAN
    return price / ondemand


def _change(now: float | None, then: float | None) -> float:
    if not _known(now) or not _known(then) or then == 0:
        return _NAN
    return now / then - 1.0


def _hours_capped(seconds: float) -> float:
    return min(seconds, LOOKBACK_S) / 3600.0


def _outage_hours(start: float, end: float, t: float) -> float:
    return (end - max(start, t - LOOKBACK_S)) / 3600.0


def _clock(t: float) -> tuple[float, float, float, float]:
    hour = (t % 86400.0) / 3600.0
    day = (t / 86400.0 + 3.0) % 7.0  # 1970-01-01 was a Thursday; Monday = 0
    return (math.sin(_TWO_PI * hour / 24.0), math.cos(_TWO_PI * hour / 24.0),
            math.sin(_TWO_PI * day / 7.0), math.cos(_TWO_PI * day / 7.0))


def _assemble(streak, win, since_drop, outage, region_now, price_now, ratio_od, ref_1h, ref_24h,
              t, band) -> tuple[float, ...]:
    (n1, a1, r1, _), (n6, a6, r6, d6), (n24, a24, r24, d24) = win
    return (streak, a1 / n1, a6 / n6, a24 / n24, float(d6), float(d24), since_drop, outage,
            float(region_now), r1 / n1 / _MICRO, r6 / n6 / _MICRO, r24 / n24 / _MICRO,
            ratio_od, _change(price_now, ref_1h), _change(price_now, ref_24h), *_clock(t), float(band))


# ---- straight from the definitions ---------------------------------------------------------------

def feature_vector(history: PoolHistory) -> tuple[float, ...]:
    """The features (in ``FEATURE_NAMES`` order) at the last element of ``history``.

    Reads only the elements from the last one at or before ``now − LOOKBACK_S`` onwards.
    """
    times, avail, prices = history.times, history.available, history.prices
    region = history.region_available_fraction
    c = len(times) - 1
    t = times[c]

    win = []
    for width in (_W1, _W6, _W24):
        count = up = micro = drops = 0
        i = c
        while i >= 0 and times[i] > t - width:
            count += 1
            up += avail[i]
            micro += _micro(region[i])
            if i >= 1 and avail[i - 1] == 1 and avail[i] == 0:
                drops += 1
            i -= 1
        win.append((count, up, micro, drops))

    # current run of 1s (its start, or the first element at/before the look-back limit)
    streak = 0.0
    if avail[c] == 1:
        s = c
        while s > 0 and avail[s - 1] == 1 and times[s] > t - LOOKBACK_S:
            s -= 1
        streak = _hours_capped(t - times[s])

    since_drop = LOOKBACK_S / 3600.0
    i = c
    while i >= 1 and times[i] > t - LOOKBACK_S:
        if avail[i - 1] == 1 and avail[i] == 0:
            since_drop = _hours_capped(t - times[i])
            break
        i -= 1

    # latest outage [first 0, first 1 after it), clipped to the look-back window
    outage = 0.0
    z = c
    while z >= 0 and avail[z] == 1:
        if times[z] <= t - LOOKBACK_S:
            z = -1
            break
        z -= 1
    if z >= 0:
        end = t if z == c else times[z + 1]
        if end > t - LOOKBACK_S:
            b = z
            while b > 0 and avail[b - 1] == 0 and times[b] > t - LOOKBACK_S:
                b -= 1
            outage = _outage_hours(times[b], end, t)

    refs = []
    for width in (_W1, _W24):
        k = c
        while k > 0 and times[k] > t - width:
            k -= 1
        refs.append(prices[k])

    return _assemble(streak, win, since_drop, outage, region[c], prices[c],
                     _ratio(prices[c], history.ondemand_price), refs[0], refs[1], t,
                     history.advisor_band)


# ---- the same numbers for every prefix, in one pass ----------------------------------------------

def feature_rows(history: PoolHistory) -> list[tuple[float, ...]]:
    """Row ``i`` = ``feature_vector(history.prefix(i + 1))``, for every ``i``, in O(n)."""
    times = list(history.times)
    avail = list(history.available)
    prices = list(history.prices)
    region = list(history.region_available_fraction)
    micro = [_micro(r) for r in region]
    drop = [0] + [1 if avail[i - 1] == 1 and avail[i] == 0 else 0 for i in range(1, len(times))]
    ondemand, band = history.ondemand_price, history.advisor_band
    widths = (_W1, _W6, _W24)
    lo = [0, 0, 0]
    count = [0, 0, 0]
    up = [0, 0, 0]
    msum = [0, 0, 0]
    dsum = [0, 0, 0]
    ref = [0, 0]  # index of the last element at/before t − 1 h, t − 24 h (0 when none)
    run_start = 0
    last_drop = -1
    zero_start = -1
    zero_end = -1  # first 1 after the latest outage; -1 while it is going on
    rows = []
    for i, t in enumerate(times):
        a = avail[i]
        for w in range(3):
            count[w] += 1
            up[w] += a
            msum[w] += micro[i]
            dsum[w] += drop[i]
            limit = t - widths[w]
            j = lo[w]
            while times[j] <= limit:
                count[w] -= 1
                up[w] -= avail[j]
                msum[w] -= micro[j]
                dsum[w] -= drop[j]
                j += 1
            lo[w] = j
        for r, width in enumerate((_W1, _W24)):
            k = ref[r]
            limit = t - width
            while k + 1 <= i and times[k + 1] <= limit:
                k += 1
            ref[r] = k

        if a == 1:
            if i == 0 or avail[i - 1] == 0:
                run_start = i
                if i > 0:
                    zero_end = i
            streak = _hours_capped(t - times[run_start])
        else:
            streak = 0.0
            if i == 0 or avail[i - 1] == 1:
                zero_start, zero_end = i, -1
        if drop[i]:
            last_drop = i

        if last_drop >= 0 and times[last_drop] > t - LOOKBACK_S:
            since_drop = _hours_capped(t - times[last_drop])
        else:
            since_drop = LOOKBACK_S / 3600.0

        outage = 0.0
        if zero_start >= 0:
            end = t if zero_end < 0 else times[zero_end]
            if end > t - LOOKBACK_S:
                outage = _outage_hours(times[zero_start], end, t)

        win = [(count[w], up[w], msum[w], dsum[w]) for w in range(3)]
        rows.append(_assemble(streak, win, since_drop, outage, region[i], prices[i],
                              _ratio(prices[i], ondemand), prices[ref[0]], prices[ref[1]], t, band))
    return rows
