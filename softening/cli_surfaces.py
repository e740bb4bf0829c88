"""``softening surfaces`` and the ``surface``/``vacancy``/``barrier`` properties of
``softening properties``.

Registered on :data:`softening.cli.app` (imported at the end of ``cli.py``);
``softening properties --property surface|vacancy|barrier`` hands over to
:func:`run_defect_flow`. The commands hold no science: they read inputs, run the flows of
:mod:`softening.makers.surfaces` and :mod:`softening.makers.defects` into the result store, and
print or plot the :class:`~softening.schemas.SurfaceDoc`, :class:`VacancyDoc` and
:class:`BarrierDoc` outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from softening.cli import (
    JsonOpt,
    ModelOpt,
    StoreOpt,
    _check_models,
    _job_folders,
    _models,
    _report_failures,
    _run_flow,
    _safe_name,
    _setup_logging,
    app,
    console,
    out_console,
)
from softening.errors import SofteningError

#: Properties of ``softening properties`` computed here.
#: Key of each property's rows in the JSON output.
JSON_KEYS = {"surface": "surfaces", "vacancy": "vacancies", "barrier": "barriers"}


# ---- JSON records ----------------------------------------------------------------------------------


def surface_rows(doc) -> list[dict[str, Any]]:
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


def vacancy_rows(doc) -> list[dict[str, Any]]:
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


def barrier_rows(doc) -> list[dict[str, Any]]:
    """The JSON record of a :class:`BarrierDoc` (energies in eV, coordinate in Å)."""
    return [{"material": doc.material_id, **doc.values.model_dump(), "flags": doc.flags}]


def material_summary(doc) -> dict[str, Any]:
    """Per-material summary of a property document (the bulk choice and skipped slabs for
    surfaces)."""
    out: dict[str, Any] = {
        "material": doc.material_id,
        "property": doc.property,
        "ratio": doc.ratio,
        "reference": doc.reference.name,
        "flags": doc.flags,
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


def _rows(doc) -> list[dict[str, Any]]:
    return {"surface": surface_rows, "vacancy": vacancy_rows, "barrier": barrier_rows}[
        doc.property
    ](doc)


def _result(docs, model_names: list[str]) -> dict[str, Any]:
    """``{"models": {NAME: {"surfaces"|"vacancies"|"barriers": [...], "materials": [...],
    "summary": {...}}}}``."""
    from softening.analysis.surfaces import compare_surface_energies

    result: dict[str, Any] = {"models": {}}
    for name in model_names:
        mine = [d for d in docs if d.model.name == name]
        entry: dict[str, Any] = {}
        for d in mine:
            entry.setdefault(JSON_KEYS[d.property], []).extend(_rows(d))
        entry["materials"] = [material_summary(d) for d in mine]
        summary = {}
        for prop, key, ref, ml in (
            ("surface", "surfaces", "gamma_ref", "gamma"),
            ("vacancy", "vacancies", "e_vac_ref", "e_vac"),
            ("barrier", "barriers", "barrier_ref", "barrier"),
        ):
            rows = entry.get(key)
            if rows:
                summary[prop] = compare_surface_energies([r[ref] for r in rows],
                                                         [r[ml] for r in rows])  # fmt: skip
        entry["summary"] = summary
        result["models"][name] = entry
    return result


# ---- tables and figures ----------------------------------------------------------------------------


def _table(docs) -> Table:
    table = Table(title="Properties: uMLIP against reference")
    cols = ("material", "model", "property", "item", "reference", "uMLIP", "ratio", "flags")
    for col in cols:
        table.add_column(col, justify="right" if col in ("reference", "uMLIP", "ratio") else "left")
    for d in docs:
        for r in _rows(d):
            if d.property == "surface":
                item = f"({' '.join(map(str, r['facet'] or []))})" + (
                    " rec." if r["reconstructed"] else ""
                )
                ref, ml, unit = r["gamma_ref"], r["gamma"], "J/m²"
            elif d.property == "vacancy":
                item, ref, ml, unit = f"site {r['site']} {r['species']}", r["e_vac_ref"], r[
                    "e_vac"], "eV"  # fmt: skip
            else:
                item, ref, ml, unit = f"hop {r['path']}", r["barrier_ref"], r["barrier"], "eV"
            table.add_row(
                d.material_id,
                d.model.name,
                d.property,
                item,
                f"{ref:.3f} {unit}",
                f"{ml:.3f} {unit}",
                f"{ml / ref:.3f}" if ref else "-",
                ", ".join(sorted({f.split(":")[0] for f in d.flags})) or "-",
            )
    table.caption = "ratio = uMLIP / reference; < 1: underestimated (softened)"
    return table


def property_plots(docs, out: Path) -> dict[str, str]:
    """Parity plots per property (all materials, one series per model) and barrier profiles."""
    from softening.analysis.plots import energy_profile_plot, property_parity_plot

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
            for r in _rows(d):
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
        path = out / f"barrier_{_safe_name(d.material_id)}_{_safe_name(d.model.name)}.png"
        energy_profile_plot(
            {
                f"{d.reference.name} on {d.model.name} images": (v.reaction_coordinate,
                                                                 v.profile_ref),
                d.model.name: (v.reaction_coordinate, v.profile),
            },
            path,
            title=f"{d.material_id}: vacancy hop {v.path}",
        )  # fmt: skip
        files[f"barrier {d.material_id} {d.model.name}"] = str(path)
    return files


def _report(docs, model_names: list[str], out: Path | None, as_json: bool,
            extra: dict[str, Any]) -> None:  # fmt: skip
    result = _result(docs, model_names)
    result.update(extra)
    if out is not None:
        result["plots"] = property_plots(docs, out)
    if as_json:
        print(json.dumps(result))
        return
    out_console.print(_table(docs))
    for name, entry in result["models"].items():
        for prop, s in entry["summary"].items():
            console.print(
                f"{name} {prop}: MAE {s['mae']:.3f}, mean ratio {s['mean_ratio']:.3f}, "
                f"{100 * s['fraction_underestimated']:.0f} % of {s['n']} underestimated",
                highlight=False,
            )
    for d in docs:
        for f in d.flags:
            console.print(f"[yellow]{d.material_id} {d.model.name}:[/] {f}", highlight=False)
        for s in getattr(d.values, "skipped", []):
            console.print(f"[yellow]{d.material_id} skipped:[/] {s}", highlight=False)
    if out is not None:
        console.print(f"figures in {out}", highlight=False)


# ---- commands --------------------------------------------------------------------------------------


@app.command()
def surfaces(
    datasets: Annotated[
        list[Path],
        typer.Argument(
            help="mlearn JSON files with slabs (group 'Surface') and bulk frames (group "
            "'Elastic'); give the file with the ground-state crystal too."
        ),
    ],
    model: ModelOpt = None,
    store: StoreOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the parity plot of surface energies.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare uMLIP surface energies with DFT on the data's own slabs and bulk frame."""
    from softening.datasets.surfaces import read_surface_data
    from softening.makers.surfaces import SurfaceComparisonFlowMaker
    from softening.stores import get_job_store

    _setup_logging(quiet=as_json)
    data = read_surface_data(datasets)  # read and checked before any job runs
    models = _models(model)
    loaded = _check_models(
        models, {el.symbol for d in data for el in d.bulk.frame.structure.composition}
    )
    flow = SurfaceComparisonFlowMaker(models=models).make(data)
    docs, failures = _run_flow(flow, get_job_store(store))
    if failures:
        raise SofteningError("surface comparison failed: " + "; ".join(failures))
    _report(docs, [m.name for m in loaded], out, as_json, {})


def run_defect_flow(
    flow: Any,
    loaded: list[Any],
    reference: str,
    store: str | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """``softening properties --property surface|vacancy|barrier``: run the flow built by
    :func:`softening.workflows.properties.properties_flow` and report its documents."""
    from softening.stores import get_job_store

    docs, failures = _run_flow(flow, get_job_store(store), **_job_folders(reference, out))
    _report_failures(failures, bool(docs))
    extra: dict[str, Any] = {"failed_jobs": failures} if failures else {}
    _report(docs, [m.name for m in loaded], out, as_json, extra)
