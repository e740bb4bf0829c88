"""Flow makers that chain the makers: sample -> select -> pair -> compare."""

from __future__ import annotations

from softening.workflows.softening import (
    CorrectionFlowMaker,
    EvaluateFlowMaker,
    SofteningFlowMaker,
)

__all__ = ["CorrectionFlowMaker", "EvaluateFlowMaker", "SofteningFlowMaker"]
