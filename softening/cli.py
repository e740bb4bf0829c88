"""The ``softening`` command line: run the workflow, evaluate datasets.

Errors are handled in one place (:class:`_App`): a :class:`SofteningError` prints one line and exits
with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from softening.errors import InputError, SofteningError

# Piped output (CI logs, `| less`) gets 120 columns instead of rich's 80 so that tables stay readable.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
out_console = Console(width=None if sys.stdout.isatty() else 120)


class _App(typer.Typer):
    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except SofteningError as exc:
            from rich.markup import escape

            from softening.settings import redact

            # The one exit of user-facing errors: any store URI in a message loses its password;
            # escaped, so that `softening[gpaw]` in a message is not taken for markup.
            console.print(
                f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True
            )
            sys.exit(1)


app = _App(
    name="softening",
    help="Measure and correct the softening of universal ML interatomic potentials against DFT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from softening import __version__

        print(f"softening {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Measure and correct the softening of universal ML interatomic potentials against DFT."""


# ---- shared options (defined once) ---------------------------------------------------------------
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Result store: a folder (embedded SQLite store), a mongodb:// or mongodb+srv:// URI, "
        "'mongodb' (SOFTENING_MONGO_* settings), or a .yaml jobflow store config. "
        "[default: ./softening-db]",
    ),
]
ModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", help="uMLIP name or weights path; repeat for several. [default: chgnet]"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of MD, frame choice and bootstrap.")]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse VASP references whose settings differ from the models' training data "
        "(MP PBE/PBE+U) instead of flagging them.",
    ),
]


# Options of the workflow, shared by `run` and `submit`.
MdModelOpt = Annotated[str, typer.Option(help="uMLIP that drives the MD.")]
ReferenceOpt = Annotated[
    str, typer.Option(help="Reference: gpaw, emt, vasp (atomate2 + custodian), or module:Class.")
]
TemperatureOpt = Annotated[float, typer.Option(help="MD temperature, K.")]
StepsOpt = Annotated[int, typer.Option(help="MD steps (the paper: 10000 = 20 ps).")]
TimestepOpt = Annotated[float, typer.Option(help="MD time step, fs.")]
StrideOpt = Annotated[int, typer.Option(help="Steps between stored MD frames.")]
FramesOpt = Annotated[int, typer.Option(help="Frames labelled per material.")]
StrainedOpt = Annotated[int, typer.Option(help="Frames strained by +3 % and as many by -3 %.")]
EcutOpt = Annotated[float, typer.Option(help="GPAW plane-wave cutoff, eV.")]
KspacingOpt = Annotated[float, typer.Option(help="GPAW k-point spacing, 1/Å (2π included).")]
TrainFramesOpt = Annotated[int, typer.Option(help="Frames per material to correct on.")]
TrustModelOpt = Annotated[
    bool,
    typer.Option(
        "--trust-model-file",
        help="Load whole pickled model files (MACE .model) that are neither known published "
        "weights nor written by softening: loading one runs code from the file.",
    ),
]


def _trust_model_files(trust: bool) -> None:
    """Apply --trust-model-file (to this process and the job processes it starts)."""
    if trust:
        from softening.models.trust import allow_model_files

        allow_model_files()


WorkersOpt = Annotated[
    int | None,
    typer.Option(
        help="Jobs run at once on this machine (reference statics of different frames side by "
        "side). [default: the allocated cores (CPU affinity, SLURM_CPUS_PER_TASK) / torch_threads,"
        " capped by memory]"
    ),
]


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    logging.getLogger("jobflow").setLevel(logging.WARNING)
    pkg = logging.getLogger("softening")
    pkg.setLevel(logging.WARNING if quiet else logging.INFO)
    if not pkg.handlers:
        pkg.addHandler(RichHandler(console=console, show_path=False, show_time=True, markup=False))
    pkg.propagate = False
    import warnings

    warnings.filterwarnings("ignore")


def _run_flow(flow, store, workers: int | None = None, **run_kwargs) -> tuple[list, list[str]]:
    """Run ``flow`` into ``store`` (independent jobs side by side); its outputs and failures."""
    from softening.hpc.local import flow_outputs, run_flow

    with _progress("jobs") as advance:
        n_jobs = sum(1 for _ in flow.iterflow())

        def done(name: str, ok: bool, seconds: float) -> None:
            logging.getLogger("softening").info(
                "%s %s in %.1f s", name, "finished" if ok else "failed", seconds
            )
            advance(1, n_jobs)

        result = run_flow(flow, store, workers=workers, on_job_done=done, **run_kwargs)
    failures = result.failed + [f"{name}: not run" for name in result.not_run]
    return flow_outputs(flow, store), failures


def _job_folders(reference: str, out: Path | None) -> dict[str, Any]:
    """``run_flow``'s folder options: atomate2's VASP jobs write into the current folder, so each
    gets its own under ``<out>/vasp-runs``; the embedded references need none."""
    if reference != "vasp":
        return {}
    where = (out or Path("softening-results")) / "vasp-runs"
    where.mkdir(parents=True, exist_ok=True)
    return {"create_folders": True, "root_dir": where}


def _report_failures(failures: list[str], has_result: bool) -> None:
    """Name the failed jobs and how to complete the run; an error when nothing came out at all."""
    for f in failures:
        console.print(f"[yellow]failed:[/] {f}", highlight=False)
    if failures:
        console.print("run the same command again to compute only what failed or is missing")
    if not has_result:
        raise SofteningError("no result: every material failed (see the messages above)")


def _store_exists(store: str | None) -> bool:
    """Whether the store names something that exists already (a database, or a folder)."""
    from softening.stores.factory import resolve_store_spec, store_kind

    spec = resolve_store_spec(store)
    return store_kind(spec) != "embedded" or Path(spec).expanduser().exists()


def _models(models: list[str] | None) -> list[str]:
    from softening.settings import get_settings

    return list(models) if models else list(get_settings().models)


def _check_models(models: list[str], elements: set[str]) -> list[Any]:
    from softening.models import load_model

    loaded = []
    for spec in models:
        m = load_model(spec)
        m.check_elements(elements)
        loaded.append(m)
    return loaded


