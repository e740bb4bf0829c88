"""jobflow makers: MD sampling, frame selection, references (embedded, VASP), uMLIP statics,
force comparison, dataset evaluation, corrections, and the properties (phonons, surfaces, vacancies
and barriers, point defects, migration, mixing)."""

from __future__ import annotations

from softening.makers.barrier import BarrierMaker
from softening.makers.evaluate import DatasetEvaluationMaker, evaluate_datasets, evaluate_frames
from softening.makers.force_comparison import compare_job, compare_results
from softening.makers.md import BatchedMDMaker, MDSamplingMaker
from softening.makers.phonons import PhononMaker
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.select import FrameSelectionMaker
from softening.makers.surfaces import SurfaceMaker
from softening.makers.umlip import UMLIPStaticMaker
from softening.makers.vacancy import VacancyMaker
from softening.makers.vasp import VaspReferenceMaker

__all__ = [
    "BarrierMaker",
    "BatchedMDMaker",
    "DatasetEvaluationMaker",
    "FrameSelectionMaker",
    "MDSamplingMaker",
    "PhononMaker",
    "ReferenceStaticMaker",
    "SurfaceMaker",
    "UMLIPStaticMaker",
    "VacancyMaker",
    "VaspReferenceMaker",
    "compare_job",
    "compare_results",
    "evaluate_datasets",
    "evaluate_frames",
]
