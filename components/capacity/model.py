"""What the product itself sees about a pool's capacity: one kind of record, one meaning.

Every signal is an :class:`CapacityObservation` of one pool at one time. Production writes them from
its own launches (failover, coordinator, agents' commands), EC2 events (interruption warnings,
rebalance recommendations, AWS-initiated stops) and the placement-score job; the backtest writes them
from what its simulated fleet saw. Features, back-off and risk read nothing else about capacity.

Examples
--------
>>> o = CapacityObservation("m5.large.eu-west-1a", ObservationKind.LAUNCH_REFUSED, 60.0,
...                         code="InsufficientInstanceCapacity")
>>> o.negative, o.kind.value
(True, 'launch_refused')
>>> refusal_kind("InsufficientInstanceCapacity"), refusal_kind("UnauthorizedOperation")
(<ObservationKind.LAUNCH_REFUSED: 'launch_refused'>, None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from components.capacity.errors import InvalidObservationError

__all__ = ["CAPACITY_ERROR_CODES", "HELD_INTERVAL_S", "CapacityObservation", "ObservationKind", "refusal_kind"]

# A HELD observation stands for this much running time of ``value`` of our instances (1 when unset) in the
# pool without a warning: production records one per pool at every risk-scorer run (15 minutes) naming how
# many of its agents ran there (times the runs between the pool's turns past the scorer's pool cap), the
# backtest one per instance at the same cadence, so exposure counts mean the same in both.
HELD_INTERVAL_S = 900.0


class ObservationKind(str, Enum):
    """What was seen. ``HELD`` = an instance of ours ran there without a warning (exposure)."""

    LAUNCH_REFUSED = "launch_refused"
    LAUNCH_SUCCEEDED = "launch_succeeded"
    INTERRUPTION_WARNING = "interruption_warning"
    REBALANCE = "rebalance_recommendation"
    AWS_STOPPED = "aws_stopped"
    HELD = "held"
    PLACEMENT_SCORE = "placement_score"


NEGATIVE_KINDS = frozenset({ObservationKind.LAUNCH_REFUSED, ObservationKind.INTERRUPTION_WARNING,
                            ObservationKind.AWS_STOPPED})
POSITIVE_KINDS = frozenset({ObservationKind.LAUNCH_SUCCEEDED, ObservationKind.HELD})

# EC2 error codes that mean "no spot capacity for this request here, now" (RunInstances, CreateFleet,
# RequestSpotInstances). Anything else (permissions, bad AMI, limits on the account) is not about the pool.
CAPACITY_ERROR_CODES = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
    "capacity-not-available",
    "capacity-oversubscribed",
    "price-too-low",
    "UnfulfillableCapacity",
})


def refusal_kind(error_code: str | None) -> ObservationKind | None:
    """``LAUNCH_REFUSED`` when an EC2 error code says the pool had no capacity for us, else None."""
    return ObservationKind.LAUNCH_REFUSED if error_code in CAPACITY_ERROR_CODES else None


@dataclass(frozen=True)
class CapacityObservation:
    """One thing seen about one pool. ``at`` is epoch seconds (UTC).

    ``value`` carries the placement score (1..10) for ``PLACEMENT_SCORE`` and how many of our instances ran
    there for ``HELD`` (unset: one); ``code`` the EC2 error code of a refusal; ``source`` who saw it
    (failover, coordinator, agent, sentinel, placement-scores, risk-scorer).
    """

    pool_id: str
    kind: ObservationKind
    at: float
    value: float | None = None
    code: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ObservationKind):
            try:
                object.__setattr__(self, "kind", ObservationKind(self.kind))
            except ValueError:
                raise InvalidObservationError(f"unknown observation kind {self.kind!r}", field="kind") from None
        if not isinstance(self.at, (int, float)) or not math.isfinite(self.at):
            raise InvalidObservationError(f"observation time must be finite epoch seconds, got {self.at!r}",
                                          field="at")
        if self.kind is ObservationKind.PLACEMENT_SCORE and (
                self.value is None or not 1 <= self.value <= 10):
            raise InvalidObservationError("a placement score is 1..10", field="value")
        if self.kind is ObservationKind.HELD and self.value is not None and not (
                isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value >= 1):
            raise InvalidObservationError("a HELD observation counts at least one instance", field="value")

    @property
    def negative(self) -> bool:
        """True when it says capacity was missing (refusal, warning, AWS stop)."""
        return self.kind in NEGATIVE_KINDS

    @property
    def held_instances(self) -> float:
        """How many instance-intervals of exposure a HELD observation stands for (0 for any other kind)."""
        if self.kind is not ObservationKind.HELD:
            return 0.0
        return 1.0 if self.value is None else float(self.value)

    @property
    def positive(self) -> bool:
        """True when it says capacity was there (a launch or a running instance)."""
        return self.kind in POSITIVE_KINDS
