"""Readers for existing DFT-labelled frames (extxyz, WBM JSON, mlearn JSON, vasprun); VASP guard rails."""

from __future__ import annotations

from softening.datasets.formats.building import (
    ASE_VOIGT_ORDER,
    KBAR_TO_EV_PER_A3,
    VASP_VOIGT_ORDER,
    vasp_stress_to_ase,
)
from softening.datasets.formats.extxyz import read_extxyz
from softening.datasets.formats.mlearn import read_mlearn_json
from softening.datasets.formats.vasprun import read_vasprun
from softening.datasets.formats.wbm import read_wbm_json
from softening.datasets.frames import Frame
from softening.datasets.guards import GuardReport, apply_guard_rails
from softening.datasets.readers import (
    FORMATS,
    MIN_INTERATOMIC_DISTANCE,
    check_structure,
    detect_format,
    read_frames,
    read_structure,
)

__all__ = [
    "ASE_VOIGT_ORDER",
    "FORMATS",
    "KBAR_TO_EV_PER_A3",
    "MIN_INTERATOMIC_DISTANCE",
    "VASP_VOIGT_ORDER",
    "Frame",
    "GuardReport",
    "apply_guard_rails",
    "check_structure",
    "detect_format",
    "read_extxyz",
    "read_frames",
    "read_mlearn_json",
    "read_structure",
    "read_vasprun",
    "read_wbm_json",
    "vasp_stress_to_ase",
]
