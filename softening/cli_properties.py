"""``softening phonons`` and ``softening properties``: materials properties of uMLIPs against DFT.

Registered on :data:`softening.cli.app` (imported at the end of ``cli.py``). The commands hold no
science: they read inputs, run the flows of :mod:`softening.workflows.properties` into the result
store, and print or plot the :class:`~softening.schemas.PhononDoc` outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from softening.cli import (
    EcutOpt,
    JsonOpt,
    KspacingOpt,
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
from softening.errors import InputError, SofteningError

OutOpt = Annotated[
    Path | None,
    typer.Option(help="Folder for the figures (band structure + DOS, frequency parity)."),
]
MeshOpt = Annotated[
    tuple[int, int, int], typer.Option(help="q-point mesh of the comparison (Gamma-centred).")
]
TemperatureOpt = Annotated[float, typer.Option(help="Temperature of the thermal properties, K.")]


def phonon_summary(doc) -> dict[str, Any]:
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
        "flags": doc.flags,
    }


def _phonon_table(docs, title: str) -> Table:
    table = Table(title=title)
    cols = ("material", "model", "ω_max ref/model THz", "ratio", "freq MAE/max THz",
            "force scale", "force MAE eV/Å", "imag. ref/model", "flags")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("material", "model", "flags") else "right")
    for d in docs:
        v = d.values
        table.add_row(
            d.material_id,
            d.model.name,
            f"{v.omega_max_ref:.2f}/{v.omega_max:.2f}",
            f"{v.omega_max_ratio:.3f}",
            f"{v.freq_mae:.2f}/{v.freq_max_abs_error:.2f}",
            f"{v.scale:.3f}",
            f"{v.mae:.4f}",
            f"{100 * v.imaginary_fraction_ref:.1f}/{100 * v.imaginary_fraction:.1f} %",
            ", ".join(sorted({f.split(":")[0] for f in d.flags})) or "-",
        )
    table.caption = "ratio = ω_max(model) / ω_max(reference); < 1: softened"
    return table


def phonon_plots(docs, out: Path) -> dict[str, dict[str, str]]:
    """Per material: band structure + DOS of the reference and every model, and frequency parity."""
    from softening.analysis.plots import frequency_parity_plot, phonon_bands_plot

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
        name = _safe_name(material)
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


def _report(docs, loaded, out: Path | None, as_json: bool, extra: dict[str, Any]) -> None:
    result: dict[str, Any] = {"models": {}}
    for m in loaded:
        mine = [d for d in docs if d.model.name == m.name]
        result["models"][m.name] = {"materials": [phonon_summary(d) for d in mine]}
    result.update(extra)
    if out is not None:
        result["plots"] = phonon_plots(docs, out)
    if as_json:
        print(json.dumps(result))
        return
    out_console.print(_phonon_table(docs, "Phonons: uMLIP against reference"))
    for d in docs:
        for f in d.flags:
            console.print(f"[yellow]{d.material_id} {d.model.name}:[/] {f}", highlight=False)
    if out is not None:
        console.print(f"figures in {out}", highlight=False)


@app.command()
def phonons(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="phonopy folders: phonopy_disp.yaml + FORCE_SETS (or + the displaced "
            "supercells' vasprun.xml files), or phonopy_params.yaml with forces."
        ),
    ],
    model: ModelOpt = None,
    store: StoreOpt = None,
    out: OutOpt = None,
    mesh: MeshOpt = (16, 16, 16),
    temperature: TemperatureOpt = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Compare uMLIP phonons with existing DFT phonons (same supercells and displacements)."""
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.stores import get_job_store
    from softening.workflows.properties import PhononComparisonFlowMaker

    _setup_logging(quiet=as_json)
    _check_mesh(mesh)
    # Everything is read and checked before any job runs: bad input leaves nothing behind.
    datasets = [read_phonopy_folder(f) for f in folders]
    models = _models(model)
    elements = {el.symbol for d in datasets for el in d.unitcell.composition}
    loaded = _check_models(models, elements)
    flow = PhononComparisonFlowMaker(models=models, mesh=tuple(mesh), temperature=temperature).make(
        datasets
    )
    job_store = get_job_store(store)
    _, failures = _run_flow(flow, job_store)
    if failures:
        raise SofteningError("phonon comparison failed: " + "; ".join(failures))
    docs = _flow_docs(flow, job_store, [d.material for d in datasets], [m.name for m in loaded])
    _report(docs, loaded, out, as_json, {})