def _scale_table(docs, title: str) -> Table:
    from softening.analysis.metrics import is_uncorrelated

    table = Table(title=title)
    for col in (
        "material",
        "model",
        "scale",
        "95% CI",
        "MAE eV/Å",
        "cMAE eV/Å",
        "frames",
        "missing",
    ):
        table.add_column(col, justify="right" if col not in ("material", "model") else "left")
    for d in docs:
        table.add_row(
            d.material_id,
            d.model.name,
            f"{d.scale:.3f}",
            f"{d.scale_ci[0]:.3f}-{d.scale_ci[1]:.3f}",
            f"{d.mae:.3f}",
            "n/a" if is_uncorrelated(d.scale_ci) else f"{d.cmae:.3f}",
            str(d.n_frames),
            ", ".join(d.missing_frames) or "-",
        )
    if any(is_uncorrelated(d.scale_ci) for d in docs):
        table.caption = "cMAE n/a: the scale's 95 % CI includes 0 (forces uncorrelated)"
    return table


def _parity(docs, path: Path) -> Path | None:
    import numpy as np

    from softening.analysis.plots import parity_plot

    series = {
        f"{d.material_id} {d.model.name}": (np.asarray(d.forces_ref), np.asarray(d.forces_ml))
        for d in docs
        if d.forces_ref is not None
    }
    if not series:
        return None
    scales = {f"{d.material_id} {d.model.name}": d.scale for d in docs}
    return parity_plot(series, path=path, scale=scales, title="uMLIP vs reference forces")


# ---- commands ------------------------------------------------------------------------------------


def _softening_flow(
    structures: list[Path],
    *,
    md_model: str,
    model: list[str] | None,
    reference: str,
    temperature: float,
    steps: int,
    timestep: float,
    stride: int,
    frames: int,
    strained: int,
    ecut: float,
    kspacing: float,
    seed: int,
    store: str | None,
    strict: bool = False,
    finetune: str | None = None,
    train_frames: int = 1,
    local_checks: bool = True,
    prop: str | None = None,
):
    """The flow of `run` (and `submit`) from its options: inputs checked, makers set, flow made.

    ``local_checks`` also checks that GPAW / VASP are usable here (not on a login node whose jobs
    run elsewhere). Returns ``(structures, flow maker, flow)``.
    """

    from softening.datasets.readers import read_structure
    from softening.makers import (
        FrameSelectionMaker,
        MDSamplingMaker,
        UMLIPStaticMaker,
    )
    from softening.makers.finetune import CorrectionMaker, models_folder
    from softening.stores.factory import resolve_store_spec
    from softening.workflows import SofteningFlowMaker
    from softening.workflows.softening import reference_maker_for

    models = _models(model)
    if frames < 2 * strained:
        raise InputError(f"--frames {frames} is fewer than the {2 * strained} strained frames")
    structs = [read_structure(p) for p in structures]
    elements = {el.symbol for s in structs for el in s.composition}
    _check_models([md_model, *models], elements)
    reference_maker = reference_maker_for(
        reference, structs, ecut, kspacing, strict=strict, local_checks=local_checks
    )
    fm = SofteningFlowMaker(
        md_maker=MDSamplingMaker(
            model=md_model,
            temperature=temperature,
            steps=steps,
            timestep=timestep,
            stride=stride,
            seed=seed,
        ),
        select_maker=FrameSelectionMaker(
            n_frames=frames, n_strained_plus=strained, n_strained_minus=strained, seed=seed
        ),
        reference_maker=reference_maker,
        umlip_maker=UMLIPStaticMaker(),
        models=models,
        seed=seed,
        correction_maker=None
        if finetune is None
        else CorrectionMaker(
            mode=finetune,
            train_frames=train_frames,
            seed=seed,
            models_dir=str(models_folder(resolve_store_spec(store))),
        ),
    )
    if finetune is not None and train_frames >= frames:
        raise InputError(f"--train-frames {train_frames} leaves none of {frames} frames held out")
    fm.select_maker.check_md(fm.md_maker)  # enough MD frames for --frames, before the MD runs
    if prop is not None:
        from softening.workflows.properties import property_maker

        # The property with the same reference, for each model (and each corrected model).
        fm.property_maker = property_maker(prop, fm.reference_maker, models)
    flow = fm.make(structs)
    return structs, fm, flow


