"""Surface energies: pure functions (arrays in, numbers out; no I/O).

``gamma = (E_slab - N e_bulk) / (2 A)``: a slab with two equal faces, ``N`` atoms, total energy
``E_slab`` (eV), the bulk energy per atom ``e_bulk`` (eV/atom) and the in-plane area ``A`` (Å^2) of
its cell. The vacuum axis is found from the atomic positions (the lattice vector along which the
atoms leave the largest empty gap), not from the cell shape, so that slabs in any orientation work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: J/m^2 per eV/Å^2 (1 eV = 1.602176634e-19 J, 1 Å^2 = 1e-20 m^2).
J_PER_M2_PER_EV_PER_A2: float = 16.02176634

#: Smallest empty gap (Å) along the vacuum axis for a cell to count as a slab.
MIN_VACUUM: float = 4.0

#: Largest |gamma| taken as a surface energy, J/m^2. Measured and DFT surface energies of solids
#: lie within about 0.05-5 J/m^2 (W, the highest of the elements: about 3-4); beyond this bound a
#: value comes from a broken energy, area or bulk reference, not from a surface.
MAX_SURFACE_ENERGY: float = 100.0


def interplanar_spacings(lattice: np.ndarray) -> np.ndarray:
    """Distance between lattice planes spanned by each pair of cell vectors, Å.

    ``d_i = 1 / |b_i|`` with ``b_i`` the reciprocal vectors (no 2π): the thickness of the cell
    measured along the normal of the plane of the two other vectors.
    """
    recip = np.linalg.inv(np.asarray(lattice, dtype=float)).T
    return 1.0 / np.linalg.norm(recip, axis=1)


def largest_gaps(lattice: np.ndarray, frac_coords: np.ndarray) -> np.ndarray:
    """Largest empty gap between atomic planes along each cell vector (periodic), Å.

    Measured along the normal of the plane spanned by the two other vectors.
    """
    frac = np.mod(np.asarray(frac_coords, dtype=float), 1.0)
    if frac.ndim != 2 or frac.shape[1] != 3 or len(frac) == 0:
        raise ValueError("frac_coords must be a non-empty (n, 3) array")
    spacing = interplanar_spacings(lattice)
    gaps = np.empty(3)
    for i in range(3):
        x = np.sort(frac[:, i])
        steps = np.diff(np.concatenate([x, [x[0] + 1.0]]))  # the wrap-around gap included
        gaps[i] = float(steps.max()) * spacing[i]
    return gaps


def vacuum_axis(
    lattice: np.ndarray, frac_coords: np.ndarray, min_vacuum: float = MIN_VACUUM
) -> tuple[int, float]:
    """The cell vector (0, 1, 2) along which a slab has its vacuum, and the vacuum gap (Å).

    Raises
    ------
    ValueError
        When no gap reaches ``min_vacuum`` Å (a bulk cell), or two do (not a slab: a wire or a
        cluster).
    """
    gaps = largest_gaps(lattice, frac_coords)
    open_axes = np.flatnonzero(gaps >= min_vacuum)
    if len(open_axes) == 0:
        raise ValueError(
            f"no vacuum of {min_vacuum:g} Å along any cell vector (largest gap "
            f"{gaps.max():.2f} Å): not a slab"
        )
    if len(open_axes) > 1:
        raise ValueError(
            f"vacuum along {len(open_axes)} cell vectors ({', '.join(f'{g:.1f}' for g in gaps)} Å): "
            "not a slab"
        )
    axis = int(open_axes[0])
    return axis, float(gaps[axis])


def surface_area(lattice: np.ndarray, axis: int) -> float:
    """In-plane area of a slab cell, Å^2: ``|a_j x a_k|`` for the two vectors other than ``axis``."""
    a = np.asarray(lattice, dtype=float)
    j, k = (i for i in range(3) if i != axis)
    return float(np.linalg.norm(np.cross(a[j], a[k])))


def slab_thickness(lattice: np.ndarray, frac_coords: np.ndarray, axis: int) -> float:
    """Thickness of the atomic part of a slab along the surface normal, Å (cell minus vacuum)."""
    return float(interplanar_spacings(lattice)[axis] - largest_gaps(lattice, frac_coords)[axis])


def bulk_units(
    slab_counts: Mapping[str, float], bulk_counts: Mapping[str, float], tol: float = 1e-6
) -> float:
    """How many bulk cells (of composition ``bulk_counts``) a slab of ``slab_counts`` holds.

    Raises
    ------
    ValueError
        When the slab is not a whole multiple of the bulk composition in every element
        (a non-stoichiometric slab: its surface energy depends on chemical potentials).
    """
    elements = set(slab_counts) | set(bulk_counts)
    ratios = [slab_counts.get(el, 0.0) / bulk_counts[el] if bulk_counts.get(el) else np.inf
              for el in sorted(elements)]  # fmt: skip
    if not np.all(np.isfinite(ratios)) or max(ratios) - min(ratios) > tol:
        slab = " ".join(f"{el}{slab_counts.get(el, 0):g}" for el in sorted(elements))
        bulk = " ".join(f"{el}{bulk_counts.get(el, 0):g}" for el in sorted(elements))
        raise ValueError(f"non-stoichiometric slab: {slab} is not a multiple of the bulk {bulk}")
    return float(ratios[0])


def surface_energy(e_slab: float, n_atoms: int, e_bulk_per_atom: float, area: float) -> float:
    """Surface energy ``(E_slab - N e_bulk) / (2 A)`` of a slab with two equal faces, eV/Å^2.

    Parameters
    ----------
    e_slab
        Total energy of the slab, eV.
    n_atoms
        Atoms in the slab.
    e_bulk_per_atom
        Bulk energy per atom (same code and settings), eV/atom.
    area
        In-plane area of the slab cell, Å^2.
    """
    if area <= 0 or n_atoms <= 0:
        raise ValueError(f"area {area} Å^2 and atoms {n_atoms} must be positive")
    return (float(e_slab) - n_atoms * float(e_bulk_per_atom)) / (2.0 * float(area))


def implausible_surface_energy(gamma: float) -> str | None:
    """Why a surface energy in J/m^2 is not a physical one, or ``None`` when it may be.

    Non-finite values and ``|gamma| >`` :data:`MAX_SURFACE_ENERGY` are refused.
    """
    g = float(gamma)
    if not np.isfinite(g):
        return f"surface energy {g} is not a number"
    if abs(g) > MAX_SURFACE_ENERGY:
        return (
            f"surface energy {g:.3g} J/m^2 is not physical (|gamma| > {MAX_SURFACE_ENERGY:g} "
            "J/m^2): check the slab and bulk energies"
        )
    return None


def compare_surface_energies(
    gamma_ref: Sequence[float], gamma: Sequence[float]
) -> dict[str, float]:
    """Summary of model against reference surface energies (any one unit for both).

    Returns
    -------
    dict
        ``mae`` (same unit), ``mean_ratio`` (mean of gamma/gamma_ref), ``ratio_of_sums``
        (sum gamma / sum gamma_ref), ``fraction_underestimated`` (share with gamma < gamma_ref),
        ``n``.
    """
    ref = np.asarray(gamma_ref, dtype=float)
    ml = np.asarray(gamma, dtype=float)
    if ref.shape != ml.shape or ref.ndim != 1 or len(ref) == 0:
        raise ValueError("gamma_ref and gamma must be non-empty 1-D arrays of one length")
    return {
        "mae": float(np.mean(np.abs(ml - ref))),
        "mean_ratio": float(np.mean(ml / ref)),
        "ratio_of_sums": float(ml.sum() / ref.sum()),
        "fraction_underestimated": float(np.mean(ml < ref)),
        "n": len(ref),
    }
