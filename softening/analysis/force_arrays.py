"""Force arrays as the metrics take them: per frame or stacked, checked once.

Every metric in :mod:`softening.analysis.metrics` (and the parity plot) accepts forces per frame (a
list of ``(n_atoms_i, 3)`` arrays, eV/Å) or already stacked (an ``(N, 3)`` array or a flat array of
components); these functions turn either into float arrays and refuse what no slope or error can be
taken of (mismatched shapes, empty, NaN/inf, an all-zero denominator), with a message naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "as_frames",
    "check_finite",
    "frame_shapes",
    "is_frame_list",
    "stack_forces",
    "validate_force_pair",
]


def is_frame_list(x: Any) -> bool:
    """True when ``x`` is a list/tuple whose items are arrays (frames), not scalars."""
    if isinstance(x, np.ndarray) or not isinstance(x, Sequence) or isinstance(x, str):
        return False
    return len(x) > 0 and all(np.ndim(item) >= 1 for item in x)


def stack_forces(frames: Any, name: str = "forces") -> np.ndarray:
    """Concatenate per-frame force arrays into one float array.

    Parameters
    ----------
    frames
        A list of ``(n_atoms_i, 3)`` arrays (one per frame), an ``(N, 3)`` array, or a flat array of
        force components (eV/Å).
    name
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` when every frame is two-dimensional (or the input already was), otherwise the flat
        array of all components. The order of components is that of the input.
    """
    if is_frame_list(frames):
        arrays = [np.asarray(f, dtype=float) for f in frames]
        if all(a.ndim == 2 for a in arrays):
            widths = {a.shape[1] for a in arrays}
            if len(widths) != 1:
                raise ValueError(
                    f"{name}: frames have different numbers of columns: {sorted(widths)}"
                )
            return np.concatenate(arrays, axis=0)
        # Mixed or one-dimensional frames: only the components matter, keep their order.
        return np.concatenate([a.ravel() for a in arrays])
    try:
        return np.asarray(frames, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} cannot be read as a float array: {exc}") from None


def frame_shapes(frames: Any) -> list[tuple[int, ...]] | None:
    """Shapes of the frames when ``frames`` is a list of frames, else ``None``."""
    if is_frame_list(frames):
        return [np.shape(f) for f in frames]
    return None


def check_finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")


def validate_force_pair(
    f_ml: Any,
    f_dft: Any,
    *,
    nonzero: str | None = "f_dft",
) -> tuple[np.ndarray, np.ndarray]:
    """Stack and check a pair of force arrays; return them as float arrays of equal shape.

    Parameters
    ----------
    f_ml, f_dft
        ML and reference forces (eV/Å), per frame or stacked.
    nonzero
        Which array must not be all zero (it is the denominator of a slope): ``"f_dft"``, ``"f_ml"``
        or ``None``.

    Raises
    ------
    ValueError
        Mismatched shapes (per frame when both are given per frame), empty input, NaN/inf, or an
        all-zero array where a slope needs it.
    """
    shapes_ml, shapes_dft = frame_shapes(f_ml), frame_shapes(f_dft)
    if shapes_ml is not None and shapes_dft is not None:
        if len(shapes_ml) != len(shapes_dft):
            raise ValueError(
                f"numbers of frames differ: {len(shapes_ml)} (f_ml) vs {len(shapes_dft)} (f_dft)"
            )
        for i, (a, b) in enumerate(zip(shapes_ml, shapes_dft, strict=True)):
            if a != b:
                raise ValueError(f"frame {i}: force shapes differ: {a} vs {b}")
    ml = stack_forces(f_ml, "f_ml")
    dft = stack_forces(f_dft, "f_dft")
    if ml.shape != dft.shape:
        raise ValueError(f"force shapes differ: {ml.shape} vs {dft.shape}")
    if ml.size == 0:
        raise ValueError("forces are empty")
    check_finite(ml, "f_ml")
    check_finite(dft, "f_dft")
    arrays = {"f_ml": ml, "f_dft": dft}
    if nonzero is not None and not np.any(arrays[nonzero]):
        raise ValueError(f"{nonzero} is all zero: the slope is undefined")
    return ml, dft


def as_frames(frames: Any, name: str) -> list[np.ndarray]:
    """Normalise input to a list of per-frame float arrays.

    A list of arrays is a list of frames; a 3-D array ``(n_frames, n_atoms, 3)`` is split along its
    first axis; any other array (``(N, 3)`` or flat) is ONE frame, since frame boundaries are unknown.
    """
    if is_frame_list(frames):
        return [np.asarray(f, dtype=float) for f in frames]
    arr = stack_forces(frames, name)
    if arr.ndim == 3:
        return list(arr)
    return [arr]
