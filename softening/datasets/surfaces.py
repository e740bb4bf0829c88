"""Slab and bulk frames with DFT energies from existing data (the mlearn layout), for surface energies.

mlearn files (Zuo et al. 2020) hold slabs in group ``Surface`` with the facet in the description
(``Si_surface_mp/Si_mp-149_(1_1_1)_reconstructed``) and bulk cells in group ``Elastic`` (a
``Ground state crystal`` in Si's training set; strained cells otherwise), all from one DFT setup.

**Bulk energy per atom** (per composition, over all given files together):

1. the frame whose description says ``ground state`` (``bulk_choice = "ground_state"``);
2. else the bulk frame lowest in energy per atom (``"lowest_energy"``): with only strained cells
   (Cu's test set: ±1-10 % strains) this lies a few meV/atom above the unstrained energy, which
   lowers every surface energy by ``N δe / 2A`` on both sides alike; the choice is flagged.

Both the reference and each model take the energy of that same frame, so only the energies differ.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymatgen.core import Structure

from softening.analysis.surfaces import MIN_VACUUM, bulk_units, surface_area, vacuum_axis
from softening.datasets.checks import FrameRegistry
from softening.datasets.frames import Frame
from softening.datasets.readers import read_frames
from softening.errors import InputError

#: Groups of bulk (periodic in 3-D) frames in mlearn data.
BULK_GROUPS = ("Elastic",)
#: Group of slab frames in mlearn data.
SURFACE_GROUP = "Surface"

_FACET = re.compile(r"\((-?\d+)[_, ]+(-?\d+)[_, ]+(-?\d+)(?:[_, ]+(-?\d+))?\)")
_MP_ID = re.compile(r"(mp-\d+)")


def parse_facet(description: str) -> list[int] | None:
    """Miller index ``[h, k, l]`` named in a description such as ``Si_mp-149_(1_1_1)``.

    Four-index (Miller-Bravais) ``(h_k_i_l)`` is returned as ``[h, k, l]``; ``None`` when none.
    """
    m = _FACET.search(description or "")
    if not m:
        return None
    h, k, third, fourth = m.groups()
    if fourth is not None:  # (h k i l) with i = -(h + k)
        return [int(h), int(k), int(fourth)]
    return [int(h), int(k), int(third)]


@dataclass
class SlabEntry:
    """One slab frame with its DFT energy and surface geometry."""

    frame: Frame
    facet: list[int] | None
    reconstructed: bool
    axis: int
    vacuum: float
    area: float

    @property
    def n_atoms(self) -> int:
        """Atoms in the slab."""
        return len(self.frame.structure)


@dataclass
class BulkEntry:
    """The bulk frame the surface energies of one composition are taken against."""

    frame: Frame
    choice: str  # "ground_state" or "lowest_energy"

    @property
    def energy_per_atom(self) -> float:
        """DFT energy per atom of the bulk frame, eV/atom."""
        return float(self.frame.energy) / len(self.frame.structure)


@dataclass
class SurfaceData:
    """Slabs and bulk references of one composition (the surface energies' material)."""

    material: str  # reduced formula, e.g. "Si"
    bulk: BulkEntry
    slabs: list[SlabEntry]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (description, reason)
    sources: list[str] = field(default_factory=list)
    mp_id: str | None = None


def _frame_key(frame: Frame) -> str:
    return frame.source or frame.frame_id


def read_surface_data(
    paths: Sequence[str | Path], min_vacuum: float = MIN_VACUUM
) -> list[SurfaceData]:
    """Slabs and bulk frames of the given mlearn files, grouped by the slabs' reduced formula.

    Raises
    ------
    InputError
        A file without slabs among all files, a composition with slabs and no bulk frame, or a
        frame given twice (the same slab in two files, or one file twice: it would count twice).
    """
    frames: list[Frame] = []
    registry = FrameRegistry()
    for p in paths:
        frames.extend(read_frames(p, registry=registry))
    slabs = [f for f in frames if f.group == SURFACE_GROUP]
    if not slabs:
        names = ", ".join(str(p) for p in paths)
        raise InputError(f"{names}: no surface frames (group {SURFACE_GROUP!r})")
    bulks = [f for f in frames if f.group in BULK_GROUPS]
    out: list[SurfaceData] = []
    for material in dict.fromkeys(f.formula for f in slabs):
        mine = [f for f in slabs if f.formula == material]
        bulk = choose_bulk([b for b in bulks if b.formula == material])
        if bulk is None:
            raise InputError(
                f"{material}: slabs but no bulk frame (group {', '.join(BULK_GROUPS)}) in "
                f"{', '.join(str(p) for p in paths)}; give the file that holds one too"
            )
        entries, skipped = [], []
        for f in mine:
            try:
                entries.append(slab_entry(f, bulk.frame.structure, min_vacuum))
            except ValueError as exc:
                skipped.append((f.description or _frame_key(f), str(exc)))
        mp = _MP_ID.search(mine[0].description or "")
        out.append(
            SurfaceData(
                material=material,
                bulk=bulk,
                slabs=entries,
                skipped=skipped,
                sources=[str(p) for p in paths],
                mp_id=mp.group(1) if mp else None,
            )
        )
    return out


def choose_bulk(frames: Sequence[Frame]) -> BulkEntry | None:
    """The bulk frame surface energies are taken against (see the module docstring)."""
    labelled = [f for f in frames if f.energy is not None]
    if not labelled:
        return None
    ground = [f for f in labelled if "ground state" in (f.description or "").lower()]
    if ground:
        best = min(ground, key=lambda f: f.energy / len(f.structure))
        return BulkEntry(best, "ground_state")
    return BulkEntry(min(labelled, key=lambda f: f.energy / len(f.structure)), "lowest_energy")


def slab_entry(frame: Frame, bulk: Structure, min_vacuum: float = MIN_VACUUM) -> SlabEntry:
    """A slab frame's facet and geometry.

    Raises
    ------
    ValueError
        No energy, no vacuum (or vacuum along two axes), or a composition that is not a multiple of
        the bulk's.
    """
    if frame.energy is None:
        raise ValueError("no reference energy")
    s = frame.structure
    axis, vacuum = vacuum_axis(s.lattice.matrix, s.frac_coords, min_vacuum)
    bulk_units(
        s.composition.get_el_amt_dict(), bulk.composition.get_el_amt_dict()
    )  # raises when non-stoichiometric
    desc = frame.description or ""
    return SlabEntry(
        frame=frame,
        facet=parse_facet(desc),
        reconstructed="reconstruct" in desc.lower(),
        axis=axis,
        vacuum=vacuum,
        area=surface_area(s.lattice.matrix, axis),
    )
