"""The risk model's contract, in pure Python: features, the Advisor prior, the artifact manifest.

The decision cycle and the risk scorer import this package; neither needs scikit-learn to build a
feature vector, fall back to the prior or check a manifest. Training lives in ``ml/`` (offline).
"""

from components.risk_model.errors import InvalidRiskInputError, ManifestError, RiskModelError
from components.risk_model.features import feature_rows, feature_vector
from components.risk_model.manifest import (
    Manifest,
    ManifestMetrics,
    Score,
    TrainingSpan,
    example_manifest,
    validate_manifest,
)
from components.risk_model.model import (
    FEATURE_NAMES,
    LOOKBACK_S,
    UNAVAILABLE_RISK,
    WINDOWS_S,
    PoolHistory,
)
from components.risk_model.prior import (
    ADVISOR_BAND_LABELS,
    ADVISOR_BAND_MONTHLY_RATE,
    DEFAULT_ADVISOR_BAND,
    SECONDS_PER_MONTH,
    advisor_prior,
)

__all__ = [
    "ADVISOR_BAND_LABELS",
    "ADVISOR_BAND_MONTHLY_RATE",
    "DEFAULT_ADVISOR_BAND",
    "FEATURE_NAMES",
    "LOOKBACK_S",
    "SECONDS_PER_MONTH",
    "UNAVAILABLE_RISK",
    "WINDOWS_S",
    "InvalidRiskInputError",
    "Manifest",
    "ManifestError",
    "ManifestMetrics",
    "PoolHistory",
    "RiskModelError",
    "Score",
    "TrainingSpan",
    "advisor_prior",
    "example_manifest",
    "feature_rows",
    "feature_vector",
    "validate_manifest",
]
