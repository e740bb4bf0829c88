"""Workflow commands: ``run`` (sample, label, compare), ``evaluate`` (labelled datasets),
``finetune`` (correct a model). Each is a few lines over :mod:`softening.workflows.study`,
:mod:`softening.makers.evaluate` and :mod:`softening.workflows.correction`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from softening import defaults
from softening.cli.display import (
    console,
    out_console,
    print_json,
    progress,
    report_failures,
    run_flow,
    setup_logging,
    trust_model_files,
    warn,
)
from softening.cli.options import (
    ChoiceOpt,
    CurveModeOpt,
    CurveTrainFramesOpt,
    DatasetsArg,
    EcutOpt,
    FrameSelectionOpt,
    FramesOpt,
    IonOpt,
    JsonOpt,
    KspacingOpt,
    LaunchpadOpt,
    MaxCellsOpt,
    MdModelOpt,
    ModelOpt,
    MuOpt,
    ReferenceOpt,
    RepeatsOpt,
    SeedOpt,
    SelectOpt,
    StepsOpt,
    StoreOpt,
    StrainedOpt,
    StrictOpt,
    StrideOpt,
    StructuresArg,
    SubstituteOpt,
    TemperatureOpt,
    TimestepOpt,
    TrainFramesOpt,
    TrustModelOpt,
    WorkersOpt,
    out_folder,
)
from softening.errors import SofteningError


def run(
    structures: StructuresArg,
    md_model: MdModelOpt = defaults.MD_MODEL,
    model: ModelOpt = None,
    reference: ReferenceOpt = defaults.REFERENCE,
    temperature: TemperatureOpt = defaults.TEMPERATURE,
    steps: StepsOpt = defaults.STEPS,
    timestep: TimestepOpt = defaults.TIMESTEP,
    stride: StrideOpt = defaults.STRIDE,
    frames: FramesOpt = defaults.FRAMES,
    strained: StrainedOpt = defaults.STRAINED,
    frame_selection: FrameSelectionOpt = defaults.FRAME_SELECTION,
    ecut: EcutOpt = defaults.ECUT,
    kspacing: KspacingOpt = defaults.KSPACING,
    seed: SeedOpt = defaults.SEED,
    store: StoreOpt = None,
    out: Annotated[
        Path, typer.Option(help="Folder for the JSON summary and plots.", callback=out_folder)
    ] = Path("softening-results"),
    as_json: JsonOpt = False,
    strict: StrictOpt = False,
    finetune: Annotated[
        str | None,
        typer.Option(
            help="Also correct each model (scale, head or full) on --train-frames "
            "frames per material and verify on the others."
        ),
    ] = None,
    train_frames: TrainFramesOpt = defaults.TRAIN_FRAMES,
    workers: WorkersOpt = None,
    trust_model_file: TrustModelOpt = False,
    prop: Annotated[
        str | None,
        typer.Option(
            "--property",
            help="Also compute this property (phonon, surface, vacancy, barrier, mixing, or any "
            "registered one) with the reference and each model; with --finetune, with each "
            "corrected model too.",
        ),
    ] = None,
    substitute: SubstituteOpt = None,
    max_cells: MaxCellsOpt = defaults.MAX_CELLS,
    ion: IonOpt = None,
    mu: MuOpt = None,
    batch_md: Annotated[
        bool,
        typer.Option(
            "--batch-md/--no-batch-md",
            help="Run the MDs of several materials together, one batched model call per step "
            "(--no-batch-md: one MD job per material).",
        ),
    ] = True,
) -> None:
    """Sample frames by uMLIP MD, label them with the reference, and fit the softening scale."""
    from softening.stores import get_job_store
    from softening.stores.queries import store_exists
    from softening.workflows.inputs import job_folders
    from softening.workflows.study import StudyOptions, collect_study

    setup_logging(quiet=as_json)
    trust_model_files(trust_model_file)
    options = StudyOptions.from_options(locals())
    # An existing store is opened first: a damaged one is reported at once, not after the models
    # have loaded; a new one is created only once the inputs are known to be good.
    job_store = get_job_store(store) if store_exists(store) else None
    study = options.build(structures, store=store)
    job_store = job_store or get_job_store(store)
    outputs, failures = run_flow(study.flow, job_store, workers, **job_folders(reference, out))
    outcome = collect_study(study.flow, job_store, outputs, failures, options)
    parity = outcome.save(out)
    if as_json:
        print_json(outcome.summary)
    else:
        _print_study(outcome, out, parity)
    report_failures(failures, bool(outcome.docs))


def _print_study(outcome, out: Path, parity: Path | None) -> None:
    from softening.cli.tables import scale_table

    out_console.print(scale_table(outcome.docs, "Softening scale (s < 1: softened)"))
    for p in outcome.summary.get("properties", []):
        ratio = "n/a" if p["ratio"] is None else f"{p['ratio']:.3f}"
        out_console.print(
            f"{p['property']} {p['material_id']} {p['model']}: uMLIP/reference ratio {ratio}"
        )
    for v in outcome.checks:
        b, a = v.before, v.after
        out_console.print(
            f"{v.correction.model.name}: held-out scale {b['scale']:.3f} -> {a['scale']:.3f}, "
            f"MAE {b['mae']:.3f} -> {a['mae']:.3f} eV/Å ({v.correction.model.path})"
        )
        for w in v.warnings:
            warn(w)
    console.print(
        f"summary: {out / 'summary.json'}" + (f", parity plot: {parity}" if parity else "")
    )


def evaluate(
    datasets: DatasetsArg,
    model: ModelOpt = None,
    store: StoreOpt = None,
    seed: SeedOpt = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the scale-distribution plot.", callback=out_folder),
    ] = None,
    as_json: JsonOpt = False,
    strict: StrictOpt = False,
    workers: WorkersOpt = None,
    trust_model_file: TrustModelOpt = False,
) -> None:
    """Softening of uMLIPs on existing DFT-labelled frames (no MD, no new DFT)."""
    from softening.cli.tables import models_table, scale_table
    from softening.makers.evaluate import evaluate_datasets
    from softening.makers.evaluation_output import evaluation_summary
    from softening.stores import get_job_store
    from softening.workflows.inputs import default_models

    setup_logging(quiet=True)
    trust_model_files(trust_model_file)
    job_store = get_job_store(store)
    with progress("evaluating frames") as advance:
        evaluation = evaluate_datasets(
            datasets, default_models(model), store=job_store, strict=strict, seed=seed,
            progress=advance, workers=workers,
        )  # fmt: skip
    result = evaluation_summary(evaluation, out)
    if as_json:
        print_json(result)
        return
    for r in evaluation.reports:
        console.print(r.summary(), highlight=False, soft_wrap=True)
    if len(result["models"]) > 1:
        out_console.print(models_table(result["models"]))
    for name, v in result["models"].items():
        out_console.print(scale_table(evaluation.models[name].materials, f"{name}"))
        p = v["pooled"]
        out_console.print(
            f"[bold]{name} pooled[/]: scale {p['scale']:.3f} [{p['scale_ci'][0]:.3f}, "
            f"{p['scale_ci'][1]:.3f}], MAE {p['mae']:.3f} eV/Å, cMAE {p['cmae']:.3f} eV/Å, "
            f"{p['n_frames']} frames; softened (scale < 1): {100 * p['fraction_softened']:.1f} % "
            f"of {p['n_materials']} materials"
        )
        for text in p.get("flags", []):
            warn(f"{name} pooled: {text}")
        for skip in v.get("skipped", []):
            warn(f"{name} {skip['material_id']}: no result: {skip['reason']}")


def finetune(
    datasets: DatasetsArg,
    model: Annotated[str, typer.Option("--model", "-m", help="uMLIP to correct.")] = "chgnet",
    mode: Annotated[
        str, typer.Option(help="scale (linear, closed form), head (readout only) or full.")
    ] = "scale",
    train_frames: Annotated[
        int, typer.Option(help="Frames per material to fit on; the rest are held out.")
    ] = defaults.TRAIN_FRAMES,
    select: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep frames whose material, formula, group or description contains "
            "this text; repeat to require several (e.g. --select AIMD --select '843 K')."
        ),
    ] = None,
    frame_choice: Annotated[
        str,
        typer.Option(
            help="highest-energy, largest-force, random or diverse (DIRECT: one frame per "
            "cluster of the model's structure features)."
        ),
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
    from softening.cli.tables import groups_table
    from softening.stores import get_job_store
    from softening.workflows.correction import CorrectionOptions, verification_summary

    setup_logging(quiet=as_json)
    trust_model_files(trust_model_file)
    flow = CorrectionOptions.from_options(locals()).build(datasets, store=store)
    outputs, failures = run_flow(flow, get_job_store(store), workers=1)
    if failures or not outputs:
        raise SofteningError("correction failed: " + "; ".join(failures))
    doc = outputs[0]
    if as_json:
        print_json(verification_summary(doc))
        return
    c = doc.correction
    out_console.print(groups_table(doc))
    b, a = doc.before, doc.after
    out_console.print(
        f"held-out: scale {b['scale']:.3f} -> {a['scale']:.3f}, MAE {b['mae']:.3f} -> "
        f"{a['mae']:.3f} eV/Å; trained on {', '.join(c.train_frames)}"
        + (f"; c = {c.factor:.4f}" if c.mode == "scale" else "")
    )
    out_console.print(f"corrected model: {c.model.path} (use it with --model {c.model.path})")
    for w in doc.warnings:
        warn(w)


def learning_curve(
    datasets: DatasetsArg,
    model: ModelOpt = None,
    mode: CurveModeOpt = "scale",
    train_frames: CurveTrainFramesOpt = "1,2,4,8",
    repeats: RepeatsOpt = 3,
    choice: ChoiceOpt = "highest-energy,largest-force,random",
    select: SelectOpt = None,
    method: Annotated[str, typer.Option(help="Scale mode: lstsq or inverse-scale.")] = "lstsq",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs (head/full).")] = 100,
    store: StoreOpt = None,
    seed: SeedOpt = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the figure and learning-curve.json.", callback=out_folder),
    ] = None,
    as_json: JsonOpt = False,
    strict: StrictOpt = False,
    trust_model_file: TrustModelOpt = False,
    workers: WorkersOpt = None,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit",
            help="Put the curve's jobs (one per fine-tune) on the FireWorks LaunchPad instead of "
            "running them; `softening submit --launch` queues them, and this command without "
            "--submit then collects the results from the store.",
        ),
    ] = False,
    launchpad: LaunchpadOpt = None,
) -> None:
    """Held-out scale and MAE against the frames corrected on, per frame choice: which to label."""
    from softening.workflows.learning_curve import LearningCurveOptions, learning_curve_summary

    setup_logging(quiet=as_json)
    trust_model_files(trust_model_file)
    options = LearningCurveOptions.from_options(locals())
    if submit:
        from softening.hpc import load_launchpad, submit_flow
        from softening.hpc.firetask import worker_store_spec

        spec = worker_store_spec(store)
        result = submit_flow(load_launchpad(launchpad), options.build(datasets, store=spec), spec)
        payload = {
            k: getattr(result, k) for k in ("flow_id", "flow_uuid", "name", "categories", "store")
        }
        if as_json:
            print_json({**payload, "n_jobs": len(result.fw_ids)})
        else:
            console.print(
                f"flow {result.flow_id} ({result.name}): {len(result.fw_ids)} jobs on the "
                "LaunchPad; queue them with `softening submit --launch`",
                highlight=False,
            )
        return
    if mode == "scale":
        # Closed form on one evaluation: no store, no jobs.
        with progress("learning curve") as advance:
            docs = options.run(datasets, store=store, progress=advance)
    else:
        from softening.stores import get_job_store

        # A fine-tune per point: each a job, resumed from the store, side by side with --workers.
        flow = options.build(datasets, store=store)
        docs, failures = run_flow(flow, get_job_store(store), workers)
        if failures or not docs:
            raise SofteningError("learning curve failed: " + "; ".join(failures))
    result = learning_curve_summary(docs, out)
    if as_json:
        print_json(result)
        return
    for doc in docs:
        b = doc.before
        out_console.print(
            f"[bold]{doc.model}[/]: {len(doc.held_out)} held-out frames "
            f"({', '.join(doc.held_out_materials)}); uncorrected scale {b['scale']:.3f}, "
            f"MAE {b['mae']:.3f} eV/Å"
        )
        for c in doc.curves:
            out_console.print(
                f"  {c['choice']:>15} {c['mode']:>5} K={c['k']:<3} scale {c['scale_mean']:.3f}"
                f" ± {c['scale_std']:.3f}, MAE {c['mae_mean']:.3f} ± {c['mae_std']:.3f} eV/Å"
                f" ({c['n_repeats']} run(s))"
            )
        for s in doc.skipped:
            warn(s)
    if out is not None:
        console.print(f"figures and learning-curve.json in {out}")
