"""What ``softening evaluate`` hands back: the ``--json`` object and its figures, from a
:class:`~softening.makers.evaluate.DatasetEvaluation`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from softening.makers.evaluate import DatasetEvaluation


def evaluation_summary(
    evaluation: DatasetEvaluation, out: str | Path | None = None
) -> dict[str, Any]:
    """The ``softening evaluate --json`` object, with the figures when ``out`` is given.

    Per model (canonical name): ``"pooled"``, one fit over every force component of every frame
    of every material (never a mean of per-material slopes; with one material, that material's own
    result), with ``n_materials`` and ``fraction_softened`` (:func:`fraction_softened`: the share
    of materials, not frames, with ``scale < 1``); and ``"materials"``, one entry per material id
    (:func:`material_summary`), sorted by id. ``"inputs"``: per VASP file read, the steps kept and
    dropped and its flags. With ``out``: ``"plot"`` (scale distribution) and ``"parity"`` (pooled
    forces), see :func:`evaluation_plots`.

    Parameters
    ----------
    evaluation
        From :func:`evaluate_datasets`.
    out
        Folder for the figures, or ``None`` for none.

    Returns
    -------
    dict
        JSON-ready: ``{"models": {NAME: {"pooled": {...}, "materials": [...]}}, ...}``.
    """
    result = evaluation.summary()
    if out is not None:
        result.update(evaluation_plots(evaluation, out))
    return result


def evaluation_plots(evaluation: DatasetEvaluation, out: str | Path) -> dict[str, str]:
    """The scale distribution across materials (all models) and a pooled parity plot, in ``out``.

    Returns
    -------
    dict[str, str]
        ``{"plot": scale distribution PNG, "parity": parity PNG}``.
    """
    from softening.analysis.plots import parity_plot, scale_distribution_plot

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scales = {name: [d.scale for d in ev.materials] for name, ev in evaluation.models.items()}
    files = {"plot": str(scale_distribution_plot(scales, out / "scale_distribution.png"))}
    series = {
        f"{ev.pooled.material_id} {name}": ev.pooled_forces
        for name, ev in evaluation.models.items()
        if ev.pooled_forces is not None
    }
    if series:
        scale = {
            f"{ev.pooled.material_id} {n}": ev.pooled.scale for n, ev in evaluation.models.items()
        }
        files["parity"] = str(
            parity_plot(
                series, path=out / "parity.png", scale=scale, title="uMLIP vs reference forces"
            )
        )
    return files
