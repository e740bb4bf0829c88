"""Property commands: ``phonons`` (existing DFT phonons), ``surfaces`` (existing DFT surface
energies), ``mixing`` (existing DFT solid-solution energies) and ``properties`` (any registered
property computed with the reference too).

The commands read inputs, run the flows of :mod:`softening.workflows.properties` and the property
makers into the result store, and print the records and figures of
:mod:`softening.workflows.property_results`; tables and lines come from each property's registry
entry (:mod:`softening.makers.properties`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from softening import defaults
from softening.cli.display import (
    console,
    flag_text,
    out_console,
    print_json,
    report_failures,
    run_flow,
    setup_logging,
)
from softening.cli.options import (
    EcutOpt,
    FiguresOpt,
    IonOpt,
    JsonOpt,
    KspacingOpt,
    MaxCellsOpt,
    MeshOpt,
    ModelOpt,
    MuOpt,
    PropertyOpt,
    StoreOpt,
    StructuresArg,
    SubstituteOpt,
    ThermalTemperatureOpt,
    out_folder,
)
from softening.errors import InputError, SofteningError


def _report(docs, model_names: list[str], out: Path | None, as_json: bool,
            extra: dict[str, Any]) -> None:  # fmt: skip
    """Print (or ``--json``) the property documents; figures into ``out``."""
    from softening.cli.tables import property_tables
    from softening.makers.properties import get_property
    from softening.workflows.property_results import properties_result, property_figures

    result = properties_result(docs, model_names)
    result.update(extra)
    if out is not None:
        result["plots"] = property_figures(docs, out)
    if as_json:
        print_json(result)
        return
    for table in property_tables(docs):
        out_console.print(table)
    for name, entry in result["models"].items():
        for prop, s in entry.get("summary", {}).items():
            console.print(
                f"{name} {prop}: MAE {s['mae']:.3f}, mean ratio {s['mean_ratio']:.3f}, "
                f"{100 * s['fraction_underestimated']:.0f} % of {s['n']} underestimated",
                highlight=False,
            )
    for d in docs:
        line = get_property(d.property).summary_line
        text = line(d.model.name, property_summary(d)) if line else None
        if text:
            console.print(text, highlight=False)
    for d in docs:
        for f in d.flags:
            console.print(
                f"[yellow]{d.material_id} {d.model.name}:[/] {flag_text(f)}", highlight=False
            )
        for s in getattr(d.values, "skipped", None) or []:
            console.print(f"[yellow]{d.material_id} skipped:[/] {s}", highlight=False)
    if out is not None:
        console.print(f"figures in {out}", highlight=False)


def property_summary(doc: Any) -> dict[str, Any]:
    """The ``--json`` record of ``doc`` (its registry entry's)."""
    from softening.workflows.property_results import property_summary as record

    return record(doc)


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
    out: FiguresOpt = None,
    mesh: MeshOpt = (16, 16, 16),
    temperature: ThermalTemperatureOpt = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Compare uMLIP phonons with existing DFT phonons (same supercells and displacements)."""
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.stores import get_job_store
    from softening.workflows.inputs import default_models, load_checked_models
    from softening.workflows.properties import PhononComparisonFlowMaker
    from softening.workflows.property_results import flow_property_docs

    setup_logging(quiet=as_json)
    _check_mesh(mesh)
    # Everything is read and checked before any job runs: bad input leaves nothing behind.
    datasets = [read_phonopy_folder(f) for f in folders]
    models = default_models(model)
    elements = {el.symbol for d in datasets for el in d.unitcell.composition}
    names = [m.name for m in load_checked_models(models, elements)]
    maker = PhononComparisonFlowMaker(models=models, mesh=tuple(mesh), temperature=temperature)
    flow = maker.make(datasets)
    job_store = get_job_store(store)
    outputs, failures = run_flow(flow, job_store)
    if failures:
        raise SofteningError("phonon comparison failed: " + "; ".join(failures))
    ids = [d.material for d in datasets]
    docs = flow_property_docs(flow, job_store, outputs, ids, names)
    _report(docs, names, out, as_json, {})


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
        Path | None,
        typer.Option(help="Folder for the parity plot of surface energies.", callback=out_folder),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare uMLIP surface energies with DFT on the data's own slabs and bulk frame."""
    from softening.datasets.surfaces import read_surface_data
    from softening.makers.surfaces import SurfaceComparisonFlowMaker
    from softening.stores import get_job_store
    from softening.workflows.inputs import default_models, load_checked_models

    setup_logging(quiet=as_json)
    data = read_surface_data(datasets)  # read and checked before any job runs
    models = default_models(model)
    elements = {el.symbol for d in data for el in d.bulk.frame.structure.composition}
    names = [m.name for m in load_checked_models(models, elements)]
    flow = SurfaceComparisonFlowMaker(models=models).make(data)
    docs, failures = run_flow(flow, get_job_store(store))
    if failures:
        raise SofteningError("surface comparison failed: " + "; ".join(failures))
    _report(docs, names, out, as_json, {})


def mixing(
    data: Annotated[
        list[Path],
        typer.Argument(
            help="Solid-solution data, one system each: a folder of one sub-folder per ordered "
            "cell (vasprun.xml, full or stripped to its last step, or OUTCAR + CONTCAR/POSCAR), "
            "an extended XYZ file with energies, or an ASE database (.db)."
        ),
    ],
    model: ModelOpt = None,
    end_members: Annotated[
        str | None,
        typer.Option(
            "--end-members",
            help="End-member formulas, comma-separated (e.g. AlN,SiC for a pseudo-binary). "
            "[default: the pure elements]",
        ),
    ] = None,
    store: StoreOpt = None,
    out: FiguresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare uMLIP formation energies of ordered solid-solution cells with DFT (no DFT run)."""
    from softening.stores import get_job_store
    from softening.workflows.inputs import default_models
    from softening.workflows.properties import mixing_flow

    setup_logging(quiet=as_json)
    # Everything is read and checked before any job runs: bad input leaves nothing behind.
    flow, names = mixing_flow(data, default_models(model), end_members)
    docs, failures = run_flow(flow, get_job_store(store))
    if failures:
        raise SofteningError("mixing comparison failed: " + "; ".join(failures))
    _report(docs, names, out, as_json, {})


def barriers(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="VASP NEB runs: a folder with 00/ ... NN/ (end points included), each with a "
            "vasprun.xml or an OUTCAR (+ CONTCAR)."
        ),
    ],
    model: ModelOpt = None,
    store: StoreOpt = None,
    out: FiguresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare uMLIP barriers with existing DFT NEB runs, on the same images (no DFT run)."""
    from softening.stores import get_job_store
    from softening.workflows.inputs import default_models
    from softening.workflows.properties import barriers_flow

    setup_logging(quiet=as_json)
    # Every folder is read and checked before any job runs.
    flow, names = barriers_flow(folders, default_models(model))
    docs, failures = run_flow(flow, get_job_store(store))
    if failures:
        raise SofteningError("barrier comparison failed: " + "; ".join(failures))
    _report(docs, names, out, as_json, {})


def properties(
    structures: StructuresArg,
    prop: PropertyOpt = None,
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
    ecut: EcutOpt = defaults.ECUT,
    kspacing: KspacingOpt = defaults.KSPACING,
    mesh: MeshOpt = (16, 16, 16),
    temperature: ThermalTemperatureOpt = 300.0,
    substitute: SubstituteOpt = None,
    max_cells: MaxCellsOpt = defaults.MAX_CELLS,
    ion: IonOpt = None,
    hop_mode: Annotated[
        str,
        typer.Option(
            help="--property migration: 'vacancy' (the ion hops into a vacant site of its "
            "sublattice) or 'interstitial'."
        ),
    ] = "vacancy",
    max_hop_distance: Annotated[
        float, typer.Option(help="--property migration: longest hop considered, Å.")
    ] = 4.0,
    mu: MuOpt = None,
    store: StoreOpt = None,
    out: FiguresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute properties (phonon, surface, vacancy, barrier, mixing, defect, migration, or any
    registered one) with the reference and with uMLIPs, and compare them."""
    from softening.stores import get_job_store
    from softening.workflows.inputs import default_models, job_folders
    from softening.workflows.properties import properties_flow
    from softening.workflows.property_results import flow_property_docs

    setup_logging(quiet=as_json)
    _check_mesh(mesh)
    props = list(prop or ["phonon"])
    flow, ids, loaded = properties_flow(
        structures, props, default_models(model), reference=reference, ecut=ecut,
        kspacing=kspacing, relax=relax, supercell_matrix=_parse_supercell(supercell),
        min_length=min_length, displacement=displacement, mesh=tuple(mesh),
        temperature=temperature, substitute=substitute, max_cells=max_cells, ion=ion,
        hop_mode=hop_mode, max_hop_distance=max_hop_distance, mu=mu,
    )  # fmt: skip
    names = [m.name for m in loaded]
    job_store = get_job_store(store)
    outputs, failures = run_flow(flow, job_store, **job_folders(reference, out))
    docs = flow_property_docs(flow, job_store, outputs, ids, names)
    report_failures(failures, bool(docs))
    _report(docs, names, out, as_json, {"failed_jobs": failures} if failures else {})


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
