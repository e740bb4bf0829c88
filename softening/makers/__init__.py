"""jobflow makers: MD sampling, frame selection, references (embedded, VASP), uMLIP statics, comparison."""

from __future__ import annotations

from softening.makers.compare import compare_job, compare_results
from softening.makers.md import MDSamplingMaker
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.select import FrameSelectionMaker
from softening.makers.umlip import UMLIPStaticMaker
from softening.makers.vasp import VaspReferenceMaker

__all__ = [
    "FrameSelectionMaker",
    "MDSamplingMaker",
    "ReferenceStaticMaker",
    "UMLIPStaticMaker",
    "VaspReferenceMaker",
    "compare_job",
    "compare_results",
]
