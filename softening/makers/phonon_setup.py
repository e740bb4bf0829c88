"""Phonon set-up: the supercell, phonopy's displacements and their frames, for a structure or a
phonopy folder.

:func:`phonon_setup` fixes the supercell and phonopy's symmetry-reduced displacements of a structure
(:class:`~softening.schemas.PhononSetup`); :func:`phonon_frames` turns it into frames (the
undisplaced supercell ``perfect`` and ``disp-001``...) for the reference and uMLIP makers. Existing
DFT data (a phonopy folder) enters as reference :class:`FrameResult` s of the displaced supercells
(:func:`reference_frames`). The comparison and the maker are in :mod:`softening.makers.phonons`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Structure

from softening.analysis.phonons import (
    build_phonopy,
    displacement_list,
)
from softening.datasets.checks import check_supercell_atoms
from softening.errors import InputError
from softening.schemas import (
    CodeInfo,
    FrameResult,
    FrameSpec,
    PhononSetup,
)

if TYPE_CHECKING:
    from phonopy import Phonopy

    from softening.datasets.phonopy import PhonopyData


PERFECT = "perfect"


def displacement_id(i: int) -> str:
    """Frame id of the ``i``-th (0-based) displaced supercell: ``disp-001``..."""
    return f"disp-{i + 1:03d}"


# ---- setup ---------------------------------------------------------------------------------------


def supercell_matrix_for(
    structure: Structure, min_length: float = 20.0, prefer_90_degrees: bool = True, **kwargs: Any
) -> list[list[int]]:
    """atomate2's supercell choice: the smallest (near-cubic) supercell with all lengths
    >= ``min_length`` Å."""
    from atomate2.common.utils import get_supercell_matrix

    if not (np.isfinite(min_length) and min_length > 0):  # 0 gives a singular matrix downstream
        raise InputError(f"--min-length must be a positive length in Å, got {min_length:g}")
    try:
        matrix = get_supercell_matrix(
            structure, min_length=min_length, max_length=None, prefer_90_degrees=prefer_90_degrees,
            **kwargs,
        )  # fmt: skip
    except (AttributeError, ValueError) as exc:  # pymatgen: "the max number of atoms was exceeded"
        raise InputError(
            f"{structure.composition.reduced_formula}: no supercell with all lengths >= "
            f"{min_length:g} Å found ({' '.join(str(exc).split())[:120]}); lower --min-length or "
            "give --supercell"
        ) from exc
    return np.rint(np.asarray(matrix)).astype(int).tolist()


def phonon_setup(
    structure: Structure,
    supercell_matrix: Sequence[Sequence[int]] | Sequence[int],
    displacement: float = 0.01,
    symprec: float = 1e-3,
    primitive_matrix: str | Sequence[Sequence[float]] = "auto",
) -> PhononSetup:
    """The supercell and phonopy's symmetry-reduced displacements of ``structure``.

    Raises
    ------
    InputError
        When phonopy cannot symmetrise the structure or build the supercell.
    """
    matrix = np.asarray(supercell_matrix, dtype=int)
    if matrix.shape == (3,):
        matrix = np.diag(matrix)
    if matrix.shape != (3, 3) or round(abs(np.linalg.det(matrix))) < 1:
        raise InputError(f"supercell matrix {matrix.tolist()} is not a non-singular 3x3 matrix")
    # Before phonopy: its symmetry search on a huge supercell runs for minutes without a word.
    n = len(structure)
    check_supercell_atoms(
        n * round(abs(np.linalg.det(matrix))),
        f"{structure.composition.reduced_formula} ({n} atom{'' if n == 1 else 's'}) x "
        f"{_matrix_text(matrix)}",
    )
    if not 0 < displacement < 0.5:
        raise InputError(f"displacement {displacement} Å is outside (0, 0.5)")
    try:
        phonon = build_phonopy(
            structure.lattice.matrix,
            structure.frac_coords,
            [s.specie.symbol for s in structure],
            matrix,
            primitive_matrix,
            symprec,
            magmoms=structure.site_properties.get("magmom"),
            distance=displacement,
        )
        prim = np.asarray(phonon.primitive_matrix, dtype=float)
        disps = displacement_list(phonon)
    except ValueError as exc:
        raise InputError(f"{structure.composition.reduced_formula}: {exc}") from exc
    return PhononSetup(
        unitcell=structure,
        supercell_matrix=matrix.tolist(),
        primitive_matrix=prim.tolist(),
        symprec=symprec,
        displacements=[(a, tuple(v)) for a, v in disps],
        distance=displacement,
    )


def _matrix_text(matrix: np.ndarray) -> str:
    """``"20 20 20"`` for a diagonal supercell matrix, its rows otherwise."""
    if np.count_nonzero(matrix - np.diag(np.diagonal(matrix))) == 0:
        return '"' + " ".join(str(int(x)) for x in np.diagonal(matrix)) + '"'
    return str(matrix.tolist())


def setup_from_data(data: PhonopyData) -> PhononSetup:
    """The :class:`PhononSetup` of existing phonopy data (its supercell and displacements)."""
    return PhononSetup(
        unitcell=data.unitcell,
        supercell_matrix=np.asarray(data.supercell_matrix).tolist(),
        primitive_matrix=np.asarray(data.primitive_matrix).tolist(),
        symprec=data.symprec,
        displacements=[(a, tuple(v)) for a, v in data.displacements],
        distance=None,
    )


def phonopy_from_setup(setup: PhononSetup) -> Phonopy:
    """A :class:`phonopy.Phonopy` with the setup's displacements (no forces)."""
    cell = setup.unitcell
    try:
        return build_phonopy(
            cell.lattice.matrix,
            cell.frac_coords,
            [s.specie.symbol for s in cell],
            setup.supercell_matrix,
            setup.primitive_matrix,
            setup.symprec,
            magmoms=cell.site_properties.get("magmom"),
            displacements=setup.displacements,
        )
    except ValueError as exc:
        raise InputError(f"{cell.composition.reduced_formula}: {exc}") from exc


