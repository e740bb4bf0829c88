"""Results of property flows: the JSON records and figures of ``softening phonons``, ``surfaces``,
``mixing`` and ``properties``, read from the property registry.

Every property document is a :class:`~softening.schemas.PropertyDoc`; its registry entry
(:class:`~softening.makers.properties.PropertySpec`) says how it becomes ``--json`` rows and
records, a summary and figures. This module finds a flow's documents (:func:`flow_property_docs`)
and turns them into the ``--json`` object (:func:`properties_result`) and figures
(:func:`property_figures`) without knowing any property by name. Flags are given as
``"kind: detail"`` text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softening.makers.barrier import barrier_rows
from softening.makers.phonons import phonon_plots, phonon_summary
from softening.makers.properties import get_property
from softening.makers.surfaces import surface_rows
from softening.makers.vacancy import vacancy_rows

if TYPE_CHECKING:
    from jobflow import Flow, JobStore

__all__ = [
    "barrier_rows",
    "defect_result",
    "flow_property_docs",
    "phonon_plots",
    "phonon_result",
    "phonon_summary",
    "properties_result",
    "property_figures",
    "property_plots",
    "property_rows",
    "property_summary",
    "summarize_pairs",
    "surface_rows",
    "vacancy_rows",
]


# ---- JSON records ------------------------------------------------------------------------------------


def property_rows(doc: Any) -> list[dict[str, Any]]:
    """The ``--json`` rows of a property document (its registry entry's ``rows``)."""
    return get_property(doc.property).rows(doc)


def property_summary(doc: Any) -> dict[str, Any]:
    """The per-material (or per-system) ``--json`` record of a property document."""
    return get_property(doc.property).record(doc)


def summarize_pairs(pairs: Sequence[tuple[float, float]]) -> dict[str, float]:
    """MAE, mean ratio, ratio of sums, fraction underestimated and count of (reference, model)
    value pairs (any one unit for both)."""
    from softening.analysis.surfaces import compare_surface_energies

    return compare_surface_energies([p[0] for p in pairs], [p[1] for p in pairs])


def properties_result(
    docs: Sequence[Any], model_names: Sequence[str], phonon: bool | None = None
) -> dict[str, Any]:
    """The ``--json`` object of property documents:
    ``{"models": {NAME: {ROWS_KEY: [...], RECORDS_KEY: [...], "summary": {...}}}}``.

    Per model: each property's rows under its ``json_key`` (``surfaces``, ``vacancies``,
    ``barriers``, ``cells``...), where it has rows; its records under its ``records_key``
    (``materials``, or ``systems`` for mixing), present for every model; and ``summary``
    (property: MAE, mean ratio, fraction underestimated, n) where some property summarizes.
    ``phonon`` is accepted for compatibility and ignored: the documents say what they are.
    """
    specs = {d.property: get_property(d.property) for d in docs}
    records_keys = list(dict.fromkeys(s.records_key for s in specs.values())) or ["materials"]
    summarizing = any(s.summarize for s in specs.values()) or not specs
    result: dict[str, Any] = {"models": {}}
    for name in model_names:
        mine = [d for d in docs if d.model.name == name]
        entry: dict[str, Any] = {}
        for d in mine:
            spec = specs[d.property]
            if spec.json_key is not None:
                entry.setdefault(spec.json_key, []).extend(spec.rows(d))
        for key in records_keys:
            entry[key] = [
                specs[d.property].record(d) for d in mine if specs[d.property].records_key == key
            ]
        if summarizing:
            pairs: dict[str, list[tuple[float, float]]] = {}
            for d in mine:
                if specs[d.property].summarize:
                    pairs.setdefault(d.property, []).extend(specs[d.property].pairs(d))
            entry["summary"] = {p: summarize_pairs(v) for p, v in pairs.items() if v}
        result["models"][name] = entry
    return result


#: The JSON of phonon documents and of surface/vacancy/barrier documents: one builder for all.
phonon_result = properties_result
defect_result = properties_result


def flow_property_docs(
    flow: Flow,
    job_store: JobStore,
    outputs: Sequence[Any] = (),
    material_ids: Sequence[str] = (),
    model_names: Sequence[str] = (),
    phonon: bool | None = None,
) -> list[Any]:
    """The property documents of a finished property flow, in input order (materials, then
    properties as the flow made them, then models).

    Found by the flow's uuid among the jobs' hosts, so that documents of jobs a job was replaced
    by at run time (phonons after a relaxation, a property after a correction) are found too.
    ``outputs`` and ``phonon`` are accepted for compatibility and not needed.
    """
    from softening.makers.properties import property_names

    stored = job_store.query(
        {"hosts": flow.uuid, "output.property": {"$in": property_names()}},
        properties=["output", "index", "uuid"], load=True,
    )  # fmt: skip
    docs = [get_property(d["output"]["property"]).validate(d["output"]) for d in stored]
    materials, models = list(material_ids), list(model_names)
    order = {p: k for k, p in enumerate(dict.fromkeys(d.property for d in docs))}

    def rank(d: Any) -> tuple[int, int, int]:
        return (
            materials.index(d.material_id) if d.material_id in materials else len(materials),
            order[d.property],
            models.index(d.model.name) if d.model.name in models else len(models),
        )

    return sorted(docs, key=rank)


# ---- figures -------------------------------------------------------------------------------------


def property_plots(docs: Sequence[Any], out: str | Path) -> dict[str, Any]:
    """The figures of property documents in ``out``: a parity plot per property (all materials,
    one series per model) where its entry asks for one, and each entry's own figures (phonon
    bands, barrier profiles, mixing hulls...).

    Returns
    -------
    dict
        ``{"<property>_parity": PNG, ...}`` and what the entries' figure functions return.
    """
    from softening.analysis.property_plots import property_parity_plot

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_property: dict[str, list[Any]] = {}
    for d in docs:
        by_property.setdefault(d.property, []).append(d)
    files: dict[str, Any] = {}
    for prop, group in by_property.items():
        spec = get_property(prop)
        if spec.parity_figure:
            series: dict[str, tuple[list[float], list[float]]] = {}
            for d in group:
                x, y = series.setdefault(d.model.name, ([], []))
                for ref, ml in spec.pairs(d):
                    x.append(ref)
                    y.append(ml)
            if any(v[0] for v in series.values()):
                path = out / f"{prop}_parity.png"
                property_parity_plot(series, path, spec.axis, title=f"{prop}: uMLIP vs reference")
                files[f"{prop}_parity"] = str(path)
        if spec.figures is not None:
            files.update(spec.figures(group, out))
    return files


def property_figures(docs: Sequence[Any], out: str | Path, phonon: bool | None = None) -> dict:
    """The figures of property documents (see :func:`property_plots`); ``phonon`` is accepted
    for compatibility and ignored."""
    return property_plots(docs, out)
