"""The risk model's contract, in pure Python: evidence → features, fallbacks, the artifact manifest.

The decision cycle and the risk scorer import this package; neither needs scikit-learn to build a
feature vector, fall back to the evidence estimate or the Advisor prior, or check a manifest.
Training lives in ``ml/`` (offline).
"""

from components.risk_model.errors import InvalidRiskInputError, ManifestError, RiskModelError
from components.risk_model.evidence import (
    EVIDENCE_WINDOW_S,
    FEATURE_NAMES,
    PoolEvidence,
    evidence_hazard,
    evidence_risk,
    feature_vector,
)
from components.risk_model.manifest import (
    Manifest,
    ManifestMetrics,
    Score,
    TrainingSpan,
    example_manifest,
    validate_manifest,
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
    "EVIDENCE_WINDOW_S",
    "FEATURE_NAMES",
    "SECONDS_PER_MONTH",
    "InvalidRiskInputError",
    "Manifest",
    "ManifestError",
    "ManifestMetrics",
    "PoolEvidence",
    "RiskModelError",
    "Score",
    "TrainingSpan",
    "advisor_prior",
    "evidence_hazard",
    "evidence_risk",
    "example_manifest",
    "feature_vector",
    "validate_manifest",
]