def phonon_frames(
    setup: PhononSetup, material_id: str, include_perfect: bool = True
) -> list[FrameSpec]:
    """Frames to label: the undisplaced supercell (``perfect``) and each displaced one."""
    from pymatgen.io.phonopy import get_pmg_structure

    phonon = phonopy_from_setup(setup)
    formula = setup.unitcell.composition.reduced_formula
    cells = [(displacement_id(i), c) for i, c in enumerate(phonon.supercells_with_displacements)]
    if include_perfect:
        cells.insert(0, (PERFECT, phonon.supercell))
    return [
        FrameSpec(
            frame_id=fid,
            material_id=material_id,
            formula=formula,
            structure=_without_masses(get_pmg_structure(cell)),
        )
        for fid, cell in cells
    ]


def _without_masses(structure: Structure) -> Structure:
    # pymatgen's converter adds phonopy's masses as a site property; the frames need none, and the
    # content key of a reference must not depend on it.
    if "phonopy_masses" in structure.site_properties:
        structure.remove_site_property("phonopy_masses")
    return structure


def reference_frames(data: PhonopyData, material_id: str | None = None) -> list[FrameResult]:
    """Existing DFT forces of the displaced supercells as reference :class:`FrameResult` s."""
    mid = material_id or data.material
    code = CodeInfo(
        name=str(data.code.get("name") or "vasp"),
        version=data.code.get("version"),
        settings={**(data.code.get("settings") or {}), "source": data.sources[0]},
    )
    return [
        FrameResult(
            frame_id=displacement_id(i),
            material_id=mid,
            formula=data.formula,
            structure=_without_masses(s.copy()),
            energy=None,
            forces=np.asarray(f).tolist(),
            code=code,
            flags=list(data.flags),
        )
        for i, (s, f) in enumerate(zip(data.supercells, data.forces, strict=True))
    ]


# ---- comparison -----------------------------------------------------------------------------------