@app.command()
def run(
    structures: Annotated[list[Path], typer.Argument(help="Structure files (CIF, POSCAR, ...).")],
    md_model: MdModelOpt = "chgnet",
    model: ModelOpt = None,
    reference: ReferenceOpt = "gpaw",
    temperature: TemperatureOpt = 1000.0,
    steps: StepsOpt = 10_000,
    timestep: TimestepOpt = 2.0,
    stride: StrideOpt = 10,
    frames: FramesOpt = 10,
    strained: StrainedOpt = 2,
    ecut: EcutOpt = 500.0,
    kspacing: KspacingOpt = 0.25,
    seed: SeedOpt = 0,
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for the JSON summary and plots.")] = Path(
        "softening-results"
    ),
    as_json: JsonOpt = False,
    strict: StrictOpt = False,
    finetune: Annotated[
        str | None,
        typer.Option(
            help="Also correct each model (scale, head or full) on --train-frames "
            "frames per material and verify on the others."
        ),
    ] = None,
    train_frames: TrainFramesOpt = 1,
    workers: WorkersOpt = None,
    trust_model_file: TrustModelOpt = False,
    prop: Annotated[
        str | None,
        typer.Option(
            "--property",
            help="Also compute this property (phonon, surface, vacancy, barrier) with the "
            "reference and each model; with --finetune, with each corrected model too.",
        ),
    ] = None,
) -> None:
    """Sample frames by uMLIP MD, label them with the reference, and fit the softening scale."""
    from softening.makers.evaluate import material_summary
    from softening.schemas import SofteningDoc, VerificationDoc
    from softening.stores import describe_store, get_job_store

    _setup_logging(quiet=as_json)
    _trust_model_files(trust_model_file)
    # An existing store is opened first: a damaged one is reported at once, not after the models
    # have loaded; a new one is created only once the inputs are known to be good.
    job_store = get_job_store(store) if _store_exists(store) else None
    structs, fm, flow = _softening_flow(
        structures,
        md_model=md_model,
        model=model,
        reference=reference,
        temperature=temperature,
        steps=steps,
        timestep=timestep,
        stride=stride,
        frames=frames,
        strained=strained,
        ecut=ecut,
        kspacing=kspacing,
        seed=seed,
        store=store,
        strict=strict,
        finetune=finetune,
        train_frames=train_frames,
        prop=prop,
    )
    job_store = job_store or get_job_store(store)
    outputs, failures = _run_flow(flow, job_store, workers=workers, **_job_folders(reference, out))
    docs = [d for d in outputs if isinstance(d, SofteningDoc)]
    checks = [d for d in outputs if isinstance(d, VerificationDoc)]
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "store": describe_store(job_store),
        "materials": [{**material_summary(d), "model": d.model.name} for d in docs],
        "failed_jobs": failures,
    }
    if finetune is not None:
        summary["corrections"] = [
            {
                "model": v.correction.model.name,
                "model_path": v.correction.model.path,
                "train_frames": v.correction.train_frames,
                "before": v.before,
                "after": v.after,
                "warnings": v.warnings,
            }
            for v in checks
        ]
    if prop is not None:
        # Found by the flow's uuid among the jobs' hosts (property jobs replace themselves).
        stored = job_store.query(
            {"hosts": flow.uuid, "output.property": prop}, properties=["output"]
        )
        summary["properties"] = [
            {
                "property": d["output"]["property"],
                "material_id": d["output"]["material_id"],
                "model": d["output"]["model"]["name"],
                "model_path": d["output"]["model"].get("path"),
                "ratio": d["output"].get("ratio"),
            }
            for d in stored
        ]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    parity = _parity(docs, out / "parity.png")
    if as_json:
        print(json.dumps(summary))
    else:
        out_console.print(_scale_table(docs, "Softening scale (s < 1: softened)"))
        for p in summary.get("properties", []):
            ratio = "n/a" if p["ratio"] is None else f"{p['ratio']:.3f}"
            out_console.print(
                f"{p['property']} {p['material_id']} {p['model']}: uMLIP/reference ratio {ratio}"
            )
        for v in checks:
            b, a = v.before, v.after
            out_console.print(
                f"{v.correction.model.name}: held-out scale {b['scale']:.3f} -> {a['scale']:.3f}, "
                f"MAE {b['mae']:.3f} -> {a['mae']:.3f} eV/Å ({v.correction.model.path})"
            )
            for w in v.warnings:
                console.print(f"[yellow]warning:[/] {w}", highlight=False)
        console.print(
            f"summary: {out / 'summary.json'}" + (f", parity plot: {parity}" if parity else "")
        )
    _report_failures(failures, bool(docs))


def _labelled_frames(datasets: list[Path], strict: bool, select: list[str] | None = None):
    """Labelled frames of the datasets after the guard rails, filtered by ``select`` (every text
    must occur in the frame's material id, formula, group or description)."""
    from softening.datasets.guards import apply_guard_rails
    from softening.datasets.readers import read_frames

    frames, guard_reports = [], []
    for path in datasets:
        # VASP outputs: unconverged and MLFF steps dropped, settings flagged (refused if --strict).
        kept, reports = apply_guard_rails(read_frames(path), strict=strict)
        guard_reports.extend(reports)
        frames.extend(f for f in kept if f.is_labelled)
    for text in select or []:
        frames = [
            f
            for f in frames
            if any(text in (x or "") for x in (f.material_key, f.formula, f.group, f.description))
        ]
    if not frames:
        raise InputError(
            "no labelled frames (with reference forces) in the given datasets"
            + (f" matching {' and '.join(select)}" if select else "")
        )
    return frames, guard_reports


def _as_references(frames) -> tuple[list, list]:
    """FrameSpecs and reference FrameResults of labelled dataset frames (ids checked unique)."""
    from softening.stores import CodeInfo, FrameResult, FrameSpec

    specs, refs = [], []
    for f in frames:
        mid = f.material_key
        specs.append(
            FrameSpec(
                frame_id=f.frame_id, material_id=mid, formula=f.formula, structure=f.structure
            )
        )
        refs.append(
            FrameResult(
                frame_id=f.frame_id,
                material_id=mid,
                formula=f.formula,
                structure=f.structure,
                energy=f.energy,
                forces=f.forces.tolist(),
                stress=f.stress.tolist() if f.stress is not None else None,
                code=CodeInfo(
                    name=str(f.metadata.get("code", "dataset")), settings={"source": f.source}
                ),
                flags=list(f.flags),
                region=f.region,
            )
        )
    _check_unique_ids(specs)
    return specs, refs


@app.command()
def evaluate(
    datasets: Annotated[
        list[Path], typer.Argument(help="Labelled frames: extxyz, WBM/mlearn JSON, vasprun.")
    ],
    model: ModelOpt = None,
    store: StoreOpt = None,
    seed: SeedOpt = 0,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the scale-distribution plot.")
    ] = None,
    as_json: JsonOpt = False,
    strict: StrictOpt = False,
    trust_model_file: TrustModelOpt = False,
) -> None:
    """Softening of uMLIPs on existing DFT-labelled frames (no MD, no new DFT)."""
    from softening.makers.evaluate import evaluate_datasets, evaluation_plots
    from softening.stores import get_job_store

    _setup_logging(quiet=True)
    _trust_model_files(trust_model_file)
    job_store = get_job_store(store)
    with _progress("evaluating frames") as advance:
        evaluation = evaluate_datasets(
            datasets, _models(model), store=job_store, strict=strict, seed=seed, progress=advance
        )
    result = evaluation.summary()
    if out is not None:
        result.update(evaluation_plots(evaluation, out))
    if as_json:
        print(json.dumps(result))
        return
    for r in evaluation.reports:
        console.print(r.summary(), highlight=False, soft_wrap=True)
    if len(result["models"]) > 1:
        out_console.print(_models_table(result["models"]))
    for name, v in result["models"].items():
        out_console.print(_scale_table(evaluation.models[name].materials, f"{name}"))
        p = v["pooled"]
        out_console.print(
            f"[bold]{name} pooled[/]: scale {p['scale']:.3f} [{p['scale_ci'][0]:.3f}, "
            f"{p['scale_ci'][1]:.3f}], MAE {p['mae']:.3f} eV/Å, cMAE {p['cmae']:.3f} eV/Å, "
            f"{p['n_frames']} frames; softened (scale < 1): {100 * p['fraction_softened']:.1f} % "
            f"of {p['n_materials']} materials"
        )


