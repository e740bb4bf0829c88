"""The figures of ``softening report``: stored results drawn as the paper draws them.

:func:`results_report` draws a parity plot per material and model, the scale distribution
(Fig. 5b), MAE against cMAE (Fig. 6b) and a parity plot per stored property, for the results a
:class:`~softening.stores.queries.ResultFilter` selects; which result goes into which figure is
:func:`~softening.stores.queries.report_selection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobflow import JobStore

    from softening.stores.queries import ReportSelection, ResultFilter

__all__ = ["ResultsReport", "results_report"]


@dataclass
class ResultsReport:
    """What :func:`results_report` drew.

    Attributes
    ----------
    results
        The query rows reported (:func:`~softening.stores.queries.query_results`).
    files
        ``parity`` (PNG list), ``property_plots`` (``{property: PNG}``), ``property_results``
        (count), and when there are per-material results ``scale_distribution``,
        ``mae_vs_cmae`` (PNG) and ``mae_vs_cmae_excluded`` (``"material (model)"`` list).
    selection
        Which result went into which figure.
    """

    results: list[dict[str, Any]]
    files: dict[str, Any]
    selection: ReportSelection


def results_report(
    store: JobStore | str | Path | None,
    out: str | Path,
    where: ResultFilter | None = None,
    parity_limit: int = 100,
) -> ResultsReport:
    """Draw the figures of the stored results that ``where`` selects into ``out``.

    Parameters
    ----------
    store
        A JobStore or a store spec (an embedded folder must exist).
    out
        Folder for the PNG files (``parity/`` holds the parity plots).
    where
        Which results (default: the latest per material, model and reference, no pooled ones);
        its ``model`` and ``material_id`` select the property documents too.
    parity_limit
        Most parity plots drawn (one per material and model).

    Returns
    -------
    ResultsReport
        The results, the files written and the selection.

    Raises
    ------
    InputError
        When nothing matches (no result and no property document).
    """
    from softening.analysis.plots import mae_vs_cmae_plot, parity_plot, scale_distribution_plot
    from softening.errors import InputError
    from softening.naming import safe_filename
    from softening.stores.queries import (
        ResultFilter,
        load_forces,
        open_store,
        query_results,
        report_selection,
    )
    from softening.workflows.properties import property_report

    where = where or ResultFilter()
    job_store = open_store(store)
    results = query_results(job_store, where)
    out = Path(out)
    # Property documents (every registered property): one parity plot per property.
    props = property_report(job_store, out, model=where.model, material_id=where.material_id)
    if not results and not props["property_plots"]:
        raise InputError("no stored result matches the filters: nothing to plot")
    out.mkdir(parents=True, exist_ok=True)
    chosen = report_selection(results, parity_limit)
    files: dict[str, Any] = {"parity": [], **props}
    for r in chosen.parity:
        f_ref, f_ml = load_forces(job_store, r["uuid"])
        if f_ref.size == 0:
            continue
        name = f"parity_{safe_filename(r['material_id'])}_{safe_filename(r['model']['name'])}.png"
        title = r["material_id"]
        if r.get("formula") and r["formula"] != title:
            title += f" ({r['formula']})"
        path = parity_plot(
            f_ref, f_ml, out / "parity" / name, scale=r["scale"], title=title,
            label=r["model"]["name"],
        )  # fmt: skip
        files["parity"].append(str(path))
    if chosen.by_model:
        files["scale_distribution"] = str(
            scale_distribution_plot(
                {m: [r["scale"] for r in rs] for m, rs in chosen.by_model.items()},
                out / "scale_distribution.png",
                title="Softening scale across materials",
            )
        )
        if chosen.mae_vs_cmae:
            points = chosen.mae_vs_cmae
            files["mae_vs_cmae"] = str(
                mae_vs_cmae_plot(
                    {
                        m: ([r["mae"] for r in rs], [r["cmae"] for r in rs])
                        for m, rs in points.items()
                    },
                    path=out / "mae_vs_cmae.png",
                    labels={m: [r["material_id"] for r in rs] for m, rs in points.items()}
                    if chosen.label_points
                    else None,
                )
            )
        files["mae_vs_cmae_excluded"] = chosen.excluded
    return ResultsReport(results=results, files=files, selection=chosen)
