"""The documented prior: interruption probability from the Spot Advisor band alone.

Serves whenever no trained model is active, and is one of the two baselines the
trained model must beat.

The Spot Advisor publishes, per region and instance type, a band of the monthly share of spot
instances that AWS interrupted: 0 ``<5 %``, 1 ``5-10 %``, 2 ``10-15 %``, 3 ``15-20 %``, 4 ``>20 %``.
We take the middle of each band (25 % for the open-ended last one) as the probability that an
instance is interrupted at least once in a month (730 h), and assume a constant hazard, so

    P(at least one interruption within h) = 1 − (1 − r_band) ** (h / 730 h)

Examples
--------
>>> round(advisor_prior(0, 3600), 6)
3.5e-05
>>> round(advisor_prior(4, 730 * 3600), 3)
0.25
"""

from __future__ import annotations

import math

from components.risk_model.errors import InvalidRiskInputError

__all__ = ["ADVISOR_BAND_MONTHLY_RATE", "ADVISOR_BAND_LABELS", "DEFAULT_ADVISOR_BAND",
           "SECONDS_PER_MONTH", "advisor_prior"]

# Monthly interruption frequency of each Spot Advisor band, taken at the middle of the band.
ADVISOR_BAND_MONTHLY_RATE: tuple[float, ...] = (0.025, 0.075, 0.125, 0.175, 0.25)
ADVISOR_BAND_LABELS: tuple[str, ...] = ("<5%", "5-10%", "10-15%", "15-20%", ">20%")
# Band assumed for a pool the Advisor does not list (the middle one).
DEFAULT_ADVISOR_BAND = 2
SECONDS_PER_MONTH = 730 * 3600


def advisor_prior(band: int, horizon_s: float) -> float:
    """P(at least one interruption within ``horizon_s``) for a pool in Spot Advisor ``band``.

    Raises
    ------
    InvalidRiskInputError
        If the band is not 0..4 or the horizon is negative or not finite.

    Examples
    --------
    >>> advisor_prior(2, 0)
    0.0
    >>> advisor_prior(1, 3600) < advisor_prior(3, 3600)
    True
    """
    if isinstance(band, bool) or not isinstance(band, int) or not 0 <= band < len(ADVISOR_BAND_MONTHLY_RATE):
        raise InvalidRiskInputError(f"advisor band must be an int 0..4, got {band!r}", "advisor_band")
    if not isinstance(horizon_s, (int, float)) or not math.isfinite(horizon_s) or horizon_s < 0:
        raise InvalidRiskInputError(f"horizon must be a finite number of seconds >= 0, got {horizon_s!r}",
                                    "horizon_s")
    rate = ADVISOR_BAND_MONTHLY_RATE[band]
    return -math.expm1(math.log1p(-rate) * horizon_s / SECONDS_PER_MONTH)