@contextlib.contextmanager
def _progress(what: str):
    """A progress bar with ETA on a terminal (stderr); a no-op when output is piped."""
    if not console.is_terminal:
        yield lambda n, total=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def advance(n: int, total: int | None = None) -> None:
            if total is not None and bar.tasks[0].total != total:
                bar.update(task, total=total)
            bar.advance(task, n)

        yield advance


@app.command()
def finetune(
    datasets: Annotated[
        list[Path], typer.Argument(help="Labelled frames: extxyz, WBM/mlearn JSON, vasprun.")
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="uMLIP to correct.")] = "chgnet",
    mode: Annotated[
        str, typer.Option(help="scale (linear, closed form), head (readout only) or full.")
    ] = "scale",
    train_frames: Annotated[
        int, typer.Option(help="Frames per material to fit on; the rest are held out.")
    ] = 1,
    select: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep frames whose material, formula, group or description contains "
            "this text; repeat to require several (e.g. --select AIMD --select '843 K')."
        ),
    ] = None,
    frame_choice: Annotated[
        str, typer.Option(help="highest-energy, largest-force or random.")
    ] = "highest-energy",
    method: Annotated[str, typer.Option(help="Scale mode: lstsq or inverse-scale.")] = "lstsq",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs (the paper: 100).")] = 100,
    replay: Annotated[
        Path | None,
        typer.Option(help="MACE: extxyz of the foundation model's data, for multi-head replay."),
    ] = None,
    store: StoreOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    strict: StrictOpt = False,
    trust_model_file: TrustModelOpt = False,
) -> None:
    """Correct a uMLIP on a few high-energy frames per material; verify on the held-out frames."""
    from softening.makers.finetune import CorrectionMaker, models_folder, split_frames
    from softening.models.finetune import FineTuneSettings
    from softening.stores import get_job_store
    from softening.stores.factory import resolve_store_spec
    from softening.workflows import CorrectionFlowMaker

    _setup_logging(quiet=as_json)
    _trust_model_files(trust_model_file)
    maker = CorrectionMaker(
        model=model,
        mode=mode,
        method=method,
        train_frames=train_frames,
        frame_choice=frame_choice,
        finetune=FineTuneSettings(
            epochs=epochs, seed=seed, replay_data=str(replay) if replay else None
        ),
        seed=seed,
        models_dir=str(models_folder(resolve_store_spec(store))),
    )
    frames, _ = _labelled_frames(datasets, strict, select)
    _check_models([model], {el.symbol for f in frames for el in f.structure.composition})
    _, refs = _as_references(frames)

    split_frames(refs, train_frames, frame_choice, seed)  # too few frames: fail before any work
    flow = CorrectionFlowMaker(correction_maker=maker).make(refs)
    outputs, failures = _run_flow(flow, get_job_store(store), workers=1)
    if failures or not outputs:
        raise SofteningError("correction failed: " + "; ".join(failures))
    doc = outputs[0]
    c = doc.correction
    result = {
        "before": doc.before,
        "after": doc.after,
        "groups": [g.model_dump() for g in doc.groups],
        "train_frames": c.train_frames,
        "held_out_frames": c.held_out_frames,
        "model": c.model.name,
        "model_path": c.model.path,
        "factor": c.factor,
        "trained_factor": c.trained_factor,
        "mode": c.mode,
        "warnings": doc.warnings,
    }
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{c.base_model.name} -> {c.model.name} on held-out frames")
    for col in ("group", "frames", "scale before", "scale after", "MAE before", "MAE after"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for g in doc.groups:
        table.add_row(
            g.group,
            str(g.n_frames),
            f"{g.scale_before:.3f}",
            f"{g.scale_after:.3f}",
            f"{g.mae_before:.3f}",
            f"[red]{g.mae_after:.3f}[/]" if g.worse else f"{g.mae_after:.3f}",
        )
    out_console.print(table)
    b, a = doc.before, doc.after
    out_console.print(
        f"held-out: scale {b['scale']:.3f} -> {a['scale']:.3f}, MAE {b['mae']:.3f} -> "
        f"{a['mae']:.3f} eV/Å; trained on {', '.join(c.train_frames)}"
        + (f"; c = {c.factor:.4f}" if c.mode == "scale" else "")
    )
    out_console.print(f"corrected model: {c.model.path} (use it with --model {c.model.path})")
    for w in doc.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


def _models_table(models: dict[str, Any]) -> Table:
    """The paper's side-by-side table: pooled figures of every model."""
    table = Table(title="Pooled softening per model (one slope over all force components)")
    for col in ("model", "scale", "95% CI", "MAE eV/Å", "cMAE eV/Å", "frames", "softened"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, v in models.items():
        p = v["pooled"]
        table.add_row(
            name,
            f"{p['scale']:.3f}",
            f"{p['scale_ci'][0]:.3f}-{p['scale_ci'][1]:.3f}",
            f"{p['mae']:.3f}",
            f"{p['cmae']:.3f}",
            str(p["n_frames"]),
            f"{100 * p['fraction_softened']:.1f} %",
        )
    return table


# ---- results database: query, build, report -------------------------------------------------------

FormulaOpt = Annotated[
    str | None, typer.Option("--formula", help="Reduced formula, any order (CuO = OCu).")
]
ChemsysOpt = Annotated[
    str | None,
    typer.Option("--chemsys", help="Chemical system: exactly these elements, e.g. Cu-O."),
]
ElementOpt = Annotated[
    list[str] | None,
    typer.Option("--element", "-e", help="Element the material contains; repeat for several."),
]
QueryModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model name (CHGNet-0.3.0) or family (chgnet)."),
]
ScaleMinOpt = Annotated[float | None, typer.Option("--scale-min", help="Lowest scale kept.")]
ScaleMaxOpt = Annotated[float | None, typer.Option("--scale-max", help="Highest scale kept.")]
MaterialOpt = Annotated[str | None, typer.Option("--material-id", help="Material identifier.")]
PooledOpt = Annotated[
    bool,
    typer.Option("--include-pooled", help="Also the pooled results (one slope over a dataset)."),
]
AllRunsOpt = Annotated[
    bool,
    typer.Option(
        "--all-runs",
        help="Every stored result, not only the latest per material, model and reference.",
    ),
]


def _open_results_store(store: str | None):
    """The result store to read; an embedded folder must exist (a typo must not make a new one)."""
    from softening.stores import get_job_store
    from softening.stores.factory import resolve_store_spec, store_kind

    spec = resolve_store_spec(store)
    if store_kind(spec) == "embedded" and not Path(spec).expanduser().is_dir():
        raise InputError(f"no result store at {spec!r} (give --store, or run a flow first)")
    job_store = get_job_store(spec)
    job_store.connect()
    return job_store


def _query(
    store, formula, chemsys, element, model, scale_min, scale_max, material_id, pooled, all_runs
):
    from softening.stores.queries import query_results

    job_store = _open_results_store(store)
    results = query_results(
        job_store,
        formula=formula,
        chemsys=chemsys,
        elements=element,
        model=model,
        scale_min=scale_min,
        scale_max=scale_max,
        material_id=material_id,
        include_pooled=pooled,
        latest_only=not all_runs,
    )
    return job_store, results


_CSV_COLUMNS = (
    "material_id",
    "formula",
    "chemsys",
    "model",
    "model_family",
    "reference",
    "scale",
    "scale_ci_low",
    "scale_ci_high",
    "mae",
    "cmae",
    "energy_mae_per_atom",
    "n_frames",
    "n_atoms",
    "missing_frames",
    "flags",
    "uuid",
    "completed_at",
)


def _flat(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "material_id": r["material_id"],
        "formula": r.get("formula"),
        "chemsys": r.get("chemsys"),
        "model": r["model"]["name"],
        "model_family": r["model"].get("family"),
        "reference": (r.get("reference") or {}).get("name"),
        "scale": r["scale"],
        "scale_ci_low": r["scale_ci"][0],
        "scale_ci_high": r["scale_ci"][1],
        "mae": r["mae"],
        "cmae": r["cmae"],
        "energy_mae_per_atom": r.get("energy_mae_per_atom"),
        "n_frames": r["n_frames"],
        "n_atoms": r["n_atoms"],
        "missing_frames": ";".join(r.get("missing_frames") or []),
        "flags": ";".join(r.get("flags") or []),
        "uuid": r.get("uuid"),
        "completed_at": r.get("completed_at"),
    }


@app.command()
def query(
    store: StoreOpt = None,
    formula: FormulaOpt = None,
    chemsys: ChemsysOpt = None,
    element: ElementOpt = None,
    model: QueryModelOpt = None,
    scale_min: ScaleMinOpt = None,
    scale_max: ScaleMaxOpt = None,
    material_id: MaterialOpt = None,
    include_pooled: PooledOpt = False,
    all_runs: AllRunsOpt = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
) -> None:
    """List stored softening results that match the filters (all filters must hold)."""
    import csv

    from softening.stores import describe_store

    if fmt not in ("table", "csv", "json"):
        raise InputError(f"--format {fmt!r}: use table, csv or json")
    job_store, results = _query(
        store, formula, chemsys, element, model, scale_min, scale_max, material_id,
        include_pooled, all_runs,
    )  # fmt: skip
    if fmt == "json":
        print(json.dumps(results, default=str))
        return
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_flat(r) for r in results)
        return
    if not results:
        console.print(f"no result matches in {describe_store(job_store)}")
        return
    table = Table(title=f"{len(results)} result(s) in {describe_store(job_store)}")
    for col in ("material", "model", "reference", "scale", "95% CI", "MAE eV/Å", "cMAE eV/Å",
                "frames", "completed"):  # fmt: skip
        left = col in ("material", "model", "reference", "completed")
        table.add_column(col, justify="left" if left else "right")
    for r in results:
        # The formula only where the id does not already say it (WBM and run ids are formulas).
        formula = r.get("formula") or ""
        shown = r["material_id"]
        if formula not in ("", shown):
            shown += f" ({formula})"
        table.add_row(
            shown,
            r["model"]["name"],
            (r.get("reference") or {}).get("name", ""),
            f"{r['scale']:.3f}",
            f"{r['scale_ci'][0]:.3f}-{r['scale_ci'][1]:.3f}",
            f"{r['mae']:.3f}",
            f"{r['cmae']:.3f}",
            str(r["n_frames"]),
            str(r.get("completed_at") or "")[:10],
        )
    out_console.print(table)


