"""What the risk model answers, and the names and order of its features.

The model answers one question for a pool: how likely is one of our instances there to be interrupted
(capacity gone) within the horizon? Its inputs are computed from a
:class:`~components.risk_model.evidence.PoolEvidence` by
:func:`~components.risk_model.evidence.feature_vector`, in the order of :data:`FEATURE_NAMES`; the
manifest of every trained artifact records that order and
:func:`~components.risk_model.manifest.validate_manifest` refuses any other.
"""

from __future__ import annotations

from components.risk_model.evidence import EVIDENCE_WINDOW_S, FEATURE_NAMES

__all__ = ["EVIDENCE_WINDOW_S", "FEATURE_NAMES"]
