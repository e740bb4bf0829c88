"""The in-memory frame: one structure with (optional) reference labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Structure


@dataclass
class Frame:
    """One atomic configuration, optionally labelled by a reference (DFT) calculation.

    Attributes
    ----------
    structure
        The configuration (pymatgen Structure; Cartesian positions in Å).
    frame_id
        Identifier of the frame, unique within its material (e.g. ``"3"`` or ``"mp-149/7"``).
    material_id
        Material identifier; ``None`` when the source has none (then the reduced formula is used).
    energy
        Reference total energy in eV, or ``None``.
    forces
        Reference forces, shape ``(n_atoms, 3)``, in eV/Å, or ``None``.
    stress
        Reference stress, shape ``(3, 3)``, in eV/Å^3 with the ASE sign convention (positive = tensile),
        or ``None``.
    group
        Optional group label from the source (e.g. ``"AIMD-NVT"``), used to split regions.
    description
        Optional free text from the source (e.g. ``"843 K"``).
    source
        Where the frame was read from (file path, possibly with an index).
    flags
        Warnings attached while reading (e.g. ``"low_precision"``).
    metadata
        Anything else the source carried.
    """

    structure: Structure
    frame_id: str
    material_id: str | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    group: str | None = None
    description: str | None = None
    source: str | None = None
    flags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def formula(self) -> str:
        """Reduced formula of the structure."""
        return self.structure.composition.reduced_formula

    @property
    def material_key(self) -> str:
        """The material id, or the reduced formula when there is none."""
        return self.material_id or self.formula

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.structure)

    @property
    def region(self) -> str:
        """The source region of the frame: its group and the temperature named in its description
        (e.g. ``"AIMD-NVT 843 K"``); a correction belongs to a material and a region."""
        import re

        found = re.search(r"(\d+(?:\.\d+)?)\s*K\b", self.description or "")
        parts = [p for p in (self.group, f"{found.group(1)} K" if found else None) if p]
        return " ".join(parts) or "-"

    @property
    def is_labelled(self) -> bool:
        """Whether reference forces are present."""
        return self.forces is not None
