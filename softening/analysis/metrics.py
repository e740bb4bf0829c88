"""Softening metrics: force scales, force errors and energy errors of a uMLIP against DFT.

Pure functions, no I/O: arrays in, numbers out. The definitions follow Deng et al., "Systematic
softening in universal machine learning interatomic potentials", npj Comput. Mater. 11, 9 (2025):

- the softening scale ``s`` is the least-squares slope *through the origin* of the uMLIP force
  components against the DFT force components, ``s = sum(f_ml * f_dft) / sum(f_dft**2)``; ``s < 1``
  means the potential is softer than DFT;
- the MAE is taken over force components; the cMAE is the MAE after the linear correction
  ``f_ml / s``, i.e. the error that remains once the systematic softening is removed.

Forces are in eV/Å throughout. They may be passed per frame (a list of ``(n_atoms_i, 3)`` arrays) or
already stacked (an ``(N, 3)`` array or a flat array of components); every function accepts both.
Pooled metrics over many materials are ONE fit over all components of all frames of all materials,
never a mean of per-material values: pass the concatenated frames.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from softening.analysis.force_arrays import as_frames, check_finite, validate_force_pair

__all__ = [
    "SofteningMetrics",
    "bootstrap_scale_ci",
    "corrected_force_mae",
    "correlation",
    "force_outliers",
    "energy_mae_per_atom",
    "force_mae",
    "fraction_softened",
    "linear_correction_factor",
    "per_element_scales",
    "scale_through_origin",
    "scale_with_intercept",
    "softening_metrics",
]

#: Reference forces all below this (eV/Å, under the precision DFT codes print) carry no slope: a
#: 1-atom cell, or atoms on sites fixed by symmetry.
ZERO_FORCE = 1e-6

#: A force component is an outlier when its magnitude exceeds OUTLIER_FORCE (eV/Å) and
#: OUTLIER_SIGMAS robust standard deviations (1.4826 x the median absolute deviation) of the
#: components of its side: a few such components decide a least-squares slope through the origin.
OUTLIER_FORCE = 50.0
OUTLIER_SIGMAS = 30.0

# Bootstrap resamples are drawn in chunks so that the index matrix stays below this many entries
# (about 16 MB of int64), whatever the number of atoms.
_MAX_BOOTSTRAP_ENTRIES = 2_000_000


# --------------------------------------------------------------------------------------------------
# Force scales
# --------------------------------------------------------------------------------------------------
def scale_through_origin(f_ml: Any, f_dft: Any) -> float:
    """Softening scale: least-squares slope through the origin of ML against DFT forces.

    ``s = sum(f_ml * f_dft) / sum(f_dft**2)`` over all Cartesian components of all atoms (and all
    frames). ``s < 1`` means the potential is softer than DFT.

    Parameters
    ----------
    f_ml, f_dft
        ML and DFT forces in eV/Å: lists of ``(n_atoms_i, 3)`` arrays or stacked arrays.

    Returns
    -------
    float
        The dimensionless scale ``s``.

    Raises
    ------
    ValueError
        On mismatched shapes, empty input, NaN/inf, or all-zero DFT forces.
    """
    ml, dft = validate_force_pair(f_ml, f_dft)
    return float(np.sum(ml * dft) / np.sum(dft * dft))


def scale_with_intercept(f_ml: Any, f_dft: Any) -> tuple[float, float]:
    """Ordinary least-squares line ``f_ml = slope * f_dft + intercept`` over all force components.

    The intercept should be close to zero for any physical model (forces sum to zero); a large one
    points to a bookkeeping error (e.g. misaligned atoms) rather than to softening.

    Parameters
    ----------
    f_ml, f_dft
        ML and DFT forces in eV/Å: lists of ``(n_atoms_i, 3)`` arrays or stacked arrays.

    Returns
    -------
    tuple of float
        ``(slope, intercept)``: slope dimensionless, intercept in eV/Å.

    Raises
    ------
    ValueError
        On invalid input (see :func:`scale_through_origin`) or when all DFT components are equal
        (zero variance: the slope is undefined).
    """
    ml, dft = validate_force_pair(f_ml, f_dft)
    x, y = dft.ravel(), ml.ravel()
    dx = x - x.mean()
    var = float(np.sum(dx * dx))
    if var == 0.0:
        raise ValueError("f_dft components all equal: the slope with intercept is undefined")
    slope = float(np.sum(dx * (y - y.mean())) / var)
    intercept = float(y.mean() - slope * x.mean())
    return slope, intercept


def linear_correction_factor(f_ml: Any, f_dft: Any) -> float:
    """Factor ``c`` of the linear correction ``F_corr = c * F_ml`` fitted by least squares.

    ``c = sum(f_ml * f_dft) / sum(f_ml**2)`` minimises ``sum((c * f_ml - f_dft)**2)``: it is the
    regression of DFT on ML. Because ``E_corr = c * E_ml`` implies ``F_corr = c * F_ml``, one scalar
    fitted on the forces of a single frame already corrects a model (Deng et al. 2025).

    Note that after this correction the through-origin scale on the fitted data is not 1 but the
    uncentred ``r**2 = sum(f_ml*f_dft)**2 / (sum(f_ml**2) * sum(f_dft**2))`` (<= 1), since the two
    regressions (ML on DFT and DFT on ML) differ when the points scatter. The other variant,
    ``c = 1 / scale_through_origin(f_ml, f_dft)``, makes the corrected scale exactly 1 but does not
    minimise the squared force error.

    Parameters
    ----------
    f_ml, f_dft
        ML and DFT forces in eV/Å: lists of ``(n_atoms_i, 3)`` arrays or stacked arrays.

    Returns
    -------
    float
        The dimensionless factor ``c``; ``c > 1`` stiffens a softened model.

    Raises
    ------
    ValueError
        On mismatched shapes, empty input, NaN/inf, or all-zero ML forces.
    """
    ml, dft = validate_force_pair(f_ml, f_dft, nonzero="f_ml")
    return float(np.sum(ml * dft) / np.sum(ml * ml))


def per_element_scales(f_ml: Any, f_dft: Any, species: Sequence[str]) -> dict[str, float]:
    """Softening scale (slope through the origin) of the forces on each element separately.

    Parameters
    ----------
    f_ml, f_dft
        ML and DFT forces in eV/Å: lists of ``(n_atoms_i, 3)`` arrays or stacked ``(N, 3)`` arrays
        (a flat array is read as ``(N, 3)``).
    species
        Element symbol of each atom row of the stacked forces (length ``N``).

    Returns
    -------
    dict of str to float
        Scale per element, in order of first appearance. Elements whose DFT forces are all zero are
        left out: their slope is undefined (e.g. a single atom on a site fixed by symmetry).

    Raises
    ------
    ValueError
        On invalid forces, or when ``species`` does not have one entry per atom row.
    """
    ml, dft = validate_force_pair(f_ml, f_dft, nonzero=None)
    if ml.ndim == 1:
        if ml.size % 3:
            raise ValueError(f"flat forces of size {ml.size} cannot be read as (N, 3) rows")
        ml, dft = ml.reshape(-1, 3), dft.reshape(-1, 3)
    elif ml.ndim != 2:
        raise ValueError(f"forces must stack to (N, 3) rows, got shape {ml.shape}")
    labels = [str(s) for s in species]
    if len(labels) != ml.shape[0]:
        raise ValueError(
            f"species has {len(labels)} entries but the forces have {ml.shape[0]} rows"
        )
    codes: dict[str, int] = {}
    idx = np.array([codes.setdefault(s, len(codes)) for s in labels], dtype=int)
    num = np.bincount(idx, weights=np.sum(ml * dft, axis=1), minlength=len(codes))
    den = np.bincount(idx, weights=np.sum(dft * dft, axis=1), minlength=len(codes))
    return {el: float(num[k] / den[k]) for el, k in codes.items() if den[k] > 0.0}


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
def fraction_softened(scales: Iterable[float]) -> float:
    """Share of materials with ``scale < 1`` (the paper's headline: 93-98 % of WBM); NaN for none."""
    scales = [float(x) for x in scales]
    return sum(x < 1 for x in scales) / len(scales) if scales else float("nan")


def force_mae(f_ml: Any, f_dft: Any) -> float:
    """Mean absolute error over force components.

    Parameters
    ----------
    f_ml, f_dft
        ML and DFT forces in eV/Å: lists of ``(n_atoms_i, 3)`` arrays or stacked arrays. All-zero
        DFT forces are allowed here (the MAE needs no slope).

    Returns
    -------
    float
        MAE in eV/Å.

    Raises
    ------
    ValueError
        On mismatched shapes, empty input or NaN/inf.
    """
    ml, dft = validate_force_pair(f_ml, f_dft, nonzero=None)
    return float(np.mean(np.abs(ml - dft)))


def corrected_force_mae(f_ml: Any, f_dft: Any, scale: float | None = None) -> float:
    """cMAE: the force MAE after dividing the ML forces by the softening scale.

    It measures the error left once the systematic (linear) softening is removed.

    Parameters
    ----------
    f_ml, f_dft
        ML and DFT forces in eV/Å: lists of ``(n_atoms_i, 3)`` arrays or stacked arrays.
    scale
        Scale to divide by (dimensionless); defaults to :func:`scale_through_origin` of these data.

    Returns
    -------
    float
        cMAE in eV/Å.

    Raises
    ------
    ValueError
        On invalid forces, or a scale that is zero or not finite.
    """
    ml, dft = validate_force_pair(f_ml, f_dft)
    if scale is None:
        scale = float(np.sum(ml * dft) / np.sum(dft * dft))
    if not np.isfinite(scale) or scale == 0.0:
        raise ValueError(f"scale must be finite and non-zero, got {scale}")
    return float(np.mean(np.abs(ml / scale - dft)))


def energy_mae_per_atom(
    e_ml: Sequence[float] | np.ndarray,
    e_dft: Sequence[float] | np.ndarray,
    n_atoms: Sequence[int] | np.ndarray | int,
    groups: Sequence[Hashable] | None = None,
) -> float:
    """Offset-free energy MAE per atom.

    With ``d_i = (e_ml_i - e_dft_i) / n_i`` the per-atom error of frame ``i``, the mean of ``d``
    within each group is subtracted before taking the mean absolute value: different codes (and
    pseudopotentials) put the energy zero in different places, so only energy differences between
    frames of the same material are comparable.

    Parameters
    ----------
    e_ml, e_dft
        Total energies per frame in eV.
    n_atoms
        Number of atoms per frame (or one number for all frames).
    groups
        Label per frame (e.g. the material id); the offset is removed per group. ``None``: all frames
        form one group.

    Returns
    -------
    float
        Mean absolute residual in eV/atom. A group with a single frame contributes a residual of
        exactly 0 (its offset absorbs its whole error), so with one frame per material the result is
        0 by construction.

    Raises
    ------
    ValueError
        On empty input, mismatched lengths, NaN/inf, or non-positive atom counts.
    """
    ml = np.asarray(e_ml, dtype=float).ravel()
    dft = np.asarray(e_dft, dtype=float).ravel()
    if ml.shape != dft.shape:
        raise ValueError(f"energy shapes differ: {ml.shape} vs {dft.shape}")
    if ml.size == 0:
        raise ValueError("energies are empty")
    check_finite(ml, "e_ml")
    check_finite(dft, "e_dft")
    n = np.asarray(n_atoms, dtype=float).ravel()
    if n.size == 1:
        n = np.full(ml.shape, n[0])
    if n.shape != ml.shape:
        raise ValueError(f"n_atoms has {n.size} entries but there are {ml.size} frames")
    if not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise ValueError("n_atoms must be positive")
    d = (ml - dft) / n
    if groups is None:
        idx = np.zeros(d.size, dtype=int)
    else:
        labels = list(groups)
        if len(labels) != d.size:
            raise ValueError(f"groups has {len(labels)} entries but there are {d.size} frames")
        codes: dict[Hashable, int] = {}
        idx = np.array([codes.setdefault(g, len(codes)) for g in labels], dtype=int)
    means = np.bincount(idx, weights=d) / np.bincount(idx)
    return float(np.mean(np.abs(d - means[idx])))


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------
def is_uncorrelated(scale_ci: Sequence[float]) -> bool:
    """Whether a ``scale`` CI ``[low, high]`` reaches 0 or lies below it: the uMLIP's forces do
    not follow the reference's (or point against them), and cMAE = MAE(f_ml / scale) is not
    meaningful. See :func:`correlation` for which of the two."""
    return scale_ci[0] <= 0.0


def correlation(scale_ci: Sequence[float]) -> str | None:
    """What a ``scale`` CI ``[low, high]`` says when cMAE is not meaningful.

    Returns
    -------
    str or None
        ``"anticorrelated"`` when the whole CI lies below 0 (the uMLIP's forces point against the
        reference's), ``"uncorrelated"`` when it includes 0 (they do not follow them), ``None``
        when it lies above 0.
    """
    low, high = float(scale_ci[0]), float(scale_ci[1])
    if high < 0.0:
        return "anticorrelated"
    if low <= 0.0:
        return "uncorrelated"
    return None


def force_outliers(f_ml_frames: Any, f_dft_frames: Any) -> list[tuple[int, int]]:
    """Atoms carrying an outlier force component, on either side.

    A component is an outlier when ``|f|`` exceeds both :data:`OUTLIER_FORCE` and
    :data:`OUTLIER_SIGMAS` robust standard deviations (1.4826 x the median absolute deviation) of
    all components of its side (reference or uMLIP): far beyond what the rest of the data holds.

    Parameters
    ----------
    f_ml_frames, f_dft_frames
        ML and DFT forces in eV/Å, per frame (see :func:`bootstrap_scale_ci`).

    Returns
    -------
    list of (int, int)
        ``(frame index, atom index)`` of each atom with an outlier component, in order.
    """
    ml_frames = as_frames(f_ml_frames, "f_ml")
    dft_frames = as_frames(f_dft_frames, "f_dft")
    ml, dft = validate_force_pair(ml_frames, dft_frames, nonzero=None)
    limits = []
    for side in (ml, dft):
        comps = side.ravel()
        mad = float(np.median(np.abs(comps - np.median(comps))))
        limits.append(max(OUTLIER_FORCE, OUTLIER_SIGMAS * 1.4826 * mad))
    found = []
    for i, (a, b) in enumerate(zip(ml_frames, dft_frames, strict=True)):
        rows_a = a.reshape(-1, 3) if a.size % 3 == 0 else a.reshape(-1, 1)
        rows_b = b.reshape(rows_a.shape)
        bad = (np.abs(rows_a) > limits[0]).any(axis=1) | (np.abs(rows_b) > limits[1]).any(axis=1)
        found.extend((i, int(j)) for j in np.flatnonzero(bad))
    return found


def _bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Ratios ``sum(num[idx]) / sum(den[idx])`` over resamples drawn with replacement.

    Resamples whose denominator is 0 (only zero-force units drawn) are dropped.
    """
    n = num.size
    chunk = max(1, _MAX_BOOTSTRAP_ENTRIES // n)
    out: list[np.ndarray] = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        d = den[idx].sum(axis=1)
        ok = d > 0.0
        out.append(num[idx].sum(axis=1)[ok] / d[ok])
    return np.concatenate(out)


def bootstrap_scale_ci(
    f_ml_frames: Any,
    f_dft_frames: Any,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_frames: int = 3,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the through-origin softening scale.

    Frames are the resampling unit when there are at least ``min_frames`` of them, because force
    components within a frame are correlated (they share one configuration); below that, atoms (rows
    of the stacked forces) are resampled instead, which understates the uncertainty but still
    reflects the scatter. Each resample's pooled slope is computed from precomputed per-unit sums
    ``sum(f_ml * f_dft)`` and ``sum(f_dft**2)``, so no forces are copied.

    Parameters
    ----------
    f_ml_frames, f_dft_frames
        ML and DFT forces in eV/Å: lists of ``(n_atoms_i, 3)`` arrays, a 3-D array
        ``(n_frames, n_atoms, 3)``, or a stacked ``(N, 3)`` array (one frame).
    n_resamples
        Number of bootstrap resamples (>= 1).
    seed
        Seed of :func:`numpy.random.default_rng`.
    level
        Confidence level in (0, 1).
    min_frames
        Smallest number of frames for which frames are resampled (>= 1).

    Returns
    -------
    tuple of float
        ``(low, high)`` percentiles of the scale (dimensionless).

    Raises
    ------
    ValueError
        On invalid forces or parameters, or when every resample had zero DFT forces.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    ml_frames = as_frames(f_ml_frames, "f_ml")
    dft_frames = as_frames(f_dft_frames, "f_dft")
    ml, dft = validate_force_pair(ml_frames, dft_frames)
    if len(ml_frames) >= min_frames:
        num = np.array([np.sum(a * b) for a, b in zip(ml_frames, dft_frames, strict=True)])
        den = np.array([np.sum(b * b) for b in dft_frames])
    else:
        if ml.ndim == 1 and ml.size % 3 == 0:
            ml, dft = ml.reshape(-1, 3), dft.reshape(-1, 3)
        ml2, dft2 = ml.reshape(ml.shape[0], -1), dft.reshape(dft.shape[0], -1)
        num = np.sum(ml2 * dft2, axis=1)
        den = np.sum(dft2 * dft2, axis=1)
    rng = np.random.default_rng(seed)
    scales = _bootstrap_ratio(num, den, n_resamples, rng)
    if scales.size == 0:
        raise ValueError("every bootstrap resample had all-zero DFT forces")
    alpha = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(scales, [alpha, 100.0 - alpha])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------------
# Everything in one call
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SofteningMetrics:
    """Softening metrics of one material, or pooled over many.

    Attributes
    ----------
    scale
        Through-origin slope of ML against DFT force components (dimensionless; < 1 = soft).
    scale_ci
        ``(low, high)`` bootstrap confidence interval of ``scale`` (95 % by default).
    scale_with_intercept
        Slope of the ordinary least-squares line with intercept (dimensionless).
    intercept
        Intercept of that line in eV/Å.
    mae
        Force MAE over components in eV/Å.
    cmae
        Force MAE after dividing the ML forces by ``scale``, in eV/Å (NaN when ``scale`` is 0).
    energy_mae_per_atom
        Offset-free energy MAE in eV/atom, or ``None`` when energies were not given.
    per_element_scales
        Through-origin scale per element (empty when species were not given).
    n_frames
        Number of frames.
    n_atoms
        Number of atoms over all frames.
    n_components
        Number of force components over all frames (``3 * n_atoms`` for ``(n, 3)`` forces).
    """

    scale: float
    scale_ci: tuple[float, float]
    scale_with_intercept: float
    intercept: float
    mae: float
    cmae: float
    energy_mae_per_atom: float | None
    per_element_scales: dict[str, float]
    n_frames: int
    n_atoms: int
    n_components: int


def _flatten_species(species_frames: Any) -> list[str]:
    """Species per atom row from per-frame lists (or an already flat list of symbols)."""
    items = list(species_frames)
    if all(isinstance(s, str) for s in items):
        return items
    return [str(s) for frame in items for s in frame]


def softening_metrics(
    f_ml_frames: Any,
    f_dft_frames: Any,
    species_frames: Any = None,
    e_ml: Sequence[float | None] | None = None,
    e_dft: Sequence[float | None] | None = None,
    groups: Sequence[Hashable] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> SofteningMetrics:
    """Compute all softening metrics in one call, for one material or pooled over many.

    Pooled metrics are ONE fit over all components of all frames of all materials (never a mean of
    per-material values); for pooled energies pass ``groups`` = material label per frame so that the
    energy offset is removed per material.

    Parameters
    ----------
    f_ml_frames, f_dft_frames
        ML and DFT forces in eV/Å, one ``(n_atoms_i, 3)`` array per frame (a 3-D array or a stacked
        ``(N, 3)`` array, read as one frame, are accepted too).
    species_frames
        Element symbols per frame (or one flat list, one per atom row); enables per-element scales.
    e_ml, e_dft
        Total energies per frame in eV. The energy MAE is computed only when both are given and
        neither contains ``None``.
    groups
        Label per frame for the energy offset (see :func:`energy_mae_per_atom`).
    n_resamples, seed
        Bootstrap settings (see :func:`bootstrap_scale_ci`).

    Returns
    -------
    SofteningMetrics
        The metrics.

    Raises
    ------
    ValueError
        On invalid forces, species or energies.
    """
    ml_frames = as_frames(f_ml_frames, "f_ml")
    dft_frames = as_frames(f_dft_frames, "f_dft")
    ml, dft = validate_force_pair(ml_frames, dft_frames)
    scale = scale_through_origin(ml, dft)
    try:
        slope, intercept = scale_with_intercept(ml, dft)
    except ValueError:  # every reference component equal: no line with an intercept
        slope, intercept = float("nan"), float("nan")
    # A model that predicts zero forces has scale 0: report cMAE as NaN rather than failing the
    # whole comparison.
    cmae = corrected_force_mae(ml, dft, scale) if scale != 0.0 else float("nan")
    n_atoms_frames = [a.shape[0] if a.ndim == 2 else a.size // 3 for a in ml_frames]
    elements: dict[str, float] = {}
    if species_frames is not None:
        elements = per_element_scales(ml, dft, _flatten_species(species_frames))
    energy: float | None = None
    if (
        e_ml is not None
        and e_dft is not None
        and all(e is not None for e in e_ml)
        and all(e is not None for e in e_dft)
    ):
        energy = energy_mae_per_atom(
            [float(e) for e in e_ml], [float(e) for e in e_dft], n_atoms_frames, groups
        )
    return SofteningMetrics(
        scale=scale,
        scale_ci=bootstrap_scale_ci(ml_frames, dft_frames, n_resamples=n_resamples, seed=seed),
        scale_with_intercept=slope,
        intercept=intercept,
        mae=force_mae(ml, dft),
        cmae=cmae,
        energy_mae_per_atom=energy,
        per_element_scales=elements,
        n_frames=len(ml_frames),
        n_atoms=int(sum(n_atoms_frames)),
        n_components=int(ml.size),
    )
