"""Figures of the softening analysis (PNG files), after Figs. 5 and 6 of Deng et al. (2025).

Force parity, scale distributions, MAE vs cMAE and learning curves here, with the figure helpers
every plot uses; the property figures (phonons, barriers, mixing) are in
:mod:`softening.analysis.property_plots`.

The only module of :mod:`softening.analysis` that does I/O. matplotlib is imported lazily inside the
functions (importing it costs about a second, and most users of the metrics never plot), and the
figures are drawn on an explicit Agg canvas through :class:`matplotlib.figure.Figure` instead of
pyplot: this neither changes the process-wide backend nor registers figures that would need closing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from softening.analysis.force_arrays import validate_force_pair

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "finite_values",
    "learning_curve_plot",
    "mae_vs_cmae_plot",
    "new_figure",
    "parity_plot",
    "point_alpha",
    "save_figure",
    "scale_distribution_plot",
]

# Above this many points a single parity series is drawn as a hexbin: a scatter of 10^5 points is
# slow to draw and saturates into a blob.
_HEXBIN_THRESHOLD = 5000
# Overlaid series cannot be hexbinned; each is thinned (for display only) to this many points.
_MAX_SCATTER_POINTS = 20000
_DPI = 150


def new_figure(figsize: tuple[float, float] = (5.0, 5.0)) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path | None) -> Path:
    if path is None:
        raise ValueError("path is required")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=_DPI, format="png")
    return out


def finite_values(x: Any, name: str) -> np.ndarray:
    """A non-empty, finite, 1-D float array."""
    a = np.asarray(x, dtype=float).ravel()
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def point_alpha(n: int) -> float:
    # Fewer points -> more opaque; many points -> translucent so density stays visible.
    return float(np.clip(1000.0 / max(n, 1), 0.05, 0.8))


def parity_plot(
    f_dft: Any,
    f_ml: Any = None,
    path: str | Path | None = None,
    scale: float | Mapping[str, float] | None = None,
    title: str | None = None,
    label: str | None = None,
) -> Path:
    """Parity plot of uMLIP against DFT force components with the fitted softening line (Fig. 5a).

    Parameters
    ----------
    f_dft
        DFT forces in eV/Å (per-frame list or stacked array), or a mapping
        ``{label: (f_dft, f_ml)}`` to overlay several models or materials (then ``f_ml`` is None).
    f_ml
        uMLIP forces in eV/Å, same shape as ``f_dft``; None with a mapping.
    path
        PNG file to write (parent folders are created).
    scale
        Softening scale drawn as ``y = s x``: a number for one pair, a mapping label -> scale for
        several; by default the through-origin slope of each pair.
    title
        Figure title.
    label
        Legend label of a single pair (default ``"uMLIP"``).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        On invalid forces (see :func:`softening.analysis.metrics.scale_through_origin`), a missing
        path, or inconsistent arguments.
    """
    if isinstance(f_dft, Mapping):
        if f_ml is not None:
            raise ValueError("pass f_ml=None when f_dft is a mapping {label: (f_dft, f_ml)}")
        if not f_dft:
            raise ValueError("no series to plot")
        pairs = dict(f_dft)
        if scale is not None and not isinstance(scale, Mapping):
            raise ValueError("scale must be a mapping label -> scale when several series are given")
        scales = dict(scale or {})
    else:
        if f_ml is None:
            raise ValueError("f_ml is required with array input")
        name = label or "uMLIP"
        pairs = {name: (f_dft, f_ml)}
        if isinstance(scale, Mapping):
            raise ValueError("scale must be a number for a single pair")
        scales = {} if scale is None else {name: float(scale)}
    if path is None:
        raise ValueError("path is required")

    series: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    for name, (dft_in, ml_in) in pairs.items():
        ml, dft = validate_force_pair(ml_in, dft_in)
        x, y = dft.ravel(), ml.ravel()
        s = scales.get(name)
        s = float(np.sum(x * y) / np.sum(x * x)) if s is None else float(s)
        series.append((str(name), x, y, s))

    fig = new_figure()
    ax = fig.add_subplot()
    lo = min(min(x.min(), y.min()) for _, x, y, _ in series)
    hi = max(max(x.max(), y.max()) for _, x, y, _ in series)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad
    line_x = np.array([lo, hi])

    if len(series) == 1 and series[0][1].size > _HEXBIN_THRESHOLD:
        name, x, y, s = series[0]
        hb = ax.hexbin(
            x, y, gridsize=80, bins="log", mincnt=1, cmap="viridis", extent=(lo, hi, lo, hi)
        )
        fig.colorbar(hb, ax=ax, label="count")
        ax.plot(line_x, s * line_x, color="tab:red", lw=1.5, label=f"{name}: s = {s:.3f}")
    else:
        rng = np.random.default_rng(0)  # display thinning only; fits use all points
        for k, (name, x, y, s) in enumerate(series):
            color = f"C{k % 10}"
            if x.size > _MAX_SCATTER_POINTS:
                keep = rng.choice(x.size, size=_MAX_SCATTER_POINTS, replace=False)
                x, y = x[keep], y[keep]
            ax.scatter(
                x,
                y,
                s=4,
                alpha=point_alpha(x.size),
                color=color,
                edgecolors="none",
                rasterized=True,
            )
            ax.plot(line_x, s * line_x, color=color, lw=1.5, label=f"{name}: s = {s:.3f}")
    ax.plot(line_x, line_x, color="black", ls="--", lw=1.0, label="y = x")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("DFT force component (eV/Å)")
    ax.set_ylabel("uMLIP force component (eV/Å)")
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def scale_distribution_plot(
    scales: Mapping[str, Sequence[float]] | Sequence[float],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Histogram of per-material softening scales, one per model, with a line at s = 1 (Fig. 5b).

    Parameters
    ----------
    scales
        ``{model_name: per-material scales}`` (dimensionless); a plain sequence is one unnamed model.
    path
        PNG file to write (parent folders are created).
    title
        Figure title.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        On an empty mapping or sequence, or NaN/inf scales.
    """
    data = dict(scales) if isinstance(scales, Mapping) else {"scales": scales}
    if not data:
        raise ValueError("no scales to plot")
    values = {str(k): finite_values(v, f"scales[{k!r}]") for k, v in data.items()}
    everything = np.concatenate(list(values.values()))
    # Keep s = 1 inside the range so the reference line is always visible.
    lo, hi = min(everything.min(), 1.0), max(everything.max(), 1.0)
    pad = 0.02 * (hi - lo) if hi > lo else 0.05
    bins = np.linspace(lo - pad, hi + pad, 41)

    fig = new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for k, (name, v) in enumerate(values.items()):
        frac = float(np.mean(v < 1.0))
        ax.hist(
            v,
            bins=bins,
            histtype="stepfilled",
            alpha=0.4,
            color=f"C{k % 10}",
            edgecolor=f"C{k % 10}",
            label=f"{name}: {frac:.1%} with s < 1 (n = {v.size})",
        )
    ax.axvline(1.0, color="black", ls="--", lw=1.0, label="s = 1")
    ax.set_xlabel("softening scale s (uMLIP vs DFT force slope)")
    ax.set_ylabel("number of materials")
    # Counts are whole materials: no 0.25 ticks when there are few.
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def mae_vs_cmae_plot(
    mae: Mapping[str, tuple[Sequence[float], Sequence[float]]] | Sequence[float],
    cmae: Sequence[float] | None = None,
    path: str | Path | None = None,
    labels: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Scatter of force MAE against cMAE (after removing the softening) with y = x (Fig. 6b).

    Points below the diagonal are materials whose error is largely the systematic softening.

    Parameters
    ----------
    mae
        Per-material force MAEs in eV/Å, or ``{model: (mae_seq, cmae_seq)}`` (then ``cmae`` is None).
    cmae
        Per-material cMAEs in eV/Å, same length as ``mae``; None with a mapping.
    path
        PNG file to write (parent folders are created).
    labels
        Text label per point (e.g. material ids) written next to it; with a mapping input, a
        mapping ``{model: labels}``.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        On empty or mismatched sequences, NaN/inf, a missing path, or inconsistent arguments.
    """
    if isinstance(mae, Mapping):
        if cmae is not None:
            raise ValueError("pass cmae=None when mae is a mapping {model: (mae, cmae)}")
        if not mae:
            raise ValueError("no series to plot")
        series = {str(k): v for k, v in mae.items()}
        if labels is not None and not isinstance(labels, Mapping):
            raise ValueError("labels must be a mapping {model: labels} when mae is a mapping")
        point_labels = dict(labels or {})
    else:
        if cmae is None:
            raise ValueError("cmae is required with sequence input")
        series = {"": (mae, cmae)}
        if isinstance(labels, Mapping):
            raise ValueError("labels must be a sequence when mae is a sequence")
        point_labels = {} if labels is None else {"": labels}
    if path is None:
        raise ValueError("path is required")

    fig = new_figure()
    ax = fig.add_subplot()
    hi = 0.0
    for k, (name, (m_in, c_in)) in enumerate(series.items()):
        m = finite_values(m_in, f"mae[{name!r}]" if name else "mae")
        c = finite_values(c_in, f"cmae[{name!r}]" if name else "cmae")
        if m.shape != c.shape:
            raise ValueError(f"mae and cmae lengths differ: {m.size} vs {c.size}")
        hi = max(hi, float(m.max()), float(c.max()))
        ax.scatter(m, c, s=16, alpha=0.8, color=f"C{k % 10}", label=name or None)
        texts = point_labels.get(name)
        if texts is not None:
            if len(texts) != m.size:
                raise ValueError(f"labels has {len(texts)} entries but there are {m.size} points")
            for xi, yi, t in zip(m, c, texts, strict=True):
                ax.annotate(
                    str(t), (xi, yi), fontsize="x-small", xytext=(2, 2), textcoords="offset points"
                )
    hi = 1.05 * hi if hi > 0 else 1.0
    ax.plot([0.0, hi], [0.0, hi], color="black", ls="--", lw=1.0, label="y = x")
    ax.set_xlim(0.0, hi)
    ax.set_ylim(0.0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("force MAE (eV/Å)")
    ax.set_ylabel("force cMAE after f_ml / s (eV/Å)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


# ---- phonons -----------------------------------------------------------------------------------------


def learning_curve_plot(
    curves: Sequence[Mapping[str, Any]],
    before: Mapping[str, float | None],
    path: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Held-out scale and force MAE against the frames trained on per material (log axis).

    One line per (choice, mode) with a band of one standard deviation over repeats; the
    uncorrected model is a horizontal dashed line.

    Parameters
    ----------
    curves
        Rows of :func:`~softening.analysis.learning_curve.curve_statistics` (``choice``, ``mode``,
        ``k``, ``scale_mean``, ``scale_std``, ``mae_mean``, ``mae_std``; MAE in eV/Å).
    before
        Held-out ``scale`` and ``mae`` of the uncorrected model.
    path
        PNG file to write (parent folders are created).
    title
        Figure title (e.g. the model's name).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not curves:
        raise ValueError("no curve to plot")
    if path is None:
        raise ValueError("path is required")
    lines: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in curves:
        lines.setdefault((row["choice"], row["mode"]), []).append(row)
    fig = new_figure((9.0, 4.0))
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(
        axes, ("scale", "mae"), ("held-out scale", "held-out force MAE (eV/Å)"), strict=True
    ):
        for i, ((choice, mode), rows) in enumerate(sorted(lines.items())):
            rows = sorted(rows, key=lambda r: r["k"])
            k = np.array([r["k"] for r in rows], dtype=float)
            mean = np.array([r[f"{key}_mean"] for r in rows], dtype=float)
            std = np.array([r[f"{key}_std"] or 0.0 for r in rows], dtype=float)
            color = f"C{i % 10}"
            ax.plot(k, mean, marker="o", color=color, label=f"{choice} ({mode})")
            ax.fill_between(k, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        if before.get(key) is not None:
            ax.axhline(before[key], color="black", ls="--", lw=1.0, label="uncorrected")
        if key == "scale":
            ax.axhline(1.0, color="grey", ls=":", lw=1.0)
        ax.set_xscale("log", base=2)
        # Plain K labels (1, 2, 4...) rather than powers of two.
        ks = sorted({int(r["k"]) for r in curves})
        ax.set_xticks(ks, labels=[str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("training frames per material, K")
        ax.set_ylabel(label)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
