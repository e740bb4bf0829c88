"""Flow makers that chain the makers: sample -> select -> pair -> compare."""

from __future__ import annotations

from softening.workflows.softening import EvaluateFlowMaker, SofteningFlowMaker

__all__ = ["EvaluateFlowMaker", "SofteningFlowMaker"]