@app.command()
def build(
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Update the summary collections (per model, element, chemical system) from the results.

    Incremental: only new or changed results (and those that failed before) are processed.
    """
    from dataclasses import asdict

    from softening.stores import describe_store
    from softening.stores.builders import build_summaries
    from softening.stores.queries import query_summaries

    job_store = _open_results_store(store)
    stats = build_summaries(job_store)
    models = query_summaries(job_store, "models")
    if as_json:
        print(json.dumps({"stats": asdict(stats), "models": models}, default=str))
        return
    console.print(
        f"{describe_store(job_store)}: processed {stats.processed} result(s) "
        f"({stats.failed} failed, {stats.retried} retried), {stats.unchanged} unchanged, "
        f"{stats.removed} removed; summaries: {stats.summaries.get('models', 0)} model(s), "
        f"{stats.summaries.get('elements', 0)} element(s), "
        f"{stats.summaries.get('chemsys', 0)} chemical system(s)",
        highlight=False,
    )
    for uuid, err in stats.errors.items():
        console.print(f"[yellow]failed:[/] {uuid}: {err}", highlight=False)
    if models:
        table = Table(title="Softening per model (latest result per material)")
        for col in ("model", "materials", "softened", "median scale", "5-95 %", "MAE eV/Å",
                    "cMAE eV/Å"):  # fmt: skip
            table.add_column(col, justify="left" if col == "model" else "right")
        for m in models:
            q = m["scale_quantiles"]
            table.add_row(
                m["model"],
                str(m["n_materials"]),
                f"{100 * m['fraction_softened']:.1f} %",
                f"{q['p50']:.3f}",
                f"{q['p05']:.3f}-{q['p95']:.3f}",
                f"{m['mae_mean']:.3f}",
                f"{m['cmae_mean']:.3f}",
            )
        out_console.print(table)


def _safe_name(text: str) -> str:
    from softening.naming import safe_filename

    return safe_filename(text)


@app.command()
def report(
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("softening-report"),
    formula: FormulaOpt = None,
    chemsys: ChemsysOpt = None,
    element: ElementOpt = None,
    model: QueryModelOpt = None,
    scale_min: ScaleMinOpt = None,
    scale_max: ScaleMaxOpt = None,
    material_id: MaterialOpt = None,
    include_pooled: PooledOpt = False,
    all_runs: AllRunsOpt = False,
    parity_limit: Annotated[
        int, typer.Option(help="Most parity plots drawn (one per material and model).")
    ] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Figures of the stored results: parity per material and model, scale distribution, MAE vs cMAE."""
    from softening.analysis.metrics import is_uncorrelated
    from softening.analysis.plots import mae_vs_cmae_plot, parity_plot, scale_distribution_plot
    from softening.stores.queries import load_forces

    job_store, results = _query(
        store, formula, chemsys, element, model, scale_min, scale_max, material_id,
        include_pooled, all_runs,
    )  # fmt: skip
    from softening.workflows.properties import property_report

    # Property documents (phonons, surfaces, vacancies, barriers): one parity plot per property.
    props = property_report(job_store, out, model=model, material_id=material_id)
    if not results and not props["property_plots"]:
        raise InputError("no stored result matches the filters: nothing to plot")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {"parity": [], **props}
    for r in results[: max(parity_limit, 0)]:
        f_ref, f_ml = load_forces(job_store, r["uuid"])
        if f_ref.size == 0:
            continue
        name = f"parity_{_safe_name(r['material_id'])}_{_safe_name(r['model']['name'])}.png"
        title = r["material_id"]
        if r.get("formula") and r["formula"] != title:
            title += f" ({r['formula']})"
        path = parity_plot(
            f_ref, f_ml, out / "parity" / name, scale=r["scale"], title=title,
            label=r["model"]["name"],
        )  # fmt: skip
        files["parity"].append(str(path))
    materials = [r for r in results if r["material_id"] != "pooled"]
    by_model: dict[str, list[dict]] = {}
    for r in materials:
        by_model.setdefault(r["model"]["name"], []).append(r)
    if by_model:
        files["scale_distribution"] = str(
            scale_distribution_plot(
                {m: [r["scale"] for r in rs] for m, rs in by_model.items()},
                out / "scale_distribution.png",
                title="Softening scale across materials",
            )
        )
        # cMAE divides by the scale: where its CI reaches 0 (forces uncorrelated) the point is
        # meaningless and would squash every other one into a corner of the figure.
        meaningful: dict[str, list[dict]] = {}
        excluded = []
        for m, rs in by_model.items():
            for r in rs:
                if is_uncorrelated(r["scale_ci"]):
                    excluded.append(f"{r['material_id']} ({m})")
                else:
                    meaningful.setdefault(m, []).append(r)
        few = all(len(rs) <= 30 for rs in meaningful.values())
        if meaningful:
            files["mae_vs_cmae"] = str(
                mae_vs_cmae_plot(
                    {
                        m: ([r["mae"] for r in rs], [r["cmae"] for r in rs])
                        for m, rs in meaningful.items()
                    },
                    path=out / "mae_vs_cmae.png",
                    labels={m: [r["material_id"] for r in rs] for m, rs in meaningful.items()}
                    if few
                    else None,
                )
            )
        files["mae_vs_cmae_excluded"] = excluded
    summary = {
        "n_results": len(results),
        "files": files,
        "results": [_flat(r) for r in results],
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    if as_json:
        print(json.dumps(summary, default=str))
        return
    skipped = len(results) - min(len(results), max(parity_limit, 0))
    console.print(
        f"{len(results)} result(s): {len(files['parity'])} parity plot(s) in {out / 'parity'}"
        + (f" ({skipped} more with a higher --parity-limit)" if skipped else ""),
        highlight=False,
    )
    for key in ("scale_distribution", "mae_vs_cmae"):
        if key in files:
            console.print(f"{key}: {files[key]}", highlight=False)
    for prop, path in files["property_plots"].items():
        console.print(f"{prop}: {path}", highlight=False)
    if files.get("mae_vs_cmae_excluded"):
        console.print(
            "left out of mae_vs_cmae (scale CI includes 0, cMAE meaningless): "
            + ", ".join(files["mae_vs_cmae_excluded"]),
            highlight=False,
        )


def _check_unique_ids(specs) -> None:
    seen = set()
    for s in specs:
        key = (s.material_id, s.frame_id)
        if key in seen:
            raise InputError(
                f"frame {s.frame_id} of {s.material_id} appears twice; give each dataset once"
            )
        seen.add(key)


# ---- on a cluster: FireWorks + SLURM (softening.hpc) ---------------------------------------------
LaunchpadOpt = Annotated[
    Path | None,
    typer.Option(
        "--launchpad",
        help="FireWorks LaunchPad YAML; ${VAR}s come from the environment. "
        "(default: SOFTENING_LAUNCHPAD, else ./launchpad.yaml)",
    ),
]
QadapterOpt = Annotated[
    Path | None,
    typer.Option(
        "--qadapter",
        help="SLURM queue adapter YAML (partitions per category). "
        "(default: SOFTENING_QADAPTER, else ./qadapter_slurm.yaml)",
    ),
]
LaunchDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--launch-dir",
        help="Folder (on the shared filesystem) for queue scripts and job folders. "
        "(default: ./softening-launches)",
    ),
]
LaunchOpt = Annotated[
    bool,
    typer.Option("--launch", help="Submit the READY jobs to SLURM (FireWorks' queue launcher)."),
]


