"""Results of property flows: the JSON records and figures of ``softening phonons``, ``surfaces``
and ``properties``.

The property flows (:mod:`softening.workflows.properties`, :mod:`softening.makers.surfaces`,
:mod:`softening.makers.defects`) store :class:`~softening.schemas.PhononDoc`,
:class:`~softening.schemas.SurfaceDoc`, :class:`~softening.schemas.VacancyDoc` and
:class:`~softening.schemas.BarrierDoc` documents; this module finds a flow's documents
(:func:`flow_property_docs`) and turns them into the ``--json`` objects
(:func:`properties_result`) and figures (:func:`property_figures`). Flags are given as
``"kind: detail"`` text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobflow import Flow, JobStore

__all__ = [
    "JSON_KEYS",
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
    "surface_rows",
    "vacancy_rows",
]

#: Key of each defect property's rows in the ``--json`` output.
JSON_KEYS = {"surface": "surfaces", "vacancy": "vacancies", "barrier": "barriers"}


def _texts(flags: Sequence[Any]) -> list[str]:
    return [str(f) for f in flags]


# ---- JSON records ------------------------------------------------------------------------------------


def phonon_summary(doc: Any) -> dict[str, Any]:
    """The per-material JSON record of a :class:`PhononDoc` (frequencies THz, forces eV/Å)."""
    v = doc.values
    return {
        "material": doc.material_id,
        "formula": doc.formula,
        "omega_max_ref": v.omega_max_ref,
        "omega_max": v.omega_max,
        "omega_max_ratio": v.omega_max_ratio,
        "freq_mae": v.freq_mae,
        "freq_max_abs_error": v.freq_max_abs_error,
        "scale": v.scale,
        "mae": v.mae,
        "imaginary_fraction_ref": v.imaginary_fraction_ref,
        "imaginary_fraction": v.imaginary_fraction,
        "imaginary_tol": v.imaginary_tol,
        "n_displacements": v.n_displacements,
        "n_supercell_atoms": v.n_supercell_atoms,
        "mesh": v.mesh,
        "residual_force_max": v.residual_force_max,
        "residual_force_max_ref": v.residual_force_max_ref,
        "temperature": v.temperature,
        "free_energy_ref": v.free_energy_ref,
        "free_energy": v.free_energy,
        "entropy_ref": v.entropy_ref,
        "entropy": v.entropy,
        "heat_capacity_ref": v.heat_capacity_ref,
        "heat_capacity": v.heat_capacity,
        "reference": doc.reference.name,
        "flags": _texts(doc.flags),
    }


def surface_rows(doc: Any) -> list[dict[str, Any]]:
    """Per-slab JSON records of a :class:`SurfaceDoc` (gamma in J/m^2, ``_ev`` in eV/Å^2)."""
    return [
        {
            "material": doc.material_id,
            "facet": r.facet,
            "description": r.description,
            "reconstructed": r.reconstructed,
            "gamma_ref": r.gamma_ref,
            "gamma": r.gamma,
            "gamma_ref_ev": r.gamma_ref_ev,
            "gamma_ev": r.gamma_ev,
            "n_atoms": r.n_atoms,
            "area": r.area,
            "vacuum": r.vacuum,
            "e_slab_ref": r.e_slab_ref,
            "e_slab": r.e_slab,
            "relaxed": r.relaxed,
            "frame_id": r.frame_id,
            "bulk_choice": doc.values.bulk_choice,
        }
        for r in doc.values.rows
    ]


def vacancy_rows(doc: Any) -> list[dict[str, Any]]:
    """Per-site JSON records of a :class:`VacancyDoc` (energies in eV)."""
    v = doc.values
    return [
        {
            "material": doc.material_id,
            **r.model_dump(),
            "supercell_matrix": v.supercell_matrix,
            "min_image_distance": v.min_image_distance,
            "chemical_potential": v.chemical_potential,
        }
        for r in v.rows
    ]


def barrier_rows(doc: Any) -> list[dict[str, Any]]:
    """The JSON record of a :class:`BarrierDoc` (energies in eV, coordinate in Å)."""
    return [{"material": doc.material_id, **doc.values.model_dump(), "flags": _texts(doc.flags)}]


def property_rows(doc: Any) -> list[dict[str, Any]]:
    """The JSON records of a surface, vacancy or barrier document (see :data:`JSON_KEYS`)."""
    return {"surface": surface_rows, "vacancy": vacancy_rows, "barrier": barrier_rows}[
        doc.property
    ](doc)


def property_summary(doc: Any) -> dict[str, Any]:
    """Per-material summary of a surface, vacancy or barrier document (the bulk choice and
    skipped slabs for surfaces)."""
    out: dict[str, Any] = {
        "material": doc.material_id,
        "property": doc.property,
        "ratio": doc.ratio,
        "reference": doc.reference.name,
        "flags": _texts(doc.flags),
    }
    v = doc.values
    if doc.property == "surface":
        out |= {
            "bulk_choice": v.bulk_choice,
            "bulk_frame": v.bulk_frame,
            "e_bulk_ref": v.e_bulk_ref,
            "e_bulk": v.e_bulk,
            "mae": v.mae,
            "mean_ratio": v.mean_ratio,
            "fraction_underestimated": v.fraction_underestimated,
            "skipped": v.skipped,
        }
    elif doc.property == "vacancy":
        out |= {"mae": v.mae, "e_bulk_ref": v.e_bulk_ref, "e_bulk": v.e_bulk}
    return out


def phonon_result(docs: Sequence[Any], model_names: Sequence[str]) -> dict[str, Any]:
    """``{"models": {NAME: {"materials": [phonon_summary, ...]}}}`` for the given models."""
    return {
        "models": {
            name: {"materials": [phonon_summary(d) for d in docs if d.model.name == name]}
            for name in model_names
        }
    }


def defect_result(docs: Sequence[Any], model_names: Sequence[str]) -> dict[str, Any]:
    """``{"models": {NAME: {"surfaces"|"vacancies"|"barriers": [...], "materials": [...],
    "summary": {property: MAE, mean ratio, fraction underestimated, n}}}}``."""
    from softening.analysis.surfaces import compare_surface_energies

    result: dict[str, Any] = {"models": {}}
    for name in model_names:
        mine = [d for d in docs if d.model.name == name]
        entry: dict[str, Any] = {}
        for d in mine:
            entry.setdefault(JSON_KEYS[d.property], []).extend(property_rows(d))
        entry["materials"] = [property_summary(d) for d in mine]
        summary = {}
        for prop, key, ref, ml in (
            ("surface", "surfaces", "gamma_ref", "gamma"),
            ("vacancy", "vacancies", "e_vac_ref", "e_vac"),
            ("barrier", "barriers", "barrier_ref", "barrier"),
        ):
            rows = entry.get(key)
            if rows:
                summary[prop] = compare_surface_energies(
                    [r[ref] for r in rows], [r[ml] for r in rows]
                )
        entry["summary"] = summary
        result["models"][name] = entry
    return result


def properties_result(
    docs: Sequence[Any], model_names: Sequence[str], phonon: bool
) -> dict[str, Any]:
    """The ``--json`` object of property documents: :func:`phonon_result` for phonons, else
    :func:`defect_result` (surfaces, vacancies, barriers)."""
    return (phonon_result if phonon else defect_result)(docs, model_names)


def flow_property_docs(
    flow: Flow,
    job_store: JobStore,
    outputs: Sequence[Any],
    material_ids: Sequence[str],
    model_names: Sequence[str],
    phonon: bool,
) -> list[Any]:
    """The property documents of a finished property flow, in input order (materials, models).

    Phonon documents are found by the flow's uuid among the jobs' hosts, so that jobs a job was
    replaced by at run time (the phonon jobs after a relaxation) are found too; surface, vacancy
    and barrier documents are the flow's ``outputs``.
    """
    if not phonon:
        return list(outputs)
    from softening.schemas import PhononDoc

    stored = job_store.query(
        {"hosts": flow.uuid, "output.property": "phonon"},
        properties=["output", "index"], load=True,
    )  # fmt: skip
    docs = [
        PhononDoc.model_validate({k: v for k, v in d["output"].items() if not k.startswith("@")})
        for d in stored
    ]

    def rank(d: Any) -> tuple[int, int]:
        m = list(material_ids)
        n = list(model_names)
        return (
            m.index(d.material_id) if d.material_id in m else len(m),
            n.index(d.model.name) if d.model.name in n else len(n),
        )

    return sorted(docs, key=rank)


# ---- figures -------------------------------------------------------------------------------------


def phonon_plots(docs: Sequence[Any], out: str | Path) -> dict[str, dict[str, str]]:
    """Per material: band structure + DOS of the reference and every model, and frequency parity.

    Returns
    -------
    dict
        ``{material: {"bands": PNG, "parity": PNG}}``.
    """
    from softening.analysis.plots import frequency_parity_plot, phonon_bands_plot
    from softening.naming import safe_filename

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_material: dict[str, list] = {}
    for d in docs:
        by_material.setdefault(d.material_id, []).append(d)
    files: dict[str, dict[str, str]] = {}
    for material, group in by_material.items():
        a0 = group[0].arrays
        if a0 is None:
            continue
        ref_label = f"DFT ({group[0].reference.name})"
        bands = {ref_label: a0.band_frequencies_ref} if a0.band_frequencies_ref else {}
        mesh = {ref_label: (a0.frequencies_ref, a0.weights)}
        for d in group:
            if d.arrays.band_frequencies:
                bands[d.model.name] = d.arrays.band_frequencies
            mesh[d.model.name] = (d.arrays.frequencies, d.arrays.weights)
        title = material if group[0].formula == material else f"{material} ({group[0].formula})"
        name = safe_filename(material)
        files[material] = {
            "bands": str(
                phonon_bands_plot(
                    bands,
                    out / f"phonons_{name}.png",
                    distances=a0.band_distances,
                    ticks=a0.band_ticks,
                    mesh=mesh,
                    title=title,
                    reference=ref_label,
                )  # fmt: skip
            ),
            "parity": str(
                frequency_parity_plot(
                    {d.model.name: (d.arrays.frequencies_ref, d.arrays.frequencies) for d in group},
                    out / f"phonon_parity_{name}.png",
                    title=f"{title}: mesh frequencies",
                    ratios={d.model.name: d.values.omega_max_ratio for d in group},
                )
            ),
        }
    return files


def property_plots(docs: Sequence[Any], out: str | Path) -> dict[str, str]:
    """Surface, vacancy and barrier documents: a parity plot per property (all materials, one
    series per model) and each barrier's energy profile.

    Returns
    -------
    dict
        ``{"<property>_parity": PNG, "barrier <material> <model>": PNG, ...}``.
    """
    from softening.analysis.plots import energy_profile_plot, property_parity_plot
    from softening.naming import safe_filename

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    keys = {
        "surface": ("gamma_ref", "gamma", "surface energy (J/m$^2$)"),
        "vacancy": ("e_vac_ref", "e_vac", "vacancy formation energy (eV)"),
        "barrier": ("barrier_ref", "barrier", "migration barrier (eV)"),
    }
    for prop, (kr, km, quantity) in keys.items():
        series: dict[str, tuple[list[float], list[float]]] = {}
        for d in docs:
            if d.property != prop:
                continue
            x, y = series.setdefault(d.model.name, ([], []))
            for r in property_rows(d):
                x.append(r[kr])
                y.append(r[km])
        if series:
            path = out / f"{prop}_parity.png"
            property_parity_plot(series, path, quantity, title=f"{prop}: uMLIP vs reference")
            files[f"{prop}_parity"] = str(path)
    for d in docs:
        if d.property != "barrier":
            continue
        v = d.values
        path = out / f"barrier_{safe_filename(d.material_id)}_{safe_filename(d.model.name)}.png"
        energy_profile_plot(
            {
                f"{d.reference.name} on {d.model.name} images": (
                    v.reaction_coordinate, v.profile_ref,
                ),
                d.model.name: (v.reaction_coordinate, v.profile),
            },
            path,
            title=f"{d.material_id}: vacancy hop {v.path}",
        )  # fmt: skip
        files[f"barrier {d.material_id} {d.model.name}"] = str(path)
    return files


def property_figures(docs: Sequence[Any], out: str | Path, phonon: bool) -> dict[str, Any]:
    """The figures of property documents in ``out``: :func:`phonon_plots` for phonons, else
    :func:`property_plots` (surfaces, vacancies, barriers)."""
    return (phonon_plots if phonon else property_plots)(docs, out)
