"""The scale correction of a softened uMLIP and the choice of frames to fit it on (pure functions).

The paper (Deng et al. 2025) corrects a softened model with one correction factor ``c``:
``E' = c E``, so ``F' = c F`` and ``σ' = c σ``, fitted on one high-energy DFT frame (the ``scale``
mode of a correction; the others fine-tune). Two closed forms are offered:

``lstsq``
    least squares of ``c f_ml`` onto ``f_dft``: ``c = Σ f_ml·f_dft / Σ f_ml²``. This is what the
    paper's trained scalar layer converges to when the force term dominates the loss; on the fitted
    frames the corrected through-origin scale is then ``r²`` (uncentred) rather than 1.
``inverse-scale``
    ``c = 1 / scale``: restores the slope of the fitted frames to exactly 1 (the cMAE view).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from softening.analysis.metrics import linear_correction_factor, scale_through_origin

CORRECTION_METHODS = ("lstsq", "inverse-scale")
FRAME_CHOICES = ("highest-energy", "largest-force", "random")


def correction_factor(f_ml: Any, f_dft: Any, method: str = "lstsq") -> float:
    """The correction factor ``c`` that multiplies the uMLIP's energy, forces and stress.

    Parameters
    ----------
    f_ml, f_dft
        uMLIP and reference forces of the fitting frames (list of (n, 3) arrays or stacked), eV/Å.
    method
        ``lstsq`` or ``inverse-scale`` (see the module docstring).
    """
    if method == "lstsq":
        return linear_correction_factor(f_ml, f_dft)
    if method == "inverse-scale":
        return 1.0 / scale_through_origin(f_ml, f_dft)
    raise ValueError(f"unknown correction method {method!r}; use one of {CORRECTION_METHODS}")


def choose_training_frames(
    energies_per_atom: Sequence[float] | None,
    mean_abs_forces: Sequence[float],
    k: int = 1,
    method: str = "highest-energy",
    seed: int = 0,
) -> list[int]:
    """Indices of the ``k`` frames of one material to fit on; the rest are held out.

    Parameters
    ----------
    energies_per_atom
        Reference energy per atom of each frame, eV/atom (needed for ``highest-energy``).
    mean_abs_forces
        Mean |F| component of each frame, eV/Å (for ``largest-force``; also breaks ties).
    k
        Frames to pick; at least one frame must remain held out.
    method
        ``highest-energy`` (default: the paper's one high-energy frame; energy relative to the
        material's lowest frame), ``largest-force`` or ``random`` (seeded).
    """
    n = len(mean_abs_forces)
    if not 1 <= k < n:
        raise ValueError(f"cannot train on {k} of {n} frames: at least one frame must be held out")
    if method == "highest-energy":
        if energies_per_atom is None or any(e is None for e in energies_per_atom):
            raise ValueError("highest-energy frame choice needs reference energies")
        e = np.asarray(energies_per_atom, dtype=float)
        order = np.lexsort((-np.asarray(mean_abs_forces), -(e - e.min())))
    elif method == "largest-force":
        order = np.argsort(-np.asarray(mean_abs_forces, dtype=float), kind="stable")
    elif method == "random":
        order = np.random.default_rng(seed).permutation(n)
    else:
        raise ValueError(f"unknown frame choice {method!r}; use one of {FRAME_CHOICES}")
    return sorted(int(i) for i in order[:k])


def train_scalar_layer(
    e_ml: Sequence[float],
    f_ml: Sequence[np.ndarray],
    e_dft: Sequence[float],
    f_dft: Sequence[np.ndarray],
    n_atoms: Sequence[int],
    weights: tuple[float, float] = (0.1, 100.0),
    epochs: int = 2000,
    lr: float = 1e-2,
    lr_min: float = 1e-5,
) -> float:
    """The scale correction trained as the paper does: a scalar layer ``c`` (initialised to 1)
    trained with Adam, all else frozen, on the MSE loss
    ``w_e·MSE(c e_ml − e_dft per atom) + w_f·MSE(c f_ml − f_dft)``.

    With everything else frozen, the model's outputs are constants, so the layer can be trained on
    them directly. Energies are compared per atom after removing the mean offset (DFT codes differ
    in their energy zero). Used as a cross-check of :func:`correction_factor`.

    Parameters
    ----------
    e_ml, e_dft
        Total energies, eV. f_ml, f_dft: forces per frame, eV/Å. n_atoms: atoms per frame.
    weights
        Energy and force loss weights (the paper: 0.1 and 100; stress is left out here).
    epochs, lr, lr_min
        Adam steps, and the cosine-decayed learning rate from ``lr`` to ``lr_min``.
    """
    n = np.asarray(n_atoms, dtype=float)
    ea = np.asarray(e_ml, dtype=float) / n
    eb = np.asarray(e_dft, dtype=float) / n
    ea, eb = ea - ea.mean(), eb - eb.mean()
    fa = np.concatenate([np.asarray(f, dtype=float).ravel() for f in f_ml])
    fb = np.concatenate([np.asarray(f, dtype=float).ravel() for f in f_dft])
    w_e, w_f = weights
    c, m, v = 1.0, 0.0, 0.0
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, epochs + 1):
        grad = 2 * w_e * np.mean((c * ea - eb) * ea) + 2 * w_f * np.mean((c * fa - fb) * fa)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        rate = lr_min + 0.5 * (lr - lr_min) * (1 + np.cos(np.pi * t / epochs))
        c -= rate * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return float(c)
