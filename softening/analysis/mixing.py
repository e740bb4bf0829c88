"""Solid-solution energetics: pure functions (arrays in, numbers out; no I/O).

The paper's solid-solution benchmark (Deng et al. 2025, Fig. 2c): the formation energies of ordered
arrangements of a solid solution, each method against its **own** end-member energies. A softened
potential compresses their spread towards zero, so the miscibility gap it predicts closes at too
low a temperature.

- A cell's composition is a non-negative combination of the end members (pure elements, or
  compounds for pseudo-binaries such as AlN-SiC): :func:`end_member_amounts`.
- ``e_form = (E - sum_i n_i mu_i) / N``: the cell's energy ``E`` (eV) less ``n_i`` formula units of
  each end member at its energy per formula unit ``mu_i``, per atom (:func:`formation_energies`).
- The lower convex hull in (end-member fractions, e_form): which cells each method finds stable
  (:func:`energy_above_hull`).
- A regular solution ``e_form = Omega x (1 - x)`` fitted to a binary; its mean-field
  miscibility-gap temperature ``T_c = Omega / (2 k_B)`` (:func:`regular_solution_omega`,
  :func:`critical_temperature`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Boltzmann constant, eV/K (CODATA 2018).
K_B: float = 8.617333262e-5

#: A cell within this distance of the hull (eV/atom) is on it (round-off of the fit).
HULL_TOL: float = 1e-6

#: Largest residual (atoms) of a composition written as a combination of end members.
_COMPOSITION_TOL: float = 1e-6


def end_member_amounts(counts: np.ndarray, end_members: np.ndarray) -> np.ndarray:
    """Formula units of each end member in each cell.

    Parameters
    ----------
    counts
        ``(n_cells, n_elements)`` atoms of each element in each cell.
    end_members
        ``(n_end_members, n_elements)`` atoms of each element in one formula unit of each end
        member (linearly independent rows).

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_end_members)`` non-negative amounts ``n`` with ``counts = n @ end_members``.

    Raises
    ------
    ValueError
        Dependent end members, or a cell that is no non-negative combination of them; the message
        starts with ``cell <index>:`` for a cell.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    em = np.atleast_2d(np.asarray(end_members, dtype=float))
    if counts.shape[1] != em.shape[1]:
        raise ValueError("counts and end_members must have one column per element")
    if np.linalg.matrix_rank(em) < len(em):
        raise ValueError("the end members are not independent (one is a mix of the others)")
    amounts, *_ = np.linalg.lstsq(em.T, counts.T, rcond=None)
    amounts = amounts.T
    residual = np.abs(amounts @ em - counts).max(axis=1)
    for i in np.flatnonzero((residual > _COMPOSITION_TOL) | (amounts < -_COMPOSITION_TOL).any(1)):
        raise ValueError(f"cell {i}: its composition is not a combination of the end members")
    return np.clip(amounts, 0.0, None)


def end_member_fractions(amounts: np.ndarray, atoms_per_end_member: Sequence[float]) -> np.ndarray:
    """Share of each cell's atoms in each end member, ``(n_cells, n_end_members)``; rows sum to 1."""
    atoms = np.asarray(amounts, dtype=float) * np.asarray(atoms_per_end_member, dtype=float)
    return atoms / atoms.sum(axis=1, keepdims=True)


