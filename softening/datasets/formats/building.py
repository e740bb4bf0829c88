"""From what a file holds to a checked :class:`~softening.datasets.frames.Frame`: units, Voigt
orders and stress signs, ASE ``Atoms`` to pymatgen ``Structure``.

Conventions of every frame built here: energy in eV (total), forces ``(n, 3)`` float64 in eV/Å,
stress ``(3, 3)`` in eV/Å^3 with the ASE sign (positive = tensile). Sources in VASP's convention
(kbar, positive = compressive) are converted with :func:`vasp_stress_to_ase`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase.units import GPa
from pymatgen.core import Lattice, Structure

from softening.datasets import checks as _checks
from softening.datasets.formats.files import detail, file_error, wrap_errors
from softening.datasets.frames import Frame
from softening.errors import InputError

__all__ = [
    "ASE_VOIGT_ORDER",
    "KBAR_TO_EV_PER_A3",
    "VASP_VOIGT_ORDER",
    "as_3x3",
    "atoms_to_structure",
    "make_frame",
    "vasp_stress_to_ase",
    "voigt_pairs",
]

#: eV/Å^3 per kbar (1 kbar = 0.1 GPa), about 6.2415e-4.
KBAR_TO_EV_PER_A3: float = 0.1 * GPa

#: Order of the 6 Voigt components written by ASE (``atoms.get_stress()``).
ASE_VOIGT_ORDER: str = "xx yy zz yz xz xy"

#: Order of the 6 components of VASP's OUTCAR "in kB" line and of mlearn's ``virial_stress``.
VASP_VOIGT_ORDER: str = "xx yy zz xy yz zx"


def vasp_stress_to_ase(stress_kbar: Any) -> np.ndarray:
    """Convert a VASP stress tensor (kbar, positive = compressive) to eV/Å^3 with the ASE sign.

    Parameters
    ----------
    stress_kbar
        3x3 (or 9 components, row-major) stress in kbar as VASP prints it.

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` float64 stress in eV/Å^3, positive = tensile: ``-0.1 * GPa * stress_kbar``.
    """
    return -KBAR_TO_EV_PER_A3 * as_3x3(stress_kbar, VASP_VOIGT_ORDER)


def voigt_pairs(order: str) -> list[tuple[int, int]]:
    """Parse an order like ``"xx yy zz xy yz zx"`` into index pairs, checking it is complete."""
    axes = {"x": 0, "y": 1, "z": 2}
    tokens = order.lower().replace(",", " ").split()
    pairs = []
    for token in tokens:
        if len(token) != 2 or any(c not in axes for c in token):
            raise InputError(f"bad Voigt order {order!r}: {token!r} is not a component like 'xy'")
        pairs.append((axes[token[0]], axes[token[1]]))
    if len(pairs) != 6 or len({tuple(sorted(p)) for p in pairs}) != 6:
        raise InputError(f"bad Voigt order {order!r}: need the 6 distinct components")
    return pairs


def as_3x3(value: Any, voigt_order: str | Sequence[tuple[int, int]]) -> np.ndarray:
    """A stress given as 3x3, 9 components (row-major) or 6 Voigt components, as a 3x3 array."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (3, 3):
        return arr.copy()
    if arr.size == 9 and arr.ndim == 1:
        return arr.reshape(3, 3)
    if arr.size == 6 and arr.ndim == 1:
        pairs = voigt_pairs(voigt_order) if isinstance(voigt_order, str) else voigt_order
        out = np.zeros((3, 3))
        for (i, j), v in zip(pairs, arr, strict=True):
            out[i, j] = out[j, i] = v
        return out
    raise ValueError(f"stress has shape {arr.shape}; expected 3x3, 9 or 6 components")


def make_frame(
    path: Path,
    where: str,
    *,
    structure: Structure,
    frame_id: str,
    energy: Any = None,
    forces: Any = None,
    stress: Any = None,
    stress_voigt_order: str | Sequence[tuple[int, int]] = ASE_VOIGT_ORDER,
    **kwargs: Any,
) -> Frame:
    """Build a Frame, converting and checking the labels' types and shapes.

    ``stress`` must already be in eV/Å^3 with the ASE sign; 6-component stresses are read in
    ``stress_voigt_order``.
    """
    n_atoms = len(structure)
    flags: list[str] = []
    if energy is not None:
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except Exception as exc:
            raise file_error(path, f"{where}: energy {energy!r} is not a number") from exc
        if not math.isfinite(energy):
            flags.append("non_finite_labels")
    if forces is not None:
        try:
            forces = np.array(forces, dtype=np.float64)
        except Exception as exc:
            raise file_error(path, f"{where}: forces are not numeric ({detail(exc)})") from exc
        if forces.shape != (n_atoms, 3):
            raise file_error(
                path, f"{where}: forces have shape {forces.shape}, expected ({n_atoms}, 3)"
            )
        if not np.isfinite(forces).all():
            flags.append("non_finite_labels")
    if stress is not None:
        try:
            stress = as_3x3(stress, stress_voigt_order)
        except Exception as exc:
            raise file_error(path, f"{where}: bad stress ({detail(exc)})") from exc
        if not np.isfinite(stress).all():
            flags.append("non_finite_labels")
    frame = Frame(
        structure=_checks.wrap_structure(structure),
        frame_id=frame_id,
        energy=energy,
        forces=forces,
        stress=stress,
        flags=sorted(set(flags)),
        **kwargs,
    )
    # Refused here, before any model runs: no atoms, overlapping atoms, non-finite labels.
    _checks.check_frame(frame, f"{path} {where}")
    return frame


def atoms_to_structure(atoms: Any, path: Path, where: str) -> Structure:
    """ASE Atoms -> pymatgen Structure, refusing cells that are not 3D."""
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if atoms.cell.rank < 3 or abs(float(np.linalg.det(cell))) < 1e-6:
        raise file_error(
            path, f"{where}: no 3D periodic cell (a molecule, or a 'Lattice' is missing)"
        )
    with wrap_errors(path, where):
        # Built directly rather than with AseAtomsAdaptor, so that labels do not leak into
        # site properties and the structure is the same whatever the ASE/pymatgen versions.
        structure = Structure(
            Lattice(cell),
            atoms.get_chemical_symbols(),
            atoms.get_positions(),
            coords_are_cartesian=True,
        )
    # A molecule or slab declared open (pbc="F F F") is computed as a periodic crystal.
    _checks.check_periodic(atoms.pbc, cell, structure.frac_coords, f"{path} {where}")
    return structure