def _queued_rows(queued) -> list[dict[str, Any]]:
    return [{"slurm_job_id": q.slurm_job_id, "group": q.group, "fw_ids": q.fw_ids} for q in queued]


def _launch(lp, qadapter: Path | None, launch_dir: Path | None) -> list:
    from softening.hpc import launch_ready, load_qadapters
    from softening.hpc.submit import launch_dir_default

    where = launch_dir.resolve() if launch_dir else launch_dir_default()
    groups = load_qadapters(qadapter, lp.softening_path, where)
    return launch_ready(lp, groups, where)


def _print_queued(queued) -> None:
    if not queued:
        console.print("nothing READY to queue")
    for q in queued:
        ids = f" (job {', '.join(map(str, q.fw_ids))})" if q.fw_ids else ""
        console.print(f"queued SLURM job {q.slurm_job_id} [{q.group}]{ids}", highlight=False)


@app.command()
def submit(
    structures: Annotated[
        list[Path] | None,
        typer.Argument(help="Structure files; none with --launch: queue what is READY."),
    ] = None,
    md_model: MdModelOpt = "chgnet",
    model: ModelOpt = None,
    reference: ReferenceOpt = "gpaw",
    temperature: TemperatureOpt = 1000.0,
    steps: StepsOpt = 10_000,
    timestep: TimestepOpt = 2.0,
    stride: StrideOpt = 10,
    frames: FramesOpt = 10,
    strained: StrainedOpt = 2,
    ecut: EcutOpt = 500.0,
    kspacing: KspacingOpt = 0.25,
    seed: SeedOpt = 0,
    store: StoreOpt = None,
    strict: StrictOpt = False,
    finetune: Annotated[
        str | None,
        typer.Option(help="Also correct each model (scale, head or full); see `run`."),
    ] = None,
    train_frames: TrainFramesOpt = 1,
    launchpad: LaunchpadOpt = None,
    qadapter: QadapterOpt = None,
    launch: LaunchOpt = False,
    single_job: Annotated[
        bool,
        typer.Option(
            "--single-job",
            help="No MongoDB: sbatch one script that runs the whole flow (`softening run`) in "
            "its allocation, results in the store (an embedded folder on the shared filesystem).",
        ),
    ] = False,
    launch_dir: LaunchDirOpt = None,
    as_json: JsonOpt = False,
    prop: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            "-p",
            help="Submit the flow of `softening properties` instead (phonon, or surface, vacancy, "
            "barrier) with --model, --reference, --ecut and --kspacing.",
        ),
    ] = None,
) -> None:
    """Submit the workflow of `run` to a cluster: FireWorks LaunchPad + SLURM, or one SLURM job.

    uMLIP jobs get the FireWorks category `umlip`, reference jobs `dft` (a partition for each).
    """
    from softening.hpc.firetask import worker_store_spec
    from softening.hpc.submit import launch_dir_default

    _setup_logging(quiet=True)
    if not structures and (single_job or not launch):
        raise InputError("give STRUCTURE files to submit (or only --launch to queue READY jobs)")
    flow_kwargs = {
        "md_model": md_model,
        "model": model,
        "reference": reference,
        "temperature": temperature,
        "steps": steps,
        "timestep": timestep,
        "stride": stride,
        "frames": frames,
        "strained": strained,
        "ecut": ecut,
        "kspacing": kspacing,
        "seed": seed,
        "strict": strict,
        "finetune": finetune,
        "train_frames": train_frames,
    }
    spec = worker_store_spec(store) if structures else None
    where = launch_dir.resolve() if launch_dir else launch_dir_default()
    if single_job and prop:
        raise InputError("--single-job runs `softening run`; submit --property without it")
    if single_job:
        _submit_single_job(structures, flow_kwargs, spec, qadapter, where, as_json)
        return
    from softening.hpc import load_launchpad, submit_flow

    result = None
    if structures:
        # Validated here (files, elements, models); GPAW and VASP need only exist on the workers.
        if prop:
            from softening.workflows.properties import properties_flow

            flow, _, _ = properties_flow(
                structures, prop, _models(model), reference=reference, ecut=ecut,
                kspacing=kspacing, local_checks=False,
            )  # fmt: skip
        else:
            _, _, flow = _softening_flow(structures, store=spec, local_checks=False, **flow_kwargs)
        lp = load_launchpad(launchpad)
        result = submit_flow(lp, flow, store=spec)
    else:
        lp = load_launchpad(launchpad)
    queued = _launch(lp, qadapter, where) if launch else []
    if as_json:
        payload: dict[str, Any] = {"queued": _queued_rows(queued)}
        if result is not None:
            payload.update(
                {
                    "flow_id": result.flow_id,
                    "flow_uuid": result.flow_uuid,
                    "name": result.name,
                    "fw_ids": result.fw_ids,
                    "categories": result.categories,
                    "store": result.store,
                }
            )
        print(json.dumps(payload))
        return
    if result is not None:
        from softening.stores import describe_store

        cats = ", ".join(f"{n} {c}" for c, n in result.categories.items() if n)
        console.print(
            f"flow {result.flow_id} ({result.name}): {len(result.fw_ids)} jobs ({cats}), "
            f"results into {describe_store(result.store)}",
            highlight=False,
        )
    if launch:
        _print_queued(queued)
    elif result is not None:
        console.print("queue it with `softening submit --launch`; watch it with `softening status`")