def end_member_energies(
    energies: Sequence[float], amounts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each end member's lowest energy per formula unit among the cells made of it alone.

    Parameters
    ----------
    energies
        Total energy of each cell, eV.
    amounts
        ``(n_cells, n_end_members)`` from :func:`end_member_amounts`.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``mu`` (eV per formula unit) and the index of the cell it comes from, per end member.

    Raises
    ------
    ValueError
        ``end member <k>: no cell`` when no cell is that end member alone.
    """
    e = np.asarray(energies, dtype=float)
    n = np.asarray(amounts, dtype=float)
    mu, cells = np.empty(n.shape[1]), np.empty(n.shape[1], dtype=int)
    for k in range(n.shape[1]):
        others = np.delete(n, k, axis=1)
        pure = np.flatnonzero((n[:, k] > 0) & (others <= _COMPOSITION_TOL).all(axis=1))
        if len(pure) == 0:
            raise ValueError(f"end member {k}: no cell")
        per_unit = e[pure] / n[pure, k]
        best = int(np.argmin(per_unit))
        mu[k], cells[k] = per_unit[best], pure[best]
    return mu, cells


def formation_energies(
    energies: Sequence[float], amounts: np.ndarray, n_atoms: Sequence[int], mu: Sequence[float]
) -> np.ndarray:
    """``(E - amounts @ mu) / N`` per cell, eV/atom."""
    e = np.asarray(energies, dtype=float)
    return (e - np.asarray(amounts, dtype=float) @ np.asarray(mu, dtype=float)) / np.asarray(
        n_atoms, dtype=float
    )


def energy_above_hull(fractions: np.ndarray, e_form: Sequence[float]) -> np.ndarray:
    """Distance of each cell above the lower convex hull of (fractions, e_form), eV/atom.

    The end members (unit fractions at 0 eV/atom) are on the hull by definition. The hull energy
    at composition ``x`` is the lowest energy of any mixture of cells (and end members) with
    that composition: a monotone chain for binaries, the highest lower facet of a Qhull hull
    otherwise, and linear programming where Qhull refuses a degenerate set.

    Returns
    -------
    numpy.ndarray
        ``e_form - e_hull(x) >= 0`` per cell (0 on the hull, up to round-off).
    """
    x = np.asarray(fractions, dtype=float)
    e = np.asarray(e_form, dtype=float)
    k = x.shape[1]
    if k == 2:  # binary: a 1-D lower hull, exact and fast (monotone chain)
        return _above_binary_hull(x[:, 1], e)
    # Candidates for hull vertices: the end members and the cells below 0 (anything above 0 is
    # beaten by the end members' mixture, so it can be no vertex).
    below = e < 0
    vx = np.vstack([np.eye(k), x[below]])
    ve = np.concatenate([np.zeros(k), e[below]])
    try:
        hull = _lower_hull_planes(vx, ve)
    except Exception:  # a degenerate set Qhull refuses: linear programming is exact anyway
        return _above_hull_lp(vx, ve, x, e)
    normals, offsets = hull
    # The lower hull is convex: its value at x is the highest of its facets' planes there.
    e_hull = (-(x[:, :-1] @ normals[:, :-1].T + offsets) / normals[:, -1]).max(axis=1)
    return np.clip(e - e_hull, 0.0, None)


def _lower_hull_planes(vx: np.ndarray, ve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normals and offsets of the lower facets of the hull of (fractions, e) points."""
    from scipy.spatial import ConvexHull

    points = np.column_stack([vx[:, :-1], ve])
    # One point high above the centre makes the set full-dimensional (all cells on one plane
    # would be flat otherwise) and adds upper facets only.
    lift = np.append(vx[:, :-1].mean(axis=0), max(1.0, 10 * np.abs(ve).max()))
    eq = ConvexHull(np.vstack([points, lift])).equations
    lower = eq[:, -2] < -1e-9  # outward normal points down in energy
    return eq[lower, :-1], eq[lower, -1]


def _above_hull_lp(vx: np.ndarray, ve: np.ndarray, x: np.ndarray, e: np.ndarray) -> np.ndarray:
    from scipy.optimize import linprog

    above = np.empty(len(e))
    for i in range(len(e)):
        res = linprog(ve, A_eq=vx.T, b_eq=x[i], bounds=(0, None), method="highs")
        above[i] = e[i] - (res.fun if res.success else 0.0)
    return np.clip(above, 0.0, None)


def _above_binary_hull(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    pts = sorted({(0.0, 0.0), (1.0, 0.0), *zip(x.tolist(), e.tolist(), strict=True)})
    hull: list[tuple[float, float]] = []
    for p in pts:
        # Keep the chain convex from below: drop the last point while it lies on or above the
        # segment from its predecessor to p.
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    hx, he = np.array([p[0] for p in hull]), np.array([p[1] for p in hull])
    return np.clip(e - np.interp(x, hx, he), 0.0, None)


def regular_solution_omega(x: Sequence[float], e_form: Sequence[float]) -> float:
    """Least-squares ``Omega`` of ``e_form = Omega x (1 - x)`` for a binary, eV/atom.

    Parameters
    ----------
    x
        Fraction of the second end member, per cell.
    e_form
        Formation energy per cell, eV/atom.

    Raises
    ------
    ValueError
        No cell strictly between the end members.
    """
    x = np.asarray(x, dtype=float)
    basis = x * (1.0 - x)
    if not np.any(basis > 0):
        raise ValueError("no mixed cell: Omega is undefined")
    return float(np.sum(basis * np.asarray(e_form, dtype=float)) / np.sum(basis**2))


def critical_temperature(omega: float) -> float | None:
    """Mean-field miscibility-gap temperature ``Omega / (2 k_B)`` of a regular solution, K;
    ``None`` for ``Omega <= 0`` (the solution mixes at every temperature)."""
    return float(omega / (2.0 * K_B)) if omega > 0 else None


def compare_formation_energies(
    e_form_ref: Sequence[float], e_form: Sequence[float]
) -> dict[str, float | int]:
    """Summary of model against reference formation energies (mixed cells).

    Returns
    -------
    dict
        ``slope`` (through the origin, model on reference), ``std_ratio`` (model spread over the
        reference's), ``mae`` (eV/atom), ``fraction_closer_to_zero`` (share of cells with
        ``|e_form| < |e_form_ref|``) and ``n``.

    Raises
    ------
    ValueError
        Empty or mismatched input, or reference energies all zero.
    """
    ref = np.asarray(e_form_ref, dtype=float)
    ml = np.asarray(e_form, dtype=float)
    if ref.shape != ml.shape or ref.ndim != 1 or len(ref) == 0:
        raise ValueError("e_form_ref and e_form must be non-empty 1-D arrays of one length")
    if not np.any(ref):
        raise ValueError("every reference formation energy is 0: no slope")
    std_ref = float(np.std(ref))
    return {
        "slope": float(np.sum(ref * ml) / np.sum(ref * ref)),
        "std_ratio": float(np.std(ml) / std_ref) if std_ref > 0 else float("nan"),
        "mae": float(np.mean(np.abs(ml - ref))),
        "fraction_closer_to_zero": float(np.mean(np.abs(ml) < np.abs(ref))),
        "n": len(ref),
    }
