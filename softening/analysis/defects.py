"""Point defects and migration barriers: pure functions (arrays or structures in, numbers out).

- Vacancy formation energy of an elemental solid,
  ``E_vac = E_defect - (N - 1)/N E_bulk``: the removed atom goes to a reservoir at the bulk energy
  per atom (its chemical potential ``mu = E_bulk / N``, the default), or ``E_defect - E_bulk + mu``
  with another ``mu``.
- Symmetry-distinct sites (pymatgen's ``SpacegroupAnalyzer`` equivalent sites) and the supercell
  that keeps a defect at least a given distance from its periodic images.
- Migration barriers from an energy profile along a path (max minus initial) and the profile
  itself, with the cumulative path length of the images as reaction coordinate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from pymatgen.core import Structure


def vacancy_formation_energy(
    e_defect: float, e_bulk: float, n_bulk: int, mu: float | None = None
) -> float:
    """Formation energy of one vacancy, eV.

    Parameters
    ----------
    e_defect
        Total energy of the supercell with one atom removed (``n_bulk - 1`` atoms), eV.
    e_bulk
        Total energy of the perfect supercell (``n_bulk`` atoms), eV.
    n_bulk
        Atoms in the perfect supercell.
    mu
        Chemical potential of the removed atom, eV; ``None``: the bulk energy per atom
        (``e_bulk / n_bulk``; elemental solids), which gives ``e_defect - (N-1)/N e_bulk``.
    """
    if n_bulk < 2:
        raise ValueError(f"a vacancy needs a supercell of at least 2 atoms, not {n_bulk}")
    mu = e_bulk / n_bulk if mu is None else mu
    return float(e_defect - e_bulk + mu)


def energy_profile(energies: Sequence[float]) -> np.ndarray:
    """Energies of the images along a path relative to the first (initial) image, eV."""
    e = np.asarray(energies, dtype=float)
    if e.ndim != 1 or len(e) < 2:
        raise ValueError("a profile needs the energies of at least 2 images")
    if not np.all(np.isfinite(e)):
        raise ValueError("non-finite image energy")
    return e - e[0]


def migration_barrier(energies: Sequence[float]) -> float:
    """Barrier of a path: the highest image energy minus the **lowest**, eV (the paper's and
    emmet's ``barrier_energy_range``: an end point that is not the minimum, or an intermediate
    minimum, does not hide part of the barrier)."""
    profile = energy_profile(energies)
    return float(profile.max() - profile.min())


def barrier_from_initial(energies: Sequence[float]) -> float:
    """The highest image energy minus the initial one, eV (the definition before the paper's)."""
    return float(energy_profile(energies).max())


def defect_formation_energy(
    e_defect: float, e_bulk: float, element_changes: dict[str, int], mu: dict[str, float]
) -> float:
    """Formation energy of a neutral point defect, eV.

    ``E_f = E_defect - E_bulk - sum_i n_i mu_i``, ``n_i`` the atoms of element ``i`` added
    (``+``) or removed (``-``) and ``mu_i`` its chemical potential (eV/atom).

    Raises
    ------
    KeyError
        An element that changes without a chemical potential.
    """
    return float(e_defect - e_bulk - sum(n * mu[el] for el, n in element_changes.items()))


def combination_energy(
    e_defects: Sequence[float], e_bulk: float, formula_units_removed: float, units_in_bulk: float
) -> float:
    """Energy of a composition-conserving set of defects, each in its own supercell, eV.

    ``E = sum_k (E_k - E_bulk) + m E_bulk / U``: the removed atoms, ``m`` formula units of the
    host (a Schottky set: 1; a Frenkel or antisite pair: 0), return to the bulk at its energy per
    formula unit (``U`` units in the bulk supercell). No chemical potential enters.
    """
    return float(
        sum(e - e_bulk for e in e_defects) + formula_units_removed * e_bulk / units_in_bulk
    )


def reaction_coordinate(positions: Sequence[np.ndarray], lattice: np.ndarray) -> np.ndarray:
    """Cumulative path length of the images, Å (0 at the first).

    The step between neighbouring images is the norm of all atoms' displacements (each the
    minimum image through the periodic cell), so that an atom wrapped across the cell counts once.
    """
    a = np.asarray(lattice, dtype=float)
    inv = np.linalg.inv(a)
    steps = [0.0]
    for p, q in itertools.pairwise(positions):
        d = np.asarray(q, dtype=float) - np.asarray(p, dtype=float)
        frac = d @ inv
        frac -= np.round(frac)
        steps.append(float(np.linalg.norm(frac @ a)))
    return np.cumsum(steps)


def min_image_distance(lattice: np.ndarray) -> float:
    """Length of the shortest non-zero lattice vector, Å: the closest a point defect comes to its
    own periodic image."""
    a = np.asarray(lattice, dtype=float)
    if abs(np.linalg.det(a)) < 1e-8:
        raise ValueError("singular lattice")
    recip = np.linalg.inv(a).T
    r = float(np.linalg.norm(a, axis=1).min())
    # Any lattice vector n·a no longer than r has |n_i| <= r |b_i| (b: reciprocal, no 2π).
    bounds = [int(math.ceil(r * np.linalg.norm(b))) for b in recip]
    ranges = [range(-n, n + 1) for n in bounds]
    best = r
    for n in itertools.product(*ranges):
        if any(n):
            best = min(best, float(np.linalg.norm(np.asarray(n) @ a)))
    return best


def supercell_for_min_distance(
    lattice: np.ndarray, min_distance: float, max_atoms_factor: int = 1000
) -> list[int]:
    """Smallest diagonal supercell ``[n1, n2, n3]`` whose images are at least ``min_distance`` Å
    apart (ties: the one whose shortest image distance is largest).

    Raises
    ------
    ValueError
        When none up to ``max_atoms_factor`` cells reaches it.
    """
    a = np.asarray(lattice, dtype=float)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(a).T, axis=1)
    # n_i d_i >= min_distance is necessary for the vector n_i a_i's plane spacing; a few more are
    # allowed for skewed cells.
    upper = [max(1, math.ceil(min_distance / d)) + 1 for d in spacing]
    best: tuple[int, float, list[int]] | None = None
    for n in itertools.product(*(range(1, u + 1) for u in upper)):
        size = n[0] * n[1] * n[2]
        if size > max_atoms_factor or (best is not None and size > best[0]):
            continue
        dist = min_image_distance(np.diag(n) @ a)
        if dist + 1e-9 < min_distance:
            continue
        if best is None or size < best[0] or (size == best[0] and dist > best[1]):
            best = (size, dist, list(n))
    if best is None:
        raise ValueError(
            f"no diagonal supercell of <= {max_atoms_factor} cells reaches {min_distance} Å"
        )
    return best[2]


