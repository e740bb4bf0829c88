"""Figures of the property comparisons (PNG files): phonon bands and DOS, frequency and property
parity, energy profiles along a path, formation energies of mixing.

matplotlib is imported lazily, through the helpers of :mod:`softening.analysis.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softening.analysis.plots import finite_values, new_figure, point_alpha, save_figure

__all__ = [
    "energy_profile_plot",
    "formation_energy_plot",
    "frequency_parity_plot",
    "phonon_bands_plot",
    "property_parity_plot",
]


def _phonon_dos(frequencies: Any, weights: Any, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smeared phonon DOS on ``grid`` (THz), normalised to the number of bands."""
    f = np.asarray(frequencies, dtype=float)
    w = np.asarray(weights, dtype=float)
    w = np.repeat(w / w.sum(), f.shape[1])
    x = f.ravel()
    dos = np.zeros_like(grid)
    for chunk in range(0, x.size, 4096):  # bounded memory whatever the mesh
        xs, ws = x[chunk : chunk + 4096], w[chunk : chunk + 4096]
        dos += (ws[:, None] * np.exp(-0.5 * ((grid[None] - xs[:, None]) / sigma) ** 2)).sum(0)
    return dos / (sigma * np.sqrt(2 * np.pi))


def phonon_bands_plot(
    bands: Mapping[str, Any],
    path: str | Path,
    distances: Any = None,
    ticks: Sequence[tuple[float, str]] = (),
    mesh: Mapping[str, tuple[Any, Any]] | None = None,
    title: str | None = None,
    reference: str | None = None,
) -> Path:
    """Phonon band structures (and DOS) of a reference and models overlaid.

    Parameters
    ----------
    bands
        ``{label: (n_points, n_bands) frequencies in THz}`` along the band path; may be empty
        (then only the DOS is drawn).
    path
        PNG file to write.
    distances
        Path distance of each band point.
    ticks
        ``(distance, label)`` of the high-symmetry points.
    mesh
        ``{label: (frequencies (nq, n_bands) THz, weights (nq,))}``: a DOS panel per label.
    title
        Figure title.
    reference
        The label drawn in black (DFT); the others get colours.
    """
    have_bands = bool(bands) and distances is not None and len(distances) > 0
    if not have_bands and not mesh:
        raise ValueError("nothing to plot: no band path and no mesh frequencies")
    fig = new_figure((7.5, 4.5) if have_bands and mesh else (5.0, 4.5))
    if have_bands and mesh:
        ax_b, ax_d = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    elif have_bands:
        ax_b, ax_d = fig.add_subplot(), None
    else:
        ax_b, ax_d = None, fig.add_subplot()
    labels = list(bands) if have_bands else list(mesh or {})
    colors = {}
    k = 0
    for name in labels:
        if name == reference:
            colors[name] = "black"
        else:
            colors[name] = f"C{k % 10}"
            k += 1
    if ax_b is not None:
        x = np.asarray(distances, dtype=float)
        for name, freq in bands.items():
            f = np.asarray(freq, dtype=float)
            lw = 1.6 if name == reference else 1.1
            lines = ax_b.plot(x, f, color=colors[name], lw=lw)
            lines[0].set_label(name)
        for d, _ in ticks:
            ax_b.axvline(d, color="0.7", lw=0.6)
        ax_b.axhline(0, color="0.5", lw=0.6, ls=":")
        ax_b.set_xticks([d for d, _ in ticks], [lab for _, lab in ticks])
        ax_b.set_xlim(x.min(), x.max())
        ax_b.set_ylabel("frequency (THz)")
        ax_b.legend(loc="lower right", fontsize="small")
    if ax_d is not None and mesh:
        all_f = np.concatenate([np.asarray(f, dtype=float).ravel() for f, _ in mesh.values()])
        lo, hi = min(all_f.min(), 0.0), all_f.max()
        grid = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 400)
        sigma = max((hi - lo) / 100, 1e-3)
        for name, (freq, weights) in mesh.items():
            dos = _phonon_dos(freq, weights, grid, sigma)
            ax_d.plot(dos, grid, color=colors.get(name, "C0"), lw=1.2, label=name)
        ax_d.set_xlabel("DOS (1/THz)")
        ax_d.set_xlim(left=0)
        if ax_b is None:
            ax_d.set_ylabel("frequency (THz)")
            ax_d.legend(loc="upper right", fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def frequency_parity_plot(
    series: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    title: str | None = None,
    ratios: Mapping[str, float] | None = None,
) -> Path:
    """Parity of model against reference phonon frequencies (THz), one series per model.

    Parameters
    ----------
    series
        ``{label: (reference frequencies, model frequencies)}``, same shapes (mesh points x bands).
    path
        PNG file to write.
    title
        Figure title.
    ratios
        ``{label: omega_max ratio}`` shown in the legend.
    """
    if not series:
        raise ValueError("no series to plot")
    fig = new_figure()
    ax = fig.add_subplot()
    lo, hi = np.inf, -np.inf
    for k, (name, (ref, ml)) in enumerate(series.items()):
        x = finite_values(ref, "reference frequencies")
        y = finite_values(ml, f"{name} frequencies")
        if x.shape != y.shape:
            raise ValueError(f"{name}: {y.size} model frequencies for {x.size} reference ones")
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
        label = (
            name if not ratios or name not in ratios else f"{name}: ω_max ratio {ratios[name]:.3f}"
        )
        ax.scatter(x, y, s=3, alpha=point_alpha(x.size), color=f"C{k % 10}", edgecolors="none",
                   rasterized=True, label=label)  # fmt: skip
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    line = np.array([lo - pad, hi + pad])
    ax.plot(line, line, color="black", ls="--", lw=1.0, label="y = x")
    ax.set_xlim(*line)
    ax.set_ylim(*line)
    ax.set_aspect("equal")
    ax.set_xlabel("reference frequency (THz)")
    ax.set_ylabel("uMLIP frequency (THz)")
    ax.legend(loc="upper left", fontsize="small", markerscale=3)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


# ---- surfaces, vacancies, barriers ----------------------------------------------------------------


def property_parity_plot(
    series: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    quantity: str = "surface energy (J/m$^2$)",
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Parity plot of one scalar property per item (surface energies, vacancy energies,
    barriers): reference on x, each model on y, with ``y = x``.

    Parameters
    ----------
    series
        ``{model: (reference values, model values)}``, one unit for all.
    path
        PNG file to write.
    quantity
        Axis label (name and unit).
    title
        Figure title.
    labels
        ``{model: legend text}`` (e.g. with the MAE); default the model name.
    """
    if not series:
        raise ValueError("no series to plot")
    fig = new_figure()
    ax = fig.add_subplot()
    lo, hi = np.inf, -np.inf
    for k, (name, (ref, ml)) in enumerate(series.items()):
        x, y = finite_values(ref, "reference values"), finite_values(ml, f"{name} values")
        if x.shape != y.shape:
            raise ValueError(f"{name}: {y.size} model values for {x.size} reference ones")
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
        ax.scatter(x, y, s=18, color=f"C{k % 10}", label=(labels or {}).get(name, name))
    pad = 0.05 * (hi - lo) if hi > lo else 0.1
    line = np.array([min(0.0, lo - pad), hi + pad])
    ax.plot(line, line, color="black", ls="--", lw=1.0, label="y = x")
    ax.set_xlim(*line)
    ax.set_ylim(*line)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference {quantity}")
    ax.set_ylabel(f"uMLIP {quantity}")
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def energy_profile_plot(
    profiles: Mapping[str, tuple[Any, Any]], path: str | Path, title: str | None = None
) -> Path:
    """Energy profiles along a migration path: ``{label: (reaction coordinate Å, energy eV)}``."""
    if not profiles:
        raise ValueError("no profile to plot")
    fig = new_figure((5.0, 3.5))
    ax = fig.add_subplot()
    for k, (name, (x, e)) in enumerate(profiles.items()):
        ax.plot(finite_values(x, "coordinate"), finite_values(e, f"{name} energies"), "o-", color=f"C{k % 10}",
                label=name)  # fmt: skip
    ax.set_xlabel("reaction coordinate (Å)")
    ax.set_ylabel("energy relative to initial (eV)")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def formation_energy_plot(
    series: Mapping[str, tuple[Any, Any, Any]],
    path: str | Path,
    x_label: str,
    title: str | None = None,
    hull_lines: bool = True,
) -> Path:
    """Formation energy against composition, one series per method, with each method's hull.

    Parameters
    ----------
    series
        ``{method: (x, e_form eV/atom, on_hull booleans)}``; the first is the reference.
    path
        PNG file to write.
    x_label
        Label of x (the fraction of one end member).
    title
        Figure title.
    hull_lines
        Join each method's hull cells by a line (binaries; a line through a projection of a
        ternary hull would mislead).
    """
    if not series:
        raise ValueError("no series to plot")
    fig = new_figure((5.5, 4.0))
    ax = fig.add_subplot()
    for k, (name, (x, e, on_hull)) in enumerate(series.items()):
        x, e = finite_values(x, "fractions"), finite_values(e, f"{name} formation energies")
        hull = np.asarray(on_hull, dtype=bool)
        color = f"C{k % 10}"
        ax.scatter(x, 1000 * e, s=10, color=color, alpha=point_alpha(len(x)), label=name)
        if hull.any():
            order = np.argsort(x[hull])
            ax.plot(x[hull][order], 1000 * e[hull][order], "o-" if hull_lines else "o",
                    color=color, mfc="none", lw=1.2, label=f"{name} hull")  # fmt: skip
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("formation energy (meV/atom)")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


# ---- learning curves ------------------------------------------------------------------------------