@app.command()
def properties(
    structures: Annotated[list[Path], typer.Argument(help="Structure files (CIF, POSCAR, ...).")],
    prop: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            "-p",
            help="Property to compute: phonon, surface, vacancy, barrier. [default: phonon]",
        ),
    ] = None,
    model: ModelOpt = None,
    reference: Annotated[
        str,
        typer.Option(help="Reference: gpaw, emt, vasp (atomate2 + custodian), or module:Class."),
    ] = "gpaw",
    supercell: Annotated[
        str | None,
        typer.Option(
            help="Supercell matrix: 3 integers (diagonal) or 9. [default: atomate2's choice "
            "for --min-length]"
        ),
    ] = None,
    min_length: Annotated[
        float, typer.Option(help="Shortest supercell length when choosing it, Å.")
    ] = 20.0,
    displacement: Annotated[float, typer.Option(help="Displacement amplitude, Å.")] = 0.01,
    relax: Annotated[
        bool,
        typer.Option(help="Relax with each method (reference: gpaw, emt; each model) first."),
    ] = False,
    ecut: EcutOpt = 500.0,
    kspacing: KspacingOpt = 0.25,
    mesh: MeshOpt = (16, 16, 16),
    temperature: TemperatureOpt = 300.0,
    store: StoreOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute properties (phonon, surface, vacancy, barrier) with the reference and with uMLIPs, and
    compare them."""
    from softening.cli_surfaces import run_defect_flow
    from softening.stores import get_job_store
    from softening.workflows.properties import DEFECT_PROPERTIES, properties_flow

    _setup_logging(quiet=as_json)
    _check_mesh(mesh)
    props = list(prop or ["phonon"])
    flow, ids, loaded = properties_flow(
        structures,
        props,
        _models(model),
        reference=reference,
        ecut=ecut,
        kspacing=kspacing,
        relax=relax,
        supercell_matrix=_parse_supercell(supercell),
        min_length=min_length,
        displacement=displacement,
        mesh=tuple(mesh),
        temperature=temperature,
    )
    if set(props) & set(DEFECT_PROPERTIES):  # surface / vacancy / barrier: cli_surfaces.py
        run_defect_flow(flow, loaded, reference, store, out, as_json)
        return
    job_store = get_job_store(store)
    _, failures = _run_flow(flow, job_store, **_job_folders(reference, out))
    docs = _flow_docs(flow, job_store, ids, [m.name for m in loaded])
    _report_failures(failures, bool(docs))
    _report(docs, loaded, out, as_json, {"failed_jobs": failures} if failures else {})


def _flow_docs(flow, job_store, material_ids: list[str], model_names: list[str]) -> list:
    """The property documents the flow's jobs stored, in input order (materials, then models).

    Found by the flow's uuid among the jobs' hosts, so that jobs a job was replaced by at run time
    (the phonon jobs after a relaxation) are found too.
    """
    from softening.schemas import PhononDoc

    stored = job_store.query(
        {"hosts": flow.uuid, "output.property": "phonon"},
        properties=["output", "index"], load=True,
    )  # fmt: skip
    docs = [
        PhononDoc.model_validate({k: v for k, v in d["output"].items() if not k.startswith("@")})
        for d in stored
    ]

    def rank(d) -> tuple[int, int]:
        m = (
            material_ids.index(d.material_id)
            if d.material_id in material_ids
            else len(material_ids)
        )
        n = model_names.index(d.model.name) if d.model.name in model_names else len(model_names)
        return m, n

    return sorted(docs, key=rank)


def _parse_supercell(text: str | None) -> list[list[int]] | None:
    if text is None:
        return None
    try:
        numbers = [int(x) for x in text.replace(",", " ").split()]
    except ValueError as exc:
        raise InputError(f"--supercell {text!r}: give 3 or 9 integers") from exc
    if len(numbers) == 3:
        return [[numbers[0], 0, 0], [0, numbers[1], 0], [0, 0, numbers[2]]]
    if len(numbers) == 9:
        return [numbers[0:3], numbers[3:6], numbers[6:9]]
    raise InputError(f"--supercell {text!r}: give 3 or 9 integers")


def _check_mesh(mesh) -> None:
    if any(m < 1 for m in mesh):
        raise InputError(f"--mesh {' '.join(map(str, mesh))}: every entry must be >= 1")