def _submit_single_job(
    structures: list[Path],
    flow_kwargs: dict[str, Any],
    spec: str,
    qadapter: Path | None,
    where: Path,
    as_json: bool,
) -> None:
    from softening.hpc import load_qadapters, resolve_qadapter_path, submit_single_job
    from softening.stores.factory import store_kind

    if store_kind(spec) != "embedded":
        console.print(
            "[yellow]note:[/] --single-job with a database store: the compute nodes must reach it",
            highlight=False,
        )
    # The same checks as `run` before anything is queued (files, elements, models).
    _softening_flow(structures, store=spec, local_checks=False, **flow_kwargs)
    args = [str(p.resolve()) for p in structures]
    for key, value in flow_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if key == "model":
            for m in value or []:
                args += ["--model", m]
        elif isinstance(value, bool):
            args += [flag] if value else []
        elif value is not None:
            args += [flag, str(value)]
    path = resolve_qadapter_path(qadapter, required=False)
    group = load_qadapters(path, None, where, base_only=True)[0] if path else None
    job = submit_single_job(args, spec, group, where)
    if as_json:
        print(
            json.dumps(
                {
                    "script": str(job.script),
                    "slurm_job_id": job.slurm_job_id,
                    "store": job.store,
                    "out": str(job.out),
                }
            )
        )
        return
    console.print(f"script: {job.script}", highlight=False)
    console.print(f"SLURM job {job.slurm_job_id}; results into {job.store}", highlight=False)


