"""Flow makers that chain the makers: sample -> select -> pair -> compare, and the properties."""

from __future__ import annotations

from softening.workflows.correction import CorrectionFlowMaker
from softening.workflows.properties import PhononComparisonFlowMaker, PropertiesFlowMaker
from softening.workflows.softening import EvaluateFlowMaker, SofteningFlowMaker

__all__ = [
    "CorrectionFlowMaker",
    "EvaluateFlowMaker",
    "PhononComparisonFlowMaker",
    "PropertiesFlowMaker",
    "SofteningFlowMaker",
]
