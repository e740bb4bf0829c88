"""Frame selection and strain assignment for the MD-sampling step.

Deng et al. (npj Comput. Mater. 11, 9, 2025) pick 10 frames per 20 ps MD trajectory by stratified
(DIRECT-style) sampling and strain 4 of them by +3 % or -3 % along the three lattice vectors. These
pure functions make those choices reproducible (seeded); applying them to structures is done elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["assign_strains", "stratified_energy_indices"]


def stratified_energy_indices(
    energies_per_atom: Sequence[float] | np.ndarray, n_frames: int, seed: int = 0
) -> list[int]:
    """Pick frames that cover the energy range evenly (stratified sampling).

    ``[min, max]`` of the energies is split into ``n_frames`` equal-width bins and one frame is drawn
    at random from each non-empty bin, so rare high- and low-energy configurations are kept instead of
    a cluster of typical ones. When fewer than ``n_frames`` bins are occupied, the remaining frames
    are drawn at random from those not yet picked. DIRECT proper clusters structure descriptors; the
    per-atom energy is the one-dimensional stand-in used here because it needs no model features.

    Parameters
    ----------
    energies_per_atom
        Energy of each candidate frame in eV/atom (any common reference).
    n_frames
        Number of frames to pick, ``1 <= n_frames <= len(energies_per_atom)``.
    seed
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    list of int
        Sorted indices of the picked frames (distinct).

    Raises
    ------
    ValueError
        On an out-of-range ``n_frames``, non-1-D input, or NaN/inf energies.
    """
    e = np.asarray(energies_per_atom, dtype=float)
    if e.ndim != 1:
        raise ValueError(f"energies_per_atom must be one-dimensional, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("energies_per_atom contains NaN or inf")
    n_total = e.size
    if n_frames < 1 or n_frames > n_total:
        raise ValueError(f"n_frames must be between 1 and {n_total}, got {n_frames}")
    rng = np.random.default_rng(seed)
    e_min, e_max = float(e.min()), float(e.max())
    if e_max == e_min:
        # No spread to stratify: any choice is as good as another.
        return sorted(int(i) for i in rng.choice(n_total, size=n_frames, replace=False))
    # Bin index by arithmetic rather than np.digitize so the maximum lands in the last bin.
    bins = np.floor((e - e_min) / (e_max - e_min) * n_frames).astype(int)
    bins = np.clip(bins, 0, n_frames - 1)
    picked: list[int] = []
    for b in range(n_frames):
        members = np.flatnonzero(bins == b)
        if members.size:
            picked.append(int(rng.choice(members)))
    missing = n_frames - len(picked)
    if missing > 0:
        rest = np.setdiff1d(np.arange(n_total), picked)
        picked.extend(int(i) for i in rng.choice(rest, size=missing, replace=False))
    return sorted(picked)


def assign_strains(
    n_frames: int,
    n_plus: int = 2,
    n_minus: int = 2,
    magnitude: float = 0.03,
    seed: int = 0,
) -> list[float]:
    """Assign an isotropic strain to each selected frame.

    ``n_plus`` randomly chosen frames get ``+magnitude``, ``n_minus`` others get ``-magnitude``, the
    rest 0. A strain ``eps`` scales each of the three lattice vectors by ``1 + eps``; straining some
    frames samples compressed and expanded cells that a constant-volume MD never visits.

    Parameters
    ----------
    n_frames
        Number of selected frames (>= 0).
    n_plus, n_minus
        Numbers of frames to expand and to compress (>= 0, ``n_plus + n_minus <= n_frames``).
    magnitude
        Strain magnitude as a fraction (0.03 = 3 %), finite and >= 0.
    seed
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    list of float
        Strain of each frame, in the order of the frames (dimensionless fraction).

    Raises
    ------
    ValueError
        On negative counts, ``n_plus + n_minus > n_frames``, or an invalid magnitude.
    """
    if n_frames < 0 or n_plus < 0 or n_minus < 0:
        raise ValueError(
            f"n_frames, n_plus, n_minus must be >= 0, got {n_frames}, {n_plus}, {n_minus}"
        )
    if n_plus + n_minus > n_frames:
        raise ValueError(f"n_plus + n_minus = {n_plus + n_minus} exceeds n_frames = {n_frames}")
    if not np.isfinite(magnitude) or magnitude < 0:
        raise ValueError(f"magnitude must be finite and >= 0, got {magnitude}")
    order = np.random.default_rng(seed).permutation(n_frames)
    strains = [0.0] * n_frames
    for i in order[:n_plus]:
        strains[int(i)] = float(magnitude)
    for i in order[n_plus : n_plus + n_minus]:
        strains[int(i)] = -float(magnitude)
    return strains