_STATE_STYLE = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "RESERVED": "cyan",
    "READY": "blue",
    "WAITING": "dim",
    "FIZZLED": "bold red",
    "DEFUSED": "magenta",
    "PAUSED": "magenta",
}


@app.command()
def status(
    launchpad: LaunchpadOpt = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only jobs in this state: FIZZLED, RUNNING, RESERVED, READY, WAITING..."),
    ] = None,
    flow: Annotated[
        str | None, typer.Option(help="One flow: its flow id (any of its job ids) or flow uuid.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Flows submitted to the LaunchPad and their jobs, with their states."""
    from softening.hpc import flow_status, load_launchpad

    lp = load_launchpad(launchpad)
    flows = flow_status(lp, state=state, flow=flow)
    if as_json:
        print(json.dumps({"flows": flows}))
        return
    if not flows:
        console.print("no flows" + (f" with jobs in state {state.upper()}" if state else ""))
        return
    for f in flows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(f["counts"].items()))
        style = _STATE_STYLE.get(f["state"], "")
        table = Table(
            title=f"flow {f['flow_id']} {f['name']}: [{style}]{f['state']}[/] ({counts})",
            title_justify="left",
        )
        for col in ("job", "name", "category", "state", "SLURM job"):
            table.add_column(col, justify="right" if col in ("job", "SLURM job") else "left")
        for j in f["jobs"]:
            st = j["state"]
            table.add_row(
                str(j["fw_id"]),
                j["name"],
                j["category"] or "-",
                f"[{_STATE_STYLE.get(st, '')}]{st}[/]" if _STATE_STYLE.get(st) else st,
                j["slurm_job_id"] or "-",
            )
        out_console.print(table)


@app.command()
def rerun(
    failed: Annotated[
        bool, typer.Option("--failed", help="Rerun FIZZLED jobs and lost runs.")
    ] = False,
    flow: Annotated[
        str | None, typer.Option(help="Only this flow (flow id, any of its job ids, or uuid).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Only jobs whose name matches (glob, or a substring).")
    ] = None,
    fw_id: Annotated[
        list[int] | None, typer.Option("--fw-id", help="Only this job id; repeat for several.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be rerun; change nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before rerunning without a filter.")
    ] = False,
    launchpad: LaunchpadOpt = None,
    launch: LaunchOpt = False,
    qadapter: QadapterOpt = None,
    launch_dir: LaunchDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rerun FIZZLED jobs and lost runs (SLURM job ended, or no heartbeat); COMPLETED ones stay.

    Lost: RESERVED/RUNNING in the LaunchPad, but its SLURM job has ended or its heartbeat stopped.
    """
    from softening.hpc import apply_rerun, load_launchpad, plan_rerun

    if not failed:
        raise InputError("say what to rerun: --failed (FIZZLED jobs and lost runs)")
    lp = load_launchpad(launchpad)
    plan = plan_rerun(lp, flow=flow, name=name, fw_ids=fw_id)
    ids = plan.fw_ids
    if not as_json:
        _print_plan(plan)
    reset: list[int] = []
    if ids and not dry_run:
        if flow is None and name is None and not fw_id and not yes:
            typer.confirm(f"rerun {len(ids)} job(s) across all flows?", abort=True, err=True)
        reset = apply_rerun(lp, plan)
    queued = _launch(lp, qadapter, launch_dir) if launch and not dry_run else []
    if as_json:
        payload = {**plan.as_dict(), "dry_run": dry_run, "reset": reset}
        print(json.dumps({**payload, "queued": _queued_rows(queued)}))
        return
    if dry_run:
        console.print(f"dry run: {len(ids)} job(s) would be rerun")
    elif ids:
        console.print(f"rerun {len(reset)} job(s); the jobs depending on them run after them")
    if launch and not dry_run:
        _print_queued(queued)


def _print_plan(plan) -> None:
    if not plan.fw_ids:
        console.print("nothing to rerun: no FIZZLED job and no lost run")
    if plan.fw_ids:
        table = Table(title="Jobs to rerun", title_justify="left")
        for col in ("job", "name", "why", "SLURM job"):
            table.add_column(col, justify="right" if col in ("job", "SLURM job") else "left")
        for d in plan.fizzled:
            table.add_row(str(d["fw_id"]), d["name"], "FIZZLED", d["slurm_job_id"] or "-")
        for r in plan.lost:
            why = f"lost ({r.state}; {r.detected_by}" + (
                f": {r.slurm_state})" if r.slurm_state else ")"
            )
            table.add_row(str(r.fw_id), r.name, why, r.slurm_job_id or "-")
        out_console.print(table)
    for u in plan.unchecked:
        console.print(
            f"[yellow]not checked:[/] job {u['fw_id']} {u['name']} (SLURM job "
            f"{u['slurm_job_id']}): {u['reason']}",
            highlight=False,
        )


@app.command()
def doctor(
    structure: Annotated[
        list[Path] | None,
        typer.Option(
            "--structure", help="Check every POTCAR VASP needs for this structure (repeatable)."
        ),
    ] = None,
    vasp: Annotated[bool, typer.Option("--vasp", help="Treat VASP as needed.")] = False,
    store: StoreOpt = None,
    launchpad: Annotated[str | None, typer.Option(help="LaunchPad YAML to check.")] = None,
    qadapter: Annotated[str | None, typer.Option(help="Queue adapter YAML to check.")] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each check may take (all together: under a minute).")
    ] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """What this machine and configuration can do: one line per check, with what to do."""
    from rich.markup import escape

    from softening.doctor import python_info, run_checks

    report = run_checks(
        store=store,
        structures=structure or (),
        vasp=vasp,
        launchpad=launchpad,
        qadapter=qadapter,
        timeout=timeout,
    )
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
        table = Table(title=python_info(), title_justify="left")
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in report.checks:
            cells = (escape(c.detail), escape(c.fix))  # fixes hold `softening[gpaw]`, not markup
            table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", *cells)
        out_console.print(table, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


# Property commands register themselves on `app` (imported last: they import this module).
from softening import cli_properties  # noqa: E402,F401

# isort: split
from softening import cli_surfaces  # noqa: E402,F401


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    # Under `python -m softening.cli` this file runs as __main__, a second copy of the module: the
    # property commands registered on the imported module's app, so run that one.
    from softening.cli import app as _app

    _app()