def distinct_sites(structure: Structure, symprec: float = 0.01) -> list[tuple[int, int]]:
    """Symmetry-distinct sites: ``[(representative index, multiplicity)]``, in site order.

    From pymatgen's ``SpacegroupAnalyzer`` equivalent sites; every site is its own class when the
    symmetry search fails.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        groups = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetrized_structure()
        classes = groups.equivalent_indices
    except Exception:  # noqa: BLE001 - spglib failed: no symmetry assumed
        classes = [[i] for i in range(len(structure))]
    return sorted(((min(c), len(c)) for c in classes), key=lambda x: x[0])


def nearest_equivalent_neighbour(
    structure: Structure, site: int, symprec: float = 0.01, tol: float = 1e-3
) -> tuple[int, float]:
    """The nearest site symmetry-equivalent to ``site`` (a vacancy hop's target) and its distance, Å.

    Raises
    ------
    ValueError
        When ``site`` has no equivalent neighbour in the cell.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sym = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetrized_structure()
        cls = next(c for c in sym.equivalent_indices if site in c)
    except Exception:  # noqa: BLE001
        cls = [i for i in range(len(structure)) if structure[i].species == structure[site].species]
    d = structure.distance_matrix[site]
    candidates = [(float(d[j]), j) for j in cls if j != site and d[j] > tol]
    if not candidates:
        raise ValueError(f"site {site} has no symmetry-equivalent neighbour in the cell")
    dist, j = min(candidates)
    return j, dist
