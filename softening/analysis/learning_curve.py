"""Learning curves of a correction: which frames to label, and how many (pure functions).

A learning curve corrects a uMLIP on K frames per material, for several K, frame choices and
repeats, and measures each point on **the same held-out frames**: those that no point of the curve
ever trains on, so that the points are comparable. The frame choices are those of
:func:`~softening.analysis.correction.choose_training_frames` plus ``diverse``, a DIRECT-style
selection (Qi et al. 2024): the model's own structure features, standardised, reduced by PCA,
clustered by BIRCH into K clusters, and the frame nearest each cluster centre.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from softening.analysis.correction import FRAME_CHOICES, choose_training_frames

CURVE_CHOICES = (*FRAME_CHOICES, "diverse")
#: Choices that pick the same frames whatever the seed: one repeat is enough.
DETERMINISTIC_CHOICES = ("highest-energy", "largest-force", "diverse")

__all__ = [
    "CURVE_CHOICES",
    "DETERMINISTIC_CHOICES",
    "curve_statistics",
    "direct_select",
    "plan_points",
    "select_frames",
]


def direct_select(features: Any, k: int, seed: int = 0, variance: float = 0.99) -> list[int]:
    """DIRECT-style selection: ``k`` frames, one per BIRCH cluster of the PCA-reduced features.

    Parameters
    ----------
    features
        (n_frames, n_features) structure features (e.g. CHGNet's crystal features).
    k
        Frames to pick (``1 <= k <= n_frames``).
    seed
        Seed of the PCA solver; BIRCH itself is deterministic, so the same inputs give the same
        frames.
    variance
        Fraction of the (standardised) feature variance the kept principal components explain.

    Returns
    -------
    list[int]
        ``k`` distinct frame indices, sorted.
    """
    from sklearn.cluster import Birch
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"cannot pick {k} frames from features of shape {x.shape}")
    if k == len(x):
        return list(range(k))
    # Standardised, so that no feature dominates by its unit; constant features are left at 0.
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    n_comp = min(len(z), z.shape[1])
    if n_comp > 1 and np.any(z):
        pca = PCA(n_components=n_comp, svd_solver="full", random_state=seed).fit(z)
        keep = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), variance) + 1)
        z = pca.transform(z)[:, : min(keep, n_comp)]
    # A threshold far below the spread makes BIRCH's subclusters fine; the global step then
    # merges them into exactly k clusters (agglomerative, deterministic).
    spread = float(np.sqrt(np.mean(np.sum((z - z.mean(axis=0)) ** 2, axis=1)))) or 1.0
    labels = Birch(threshold=1e-3 * spread, n_clusters=k).fit_predict(z)
    picked: list[int] = []
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        centre = z[idx].mean(axis=0)
        picked.append(int(idx[np.argmin(np.sum((z[idx] - centre) ** 2, axis=1))]))
    # Fewer clusters than k (identical features): fill with the frames farthest from those picked.
    while len(picked) < k:
        d = np.min(np.sum((z[:, None, :] - z[picked][None, :, :]) ** 2, axis=2), axis=1)
        d[picked] = -1.0
        picked.append(int(np.argmax(d)))
    return sorted(picked)


def select_frames(
    choice: str,
    k: int,
    energies_per_atom: Sequence[float] | None,
    mean_abs_forces: Sequence[float],
    features: Any = None,
    seed: int = 0,
) -> list[int]:
    """Indices of the ``k`` training frames of one material for one point of a curve.

    Parameters
    ----------
    choice
        One of :data:`CURVE_CHOICES`.
    k
        Frames to pick (at least one of the material's frames must remain).
    energies_per_atom, mean_abs_forces
        Per frame, eV/atom and eV/Å (see :func:`choose_training_frames`).
    features
        (n_frames, n_features) structure features, for ``diverse``.
    seed
        Seed of ``random`` and ``diverse``.
    """
    n = len(mean_abs_forces)
    if not 1 <= k < n:
        raise ValueError(f"cannot train on {k} of {n} frames: at least one frame must be held out")
    if choice == "diverse":
        if features is None:
            raise ValueError("diverse frame choice needs structure features")
        return direct_select(features, k, seed)
    if choice not in FRAME_CHOICES:
        raise ValueError(f"unknown frame choice {choice!r}; use one of {CURVE_CHOICES}")
    return choose_training_frames(energies_per_atom, mean_abs_forces, k, choice, seed)


def plan_points(
    choices: Sequence[str], ks: Sequence[int], repeats: int, seed: int = 0
) -> list[tuple[str, int, int, int]]:
    """The points of a curve: ``(choice, k, repeat, seed)``; deterministic choices run once.

    Repeat ``r`` of a random choice uses seed ``seed + r``.
    """
    points = []
    for choice in choices:
        for k in ks:
            for r in range(1 if choice in DETERMINISTIC_CHOICES else repeats):
                points.append((choice, int(k), r, seed + r))
    return points


def curve_statistics(
    points: Iterable[Mapping[str, Any]],
    keys: Sequence[str] = ("scale", "mae", "cmae", "energy_mae"),
) -> list[dict[str, Any]]:
    """Mean and spread over repeats of each ``(choice, mode, k)`` of a curve.

    Parameters
    ----------
    points
        Mappings with ``choice``, ``mode``, ``k`` and the figures in ``keys`` (``None`` skipped).
    keys
        Figures to summarise.

    Returns
    -------
    list[dict]
        Per ``(choice, mode, k)``, sorted: ``n_repeats`` and ``{key}_mean``, ``{key}_std``
        (population standard deviation; 0 for one repeat; ``None`` without values).
    """
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for p in points:
        groups[(p["choice"], p["mode"], int(p["k"]))].append(p)
    rows = []
    for (choice, mode, k), members in sorted(groups.items()):
        row: dict[str, Any] = {"choice": choice, "mode": mode, "k": k, "n_repeats": len(members)}
        for key in keys:
            values = [m[key] for m in members if m.get(key) is not None]
            row[f"{key}_mean"] = float(np.mean(values)) if values else None
            row[f"{key}_std"] = float(np.std(values)) if values else None
        rows.append(row)
    return rows
